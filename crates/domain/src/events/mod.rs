//! The pure calendar model: which Google Calendar events a schedule must produce.
//!
//! One recurring weekly event per meeting time, minus the occurrences on no-class days
//! (EXDATE lines, see [`crate::academic`]); one single event per final exam; one
//! all-day event per published academic-calendar row. Times are wall-clock times in the
//! school's time zone; Google expands the recurrence in that zone, so a 9:00 class stays
//! at 9:00 across daylight-saving changes.
//!
//! The model is provider-neutral and already general enough for every kind of event
//! calsync writes: timed events (recurring classes, single exams) and all-day events
//! (published academic-calendar entries), each with an [`Appearance`] (color,
//! reminders, visibility, transparency). The built-in appearance is what calsync has
//! always written, and it adds nothing to the fingerprint, so upgrading changes no
//! existing event.
//!
//! Planning has two stages: the built-in events (`classes`, [`crate::academic`]), then
//! the user's calendar preferences ([`crate::render`]): templates for the texts and the
//! appearance, resolved per field. With no preferences the second stage changes
//! nothing, so the built-in events are exactly what calsync has always written.
//!
//! Layout: this module holds the event model and the entry point [`plan_events`];
//! `appearance` the color/reminders/visibility/transparency types; `classes` the
//! weekly class events and the time-zone helpers.

mod appearance;
mod classes;

pub use appearance::{Appearance, Reminder, ReminderMethod, Reminders, Transparency, Visibility};
pub use classes::{event_id, location_of, plan_course_events, resolve_local};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::academic::{self, NoClassDays};
use crate::render::RenderWarning;
use crate::schedule::SyncSnapshot;

/// Key of the private extended property that marks an event as calsync's.
pub const OWNER_PROPERTY: &str = "calsync";
/// Value of [`OWNER_PROPERTY`].
pub const OWNER_VALUE: &str = "1";
/// Key of the private extended property holding the event's fingerprint.
pub const FINGERPRINT_PROPERTY: &str = "calsyncFingerprint";
/// Key of the private extended property holding the meeting time id (class events).
pub const MEETING_TIME_PROPERTY: &str = "calsyncMeetingTime";
/// Key of the private extended property holding the final exam id (exam events).
pub const EXAM_PROPERTY: &str = "calsyncExam";
/// Key of the private extended property holding the academic calendar event id.
pub const ACADEMIC_PROPERTY: &str = "calsyncAcademic";

/// The kinds of events calsync writes (the scopes preferences can target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A weekly class meeting (one recurring event per meeting time).
    Class,
    /// A final exam (one single event per exam).
    Exam,
    /// A published academic-calendar entry (an all-day event).
    Academic,
}

impl EventKind {
    /// The lowercase name (`class`, `exam`, `academic`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Class => "class",
            EventKind::Exam => "exam",
            EventKind::Academic => "academic",
        }
    }
}

/// The schedule row an event stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum EventSource {
    /// `meeting_times.id`.
    MeetingTime(i64),
    /// `final_exams.id`.
    FinalExam(i64),
    /// `academic_calendar_events.id`.
    AcademicEvent(i64),
}

impl EventSource {
    /// The kind of event this source produces.
    pub fn kind(self) -> EventKind {
        match self {
            EventSource::MeetingTime(_) => EventKind::Class,
            EventSource::FinalExam(_) => EventKind::Exam,
            EventSource::AcademicEvent(_) => EventKind::Academic,
        }
    }

    /// The row id.
    pub fn id(self) -> i64 {
        match self {
            EventSource::MeetingTime(id)
            | EventSource::FinalExam(id)
            | EventSource::AcademicEvent(id) => id,
        }
    }

    /// The private extended property naming the source on the event.
    pub fn property(self) -> (&'static str, String) {
        let key = match self {
            EventSource::MeetingTime(_) => MEETING_TIME_PROPERTY,
            EventSource::FinalExam(_) => EXAM_PROPERTY,
            EventSource::AcademicEvent(_) => ACADEMIC_PROPERTY,
        };
        (key, self.id().to_string())
    }

    /// The deterministic event id of this source in `user_id`'s calendar: base32hex
    /// (`0-9a-v`), one letter per namespace (`m` classes, `e` exams, `a` academic
    /// events) between two decimal numbers, so ids of different kinds never collide.
    pub fn event_id(self, user_id: i64) -> String {
        let ns = match self {
            EventSource::MeetingTime(_) => 'm',
            EventSource::FinalExam(_) => 'e',
            EventSource::AcademicEvent(_) => 'a',
        };
        format!("cs{user_id}{ns}{}", self.id())
    }
}

/// When an event happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventTiming {
    /// A timed event: local wall-clock start and end of the (first) occurrence in
    /// `time_zone`.
    Timed {
        start: NaiveDateTime,
        end: NaiveDateTime,
        #[serde(serialize_with = "serialize_tz")]
        time_zone: Tz,
    },
    /// An all-day event from `first_day` to `last_day`, both inclusive (Google's
    /// `end.date` is exclusive: `last_day + 1`).
    AllDay {
        first_day: NaiveDate,
        last_day: NaiveDate,
    },
}

