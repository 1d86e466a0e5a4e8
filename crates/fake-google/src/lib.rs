//! A faithful in-memory fake of the Google Calendar API v3 subset calsync uses, plus
//! Google's OAuth token endpoint, fault injection and a call log.
//!
//! It is meant to be driven by the real `google-calendar3` client:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use calsync_fake_google::{FakeGoogle, FaultRule};
//!
//! let fake = FakeGoogle::start().await?;
//! fake.add_access_token("access-token", Duration::from_secs(3600));
//! let calendar_id = fake.create_calendar("Classes");
//! fake.add_fault(FaultRule::error(429, "rateLimitExceeded").times(2).method("events.insert"));
//! // hub.base_url(fake.base_url()); hub.root_url(fake.root_url());
//! # let _ = calendar_id;
//! # Ok(())
//! # }
//! ```
//!
//! Served routes (Google's paths; see each module for the Google documentation followed):
//! - `POST /calendar/v3/calendars`, `GET|DELETE /calendar/v3/calendars/{calendarId}`
//!   (calendars.insert/get/delete; the creator is the data owner, others need an ACL [`Role`]);
//! - `GET|POST /calendar/v3/calendars/{calendarId}/events`,
//!   `GET|PUT|PATCH|DELETE .../events/{eventId}` (events.list/insert/get/update/patch/delete;
//!   bodies validated like Google: times, recurrence lines, colorId, reminders, visibility,
//!   transparency), `GET .../events/{eventId}/instances` (events.instances, recurring events
//!   expanded in the event's time zone minus EXDATEs);
//! - `GET|POST /calendar/v3/calendars/{calendarId}/acl`, `GET|DELETE .../acl/{ruleId}`
//!   (acl.list/insert/get/delete);
//! - `GET /calendar/v3/users/me/calendarList[/{calendarId}]` (calendarList.list/get);
//! - `GET /calendar/v3/colors` (colors.get);
//! - `POST /token` (OAuth 2.0 refresh-token grant and JWT-bearer grant for service accounts,
//!   with real RS256 verification; test keys in [`test_keys`]);
//! - `/_fake/...`: the JSON control API for out-of-process users (its table of routes is at
//!   the top of `src/control.rs`; every knob mirrors a method of [`FakeGoogle`]).
//!
//! Who may see what: access tokens added with [`FakeGoogle::add_access_token`] own every
//! calendar; tokens from the refresh-token grant act as that user (with the e-mail given to
//! [`FakeGoogle::add_refresh_token_for`], if any); tokens from the JWT-bearer grant act as
//! the service account, or as the `sub` user with domain-wide delegation. A calendar is
//! visible to its data owner and to whoever an ACL rule matches; calendars made by
//! [`FakeGoogle::create_calendar`] have no owner and stay visible to every valid token.
//!
//! Not implemented (400 `unsupportedByFake`, never a silently wrong answer): `events.list`
//! with `singleEvents=true`, `q`, `syncToken`, `orderBy`; changing one instance of a
//! recurring event; recurrence rules needing `BYHOUR`/`BYMINUTE`/`BYSECOND`/`BYYEARDAY`/
//! `BYWEEKNO`/`BYSETPOS` or `FREQ` below DAILY (accepted, but not expanded).
//!
//! Every call is logged with its arrival time and principal ([`Call`]); quotas like
//! Google's are off by default ([`QuotaConfig`]); faults ([`FaultRule`]) come first.

mod acl;
mod admin;
mod api;
mod colors;
mod control;
mod control_accounts;
mod error;
mod events;
mod expand;
mod faults;
mod handlers;
mod instances;
mod oauth;
mod paging;
mod quota;
mod recurrence;
mod state;
pub mod test_keys;
mod validate;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

pub use acl::{Role, SharingNotification};
pub use faults::{FaultError, FaultRule};
pub use instances::Occurrence;
pub use oauth::{CALENDAR_SCOPE, JWT_BEARER_GRANT};
pub use quota::QuotaConfig;
pub use state::{Call, WRITE_METHODS};

use crate::state::{Account, Principal, RefreshGrant, State};

