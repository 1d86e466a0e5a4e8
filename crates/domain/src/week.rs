//! A student's week as operators see it (the dashboard's user page): one block per
//! weekly class meeting at its day and local time, with the room and the title calsync
//! writes, the term's dates, the no-class days of the academic calendar and the
//! occurrences they cancel, and the other events calsync writes (final exams, published
//! academic-calendar days).
//!
//! Everything comes from the one event plan a sync would write ([`events::plan_events`]
//! on the same snapshot, preferences rendered), so the page shows what calsync writes,
//! not a second reading of the schedule: titles and locations are the rendered ones,
//! the cancelled dates are read back from the events' EXDATE lines. Pure apart from
//! [`student_week`], which loads the snapshot.

use chrono::{Datelike, NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::PgPool;

use crate::DomainError;
use crate::academic::{self, AcademicCategory};
use crate::events::{self, EventKind, EventPlan, EventSource, EventTiming, SkippedItem};
use crate::preferences::view::PreviewEvent;
use crate::schedule::{self, SyncSnapshot};

/// The zone the week is planned in. Only the UTC `UNTIL` of a rule and the `TZID` of
/// EXDATE lines depend on it; the wall-clock times, dates and texts shown here are the
/// same in every zone (see `preferences::view`).
const WEEK_ZONE: Tz = chrono_tz::UTC;

/// One weekly class meeting in the grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeekBlock {
    /// The event id calsync writes it under (`cs<user>m<meeting>`).
    pub event_id: String,
    pub meeting_time_id: i64,
    pub course_id: i64,
    /// `SUBJECT-NUMBER-SECTION`, e.g. `MATH-1750-01`.
    pub course_code: String,
    pub course_title: String,
    /// Monday = 0 … Sunday = 6 (the grid's columns).
    pub weekday: u8,
    /// Local wall-clock times in the school's time zone.
    pub begin: NaiveTime,
    pub end: NaiveTime,
    /// The event's title as calsync writes it (the student's title template applied).
    pub title: String,
    /// The event's location as calsync writes it (the room, or "TBD").
    pub location: String,
    /// First and last class day of the series.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Occurrences cancelled by no-class days (the event's EXDATE lines), ascending.
    pub excluded: Vec<NaiveDate>,
}

/// A no-class row of the academic calendar that touches the term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoClassPeriod {
    pub id: i64,
    pub title: String,
    /// e.g. `Holiday`, `Break`.
    pub category: &'static str,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    /// Whether students also see it as an all-day event.
    pub published: bool,
    /// Class occurrences of this student it cancels.
    pub cancelled: usize,
}

/// Everything the week section shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudentWeek {
    pub user_id: i64,
    /// First and last day of the student's courses and meetings (`None`: no dates).
    pub term: Option<(NaiveDate, NaiveDate)>,
    /// Class meetings, by weekday, start time and id.
    pub blocks: Vec<WeekBlock>,
    /// The no-class days within the term, by date.
    pub no_class_days: Vec<NoClassPeriod>,
    /// The events calsync writes besides the weekly classes (final exams, published
    /// academic-calendar days), as the preview shows them.
    pub other_events: Vec<PreviewEvent>,
    /// Schedule rows that produce no event, and why.
    pub skipped: Vec<SkippedItem>,
}

/// The term: the earliest and latest date of the courses and their meetings.
fn term_of(snap: &SyncSnapshot) -> Option<(NaiveDate, NaiveDate)> {
    let mut days = Vec::new();
    for cs in &snap.courses {
        days.extend([cs.course.start_date, cs.course.end_date]);
        for mt in &cs.meeting_times {
            days.extend([mt.start_date, mt.end_date]);
        }
    }
    let days: Vec<NaiveDate> = days.into_iter().flatten().collect();
    Some((*days.iter().min()?, *days.iter().max()?))
}

/// The week of the student in `snap`, from the events `plan` (planned from `snap`).
pub fn week_of(snap: &SyncSnapshot, plan: &EventPlan) -> StudentWeek {
    let mut blocks = Vec::new();
    let mut other_events = Vec::new();
    for ev in &plan.events {
        let (EventSource::MeetingTime(mt_id), EventTiming::Timed { start, end, .. }) =
            (ev.source, ev.timing)
        else {
            other_events.push(PreviewEvent::of(ev));
            continue;
        };
        let found = snap.courses.iter().find_map(|cs| {
            cs.meeting_times
                .iter()
                .find(|mt| mt.id == mt_id)
                .map(|mt| (cs, mt))
        });
        let Some((cs, mt)) = found else {
            other_events.push(PreviewEvent::of(ev));
            continue;
        };
        let c = &cs.course;
        let first_day = start.date();
        let last_day = mt.end_date.or(c.end_date).unwrap_or(first_day);
        blocks.push(WeekBlock {
            event_id: ev.id.clone(),
            meeting_time_id: mt_id,
            course_id: c.id,
            course_code: format!("{}-{}-{}", c.subject, c.course_number, c.section_number),
            course_title: c.title.clone(),
            weekday: first_day.weekday().num_days_from_monday() as u8,
            begin: start.time(),
            end: end.time(),
            title: ev.summary.clone(),
            location: ev.location.clone(),
            first_day,
            last_day,
            excluded: ev
                .recurrence
                .iter()
                .filter_map(|l| academic::exdate_day(l))
                .collect(),
        });
    }
    blocks
        .sort_by(|a, b| (a.weekday, a.begin, &a.event_id).cmp(&(b.weekday, b.begin, &b.event_id)));
    let term = term_of(snap);
    let mut no_class_days: Vec<NoClassPeriod> = snap
        .academic_calendar
        .iter()
        .filter(|r| r.no_classes && r.start_date <= r.end_date)
        .filter(|r| term.is_some_and(|(lo, hi)| r.start_date <= hi && r.end_date >= lo))
        .map(|r| NoClassPeriod {
            id: r.id,
            title: r.title.clone(),
            category: AcademicCategory::from_db(&r.category).label(),
            start_date: r.start_date,
            end_date: r.end_date,
            published: r.publish,
            cancelled: blocks
                .iter()
                .flat_map(|b| &b.excluded)
                .filter(|d| (r.start_date..=r.end_date).contains(*d))
                .count(),
        })
        .collect();
    no_class_days.sort_by_key(|p| (p.start_date, p.id));
    other_events.sort_by(|a, b| {
        let rank = |k: EventKind| k != EventKind::Exam;
        (rank(a.kind), &a.when, &a.id).cmp(&(rank(b.kind), &b.when, &b.id))
    });
    StudentWeek {
        user_id: snap.user.id,
        term,
        blocks,
        no_class_days,
        other_events,
        skipped: plan.skipped.clone(),
    }
}

