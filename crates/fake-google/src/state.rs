//! The fake's in-memory state: calendars, events, tokens, principals, faults, quotas and the
//! call log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::acl::{AclRule, SharingNotification};
use crate::faults::Faults;
use crate::oauth::ServiceAccount;
use crate::quota::Quota;

/// One recorded API call (Calendar API or token endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// `"events.insert"`, `"events.update"`, `"events.patch"`, `"events.delete"`,
    /// `"events.list"`, `"events.get"`, `"events.instances"`, `"calendars.get"`,
    /// `"calendars.insert"`, `"calendars.delete"`, `"acl.insert"`, `"acl.get"`, `"acl.list"`,
    /// `"acl.delete"`, `"calendarList.list"`, `"calendarList.get"`, `"colors.get"` or `"token"`.
    pub method: String,
    /// The calendar id from the path (for `calendars.insert`: the new id, if created).
    pub calendar_id: Option<String>,
    /// The event id from the path (for `events.insert`: the id sent or generated).
    pub event_id: Option<String>,
    /// HTTP status the fake answered with.
    pub status: u16,
    /// When the request reached the fake (before any injected latency). Quotas count
    /// requests at this moment too.
    pub at: DateTime<Utc>,
    /// Who called, when known: the user's e-mail (refresh tokens registered with one,
    /// domain-wide-delegation subjects), the service account's e-mail, or an opaque
    /// `refresh-token:<hash>` / `access-token:<hash>` label (token values are never recorded).
    /// `None` for calls rejected before authentication (faults, bad tokens).
    pub principal: Option<String>,
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

/// A short, stable, non-reversible label for a secret (first 12 hex digits of its SHA-256).
pub(crate) fn secret_label(kind: &str, secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{hex}")
}

/// Normalises an e-mail address or domain for comparisons (Google treats them case-insensitively).
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Principal {
    /// An access token added through [`FakeGoogle::add_access_token`](crate::FakeGoogle::add_access_token)
    /// (or the control API), or the fake's own `user_*` helpers: owner of every calendar.
    #[default]
    Unrestricted,
    /// A user who granted calsync a refresh token (per-user OAuth mode).
    User {
        refresh_token: String,
        email: Option<String>,
    },
    /// A service account acting as itself.
    ServiceAccount { email: String },
    /// A service account impersonating a user through domain-wide delegation (`sub`).
    Delegated {
        service_account: String,
        subject: String,
    },
}

impl Principal {
    /// The Google account e-mail of this principal, if known.
    pub fn email(&self) -> Option<&str> {
        match self {
            Principal::Unrestricted => None,
            Principal::User { email, .. } => email.as_deref(),
            Principal::ServiceAccount { email } => Some(email),
            Principal::Delegated { subject, .. } => Some(subject),
        }
    }

    /// The account that owns calendars this principal creates (`None`: unrestricted, the
    /// calendar is then visible to everyone, like calendars made with `create_calendar`).
    pub fn account(&self) -> Option<Account> {
        match self {
            Principal::Unrestricted => None,
            Principal::User {
                email: Some(email), ..
            } => Some(Account::Email(email.clone())),
            Principal::User { refresh_token, .. } => {
                Some(Account::RefreshToken(refresh_token.clone()))
            }
            Principal::ServiceAccount { email } => Some(Account::Email(email.clone())),
            Principal::Delegated { subject, .. } => Some(Account::Email(subject.clone())),
        }
    }

    /// Whether this principal is `account`.
    pub fn is(&self, account: &Account) -> bool {
        match (self, account) {
            (Principal::User { refresh_token, .. }, Account::RefreshToken(rt)) => {
                refresh_token == rt
            }
            (_, Account::Email(email)) => self.email() == Some(email.as_str()),
            _ => false,
        }
    }

    /// The label recorded in the call log and used as the per-user quota key.
    pub fn label(&self, access_token: &str) -> String {
        match self {
            Principal::Unrestricted => secret_label("access-token", access_token),
            Principal::User {
                email: Some(email), ..
            } => email.clone(),
            Principal::User { refresh_token, .. } => secret_label("refresh-token", refresh_token),
            Principal::ServiceAccount { email } => email.clone(),
            Principal::Delegated { subject, .. } => subject.clone(),
        }
    }
}

