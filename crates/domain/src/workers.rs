//! Worker liveness: each queue worker records its own heartbeat interval, so that
//! whether it is alive never depends on the settings of the replica looking at it.
//!
//! apalis-postgres re-enqueues the jobs of workers it presumes dead using the
//! observer's interval; the trigger `calsync_jobs_00_orphan_guard` (migration
//! `…_worker_liveness.sql`) refuses that while the job's worker has been silent for
//! less than `missed_heartbeats × heartbeat_secs` of its own.

use std::time::Duration;

use sqlx::PgExecutor;

use crate::DomainError;

/// Rows of workers not seen for this long are removed when a worker registers.
const FORGET_AFTER_DAYS: i32 = 7;

/// Record (or update) `worker_id`'s heartbeat interval before it registers with
/// apalis and takes jobs; forget workers long gone.
pub async fn record_liveness(
    db: impl PgExecutor<'_>,
    worker_id: &str,
    heartbeat: Duration,
    missed_heartbeats: u32,
) -> Result<(), DomainError> {
    sqlx::query(
        "WITH gone AS ( \
             DELETE FROM calsync.worker_liveness l \
             WHERE l.registered_at < now() - make_interval(days => $4) \
               AND NOT EXISTS (SELECT 1 FROM apalis.workers w \
                               WHERE w.id = l.worker_id AND w.last_seen >= now() - make_interval(days => $4)) \
         ) \
         INSERT INTO calsync.worker_liveness (worker_id, heartbeat_secs, missed_heartbeats) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (worker_id) DO UPDATE SET heartbeat_secs = EXCLUDED.heartbeat_secs, \
             missed_heartbeats = EXCLUDED.missed_heartbeats, registered_at = now()",
    )
    .bind(worker_id)
    .bind(heartbeat.as_secs_f64().max(0.001))
    .bind(i32::try_from(missed_heartbeats.max(1)).unwrap_or(i32::MAX))
    .bind(FORGET_AFTER_DAYS)
    .execute(db)
    .await?;
    Ok(())
}

/// Whether `worker_id` is alive by its own interval; `None` when it recorded none.
pub async fn is_alive(
    db: impl PgExecutor<'_>,
    worker_id: &str,
) -> Result<Option<bool>, DomainError> {
    Ok(
        sqlx::query_scalar::<_, Option<bool>>("SELECT calsync.worker_alive($1)")
            .bind(worker_id)
            .fetch_one(db)
            .await?,
    )
}
