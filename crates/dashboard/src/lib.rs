//! calsync jobs dashboard: server-rendered pages (no JavaScript needed) to inspect jobs,
//! retry or discard them, follow nightly runs, and see every user's sync state.
//!
//! Closed by default (token login, admin and read-only roles), revocable server-side
//! sessions, throttled logins, CSRF-checked POSTs, security headers on every response,
//! never renders a secret. Pages are maud templates (escaping by construction); all SQL
//! lives in `calsync_domain`. Actions go through `calsync_domain::queue`.

pub mod auth;
mod client;
mod error;
mod input;
mod pages;
mod preview;
mod security;
mod throttle;

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use sqlx::PgPool;

pub use client::{TrustedProxy, TrustedProxyError};
pub use error::PageError;
pub use preview::{CheckThrottleConfig, PreviewError, SyncPreview};

/// Dashboard settings (a plain struct; the worker builds it from CLI/env).
#[derive(Clone, Default)]
pub struct DashboardConfig {
    /// Token that logs in as admin.
    pub admin_token: Option<String>,
    /// Token that logs in read-only.
    pub readonly_token: Option<String>,
    /// Key for session fingerprints and CSRF tokens; random per process when `None`
    /// (sessions then end when the process restarts).
    pub session_secret: Option<String>,
    /// Rows per page (default 50).
    pub page_size: i64,
    /// Mark cookies `Secure` (behind HTTPS).
    pub secure_cookies: bool,
    /// Reverse proxies whose `X-Forwarded-For` names the client (empty: the TCP peer
    /// is the client, and `X-Forwarded-For` is ignored).
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Failed-login limits.
    pub login_throttle: LoginThrottleConfig,
    /// What "Check against Google" runs (`None`: the check is not available here).
    pub sync_preview: Option<Arc<dyn SyncPreview>>,
    /// Limits on "Check against Google".
    pub check_throttle: CheckThrottleConfig,
}

/// Limits on failed logins (form logins and bearer tokens). Token buckets: a bucket
/// holds `burst` failures and gets one back every `period`; nothing is ever locked for
/// longer than it takes the bucket to refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottleConfig {
    /// Failures one client address (IPv4 address, IPv6 /64) may make at once.
    pub per_client_burst: u32,
    /// One more failure per client per this period.
    pub per_client_period: Duration,
    /// Failures all clients together may make at once (clients within their own limit).
    pub global_burst: u32,
    /// One more failure overall per this period.
    pub global_period: Duration,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        LoginThrottleConfig {
            per_client_burst: 5,
            per_client_period: Duration::from_secs(12),
            global_burst: 100,
            global_period: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "set" } else { "unset" };
        f.debug_struct("DashboardConfig")
            .field("admin_token", &set(&self.admin_token))
            .field("readonly_token", &set(&self.readonly_token))
            .field("session_secret", &set(&self.session_secret))
            .field("page_size", &self.page_size)
            .field("secure_cookies", &self.secure_cookies)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("login_throttle", &self.login_throttle)
            .field(
                "sync_preview",
                &if self.sync_preview.is_some() {
                    "set"
                } else {
                    "unset"
                },
            )
            .field("check_throttle", &self.check_throttle)
            .finish()
    }
}

/// Dashboard errors.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "the dashboard is closed by default: set CALSYNC_DASHBOARD_ADMIN_TOKEN (and optionally CALSYNC_DASHBOARD_READONLY_TOKEN) to open it"
    )]
    NoCredentials,
    #[error("dashboard tokens must be at least 12 characters long")]
    WeakToken,
    #[error("the admin and read-only dashboard tokens must differ")]
    SameTokens,
    #[error("dashboard login throttle: bursts and periods must be positive")]
    BadThrottle,
    #[error("dashboard check throttle: the burst and period must be positive")]
    BadCheckThrottle,
    #[error("could not serve the dashboard on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Shared state of the handlers.
