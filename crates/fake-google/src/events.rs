//! Event and calendar semantics of the Calendar API (validation, storage, listing, paging).

use std::ops::Bound;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::{Principal, State, now_rfc3339};

/// Default and maximum `maxResults` of events.list.
const DEFAULT_PAGE_SIZE: usize = 250;
const MAX_PAGE_SIZE: usize = 2500;

const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// A parsed `start`/`end`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Moment {
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Moment {
    /// Approximate instant (all-day dates at midnight UTC), for timeMin/timeMax filtering.
    fn instant(self) -> DateTime<Utc> {
        match self {
            Moment::DateTime(dt) => dt,
            Moment::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
        }
    }
}

/// Generates a random 26-character base32hex event id.
pub(crate) fn generate_event_id() -> String {
    let mut bits: u128 = rand::random();
    (0..26)
        .map(|_| {
            let c = BASE32HEX[(bits & 31) as usize];
            bits >>= 5;
            c as char
        })
        .collect()
}

/// Generates a calendar id like `c_<64 hex>@group.calendar.google.com`.
pub(crate) fn generate_calendar_id() -> String {
    let a: u128 = rand::random();
    let b: u128 = rand::random();
    format!("c_{a:032x}{b:032x}@group.calendar.google.com")
}

/// Client-supplied ids: base32hex (`a-v`, `0-9`), 5..=1024 characters.
fn validate_id(id: &str) -> Result<(), ApiError> {
    let valid_chars = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
    if valid_chars && (5..=1024).contains(&id.len()) {
        Ok(())
    } else {
        Err(ApiError::invalid("Invalid resource id value."))
    }
}

/// Parses `start` or `end`; returns the moment and whether `timeZone` was given.
fn parse_when(value: Option<&Value>, which: &str) -> Result<(Moment, bool), ApiError> {
    let invalid_time = || ApiError::invalid(&format!("Invalid {which} time."));
    let obj = match value {
        None | Some(Value::Null) => {
            return Err(ApiError::required(&format!("Missing {which} time.")));
        }
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(invalid_time()),
    };
    let tz = match obj.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.parse::<Tz>().map_err(|_| {
            ApiError::invalid(&format!("Invalid time zone definition for {which} time."))
        })?),
        Some(_) => {
            return Err(ApiError::invalid(&format!(
                "Invalid time zone definition for {which} time."
            )));
        }
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
    Ok((moment, tz.is_some()))
}

fn validate_recurrence_line(line: &str) -> Result<(), ApiError> {
    let invalid = || ApiError::invalid("Invalid recurrence rule.");
    let (head, value) = line.split_once(':').ok_or_else(invalid)?;
    let name = head.split(';').next().unwrap_or_default();
    match name {
        "RRULE" | "EXRULE" if value.contains("FREQ=") => Ok(()),
        "RDATE" | "EXDATE" if !value.is_empty() => Ok(()),
        _ => Err(invalid()),
    }
}

fn validate_string_map(value: Option<&Value>) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) if map.values().all(Value::is_string) => Ok(()),
        Some(_) => Err(ApiError::invalid("Invalid extended property value.")),
    }
}

/// Validates a full event representation (as inserted, updated or patched).
fn validate_event(ev: &Map<String, Value>) -> Result<(), ApiError> {
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
    match ev.get("recurrence") {
        None | Some(Value::Null) => {}
        Some(Value::Array(lines)) => {
            if !lines.is_empty() && matches!(start, Moment::DateTime(_)) && !start_tz {
                return Err(ApiError::required(
                    "Missing time zone definition for start time.",
                ));
            }
            for line in lines {
                let line = line
                    .as_str()
                    .ok_or_else(|| ApiError::invalid("Invalid recurrence rule."))?;
                validate_recurrence_line(line)?;
            }
        }
        Some(_) => return Err(ApiError::invalid("Invalid recurrence rule.")),
    }
    match ev.get("status") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if matches!(s.as_str(), "confirmed" | "tentative" | "cancelled") => {
        }
        Some(_) => return Err(ApiError::invalid("Invalid value for: status")),
    }
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

