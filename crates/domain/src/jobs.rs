//! The read side of the job queue for operators: the job list (filters, search by
//! error text, keyset paging on the ULID id, newest first) and one job in full.
//!
//! Every query here stays an index range scan at 1,000,000 jobs: the list walks
//! `(status, id DESC)`, `(job_type, status, id DESC)` or the payload-user index from the
//! `before` bound and stops after `limit` rows (these indexes leave out Pending jobs,
//! which the nightly fan-out inserts by the 100,000: pending jobs come from apalis'
//! partial fetch index, a user's pending job from its active-job key); a run's jobs are
//! the id range its fan-out made; an error search looks the text up in the attempts'
//! trigram index (see [`crate::attempts`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow, PgExecutor, Postgres, QueryBuilder};

use crate::{
    DomainError,
    attempts::ErrorSearch,
    priority::PriorityClass,
    queue::{JobFilter, JobState},
};

/// One row of the job list.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    /// The payload's `user_id`, when it is a number.
    pub user_id: Option<i64>,
    pub attempts: i32,
    pub max_attempts: i32,
    /// `apalis.jobs.priority` and its class.
    pub priority: i32,
    pub class: PriorityClass,
    pub run_at: DateTime<Utc>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// How long the last finished attempt took or, while the job runs, how long the
    /// current attempt has been running (milliseconds). `None` when unknown.
    pub duration_ms: Option<i64>,
    /// With an error search: the newest error of this job that matches it.
    pub matched_error: Option<String>,
}

#[derive(FromRow)]
struct SummaryRow {
    id: String,
    job_type: String,
    state: String,
    user_id: Option<String>,
    attempts: i32,
    max_attempts: i32,
    priority: i32,
    run_at: DateTime<Utc>,
    err: Option<String>,
    duration_ms: Option<i64>,
    matched_error: Option<String>,
}

fn state_of(s: &str) -> Result<JobState, DomainError> {
    JobState::parse(s).ok_or_else(|| DomainError::InvalidData(format!("unknown job state {s:?}")))
}

/// Jobs matching `filter`, newest first, with ids strictly below `before` (the last id
/// of the previous page), at most `limit` of them.
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<JobSummary>, DomainError> {
    search(db, filter, None, before, limit).await
}

/// [`list`], narrowed to jobs with an attempt whose error contains `error` (any
/// attempt, not only the last: a job that failed with it and then succeeded is found).
pub async fn search(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    error: Option<&ErrorSearch>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<JobSummary>, DomainError> {
    // The duration: the running attempt so far, else the newest recorded attempt
    // (one index probe per listed row: the subqueries run after the LIMIT).
    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT j.id, j.job_type, {} AS state, calsync.job_payload(j.job) ->> 'user_id' AS user_id, \
         j.attempts, j.max_attempts, coalesce(j.priority, 0) AS priority, j.run_at, j.last_result ->> 'Err' AS err, \
         (CASE WHEN {} THEN extract(epoch FROM now() - j.lock_at) * 1000 \
               ELSE (SELECT extract(epoch FROM a.finished_at - a.started_at) * 1000 \
                     FROM calsync.job_attempts a WHERE a.job_id = j.id ORDER BY a.id DESC LIMIT 1) \
          END)::bigint AS duration_ms, ",
        JobState::SQL_EXPR,
        JobState::Running.condition(),
    ));
    match error {
        Some(e) => qb
            .push(
                "(SELECT a.error FROM calsync.job_attempts a WHERE a.job_id = j.id \
                 AND a.error ILIKE ",
            )
            .push_bind(e.pattern())
            .push(" ORDER BY a.id DESC LIMIT 1) AS matched_error"),
        None => qb.push("NULL::text AS matched_error"),
    };
    qb.push(" FROM apalis.jobs j WHERE true");
    filter.push_conditions(&mut qb);
    if let Some(e) = error {
        qb.push(" AND j.id IN (SELECT a.job_id FROM calsync.job_attempts a WHERE a.error ILIKE ")
            .push_bind(e.pattern())
            .push(")");
    }
    if let Some(b) = before {
        qb.push(" AND j.id < ").push_bind(b.to_string());
    }
    qb.push(" ORDER BY j.id DESC LIMIT ")
        .push_bind(limit.max(0));
    // A search is planned for its own text, every time (an unnamed statement): how rare
    // the text is decides the plan — the trigram index for a rare error, the newest jobs
    // first for a common one. A cached generic plan walked 500,000 jobs for a rare error
    // (450 ms at 1,000,000 jobs instead of 8 ms).
    let rows: Vec<SummaryRow> = qb
        .build_query_as()
        .persistent(error.is_none())
        .fetch_all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(JobSummary {
                state: state_of(&r.state)?,
                id: r.id,
                queue: r.job_type,
                user_id: r.user_id.and_then(|u| u.parse().ok()),
                attempts: r.attempts,
                max_attempts: r.max_attempts,
                priority: r.priority,
                class: PriorityClass::of(r.priority),
                run_at: r.run_at,
                last_error: r.err,
                duration_ms: r.duration_ms,
                matched_error: r.matched_error,
            })
        })
        .collect()
}

