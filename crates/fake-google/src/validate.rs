//! Validation of an event representation (insert, update, patch), as Google's Events
//! resource documents its fields.
//!
//! Followed: Google Calendar API reference "Events" — `start`/`end` (`date` xor `dateTime`,
//! `timeZone` "required for recurring events"), `recurrence[]` (see [`crate::recurrence`]),
//! `colorId` ("ID referring to an entry in the event section of the colors definition",
//! i.e. `"1"`–`"11"`, see `colors.get`), `reminders.useDefault` / `reminders.overrides[]`
//! ("The maximum number of override reminders is 5", `method` `email` | `popup`,
//! `minutes` "Valid values are between 0 and 40320 (4 weeks in minutes)"; overrides together
//! with `useDefault: true` are refused with "Cannot specify both default reminders and
//! overrides at the same time."), `visibility` (`default`, `public`, `private`,
//! `confidential`), `transparency` (`opaque`, `transparent`), `status`, `sequence`,
//! `extendedProperties`. Violations are 400 `invalid` (or `required` for missing times),
//! `timeRangeEmpty` for an end before the start.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::recurrence::{Recurrence, invalid_recurrence};

/// A parsed `start`/`end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Moment {
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Moment {
    /// Approximate instant (all-day dates at midnight UTC), for timeMin/timeMax filtering.
    pub fn instant(self) -> DateTime<Utc> {
        match self {
            Moment::DateTime(dt) => dt,
            Moment::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
        }
    }
}

/// Parses `start` or `end`; returns the moment and its `timeZone`, if given.
pub(crate) fn parse_when(
    value: Option<&Value>,
    which: &str,
) -> Result<(Moment, Option<Tz>), ApiError> {
    let invalid_time = || ApiError::invalid(&format!("Invalid {which} time."));
    let bad_zone = || ApiError::invalid(&format!("Invalid time zone definition for {which} time."));
    let obj = match value {
        None | Some(Value::Null) => {
            return Err(ApiError::required(&format!("Missing {which} time.")));
        }
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(invalid_time()),
    };
    let tz = match obj.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.parse::<Tz>().map_err(|_| bad_zone())?),
        Some(_) => return Err(bad_zone()),
    };
    let date = obj.get("date").filter(|v| !v.is_null());
    let date_time = obj.get("dateTime").filter(|v| !v.is_null());
    let moment = match (date, date_time) {
        (None, None) => return Err(ApiError::required(&format!("Missing {which} time."))),
        (Some(Value::String(d)), None) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(Moment::Date)
            .map_err(|_| invalid_time())?,
        (None, Some(Value::String(dt))) => {
            if let Ok(parsed) = DateTime::parse_from_rfc3339(dt) {
                Moment::DateTime(parsed.with_timezone(&Utc))
            } else {
                let naive = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
                    .map_err(|_| invalid_time())?;
                let Some(tz) = tz else {
                    return Err(ApiError::required(&format!(
                        "Missing time zone definition for {which} time."
                    )));
                };
                let local = tz
                    .from_local_datetime(&naive)
                    .earliest()
                    .ok_or_else(invalid_time)?;
                Moment::DateTime(local.with_timezone(&Utc))
            }
        }
        _ => return Err(invalid_time()),
    };
    Ok((moment, tz))
}

/// The `recurrence` lines of an event (empty if none); non-strings are invalid.
pub(crate) fn recurrence_lines(ev: &Map<String, Value>) -> Result<Vec<&str>, ApiError> {
    match ev.get("recurrence") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(lines)) => lines
            .iter()
            .map(|l| l.as_str().ok_or_else(invalid_recurrence))
            .collect(),
        Some(_) => Err(invalid_recurrence()),
    }
}

fn validate_string_map(value: Option<&Value>) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) if map.values().all(Value::is_string) => Ok(()),
        Some(_) => Err(ApiError::invalid("Invalid extended property value.")),
    }
}

/// A string field restricted to `allowed` values.
fn validate_enum(ev: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match ev.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(_) => Err(ApiError::invalid(&format!("Invalid value for: {field}"))),
    }
}

/// Event colors are the keys of the `event` palette of colors.get: "1" to "11".
fn validate_color(ev: &Map<String, Value>) -> Result<(), ApiError> {
    match ev.get("colorId") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(id)) if crate::colors::is_event_color(id) => Ok(()),
        Some(_) => Err(ApiError::invalid("Invalid color ID.")),
    }
}