/// The data owner of a calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Account {
    /// A user known only by the refresh token they granted (no e-mail registered).
    RefreshToken(String),
    /// A Google account (user or service account), by normalised e-mail.
    Email(String),
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub expires_at: Instant,
    pub principal: Principal,
    /// Scopes granted (`None`: every scope, as for refresh-token grants made by the fake).
    pub scopes: Option<Vec<String>>,
}

/// A refresh token the token endpoint accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct RefreshGrant {
    pub revoked: bool,
    /// The e-mail of the Google account that granted it (for ACL matching), if registered.
    pub email: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct CalendarState {
    /// The `calendar#calendar` resource.
    pub resource: Value,
    /// The data owner; `None` = every valid token has owner access (calendars made by
    /// `create_calendar`, the control API without an owner, or unrestricted tokens).
    pub owner: Option<Account>,
    pub events: BTreeMap<String, Value>,
    /// ACL rules by rule id (`user:alice@example.com`, `domain:example.com`, `default`, ...).
    pub acl: BTreeMap<String, AclRule>,
}

/// Everything behind the mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub calendars: HashMap<String, CalendarState>,
    pub refresh_tokens: HashMap<String, RefreshGrant>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub service_accounts: HashMap<String, ServiceAccount>,
    /// group e-mail -> member e-mails (for ACL rules of scope type `group`).
    pub groups: HashMap<String, BTreeSet<String>>,
    pub notifications: Vec<SharingNotification>,
    pub token_lifetime: Duration,
    pub token_counter: u64,
    pub etag_counter: u64,
    pub faults: Faults,
    pub quota: Quota,
    pub calls: Vec<Call>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            calendars: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            service_accounts: HashMap::new(),
            groups: HashMap::new(),
            notifications: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            token_counter: 0,
            etag_counter: 0,
            faults: Faults::default(),
            quota: Quota::default(),
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

    /// Creates (or replaces) a calendar. An owner with an e-mail gets the `user:<email>`
    /// owner ACL rule Google lists for a calendar's creator.
    pub fn create_calendar(
        &mut self,
        id: &str,
        summary: &str,
        time_zone: Option<&str>,
        extra: Option<&serde_json::Map<String, Value>>,
        owner: Option<Account>,
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
        let mut acl = BTreeMap::new();
        if let Some(Account::Email(email)) = &owner {
            // Google reports the data owner of secondary calendars (read-only `dataOwner`).
            resource["dataOwner"] = json!(email);
            let rule = AclRule::user_owner(email, self.next_etag());
            acl.insert(rule.id(), rule);
        }
        self.calendars.insert(
            id.to_string(),
            CalendarState {
                resource: resource.clone(),
                owner,
                events: BTreeMap::new(),
                acl,
            },
        );
        resource
    }

    pub fn add_access_token(
        &mut self,
        token: &str,
        ttl: Duration,
        principal: Principal,
        scopes: Option<Vec<String>>,
    ) {
        self.access_tokens.insert(
            token.to_string(),
            AccessToken {
                expires_at: Instant::now() + ttl,
                principal,
                scopes,
            },
        );
    }

    /// Issues a new access token for `principal` with the configured lifetime.
    pub fn issue_access_token(
        &mut self,
        principal: Principal,
        scopes: Option<Vec<String>>,
    ) -> (String, Duration) {
        self.token_counter += 1;
        let access_token = format!("ya29.fake-{}", self.token_counter);
        let lifetime = self.token_lifetime;
        self.add_access_token(&access_token, lifetime, principal, scopes);
        (access_token, lifetime)
    }

    pub fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for token in self.access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    pub fn revoke_refresh_token(&mut self, refresh_token: &str) {
        if let Some(grant) = self.refresh_tokens.get_mut(refresh_token) {
            grant.revoked = true;
        }
        // Revoking a grant also kills the access tokens issued for it.
        self.access_tokens.retain(|_, t| {
            !matches!(&t.principal, Principal::User { refresh_token: rt, .. } if rt == refresh_token)
        });
    }

    pub fn record(&mut self, call: Call) {
        self.calls.push(call);
    }
}
