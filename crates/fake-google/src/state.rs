//! The fake's in-memory state: calendars, events, tokens, faults and the call log.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::faults::Faults;

/// One recorded API call (Calendar API or token endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// `"events.insert"`, `"events.update"`, `"events.patch"`, `"events.delete"`,
    /// `"events.list"`, `"events.get"`, `"calendars.get"`, `"calendars.insert"`,
    /// `"calendars.delete"` or `"token"`.
    pub method: String,
    /// The calendar id from the path (for `calendars.insert`: the new id, if created).
    pub calendar_id: Option<String>,
    /// The event id from the path (for `events.insert`: the id sent or generated).
    pub event_id: Option<String>,
    /// HTTP status the fake answered with.
    pub status: u16,
}

impl Call {
    /// Whether this call is an event write (insert, update, patch or delete).
    pub fn is_write(&self) -> bool {
        WRITE_METHODS.contains(&self.method.as_str())
    }
}

/// The methods counted by [`FakeGoogle::write_calls`](crate::FakeGoogle::write_calls).
pub const WRITE_METHODS: [&str; 4] = [
    "events.insert",
    "events.update",
    "events.patch",
    "events.delete",
];

/// Who is calling: the refresh token an access token was issued for, if any.
/// Access tokens added through the control API have no owner and see every calendar.
#[derive(Debug, Clone, Default)]
pub(crate) struct Principal {
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub expires_at: Instant,
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct CalendarState {
    /// The `calendar#calendar` resource.
    pub resource: Value,
    /// Refresh token of the owning user; `None` = visible to every valid token.
    pub owner: Option<String>,
    pub events: BTreeMap<String, Value>,
}

impl CalendarState {
    pub fn visible_to(&self, who: &Principal) -> bool {
        match (&self.owner, &who.owner) {
            (Some(owner), Some(caller)) => owner == caller,
            _ => true,
        }
    }
}

/// Everything behind the mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub calendars: HashMap<String, CalendarState>,
    /// refresh token -> revoked?
    pub refresh_tokens: HashMap<String, bool>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub token_lifetime: Duration,
    pub token_counter: u64,
    pub etag_counter: u64,
    pub faults: Faults,
    pub calls: Vec<Call>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            calendars: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            token_lifetime: Duration::from_secs(3600),
            token_counter: 0,
            etag_counter: 0,
            faults: Faults::default(),
            calls: Vec::new(),
        }
    }
}

/// Current time in Google's format (`2025-01-31T10:00:00.123Z`).
pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl State {
    /// A fresh, quoted, monotonically increasing etag like Google's `"3181161784712000"`.
    pub fn next_etag(&mut self) -> String {
        self.etag_counter += 1;
        format!("\"{}\"", 3_000_000_000_000_000u64 + self.etag_counter)
    }

    /// Creates (or replaces) a calendar.
    pub fn create_calendar(
        &mut self,
        id: &str,
        summary: &str,
        time_zone: Option<&str>,
        extra: Option<&serde_json::Map<String, Value>>,
        owner: Option<String>,
    ) -> Value {
        let etag = self.next_etag();
        let mut resource = json!({
            "kind": "calendar#calendar",
            "etag": etag,
            "id": id,
            "summary": summary,
            "timeZone": time_zone.unwrap_or("UTC"),
            "conferenceProperties": { "allowedConferenceSolutionTypes": ["hangoutsMeet"] },
        });
        if let (Some(extra), Some(obj)) = (extra, resource.as_object_mut()) {
            for key in ["description", "location"] {
                if let Some(value) = extra.get(key) {
                    obj.insert(key.to_string(), value.clone());
                }
            }
        }
        self.calendars.insert(
            id.to_string(),
            CalendarState {
                resource: resource.clone(),
                owner,
                events: BTreeMap::new(),
            },
        );
        resource
    }

    pub fn calendar(&self, id: &str, who: &Principal) -> Result<&CalendarState, ApiError> {
        match self.calendars.get(id) {
            Some(calendar) if calendar.visible_to(who) => Ok(calendar),
            _ => Err(ApiError::not_found()),
        }
    }

    pub fn calendar_mut(
        &mut self,
        id: &str,
        who: &Principal,
    ) -> Result<&mut CalendarState, ApiError> {
        match self.calendars.get_mut(id) {
            Some(calendar) if calendar.visible_to(who) => Ok(calendar),
            _ => Err(ApiError::not_found()),
        }
    }

    /// Validates the `Authorization: Bearer ..` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::login_required());
        };
        let value = value.to_str().map_err(|_| ApiError::auth_error())?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::auth_error()),
        };
        match self.access_tokens.get(token) {
            Some(t) if t.expires_at > Instant::now() => Ok(Principal {
                owner: t.owner.clone(),
            }),
            _ => Err(ApiError::auth_error()),
        }
    }

    pub fn add_access_token(&mut self, token: &str, ttl: Duration, owner: Option<String>) {
        self.access_tokens.insert(
            token.to_string(),
            AccessToken {
                expires_at: Instant::now() + ttl,
                owner,
            },
        );
    }

    pub fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for token in self.access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    pub fn revoke_refresh_token(&mut self, refresh_token: &str) {
        if let Some(revoked) = self.refresh_tokens.get_mut(refresh_token) {
            *revoked = true;
        }
        // Revoking a grant also kills the access tokens issued for it.
        self.access_tokens
            .retain(|_, t| t.owner.as_deref() != Some(refresh_token));
    }

    pub fn record(&mut self, call: Call) {
        self.calls.push(call);
    }
}