fn html_link(calendar_id: &str, event_id: &str) -> String {
    let eid: String = format!("{event_id} {calendar_id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("https://www.google.com/calendar/event?eid={eid}")
}

fn organizer(calendar: &Value, calendar_id: &str) -> Value {
    json!({
        "email": calendar_id,
        "displayName": calendar.get("summary").cloned().unwrap_or(Value::Null),
        "self": true,
    })
}

/// Fills server-set defaults that are absent.
fn fill_defaults(ev: &mut Map<String, Value>) {
    ev.entry("status").or_insert_with(|| json!("confirmed"));
    ev.entry("reminders")
        .or_insert_with(|| json!({ "useDefault": true }));
    ev.entry("eventType").or_insert_with(|| json!("default"));
}

fn parse_body(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::parse_error()),
    }
}

/// events.insert
pub(crate) fn insert(
    st: &mut State,
    calendar_id: &str,
    who: &Principal,
    body: Value,
) -> Result<Value, ApiError> {
    st.calendar(calendar_id, who)?;
    let mut ev = parse_body(body)?;
    let id = match ev.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            validate_id(id)?;
            Some(id.clone())
        }
        Some(_) => return Err(ApiError::invalid("Invalid resource id value.")),
    };
    validate_event(&ev)?;
    let etag = st.next_etag();
    let calendar = st.calendar_mut(calendar_id, who)?;
    let id = match id {
        Some(id) if calendar.events.contains_key(&id) => return Err(ApiError::duplicate()),
        Some(id) => id,
        None => loop {
            let id = generate_event_id();
            if !calendar.events.contains_key(&id) {
                break id;
            }
        },
    };
    let now = now_rfc3339();
    ev.insert("kind".into(), json!("calendar#event"));
    ev.insert("etag".into(), json!(etag));
    ev.insert("id".into(), json!(id));
    ev.insert("htmlLink".into(), json!(html_link(calendar_id, &id)));
    ev.insert("created".into(), json!(now));
    ev.insert("updated".into(), json!(now));
    ev.entry("iCalUID")
        .or_insert_with(|| json!(format!("{id}@google.com")));
    ev.entry("sequence").or_insert_with(|| json!(0));
    ev.entry("organizer")
        .or_insert_with(|| organizer(&calendar.resource, calendar_id));
    fill_defaults(&mut ev);
    let ev = Value::Object(ev);
    calendar.events.insert(id, ev.clone());
    Ok(ev)
}

/// Stores a modified event (update/patch): keeps identity fields, bumps sequence/updated/etag.
fn store_modified(
    st: &mut State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
    existing: &Value,
    mut ev: Map<String, Value>,
) -> Result<Value, ApiError> {
    let etag = st.next_etag();
    let calendar = st.calendar_mut(calendar_id, who)?;
    let keep = |key: &str| existing.get(key).cloned().unwrap_or(Value::Null);
    let sequence = existing
        .get("sequence")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        + 1;
    ev.insert("kind".into(), json!("calendar#event"));
    ev.insert("etag".into(), json!(etag));
    ev.insert("id".into(), json!(event_id));
    ev.insert("htmlLink".into(), keep("htmlLink"));
    ev.insert("created".into(), keep("created"));
    ev.insert("iCalUID".into(), keep("iCalUID"));
    ev.insert("updated".into(), json!(now_rfc3339()));
    ev.insert("sequence".into(), json!(sequence));
    if !ev.contains_key("organizer") {
        ev.insert("organizer".into(), keep("organizer"));
    }
    if !ev.contains_key("status") {
        // An update that does not mention status leaves it alone (a cancelled event
        // stays cancelled until status "confirmed" is sent explicitly).
        ev.insert("status".into(), keep("status"));
    }
    ev.retain(|_, v| !v.is_null());
    fill_defaults(&mut ev);
    let ev = Value::Object(ev);
    calendar.events.insert(event_id.to_string(), ev.clone());
    Ok(ev)
}

fn existing_event(
    st: &State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
) -> Result<Value, ApiError> {
    st.calendar(calendar_id, who)?
        .events
        .get(event_id)
        .cloned()
        .ok_or_else(ApiError::not_found)
}

/// events.get (cancelled events are returned too, like Google).
pub(crate) fn get(
    st: &State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
) -> Result<Value, ApiError> {
    existing_event(st, calendar_id, event_id, who)
}

/// events.update (PUT): replaces the whole event.
pub(crate) fn update(
    st: &mut State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
    body: Value,
) -> Result<Value, ApiError> {
    let existing = existing_event(st, calendar_id, event_id, who)?;
    let ev = parse_body(body)?;
    validate_event(&ev)?;
    store_modified(st, calendar_id, event_id, who, &existing, ev)
}

