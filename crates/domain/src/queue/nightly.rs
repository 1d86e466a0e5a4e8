//! The nightly fan-out pass and its run record: one transaction per tick (run row, fold
//! of pending flags and run progress, one INSERT … SELECT of every due user's job, audit
//! row), and the runs' counters as readers see them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgExecutor, PgPool};

use super::{SYNC_QUEUE, audit};
use crate::DomainError;

/// The apalis `priority` of the jobs the nightly pass enqueues (apalis fetches higher
/// priorities first).
pub const NIGHTLY_PRIORITY: i32 = crate::priority::PriorityClass::Nightly.priority();

/// A nightly (or manual) fan-out pass.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NightlyRun {
    pub id: i64,
    pub scheduled_for: DateTime<Utc>,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub enqueue_finished_at: Option<DateTime<Utc>>,
    pub users_due: i32,
    pub enqueued: i32,
    pub already_queued: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub finished_at: Option<DateTime<Utc>>,
    pub enqueued_by: String,
}

/// How the pass was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTrigger {
    /// The cron tick.
    Cron,
    /// `calsync nightly --now`, the dashboard's "run now".
    Manual,
}

impl RunTrigger {
    fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Cron => "cron",
            RunTrigger::Manual => "manual",
        }
    }
}

/// Run the fan-out for the tick `scheduled_for`: record the run and enqueue one
/// `SyncUserJob` per due user without an active job, in one transaction and one
/// set-based INSERT … SELECT.
///
/// Returns `None` when a run for this tick already exists: every replica's cron fires,
/// the first one to commit the run row does the work. The pass is audited as
/// `nightly_pass` by `enqueued_by` in the same transaction (only the winning replica's
/// row commits).
pub async fn run_nightly_pass(
    pool: &PgPool,
    scheduled_for: DateTime<Utc>,
    trigger: RunTrigger,
    enqueued_by: &str,
) -> Result<Option<NightlyRun>, DomainError> {
    let mut tx = pool.begin().await?;
    let run_id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO calsync.nightly_runs (scheduled_for, trigger, enqueued_by) VALUES ($1, $2, $3) \
         ON CONFLICT (scheduled_for) DO NOTHING RETURNING id",
    )
    .bind(scheduled_for)
    .bind(trigger.as_str())
    .bind(enqueued_by)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(run_id) = run_id else {
        tx.rollback().await?;
        return Ok(None);
    };
    // The fan-out never needs JIT: a statement this simple only pays for compiling.
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    // Changes the tracking triggers logged become flags now: the due users below are
    // every student flagged by a change committed before this pass.
    sqlx::query("SELECT calsync.apply_pending_flags()")
        .execute(&mut *tx)
        .await?;
    // Run progress of earlier runs goes into their rows now, so their counters stay
    // cheap to read.
    sqlx::query("SELECT calsync.fold_nightly_run_progress()")
        .execute(&mut *tx)
        .await?;
    // One statement for every due user. Per row only plain SQL runs (no PL/pgSQL, so
    // the queue trigger's WHEN lets the rows through, see migration …0300):
    // * the id: the run's ULID time prefix (one apalis.generate_ulid() per statement,
    //   between the run's started_at and enqueue_finished_at, so a run's jobs are an id
    //   range) and 16 hex digits — valid ULID characters — of a random base plus the
    //   user id: unique within the run, random across runs, ascending with the user;
    // * run_at = clock_timestamp() (just after the transaction's now()) keeps apalis'
    //   per-row NOTIFY quiet (100,000 notifications would flood every listener); one
    //   NOTIFY below wakes the workers once for the whole batch;
    // * the settings are read once (a scalar subquery, not a join);
    // * enqueue_finished_at is the last insert's clock (a SET expression's clock would be
    //   read before the inserts run), so the run's ids lie within its start and it.
    let run = sqlx::query_as::<_, NightlyRun>(AssertSqlSafe(format!(
        "WITH due AS ( \
             SELECT id FROM users WHERE {due} \
         ), p AS ( \
             SELECT left(apalis.generate_ulid(), 10) AS prefix, \
                    floor(random() * 4611686018427387904)::bigint AS base, \
                    (SELECT default_max_attempts FROM calsync.queue_settings) AS max_attempts \
         ), ins AS ( \
             INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key) \
             SELECT p.prefix || lpad(translate(to_hex(p.base + due.id), 'abcdef', 'ABCDEF'), 16, '0'), '{queue}', \
                    convert_to(jsonb_build_object('user_id', due.id, 'reason', 'nightly', 'run_id', $1::bigint)::text, 'UTF8'), \
                    'Pending', 0, p.max_attempts, clock_timestamp(), $2, calsync.active_job_key(due.id) \
             FROM due CROSS JOIN p \
             ON CONFLICT (job_type, idempotency_key) DO NOTHING \
             RETURNING clock_timestamp() AS at \
         ), counts AS ( \
             SELECT (SELECT count(*) FROM due) AS due_n, i.n AS ins_n, i.last_at \
             FROM (SELECT count(*) AS n, max(at) AS last_at FROM ins) i \
         ) \
         UPDATE calsync.nightly_runs r SET \
             users_due = counts.due_n, enqueued = counts.ins_n, already_queued = counts.due_n - counts.ins_n, \
             enqueue_finished_at = coalesce(counts.last_at, clock_timestamp()), \
             finished_at = CASE WHEN counts.ins_n = 0 THEN clock_timestamp() END \
         FROM counts WHERE r.id = $1 \
         RETURNING r.*",
        due = crate::users::DUE_CONDITION,
        queue = SYNC_QUEUE
    )))
    .bind(run_id)
    .bind(NIGHTLY_PRIORITY)
    .fetch_one(&mut *tx)
    .await?;
    // apalis ignores notifications whose id is not a ULID; any real job id wakes the
    // workers, which then keep fetching batches until the queue is drained.
    sqlx::query(
        "SELECT pg_notify('apalis::job::insert', json_build_object('job_type', $1::text, 'id', j.id)::text) \
         FROM (SELECT id FROM apalis.jobs WHERE job_type = $1 AND status = 'Pending' LIMIT 1) j",
    )
    .bind(SYNC_QUEUE)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut *tx,
        enqueued_by,
        "nightly_pass",
        serde_json::json!({
            "run_id": run.id,
            "trigger": trigger.as_str(),
            "scheduled_for": run.scheduled_for,
            "users_due": run.users_due,
            "enqueued": run.enqueued,
            "already_queued": run.already_queued,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(run))
}

