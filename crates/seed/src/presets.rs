//! Ready-made universities built with the [`Seed`] builder.
//!
//! [`fall_term`] is the realistic term the demo (and the bench's campus-wide holiday)
//! seed: Fall 2026, classes from Monday 31 August to Friday 11 December, with Labor
//! Day, a fall break, Thanksgiving, a reading day and an exam week (14–18 December, no
//! classes) with one final exam per course. Courses run until the end of exam week.

use chrono::{Duration, NaiveDate, Weekday};

use crate::{
    AcademicSpec, CourseSpec, ExamSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd,
};

/// The dates of the Fall 2026 term and its academic calendar.
pub mod fall_2026 {
    use super::*;

    /// First day of classes (a Monday).
    pub fn first_day() -> NaiveDate {
        ymd(2026, 8, 31)
    }
    /// Last day of classes (a Friday).
    pub fn last_day_of_classes() -> NaiveDate {
        ymd(2026, 12, 11)
    }
    /// Last day of the term's courses: the end of exam week.
    pub fn last_day() -> NaiveDate {
        exam_week().1
    }
    /// Labor Day (Monday).
    pub fn labor_day() -> NaiveDate {
        ymd(2026, 9, 7)
    }
    /// Fall break, Monday–Tuesday.
    pub fn fall_break() -> (NaiveDate, NaiveDate) {
        (ymd(2026, 10, 12), ymd(2026, 10, 13))
    }
    /// Thanksgiving break, Wednesday–Friday.
    pub fn thanksgiving() -> (NaiveDate, NaiveDate) {
        (ymd(2026, 11, 25), ymd(2026, 11, 27))
    }
    /// Reading day (Thursday before the last day of classes).
    pub fn reading_day() -> NaiveDate {
        ymd(2026, 12, 10)
    }
    /// Final exam week, Monday–Friday.
    pub fn exam_week() -> (NaiveDate, NaiveDate) {
        (ymd(2026, 12, 14), ymd(2026, 12, 18))
    }

    /// The academic calendar rows of the term, all published.
    pub fn academic_calendar() -> Vec<AcademicSpec> {
        let (fall_first, fall_last) = fall_break();
        let (tg_first, tg_last) = thanksgiving();
        let (exam_first, exam_last) = exam_week();
        vec![
            AcademicSpec::holiday("Labor Day", labor_day()).publish(true),
            AcademicSpec::break_days("Fall break", fall_first, fall_last).publish(true),
            AcademicSpec::new(
                "Last day to withdraw",
                "other",
                ymd(2026, 10, 30),
                ymd(2026, 10, 30),
            )
            .no_classes(false)
            .publish(true),
            AcademicSpec::break_days("Thanksgiving break", tg_first, tg_last).publish(true),
            AcademicSpec::reading_day("Reading day", reading_day()).publish(true),
            AcademicSpec::exam_period("Final exams", exam_first, exam_last).publish(true),
        ]
    }
}

/// How big a [`fall_term`] university is and how its students are named.
#[derive(Debug, Clone)]
pub struct Term {
    pub students: u32,
    pub courses: u32,
    /// Student `g` (1-based) gets e-mail `student<g><email_suffix>`.
    pub email_suffix: String,
    /// …and calendar `<calendar_prefix><g>@group.calendar.google.com`.
    pub calendar_prefix: String,
}

const BUILDINGS: [&str; 5] = [
    "Smith Hall",
    "Jones Hall",
    "Science Center",
    "Library",
    "Engineering Hall",
];
const PREFIXES: [&str; 5] = [
    "Foundations of",
    "Methods in",
    "Seminar in",
    "Laboratory in",
    "Topics in",
];
const TOPICS: [&str; 8] = [
    "Computing",
    "Calculus",
    "Physics",
    "Chemistry",
    "Biology",
    "Literature",
    "History",
    "Economics",
];
const SUBJECTS: [&str; 8] = ["CS", "MA", "PH", "CH", "BI", "EN", "HI", "EC"];
/// Rooms in a [`fall_term`] university.
pub const ROOMS: u32 = 60;

/// A Fall 2026 university: 60 rooms (every 25th a placeholder), `courses` courses
/// meeting twice a week (Mon/Wed or Tue/Thu, 75 minutes, daytime; every tenth an
/// evening section at 18:30) or three times (Mon/Wed/Fri, 50 minutes, every sixth),
/// students in four courses each, the term's academic calendar
/// ([`fall_2026::academic_calendar`]) and one three-hour final exam per course in exam
/// week. Deterministic: the same sizes give the same rows.
pub fn fall_term(term: &Term) -> Seed {
    let mut seed = Seed::new();
    let rooms: Vec<_> = (1..=ROOMS as usize)
        .map(|g| {
            seed.add_room(
                RoomSpec::new(BUILDINGS[g % 5], (100 + g).to_string())
                    .placeholder(g % 25 == 0)
                    .capacity(40),
            )
        })
        .collect();
    let (exam_first, _) = fall_2026::exam_week();
    let mut courses = Vec::new();
    for g in 1..=term.courses.max(1) as usize {
        let course = seed.add_course(
            CourseSpec::new(
                format!("{} {}", PREFIXES[g % 5], TOPICS[g % 8]),
                SUBJECTS[g % 8],
                (100 + g).to_string(),
            )
            .section(format!("{:03}", 1 + g % 3))
            .dates(fall_2026::first_day(), fall_2026::last_day())
            .description("Demo course")
            .capacity(40),
        );
        let room = rooms[g % rooms.len()];
        let (days, minutes): (&[Weekday], i64) = if g % 6 == 5 {
            (&[Weekday::Mon, Weekday::Wed, Weekday::Fri], 50)
        } else if g % 2 == 0 {
            (&[Weekday::Mon, Weekday::Wed], 75)
        } else {
            (&[Weekday::Tue, Weekday::Thu], 75)
        };
        let begin = if g % 10 == 9 {
            hm(18, 30)
        } else {
            hm(8 + (g % 9) as u32, 0)
        };
        for day in days {
            seed.add_meeting(
                MeetingSpec::new(course, *day, begin, begin + Duration::minutes(minutes))
                    .room(room),
            );
        }
        let (exam_begin, exam_end) = match g % 3 {
            0 => (hm(8, 30), hm(11, 30)),
            1 => (hm(13, 0), hm(16, 0)),
            _ => (hm(18, 30), hm(21, 30)),
        };
        seed.add_exam(
            ExamSpec::on(
                course,
                exam_first + Duration::days((g % 5) as i64),
                exam_begin,
                exam_end,
            )
            .room(room),
        );
        courses.push(course);
    }
    for row in fall_2026::academic_calendar() {
        seed.add_academic(row);
    }
    for g in 1..=term.students as usize {
        let student = seed.add_student(
            StudentSpec::new(format!("student{g}{}", term.email_suffix))
                .name(format!("Student {g}"))
                .calendar(format!(
                    "{}{g}@group.calendar.google.com",
                    term.calendar_prefix
                )),
        );
        for k in 0..4 {
            seed.enroll(student, courses[(g * 7 + k * 53) % courses.len()]);
        }
    }
    seed
}