/// One job in full, for its detail page.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    /// apalis' raw status (`Pending`, `Queued`, `Running`, `Done`, `Failed`, `Killed`).
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lock_by: Option<String>,
    pub lock_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    /// `{"Ok": …}` or `{"Err": …}` of the last attempt.
    pub last_result: Option<serde_json::Value>,
    /// The active-job key while the job is active.
    pub idempotency_key: Option<String>,
    pub priority: i32,
    /// The class of `priority`.
    pub class: PriorityClass,
    /// The payload as JSON, when it decodes.
    pub payload: Option<serde_json::Value>,
    /// The first 2,000 bytes of the payload as text, for payloads that do not decode.
    pub raw_payload: Option<String>,
}

impl JobDetail {
    /// The last attempt's error text, if it failed.
    pub fn last_error(&self) -> Option<String> {
        let err = self.last_result.as_ref()?.get("Err")?;
        Some(
            err.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string()),
        )
    }

    /// The payload's `user_id`, when it is a number.
    pub fn user_id(&self) -> Option<i64> {
        self.payload.as_ref()?.get("user_id")?.as_i64()
    }
}

#[derive(FromRow)]
struct DetailRow {
    id: String,
    job_type: String,
    state: String,
    status: String,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    lock_by: Option<String>,
    lock_at: Option<DateTime<Utc>>,
    done_at: Option<DateTime<Utc>>,
    last_result: Option<serde_json::Value>,
    idempotency_key: Option<String>,
    priority: Option<i32>,
    payload: Option<serde_json::Value>,
    raw: Option<String>,
}

/// Load one job; `None` when there is no job with this id.
pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<JobDetail>, DomainError> {
    let row: Option<DetailRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT j.id, j.job_type, {} AS state, j.status, j.attempts, j.max_attempts, j.run_at, j.lock_by, \
                j.lock_at, j.done_at, j.last_result, j.idempotency_key, j.priority, \
                calsync.job_payload(j.job) AS payload, left(encode(j.job, 'escape'), 2000) AS raw \
         FROM apalis.jobs j WHERE j.id = $1",
        JobState::SQL_EXPR
    )))
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(JobDetail {
        state: state_of(&r.state)?,
        id: r.id,
        queue: r.job_type,
        status: r.status,
        attempts: r.attempts,
        max_attempts: r.max_attempts,
        run_at: r.run_at,
        lock_by: r.lock_by,
        lock_at: r.lock_at,
        done_at: r.done_at,
        last_result: r.last_result,
        idempotency_key: r.idempotency_key,
        priority: r.priority.unwrap_or(0),
        class: PriorityClass::of(r.priority.unwrap_or(0)),
        raw_payload: if r.payload.is_none() { r.raw } else { None },
        payload: r.payload,
    }))
}
