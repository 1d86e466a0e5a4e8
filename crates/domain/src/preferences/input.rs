//! The JSON format of preferences (HTTP API, CLI files, the stored `reminders` column)
//! and its validation, with one error per bad field.
//!
//! ```json
//! {"preferences": [
//!   {"scope": "global", "title_template": "{{ course_code }} · {{ course_title }}"},
//!   {"scope": "exam", "color_id": 11,
//!    "reminders": {"overrides": [{"method": "popup", "minutes": 1440}]}},
//!   {"scope": "global", "course_id": 12, "color_id": 5, "visibility": "private"}
//! ]}
//! ```
//!
//! A bare array of rows is accepted too. `scope` defaults to `global`; every other key
//! is optional, `null` meaning "inherit". `reminders` is `{"use_default": true}` or
//! `{"overrides": [...]}` (at most 5, `popup`/`email`, 0–40320 minutes; `"use_default":
//! false` may accompany overrides). The same rules are CHECKs in the database
//! (`calsync.reminders_are_valid`); a test keeps both in agreement.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Preference, PreferenceFields, Scope};
use crate::events::{Reminder, ReminderMethod, Reminders, Transparency, Visibility};
use crate::templates::{self, TemplateField};

/// Most preference rows one user may have (a student with 8 courses and an override
/// per course and kind needs about 20).
pub const MAX_ROWS: usize = 50;
/// Most reminder overrides per event (Google's limit).
pub const MAX_REMINDERS: usize = 5;
/// Latest reminder, in minutes before the event (four weeks, Google's limit).
pub const MAX_REMINDER_MINUTES: u64 = 40320;

/// A bad field: where (`preferences[2].color_id`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const ROW_KEYS: [&str; 9] = [
    "scope",
    "course_id",
    "title_template",
    "description_template",
    "location_template",
    "color_id",
    "reminders",
    "visibility",
    "transparency",
];

/// Parse and validate a preference set (`{"preferences": [...]}` or `[...]`):
/// structure, value ranges, duplicates, and every template (see
/// [`templates::validate`]). Course ids are not checked here (the store does it).
pub fn parse_preferences(body: &Value) -> Result<Vec<Preference>, Vec<FieldError>> {
    let err = |field: &str, message: String| {
        vec![FieldError {
            field: field.to_string(),
            message,
        }]
    };
    let rows = match body {
        Value::Array(rows) => rows,
        Value::Object(map) => {
            if let Some(key) = map.keys().find(|k| *k != "preferences") {
                return Err(err(
                    key,
                    "unknown key; the body is {\"preferences\": [...]}".into(),
                ));
            }
            match map.get("preferences") {
                Some(Value::Array(rows)) => rows,
                _ => {
                    return Err(err(
                        "preferences",
                        "must be a list of preference rows".into(),
                    ));
                }
            }
        }
        _ => {
            return Err(err(
                "",
                "the body must be {\"preferences\": [...]} or a list of preference rows".into(),
            ));
        }
    };
    if rows.len() > MAX_ROWS {
        return Err(err(
            "preferences",
            format!("at most {MAX_ROWS} rows per user (got {})", rows.len()),
        ));
    }
    let mut errors = Vec::new();
    let mut prefs: Vec<Preference> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let at = format!("preferences[{i}]");
        match parse_row(&at, row, &mut errors) {
            Some(p)
                if prefs
                    .iter()
                    .any(|q| q.scope == p.scope && q.course_id == p.course_id) =>
            {
                errors.push(FieldError {
                    field: at,
                    message: format!(
                        "a second row for {}; give each scope (and course) once",
                        p.label()
                    ),
                });
            }
            Some(p) => prefs.push(p),
            None => {}
        }
    }
    if errors.is_empty() {
        Ok(prefs)
    } else {
        Err(errors)
    }
}

/// One row, or `None` after pushing its errors.
fn parse_row(at: &str, row: &Value, errors: &mut Vec<FieldError>) -> Option<Preference> {
    let mut mine: Vec<FieldError> = Vec::new();
    let preference = parse_row_into(at, row, &mut mine);
    let ok = mine.is_empty();
    errors.append(&mut mine);
    preference.filter(|_| ok)
}

