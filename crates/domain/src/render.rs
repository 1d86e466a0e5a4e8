//! The second stage of planning: the user's calendar preferences applied to the
//! built-in events (pure, like [`crate::events`]).
//!
//! For each event, every field is resolved on its own ([`preferences::resolve`]): the
//! templates are rendered in the sandbox ([`crate::templates`]) with the event's
//! variables; color, reminders, visibility and transparency replace the built-in
//! appearance. The event is then sealed again, so its fingerprint covers the rendered
//! texts and the appearance: an event whose rendering did not change keeps its
//! fingerprint and costs no Google write.
//!
//! **A render failure never fails a sync**: a template that does not compile (stored
//! with plain SQL, bypassing the API's validation) or fails on this event's data (out
//! of fuel, too long, a strict-undefined lookup) leaves that one field at its built-in
//! text and adds a [`RenderWarning`] to the plan; the sync records them on the user.
//! A title that renders empty also keeps the built-in title (an event needs a title;
//! e.g. a `global` template of course variables on an academic day), without a warning.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use minijinja::Template;
use serde::{Deserialize, Serialize};

use crate::academic::AcademicCategory;
use crate::events::{DesiredEvent, EventPlan, EventSource, EventTiming};
use crate::preferences::{self, Resolved};
use crate::schedule::{AcademicCalendarEvent, Course, FinalExam, MeetingTime, Room, SyncSnapshot};
use crate::templates::{Sandbox, TemplateError, TemplateField, TemplateVars};

/// A template that could not render for one event; the field kept its built-in text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderWarning {
    /// The Google event id.
    pub event_id: String,
    /// `title`, `description` or `location`.
    pub field: String,
    /// The preference row the template comes from (e.g. `exam`, `course 12`).
    pub preference: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for RenderWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: the {} template of preference {:?} failed ({}); the built-in text was used",
            self.event_id, self.field, self.field, self.preference, self.message
        )
    }
}

/// Apply `snapshot.preferences` to the built-in events of `plan` (see the module docs).
/// Without preferences nothing changes.
pub fn apply_preferences(snapshot: &SyncSnapshot, plan: &mut EventPlan) {
    if snapshot.preferences.is_empty() {
        return;
    }
    let index = Index::new(snapshot);
    let sandbox = Sandbox::new();
    let mut compiled: HashMap<(TemplateField, &str), Result<Template<'_, '_>, TemplateError>> =
        HashMap::new();
    for ev in &mut plan.events {
        let resolved = preferences::resolve(&snapshot.preferences, ev.kind(), ev.course_id);
        if resolved.is_empty() {
            continue;
        }
        let vars = index.vars(ev);
        for field in TemplateField::ALL {
            let Some(setting) = resolved.template(field) else {
                continue;
            };
            let tmpl = compiled
                .entry((field, setting.value))
                .or_insert_with(|| sandbox.compile(field, setting.value));
            let rendered = match tmpl {
                Ok(tmpl) => sandbox.render(tmpl, field, &vars),
                Err(e) => Err(e.clone()),
            };
            match rendered {
                Ok(text) if field == TemplateField::Title && text.is_empty() => {}
                Ok(text) => *text_of(ev, field) = text,
                Err(e) => plan.warnings.push(RenderWarning {
                    event_id: ev.id.clone(),
                    field: field.as_str().to_string(),
                    preference: setting.from.label(),
                    message: e.to_string(),
                }),
            }
        }
        apply_appearance(ev, &resolved);
        ev.reseal();
    }
}

fn text_of(ev: &mut DesiredEvent, field: TemplateField) -> &mut String {
    match field {
        TemplateField::Title => &mut ev.summary,
        TemplateField::Description => &mut ev.description,
        TemplateField::Location => &mut ev.location,
    }
}

fn apply_appearance(ev: &mut DesiredEvent, r: &Resolved<'_>) {
    let a = &mut ev.appearance;
    if let Some(s) = r.color_id {
        a.color_id = Some(s.value);
    }
    if let Some(s) = r.reminders {
        a.reminders = s.value.clone();
    }
    if let Some(s) = r.visibility {
        a.visibility = s.value;
    }
    if let Some(s) = r.transparency {
        a.transparency = s.value;
    }
}

