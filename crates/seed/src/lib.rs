//! `calsync-seed`: one builder for university seed data, used by the domain tests, the
//! end-to-end harness, the demo and the bench.
//!
//! Describe rows with the `*Spec` types, add them to a [`Seed`] (each `add_*` returns a
//! typed key for later references), then [`Seed::insert`] writes everything in one
//! set-based statement per table (ids are reserved from each table's sequence first, so
//! a key maps to its id whatever order the server returns rows in). The result,
//! [`Seeded`], maps keys to ids (`seeded[course_key]`) and lists each student's
//! calendar id and refresh token, so callers can register them wherever they need
//! (e.g. in the fake Google). This crate knows nothing about Google or the fake.
//!
//! The writes go through the normal tables, so change tracking flags students exactly
//! as it would for a registrar import.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), calsync_seed::SeedError> {
//! use calsync_seed::*;
//! let mut seed = Seed::new();
//! let room = seed.add_room(RoomSpec::new("Smith", "101"));
//! let course = seed.add_course(CourseSpec::new("Databases", "CS", "340").dates(ymd(2026, 1, 12), ymd(2026, 5, 1)));
//! seed.add_meeting(MeetingSpec::new(course, chrono::Weekday::Mon, hm(9, 0), hm(10, 15)).room(room));
//! let student = seed.add_student(StudentSpec::new("s@uni.edu").calendar("cal-1"));
//! seed.enroll(student, course);
//! let ids = seed.insert_with_pool(&pool).await?;
//! println!("student {} takes course {}", ids[student], ids[course]);
//! # Ok(()) }
//! ```

use std::{collections::HashSet, ops::Index};

use chrono::{NaiveDate, NaiveTime};
use sqlx::{PgConnection, PgPool};

pub mod presets;
pub mod reset;
mod specs;

pub use specs::{AcademicSpec, CourseSpec, ExamSpec, MeetingSpec, RoomSpec, StudentSpec};

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seeding failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("seed data refers to a {kind} that was not added to this seed (index {index})")]
    UnknownKey { kind: &'static str, index: usize },
}

/// A calendar date; panics on an impossible one (seed literals are code, not input).
pub fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day)
        .unwrap_or_else(|| panic!("{year}-{month}-{day} is not a date"))
}

/// A time of day; panics on an impossible one.
pub fn hm(hour: u32, minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(hour, minute, 0)
        .unwrap_or_else(|| panic!("{hour}:{minute} is not a time"))
}

macro_rules! keys {
    ($($name:ident => $kind:literal),* $(,)?) => {$(
        #[doc = concat!("Refers to a ", $kind, " added to a [`Seed`].")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub usize);
    )*};
}
keys!(RoomKey => "room", CourseKey => "course", MeetingKey => "meeting time",
      StudentKey => "student", AcademicKey => "academic calendar row", ExamKey => "final exam");

type TokenFn = Box<dyn Fn(i64) -> String + Send + Sync>;

/// A university to seed.
#[derive(Default)]
pub struct Seed {
    rooms: Vec<RoomSpec>,
    courses: Vec<CourseSpec>,
    meetings: Vec<MeetingSpec>,
    students: Vec<StudentSpec>,
    enrollments: Vec<(StudentKey, CourseKey)>,
    enrolled: HashSet<(StudentKey, CourseKey)>,
    academic: Vec<AcademicSpec>,
    exams: Vec<ExamSpec>,
    refresh_token: Option<TokenFn>,
}

impl Seed {
    pub fn new() -> Seed {
        Seed::default()
    }
    pub fn add_room(&mut self, room: RoomSpec) -> RoomKey {
        self.rooms.push(room);
        RoomKey(self.rooms.len() - 1)
    }
    pub fn add_course(&mut self, course: CourseSpec) -> CourseKey {
        self.courses.push(course);
        CourseKey(self.courses.len() - 1)
    }
    pub fn add_meeting(&mut self, meeting: MeetingSpec) -> MeetingKey {
        self.meetings.push(meeting);
        MeetingKey(self.meetings.len() - 1)
    }
    pub fn add_student(&mut self, student: StudentSpec) -> StudentKey {
        self.students.push(student);
        StudentKey(self.students.len() - 1)
    }
    /// Enroll a student in a course (enrolling twice is one enrollment).
    pub fn enroll(&mut self, student: StudentKey, course: CourseKey) {
        if self.enrolled.insert((student, course)) {
            self.enrollments.push((student, course));
        }
    }
    pub fn add_academic(&mut self, row: AcademicSpec) -> AcademicKey {
        self.academic.push(row);
        AcademicKey(self.academic.len() - 1)
    }
    pub fn add_exam(&mut self, exam: ExamSpec) -> ExamKey {
        self.exams.push(exam);
        ExamKey(self.exams.len() - 1)
    }
    /// Give every student with a calendar Google credentials, with the refresh token
    /// `token(user_id)`.
    pub fn refresh_tokens(&mut self, token: impl Fn(i64) -> String + Send + Sync + 'static) {
        self.refresh_token = Some(Box::new(token));
    }

