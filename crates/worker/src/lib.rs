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

pub mod auth_status;
pub mod backend;
#[cfg(feature = "dev-tools")]
pub mod bench;
pub mod cleanup;
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
pub mod preferences_api;
pub mod preferences_cli;
pub mod provision;
pub mod rotation;
pub mod runtime;
pub mod status;
pub mod sync;
pub mod telemetry;
pub mod vault;

pub use database::SetupError;

use sqlx::PgPool;

/// Build the sync engine and its Google client from typed settings. The one place
/// that constructs them (the CLI, the demo and the benchmarks all come here).
pub fn build_engine(
    pool: &PgPool,
    settings: &config::SyncSettings,
) -> Result<sync::SyncEngine, SetupError> {
    let g = &settings.google;
    let google_config = google::GoogleConfig {
        api_base_url: g.api_base_url.clone(),
        api_root_url: g.api_root_url.clone(),
        token_url: g.token_url.clone(),
        client_id: g.client_id.clone(),
        client_secret: g.client_secret.clone(),
        quota: g.quota,
        request_timeout: g.request_timeout,
    };
    let google = |e: google::GoogleError| SetupError::Google(e.to_string());
    let engine = match &settings.auth {
        config::GoogleAuth::Oauth { vault } => {
            let backend = google::GoogleBackend::oauth(google_config, pool.clone(), vault.clone())
                .map_err(google)?;
            sync::SyncEngine::new(
                pool.clone(),
                std::sync::Arc::new(backend),
                settings.school_time_zone,
            )
        }
        config::GoogleAuth::ServiceAccount {
            key,
            delegate,
            provisioning,
        } => {
            let backend = google::GoogleBackend::service_account(
                google_config,
                pool.clone(),
                key.clone(),
                *delegate,
            )
            .map_err(google)?;
            let provisioner = provision::Provisioner::new(
                pool.clone(),
                settings.auth.calendar_mode(),
                key.client_email.clone(),
                provisioning.clone(),
            );
            sync::SyncEngine::new(
                pool.clone(),
                std::sync::Arc::new(backend),
                settings.school_time_zone,
            )
            .with_provisioner(provisioner)
        }
    };
    Ok(engine)
}

/// The service account whose calendar list cleanup sweeps for stray calendars
/// (service-account mode only: with delegation calendars live in students' accounts).
pub fn sweep_as(settings: &config::SyncSettings) -> Option<String> {
    match &settings.auth {
        config::GoogleAuth::ServiceAccount {
            key,
            delegate: false,
            ..
        } => Some(key.client_email.clone()),
        _ => None,
    }
}

/// Tell the database which calendar mode this process runs in (SQL's due condition and
/// `calsync.enqueue_sync` depend on it), and, in per-user OAuth mode, log what its keys
/// cannot open or protect ([`auth_status::log_oauth_findings`]: no keys, tokens under a
/// key it lacks, a missing or old sealing key, plain rows left).
pub async fn announce_calendar_mode(
    pool: &PgPool,
    settings: &config::SyncSettings,
    actor: &str,
) -> Result<(), calsync_domain::DomainError> {
    let mode = settings.auth.calendar_mode();
    let previous = calsync_domain::settings::record_calendar_mode(pool, mode, actor).await?;
    if previous != mode {
        tracing::warn!(
            from = previous.as_str(),
            to = mode.as_str(),
            "calendar mode changed; users due and enqueue rules follow the new mode"
        );
    }
    if let config::GoogleAuth::Oauth { vault } = &settings.auth {
        auth_status::log_oauth_findings(pool, vault).await;
    }
    Ok(())
}
