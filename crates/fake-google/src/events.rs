//! Event and calendar semantics of the Calendar API (storage, access, listing, paging).
//!
//! Validation of event bodies lives in [`crate::validate`], recurrence in
//! [`crate::recurrence`] / [`crate::expand`] / [`crate::instances`].

use std::ops::Bound;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::acl::Role;
use crate::error::ApiError;
use crate::instances;
use crate::paging::{
    decode_page_token, encode_page_token, parse_bool, parse_instant, parse_max_results,
};
use crate::state::{Principal, State, now_rfc3339};
use crate::validate::{normalize_date_times, parse_when, validate_event};

/// Default and maximum `maxResults` of events.list / events.instances.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 250;
pub(crate) const MAX_PAGE_SIZE: usize = 2500;

const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

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
    st.calendar_with(calendar_id, who, Role::Writer)?;
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
    let calendar = st.calendar_mut(calendar_id, who, Role::Writer)?;
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
    normalize_date_times(&mut ev);
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
    let calendar = st.calendar_mut(calendar_id, who, Role::Writer)?;
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
    normalize_date_times(&mut ev);
    let ev = Value::Object(ev);
    calendar.events.insert(event_id.to_string(), ev.clone());
    Ok(ev)
}

fn existing_event(
    st: &State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
    need: Role,
) -> Result<Value, ApiError> {
    let (calendar, _) = st.calendar_with(calendar_id, who, need)?;
    if let Some(ev) = calendar.events.get(event_id) {
        return Ok(ev.clone());
    }
    if instances::is_instance_id(calendar, event_id) {
        return Err(ApiError::unsupported(
            "changing a single instance of a recurring event",
        ));
    }
    Err(ApiError::not_found())
}

/// What a `freeBusyReader` sees of an event: when it is busy, nothing else.
pub(crate) fn free_busy_view(ev: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "kind",
        "etag",
        "id",
        "status",
        "start",
        "end",
        "recurringEventId",
        "originalStartTime",
        "transparency",
    ] {
        if let Some(value) = ev.get(key) {
            out.insert(key.to_string(), value.clone());
        }
    }
    Value::Object(out)
}

/// events.get (cancelled events are returned too, like Google; instance ids
/// `<eventId>_<YYYYMMDDTHHMMSSZ>` of recurring events too).
pub(crate) fn get(
    st: &State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
) -> Result<Value, ApiError> {
    let (calendar, access) = st.calendar_with(calendar_id, who, Role::FreeBusyReader)?;
    let ev = match calendar.events.get(event_id) {
        Some(ev) => ev.clone(),
        None => instances::get_instance(calendar, event_id)?,
    };
    Ok(if access.role == Role::FreeBusyReader {
        free_busy_view(&ev)
    } else {
        ev
    })
}

/// events.update (PUT): replaces the whole event.
pub(crate) fn update(
    st: &mut State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
    body: Value,
) -> Result<Value, ApiError> {
    let existing = existing_event(st, calendar_id, event_id, who, Role::Writer)?;
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
    let existing = existing_event(st, calendar_id, event_id, who, Role::Writer)?;
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
    existing_event(st, calendar_id, event_id, who, Role::Writer)?;
    let etag = st.next_etag();
    let calendar = st.calendar_mut(calendar_id, who, Role::Writer)?;
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
                "maxResults" => q.max = parse_max_results(value, MAX_PAGE_SIZE)?,
                "pageToken" => q.after = Some(decode_page_token(value)?),
                "privateExtendedProperty" => q.private.push(parse_property_filter(value)?),
                "sharedExtendedProperty" => q.shared.push(parse_property_filter(value)?),
                "showDeleted" => q.show_deleted = parse_bool(key, value)?,
                "iCalUID" => q.ical_uid = Some(value.clone()),
                "updatedMin" => q.updated_min = Some(parse_instant(key, value)?),
                "timeMin" => q.time_min = Some(parse_instant(key, value)?),
                "timeMax" => q.time_max = Some(parse_instant(key, value)?),
                // Expanding every series into instances inside events.list is not
                // implemented: use events.instances per recurring event.
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
            if let (Some(max), Some(start)) = (self.time_max, start)
                && start >= max
            {
                return false;
            }
            if let (Some(min), Some(end)) = (self.time_min, end) {
                // A recurring series is kept while any occurrence ends after timeMin (a
                // series the fake cannot expand is kept).
                let last_end = match instances::last_occurrence_end(ev) {
                    Some(result) => result.unwrap_or(DateTime::<Utc>::MAX_UTC),
                    None => end,
                };
                if last_end <= min {
                    return false;
                }
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
    let (calendar, access) = st.calendar_with(calendar_id, who, Role::FreeBusyReader)?;
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
        items.push(if access.role == Role::FreeBusyReader {
            free_busy_view(ev)
        } else {
            ev.clone()
        });
        last_id = Some(id);
    }
    let mut out = events_envelope(&calendar.resource, access.role, None, items);
    if let (true, Some(last)) = (more, last_id) {
        out["nextPageToken"] = json!(encode_page_token(last));
    }
    Ok(out)
}

/// The `calendar#events` collection answered by events.list and events.instances.
pub(crate) fn events_envelope(
    calendar: &Value,
    role: Role,
    time_zone: Option<&str>,
    items: Vec<Value>,
) -> Value {
    let zone = time_zone.map_or_else(
        || calendar.get("timeZone").cloned().unwrap_or(Value::Null),
        |tz| json!(tz),
    );
    json!({
        "kind": "calendar#events",
        "etag": calendar.get("etag").cloned().unwrap_or(Value::Null),
        "summary": calendar.get("summary").cloned().unwrap_or(Value::Null),
        "timeZone": zone,
        "updated": now_rfc3339(),
        "accessRole": role.as_str(),
        "defaultReminders": [],
        "items": items,
    })
}

/// calendars.insert: the caller becomes the data owner (with the `user:<email>` owner rule
/// when the caller has an e-mail).
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
        who.account(),
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
}