    /// The courses added so far, with their keys.
    pub fn courses(&self) -> impl Iterator<Item = (CourseKey, &CourseSpec)> {
        self.courses
            .iter()
            .enumerate()
            .map(|(i, c)| (CourseKey(i), c))
    }
    /// The rooms added so far, with their keys.
    pub fn rooms(&self) -> impl Iterator<Item = (RoomKey, &RoomSpec)> {
        self.rooms.iter().enumerate().map(|(i, r)| (RoomKey(i), r))
    }
    /// Number of students added so far.
    pub fn student_count(&self) -> usize {
        self.students.len()
    }
    /// Number of enrollments added so far.
    pub fn enrollment_count(&self) -> usize {
        self.enrollments.len()
    }

    /// Insert everything in one transaction of `pool`.
    pub async fn insert_with_pool(&self, pool: &PgPool) -> Result<Seeded, SeedError> {
        let mut tx = pool.begin().await?;
        let seeded = self.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(seeded)
    }

    /// Insert everything on `conn` (pass a transaction to make it atomic): one
    /// statement per table.
    pub async fn insert(&self, conn: &mut PgConnection) -> Result<Seeded, SeedError> {
        self.check_keys()?;
        let room_ids = reserve_ids(conn, "rooms", self.rooms.len()).await?;
        let course_ids = reserve_ids(conn, "courses", self.courses.len()).await?;
        let meeting_ids = reserve_ids(conn, "meeting_times", self.meetings.len()).await?;
        let user_ids = reserve_ids(conn, "users", self.students.len()).await?;
        let academic_ids =
            reserve_ids(conn, "academic_calendar_events", self.academic.len()).await?;
        let exam_ids = reserve_ids(conn, "final_exams", self.exams.len()).await?;
        let room_of = |r: Option<RoomKey>| r.map(|r| room_ids[r.0]);

        if !self.rooms.is_empty() {
            sqlx::query(
                "INSERT INTO rooms (id, building, number, is_placeholder, capacity) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::boolean[], $5::int[])",
            )
            .bind(&room_ids)
            .bind(self.rooms.iter().map(|r| r.building.clone()).collect::<Vec<_>>())
            .bind(self.rooms.iter().map(|r| r.number.clone()).collect::<Vec<_>>())
            .bind(self.rooms.iter().map(|r| r.is_placeholder).collect::<Vec<_>>())
            .bind(self.rooms.iter().map(|r| r.capacity).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.courses.is_empty() {
            let c = &self.courses;
            sqlx::query(
                "INSERT INTO courses (id, title, subject, course_number, section_number, start_date, end_date, description, capacity) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::date[], $8::text[], $9::int[])",
            )
            .bind(&course_ids)
            .bind(c.iter().map(|c| c.title.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.subject.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.course_number.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.section_number.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.start_date).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.end_date).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.description.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|c| c.capacity).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.meetings.is_empty() {
            let m = &self.meetings;
            sqlx::query(
                "INSERT INTO meeting_times (id, course_id, day_of_week, begin_time, end_time, start_date, end_date, room_id, notes) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::smallint[], $4::time[], $5::time[], $6::date[], $7::date[], $8::bigint[], $9::text[])",
            )
            .bind(&meeting_ids)
            .bind(m.iter().map(|m| course_ids[m.course.0]).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.day.num_days_from_sunday() as i16).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.begin).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.end).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.start_date).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.end_date).collect::<Vec<_>>())
            .bind(m.iter().map(|m| room_of(m.room)).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.notes.clone()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.students.is_empty() {
            let s = &self.students;
            sqlx::query(
                "INSERT INTO users (id, email, name, google_course_calendar_id) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])",
            )
            .bind(&user_ids)
            .bind(s.iter().map(|s| s.email.clone()).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.calendar_id.clone()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let tokens: Vec<Option<String>> = self
            .students
            .iter()
            .zip(&user_ids)
            .map(|(s, id)| match (&self.refresh_token, &s.calendar_id) {
                (Some(token), Some(_)) => Some(token(*id)),
                _ => None,
            })
            .collect();
        let (cred_users, cred_tokens): (Vec<i64>, Vec<String>) = user_ids
            .iter()
            .zip(&tokens)
            .filter_map(|(id, t)| t.clone().map(|t| (*id, t)))
            .unzip();
        if !cred_users.is_empty() {
            sqlx::query(
                "INSERT INTO google_credentials (user_id, refresh_token) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[])",
            )
            .bind(&cred_users)
            .bind(&cred_tokens)
            .execute(&mut *conn)
            .await?;
        }
        if !self.enrollments.is_empty() {
            sqlx::query(
                "INSERT INTO enrollments (user_id, course_id) SELECT * FROM UNNEST($1::bigint[], $2::bigint[])",
            )
            .bind(self.enrollments.iter().map(|(s, _)| user_ids[s.0]).collect::<Vec<_>>())
            .bind(self.enrollments.iter().map(|(_, c)| course_ids[c.0]).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.academic.is_empty() {
            let a = &self.academic;
            sqlx::query(
                "INSERT INTO academic_calendar_events (id, title, category, start_date, end_date, no_classes, publish) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::date[], $5::date[], $6::boolean[], $7::boolean[])",
            )
            .bind(&academic_ids)
            .bind(a.iter().map(|a| a.title.clone()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.category.clone()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.start_date).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.end_date).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.no_classes).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.publish).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.exams.is_empty() {
            let e = &self.exams;
            sqlx::query(
                "INSERT INTO final_exams (id, course_id, starts_at, ends_at, room_id, notes) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamp[], $4::timestamp[], $5::bigint[], $6::text[])",
            )
            .bind(&exam_ids)
            .bind(e.iter().map(|e| course_ids[e.course.0]).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.starts_at).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.ends_at).collect::<Vec<_>>())
            .bind(e.iter().map(|e| room_of(e.room)).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.notes.clone()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let students = self
            .students
            .iter()
            .zip(&user_ids)
            .zip(tokens)
            .map(|((s, id), refresh_token)| SeededStudent {
                id: *id,
                email: s.email.clone(),
                calendar_id: s.calendar_id.clone(),
                refresh_token,
            })
            .collect();
        Ok(Seeded {
            rooms: room_ids,
            courses: course_ids,
            meetings: meeting_ids,
            students,
            academic: academic_ids,
            exams: exam_ids,
        })
    }

    fn check_keys(&self) -> Result<(), SeedError> {
        let check = |kind: &'static str, index: usize, len: usize| {
            if index < len {
                Ok(())
            } else {
                Err(SeedError::UnknownKey { kind, index })
            }
        };
        let (rooms, courses, students) =
            (self.rooms.len(), self.courses.len(), self.students.len());
        for m in &self.meetings {
            check("course", m.course.0, courses)?;
            if let Some(r) = m.room {
                check("room", r.0, rooms)?;
            }
        }
        for e in &self.exams {
            check("course", e.course.0, courses)?;
            if let Some(r) = e.room {
                check("room", r.0, rooms)?;
            }
        }
        for (s, c) in &self.enrollments {
            check("student", s.0, students)?;
            check("course", c.0, courses)?;
        }
        Ok(())
    }
}

/// `n` ids from `table`'s id sequence, ascending.
async fn reserve_ids(
    conn: &mut PgConnection,
    table: &str,
    n: usize,
) -> Result<Vec<i64>, SeedError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence($1, 'id')) AS id FROM generate_series(1, $2) ORDER BY 1",
    )
    .bind(table)
    .bind(n as i64)
    .fetch_all(&mut *conn)
    .await?)
}

