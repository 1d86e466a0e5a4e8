//! Weekly class events: one recurring event per meeting time (RRULE until the local end
//! of the last day, minus the no-class days as EXDATE lines), DST-correct.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc,
};
use chrono_tz::Tz;

use super::{Appearance, DesiredEvent, EventPlan, EventSource, EventTiming, SkippedItem};
use crate::academic::NoClassDays;
use crate::schedule::{CourseSchedule, MeetingTime, Room};

/// The class events of `courses` for `user_id` (no academic calendar), ordered by id.
pub fn plan_course_events(user_id: i64, courses: &[CourseSchedule], tz: Tz) -> EventPlan {
    let mut plan = EventPlan::default();
    plan_classes(user_id, courses, &NoClassDays::default(), tz, &mut plan);
    plan.events.sort_by(|a, b| a.id.cmp(&b.id));
    plan
}

pub(super) fn plan_classes(
    user_id: i64,
    courses: &[CourseSchedule],
    no_class_days: &NoClassDays,
    tz: Tz,
    plan: &mut EventPlan,
) {
    for cs in courses {
        for mt in &cs.meeting_times {
            match event_for(user_id, cs, mt, no_class_days, tz) {
                Ok(ev) => plan.events.push(ev),
                Err(reason) => plan.skipped.push(SkippedItem {
                    source: EventSource::MeetingTime(mt.id),
                    reason,
                }),
            }
        }
    }
}

/// The event location of a room: "building number", or "TBD" for none or a placeholder.
pub fn location_of(room: Option<&Room>) -> String {
    match room {
        Some(room) if !room.is_placeholder => format!("{} {}", room.building, room.number),
        _ => "TBD".to_string(),
    }
}

/// The deterministic event id for a user's meeting time: base32hex (`0-9a-v`), 5+ chars.
pub fn event_id(user_id: i64, meeting_time_id: i64) -> String {
    EventSource::MeetingTime(meeting_time_id).event_id(user_id)
}

const BYDAY: [&str; 7] = ["SU", "MO", "TU", "WE", "TH", "FR", "SA"];

fn event_for(
    user_id: i64,
    cs: &CourseSchedule,
    mt: &MeetingTime,
    no_class_days: &NoClassDays,
    tz: Tz,
) -> Result<DesiredEvent, String> {
    let course = &cs.course;
    let day = usize::try_from(mt.day_of_week)
        .ok()
        .filter(|d| *d < 7)
        .ok_or_else(|| {
            format!(
                "day_of_week {} is not 0 (Sunday) to 6 (Saturday)",
                mt.day_of_week
            )
        })?;
    let first_day = mt
        .start_date
        .or(course.start_date)
        .ok_or("neither the meeting time nor the course has a start date")?;
    let last_day = mt
        .end_date
        .or(course.end_date)
        .ok_or("neither the meeting time nor the course has an end date")?;
    if mt.end_time <= mt.begin_time {
        return Err(format!(
            "end time {} is not after begin time {}",
            mt.end_time, mt.begin_time
        ));
    }
    let first = first_weekday_on_or_after(first_day, day);
    if first > last_day {
        return Err(format!(
            "no {} between {first_day} and {last_day}",
            BYDAY[day]
        ));
    }
    let until = end_of_day_utc(tz, last_day);
    let mut recurrence = vec![format!(
        "RRULE:FREQ=WEEKLY;BYDAY={};UNTIL={}",
        BYDAY[day],
        until.format("%Y%m%dT%H%M%SZ")
    )];
    recurrence.extend(no_class_days.exdates(first, last_day, mt.begin_time, tz));
    let location = location_of(mt.room.as_ref());
    let source = EventSource::MeetingTime(mt.id);
    Ok(DesiredEvent {
        id: source.event_id(user_id),
        source,
        course_id: Some(course.id),
        summary: course.title.clone(),
        description: format!(
            "{}-{}-{}",
            course.subject, course.course_number, course.section_number
        ),
        location,
        timing: EventTiming::Timed {
            start: first.and_time(mt.begin_time),
            end: first.and_time(mt.end_time),
            time_zone: tz,
        },
        recurrence,
        appearance: Appearance::default(),
        fingerprint: String::new(),
    }
    .seal())
}

/// The first date on or after `from` that falls on `day` (0 = Sunday).
fn first_weekday_on_or_after(from: NaiveDate, day: usize) -> NaiveDate {
    let current = from.weekday().num_days_from_sunday() as i64;
    let delta = (day as i64 - current).rem_euclid(7);
    from + Duration::days(delta)
}