/// Maximum number of reminder overrides and maximum `minutes` (4 weeks).
pub(crate) const MAX_REMINDER_OVERRIDES: usize = 5;
pub(crate) const MAX_REMINDER_MINUTES: i64 = 40_320;

fn validate_reminders(ev: &Map<String, Value>) -> Result<(), ApiError> {
    let reminders = match ev.get("reminders") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(r)) => r,
        Some(_) => return Err(ApiError::invalid("Invalid reminders value.")),
    };
    let use_default = match reminders.get("useDefault") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("Invalid value for: reminders.useDefault")),
    };
    let overrides = match reminders.get("overrides") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(o)) => o,
        Some(_) => return Err(ApiError::invalid("Invalid value for: reminders.overrides")),
    };
    if use_default && !overrides.is_empty() {
        return Err(ApiError::new(
            400,
            "cannotUseDefaultRemindersAndSpecifyOverride",
            "Cannot specify both default reminders and overrides at the same time.",
        )
        .in_domain("calendar"));
    }
    if overrides.len() > MAX_REMINDER_OVERRIDES {
        return Err(ApiError::invalid(
            "The maximum number of override reminders is 5.",
        ));
    }
    for reminder in overrides {
        let method = reminder.get("method").and_then(Value::as_str);
        match method {
            Some("email" | "popup") => {}
            None => return Err(ApiError::required("Missing reminder method.")),
            Some(_) => return Err(ApiError::invalid("Invalid reminder method.")),
        }
        match reminder.get("minutes") {
            None | Some(Value::Null) => {
                return Err(ApiError::required("Missing reminder minutes."));
            }
            Some(m)
                if m.as_i64()
                    .is_some_and(|m| (0..=MAX_REMINDER_MINUTES).contains(&m)) => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    "Invalid reminder minutes value: must be between 0 and 40320.",
                ));
            }
        }
    }
    Ok(())
}

/// Validates a full event representation (as inserted, updated or patched).
pub(crate) fn validate_event(ev: &Map<String, Value>) -> Result<(), ApiError> {
    let (end, _) = parse_when(ev.get("end"), "end")?;
    let (start, start_tz) = parse_when(ev.get("start"), "start")?;
    match (start, end) {
        (Moment::Date(s), Moment::Date(e)) if e <= s => return Err(ApiError::time_range_empty()),
        (Moment::DateTime(s), Moment::DateTime(e)) if e < s => {
            return Err(ApiError::time_range_empty());
        }
        (Moment::Date(_), Moment::Date(_)) | (Moment::DateTime(_), Moment::DateTime(_)) => {}
        _ => {
            return Err(ApiError::invalid(
                "Start and end times must either both be date or both be dateTime.",
            ));
        }
    }
    let lines = recurrence_lines(ev)?;
    if !lines.is_empty() && matches!(start, Moment::DateTime(_)) && start_tz.is_none() {
        return Err(ApiError::required(
            "Missing time zone definition for start time.",
        ));
    }
    Recurrence::parse(lines)?;
    validate_enum(ev, "status", &["confirmed", "tentative", "cancelled"])?;
    validate_enum(
        ev,
        "visibility",
        &["default", "public", "private", "confidential"],
    )?;
    validate_enum(ev, "transparency", &["opaque", "transparent"])?;
    validate_color(ev)?;
    validate_reminders(ev)?;
    match ev.get("extendedProperties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(props)) => {
            validate_string_map(props.get("private"))?;
            validate_string_map(props.get("shared"))?;
        }
        Some(_) => return Err(ApiError::invalid("Invalid extended property value.")),
    }
    if let Some(seq) = ev.get("sequence")
        && !seq.is_null()
        && !seq
            .as_i64()
            .is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n))
    {
        return Err(ApiError::invalid("Invalid sequence value."));
    }
    Ok(())
}