/// events.patch: shallow merge of top-level fields (arrays/objects replace whole fields;
/// `null` removes a field).
pub(crate) fn patch(
    st: &mut State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
    body: Value,
) -> Result<Value, ApiError> {
    let existing = existing_event(st, calendar_id, event_id, who)?;
    let changes = parse_body(body)?;
    let mut merged = match &existing {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in changes {
        if value.is_null() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    validate_event(&merged)?;
    store_modified(st, calendar_id, event_id, who, &existing, merged)
}

/// events.delete: marks the event cancelled (it stays, and its id stays taken).
pub(crate) fn delete(
    st: &mut State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
) -> Result<(), ApiError> {
    let etag = st.next_etag();
    let calendar = st.calendar_mut(calendar_id, who)?;
    let ev = calendar
        .events
        .get_mut(event_id)
        .ok_or_else(ApiError::not_found)?;
    if ev.get("status").and_then(Value::as_str) == Some("cancelled") {
        return Err(ApiError::deleted());
    }
    if let Some(obj) = ev.as_object_mut() {
        obj.insert("status".into(), json!("cancelled"));
        obj.insert("updated".into(), json!(now_rfc3339()));
        obj.insert("etag".into(), json!(etag));
    }
    Ok(())
}

fn encode_page_token(last_id: &str) -> String {
    let hex: String = last_id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("fp1{hex}")
}

fn decode_page_token(token: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("Invalid page token.");
    let hex = token.strip_prefix("fp1").ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::invalid(&format!(
            "Invalid value '{value}' for parameter {name}."
        ))),
    }
}

fn parse_instant(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|dt| dt.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(&format!("Invalid value for {name}: {value}")))
}

fn parse_property_filter(value: &str) -> Result<(String, String), ApiError> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| {
            ApiError::invalid(&format!(
                "Invalid extended property filter '{value}': expected propertyName=value."
            ))
        })
}

fn property_matches(ev: &Value, kind: &str, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(key, want)| {
        ev.get("extendedProperties")
            .and_then(|p| p.get(kind))
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            == Some(want.as_str())
    })
}

/// events.list query options.
#[derive(Debug, Default)]
struct ListQuery {
    max: usize,
    after: Option<String>,
    private: Vec<(String, String)>,
    shared: Vec<(String, String)>,
    show_deleted: bool,
    ical_uid: Option<String>,
    updated_min: Option<DateTime<Utc>>,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
}