fn parse_row_into(at: &str, row: &Value, errors: &mut Vec<FieldError>) -> Option<Preference> {
    let mut push = |key: &str, message: String| {
        errors.push(FieldError {
            field: if key.is_empty() {
                at.to_string()
            } else {
                format!("{at}.{key}")
            },
            message,
        })
    };
    let Value::Object(map) = row else {
        push("", "must be an object".into());
        return None;
    };
    for key in map.keys() {
        if !ROW_KEYS.contains(&key.as_str()) {
            push(
                key,
                format!("unknown field; the fields are {}", ROW_KEYS.join(", ")),
            );
        }
    }
    let present = |key: &str| map.get(key).filter(|v| !v.is_null());
    let scope = match present("scope") {
        None => Some(Scope::Global),
        Some(Value::String(s)) => Scope::parse(s),
        Some(_) => None,
    };
    if scope.is_none() {
        push(
            "scope",
            "must be \"global\", \"class\", \"exam\" or \"academic\"".into(),
        );
    }
    let course_id = match present("course_id") {
        None => None,
        Some(v) => match v.as_i64().filter(|id| *id > 0) {
            Some(id) => Some(id),
            None => {
                push(
                    "course_id",
                    "must be a positive integer (a course id)".into(),
                );
                None
            }
        },
    };
    if scope == Some(Scope::Academic) && course_id.is_some() {
        push(
            "course_id",
            "academic calendar days belong to no course: an academic row cannot have a course_id"
                .into(),
        );
    }
    let kinds = scope.map(|s| s.kinds(course_id)).unwrap_or_default();
    let mut fields = PreferenceFields::default();
    for field in TemplateField::ALL {
        let key = field.column();
        let source = match present(key) {
            None => continue,
            Some(Value::String(s)) => s,
            Some(_) => {
                push(key, "must be a string (a template) or null".into());
                continue;
            }
        };
        match templates::validate(field, source, &kinds) {
            Ok(()) => match field {
                TemplateField::Title => fields.title_template = Some(source.clone()),
                TemplateField::Description => fields.description_template = Some(source.clone()),
                TemplateField::Location => fields.location_template = Some(source.clone()),
            },
            Err(e) => push(key, e.to_string()),
        }
    }
    if let Some(v) = present("color_id") {
        match color_from_json(v) {
            Some(c) => fields.color_id = Some(c),
            None => push(
                "color_id",
                "must be a Google event color, an integer from 1 to 11 (or null)".into(),
            ),
        }
    }
    if let Some(v) = present("reminders") {
        match reminders_from_json(v) {
            Ok(r) => fields.reminders = Some(r),
            Err(message) => push("reminders", message),
        }
    }
    if let Some(v) = present("visibility") {
        match v.as_str().and_then(visibility_from_str) {
            Some(vis) => fields.visibility = Some(vis),
            None => push(
                "visibility",
                "must be \"default\", \"public\" or \"private\"".into(),
            ),
        }
    }
    if let Some(v) = present("transparency") {
        match v.as_str().and_then(transparency_from_str) {
            Some(t) => fields.transparency = Some(t),
            None => push(
                "transparency",
                "must be \"opaque\" (busy) or \"transparent\" (free)".into(),
            ),
        }
    }
    // Only when nothing else is wrong with the row (a bad field is not "nothing").
    if fields.is_empty() && errors.is_empty() {
        errors.push(FieldError {
            field: at.to_string(),
            message: format!(
                "sets no preference; give at least one of {}",
                ROW_KEYS[2..].join(", ")
            ),
        });
        return None;
    }
    Some(Preference {
        scope: scope?,
        course_id,
        fields,
    })
}

/// `1`–`11`, as a number or (Google's own format) a string.
fn color_from_json(v: &Value) -> Option<u8> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    }?;
    u8::try_from(n).ok().filter(|c| (1..=11).contains(c))
}

/// The stored value parsed.
pub fn visibility_from_str(value: &str) -> Option<Visibility> {
    [Visibility::Default, Visibility::Public, Visibility::Private]
        .into_iter()
        .find(|v| v.as_str() == value)
}