/// Rewrites a `dateTime` sent without offset (allowed with a `timeZone`) as Google answers
/// it: RFC 3339 with that zone's offset (`2026-11-23T09:00:00-05:00`). Values that carry an
/// offset are kept as sent.
pub(crate) fn normalize_date_times(ev: &mut Map<String, Value>) {
    for key in ["start", "end"] {
        let Some(Value::Object(when)) = ev.get_mut(key) else {
            continue;
        };
        let (Some(Value::String(dt)), Some(Value::String(zone))) =
            (when.get("dateTime"), when.get("timeZone"))
        else {
            continue;
        };
        if DateTime::parse_from_rfc3339(dt).is_ok() {
            continue;
        }
        let (Ok(naive), Ok(tz)) = (
            NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f"),
            zone.parse::<Tz>(),
        ) else {
            continue;
        };
        if let Some(local) = tz.from_local_datetime(&naive).earliest() {
            let fixed = local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
            when.insert("dateTime".into(), Value::String(fixed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(extra: Value) -> Result<(), (String, String)> {
        let mut ev = json!({
            "start": {"dateTime": "2026-09-01T09:00:00", "timeZone": "America/New_York"},
            "end": {"dateTime": "2026-09-01T10:15:00", "timeZone": "America/New_York"},
        });
        if let (Some(obj), Value::Object(extra)) = (ev.as_object_mut(), extra) {
            obj.extend(extra);
        }
        validate_event(ev.as_object().unwrap_or(&Map::new())).map_err(|e| (e.reason, e.message))
    }

    #[test]
    fn times() {
        let ok = |start: Value, end: Value| {
            let ev = json!({ "start": start, "end": end });
            validate_event(ev.as_object().unwrap_or(&Map::new()))
        };
        assert!(
            ok(
                json!({"dateTime": "2025-01-01T10:00:00Z"}),
                json!({"dateTime": "2025-01-01T11:00:00Z"})
            )
            .is_ok()
        );
        assert_eq!(
            ok(
                json!({"dateTime": "2025-01-01T10:00:00"}),
                json!({"dateTime": "2025-01-01T15:30:00Z"})
            )
            .map_err(|e| e.message),
            Err("Missing time zone definition for start time.".to_string())
        );
        assert_eq!(
            ok(json!({"date": "2025-01-02"}), json!({"date": "2025-01-02"})).map_err(|e| e.reason),
            Err("timeRangeEmpty".to_string())
        );
        assert_eq!(
            ok(
                json!({"dateTime": "2025-01-01T10:00:00Z", "timeZone": "Mars/Olympus"}),
                json!({"dateTime": "2025-01-01T11:00:00Z"})
            )
            .map_err(|e| e.reason),
            Err("invalid".to_string())
        );
    }

    #[test]
    fn appearance() {
        for color in ["1", "5", "11"] {
            assert!(check(json!({ "colorId": color })).is_ok(), "{color}");
        }
        for color in [json!("0"), json!("12"), json!("red"), json!(3), json!("")] {
            assert_eq!(
                check(json!({ "colorId": color })).map_err(|e| e.0),
                Err("invalid".into())
            );
        }
        assert!(check(json!({"reminders": {"useDefault": true}})).is_ok());
        assert!(check(json!({"reminders": {"useDefault": false, "overrides": []}})).is_ok());
        let five: Vec<Value> = (0..5)
            .map(|i| json!({"method": "popup", "minutes": i * 10}))
            .collect();
        assert!(check(json!({"reminders": {"useDefault": false, "overrides": five}})).is_ok());
        let six: Vec<Value> = (0..6)
            .map(|i| json!({"method": "email", "minutes": i}))
            .collect();
        assert!(check(json!({"reminders": {"useDefault": false, "overrides": six}})).is_err());
        assert_eq!(
            check(
                json!({"reminders": {"useDefault": true, "overrides": [{"method": "popup", "minutes": 10}]}})
            ),
            Err((
                "cannotUseDefaultRemindersAndSpecifyOverride".into(),
                "Cannot specify both default reminders and overrides at the same time.".into()
            ))
        );
        for bad in [
            json!({"method": "sms", "minutes": 10}),
            json!({"method": "popup", "minutes": -1}),
            json!({"method": "popup", "minutes": 40_321}),
            json!({"method": "popup"}),
            json!({"minutes": 5}),
        ] {
            assert!(check(json!({"reminders": {"overrides": [bad]}})).is_err());
        }
        assert!(
            check(json!({"reminders": {"overrides": [{"method": "email", "minutes": 40_320}]}}))
                .is_ok()
        );
        for v in ["default", "public", "private", "confidential"] {
            assert!(check(json!({ "visibility": v })).is_ok());
        }
        assert!(check(json!({ "visibility": "secret" })).is_err());
        assert!(check(json!({ "transparency": "transparent" })).is_ok());
        assert!(check(json!({ "transparency": "see-through" })).is_err());
    }
}
