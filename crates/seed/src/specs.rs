//! The rows a [`crate::Seed`] can hold, as plain builders.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Weekday};

use crate::{CourseKey, RoomKey};

/// A row of `rooms`.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    pub building: String,
    pub number: String,
    pub is_placeholder: bool,
    pub capacity: Option<i32>,
}

impl RoomSpec {
    pub fn new(building: impl Into<String>, number: impl Into<String>) -> RoomSpec {
        RoomSpec {
            building: building.into(),
            number: number.into(),
            is_placeholder: false,
            capacity: None,
        }
    }
    /// A "to be determined" room (location "TBD").
    pub fn placeholder(mut self, yes: bool) -> RoomSpec {
        self.is_placeholder = yes;
        self
    }
    pub fn capacity(mut self, capacity: i32) -> RoomSpec {
        self.capacity = Some(capacity);
        self
    }
}

/// A row of `courses` (section `001`, no dates until [`CourseSpec::dates`]).
#[derive(Debug, Clone)]
pub struct CourseSpec {
    pub title: String,
    pub subject: String,
    pub course_number: String,
    pub section_number: String,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub description: Option<String>,
    pub capacity: Option<i32>,
}

impl CourseSpec {
    pub fn new(
        title: impl Into<String>,
        subject: impl Into<String>,
        course_number: impl Into<String>,
    ) -> CourseSpec {
        CourseSpec {
            title: title.into(),
            subject: subject.into(),
            course_number: course_number.into(),
            section_number: "001".into(),
            start_date: None,
            end_date: None,
            description: None,
            capacity: None,
        }
    }
    pub fn section(mut self, section: impl Into<String>) -> CourseSpec {
        self.section_number = section.into();
        self
    }
    /// First and last day of the course (inclusive).
    pub fn dates(mut self, start: NaiveDate, end: NaiveDate) -> CourseSpec {
        self.start_date = Some(start);
        self.end_date = Some(end);
        self
    }
    pub fn description(mut self, description: impl Into<String>) -> CourseSpec {
        self.description = Some(description.into());
        self
    }
    pub fn capacity(mut self, capacity: i32) -> CourseSpec {
        self.capacity = Some(capacity);
        self
    }
}

/// A row of `meeting_times`: weekly on `day`, local `begin`–`end`.
#[derive(Debug, Clone)]
pub struct MeetingSpec {
    pub course: CourseKey,
    pub day: Weekday,
    pub begin: NaiveTime,
    pub end: NaiveTime,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub room: Option<RoomKey>,
    pub notes: Option<String>,
}

impl MeetingSpec {
    pub fn new(course: CourseKey, day: Weekday, begin: NaiveTime, end: NaiveTime) -> MeetingSpec {
        MeetingSpec {
            course,
            day,
            begin,
            end,
            start_date: None,
            end_date: None,
            room: None,
            notes: None,
        }
    }
    pub fn room(mut self, room: RoomKey) -> MeetingSpec {
        self.room = Some(room);
        self
    }
    /// Dates of its own, overriding the course's.
    pub fn dates(mut self, start: NaiveDate, end: NaiveDate) -> MeetingSpec {
        self.start_date = Some(start);
        self.end_date = Some(end);
        self
    }
    pub fn notes(mut self, notes: impl Into<String>) -> MeetingSpec {
        self.notes = Some(notes.into());
        self
    }
}

/// A row of `users` (a student). The name defaults to the e-mail address.
#[derive(Debug, Clone)]
pub struct StudentSpec {
    pub email: String,
    pub name: String,
    pub calendar_id: Option<String>,
}

impl StudentSpec {
    pub fn new(email: impl Into<String>) -> StudentSpec {
        let email = email.into();
        StudentSpec {
            name: email.clone(),
            email,
            calendar_id: None,
        }
    }
    pub fn name(mut self, name: impl Into<String>) -> StudentSpec {
        self.name = name.into();
        self
    }
    /// `users.google_course_calendar_id`.
    pub fn calendar(mut self, calendar_id: impl Into<String>) -> StudentSpec {
        self.calendar_id = Some(calendar_id.into());
        self
    }
}

/// A row of `academic_calendar_events`. `no_classes: None` leaves it to the database
/// default (by category: everything but `other` cancels classes).
#[derive(Debug, Clone)]
pub struct AcademicSpec {
    pub title: String,
    pub category: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub no_classes: Option<bool>,
    pub publish: bool,
}

impl AcademicSpec {
    pub fn new(
        title: impl Into<String>,
        category: impl Into<String>,
        start_date: NaiveDate,
        end_date: NaiveDate,
    ) -> AcademicSpec {
        AcademicSpec {
            title: title.into(),
            category: category.into(),
            start_date,
            end_date,
            no_classes: None,
            publish: false,
        }
    }
    /// A one-day holiday.
    pub fn holiday(title: impl Into<String>, day: NaiveDate) -> AcademicSpec {
        AcademicSpec::new(title, "holiday", day, day)
    }
    /// A break from `first` to `last` (inclusive).
    pub fn break_days(title: impl Into<String>, first: NaiveDate, last: NaiveDate) -> AcademicSpec {
        AcademicSpec::new(title, "break", first, last)
    }
    /// A one-day reading day.
    pub fn reading_day(title: impl Into<String>, day: NaiveDate) -> AcademicSpec {
        AcademicSpec::new(title, "reading_day", day, day)
    }
    /// An exam period from `first` to `last`.
    pub fn exam_period(
        title: impl Into<String>,
        first: NaiveDate,
        last: NaiveDate,
    ) -> AcademicSpec {
        AcademicSpec::new(title, "exam_period", first, last)
    }
    pub fn no_classes(mut self, yes: bool) -> AcademicSpec {
        self.no_classes = Some(yes);
        self
    }
    /// Show it to students as an all-day event.
    pub fn publish(mut self, yes: bool) -> AcademicSpec {
        self.publish = yes;
        self
    }
}

/// A row of `final_exams` (local times in the school time zone).
#[derive(Debug, Clone)]
pub struct ExamSpec {
    pub course: CourseKey,
    pub starts_at: NaiveDateTime,
    pub ends_at: NaiveDateTime,
    pub room: Option<RoomKey>,
    pub notes: Option<String>,
}

impl ExamSpec {
    pub fn new(course: CourseKey, starts_at: NaiveDateTime, ends_at: NaiveDateTime) -> ExamSpec {
        ExamSpec {
            course,
            starts_at,
            ends_at,
            room: None,
            notes: None,
        }
    }
    /// On `day` from `begin` to `end`.
    pub fn on(course: CourseKey, day: NaiveDate, begin: NaiveTime, end: NaiveTime) -> ExamSpec {
        ExamSpec::new(course, day.and_time(begin), day.and_time(end))
    }
    pub fn room(mut self, room: RoomKey) -> ExamSpec {
        self.room = Some(room);
        self
    }
    pub fn notes(mut self, notes: impl Into<String>) -> ExamSpec {
        self.notes = Some(notes.into());
        self
    }
}