/// An event calsync wants in the user's course calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredEvent {
    /// Deterministic Google event id (base32hex): the same source always maps to the
    /// same id, so a retried or crashed sync can never create a duplicate.
    pub id: String,
    /// The schedule row the event stands for.
    pub source: EventSource,
    /// The course the event belongs to (classes and exams).
    pub course_id: Option<i64>,
    pub summary: String,
    pub description: String,
    pub location: String,
    pub timing: EventTiming,
    /// RFC 5545 lines, e.g. `RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20260502T035959Z`
    /// followed by one `EXDATE;TZID=…` line per cancelled occurrence, ascending
    /// (empty for single events).
    pub recurrence: Vec<String>,
    pub appearance: Appearance,
    /// Hash of everything above; stored on the event so unchanged events cost no write.
    pub fingerprint: String,
}

fn serialize_tz<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

impl DesiredEvent {
    /// The kind of event.
    pub fn kind(&self) -> EventKind {
        self.source.kind()
    }

    /// The first occurrence's start and end as instants with their UTC offsets (timed
    /// events only).
    pub fn instants(&self) -> Option<(DateTime<FixedOffset>, DateTime<FixedOffset>)> {
        match self.timing {
            EventTiming::Timed {
                start,
                end,
                time_zone,
            } => Some((
                resolve_local(time_zone, start),
                resolve_local(time_zone, end),
            )),
            EventTiming::AllDay { .. } => None,
        }
    }

    /// Compute and store the fingerprint (call after every field is set).
    pub fn seal(mut self) -> DesiredEvent {
        self.reseal();
        self
    }

    /// Recompute the fingerprint after a field changed.
    pub fn reseal(&mut self) {
        self.fingerprint = fingerprint(self);
    }
}

/// A schedule row that produces no event, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedItem {
    pub source: EventSource,
    pub reason: String,
}

/// The events a schedule produces, plus the rows that produce none and the template
/// problems met while rendering the user's preferences.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventPlan {
    pub events: Vec<DesiredEvent>,
    pub skipped: Vec<SkippedItem>,
    /// Fields whose template failed to render and fell back to the built-in text
    /// (the event is still written; see [`crate::render`]).
    pub warnings: Vec<RenderWarning>,
}

/// Build the events for one user's schedule snapshot, ordered by id: classes (minus
/// no-class days), final exams, published academic-calendar rows, each shaped by the
/// user's calendar preferences (`snapshot.preferences`). Never fails: a row that
/// produces no event is in `skipped`, a template that cannot render falls back to the
/// built-in text and is reported in `warnings`.
pub fn plan_events(snapshot: &SyncSnapshot, tz: Tz) -> EventPlan {
    let user_id = snapshot.user.id;
    let mut plan = EventPlan::default();
    let no_class_days = NoClassDays::from_calendar(&snapshot.academic_calendar, &mut plan.skipped);
    classes::plan_classes(user_id, &snapshot.courses, &no_class_days, tz, &mut plan);
    academic::plan_exams(user_id, &snapshot.courses, &snapshot.exams, tz, &mut plan);
    academic::plan_published(
        user_id,
        &snapshot.courses,
        &snapshot.academic_calendar,
        &mut plan,
    );
    crate::render::apply_preferences(snapshot, &mut plan);
    plan.events.sort_by(|a, b| a.id.cmp(&b.id));
    plan
}

/// A stable hash of the fields that make up the event body.
///
/// Timed events with the built-in appearance hash exactly the parts calsync has always
/// hashed (so their stored fingerprints stay valid); all-day timing and a non-default
/// appearance add parts of their own.
fn fingerprint(ev: &DesiredEvent) -> String {
    let mut parts: Vec<String> = vec![
        ev.id.clone(),
        ev.summary.clone(),
        ev.description.clone(),
        ev.location.clone(),
    ];
    match ev.timing {
        EventTiming::Timed {
            start,
            end,
            time_zone,
        } => {
            parts.push(start.to_string());
            parts.push(end.to_string());
            parts.push(time_zone.name().to_string());
        }
        EventTiming::AllDay {
            first_day,
            last_day,
        } => {
            parts.push(format!("all-day {first_day}"));
            parts.push(format!("all-day {last_day}"));
            parts.push(String::new());
        }
    }
    parts.push(ev.recurrence.join("\n"));
    if !ev.appearance.is_default() {
        let a = &ev.appearance;
        parts.push(format!(
            "appearance color={:?} visibility={} transparency={}",
            a.color_id,
            a.visibility.as_str(),
            a.transparency.as_str()
        ));
        parts.push(match &a.reminders {
            Reminders::UseDefault => "reminders default".to_string(),
            Reminders::Overrides(list) => {
                let items: Vec<String> = list
                    .iter()
                    .map(|r| format!("{}:{}", r.method.as_str(), r.minutes))
                    .collect();
                format!("reminders {}", items.join(","))
            }
        });
    }
    let mut h = Sha256::new();
    for part in &parts {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
