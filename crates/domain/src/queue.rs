//! The job queue contract on top of apalis-postgres: `SyncUserJob` payloads, enqueueing
//! (one active job per user), the nightly fan-out pass, and operator actions (retry,
//! discard) shared by the CLI and the dashboard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgExecutor, PgPool, Postgres, QueryBuilder};

use crate::DomainError;

/// The apalis queue (`apalis.jobs.job_type`) of `SyncUserJob`s.
pub const SYNC_QUEUE: &str = "sync-calendar";

/// Payload of a `SyncUserJob`: sync one user's course calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncUserJob {
    pub user_id: i64,
    /// Why the job exists: "nightly", "manual", "api", "http", …
    #[serde(default = "default_reason")]
    pub reason: String,
    /// The nightly run that enqueued it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
}

/// A payload shortened to 200 characters for logs and errors, control characters
/// escaped (a NUL could not even be stored as the job's error).
fn shown(payload: &str) -> String {
    payload
        .chars()
        .take(200)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn default_reason() -> String {
    "api".into()
}

/// A payload that is not a valid `SyncUserJob`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed SyncUserJob payload {payload}: {problem} (expected {{\"user_id\": <positive integer>, \"reason\"?: string, \"run_id\"?: integer}})"
)]
pub struct PayloadError {
    /// The payload, shortened for logs.
    pub payload: String,
    /// What is wrong with it.
    pub problem: String,
}

impl SyncUserJob {
    /// Validate a decoded payload with a clear error for operators.
    pub fn from_payload(value: &serde_json::Value) -> Result<Self, PayloadError> {
        let shown = shown(&value.to_string());
        if !value.is_object() {
            // serde would read `[42]` as `{"user_id": 42}`.
            return Err(PayloadError {
                payload: shown,
                problem: "invalid type: expected a JSON object".into(),
            });
        }
        let job: SyncUserJob = serde_json::from_value(value.clone()).map_err(|e| PayloadError {
            payload: shown.clone(),
            problem: e.to_string(),
        })?;
        job.validate(shown)
    }

    /// Decode and validate a payload as stored (`apalis.jobs.job`). Any bytes at all give
    /// either a job or a clear error: the whole document must be JSON serde_json reads
    /// (numbers in range, nesting within its recursion limit — even in fields calsync
    /// ignores), then of the right shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PayloadError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| PayloadError {
            payload: shown(&String::from_utf8_lossy(bytes)),
            problem: e.to_string(),
        })?;
        SyncUserJob::from_payload(&value)
    }

    fn validate(self, shown: String) -> Result<Self, PayloadError> {
        if self.user_id <= 0 {
            return Err(PayloadError {
                payload: shown,
                problem: format!("user_id must be positive, got {}", self.user_id),
            });
        }
        Ok(self)
    }
}

/// The idempotency key an active sync job of this user holds: the Rust twin of the SQL
/// function `calsync.active_job_key` (a test checks that they agree).
pub fn active_job_key(user_id: i64) -> String {
    format!("sync-user:{user_id}")
}

/// Whether a job with this apalis status and attempt count will never run again (Done,
/// Killed, or Failed with no attempts left): the Rust twin of the SQL function
/// `calsync.job_is_final` (a test checks that they agree).
pub fn job_is_final(status: &str, attempts: i32, max_attempts: i32) -> bool {
    matches!(status, "Done" | "Killed") || (status == "Failed" && attempts >= max_attempts)
}

/// The longest enqueue reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// Check an enqueue reason: at most [`MAX_REASON_CHARS`] characters, no NUL or other
/// control characters (it is shown on the dashboard and in logs).
pub fn validate_reason(reason: &str) -> Result<(), DomainError> {
    let len = reason.chars().count();
    if len > MAX_REASON_CHARS {
        return Err(DomainError::InvalidInput(format!(
            "reason is {len} characters long; at most {MAX_REASON_CHARS} are allowed"
        )));
    }
    if let Some(c) = reason.chars().find(|c| c.is_control()) {
        let name = if c == '\0' { "NUL, " } else { "" };
        return Err(DomainError::InvalidInput(format!(
            "reason must not contain control characters (found {name}U+{:04X})",
            c as u32
        )));
    }
    Ok(())
}

