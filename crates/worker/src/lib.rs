//! calsync worker: the Google Calendar sync engine, the apalis queue worker, the nightly
//! cron fan-out, the HTTP API (enqueue, health, metrics) and the `calsync` CLI.
//!
//! Only this crate talks to Google ([`google`]); [`sync`] turns a user's schedule into
//! calendar writes; [`job`] adapts it to apalis; [`runtime`] runs workers, cron
//! ([`nightly`]) and HTTP. [`cli`] is the command line and its translation into the
//! typed [`config`], which everything else takes; [`commands`] runs a command;
//! [`database`] connects within a process' budget.
//!
//! The developer tools ([`demo`], [`bench`], and the fake Google server they use) are
//! compiled only with the default feature `dev-tools`; production builds leave it out
//! (`cargo build --release --no-default-features -p calsync-worker`).

pub mod backend;
#[cfg(feature = "dev-tools")]
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
#[cfg(feature = "dev-tools")]
pub mod demo;
pub mod failure;
pub mod google;
pub mod http;
pub mod job;
pub mod nightly;
pub mod runtime;
pub mod sync;
pub mod telemetry;

pub use database::SetupError;

use sqlx::PgPool;

/// Build the sync engine and its Google client from typed settings. The one place
/// that constructs them (the CLI, the demo and the benchmarks all come here).
pub fn build_engine(
    pool: &PgPool,
    settings: &config::SyncSettings,
) -> Result<sync::SyncEngine, SetupError> {
    let g = &settings.google;
    let backend = google::GoogleBackend::new(
        google::GoogleConfig {
            api_base_url: g.api_base_url.clone(),
            api_root_url: g.api_root_url.clone(),
            token_url: g.token_url.clone(),
            client_id: g.client_id.clone(),
            client_secret: g.client_secret.clone(),
            quota: g.quota,
            request_timeout: g.request_timeout,
        },
        pool.clone(),
    )
    .map_err(|e| SetupError::Google(e.to_string()))?;
    Ok(sync::SyncEngine::new(
        pool.clone(),
        std::sync::Arc::new(backend),
        settings.school_time_zone,
    ))
}