impl ListQuery {
    fn parse(query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            max: DEFAULT_PAGE_SIZE,
            ..ListQuery::default()
        };
        for (key, value) in query {
            match key.as_str() {
                "maxResults" => {
                    let n: i64 = value.parse().unwrap_or(0);
                    if n < 1 {
                        return Err(ApiError::invalid(&format!(
                            "Invalid value '{value}'. Values must be within the range: [1, 2500]"
                        )));
                    }
                    q.max = usize::try_from(n)
                        .unwrap_or(MAX_PAGE_SIZE)
                        .min(MAX_PAGE_SIZE);
                }
                "pageToken" => q.after = Some(decode_page_token(value)?),
                "privateExtendedProperty" => q.private.push(parse_property_filter(value)?),
                "sharedExtendedProperty" => q.shared.push(parse_property_filter(value)?),
                "showDeleted" => q.show_deleted = parse_bool(key, value)?,
                "iCalUID" => q.ical_uid = Some(value.clone()),
                "updatedMin" => q.updated_min = Some(parse_instant(key, value)?),
                "timeMin" => q.time_min = Some(parse_instant(key, value)?),
                "timeMax" => q.time_max = Some(parse_instant(key, value)?),
                "singleEvents" if parse_bool(key, value)? => {
                    return Err(ApiError::unsupported("events.list singleEvents=true"));
                }
                "q" | "syncToken" | "orderBy" | "fields" => {
                    return Err(ApiError::unsupported(&format!("events.list {key}")));
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn accepts(&self, ev: &Value) -> bool {
        let cancelled = ev.get("status").and_then(Value::as_str) == Some("cancelled");
        // With updatedMin, Google includes deleted events regardless of showDeleted.
        if cancelled && !self.show_deleted && self.updated_min.is_none() {
            return false;
        }
        if let Some(min) = self.updated_min {
            let updated = ev
                .get("updated")
                .and_then(Value::as_str)
                .and_then(|u| DateTime::parse_from_rfc3339(u).ok());
            if updated.is_none_or(|u| u < min) {
                return false;
            }
        }
        if let Some(uid) = &self.ical_uid
            && ev.get("iCalUID").and_then(Value::as_str) != Some(uid.as_str())
        {
            return false;
        }
        if !property_matches(ev, "private", &self.private)
            || !property_matches(ev, "shared", &self.shared)
        {
            return false;
        }
        if self.time_min.is_some() || self.time_max.is_some() {
            let start = parse_when(ev.get("start"), "start")
                .ok()
                .map(|m| m.0.instant());
            let end = parse_when(ev.get("end"), "end").ok().map(|m| m.0.instant());
            let recurring = ev
                .get("recurrence")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty());
            if let (Some(max), Some(start)) = (self.time_max, start)
                && start >= max
            {
                return false;
            }
            // Recurring series are kept whenever they start before timeMax (the fake does
            // not expand recurrences, so it cannot know when the series ends).
            if let (Some(min), Some(end), false) = (self.time_min, end, recurring)
                && end <= min
            {
                return false;
            }
        }
        true
    }
}

/// events.list
pub(crate) fn list(
    st: &State,
    calendar_id: &str,
    who: &Principal,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let calendar = st.calendar(calendar_id, who)?;
    let q = ListQuery::parse(query)?;
    let range = match q.after.as_deref() {
        Some(after) => calendar
            .events
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded)),
        None => calendar
            .events
            .range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
    };
    let mut items = Vec::new();
    let mut last_id: Option<&str> = None;
    let mut more = false;
    for (id, ev) in range {
        if !q.accepts(ev) {
            continue;
        }
        if items.len() == q.max {
            more = true;
            break;
        }
        items.push(ev.clone());
        last_id = Some(id);
    }
    let resource = &calendar.resource;
    let mut out = json!({
        "kind": "calendar#events",
        "etag": resource.get("etag").cloned().unwrap_or(Value::Null),
        "summary": resource.get("summary").cloned().unwrap_or(Value::Null),
        "timeZone": resource.get("timeZone").cloned().unwrap_or(Value::Null),
        "updated": now_rfc3339(),
        "accessRole": "owner",
        "defaultReminders": [],
        "items": items,
    });
    if let (true, Some(last)) = (more, last_id) {
        out["nextPageToken"] = json!(encode_page_token(last));
    }
    Ok(out)
}

/// calendars.insert
pub(crate) fn insert_calendar(
    st: &mut State,
    who: &Principal,
    body: Value,
) -> Result<Value, ApiError> {
    let cal = parse_body(body)?;
    let summary = match cal.get("summary") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::required("Missing summary.")),
    };
    let time_zone = match cal.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(tz)) if tz.parse::<Tz>().is_ok() => Some(tz.clone()),
        Some(_) => return Err(ApiError::invalid("Invalid time zone definition.")),
    };
    let id = loop {
        let id = generate_calendar_id();
        if !st.calendars.contains_key(&id) {
            break id;
        }
    };
    Ok(st.create_calendar(
        &id,
        &summary,
        time_zone.as_deref(),
        Some(&cal),
        who.owner.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abcde").is_ok());
        assert!(validate_id("0123456789abcdefghijklmnopqrstuv").is_ok());
        assert!(validate_id("abcd").is_err());
        assert!(validate_id("abcdw").is_err());
        assert!(validate_id("ABCDE").is_err());
        assert!(validate_id(&"a".repeat(1025)).is_err());
        let generated = generate_event_id();
        assert_eq!(generated.len(), 26);
        assert!(validate_id(&generated).is_ok());
    }

    #[test]
    fn page_tokens_round_trip() {
        let token = encode_page_token("c_x@group.calendar.google.com");
        assert_eq!(
            decode_page_token(&token).ok().as_deref(),
            Some("c_x@group.calendar.google.com")
        );
        assert!(decode_page_token("nonsense").is_err());
        assert!(decode_page_token("fp1zz").is_err());
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
        assert!(
            ok(
                json!({"dateTime": "2025-01-01T10:00:00", "timeZone": "America/New_York"}),
                json!({"dateTime": "2025-01-01T15:30:00Z"})
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
}