/// Enqueue a sync of one user (or return the id of the job already active for them),
/// audited as `sync_user` by `actor` in the same transaction. Same rules as the SQL
/// API `calsync.enqueue_sync`, which this calls; the reason is validated first
/// ([`validate_reason`]).
pub async fn enqueue_sync(
    pool: &PgPool,
    user_id: i64,
    reason: &str,
    actor: &str,
) -> Result<String, DomainError> {
    validate_reason(reason)?;
    let mut tx = pool.begin().await?;
    let res = sqlx::query_scalar::<_, String>("SELECT calsync.enqueue_sync($1, $2)")
        .bind(user_id)
        .bind(reason)
        .fetch_one(&mut *tx)
        .await;
    let job_id = match res {
        Ok(id) => id,
        Err(e) => {
            let err = DomainError::from(e);
            return match err.sqlstate().as_deref() {
                Some("23503") => Err(DomainError::UnknownUser(user_id)),
                Some("22023") => Err(DomainError::NoCalendar(user_id)),
                _ => Err(err),
            };
        }
    };
    audit(
        &mut *tx,
        actor,
        "sync_user",
        serde_json::json!({"user_id": user_id, "job_id": job_id, "reason": reason}),
    )
    .await?;
    tx.commit().await?;
    Ok(job_id)
}

/// The apalis `priority` of the jobs the nightly pass enqueues (apalis fetches higher
/// priorities first).
pub const NIGHTLY_PRIORITY: i32 = 0;

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

/// A job state as operators see it (apalis' raw status plus attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run (possibly scheduled for later).
    Pending,
    /// Fetched by a worker or running.
    Running,
    /// Failed, waiting for its next attempt (backoff).
    Retrying,
    /// Failed and out of attempts.
    Failed,
    /// Stopped for good: a permanent error, a crash loop, or discarded by an operator.
    Killed,
    /// Finished successfully.
    Done,
}

impl JobState {
    /// Every state, in display order.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Retrying,
        JobState::Failed,
        JobState::Killed,
        JobState::Done,
    ];

    /// The lowercase name used in URLs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Failed => "failed",
            JobState::Killed => "killed",
            JobState::Done => "done",
        }
    }

    /// Parse the lowercase name.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The state of a job with this apalis status and attempt count (the Rust twin of
    /// [`JobState::SQL_EXPR`]; a test checks that they agree).
    pub fn of(status: &str, attempts: i32, max_attempts: i32) -> JobState {
        match status {
            "Pending" => JobState::Pending,
            "Queued" | "Running" => JobState::Running,
            "Failed" if job_is_final(status, attempts, max_attempts) => JobState::Failed,
            "Failed" => JobState::Retrying,
            "Killed" => JobState::Killed,
            _ => JobState::Done,
        }
    }

    /// SQL condition on an `apalis.jobs` row aliased `j`.
    pub fn condition(self) -> &'static str {
        match self {
            JobState::Pending => "j.status = 'Pending'",
            JobState::Running => "j.status IN ('Queued', 'Running')",
            JobState::Retrying => {
                "(j.status = 'Failed' AND NOT calsync.job_is_final(j.status, j.attempts, j.max_attempts))"
            }
            JobState::Failed => {
                "(j.status = 'Failed' AND calsync.job_is_final(j.status, j.attempts, j.max_attempts))"
            }
            JobState::Killed => "j.status = 'Killed'",
            JobState::Done => "j.status = 'Done'",
        }
    }

    /// SQL expression computing the state of `j`.
    pub const SQL_EXPR: &'static str = "CASE WHEN j.status = 'Pending' THEN 'pending' \
        WHEN j.status IN ('Queued', 'Running') THEN 'running' \
        WHEN j.status = 'Failed' AND NOT calsync.job_is_final(j.status, j.attempts, j.max_attempts) THEN 'retrying' \
        WHEN j.status = 'Failed' THEN 'failed' WHEN j.status = 'Killed' THEN 'killed' ELSE 'done' END";
}

/// Which jobs an operator action or listing applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    pub user_id: Option<i64>,
    pub run_id: Option<i64>,
    pub ids: Option<Vec<String>>,
}

