//! The academic calendar in the pure event model: EXDATE lines for cancelled class
//! occurrences (local time, DST, evening classes, multi-day breaks, date ranges), final
//! exams as single events, published rows as all-day events, malformed rows skipped.

use calsync_domain::{
    academic::NoClassDays,
    events::{EventPlan, EventSource, EventTiming, Transparency, plan_course_events, plan_events},
    schedule::{
        AcademicCalendarEvent, Course, CourseSchedule, FinalExam, MeetingTime, Room, SyncSnapshot,
    },
    users::{SyncStatus, User},
};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::{America::New_York, Tz};

const TZ: Tz = New_York;
const USER: i64 = 42;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn t(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

fn dt(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

fn user() -> User {
    User {
        id: USER,
        email: "s@uni.edu".into(),
        name: "S".into(),
        google_course_calendar_id: Some("cal".into()),
        calendar_needs_sync: true,
        last_calendar_sync_at: None,
        calendar_sync_generation: 1,
        calendar_sync_status: SyncStatus::Ok,
        last_sync_error: None,
        last_sync_error_at: None,
    }
}

fn room(placeholder: bool) -> Room {
    Room {
        id: 3,
        building: "Smith Hall".into(),
        number: "101".into(),
        is_placeholder: placeholder,
    }
}

/// A fall 2026 course (Mon 2026-08-31 .. Fri 2026-12-11) meeting on `days` (0 = Sunday)
/// at `begin`–`end`; meeting time ids are `id * 10 + day`.
fn course(id: i64, days: &[i16], begin: &str, end: &str) -> CourseSchedule {
    CourseSchedule {
        course: Course {
            id,
            title: format!("Course {id}"),
            subject: "CS".into(),
            course_number: format!("{id}"),
            section_number: "001".into(),
            start_date: Some(d("2026-08-31")),
            end_date: Some(d("2026-12-11")),
        },
        meeting_times: days
            .iter()
            .map(|&day| MeetingTime {
                id: id * 10 + i64::from(day),
                course_id: id,
                day_of_week: day,
                begin_time: t(begin),
                end_time: t(end),
                start_date: None,
                end_date: None,
                room: Some(room(false)),
            })
            .collect(),
    }
}

fn row(id: i64, category: &str, first: &str, last: &str) -> AcademicCalendarEvent {
    AcademicCalendarEvent {
        id,
        title: format!("Row {id}"),
        category: category.into(),
        start_date: d(first),
        end_date: d(last),
        no_classes: true,
        publish: false,
    }
}

fn plan(
    courses: Vec<CourseSchedule>,
    calendar: Vec<AcademicCalendarEvent>,
    exams: Vec<FinalExam>,
) -> EventPlan {
    plan_events(
        &SyncSnapshot {
            user: user(),
            courses,
            exams,
            academic_calendar: calendar,
            preferences: Vec::new(),
        },
        TZ,
    )
}

/// The EXDATE lines of meeting time `mt`.
fn exdates(plan: &EventPlan, mt: i64) -> Vec<String> {
    let ev = plan
        .events
        .iter()
        .find(|e| e.source == EventSource::MeetingTime(mt))
        .unwrap_or_else(|| panic!("no event for meeting time {mt}: {plan:#?}"));
    assert!(
        ev.recurrence[0].starts_with("RRULE:"),
        "{:?}",
        ev.recurrence
    );
    ev.recurrence[1..].to_vec()
}

fn fingerprint(plan: &EventPlan, mt: i64) -> String {
    plan.events
        .iter()
        .find(|e| e.source == EventSource::MeetingTime(mt))
        .unwrap()
        .fingerprint
        .clone()
}

#[test]
fn thanksgiving_cancels_wednesday_and_friday_of_mwf_but_not_tuesday_of_tr() {
    let thanksgiving = row(1, "break", "2026-11-25", "2026-11-27");
    let p = plan(
        vec![
            course(1, &[1, 3, 5], "09:00", "09:50"),
            course(2, &[2, 4], "10:00", "11:15"),
        ],
        vec![thanksgiving],
        vec![],
    );
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    assert_eq!(exdates(&p, 11), Vec::<String>::new(), "Monday");
    assert_eq!(
        exdates(&p, 13),
        vec!["EXDATE;TZID=America/New_York:20261125T090000"]
    );
    assert_eq!(
        exdates(&p, 15),
        vec!["EXDATE;TZID=America/New_York:20261127T090000"]
    );
    assert_eq!(
        exdates(&p, 22),
        Vec::<String>::new(),
        "the TR class's Tuesday stays"
    );
    assert_eq!(
        exdates(&p, 24),
        vec!["EXDATE;TZID=America/New_York:20261126T100000"]
    );
}

#[test]
fn a_holiday_after_the_november_dst_change_keeps_the_local_time() {
    // Clocks fall back on Sunday 2026-11-01; Monday 2026-11-02 is in EST.
    let p = plan(
        vec![course(1, &[1], "09:00", "10:15")],
        vec![row(1, "holiday", "2026-11-02", "2026-11-02")],
        vec![],
    );
    let lines = exdates(&p, 11);
    assert_eq!(lines, vec!["EXDATE;TZID=America/New_York:20261102T090000"]);
    // The cancelled instant is 09:00 EST = 14:00Z (not 13:00Z, the EDT offset of the
    // series' first occurrence).
    let local = dt("2026-11-02 09:00");
    assert_eq!(
        TZ.from_local_datetime(&local).unwrap().naive_utc(),
        dt("2026-11-02 14:00")
    );
}

#[test]
fn an_evening_class_on_a_holiday_is_excluded_by_its_local_date() {
    // 19:00 EST on Thursday 2026-11-26 is 00:00Z on Friday: the local date decides.
    let p = plan(
        vec![
            course(1, &[4], "19:00", "21:15"),
            course(2, &[5], "19:00", "21:15"),
        ],
        vec![row(1, "holiday", "2026-11-26", "2026-11-26")],
        vec![],
    );
    assert_eq!(
        exdates(&p, 14),
        vec!["EXDATE;TZID=America/New_York:20261126T190000"]
    );
    assert_eq!(
        exdates(&p, 25),
        Vec::<String>::new(),
        "Friday's class is not cancelled"
    );
}

#[test]
fn a_break_outside_the_course_adds_nothing_and_changes_no_fingerprint() {
    let courses = || vec![course(1, &[1, 3], "09:00", "10:15")];
    let without = plan(courses(), vec![], vec![]);
    let with = plan(
        courses(),
        vec![row(1, "break", "2026-08-17", "2026-08-28")],
        vec![],
    );
    for mt in [11, 13] {
        assert_eq!(exdates(&with, mt), Vec::<String>::new());
        assert_eq!(fingerprint(&with, mt), fingerprint(&without, mt));
    }
    // No calendar at all is today's model exactly.
    let legacy = plan_course_events(USER, &courses(), TZ);
    assert_eq!(legacy.events, without.events);
}

#[test]
fn a_holiday_changes_only_the_events_it_touches() {
    let courses = || vec![course(1, &[1, 3], "09:00", "10:15")];
    let without = plan(courses(), vec![], vec![]);
    let with = plan(
        courses(),
        vec![row(1, "holiday", "2026-09-07", "2026-09-07")],
        vec![],
    );
    assert_ne!(fingerprint(&with, 11), fingerprint(&without, 11), "Monday");
    assert_eq!(
        fingerprint(&with, 13),
        fingerprint(&without, 13),
        "Wednesday"
    );
}

#[test]
fn multi_day_breaks_expand_to_every_matching_weekday_in_date_order() {
    // Rows listed out of order; overlapping rows cancel a day once.
    let p = plan(
        vec![course(1, &[1, 3, 5], "09:00", "09:50")],
        vec![
            row(2, "break", "2026-10-19", "2026-10-23"),
            row(1, "break", "2026-10-12", "2026-10-20"),
        ],
        vec![],
    );
    assert_eq!(
        exdates(&p, 11),
        vec![
            "EXDATE;TZID=America/New_York:20261012T090000",
            "EXDATE;TZID=America/New_York:20261019T090000",
        ]
    );
    assert_eq!(
        exdates(&p, 15),
        vec![
            "EXDATE;TZID=America/New_York:20261016T090000",
            "EXDATE;TZID=America/New_York:20261023T090000",
        ]
    );
}

#[test]
fn a_meetings_own_dates_bound_its_exclusions() {
    let mut c = course(1, &[1], "09:00", "10:15");
    c.meeting_times[0].start_date = Some(d("2026-10-01"));
    let p = plan(
        vec![c],
        vec![
            row(1, "holiday", "2026-09-07", "2026-09-07"),
            row(2, "holiday", "2026-10-12", "2026-10-12"),
            row(3, "holiday", "2026-12-14", "2026-12-14"),
        ],
        vec![],
    );
    assert_eq!(
        exdates(&p, 11),
        vec!["EXDATE;TZID=America/New_York:20261012T090000"]
    );
}

#[test]
fn rows_that_do_not_cancel_classes_add_nothing() {
    let mut other = row(1, "other", "2026-09-07", "2026-09-07");
    other.no_classes = false;
    let p = plan(vec![course(1, &[1], "09:00", "10:15")], vec![other], vec![]);
    assert_eq!(exdates(&p, 11), Vec::<String>::new());
}

#[test]
fn a_malformed_row_is_skipped_with_a_reason_and_the_rest_still_apply() {
    let reversed = row(7, "holiday", "2026-09-08", "2026-09-07");
    let huge = row(8, "break", "2026-01-01", "2062-01-01");
    let good = row(9, "holiday", "2026-09-14", "2026-09-14");
    let p = plan(
        vec![course(1, &[1], "09:00", "10:15")],
        vec![reversed, huge, good],
        vec![],
    );
    assert_eq!(
        exdates(&p, 11),
        vec!["EXDATE;TZID=America/New_York:20260914T090000"]
    );
    let skipped: Vec<_> = p.skipped.iter().map(|s| s.source).collect();
    assert_eq!(
        skipped,
        vec![EventSource::AcademicEvent(7), EventSource::AcademicEvent(8)]
    );
    assert!(
        p.skipped[0].reason.contains("before start_date"),
        "{}",
        p.skipped[0].reason
    );
    assert!(
        p.skipped[1].reason.contains("longer than a year"),
        "{}",
        p.skipped[1].reason
    );
}

#[test]
fn no_class_days_list_cancelled_occurrences_only_on_the_series_weekday() {
    let mut skipped = Vec::new();
    let days =
        NoClassDays::from_calendar(&[row(1, "break", "2026-11-23", "2026-11-29")], &mut skipped);
    // A Tuesday series from 2026-09-01.
    assert_eq!(
        days.cancelled_occurrences(d("2026-09-01"), d("2026-12-08")),
        vec![d("2026-11-24")]
    );
    assert!(
        days.cancelled_occurrences(d("2026-09-01"), d("2026-11-17"))
            .is_empty()
    );
}

fn exam(id: i64, course_id: i64, start: &str, end: &str, room: Option<Room>) -> FinalExam {
    FinalExam {
        id,
        course_id,
        starts_at: dt(start),
        ends_at: dt(end),
        room,
    }
}

#[test]
fn final_exams_are_single_events_in_their_own_namespace() {
    let p = plan(
        vec![course(5, &[1], "09:00", "10:15")],
        vec![],
        vec![
            exam(
                5,
                5,
                "2026-12-11 09:00",
                "2026-12-11 12:00",
                Some(room(false)),
            ),
            exam(
                6,
                5,
                "2026-12-15 18:30",
                "2026-12-15 21:30",
                Some(room(true)),
            ),
        ],
    );
    assert!(p.skipped.is_empty());
    let ev = p
        .events
        .iter()
        .find(|e| e.id == "cs42e5")
        .expect("exam event");
    assert_eq!(ev.source, EventSource::FinalExam(5));
    assert_eq!(ev.summary, "Final exam: Course 5");
    assert_eq!(ev.location, "Smith Hall 101");
    assert!(ev.recurrence.is_empty());
    assert_eq!(ev.course_id, Some(5));
    let (start, end) = ev.instants().unwrap();
    assert_eq!(start.to_rfc3339(), "2026-12-11T09:00:00-05:00");
    assert_eq!(end.to_rfc3339(), "2026-12-11T12:00:00-05:00");
    let tbd = p.events.iter().find(|e| e.id == "cs42e6").unwrap();
    assert_eq!(tbd.location, "TBD");
    // The class event with the same row id lives in another namespace.
    assert!(p.events.iter().any(|e| e.id == "cs42m51"));
    let ids: Vec<&str> = p.events.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "events are ordered by id");
}

#[test]
fn an_exam_ending_before_it_starts_is_skipped() {
    let p = plan(
        vec![course(5, &[1], "09:00", "10:15")],
        vec![],
        vec![exam(9, 5, "2026-12-11 12:00", "2026-12-11 09:00", None)],
    );
    assert!(
        !p.events
            .iter()
            .any(|e| e.source == EventSource::FinalExam(9))
    );
    assert_eq!(p.skipped[0].source, EventSource::FinalExam(9));
}

#[test]
fn published_rows_are_all_day_events_for_students_whose_courses_overlap() {
    let mut thanksgiving = row(3, "break", "2026-11-25", "2026-11-27");
    thanksgiving.publish = true;
    thanksgiving.title = "Thanksgiving break".into();
    let mut summer = row(4, "holiday", "2027-07-05", "2027-07-05");
    summer.publish = true;
    let mut unpublished = row(5, "holiday", "2026-09-07", "2026-09-07");
    unpublished.publish = false;
    let p = plan(
        vec![course(1, &[1], "09:00", "10:15")],
        vec![thanksgiving, summer, unpublished],
        vec![],
    );
    let academic: Vec<_> = p
        .events
        .iter()
        .filter(|e| matches!(e.source, EventSource::AcademicEvent(_)))
        .collect();
    assert_eq!(academic.len(), 1, "{academic:#?}");
    let ev = academic[0];
    assert_eq!(ev.id, "cs42a3");
    assert_eq!(ev.summary, "Thanksgiving break");
    assert_eq!(ev.description, "Break (no classes)");
    assert_eq!(
        ev.timing,
        EventTiming::AllDay {
            first_day: d("2026-11-25"),
            last_day: d("2026-11-27")
        }
    );
    assert_eq!(ev.appearance.transparency, Transparency::Transparent);
    assert_eq!(ev.course_id, None);
}