/// Load a student's week (errors with `UnknownUser` for an unknown id). Reads the
/// database only; never calls Google.
pub async fn student_week(pool: &PgPool, user_id: i64) -> Result<StudentWeek, DomainError> {
    let snap = schedule::load_snapshot(pool, user_id).await?;
    let plan = events::plan_events(&snap, WEEK_ZONE);
    Ok(week_of(&snap, &plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{AcademicCalendarEvent, Course, CourseSchedule, MeetingTime, Room};
    use crate::users::User;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn t(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    fn snapshot() -> SyncSnapshot {
        let user = User {
            id: 42,
            email: "s@uni.edu".into(),
            name: "S".into(),
            google_course_calendar_id: Some("cal".into()),
            calendar_needs_sync: true,
            last_calendar_sync_at: None,
            calendar_sync_generation: 1,
            calendar_sync_status: crate::users::SyncStatus::Ok,
            last_sync_error: None,
            last_sync_error_at: None,
        };
        SyncSnapshot {
            user,
            courses: vec![CourseSchedule {
                course: Course {
                    id: 7,
                    title: "Calculus I".into(),
                    subject: "MATH".into(),
                    course_number: "1750".into(),
                    section_number: "01".into(),
                    start_date: Some(d("2026-08-31")),
                    end_date: Some(d("2026-12-11")),
                },
                meeting_times: vec![MeetingTime {
                    id: 11,
                    course_id: 7,
                    day_of_week: 1,
                    begin_time: t("09:00"),
                    end_time: t("09:50"),
                    start_date: None,
                    end_date: None,
                    room: Some(Room {
                        id: 1,
                        building: "Smith".into(),
                        number: "101".into(),
                        is_placeholder: false,
                    }),
                }],
            }],
            exams: vec![],
            academic_calendar: vec![AcademicCalendarEvent {
                id: 3,
                title: "Labor Day".into(),
                category: "holiday".into(),
                start_date: d("2026-09-07"),
                end_date: d("2026-09-07"),
                no_classes: true,
                publish: true,
            }],
            preferences: vec![],
        }
    }

    #[test]
    fn a_meeting_is_a_block_on_its_day_with_its_cancelled_dates() {
        let snap = snapshot();
        let week = week_of(&snap, &events::plan_events(&snap, WEEK_ZONE));
        assert_eq!(week.term, Some((d("2026-08-31"), d("2026-12-11"))));
        let [b] = week.blocks.as_slice() else {
            panic!("{:?}", week.blocks)
        };
        assert_eq!((b.weekday, b.begin, b.end), (0, t("09:00"), t("09:50")));
        assert_eq!(
            (b.title.as_str(), b.location.as_str()),
            ("Calculus I", "Smith 101")
        );
        assert_eq!(b.course_code, "MATH-1750-01");
        assert_eq!(
            (b.first_day, b.last_day),
            (d("2026-08-31"), d("2026-12-11"))
        );
        assert_eq!(b.excluded, vec![d("2026-09-07")]);
        assert_eq!(week.no_class_days.len(), 1);
        assert_eq!(week.no_class_days[0].cancelled, 1);
        assert_eq!(week.no_class_days[0].category, "Holiday");
        // The published holiday is an all-day event calsync writes.
        assert_eq!(week.other_events.len(), 1);
        assert_eq!(week.other_events[0].summary, "Labor Day");
    }

    #[test]
    fn exdate_lines_read_back_to_their_local_day() {
        let line = academic::exdate_line(chrono_tz::America::New_York, d("2026-11-26"), t("21:30"));
        assert_eq!(academic::exdate_day(&line), Some(d("2026-11-26")));
        assert_eq!(academic::exdate_day("RRULE:FREQ=WEEKLY;BYDAY=MO"), None);
        assert_eq!(academic::exdate_day("EXDATE;TZID=UTC:2026"), None);
    }
}
