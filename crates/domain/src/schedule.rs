//! A user's course schedule: enrollments → courses → meeting times → rooms, loaded in
//! one consistent snapshot together with the user's sync generation.

use chrono::{NaiveDate, NaiveTime};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::{DomainError, users, users::User};

/// A course as the calendar needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Course {
    pub id: i64,
    pub title: String,
    pub subject: String,
    pub course_number: String,
    pub section_number: String,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
}

/// A room; placeholder rooms render as "TBD".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Room {
    pub id: i64,
    pub building: String,
    pub number: String,
    pub is_placeholder: bool,
}

/// One weekly meeting of a course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeetingTime {
    pub id: i64,
    pub course_id: i64,
    /// 0 = Sunday … 6 = Saturday.
    pub day_of_week: i16,
    pub begin_time: NaiveTime,
    pub end_time: NaiveTime,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub room: Option<Room>,
}

/// A course the user is enrolled in, with its meeting times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CourseSchedule {
    pub course: Course,
    pub meeting_times: Vec<MeetingTime>,
}

/// Everything a sync needs to know about one user, read in one snapshot.
#[derive(Debug, Clone)]
pub struct SyncSnapshot {
    pub user: User,
    pub courses: Vec<CourseSchedule>,
}

/// Read a user and their schedule in one REPEATABLE READ snapshot (three queries).
///
/// The user's `calendar_sync_generation` is read in the same snapshot as the schedule,
/// so a change committed after the snapshot always bumps the generation past the one
/// returned here, and the compare-and-clear that ends the sync keeps the flag.
pub async fn load_snapshot(pool: &PgPool, user_id: i64) -> Result<SyncSnapshot, DomainError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let user = users::get(&mut *tx, user_id).await?;

    let course_rows = sqlx::query(
        "SELECT c.id, c.title, c.subject, c.course_number, c.section_number, c.start_date, c.end_date \
         FROM enrollments e JOIN courses c ON c.id = e.course_id \
         WHERE e.user_id = $1 ORDER BY c.id",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut courses = Vec::with_capacity(course_rows.len());
    for row in course_rows {
        courses.push(CourseSchedule {
            course: Course {
                id: row.try_get("id")?,
                title: row.try_get("title")?,
                subject: row.try_get("subject")?,
                course_number: row.try_get("course_number")?,
                section_number: row.try_get("section_number")?,
                start_date: row.try_get("start_date")?,
                end_date: row.try_get("end_date")?,
            },
            meeting_times: Vec::new(),
        });
    }

    let mt_rows = sqlx::query(
        "SELECT mt.id, mt.course_id, mt.day_of_week, mt.begin_time, mt.end_time, mt.start_date, mt.end_date, \
                r.id AS room_id, r.building, r.number, r.is_placeholder \
         FROM meeting_times mt \
         JOIN enrollments e ON e.course_id = mt.course_id AND e.user_id = $1 \
         LEFT JOIN rooms r ON r.id = mt.room_id \
         ORDER BY mt.course_id, mt.id",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    for row in mt_rows {
        let course_id: i64 = row.try_get("course_id")?;
        let room_id: Option<i64> = row.try_get("room_id")?;
        let room = match room_id {
            Some(id) => Some(Room {
                id,
                building: row.try_get("building")?,
                number: row.try_get("number")?,
                is_placeholder: row.try_get("is_placeholder")?,
            }),
            None => None,
        };
        let mt = MeetingTime {
            id: row.try_get("id")?,
            course_id,
            day_of_week: row.try_get("day_of_week")?,
            begin_time: row.try_get("begin_time")?,
            end_time: row.try_get("end_time")?,
            start_date: row.try_get("start_date")?,
            end_date: row.try_get("end_date")?,
            room,
        };
        // Both lists are ordered by course id.
        let slot = courses
            .binary_search_by_key(&course_id, |c| c.course.id)
            .map_err(|_| {
                DomainError::InvalidData(format!("meeting time {} of a course not loaded", mt.id))
            })?;
        courses[slot].meeting_times.push(mt);
    }
    Ok(SyncSnapshot { user, courses })
}
