//! The academic calendar in the event model (pure, like [`crate::events`]):
//!
//! * **No-class days** cancel class occurrences: each weekly class event gets one
//!   `EXDATE;TZID=<zone>:<local start>` line per cancelled occurrence, in date order,
//!   at the occurrence's local start time in the event's own time zone (Google's
//!   recurrence field takes RFC 5545 RRULE/EXDATE lines; date-time values, since a
//!   DATE-valued EXDATE on a timed series does not cancel the occurrence). The lines are
//!   part of the recurrence and so of the fingerprint: a no-class day that touches no
//!   occurrence of a meeting adds nothing and changes none of its events.
//! * **Final exams** become single timed events, id `cs<user>e<exam>`.
//! * **Published rows** become all-day events, id `cs<user>a<row>`, for students
//!   enrolled in a course whose dates overlap them.
//!
//! A malformed row (reversed or over-long dates, which the database refuses, but older
//! data or a disabled constraint could hold) never fails a sync: it is skipped and
//! reported as a [`SkippedItem`], like a meeting time without dates.
//!
//! The change-tracking triggers apply the same rules to decide whom to flag
//! (`calsync.academic_affected_courses` in the migrations): a student is flagged exactly
//! when one of these rules gives a different answer for one of their courses.

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Serialize;

use crate::events::{
    Appearance, DesiredEvent, EventPlan, EventSource, EventTiming, SkippedItem, Transparency,
    location_of,
};
use crate::schedule::{AcademicCalendarEvent, CourseSchedule, FinalExam};

/// The longest academic calendar row, in days past its first (the database refuses
/// longer ones: a typo in a year must not cancel classes for decades).
pub const MAX_SPAN_DAYS: i64 = 366;

/// `academic_calendar_events.category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcademicCategory {
    Holiday,
    Break,
    ReadingDay,
    ExamPeriod,
    Other,
}

impl AcademicCategory {
    /// Every category, in the order the schema lists them.
    pub const ALL: [AcademicCategory; 5] = [
        AcademicCategory::Holiday,
        AcademicCategory::Break,
        AcademicCategory::ReadingDay,
        AcademicCategory::ExamPeriod,
        AcademicCategory::Other,
    ];

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            AcademicCategory::Holiday => "holiday",
            AcademicCategory::Break => "break",
            AcademicCategory::ReadingDay => "reading_day",
            AcademicCategory::ExamPeriod => "exam_period",
            AcademicCategory::Other => "other",
        }
    }

    /// The stored value parsed; anything unknown is `Other`.
    pub fn from_db(value: &str) -> AcademicCategory {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == value)
            .unwrap_or(AcademicCategory::Other)
    }

    /// What students read in the event description.
    pub fn label(self) -> &'static str {
        match self {
            AcademicCategory::Holiday => "Holiday",
            AcademicCategory::Break => "Break",
            AcademicCategory::ReadingDay => "Reading day",
            AcademicCategory::ExamPeriod => "Exam period",
            AcademicCategory::Other => "Academic calendar",
        }
    }
}

/// Why an academic calendar row cannot be used, if it cannot.
fn malformed(row: &AcademicCalendarEvent) -> Option<String> {
    if row.end_date < row.start_date {
        return Some(format!(
            "academic calendar row {:?}: end_date {} is before start_date {}; ignored",
            row.title, row.end_date, row.start_date
        ));
    }
    if (row.end_date - row.start_date).num_days() > MAX_SPAN_DAYS {
        return Some(format!(
            "academic calendar row {:?}: {} to {} is longer than a year; ignored",
            row.title, row.start_date, row.end_date
        ));
    }
    None
}

/// The days on which classes do not meet, from the rows with `no_classes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoClassDays {
    /// Inclusive (first, last) ranges, valid and sorted.
    ranges: Vec<(NaiveDate, NaiveDate)>,
}

