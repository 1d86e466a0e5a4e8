//! The job queue contract on top of apalis-postgres: `SyncUserJob` payloads, enqueueing
//! (one active job per user), the nightly fan-out pass, and operator actions (retry,
//! discard) shared by the CLI and the dashboard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgExecutor, PgPool, Postgres, QueryBuilder};

use crate::DomainError;

mod counts;
mod nightly;

pub use counts::{JOB_COUNT_CAP, job_counts};
pub use nightly::{
    NIGHTLY_PRIORITY, NightlyRun, RunTrigger, fold_nightly_run_progress, nightly_run,
    recent_nightly_runs, run_nightly_pass,
};

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

/// Enqueue a sync of one user at the `api` class (or return the id of the job already
/// active for them, raised to `api` if it was below), audited as `sync_user` by `actor`
/// in the same transaction. Same rules as the SQL API `calsync.enqueue_sync`;
/// [`crate::priority::request_sync`] chooses the class and says what happened.
pub async fn enqueue_sync(
    pool: &PgPool,
    user_id: i64,
    reason: &str,
    actor: &str,
) -> Result<String, DomainError> {
    let req = crate::priority::SyncRequest {
        user_id,
        reason,
        class: crate::priority::PriorityClass::Api,
        due_now: false,
    };
    Ok(crate::priority::request_sync(pool, &req, actor)
        .await?
        .job_id)
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
    /// Jobs of this priority class (`apalis.jobs.priority` within the class' range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<crate::priority::PriorityClass>,
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
        if let Some(class) = self.class {
            let (low, high) = class.range();
            if let Some(low) = low {
                qb.push(" AND coalesce(j.priority, 0) >= ").push_bind(low);
            }
            if let Some(high) = high {
                qb.push(" AND coalesce(j.priority, 0) < ").push_bind(high);
            }
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
    /// `apalis.jobs.priority`.
    pub priority: i32,
    /// Its [`crate::priority::PriorityClass`] name.
    pub class: String,
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
        "SELECT j.id, j.job_type AS queue, {} AS state, j.status, j.attempts, j.max_attempts, \
                coalesce(j.priority, 0) AS priority, calsync.priority_class(coalesce(j.priority, 0)) AS class, j.run_at, \
                j.done_at, j.last_result, calsync.job_payload(j.job) AS payload \
         FROM apalis.jobs j WHERE j.id = $1",
        JobState::SQL_EXPR
    )))
    .bind(job_id)
    .fetch_optional(db)
    .await?)
}
