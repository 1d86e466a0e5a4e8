//! calsync domain: the database contract (schema, change tracking, queue rules) and the
//! pure calendar model. This crate does no HTTP and never talks to Google.
//!
//! * [`users`]: users, their sync flags and the compare-and-clear that ends a sync.
//! * [`schedule`]: a user's enrollments → courses → meeting times → rooms.
//! * [`events`]: the pure mapping from a schedule to the Google Calendar events it must show.
//! * [`academic`]: the academic calendar in that mapping (cancelled classes, final exams,
//!   published holidays and breaks).
//! * [`preferences`]: students' calendar preferences (templates, colors, reminders,
//!   visibility, transparency): model, per-field resolution, validation, SQL.
//! * [`templates`]: the sandboxed template engine of preferences (minijinja).
//! * [`render`]: preferences applied to the planned events.
//! * [`tracking`]: the change-tracking declaration (`calsync.tracked_columns`).
//! * [`credentials`]: per-user Google OAuth credentials, stored as sealed or encrypted
//!   envelopes.
//! * [`settings`]: the deployment's calendar mode and installation id.
//! * [`owned_calendars`]: calendars calsync provisions (service-account modes), and
//!   [`cleanup`]: the queue of calendars to clean up.
//! * [`queue`]: enqueueing `SyncUserJob`s, the nightly fan-out, retry/discard of jobs.
//! * [`priority`]: priority classes of sync jobs (interactive > api > nightly >
//!   maintenance) and the enqueue that raises a waiting job instead of adding one.
//! * [`jobs`], [`user_list`], [`audit`]: the operators' read side (job list and detail,
//!   user list, audit log) the dashboard renders.
//! * [`attempts`]: every job attempt as it happened (recorded by a trigger), error search.
//! * [`job_stats`]: queue health and throughput per minute / hour from an incremental
//!   roll-up, cheap at any table size.
//! * [`dry_run`]: the report of a sync's dry-run (what it would insert, update, restore,
//!   delete, field by field), computed by the worker, shown by the CLI and dashboard.
//! * [`dashboard_sessions`]: revocable server-side dashboard sessions.
//! * [`workers`]: worker liveness (each worker's own heartbeat interval).
//! * [`week`]: a student's week (class blocks, term, no-class days, other events) for
//!   the dashboard's user page, from the event plan a sync would write.
//! * [`quota`]: the cluster-wide Google API quota (buckets of permits workers draw from).

pub mod academic;
pub mod attempts;
pub mod audit;
pub mod cleanup;
pub mod credentials;
pub mod dashboard_sessions;
pub mod dry_run;
pub mod error;
pub mod events;
pub mod job_stats;
pub mod jobs;
pub mod owned_calendars;
pub mod preferences;
pub mod priority;
pub mod queue;
pub mod quota;
pub mod render;
pub mod schedule;
pub mod settings;
pub mod templates;
pub mod tracking;
pub mod user_list;
pub mod users;
pub mod week;
pub mod workers;

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

/// Whether the database holds everything this build needs: apalis' queue schema and
/// every calsync migration of this release. `false` means "run `calsync migrate`".
pub async fn is_migrated(pool: &PgPool) -> Result<bool, DomainError> {
    let table = MIGRATOR.table_name.as_ref();
    let (apalis, ours): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('apalis.jobs') IS NOT NULL, to_regclass($1) IS NOT NULL",
    )
    .bind(table)
    .fetch_one(pool)
    .await?;
    if !apalis || !ours {
        return Ok(false);
    }
    let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success"
    )))
    .fetch_all(pool)
    .await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| applied.contains(&m.version)))
}

/// A round trip to the database (readiness probes).
pub async fn ping(db: impl sqlx::PgExecutor<'_>) -> Result<(), DomainError> {
    sqlx::query("SELECT 1").execute(db).await?;
    Ok(())
}