impl JobFilter {
    /// Append `AND …` conditions on `apalis.jobs j` to a query.
    pub fn push_conditions(&self, qb: &mut QueryBuilder<Postgres>) {
        if let Some(state) = self.state {
            qb.push(" AND ").push(state.condition());
            if matches!(state, JobState::Pending | JobState::Retrying) {
                // Active jobs: inside apalis' fetch index.
                qb.push(" AND ").push(FETCHABLE);
            }
        }
        if let Some(queue) = &self.queue {
            qb.push(" AND j.job_type = ").push_bind(queue.clone());
        }
        if let Some(user) = self.user_id {
            // The payload-user index leaves out Pending jobs (the fan-out does not
            // maintain it); a user's pending job is their active job, found by its key.
            qb.push(" AND j.job_type = ")
                .push_bind(SYNC_QUEUE)
                .push(" AND ((j.status <> 'Pending' AND (calsync.job_payload(j.job) ->> 'user_id') = ")
                .push_bind(user.to_string())
                .push(") OR (j.status = 'Pending' AND j.idempotency_key = calsync.active_job_key(")
                .push_bind(user)
                .push(")))");
        }
        if let Some(run) = self.run_id {
            // A run's jobs were made between its start and the end of its enqueue:
            // an id range (ULIDs start with their time), then the payload decides.
            qb.push(" AND j.job_type = ")
                .push_bind(SYNC_QUEUE)
                .push(
                    " AND j.id >= (SELECT calsync.ulid_floor(r.started_at) FROM calsync.nightly_runs r WHERE r.id = ",
                )
                .push_bind(run)
                .push(
                    ") AND j.id <= (SELECT coalesce(calsync.ulid_ceiling(r.enqueue_finished_at), '8') \
                     FROM calsync.nightly_runs r WHERE r.id = ",
                )
                .push_bind(run)
                .push(") AND (calsync.job_payload(j.job) ->> 'run_id') = ")
                .push_bind(run.to_string());
        }
        if let Some(ids) = &self.ids {
            qb.push(" AND j.id = ANY(").push_bind(ids.clone()).push(")");
        }
    }
}

/// What a bulk action did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// Jobs changed.
    pub changed: Vec<String>,
    /// Jobs matched but left alone (e.g. the user already has an active job).
    pub skipped: u64,
}