/// A nightly run as readers see it: its row plus the progress of its jobs not folded
/// into it yet (`calsync.nightly_run_now`, migration …0300).
const RUN_COLUMNS: &str = "SELECT r.id, r.scheduled_for, r.trigger, r.started_at, r.enqueue_finished_at, \
     r.users_due, r.enqueued, r.already_queued, n.succeeded, n.failed, n.finished_at, r.enqueued_by \
     FROM calsync.nightly_runs r CROSS JOIN LATERAL calsync.nightly_run_now(r) n";

/// Fold the progress rows of nightly runs' jobs into the runs' counters (one UPDATE per
/// run; readers are exact either way, this keeps them cheap). Returns how many rows
/// were folded.
pub async fn fold_nightly_run_progress(db: impl PgExecutor<'_>) -> Result<i64, DomainError> {
    Ok(
        sqlx::query_scalar("SELECT calsync.fold_nightly_run_progress()")
            .fetch_one(db)
            .await?,
    )
}

/// Load one nightly run.
pub async fn nightly_run(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<NightlyRun>, DomainError> {
    Ok(
        sqlx::query_as(AssertSqlSafe(format!("{RUN_COLUMNS} WHERE r.id = $1")))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// The newest nightly runs, newest first.
pub async fn recent_nightly_runs(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<NightlyRun>, DomainError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "{RUN_COLUMNS} ORDER BY r.scheduled_for DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(db)
    .await?)
}