pub(crate) struct AppState {
    pub pool: PgPool,
    pub keys: auth::Keys,
    pub page_size: i64,
    pub secure_cookies: bool,
    pub trusted_proxies: Vec<TrustedProxy>,
    pub throttle: throttle::LoginThrottle,
    pub preview: Option<Arc<dyn SyncPreview>>,
    pub checks: preview::CheckThrottle,
}

pub(crate) type SharedState = Arc<AppState>;

/// The dashboard's routes. Serve them with [`serve_router`] (or with
/// `into_make_service_with_connect_info::<SocketAddr>()`): without the peer address
/// every client shares one login-throttle bucket.
pub fn router(pool: PgPool, config: DashboardConfig) -> Result<Router, DashboardError> {
    let admin = config.admin_token.filter(|t| !t.is_empty());
    let readonly = config.readonly_token.filter(|t| !t.is_empty());
    if admin.is_none() && readonly.is_none() {
        return Err(DashboardError::NoCredentials);
    }
    if [&admin, &readonly]
        .into_iter()
        .flatten()
        .any(|t| t.chars().count() < 12)
    {
        return Err(DashboardError::WeakToken);
    }
    if admin.is_some() && admin == readonly {
        return Err(DashboardError::SameTokens);
    }
    let secret = match config.session_secret.filter(|s| !s.is_empty()) {
        Some(s) => s.into_bytes(),
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    let throttle =
        throttle::LoginThrottle::new(config.login_throttle).ok_or(DashboardError::BadThrottle)?;
    let state = Arc::new(AppState {
        pool,
        keys: auth::Keys::new(&secret, admin, readonly),
        page_size: if config.page_size > 0 {
            config.page_size.min(500)
        } else {
            50
        },
        secure_cookies: config.secure_cookies,
        trusted_proxies: config.trusted_proxies,
        throttle,
        preview: config.sync_preview,
        checks: preview::CheckThrottle::new(config.check_throttle)
            .ok_or(DashboardError::BadCheckThrottle)?,
    });
    Ok(Router::new()
        .route("/", get(pages::overview::page))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/jobs", get(pages::jobs::list))
        .route("/jobs/retry", post(pages::jobs::retry_many))
        .route("/jobs/discard", post(pages::jobs::discard_many))
        .route("/jobs/{id}", get(pages::jobs::detail))
        .route("/jobs/{id}/retry", post(pages::jobs::retry_one))
        .route("/jobs/{id}/discard", post(pages::jobs::discard_one))
        .route("/runs", get(pages::runs::list))
        .route("/runs/now", post(pages::runs::run_now))
        .route("/runs/{id}", get(pages::runs::detail))
        .route("/users", get(pages::users::list))
        .route("/users/{id}", get(pages::users::detail))
        .route("/users/{id}/sync", post(pages::users::sync_now))
        .route("/users/{id}/check", post(pages::check::check))
        .route("/audit", get(pages::audit::list))
        .route("/static/dashboard.css", get(pages::layout::stylesheet))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(axum::middleware::map_response(security::headers))
        .with_state(state))
}

/// Serve the dashboard on `listen` until `shutdown` resolves.
pub async fn serve(
    pool: PgPool,
    config: DashboardConfig,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    serve_router(router(pool, config)?, listen, shutdown).await
}

/// Serve an already built [`router`] on `listen` until `shutdown` resolves (lets callers
/// fail on bad configuration before they bind or announce anything). Handlers see the
/// peer address (login throttling is per client).
pub async fn serve_router(
    app: Router,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DashboardError::Serve {
            addr: listen,
            source,
        })?;
    serve_listener(app, listener, shutdown).await
}

/// Serve an already built [`router`] on a bound listener until `shutdown` resolves.
pub async fn serve_listener(
    app: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Serve {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    tracing::info!(%addr, "dashboard listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| DashboardError::Serve { addr, source })
}