/// The schedule rows of a snapshot by id, to find each event's variables.
struct Index<'a> {
    meetings: HashMap<i64, (&'a Course, &'a MeetingTime)>,
    courses: HashMap<i64, &'a Course>,
    exams: HashMap<i64, &'a FinalExam>,
    academic: HashMap<i64, &'a AcademicCalendarEvent>,
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn weekday(day: NaiveDate) -> &'static str {
    WEEKDAYS[day.weekday().num_days_from_sunday() as usize]
}

fn hhmm(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

impl<'a> Index<'a> {
    fn new(s: &'a SyncSnapshot) -> Index<'a> {
        Index {
            meetings: s
                .courses
                .iter()
                .flat_map(|cs| {
                    cs.meeting_times
                        .iter()
                        .map(move |mt| (mt.id, (&cs.course, mt)))
                })
                .collect(),
            courses: s
                .courses
                .iter()
                .map(|cs| (cs.course.id, &cs.course))
                .collect(),
            exams: s.exams.iter().map(|e| (e.id, e)).collect(),
            academic: s.academic_calendar.iter().map(|a| (a.id, a)).collect(),
        }
    }

    /// The template variables of a built-in event (before any template ran).
    fn vars(&self, ev: &DesiredEvent) -> TemplateVars {
        let mut v = TemplateVars::empty();
        v.set("kind", ev.kind().as_str())
            .set("default_title", ev.summary.clone())
            .set("default_description", ev.description.clone())
            .set("default_location", ev.location.clone())
            .set("location", ev.location.clone());
        if let EventTiming::Timed { start, end, .. } = ev.timing {
            set_times(&mut v, start, end);
        }
        match ev.source {
            EventSource::MeetingTime(id) => {
                if let Some((course, mt)) = self.meetings.get(&id) {
                    set_course(&mut v, course);
                    set_room(&mut v, mt.room.as_ref());
                    // The weekday of the meeting, whatever the first occurrence.
                    if let Some(day) = usize::try_from(mt.day_of_week)
                        .ok()
                        .and_then(|d| WEEKDAYS.get(d))
                    {
                        v.set("day", *day);
                    }
                    if let Some(last) = mt.end_date.or(course.end_date) {
                        v.set("end_date", last.to_string());
                    }
                }
            }
            EventSource::FinalExam(id) => {
                if let Some(exam) = self.exams.get(&id) {
                    if let Some(course) = self.courses.get(&exam.course_id) {
                        set_course(&mut v, course);
                    }
                    set_room(&mut v, exam.room.as_ref());
                    v.set("exam_date", exam.starts_at.date().to_string()).set(
                        "exam_time",
                        format!(
                            "{}–{}",
                            hhmm(exam.starts_at.time()),
                            hhmm(exam.ends_at.time())
                        ),
                    );
                }
            }
            EventSource::AcademicEvent(id) => {
                if let Some(row) = self.academic.get(&id) {
                    v.set("event_title", row.title.trim())
                        .set("category", AcademicCategory::from_db(&row.category).label())
                        .set("no_classes", if row.no_classes { "yes" } else { "" })
                        .set("day", weekday(row.start_date))
                        .set("start_date", row.start_date.to_string())
                        .set("end_date", row.end_date.to_string())
                        // Academic days have no place.
                        .set("location", "");
                }
            }
        }
        v
    }
}

fn set_times(v: &mut TemplateVars, start: NaiveDateTime, end: NaiveDateTime) {
    v.set("day", weekday(start.date()))
        .set("start_time", hhmm(start.time()))
        .set("end_time", hhmm(end.time()))
        .set("start_date", start.date().to_string())
        .set("end_date", end.date().to_string());
}

fn set_course(v: &mut TemplateVars, c: &Course) {
    v.set("course_title", c.title.clone())
        .set(
            "course_code",
            format!("{} {}-{}", c.subject, c.course_number, c.section_number),
        )
        .set("subject", c.subject.clone())
        .set("course_number", c.course_number.clone())
        .set("section_number", c.section_number.clone());
}

fn set_room(v: &mut TemplateVars, room: Option<&Room>) {
    if let Some(room) = room.filter(|r| !r.is_placeholder) {
        v.set("room", room.number.clone())
            .set("building", room.building.clone());
    }
}
