//! Calendar preferences: how a student's course events look.
//!
//! A user has up to one row per (scope, course): scope `global` (every event),
//! `class`, `exam` or `academic` (events of that kind), each optionally narrowed to one
//! course (a course override; academic days belong to no course). Every field of a row
//! is optional; an absent field inherits.
//!
//! **Resolution is per field**, most specific row first:
//! (kind, course) → (`global`, course) → (kind) → (`global`) → built-in default.
//! So "exams in red" (`exam` row with a color) and a title template on the `global`
//! row both apply to an exam; a course override's color beats both for that course.
//! Rows that set nothing are refused, so every row means something.
//!
//! This module holds the model, resolution ([`resolve`]) and the JSON format of the
//! API, the CLI and the stored `reminders` column ([`input`]); [`store`] holds the SQL;
//! [`view`] what the dashboard, the CLI and the API show (effective values, previews).
//! Templates are rendered by [`crate::render`] in the sandbox of [`crate::templates`].

pub mod input;
pub mod store;
pub mod view;

use serde::Serialize;

use crate::events::{EventKind, Reminders, Transparency, Visibility};
use crate::templates::TemplateField;

pub use input::{FieldError, parse_preferences, reminders_from_json, reminders_to_json};

/// Which events a preference row shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every event of the user.
    Global,
    /// Weekly class events.
    Class,
    /// Final exams.
    Exam,
    /// Published academic-calendar days.
    Academic,
}

impl Scope {
    /// Every scope, broadest first.
    pub const ALL: [Scope; 4] = [Scope::Global, Scope::Class, Scope::Exam, Scope::Academic];

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Class => "class",
            Scope::Exam => "exam",
            Scope::Academic => "academic",
        }
    }

    /// The stored value parsed.
    pub fn parse(value: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The scope of one kind of event.
    pub fn of_kind(kind: EventKind) -> Scope {
        match kind {
            EventKind::Class => Scope::Class,
            EventKind::Exam => Scope::Exam,
            EventKind::Academic => Scope::Academic,
        }
    }

    /// The kinds of events a row with this scope (and course, if any) can apply to.
    pub fn kinds(self, course_id: Option<i64>) -> Vec<EventKind> {
        match (self, course_id) {
            (Scope::Global, None) => vec![EventKind::Class, EventKind::Exam, EventKind::Academic],
            (Scope::Global, Some(_)) => vec![EventKind::Class, EventKind::Exam],
            (Scope::Class, _) => vec![EventKind::Class],
            (Scope::Exam, _) => vec![EventKind::Exam],
            (Scope::Academic, _) => vec![EventKind::Academic],
        }
    }
}

/// The fields of a preference row; `None` inherits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PreferenceFields {
    pub title_template: Option<String>,
    pub description_template: Option<String>,
    pub location_template: Option<String>,
    /// Google event color `1`–`11`.
    pub color_id: Option<u8>,
    pub reminders: Option<Reminders>,
    pub visibility: Option<Visibility>,
    pub transparency: Option<Transparency>,
}

impl PreferenceFields {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == PreferenceFields::default()
    }

    /// The template of `field`, if set.
    pub fn template(&self, field: TemplateField) -> Option<&str> {
        match field {
            TemplateField::Title => self.title_template.as_deref(),
            TemplateField::Description => self.description_template.as_deref(),
            TemplateField::Location => self.location_template.as_deref(),
        }
    }
}

/// One row of `calendar_preferences`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preference {
    pub scope: Scope,
    /// A course override: only this course's events.
    pub course_id: Option<i64>,
    pub fields: PreferenceFields,
}

impl Preference {
    /// A readable name of the row, e.g. `global`, `exam`, `course 12`,
    /// `exam of course 12`.
    pub fn label(&self) -> String {
        match (self.scope, self.course_id) {
            (scope, None) => scope.as_str().to_string(),
            (Scope::Global, Some(c)) => format!("course {c}"),
            (scope, Some(c)) => format!("{} of course {c}", scope.as_str()),
        }
    }
}

/// A field's effective value and the row it comes from (`None`: the built-in default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<'a, T> {
    pub value: T,
    pub from: &'a Preference,
}

/// The effective preferences of one event: per field, the most specific row that sets
/// it, or `None` for the built-in default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub title_template: Option<Setting<'a, &'a str>>,
    pub description_template: Option<Setting<'a, &'a str>>,
    pub location_template: Option<Setting<'a, &'a str>>,
    pub color_id: Option<Setting<'a, u8>>,
    pub reminders: Option<Setting<'a, &'a Reminders>>,
    pub visibility: Option<Setting<'a, Visibility>>,
    pub transparency: Option<Setting<'a, Transparency>>,
}

impl<'a> Resolved<'a> {
    /// Whether every field is the built-in default.
    pub fn is_empty(&self) -> bool {
        *self == Resolved::default()
    }

    /// The template of `field`, if a row sets one.
    pub fn template(&self, field: TemplateField) -> Option<Setting<'a, &'a str>> {
        match field {
            TemplateField::Title => self.title_template,
            TemplateField::Description => self.description_template,
            TemplateField::Location => self.location_template,
        }
    }
}

