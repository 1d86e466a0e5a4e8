//! calsync domain: the database contract (schema, change tracking, queue rules) and the
//! pure calendar model. This crate does no HTTP and never talks to Google.
//!
//! * [`users`]: users, their sync flags and the compare-and-clear that ends a sync.
//! * [`schedule`]: a user's enrollments → courses → meeting times → rooms.
//! * [`events`]: the pure mapping from a schedule to the Google Calendar events it must show.
//! * [`credentials`]: per-user Google OAuth credentials.
//! * [`queue`]: enqueueing `SyncUserJob`s, the nightly fan-out, retry/discard of jobs.
//! * [`jobs`], [`user_list`], [`audit`]: the operators' read side (job list and detail,
//!   user list, audit log) the dashboard renders.
//! * [`attempts`]: every job attempt as it happened (recorded by a trigger), error search.
//! * [`job_stats`]: queue health and throughput per minute / hour from an incremental
//!   roll-up, cheap at any table size.
//! * [`dashboard_sessions`]: revocable server-side dashboard sessions.

pub mod attempts;
pub mod audit;
pub mod credentials;
pub mod dashboard_sessions;
pub mod error;
pub mod events;
pub mod job_stats;
pub mod jobs;
pub mod queue;
pub mod schedule;
pub mod user_list;
pub mod users;

pub use error::DomainError;

use sqlx::PgPool;

/// calsync's own migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Bring a database up to date: apalis-postgres' queue schema first (calsync's queue
/// rules attach to its tables), then calsync's migrations. Safe to run repeatedly and
/// from several processes at once (both migrators take an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DomainError> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| DomainError::Migrate(format!("apalis-postgres setup failed: {e}")))?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| DomainError::Migrate(format!("calsync migrations failed: {e}")))?;
    Ok(())
}
