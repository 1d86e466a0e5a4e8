//! The Google Calendar client: google-calendar3 over hyper-rustls (ring), OAuth token
//! refresh done by calsync (cached in `google_credentials`), per-user and per-process
//! rate limiting, per-call timeouts, and errors classified as retryable or permanent.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use calsync_domain::credentials::{self, Secret};
use chrono::Utc;
use google_calendar3::{CalendarHub, api::Event};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use sqlx::PgPool;

type Connector = HttpsConnector<HttpConnector>;
type HttpClient = Client<Connector, google_calendar3::common::Body>;
type Hub = CalendarHub<Connector>;

/// Google API settings.
#[derive(Clone)]
pub struct GoogleConfig {
    pub api_base_url: String,
    pub api_root_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Requests per second per user (Google allows ~600/min).
    pub per_user_rps: f64,
    /// Requests per second for this process.
    pub project_rps: f64,
    pub request_timeout: Duration,
}

impl fmt::Debug for GoogleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleConfig")
            .field("api_base_url", &self.api_base_url)
            .field("api_root_url", &self.api_root_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("per_user_rps", &self.per_user_rps)
            .field("project_rps", &self.project_rps)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A failed Google call, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GoogleError {
    /// Try again later: rate limits, 5xx, timeouts, network errors, non-JSON answers.
    #[error("Google {method} failed (retryable): {detail}")]
    Retryable {
        method: &'static str,
        detail: String,
        /// Longer waits Google asks for (daily quota).
        retry_after: Option<Duration>,
        rate_limited: bool,
    },
    /// The refresh token was refused (`invalid_grant`) or revoked: the student must sign in again.
    #[error("Google refused the user's refresh token ({detail}): the student must re-authenticate")]
    NeedsReauth { detail: String },
    /// The course calendar does not exist (deleted by the student).
    #[error("calendar {calendar_id:?} not found in Google (deleted by the student?)")]
    CalendarMissing { calendar_id: String },
    /// Google rejected the request as invalid.
    #[error("Google {method} rejected the request: {detail}")]
    BadRequest {
        method: &'static str,
        detail: String,
    },
    /// Access denied for another reason than rate limits.
    #[error("Google {method} denied access: {detail}")]
    Forbidden {
        method: &'static str,
        detail: String,
    },
    /// The access token was not accepted (refreshed and retried once by the caller).
    #[error("Google {method}: access token not accepted")]
    Unauthorized { method: &'static str },
    /// The OAuth client itself is misconfigured (invalid_client and the like).
    #[error("Google OAuth token endpoint: {detail}")]
    OAuthClient { detail: String },
    /// A database error while handling tokens.
    #[error("database error while handling Google tokens: {0}")]
    Database(String),
}

impl GoogleError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            GoogleError::Retryable { .. }
                | GoogleError::Unauthorized { .. }
                | GoogleError::Database(_)
        )
    }
    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GoogleError::Retryable {
                rate_limited: true, ..
            } => "rate_limited",
            GoogleError::Retryable { .. } => "transient",
            GoogleError::NeedsReauth { .. } => "needs_reauth",
            GoogleError::CalendarMissing { .. } => "calendar_missing",
            GoogleError::BadRequest { .. } => "bad_request",
            GoogleError::Forbidden { .. } => "forbidden",
            GoogleError::Unauthorized { .. } => "unauthorized",
            GoogleError::OAuthClient { .. } => "oauth_client",
            GoogleError::Database(_) => "database",
        }
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Async token-bucket rate limiter (burst = one second's worth).
struct Limiter {
    rate: f64,
    state: Mutex<Bucket>,
}

impl Limiter {
    fn new(rate: f64) -> Limiter {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Limiter {
            rate,
            state: Mutex::new(Bucket {
                tokens: rate.max(1.0),
                last: Instant::now(),
            }),
        }
    }

    /// How long to wait before a token is free (zero: taken).
    fn try_take(&self) -> Duration {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let burst = self.rate.max(1.0);
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - b.tokens) / self.rate)
        }
    }

    async fn acquire(&self) {
        loop {
            let wait = self.try_take();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

struct Inner {
    config: GoogleConfig,
    http: HttpClient,
    project: Limiter,
    users: Mutex<HashMap<i64, Arc<Limiter>>>,
}

/// The process-wide Google client (cheap to clone).
#[derive(Clone)]
pub struct GoogleClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleClient")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// The Google API method names used in logs and metrics.
pub mod method {
    pub const CALENDARS_GET: &str = "calendars.get";
    pub const EVENTS_LIST: &str = "events.list";
    pub const EVENTS_INSERT: &str = "events.insert";
    pub const EVENTS_UPDATE: &str = "events.update";
    pub const EVENTS_DELETE: &str = "events.delete";
    pub const TOKEN: &str = "token";
}

impl GoogleClient {
    /// Build the client. Fails on unusable URLs.
    pub fn new(config: GoogleConfig) -> Result<GoogleClient, GoogleError> {
        for (name, url) in [
            ("api base URL", &config.api_base_url),
            ("api root URL", &config.api_root_url),
        ] {
            if !url.ends_with('/') || url::Url::parse(url).is_err() {
                return Err(GoogleError::OAuthClient {
                    detail: format!("{name} {url:?} must be an absolute URL ending in '/'"),
                });
            }
        }
        if url::Url::parse(&config.token_url).is_err() {
            return Err(GoogleError::OAuthClient {
                detail: format!("token URL {:?} is not a URL", config.token_url),
            });
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(GoogleClient {
            inner: Arc::new(Inner {
                project: Limiter::new(config.project_rps),
                config,
                http,
                users: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GoogleConfig {
        &self.inner.config
    }

    fn user_limiter(&self, user_id: i64) -> Arc<Limiter> {
        let mut users = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() > 10_000 {
            users.clear();
        }
        users
            .entry(user_id)
            .or_insert_with(|| Arc::new(Limiter::new(self.inner.config.per_user_rps)))
            .clone()
    }

    /// Wait for a request slot for this user and for the process.
    pub async fn throttle(&self, user_id: i64) {
        self.user_limiter(user_id).acquire().await;
        self.inner.project.acquire().await;
    }

    /// A usable access token for the user: the cached one if it is valid for another
    /// minute, else a fresh one from the token endpoint (stored for next time).
    pub async fn access_token(
        &self,
        pool: &PgPool,
        user_id: i64,
        force_refresh: bool,
    ) -> Result<Secret, GoogleError> {
        let creds = credentials::get(pool, user_id).await.map_err(|e| match e {
            calsync_domain::DomainError::NoCredentials(_) => GoogleError::NeedsReauth {
                detail: "no Google credentials on file".into(),
            },
            other => GoogleError::Database(other.to_string()),
        })?;
        if creds.revoked {
            return Err(GoogleError::NeedsReauth {
                detail: "refresh token previously refused".into(),
            });
        }
        if !force_refresh
            && let (Some(tok), Some(exp)) = (&creds.access_token, creds.access_token_expires_at)
            && exp > Utc::now() + chrono::Duration::seconds(60)
        {
            return Ok(tok.clone());
        }
        match self.refresh(user_id, &creds.refresh_token).await {
            Ok((token, expires_in)) => {
                let expires_at = Utc::now() + chrono::Duration::seconds(expires_in.max(0));
                credentials::store_access_token(pool, user_id, &token, expires_at)
                    .await
                    .map_err(|e| GoogleError::Database(e.to_string()))?;
                Ok(token)
            }
            Err(e @ GoogleError::NeedsReauth { .. }) => {
                credentials::mark_revoked(pool, user_id)
                    .await
                    .map_err(|e| GoogleError::Database(e.to_string()))?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// POST grant_type=refresh_token to the token endpoint.
    async fn refresh(
        &self,
        user_id: i64,
        refresh_token: &Secret,
    ) -> Result<(Secret, i64), GoogleError> {
        let cfg = &self.inner.config;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token.expose())
            .append_pair("client_id", &cfg.client_id)
            .append_pair("client_secret", cfg.client_secret.expose())
            .finish();
        let req = hyper::Request::post(&cfg.token_url)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| GoogleError::OAuthClient {
                detail: e.to_string(),
            })?;
        self.throttle(user_id).await;
        let started = Instant::now();
        let res = tokio::time::timeout(cfg.request_timeout, async {
            let resp = self
                .inner
                .http
                .request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        })
        .await;
        let (status, bytes) = match res {
            Err(_) => {
                record(method::TOKEN, "network", started);
                return Err(retryable(
                    method::TOKEN,
                    format!("timed out after {:?}", cfg.request_timeout),
                    false,
                ));
            }
            Ok(Err(e)) => {
                record(method::TOKEN, "network", started);
                return Err(retryable(
                    method::TOKEN,
                    format!("network error: {e}"),
                    false,
                ));
            }
            Ok(Ok(v)) => v,
        };
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&status)
            && let Some(tok) = json["access_token"].as_str()
        {
            record(method::TOKEN, "ok", started);
            return Ok((
                Secret::new(tok),
                json["expires_in"].as_i64().unwrap_or(3600),
            ));
        }
        let error = json["error"].as_str().unwrap_or("");
        let description = json["error_description"].as_str().unwrap_or("");
        let detail = format!("HTTP {status} {error} {description}")
            .trim()
            .to_string();
        match (status, error) {
            (_, "invalid_grant") => {
                record(method::TOKEN, "client_error", started);
                Err(GoogleError::NeedsReauth { detail })
            }
            (429, _) => {
                record(method::TOKEN, "rate_limited", started);
                Err(retryable(method::TOKEN, detail, true))
            }
            (s, _) if s >= 500 || json.is_null() => {
                record(method::TOKEN, "server_error", started);
                Err(retryable(method::TOKEN, detail, false))
            }
            _ => {
                record(method::TOKEN, "client_error", started);
                Err(GoogleError::OAuthClient { detail })
            }
        }
    }

    /// A calendar session for one user: the hub with their token, ready for calls.
    pub async fn session(
        &self,
        pool: &PgPool,
        user_id: i64,
        calendar_id: &str,
    ) -> Result<CalendarSession, GoogleError> {
        let token = self.access_token(pool, user_id, false).await?;
        Ok(CalendarSession {
            client: self.clone(),
            pool: pool.clone(),
            user_id,
            calendar_id: calendar_id.to_string(),
            hub: self.hub(&token),
            refreshed: false,
            calls: 0,
        })
    }

    fn hub(&self, token: &Secret) -> Hub {
        let mut hub = CalendarHub::new(self.inner.http.clone(), token.expose().to_string());
        hub.base_url(self.inner.config.api_base_url.clone());
        hub.root_url(self.inner.config.api_root_url.clone());
        hub
    }
}

fn retryable(method: &'static str, detail: String, rate_limited: bool) -> GoogleError {
    GoogleError::Retryable {
        method,
        detail,
        retry_after: None,
        rate_limited,
    }
}

fn record(method: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!("calsync_google_calls_total", "method" => method, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("calsync_google_call_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// Percent-encode a path segment (google-calendar3 pastes ids into paths raw, so a `#`
/// or `/` in an id would otherwise address a different resource).
pub fn encode_path_segment(s: &str) -> String {
    const KEEP: &[u8] = b"-._~@!$&'()*+,;=:";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || KEEP.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a Google answer is classified.
fn classify(
    method: &'static str,
    calendar_id: &str,
    err: google_calendar3::Error,
) -> (GoogleError, &'static str) {
    use google_calendar3::Error as E;
    match err {
        E::BadRequest(json) => {
            let code = json["error"]["code"].as_u64().unwrap_or(0) as u16;
            let reason = json["error"]["errors"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let message = json["error"]["message"].as_str().unwrap_or("").to_string();
            let detail = format!("HTTP {code} {reason}: {message}");
            match (code, reason.as_str()) {
                (401, _) => (GoogleError::Unauthorized { method }, "client_error"),
                (429, _) | (403, "rateLimitExceeded") | (403, "userRateLimitExceeded") => {
                    (retryable(method, detail, true), "rate_limited")
                }
                (403, "quotaExceeded") | (403, "dailyLimitExceeded") => (
                    GoogleError::Retryable {
                        method,
                        detail,
                        retry_after: Some(Duration::from_secs(3600)),
                        rate_limited: true,
                    },
                    "rate_limited",
                ),
                (404, _) if method == method::CALENDARS_GET || method == method::EVENTS_LIST => (
                    GoogleError::CalendarMissing {
                        calendar_id: calendar_id.to_string(),
                    },
                    "client_error",
                ),
                (403, _) => (GoogleError::Forbidden { method, detail }, "client_error"),
                (c, _) if c >= 500 => (retryable(method, detail, false), "server_error"),
                (408, _) => (retryable(method, detail, false), "server_error"),
                _ => (GoogleError::BadRequest { method, detail }, "client_error"),
            }
        }
        E::Failure(resp) => {
            let status = resp.status().as_u16();
            let outcome = if status == 429 {
                "rate_limited"
            } else if status >= 500 {
                "server_error"
            } else {
                "client_error"
            };
            if status == 401 {
                return (GoogleError::Unauthorized { method }, outcome);
            }
            (
                retryable(
                    method,
                    format!("HTTP {status} with a non-JSON body"),
                    status == 429,
                ),
                outcome,
            )
        }
        E::HttpError(e) => (
            retryable(method, format!("network error: {e}"), false),
            "network",
        ),
        E::Io(e) => (
            retryable(method, format!("I/O error: {e}"), false),
            "network",
        ),
        E::JsonDecodeError(body, e) => (
            retryable(
                method,
                format!(
                    "undecodable answer ({e}): {}",
                    body.chars().take(200).collect::<String>()
                ),
                false,
            ),
            "server_error",
        ),
        other => (
            GoogleError::BadRequest {
                method,
                detail: other.to_string(),
            },
            "client_error",
        ),
    }
}

/// One user's calendar, with token refresh on 401 (once) and call accounting.
pub struct CalendarSession {
    client: GoogleClient,
    pool: PgPool,
    user_id: i64,
    calendar_id: String,
    hub: Hub,
    refreshed: bool,
    /// Google API calls made through this session.
    pub calls: u32,
}

/// Whether a delete found the event gone already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted now.
    Now,
    /// Already deleted (410) or unknown (404): nothing to do.
    AlreadyGone,
}

/// Result of an insert.
#[derive(Debug)]
pub enum Inserted {
    /// Created.
    Created,
    /// The id exists already (409 duplicate), e.g. an event the student deleted.
    Duplicate,
}

macro_rules! call {
    ($self:ident, $method:expr, |$hub:ident, $cal:ident| $body:expr) => {{
        loop {
            $self.client.throttle($self.user_id).await;
            $self.calls += 1;
            let started = Instant::now();
            let timeout = $self.client.inner.config.request_timeout;
            let res = {
                let $hub = &$self.hub;
                let $cal = encode_path_segment(&$self.calendar_id);
                tokio::time::timeout(timeout, $body).await
            };
            match res {
                Err(_) => {
                    record($method, "network", started);
                    break Err(retryable(
                        $method,
                        format!("timed out after {timeout:?}"),
                        false,
                    ));
                }
                Ok(Ok(v)) => {
                    record($method, "ok", started);
                    break Ok(v);
                }
                Ok(Err(e)) => {
                    let (err, outcome) = classify($method, &$self.calendar_id, e);
                    record($method, outcome, started);
                    if matches!(err, GoogleError::Unauthorized { .. }) && !$self.refreshed {
                        $self.refreshed = true;
                        let token = $self
                            .client
                            .access_token(&$self.pool, $self.user_id, true)
                            .await?;
                        $self.hub = $self.client.hub(&token);
                        continue;
                    }
                    break Err(err);
                }
            }
        }
    }};
}

impl CalendarSession {
    /// The calendar this session writes to.
    pub fn calendar_id(&self) -> &str {
        &self.calendar_id
    }

    /// calendars.get: fails with CalendarMissing on 404.
    pub async fn check_calendar(&mut self) -> Result<(), GoogleError> {
        call!(self, method::CALENDARS_GET, |hub, cal| hub
            .calendars()
            .get(&cal)
            .doit())?;
        Ok(())
    }

    /// events.list of calsync's events (private property filter), including deleted
    /// ones, all pages.
    pub async fn list_owned_events(
        &mut self,
        owner_filter: &str,
    ) -> Result<Vec<Event>, GoogleError> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let token = page.clone();
            let (_, events) = call!(self, method::EVENTS_LIST, |hub, cal| {
                let mut req = hub
                    .events()
                    .list(&cal)
                    .add_private_extended_property(owner_filter)
                    .show_deleted(true)
                    .max_results(2500);
                if let Some(t) = &token {
                    req = req.page_token(t);
                }
                req.doit()
            })?;
            out.extend(events.items.unwrap_or_default());
            match events.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// events.insert with a client-supplied id.
    pub async fn insert(&mut self, event: Event) -> Result<Inserted, GoogleError> {
        let res = call!(self, method::EVENTS_INSERT, |hub, cal| hub
            .events()
            .insert(event.clone(), &cal)
            .doit());
        match res {
            Ok(_) => Ok(Inserted::Created),
            Err(GoogleError::BadRequest { detail, .. }) if detail.starts_with("HTTP 409") => {
                Ok(Inserted::Duplicate)
            }
            Err(e) => Err(e),
        }
    }

    /// events.update (PUT: replaces the whole event). `Ok(false)` when the event does
    /// not exist (404), so the caller can insert it instead.
    pub async fn update(&mut self, event_id: &str, event: Event) -> Result<bool, GoogleError> {
        let eid = encode_path_segment(event_id);
        match call!(self, method::EVENTS_UPDATE, |hub, cal| hub
            .events()
            .update(event.clone(), &cal, &eid)
            .doit())
        {
            Ok(_) => Ok(true),
            Err(GoogleError::BadRequest { detail, .. }) if detail.starts_with("HTTP 404") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// events.delete; 410 (already deleted) and 404 count as success.
    pub async fn delete(&mut self, event_id: &str) -> Result<Deleted, GoogleError> {
        let eid = encode_path_segment(event_id);
        match call!(self, method::EVENTS_DELETE, |hub, cal| hub
            .events()
            .delete(&cal, &eid)
            .doit())
        {
            Ok(_) => Ok(Deleted::Now),
            Err(GoogleError::BadRequest { detail, .. })
                if detail.starts_with("HTTP 410") || detail.starts_with("HTTP 404") =>
            {
                Ok(Deleted::AlreadyGone)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            encode_path_segment("c_abc@group.calendar.google.com"),
            "c_abc@group.calendar.google.com"
        );
        assert_eq!(
            encode_path_segment("en.usa#holiday@x"),
            "en.usa%23holiday@x"
        );
        assert_eq!(encode_path_segment("a/b c?d"), "a%2Fb%20c%3Fd");
    }

    #[test]
    fn limiter_allows_a_burst_then_paces() {
        let l = Limiter::new(4.0);
        for _ in 0..4 {
            assert!(l.try_take().is_zero());
        }
        let wait = l.try_take();
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(260),
            "{wait:?}"
        );
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        let cfg = GoogleConfig {
            api_base_url: "http://x/".into(),
            api_root_url: "http://x/".into(),
            token_url: "http://x/token".into(),
            client_id: "id".into(),
            client_secret: Secret::new("very-secret"),
            per_user_rps: 1.0,
            project_rps: 1.0,
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("very-secret"));
    }
}