/// A seeded student.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededStudent {
    pub id: i64,
    pub email: String,
    pub calendar_id: Option<String>,
    /// Set when the seed had [`Seed::refresh_tokens`] and the student a calendar.
    pub refresh_token: Option<String>,
}

/// What [`Seed::insert`] wrote: ids by key, in the order the rows were added.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    pub rooms: Vec<i64>,
    pub courses: Vec<i64>,
    pub meetings: Vec<i64>,
    pub students: Vec<SeededStudent>,
    pub academic: Vec<i64>,
    pub exams: Vec<i64>,
}

impl Seeded {
    /// The user ids of the students, in the order they were added.
    pub fn user_ids(&self) -> Vec<i64> {
        self.students.iter().map(|s| s.id).collect()
    }
}

macro_rules! index {
    ($($key:ident => $field:ident),* $(,)?) => {$(
        impl Index<$key> for Seeded {
            type Output = i64;
            fn index(&self, key: $key) -> &i64 {
                &self.$field[key.0]
            }
        }
    )*};
}
index!(RoomKey => rooms, CourseKey => courses, MeetingKey => meetings,
       AcademicKey => academic, ExamKey => exams);

impl Index<StudentKey> for Seeded {
    type Output = i64;
    fn index(&self, key: StudentKey) -> &i64 {
        &self.students[key.0].id
    }
}
