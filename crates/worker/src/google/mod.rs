//! Google Calendar, one implementation of the provider seam ([`crate::backend`]):
//! google-calendar3 over hyper-rustls (ring).
//!
//! * [`client`]: the shared HTTP client, timeouts, and the throttle every call passes.
//! * [`limiter`]: the cluster-wide quota (per project and per student) every replica
//!   draws permits from, in batches, through Postgres.
//! * [`auth`]: where access tokens come from ([`TokenSource`]; today per-user OAuth
//!   refresh tokens cached in `google_credentials`).
//! * [`session`]: one user's calls (refresh once on 401, call accounting, metrics).
//! * [`mapping`]: neutral types ↔ google-calendar3's.
//! * [`error`]: Google's answers classified, and mapped to the neutral error classes.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use calsync_domain::credentials::Secret;
use sqlx::PgPool;

pub mod auth;
mod client;
pub mod error;
pub mod limiter;
mod mapping;
pub mod service_account;
mod session;

pub use auth::{TokenSource, UserRefreshTokens};
pub use client::GoogleClient;
pub use error::GoogleError;
pub use limiter::QuotaLimits;
pub use service_account::{ServiceAccountKey, ServiceAccountTokens};
pub use session::GoogleSession;

use crate::backend::{Account, BackendError, CalendarBackend, CalendarSession};

/// Google API settings.
#[derive(Clone)]
pub struct GoogleConfig {
    pub api_base_url: String,
    pub api_root_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Google's quota, for all replicas together.
    pub quota: QuotaLimits,
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
            .field("quota", &self.quota)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The Google API method names used in logs and metrics.
pub mod method {
    pub const CALENDARS_GET: &str = "calendars.get";
    pub const CALENDARS_INSERT: &str = "calendars.insert";
    pub const CALENDARS_DELETE: &str = "calendars.delete";
    pub const ACL_INSERT: &str = "acl.insert";
    pub const CALENDAR_LIST_LIST: &str = "calendarList.list";
    pub const EVENTS_LIST: &str = "events.list";
    pub const EVENTS_INSERT: &str = "events.insert";
    pub const EVENTS_UPDATE: &str = "events.update";
    pub const EVENTS_DELETE: &str = "events.delete";
    pub const TOKEN: &str = "token";
}

/// Google Calendar as a [`CalendarBackend`]: one [`GoogleClient`] and one
/// [`TokenSource`] shared by every session of the process.
#[derive(Clone)]
pub struct GoogleBackend {
    client: GoogleClient,
    tokens: Arc<dyn TokenSource>,
}

impl fmt::Debug for GoogleBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleBackend")
            .field("client", &self.client)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl GoogleBackend {
    /// Per-user OAuth refresh tokens from `google_credentials` in `pool`, with no
    /// credentials keys (legacy plain storage; see [`GoogleBackend::oauth`]). Fails on
    /// unusable URLs.
    pub fn new(config: GoogleConfig, pool: PgPool) -> Result<GoogleBackend, GoogleError> {
        GoogleBackend::oauth(config, pool, crate::vault::Vault::default())
    }

    /// Per-user OAuth, credentials opened and re-encrypted with `vault`.
    pub fn oauth(
        config: GoogleConfig,
        pool: PgPool,
        vault: crate::vault::Vault,
    ) -> Result<GoogleBackend, GoogleError> {
        let client = GoogleClient::new(config, pool.clone())?;
        let tokens = Arc::new(UserRefreshTokens::new(client.clone(), pool, vault));
        Ok(GoogleBackend::with_token_source(client, tokens))
    }

    /// A service account's tokens (`delegate`: acting for each student with domain-wide
    /// delegation); every call carries `quotaUser`.
    pub fn service_account(
        config: GoogleConfig,
        pool: PgPool,
        key: ServiceAccountKey,
        delegate: bool,
    ) -> Result<GoogleBackend, GoogleError> {
        let client = GoogleClient::new(config, pool)?;
        let tokens = ServiceAccountTokens::new(client.clone(), key, delegate).map_err(|e| {
            GoogleError::OAuthClient {
                detail: e.to_string(),
            }
        })?;
        Ok(GoogleBackend::with_token_source(client, Arc::new(tokens)))
    }

    /// Any other way of obtaining access tokens (e.g. a service account).
    pub fn with_token_source(client: GoogleClient, tokens: Arc<dyn TokenSource>) -> GoogleBackend {
        GoogleBackend { client, tokens }
    }

    /// The shared HTTP client.
    pub fn client(&self) -> &GoogleClient {
        &self.client
    }

    /// A session acting for `account`, with Google's own error type.
    pub async fn open(&self, account: &Account) -> Result<GoogleSession, GoogleError> {
        GoogleSession::open(self.client.clone(), self.tokens.clone(), account.clone()).await
    }
}

#[async_trait]
impl CalendarBackend for GoogleBackend {
    async fn session(&self, account: &Account) -> Result<Box<dyn CalendarSession>, BackendError> {
        Ok(Box::new(self.open(account).await?))
    }
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

    #[tokio::test]
    async fn debug_never_shows_the_client_secret() {
        let cfg = GoogleConfig {
            api_base_url: "http://x/".into(),
            api_root_url: "http://x/".into(),
            token_url: "http://x/token".into(),
            client_id: "id".into(),
            client_secret: Secret::new("very-secret"),
            quota: QuotaLimits::GOOGLE,
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("very-secret"));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let client = GoogleClient::new(cfg, pool).unwrap();
        assert!(!format!("{client:?}").contains("very-secret"));
    }
}
