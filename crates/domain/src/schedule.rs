//! A user's course schedule: enrollments → courses → meeting times → rooms, the final
//! exams of those courses and the academic calendar around them, and the user's
//! calendar preferences, loaded in one consistent snapshot together with the user's
//! sync generation.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::{DomainError, preferences, preferences::Preference, users, users::User};

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

/// A final exam of one of the user's courses (`final_exams`). Times are local
/// wall-clock times in the school time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FinalExam {
    pub id: i64,
    pub course_id: i64,
    pub starts_at: NaiveDateTime,
    pub ends_at: NaiveDateTime,
    pub room: Option<Room>,
}

/// A row of `academic_calendar_events` (holiday, break, reading day, exam period …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcademicCalendarEvent {
    pub id: i64,
    pub title: String,
    /// `holiday`, `break`, `reading_day`, `exam_period` or `other` (see
    /// [`crate::academic::AcademicCategory`]).
    pub category: String,
    /// First day, inclusive.
    pub start_date: NaiveDate,
    /// Last day, inclusive (equal to `start_date` for a single day).
    pub end_date: NaiveDate,
    /// Class occurrences on these days are cancelled.
    pub no_classes: bool,
    /// Students see it as an all-day event.
    pub publish: bool,
}

/// Everything a sync needs to know about one user, read in one snapshot.
#[derive(Debug, Clone)]
pub struct SyncSnapshot {
    pub user: User,
    pub courses: Vec<CourseSchedule>,
    /// The final exams of `courses`, ordered by course and id.
    pub exams: Vec<FinalExam>,
    /// The academic calendar rows that cancel classes or are published, within the
    /// span of the user's courses and meeting times, ordered by start date and id.
    pub academic_calendar: Vec<AcademicCalendarEvent>,
    /// The user's calendar preferences (`calendar_preferences`), ordered by scope and
    /// course.
    pub preferences: Vec<Preference>,
}

/// The user's courses.
const COURSES_SQL: &str = "SELECT c.id, c.title, c.subject, c.course_number, c.section_number, c.start_date, c.end_date \
     FROM enrollments e JOIN courses c ON c.id = e.course_id \
     WHERE e.user_id = $1 ORDER BY c.id";

/// The meeting times of the user's courses, with their rooms.
const MEETING_TIMES_SQL: &str = "SELECT mt.id, mt.course_id, mt.day_of_week, mt.begin_time, mt.end_time, mt.start_date, mt.end_date, \
            mt.room_id, r.building, r.number, r.is_placeholder \
     FROM meeting_times mt \
     JOIN enrollments e ON e.course_id = mt.course_id AND e.user_id = $1 \
     LEFT JOIN rooms r ON r.id = mt.room_id \
     ORDER BY mt.course_id, mt.id";

/// The final exams of the user's courses, with their rooms.
const EXAMS_SQL: &str = "SELECT fe.id, fe.course_id, fe.starts_at, fe.ends_at, \
            fe.room_id, r.building, r.number, r.is_placeholder \
     FROM final_exams fe \
     JOIN enrollments e ON e.course_id = fe.course_id AND e.user_id = $1 \
     LEFT JOIN rooms r ON r.id = fe.room_id \
     ORDER BY fe.course_id, fe.id";

/// Academic calendar rows that matter to anyone (no classes or published) within the
/// span of the user's course and meeting dates. A row whose dates are reversed (only
/// possible if the CHECK was bypassed) is loaded too, so the event model can report it.
const ACADEMIC_CALENDAR_SQL: &str = "WITH span AS ( \
         SELECT min(LEAST(c.start_date, mt.start_date)) AS lo, max(GREATEST(c.end_date, mt.end_date)) AS hi \
         FROM enrollments e JOIN courses c ON c.id = e.course_id \
         LEFT JOIN meeting_times mt ON mt.course_id = c.id \
         WHERE e.user_id = $1) \
     SELECT a.id, a.title, a.category, a.start_date, a.end_date, a.no_classes, a.publish \
     FROM academic_calendar_events a, span \
     WHERE (a.no_classes OR a.publish) \
       AND LEAST(a.start_date, a.end_date) <= span.hi AND GREATEST(a.start_date, a.end_date) >= span.lo \
     ORDER BY a.start_date, a.id";

/// Every query [`load_snapshot`] runs besides the user row, in order. The columns they
/// return are what the event model can depend on; the domain test
/// `snapshot_reads_only_tracked_columns` checks them against `calsync.tracked_columns`.
pub const SNAPSHOT_QUERIES: [&str; 5] = [
    COURSES_SQL,
    MEETING_TIMES_SQL,
    EXAMS_SQL,
    ACADEMIC_CALENDAR_SQL,
    preferences::store::PREFERENCES_SQL,
];

fn room_of(row: &sqlx::postgres::PgRow) -> Result<Option<Room>, sqlx::Error> {
    let room_id: Option<i64> = row.try_get("room_id")?;
    Ok(match room_id {
        Some(id) => Some(Room {
            id,
            building: row.try_get("building")?,
            number: row.try_get("number")?,
            is_placeholder: row.try_get("is_placeholder")?,
        }),
        None => None,
    })
}

/// Read a user, their schedule and their preferences in one REPEATABLE READ snapshot
/// (six queries).
///
/// The user's `calendar_sync_generation` is read in the same snapshot as the schedule,
/// so a change committed after the snapshot always bumps the generation past the one
/// returned here, and the compare-and-clear that ends the sync keeps the flag.
pub async fn load_snapshot(pool: &PgPool, user_id: i64) -> Result<SyncSnapshot, DomainError> {
    // Changes logged so far become flags (and generations) before the snapshot reads
    // the generation, so a sync that reads them does not leave them pending.
    crate::tracking::apply_pending_flags(pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let user = users::get(&mut *tx, user_id).await?;

    let course_rows = sqlx::query(COURSES_SQL)
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

    let mt_rows = sqlx::query(MEETING_TIMES_SQL)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
    let exam_rows = sqlx::query(EXAMS_SQL)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
    let academic_rows = sqlx::query(ACADEMIC_CALENDAR_SQL)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
    let preferences = preferences::store::load(&mut *tx, user_id).await?;
    tx.commit().await?;

    for row in mt_rows {
        let course_id: i64 = row.try_get("course_id")?;
        let room = room_of(&row)?;
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
    let mut exams = Vec::with_capacity(exam_rows.len());
    for row in exam_rows {
        exams.push(FinalExam {
            id: row.try_get("id")?,
            course_id: row.try_get("course_id")?,
            starts_at: row.try_get("starts_at")?,
            ends_at: row.try_get("ends_at")?,
            room: room_of(&row)?,
        });
    }
    let mut academic_calendar = Vec::with_capacity(academic_rows.len());
    for row in academic_rows {
        academic_calendar.push(AcademicCalendarEvent {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            category: row.try_get("category")?,
            start_date: row.try_get("start_date")?,
            end_date: row.try_get("end_date")?,
            no_classes: row.try_get("no_classes")?,
            publish: row.try_get("publish")?,
        });
    }
    Ok(SyncSnapshot {
        user,
        courses,
        exams,
        academic_calendar,
        preferences,
    })
}