/// Retry failed, killed or retrying jobs matching `filter`: back to Pending now, with a
/// fresh attempt budget. A sync job is not retried when its user already has another
/// active job (the one-active-job-per-user rule), and of several matching jobs of one
/// user only the newest is retried. One transaction, audited.
pub async fn retry_jobs(
    pool: &PgPool,
    filter: &JobFilter,
    actor: &str,
) -> Result<ActionOutcome, DomainError> {
    let mut tx = pool.begin().await?;
    // The queue trigger gives every re-activated sync job its user's key, so the
    // unique index would refuse a second active job: skip users who have one, and of
    // several matching jobs of one user retry only the newest.
    let mut qb = QueryBuilder::<Postgres>::new(
        "WITH candidates AS ( \
             SELECT j.id, j.job_type, \
                    CASE WHEN j.job_type = ",
    );
    qb.push_bind(SYNC_QUEUE);
    qb.push(
        " THEN calsync.job_user_id(calsync.job_payload(j.job)) END AS uid \
             FROM apalis.jobs j \
             WHERE (j.status IN ('Failed', 'Killed'))",
    );
    filter.push_conditions(&mut qb);
    qb.push(
        " FOR UPDATE OF j \
         ), pick AS ( \
             SELECT DISTINCT ON (CASE WHEN c.uid IS NOT NULL THEN 'u' || c.uid ELSE 'j' || c.id END) c.id \
             FROM candidates c \
             WHERE c.uid IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM apalis.jobs a \
                 WHERE a.job_type = c.job_type AND a.idempotency_key = calsync.active_job_key(c.uid) \
                   AND a.id <> c.id) \
             ORDER BY (CASE WHEN c.uid IS NOT NULL THEN 'u' || c.uid ELSE 'j' || c.id END), c.id DESC \
         ) \
         UPDATE apalis.jobs j SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL, \
             lock_at = NULL, done_at = NULL \
         FROM pick WHERE j.id = pick.id RETURNING j.id, (SELECT count(*) FROM candidates)",
    );
    let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
    let matched = rows.first().map(|r| r.1).unwrap_or(0);
    let changed: Vec<String> = rows.into_iter().map(|r| r.0).collect();
    let skipped = (matched as u64).saturating_sub(changed.len() as u64);
    audit(
        &mut *tx,
        actor,
        "retry_jobs",
        serde_json::json!({"filter": filter, "retried": changed, "skipped": skipped}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        actor,
        retried = changed.len(),
        skipped,
        ?filter,
        "jobs retried"
    );
    Ok(ActionOutcome { changed, skipped })
}

/// Discard pending or retrying jobs matching `filter` (they become Killed and release
/// the user's active-job slot). One transaction, audited.
pub async fn discard_jobs(
    pool: &PgPool,
    filter: &JobFilter,
    actor: &str,
) -> Result<ActionOutcome, DomainError> {
    let mut tx = pool.begin().await?;
    let mut qb = QueryBuilder::<Postgres>::new(
        "UPDATE apalis.jobs j SET status = 'Killed', done_at = now(), lock_by = NULL, lock_at = NULL, \
             last_result = jsonb_build_object('Err', 'discarded by ' || ",
    );
    qb.push_bind(actor.to_string());
    qb.push(") WHERE (")
        .push(JobState::Pending.condition())
        .push(" OR ")
        .push(JobState::Retrying.condition())
        .push(")");
    filter.push_conditions(&mut qb);
    qb.push(" RETURNING j.id");
    let changed: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
    audit(
        &mut *tx,
        actor,
        "discard_jobs",
        serde_json::json!({"filter": filter, "discarded": changed}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(actor, discarded = changed.len(), ?filter, "jobs discarded");
    Ok(ActionOutcome {
        changed,
        skipped: 0,
    })
}

/// apalis' own "a worker could fetch this job" — the predicate of its partial fetch
/// index `idx_apalis_jobs_fetch_partial` (pending, or failed with attempts left), word
/// for word so the planner can prove a query stays inside that index. AND it with
/// [`JobState::condition`]s of active states to read only the active jobs.
pub const FETCHABLE: &str =
    "(j.status = 'Pending' OR (j.status = 'Failed' AND j.attempts < j.max_attempts))";

/// [`job_counts`] stops counting a finished state (done, failed, killed) here: a count
/// of `JOB_COUNT_CAP + 1` means "more than `JOB_COUNT_CAP`".
pub const JOB_COUNT_CAP: i64 = 10_000;

#[derive(sqlx::FromRow)]
struct QueueCounts {
    name: String,
    pending: i64,
    running: i64,
    retrying: i64,
    failed_all: i64,
    killed: i64,
    done: i64,
}

/// Job counts by queue and state (states without jobs are left out).
///
/// Cheap at any history size: no expression is evaluated per finished job, and the job
/// history is never read past [`JOB_COUNT_CAP`] entries per state. Active states
/// (pending, running, retrying) are exact, counted through apalis' partial fetch index
/// and the partial `(job_type, status, id)` index; finished states (done, failed,
/// killed) stop at `JOB_COUNT_CAP + 1` (failed for good = every failed job minus the
/// retrying ones, so it is an index-only count).
pub async fn job_counts(pool: &PgPool) -> Result<Vec<(String, JobState, i64)>, DomainError> {
    let cap = JOB_COUNT_CAP + 1;
    let sql = format!(
        "WITH RECURSIVE queues AS ( \
             SELECT min(job_type) AS name FROM apalis.jobs \
             UNION ALL \
             SELECT (SELECT min(job_type) FROM apalis.jobs WHERE job_type > queues.name) \
             FROM queues WHERE queues.name IS NOT NULL \
         ) \
         SELECT q.name, a.pending, a.running, a.retrying, \
                (SELECT count(*) FROM (SELECT 1 FROM apalis.jobs j WHERE j.job_type = q.name \
                     AND j.status = 'Failed' LIMIT {cap} + a.retrying) c) AS failed_all, \
                (SELECT count(*) FROM (SELECT 1 FROM apalis.jobs j WHERE j.job_type = q.name \
                     AND {killed} LIMIT {cap}) c) AS killed, \
                (SELECT count(*) FROM (SELECT 1 FROM apalis.jobs j WHERE j.job_type = q.name \
                     AND {done} LIMIT {cap}) c) AS done \
         FROM queues q CROSS JOIN LATERAL ( \
             SELECT (SELECT count(*) FROM apalis.jobs j WHERE j.job_type = q.name AND {pending} AND {FETCHABLE}) AS pending, \
                    (SELECT count(*) FROM apalis.jobs j WHERE j.job_type = q.name AND {running}) AS running, \
                    (SELECT count(*) FROM apalis.jobs j WHERE j.job_type = q.name AND {retrying} AND {FETCHABLE}) AS retrying \
             OFFSET 0 \
         ) a \
         WHERE q.name IS NOT NULL ORDER BY q.name",
        pending = JobState::Pending.condition(),
        running = JobState::Running.condition(),
        retrying = JobState::Retrying.condition(),
        killed = JobState::Killed.condition(),
        done = JobState::Done.condition(),
    );
    // The planner cannot know how few queues there are; its guess of 100 makes the
    // statement look expensive enough to be JIT-compiled (200 ms) for a few index probes.
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let rows: Vec<QueueCounts> = sqlx::query_as(AssertSqlSafe(sql))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut out = Vec::new();
    for r in rows {
        let failed = if r.failed_all > JOB_COUNT_CAP + r.retrying {
            JOB_COUNT_CAP + 1
        } else {
            r.failed_all - r.retrying
        };
        for (state, n) in [
            (JobState::Done, r.done),
            (JobState::Failed, failed),
            (JobState::Killed, r.killed),
            (JobState::Pending, r.pending),
            (JobState::Retrying, r.retrying),
            (JobState::Running, r.running),
        ] {
            if n > 0 {
                out.push((r.name.clone(), state, n));
            }
        }
    }
    Ok(out)
}

/// Append an operator action to `calsync.audit_log`.
pub async fn audit(
    db: impl PgExecutor<'_>,
    actor: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), DomainError> {
    sqlx::query("INSERT INTO calsync.audit_log (actor, action, detail) VALUES ($1, $2, $3)")
        .bind(actor)
        .bind(action)
        .bind(detail)
        .execute(db)
        .await?;
    Ok(())
}

/// Delete finished sync jobs (done, killed, failed for good) that finished more than
/// `older_than_days` ago, in batches of 10,000 so no statement holds many row locks for
/// long. Each batch is one transaction with its `prune_jobs` audit row (by `actor`).
/// Active jobs are never touched. Returns how many were deleted.
pub async fn prune_finished_jobs(
    pool: &PgPool,
    older_than_days: u32,
    actor: &str,
) -> Result<u64, DomainError> {
    const BATCH: u64 = 10_000;
    let mut total = 0u64;
    for batch in 1.. {
        let mut tx = pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM apalis.jobs WHERE id IN ( \
                 SELECT id FROM apalis.jobs j \
                 WHERE j.job_type = $1 \
                   AND calsync.job_is_final(j.status, j.attempts, j.max_attempts) \
                   AND coalesce(j.done_at, j.run_at) < now() - make_interval(days => $2) \
                 LIMIT 10000 FOR UPDATE SKIP LOCKED)",
        )
        .bind(SYNC_QUEUE)
        .bind(i32::try_from(older_than_days).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        total += deleted;
        if deleted > 0 || batch == 1 {
            audit(
                &mut *tx,
                actor,
                "prune_jobs",
                serde_json::json!({
                    "older_than_days": older_than_days,
                    "batch": batch,
                    "deleted": deleted,
                }),
            )
            .await?;
        }
        tx.commit().await?;
        if deleted < BATCH {
            break;
        }
    }
    Ok(total)
}

/// One job as the HTTP API and `calsync sync-user --wait` report it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobStatus {
    pub id: String,
    pub queue: String,
    /// [`JobState`] name (`pending`, `running`, `retrying`, `failed`, `killed`, `done`).
    pub state: String,
    /// apalis' raw status.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_result: Option<serde_json::Value>,
    pub payload: Option<serde_json::Value>,
}

impl JobStatus {
    /// The state, parsed.
    pub fn job_state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }
}

/// Load one job's status; `None` for an unknown id.
pub async fn job_status(
    db: impl PgExecutor<'_>,
    job_id: &str,
) -> Result<Option<JobStatus>, DomainError> {
    Ok(sqlx::query_as::<_, JobStatus>(AssertSqlSafe(format!(
        "SELECT j.id, j.job_type AS queue, {} AS state, j.status, j.attempts, j.max_attempts, j.run_at, \
                j.done_at, j.last_result, calsync.job_payload(j.job) AS payload \
         FROM apalis.jobs j WHERE j.id = $1",
        JobState::SQL_EXPR
    )))
    .bind(job_id)
    .fetch_optional(db)
    .await?)
}