/// The last second of `day` in `tz`, as UTC. An evening class on the last day starts
/// before this instant, so Google includes it (23:59:59 UTC would drop it west of UTC).
fn end_of_day_utc(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let local = day
        .and_hms_opt(23, 59, 59)
        .unwrap_or_else(|| day.and_time(chrono::NaiveTime::MIN));
    resolve_local(tz, local).with_timezone(&Utc)
}

/// A local wall-clock time as an instant. Ambiguous times (the repeated hour when
/// clocks fall back) take the earlier instant; skipped times (spring forward) move
/// forward by the gap, as Google does.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<FixedOffset> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.fixed_offset(),
        LocalResult::Ambiguous(a, _) => a.fixed_offset(),
        LocalResult::None => {
            let mut probe = local;
            for _ in 0..4 {
                probe += Duration::minutes(30);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.fixed_offset();
                }
            }
            Utc.from_utc_datetime(&local).fixed_offset()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Course;
    use chrono::NaiveTime;

    fn course(start: &str, end: &str) -> Course {
        Course {
            id: 7,
            title: "Intro to Databases".into(),
            subject: "CS".into(),
            course_number: "340".into(),
            section_number: "002".into(),
            start_date: Some(start.parse().unwrap()),
            end_date: Some(end.parse().unwrap()),
        }
    }

    fn meeting(day: i16, begin: &str, end: &str, room: Option<Room>) -> MeetingTime {
        MeetingTime {
            id: 11,
            course_id: 7,
            day_of_week: day,
            begin_time: NaiveTime::parse_from_str(begin, "%H:%M").unwrap(),
            end_time: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
            start_date: None,
            end_date: None,
            room,
        }
    }

    fn start_of(ev: &DesiredEvent) -> String {
        ev.instants().expect("timed").0.to_rfc3339()
    }

    fn room() -> Room {
        Room {
            id: 1,
            building: "Smith Hall".into(),
            number: "101".into(),
            is_placeholder: false,
        }
    }

    fn one(course: Course, mt: MeetingTime) -> EventPlan {
        plan_course_events(
            42,
            &[CourseSchedule {
                course,
                meeting_times: vec![mt],
            }],
            chrono_tz::America::New_York,
        )
    }

    #[test]
    fn golden_event_fields() {
        // 2026-01-12 is a Monday; the course starts on Thursday 2026-01-08.
        let plan = one(
            course("2026-01-08", "2026-05-01"),
            meeting(1, "09:00", "10:15", Some(room())),
        );
        assert!(plan.skipped.is_empty());
        let ev = &plan.events[0];
        assert_eq!(ev.id, "cs42m11");
        assert_eq!(ev.summary, "Intro to Databases");
        assert_eq!(ev.description, "CS-340-002");
        assert_eq!(ev.location, "Smith Hall 101");
        let EventTiming::Timed { start, end, .. } = ev.timing else {
            panic!("class events are timed");
        };
        assert_eq!(start.to_string(), "2026-01-12 09:00:00");
        assert_eq!(end.to_string(), "2026-01-12 10:15:00");
        assert_eq!(start_of(ev), "2026-01-12T09:00:00-05:00");
        assert_eq!(ev.source, EventSource::MeetingTime(11));
        assert_eq!(ev.course_id, Some(7));
        assert!(ev.appearance.is_default());
        // The fingerprint of today's class events must never change (upgrading would
        // rewrite every event in every calendar).
        assert_eq!(ev.fingerprint, "bccb4fc41683e94109f584225276b5cb");
        // Local end of 2026-05-01 in New York (EDT, UTC-4) is 03:59:59Z on May 2nd.
        assert_eq!(
            ev.recurrence,
            vec!["RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20260502T035959Z".to_string()]
        );
        assert_eq!(ev.fingerprint.len(), 32);
    }

    #[test]
    fn evening_class_on_last_day_is_inside_until() {
        // Friday 2026-05-01 at 19:00 EDT = 23:00Z; a 23:59:59Z UNTIL would be fine here, but
        // at 20:30 EDT (00:30Z next day) only the local end of day keeps it.
        let plan = one(
            course("2026-01-08", "2026-05-01"),
            meeting(5, "20:30", "21:45", None),
        );
        let ev = &plan.events[0];
        assert_eq!(ev.location, "TBD");
        let last = NaiveDate::from_ymd_opt(2026, 5, 1)
            .unwrap()
            .and_hms_opt(20, 30, 0)
            .unwrap();
        let last_instant = chrono_tz::America::New_York
            .from_local_datetime(&last)
            .unwrap()
            .with_timezone(&Utc);
        let until = NaiveDateTime::parse_from_str("20260502T035959", "%Y%m%dT%H%M%S")
            .unwrap()
            .and_utc();
        assert!(
            last_instant <= until,
            "{last_instant} must not be after UNTIL {until}"
        );
    }

    #[test]
    fn dst_keeps_wall_clock_and_offsets() {
        // Spring forward 2026-03-08: a class starting after it has the EDT offset.
        let mut mt = meeting(2, "09:00", "10:00", Some(room()));
        mt.start_date = Some("2026-03-09".parse().unwrap());
        let plan = one(course("2026-01-08", "2026-05-01"), mt);
        assert_eq!(start_of(&plan.events[0]), "2026-03-10T09:00:00-04:00");
        // Before the change, EST.
        let plan = one(
            course("2026-01-08", "2026-05-01"),
            meeting(2, "09:00", "10:00", None),
        );
        assert_eq!(start_of(&plan.events[0]), "2026-01-13T09:00:00-05:00");
        // Fall term ending after fall back: UNTIL uses EST (UTC-5).
        let plan = one(
            course("2026-09-01", "2026-12-11"),
            meeting(5, "09:00", "10:00", None),
        );
        assert_eq!(start_of(&plan.events[0]), "2026-09-04T09:00:00-04:00");
        assert!(plan.events[0].recurrence[0].ends_with("UNTIL=20261212T045959Z"));
    }

    #[test]
    fn skipped_local_time_moves_forward() {
        let ts = NaiveDate::from_ymd_opt(2026, 3, 8)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        let t = resolve_local(chrono_tz::America::New_York, ts);
        assert_eq!(t.to_rfc3339(), "2026-03-08T03:00:00-04:00");
    }

    #[test]
    fn meeting_dates_override_course_dates() {
        let mut mt = meeting(3, "13:00", "14:00", Some(room()));
        mt.start_date = Some("2026-02-02".parse().unwrap());
        mt.end_date = Some("2026-03-04".parse().unwrap());
        let plan = one(course("2026-01-08", "2026-05-01"), mt);
        let ev = &plan.events[0];
        assert!(start_of(ev).starts_with("2026-02-04T"));
        assert!(ev.recurrence[0].contains("BYDAY=WE;UNTIL=20260305T045959Z"));
    }

    #[test]
    fn placeholder_room_is_tbd() {
        let mut r = room();
        r.is_placeholder = true;
        let plan = one(
            course("2026-01-08", "2026-05-01"),
            meeting(1, "09:00", "10:00", Some(r)),
        );
        assert_eq!(plan.events[0].location, "TBD");
    }

    #[test]
    fn meetings_without_dates_or_occurrences_are_skipped_with_a_reason() {
        let mut c = course("2026-01-08", "2026-05-01");
        c.start_date = None;
        let plan = one(c, meeting(1, "09:00", "10:00", None));
        assert!(plan.events.is_empty());
        assert!(plan.skipped[0].reason.contains("start date"));

        // A one-day course on a Thursday has no Monday.
        let plan = one(
            course("2026-01-08", "2026-01-08"),
            meeting(1, "09:00", "10:00", None),
        );
        assert!(plan.events.is_empty());
        assert!(plan.skipped[0].reason.contains("no MO"));
    }

    #[test]
    fn event_ids_are_base32hex_and_fingerprints_track_content() {
        for source in [
            EventSource::MeetingTime(987_654_321),
            EventSource::FinalExam(987_654_321),
            EventSource::AcademicEvent(987_654_321),
        ] {
            let id = source.event_id(123_456);
            assert!(id.len() >= 5);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)),
                "{id}"
            );
        }
        assert_eq!(event_id(12, 3), "cs12m3");
        // Namespaces never collide: the letter between the two numbers differs.
        assert_ne!(
            EventSource::MeetingTime(3).event_id(12),
            EventSource::FinalExam(3).event_id(12)
        );
        let a = one(
            course("2026-01-08", "2026-05-01"),
            meeting(1, "09:00", "10:00", None),
        );
        let mut c = course("2026-01-08", "2026-05-01");
        c.title = "Advanced Databases".into();
        let b = one(c, meeting(1, "09:00", "10:00", None));
        assert_ne!(a.events[0].fingerprint, b.events[0].fingerprint);
        let again = one(
            course("2026-01-08", "2026-05-01"),
            meeting(1, "09:00", "10:00", None),
        );
        assert_eq!(a.events[0].fingerprint, again.events[0].fingerprint);
    }
}
