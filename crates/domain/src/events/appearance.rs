//! How an event looks beyond its text: color, reminders, visibility, transparency.
//! `Appearance::default()` is what calsync has always written and adds nothing to the
//! fingerprint.

use serde::Serialize;

/// How a reminder reaches the student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderMethod {
    Popup,
    Email,
}

impl ReminderMethod {
    /// Google's name (`popup`, `email`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderMethod::Popup => "popup",
            ReminderMethod::Email => "email",
        }
    }
}

/// One reminder override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Reminder {
    pub method: ReminderMethod,
    /// Minutes before the start (Google allows 0–40320).
    pub minutes: u32,
}

/// An event's reminders.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(tag = "type", content = "overrides", rename_all = "snake_case")]
pub enum Reminders {
    /// The calendar's default reminders (what calsync has always written).
    #[default]
    UseDefault,
    /// Exactly these reminders (none when empty).
    Overrides(Vec<Reminder>),
}

/// Google's event visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Default,
    Public,
    Private,
}

impl Visibility {
    /// Google's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Default => "default",
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// Whether the event blocks time ("busy") in free/busy queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transparency {
    #[default]
    Opaque,
    Transparent,
}

impl Transparency {
    /// Google's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transparency::Opaque => "opaque",
            Transparency::Transparent => "transparent",
        }
    }
}

/// How an event looks, beyond its text: color, reminders, visibility, transparency.
/// `Default` is what calsync has always written (no color, the calendar's default
/// reminders, default visibility, opaque).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Appearance {
    /// Google event color `"1"`–`"11"`; `None`: the calendar's color.
    pub color_id: Option<u8>,
    pub reminders: Reminders,
    pub visibility: Visibility,
    pub transparency: Transparency,
}

impl Appearance {
    /// Whether this is the built-in appearance.
    pub fn is_default(&self) -> bool {
        *self == Appearance::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DesiredEvent, EventKind, EventSource, EventTiming};
    use chrono::NaiveDate;

    fn ev(appearance: Appearance, timing: EventTiming) -> DesiredEvent {
        DesiredEvent {
            id: "cs1a2".into(),
            source: EventSource::AcademicEvent(2),
            course_id: None,
            summary: "Thanksgiving".into(),
            description: String::new(),
            location: String::new(),
            timing,
            recurrence: vec![],
            appearance,
            fingerprint: String::new(),
        }
        .seal()
    }

    #[test]
    fn appearance_and_all_day_dates_change_the_fingerprint() {
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        let all_day = EventTiming::AllDay {
            first_day: day("2026-11-26"),
            last_day: day("2026-11-27"),
        };
        let base = ev(Appearance::default(), all_day);
        let moved = ev(
            Appearance::default(),
            EventTiming::AllDay {
                first_day: day("2026-11-26"),
                last_day: day("2026-11-28"),
            },
        );
        assert_ne!(base.fingerprint, moved.fingerprint);
        let red = ev(
            Appearance {
                color_id: Some(11),
                ..Appearance::default()
            },
            all_day,
        );
        assert_ne!(base.fingerprint, red.fingerprint);
        let reminded = ev(
            Appearance {
                reminders: Reminders::Overrides(vec![Reminder {
                    method: ReminderMethod::Popup,
                    minutes: 10,
                }]),
                ..Appearance::default()
            },
            all_day,
        );
        assert_ne!(red.fingerprint, reminded.fingerprint);
        assert_eq!(base.instants(), None);
        assert_eq!(base.kind(), EventKind::Academic);
    }
}