impl NoClassDays {
    /// No-class days of `rows`. Malformed rows (published or not) are left out and
    /// reported in `skipped`, once each.
    pub fn from_calendar(
        rows: &[AcademicCalendarEvent],
        skipped: &mut Vec<SkippedItem>,
    ) -> NoClassDays {
        let mut ranges = Vec::new();
        for row in rows {
            if let Some(reason) = malformed(row) {
                skipped.push(SkippedItem {
                    source: EventSource::AcademicEvent(row.id),
                    reason,
                });
            } else if row.no_classes {
                ranges.push((row.start_date, row.end_date));
            }
        }
        ranges.sort();
        NoClassDays { ranges }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The dates of a weekly series (every 7 days from `first`, up to `last`) that fall
    /// on a no-class day, ascending.
    pub fn cancelled_occurrences(&self, first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
        let mut days = BTreeSet::new();
        for &(from, to) in &self.ranges {
            let lo = from.max(first);
            let hi = to.min(last);
            if lo > hi {
                continue;
            }
            // The first occurrence on or after lo: occurrences share first's weekday.
            let ahead = (first.weekday().num_days_from_sunday() as i64
                - lo.weekday().num_days_from_sunday() as i64)
                .rem_euclid(7);
            let mut day = lo + Duration::days(ahead);
            while day <= hi {
                days.insert(day);
                day += Duration::days(7);
            }
        }
        days.into_iter().collect()
    }

    /// The EXDATE lines of a weekly class series that starts at local time `begin` on
    /// `first` and recurs until `last`, in `tz`: one line per cancelled occurrence,
    /// ascending, e.g. `EXDATE;TZID=America/New_York:20261126T090000`.
    pub fn exdates(
        &self,
        first: NaiveDate,
        last: NaiveDate,
        begin: NaiveTime,
        tz: Tz,
    ) -> Vec<String> {
        self.cancelled_occurrences(first, last)
            .into_iter()
            .map(|day| exdate_line(tz, day, begin))
            .collect()
    }
}

/// One EXDATE line at local `day` `time` in `tz`.
pub fn exdate_line(tz: Tz, day: NaiveDate, time: NaiveTime) -> String {
    format!(
        "EXDATE;TZID={}:{}",
        tz.name(),
        day.and_time(time).format("%Y%m%dT%H%M%S")
    )
}

/// The local date of an EXDATE line [`exdate_line`] wrote (`None` for anything else).
pub fn exdate_day(line: &str) -> Option<NaiveDate> {
    let rest = line.strip_prefix("EXDATE;TZID=")?;
    let (_, value) = rest.rsplit_once(':')?;
    chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| t.date())
}

/// One single timed event per final exam of the user's courses.
pub fn plan_exams(
    user_id: i64,
    courses: &[CourseSchedule],
    exams: &[FinalExam],
    tz: Tz,
    plan: &mut EventPlan,
) {
    for exam in exams {
        let source = EventSource::FinalExam(exam.id);
        let Some(cs) = courses.iter().find(|c| c.course.id == exam.course_id) else {
            plan.skipped.push(SkippedItem {
                source,
                reason: format!("course {} is not in the schedule", exam.course_id),
            });
            continue;
        };
        if exam.ends_at <= exam.starts_at {
            plan.skipped.push(SkippedItem {
                source,
                reason: format!(
                    "exam ends at {} before it starts at {}",
                    exam.ends_at, exam.starts_at
                ),
            });
            continue;
        }
        let course = &cs.course;
        plan.events.push(
            DesiredEvent {
                id: source.event_id(user_id),
                source,
                course_id: Some(course.id),
                summary: format!("Final exam: {}", course.title),
                description: format!(
                    "{}-{}-{} final exam",
                    course.subject, course.course_number, course.section_number
                ),
                location: location_of(exam.room.as_ref()),
                timing: EventTiming::Timed {
                    start: exam.starts_at,
                    end: exam.ends_at,
                    time_zone: tz,
                },
                recurrence: Vec::new(),
                appearance: Appearance::default(),
                fingerprint: String::new(),
            }
            .seal(),
        );
    }
}

/// Whether a published row shows for a student taking `courses`: some course's dates
/// overlap it (courses without both dates overlap nothing).
fn overlaps_a_course(row: &AcademicCalendarEvent, courses: &[CourseSchedule]) -> bool {
    courses.iter().any(|cs| {
        matches!((cs.course.start_date, cs.course.end_date),
            (Some(start), Some(end)) if start <= row.end_date && end >= row.start_date)
    })
}

/// One all-day event per published row that overlaps one of the user's courses. The
/// events do not block time (transparent): a holiday is not a busy day.
pub fn plan_published(
    user_id: i64,
    courses: &[CourseSchedule],
    rows: &[AcademicCalendarEvent],
    plan: &mut EventPlan,
) {
    for row in rows {
        // Malformed rows were reported by NoClassDays::from_calendar.
        if !row.publish || malformed(row).is_some() || !overlaps_a_course(row, courses) {
            continue;
        }
        let category = AcademicCategory::from_db(&row.category);
        let source = EventSource::AcademicEvent(row.id);
        let title = row.title.trim();
        plan.events.push(
            DesiredEvent {
                id: source.event_id(user_id),
                source,
                course_id: None,
                summary: if title.is_empty() {
                    category.label().to_string()
                } else {
                    title.to_string()
                },
                description: if row.no_classes {
                    format!("{} (no classes)", category.label())
                } else {
                    category.label().to_string()
                },
                location: String::new(),
                timing: EventTiming::AllDay {
                    first_day: row.start_date,
                    last_day: row.end_date,
                },
                recurrence: Vec::new(),
                appearance: Appearance {
                    transparency: Transparency::Transparent,
                    ..Appearance::default()
                },
                fingerprint: String::new(),
            }
            .seal(),
        );
    }
}