/// The rows that apply to an event of `kind` in course `course_id`, most specific
/// first: (kind, course) → (global, course) → (kind) → (global).
pub fn layers(prefs: &[Preference], kind: EventKind, course_id: Option<i64>) -> Vec<&Preference> {
    let kind_scope = Scope::of_kind(kind);
    let mut order: Vec<(Scope, Option<i64>)> = Vec::with_capacity(4);
    if let Some(course) = course_id {
        order.push((kind_scope, Some(course)));
        order.push((Scope::Global, Some(course)));
    }
    order.push((kind_scope, None));
    order.push((Scope::Global, None));
    order
        .into_iter()
        .filter_map(|(scope, course)| {
            prefs
                .iter()
                .find(|p| p.scope == scope && p.course_id == course)
        })
        .collect()
}

/// Resolve every field for an event of `kind` in course `course_id` (per field: the
/// first of [`layers`] that sets it).
pub fn resolve(prefs: &[Preference], kind: EventKind, course_id: Option<i64>) -> Resolved<'_> {
    let layers = layers(prefs, kind, course_id);
    fn first<'a, T>(
        layers: &[&'a Preference],
        get: impl Fn(&'a PreferenceFields) -> Option<T>,
    ) -> Option<Setting<'a, T>> {
        layers
            .iter()
            .find_map(|p| get(&p.fields).map(|value| Setting { value, from: p }))
    }
    Resolved {
        title_template: first(&layers, |f| f.title_template.as_deref()),
        description_template: first(&layers, |f| f.description_template.as_deref()),
        location_template: first(&layers, |f| f.location_template.as_deref()),
        color_id: first(&layers, |f| f.color_id),
        reminders: first(&layers, |f| f.reminders.as_ref()),
        visibility: first(&layers, |f| f.visibility),
        transparency: first(&layers, |f| f.transparency),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Reminder, ReminderMethod};

    fn row(scope: Scope, course_id: Option<i64>, fields: PreferenceFields) -> Preference {
        Preference {
            scope,
            course_id,
            fields,
        }
    }

    #[test]
    fn every_level_wins_over_the_broader_ones_per_field() {
        let prefs = vec![
            row(
                Scope::Global,
                None,
                PreferenceFields {
                    title_template: Some("global title".into()),
                    color_id: Some(1),
                    visibility: Some(Visibility::Private),
                    ..Default::default()
                },
            ),
            row(
                Scope::Exam,
                None,
                PreferenceFields {
                    color_id: Some(11),
                    reminders: Some(Reminders::Overrides(vec![Reminder {
                        method: ReminderMethod::Popup,
                        minutes: 1440,
                    }])),
                    ..Default::default()
                },
            ),
            row(
                Scope::Global,
                Some(7),
                PreferenceFields {
                    color_id: Some(5),
                    location_template: Some("course location".into()),
                    ..Default::default()
                },
            ),
            row(
                Scope::Exam,
                Some(7),
                PreferenceFields {
                    color_id: Some(4),
                    ..Default::default()
                },
            ),
        ];
        // A class of another course: only the global row.
        let r = resolve(&prefs, EventKind::Class, Some(8));
        assert_eq!(r.title_template.unwrap().value, "global title");
        assert_eq!(r.color_id.unwrap().value, 1);
        assert_eq!(r.color_id.unwrap().from.label(), "global");
        assert_eq!(r.reminders, None, "built-in default");
        assert_eq!(r.transparency, None);
        // An exam of another course: kind beats global, per field.
        let r = resolve(&prefs, EventKind::Exam, Some(8));
        assert_eq!(r.color_id.unwrap().value, 11);
        assert_eq!(r.title_template.unwrap().value, "global title");
        assert_eq!(r.visibility.unwrap().value, Visibility::Private);
        assert!(r.reminders.is_some());
        // A class of course 7: the course override beats kind and global.
        let r = resolve(&prefs, EventKind::Class, Some(7));
        assert_eq!(r.color_id.unwrap().value, 5);
        assert_eq!(r.color_id.unwrap().from.label(), "course 7");
        assert_eq!(r.location_template.unwrap().value, "course location");
        assert_eq!(r.reminders, None);
        // An exam of course 7: (exam, course) beats the course override.
        let r = resolve(&prefs, EventKind::Exam, Some(7));
        assert_eq!(r.color_id.unwrap().value, 4);
        assert_eq!(r.color_id.unwrap().from.label(), "exam of course 7");
        assert_eq!(r.location_template.unwrap().value, "course location");
        assert_eq!(r.reminders.unwrap().from.label(), "exam");
        // Academic days have no course: kind, then global.
        let r = resolve(&prefs, EventKind::Academic, None);
        assert_eq!(r.color_id.unwrap().value, 1);
        // No rows at all: everything built in.
        assert!(resolve(&[], EventKind::Class, Some(7)).is_empty());
    }

    #[test]
    fn scopes_round_trip_and_know_their_kinds() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("course"), None);
        assert_eq!(Scope::Global.kinds(None).len(), 3);
        assert_eq!(
            Scope::Global.kinds(Some(1)),
            vec![EventKind::Class, EventKind::Exam]
        );
    }
}
