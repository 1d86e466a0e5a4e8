//! calsync worker: the Google Calendar sync engine, the apalis queue worker, the nightly
//! cron fan-out, the HTTP API (enqueue, health, metrics) and the `calsync` CLI.
//!
//! Only this crate talks to Google ([`google`]); [`sync`] turns a user's schedule into
//! calendar writes; [`job`] adapts it to apalis; [`runtime`] runs workers, cron and HTTP.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod google;
pub mod http;
pub mod job;
pub mod preferences_api;
pub mod preferences_cli;
pub mod runtime;
pub mod sync;
pub mod telemetry;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// Errors of process setup (connecting, configuration).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "DATABASE_URL is not set: export it or pass --database-url (e.g. postgres://user@127.0.0.1:5432/calsync)"
    )]
    NoDatabaseUrl,
    #[error("could not connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error(
        "the database is not migrated (missing calsync/apalis tables): run `calsync migrate` first"
    )]
    NotMigrated,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("invalid Google configuration: {0}")]
    Google(String),
}

/// Connect a pool to `url`.
pub async fn connect(url: Option<&str>, max_connections: u32) -> Result<PgPool, SetupError> {
    let url = url
        .filter(|u| !u.is_empty())
        .ok_or(SetupError::NoDatabaseUrl)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(SetupError::Connect)
}

/// Fail with a clear message when the schema is missing.
pub async fn ensure_migrated(pool: &PgPool) -> Result<(), SetupError> {
    let ok: bool = sqlx::query_scalar(
        "SELECT to_regclass('calsync.queue_settings') IS NOT NULL AND to_regclass('apalis.jobs') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    if ok {
        Ok(())
    } else {
        Err(SetupError::NotMigrated)
    }
}

/// The Google client configuration from CLI/env arguments.
pub fn google_config(args: &cli::GoogleArgs) -> google::GoogleConfig {
    google::GoogleConfig {
        api_base_url: args.google_api_base_url.clone(),
        api_root_url: args.google_api_root_url.clone(),
        token_url: args.google_token_url.clone(),
        client_id: args.google_client_id.clone(),
        client_secret: calsync_domain::credentials::Secret::new(args.google_client_secret.clone()),
        per_user_rps: args.google_per_user_rps,
        project_rps: args.google_project_rps,
        request_timeout: Duration::from_secs(args.google_timeout_secs.max(1)),
    }
}

/// Build the sync engine from CLI/env arguments.
pub fn build_engine(pool: &PgPool, args: &cli::GoogleArgs) -> Result<sync::SyncEngine, SetupError> {
    let client = google::GoogleClient::new(google_config(args))
        .map_err(|e| SetupError::Google(e.to_string()))?;
    Ok(sync::SyncEngine::new(
        pool.clone(),
        client,
        args.school_time_zone,
    ))
}

/// The dashboard configuration from CLI/env arguments.
pub fn dashboard_config(args: &cli::DashboardAuthArgs) -> calsync_dashboard::DashboardConfig {
    calsync_dashboard::DashboardConfig {
        admin_token: args.dashboard_admin_token.clone().filter(|t| !t.is_empty()),
        readonly_token: args
            .dashboard_readonly_token
            .clone()
            .filter(|t| !t.is_empty()),
        session_secret: args
            .dashboard_session_secret
            .clone()
            .filter(|t| !t.is_empty()),
        page_size: 50,
        secure_cookies: args.dashboard_secure_cookies,
        trusted_proxies: args.dashboard_trusted_proxies.clone(),
        ..Default::default()
    }
}