/// Handle to a running fake (cheap to clone; all clones share one state).
#[derive(Clone)]
pub struct FakeGoogle {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for FakeGoogle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGoogle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGoogle {
    /// Binds `127.0.0.1:0` and serves the fake on a spawned tokio task.
    pub async fn start() -> std::io::Result<FakeGoogle> {
        Self::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Binds `addr` (port 0 picks a free port) and serves the fake on a spawned tokio task.
    /// The task lives as long as the tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakeGoogle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let fake = FakeGoogle {
            state: Arc::new(Mutex::new(State::default())),
            addr: listener.local_addr()?,
        };
        let app = fake.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "calsync-fake-google server stopped");
            }
        });
        Ok(fake)
    }

    /// The complete router (Calendar API, `/token` and `/_fake/` control API) bound to this
    /// fake's state, for embedding into another server.
    pub fn router(&self) -> axum::Router {
        api::routes()
            .merge(control::routes())
            .fallback(api::fallback)
            .with_state(self.clone())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn host(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.addr.port()).to_string()
    }

    /// `http://127.0.0.1:PORT/calendar/v3/` — pass to `CalendarHub::base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/calendar/v3/", self.host())
    }

    /// `http://127.0.0.1:PORT/` — pass to `CalendarHub::root_url`.
    pub fn root_url(&self) -> String {
        format!("http://{}/", self.host())
    }

    /// `http://127.0.0.1:PORT/token` — the OAuth token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.host())
    }

    /// Poison-safe lock; never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a calendar visible to every valid token; returns its new id
    /// (`c_<64 hex>@group.calendar.google.com`).
    pub fn create_calendar(&self, summary: &str) -> String {
        self.create_calendar_owned(None, summary)
    }

    /// Creates a calendar owned by the user of `owner_refresh_token`: access tokens issued
    /// for another refresh token get 404 on it unless it is shared with them (tokens added
    /// with [`add_access_token`](Self::add_access_token) still see everything).
    pub fn create_calendar_for(&self, owner_refresh_token: &str, summary: &str) -> String {
        self.create_calendar_owned(
            Some(Account::RefreshToken(owner_refresh_token.to_string())),
            summary,
        )
    }

    /// Creates a calendar whose data owner is the Google account `owner_email` (a user or a
    /// service account), with the `user:<email>` owner ACL rule Google lists for it.
    pub fn create_calendar_owned_by(&self, owner_email: &str, summary: &str) -> String {
        self.create_calendar_owned(
            Some(Account::Email(state::normalize_email(owner_email))),
            summary,
        )
    }

    pub(crate) fn create_calendar_owned(&self, owner: Option<Account>, summary: &str) -> String {
        let mut st = self.lock();
        let id = loop {
            let id = events::generate_calendar_id();
            if !st.calendars.contains_key(&id) {
                break id;
            }
        };
        st.create_calendar(&id, summary, None, None, owner);
        id
    }

    /// Creates a calendar with a given id (replacing any calendar with that id, events included).
    pub fn create_calendar_with_id(&self, id: &str, summary: &str) {
        self.lock().create_calendar(id, summary, None, None, None);
    }

    /// Deletes a calendar and its events, as if the student deleted it in Google's UI
    /// (later API calls on it get 404 `notFound`). Unknown ids are ignored.
    pub fn delete_calendar(&self, id: &str) {
        self.lock().calendars.remove(id);
    }

    /// Whether a calendar with this id exists.
    pub fn calendar_exists(&self, id: &str) -> bool {
        self.lock().calendars.contains_key(id)
    }

    /// Registers a valid refresh token (re-adding a revoked one makes it valid again; an
    /// e-mail registered before is kept).
    pub fn add_refresh_token(&self, refresh_token: &str) {
        self.lock()
            .refresh_tokens
            .entry(refresh_token.to_string())
            .or_default()
            .revoked = false;
    }

    /// Registers a valid refresh token granted by the Google account `email`: its access
    /// tokens see calendars shared with that e-mail (ACL scope `user`, its `domain`, or a
    /// `group` it belongs to) and calendars owned by it.
    pub fn add_refresh_token_for(&self, refresh_token: &str, email: &str) {
        self.lock().refresh_tokens.insert(
            refresh_token.to_string(),
            RefreshGrant {
                revoked: false,
                email: Some(state::normalize_email(email)),
            },
        );
    }

    /// Revokes a refresh token (the token endpoint then answers `invalid_grant`) and
    /// invalidates every access token issued for it, as Google does.
    pub fn revoke_refresh_token(&self, refresh_token: &str) {
        self.lock().revoke_refresh_token(refresh_token);
    }

    /// Adds an access token valid for `ttl`, not tied to any user (owner of every calendar).
    pub fn add_access_token(&self, token: &str, ttl: Duration) {
        self.lock()
            .add_access_token(token, ttl, Principal::Unrestricted, None);
    }

    /// Expires every access token issued or added so far (next API call: 401 `authError`).
    pub fn expire_access_tokens(&self) {
        self.lock().expire_access_tokens();
    }

    /// Lifetime of access tokens issued by `/token` from now on (default 3600 s).
    pub fn set_token_lifetime(&self, ttl: Duration) {
        self.lock().token_lifetime = ttl;
    }

    /// All events of a calendar, cancelled ones included, sorted by id (empty if unknown).
    pub fn events(&self, calendar_id: &str) -> Vec<Value> {
        self.lock()
            .calendars
            .get(calendar_id)
            .map(|c| c.events.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Events whose status is not `cancelled`, sorted by id (empty if unknown).
    pub fn live_events(&self, calendar_id: &str) -> Vec<Value> {
        self.lock()
            .calendars
            .get(calendar_id)
            .map(|c| {
                c.events
                    .values()
                    .filter(|e| e.get("status").and_then(Value::as_str) != Some("cancelled"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One event (cancelled included), if it exists.
    pub fn event(&self, calendar_id: &str, event_id: &str) -> Option<Value> {
        self.lock()
            .calendars
            .get(calendar_id)
            .and_then(|c| c.events.get(event_id).cloned())
    }

    /// Simulates the user creating an event in Google's UI (not logged); returns its id.
    ///
    /// # Panics
    /// If the calendar does not exist or the event is invalid (same rules as events.insert).
    pub fn user_insert_event(&self, calendar_id: &str, event: Value) -> String {
        match self.try_user_insert_event(calendar_id, event) {
            Ok(event) => event
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Err(error) => panic!("user_insert_event({calendar_id}): {error}"),
        }
    }

    /// Fallible [`user_insert_event`](Self::user_insert_event); returns the stored event.
    pub fn try_user_insert_event(&self, calendar_id: &str, event: Value) -> Result<Value, String> {
        events::insert(&mut self.lock(), calendar_id, &Principal::default(), event)
            .map_err(|e| format!("{} {}: {}", e.status, e.reason, e.message))
    }

    /// Simulates a manual edit in Google's UI: shallow-merges `patch` into the event
    /// (`null` removes a field), bumps sequence/updated/etag. Not logged as an API call.
    ///
    /// # Panics
    /// If the calendar or event does not exist or the result is not a valid event
    /// (use [`try_user_edit_event`](Self::try_user_edit_event) to get an error instead).
    pub fn user_edit_event(&self, calendar_id: &str, event_id: &str, patch: Value) {
        if let Err(error) = self.try_user_edit_event(calendar_id, event_id, patch) {
            panic!("user_edit_event({calendar_id}, {event_id}): {error}");
        }
    }

    /// Fallible [`user_edit_event`](Self::user_edit_event); returns the edited event.
    pub fn try_user_edit_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        patch: Value,
    ) -> Result<Value, String> {
        events::patch(
            &mut self.lock(),
            calendar_id,
            event_id,
            &Principal::default(),
            patch,
        )
        .map_err(|e| format!("{} {}: {}", e.status, e.reason, e.message))
    }

    /// Simulates the user deleting the event in Google's UI: status becomes `cancelled`
    /// (the event and its id stay). Not logged. Already cancelled: no-op.
    ///
    /// # Panics
    /// If the calendar or event does not exist.
    pub fn user_delete_event(&self, calendar_id: &str, event_id: &str) {
        if let Err(error) = self.try_user_delete_event(calendar_id, event_id) {
            panic!("user_delete_event({calendar_id}, {event_id}): {error}");
        }
    }

    /// Fallible [`user_delete_event`](Self::user_delete_event).
    pub fn try_user_delete_event(&self, calendar_id: &str, event_id: &str) -> Result<(), String> {
        match events::delete(
            &mut self.lock(),
            calendar_id,
            event_id,
            &Principal::default(),
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.status == 410 => Ok(()),
            Err(e) => Err(format!("{} {}: {}", e.status, e.reason, e.message)),
        }
    }

    /// Adds a fault rule (checked in insertion order, see [`FaultRule`]).
    pub fn add_fault(&self, rule: FaultRule) {
        self.lock().faults.add(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The active fault rules (`times` shows what is left).
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.rules()
    }

    /// Every recorded API call, oldest first (faulted and failed calls included).
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Number of recorded event write calls (insert/update/patch/delete), whatever their status.
    pub fn write_calls(&self) -> usize {
        self.lock().calls.iter().filter(|c| c.is_write()).count()
    }

    /// Number of recorded calls of one method (e.g. `"events.insert"`, `"token"`).
    pub fn count_calls(&self, method: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Clears the call log.
    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// The largest number of logged calls (any method, any outcome, token endpoint included)
    /// that arrived within any sliding window of length `window`.
    pub fn max_calls_in_window(&self, window: Duration) -> usize {
        self.max_calls_in_window_where(window, |_| true)
    }

    /// Like [`max_calls_in_window`](Self::max_calls_in_window), counting only the calls
    /// `filter` keeps (e.g. `|c| c.method != "token"`, or one principal's calls).
    pub fn max_calls_in_window_where(
        &self,
        window: Duration,
        filter: impl Fn(&Call) -> bool,
    ) -> usize {
        quota::max_in_window(self.lock().calls.iter().filter(|c| filter(c)), window)
    }
}
