//! calsync jobs dashboard: server-rendered pages (no JavaScript needed) to inspect jobs,
//! retry or discard them, follow nightly runs, and see every user's sync state.
//!
//! Closed by default (token login, admin and read-only roles), CSRF-checked POSTs,
//! never renders a secret. Actions go through `calsync_domain::queue`, one transaction
//! and one audit row each.

pub mod auth;
mod html;
mod pages;

use std::{fmt, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    routing::{get, post},
};
use sqlx::PgPool;

/// Dashboard settings.
#[derive(Clone, Default)]
pub struct DashboardConfig {
    /// Token that logs in as admin.
    pub admin_token: Option<String>,
    /// Token that logs in read-only.
    pub readonly_token: Option<String>,
    /// Key for session cookies; random per process when `None`.
    pub session_secret: Option<String>,
    /// Rows per page (default 50).
    pub page_size: i64,
    /// Mark cookies `Secure` (behind HTTPS).
    pub secure_cookies: bool,
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
    #[error("could not serve the dashboard on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub pool: PgPool,
    pub keys: auth::Keys,
    pub page_size: i64,
    pub secure_cookies: bool,
}

/// The dashboard's routes.
pub fn router(pool: PgPool, config: DashboardConfig) -> Result<Router, DashboardError> {
    let admin = config.admin_token.filter(|t| !t.is_empty());
    let readonly = config.readonly_token.filter(|t| !t.is_empty());
    if admin.is_none() && readonly.is_none() {
        return Err(DashboardError::NoCredentials);
    }
    if [&admin, &readonly]
        .into_iter()
        .flatten()
        .any(|t| t.len() < 12)
    {
        return Err(DashboardError::WeakToken);
    }
    let secret = match config.session_secret.filter(|s| !s.is_empty()) {
        Some(s) => s.into_bytes(),
        None => (0..4)
            .flat_map(|_| rand::random::<u64>().to_le_bytes())
            .collect(),
    };
    let state = Arc::new(AppState {
        pool,
        keys: auth::Keys::new(secret, admin, readonly),
        page_size: if config.page_size > 0 {
            config.page_size.min(500)
        } else {
            50
        },
        secure_cookies: config.secure_cookies,
    });
    Ok(Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/retry", post(pages::retry_many))
        .route("/jobs/discard", post(pages::discard_many))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/retry", post(pages::retry_one))
        .route("/jobs/{id}/discard", post(pages::discard_one))
        .route("/runs", get(pages::runs))
        .route("/runs/now", post(pages::run_now))
        .route("/runs/{id}", get(pages::run))
        .route("/users", get(pages::users))
        .route("/users/{id}", get(pages::user))
        .route("/users/{id}/sync", post(pages::sync_user))
        .route("/audit", get(pages::audit))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(pages::not_found)
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
/// fail on bad configuration before they bind or announce anything).
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
    let addr = listener.local_addr().unwrap_or(listen);
    tracing::info!(%addr, "dashboard listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| DashboardError::Serve { addr, source })
}