/// The stored value parsed.
pub fn transparency_from_str(value: &str) -> Option<Transparency> {
    [Transparency::Opaque, Transparency::Transparent]
        .into_iter()
        .find(|t| t.as_str() == value)
}

/// The `reminders` JSON (`{"use_default": true}` or `{"overrides": [...]}`) parsed, or
/// a message naming what is wrong.
pub fn reminders_from_json(v: &Value) -> Result<Reminders, String> {
    const SHAPE: &str = "must be {\"use_default\": true} or {\"overrides\": [{\"method\": \"popup\", \"minutes\": 10}]}";
    let Value::Object(map) = v else {
        return Err(SHAPE.into());
    };
    if let Some(key) = map
        .keys()
        .find(|k| *k != "use_default" && *k != "overrides")
    {
        return Err(format!("unknown key {key:?}; {SHAPE}"));
    }
    let use_default = match map.get("use_default") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("use_default must be true or false".into()),
    };
    if use_default {
        if map.contains_key("overrides") {
            return Err(
                "use_default true cannot be combined with overrides (Google refuses both at once)"
                    .into(),
            );
        }
        return Ok(Reminders::UseDefault);
    }
    let Some(Value::Array(list)) = map.get("overrides") else {
        return Err(SHAPE.into());
    };
    if list.len() > MAX_REMINDERS {
        return Err(format!(
            "at most {MAX_REMINDERS} reminders (got {})",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let n = i + 1;
        let Value::Object(o) = item else {
            return Err(format!(
                "reminder {n} must be {{\"method\": \"popup\" or \"email\", \"minutes\": 0..40320}}"
            ));
        };
        if let Some(key) = o.keys().find(|k| *k != "method" && *k != "minutes") {
            return Err(format!(
                "reminder {n}: unknown key {key:?} (the keys are method and minutes)"
            ));
        }
        let method = match o.get("method").and_then(Value::as_str) {
            Some("popup") => ReminderMethod::Popup,
            Some("email") => ReminderMethod::Email,
            _ => {
                return Err(format!(
                    "reminder {n}: method must be \"popup\" or \"email\""
                ));
            }
        };
        let minutes = o
            .get("minutes")
            .and_then(|m| {
                m.as_u64().or_else(|| {
                    // 10.0 is a whole number too (jsonb keeps it so).
                    m.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
            })
            .filter(|m| *m <= MAX_REMINDER_MINUTES)
            .ok_or_else(|| {
                format!(
                    "reminder {n}: minutes must be a whole number from 0 to {MAX_REMINDER_MINUTES} (four weeks)"
                )
            })?;
        out.push(Reminder {
            method,
            minutes: minutes as u32,
        });
    }
    Ok(Reminders::Overrides(out))
}

/// The `reminders` JSON of `r` (the stored and the API format).
pub fn reminders_to_json(r: &Reminders) -> Value {
    match r {
        Reminders::UseDefault => json!({"use_default": true}),
        Reminders::Overrides(list) => json!({
            "overrides": list
                .iter()
                .map(|r| json!({"method": r.method.as_str(), "minutes": r.minutes}))
                .collect::<Vec<_>>()
        }),
    }
}

impl Preference {
    /// The row in the API format (every key present, `null` when inherited).
    pub fn to_json(&self) -> Value {
        let f = &self.fields;
        let mut map = Map::new();
        map.insert("scope".into(), json!(self.scope.as_str()));
        map.insert("course_id".into(), json!(self.course_id));
        map.insert("title_template".into(), json!(f.title_template));
        map.insert("description_template".into(), json!(f.description_template));
        map.insert("location_template".into(), json!(f.location_template));
        map.insert("color_id".into(), json!(f.color_id));
        map.insert(
            "reminders".into(),
            f.reminders.as_ref().map_or(Value::Null, reminders_to_json),
        );
        map.insert(
            "visibility".into(),
            json!(f.visibility.map(Visibility::as_str)),
        );
        map.insert(
            "transparency".into(),
            json!(f.transparency.map(Transparency::as_str)),
        );
        Value::Object(map)
    }
}

/// A set of rows in the API format (`{"preferences": [...]}`).
pub fn to_json(prefs: &[Preference]) -> Value {
    json!({ "preferences": prefs.iter().map(Preference::to_json).collect::<Vec<_>>() })
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
