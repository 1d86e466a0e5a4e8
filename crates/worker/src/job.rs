//! The `SyncUserJob` handler: validate the payload, run the sync engine, and turn the
//! outcome into apalis' vocabulary (Done / Failed → retried with backoff / Killed).

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data, TaskId};
use calsync_domain::{
    queue::SyncUserJob,
    users::{self, SyncStatus},
};
use sqlx::PgPool;

use crate::sync::SyncEngine;

/// What every job handler invocation needs.
pub struct JobDeps {
    pub pool: PgPool,
    pub engine: SyncEngine,
}

/// Handle one `SyncUserJob`.
///
/// * malformed payload or a permanent error (unknown user, no calendar, revoked token,
///   calendar deleted, a request Google rejects as invalid) → `AbortError` → the job is
///   Killed at once, never retried, with the full error as its result;
/// * a retryable error (rate limits, 5xx, network, DB hiccups) → `Err` → apalis marks it
///   Failed and calsync's queue trigger pushes `run_at` out with exponential backoff and
///   jitter; after the last attempt the user is marked `failing`;
/// * success → `Ok(report)`.
pub async fn handle_sync_user(
    payload: serde_json::Value,
    task_id: TaskId,
    attempt: Attempt,
    deps: Data<Arc<JobDeps>>,
) -> Result<serde_json::Value, BoxDynError> {
    let job_id = task_id.to_string();
    // A panic is a bug, not a transient failure: kill the job with the panic message
    // instead of letting it take the worker down (apalis would re-run it forever).
    match AssertUnwindSafe(run(payload, job_id.clone(), attempt, deps))
        .catch_unwind()
        .await
    {
        Ok(res) => res,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(job_id, panic = %msg, "SyncUserJob panicked; killing the job");
            metrics::counter!("calsync_jobs_total", "outcome" => "killed").increment(1);
            Err(AbortError::new(format!("calsync: the sync panicked: {msg}")).into())
        }
    }
}

async fn run(
    payload: serde_json::Value,
    job_id: String,
    attempt: Attempt,
    deps: Data<Arc<JobDeps>>,
) -> Result<serde_json::Value, BoxDynError> {
    let job = match SyncUserJob::from_payload(&payload) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(job_id, error = %e, "rejecting malformed SyncUserJob");
            metrics::counter!("calsync_jobs_total", "outcome" => "killed").increment(1);
            return Err(AbortError::new(e).into());
        }
    };
    let user_id = job.user_id;
    let attempt = attempt.current();
    tracing::debug!(job_id, user_id, attempt, reason = %job.reason, run_id = ?job.run_id, "sync job started");
    match deps.engine.sync_user(user_id).await {
        Ok(report) => {
            tracing::info!(job_id, user_id, attempt, report = ?report, "user calendar synced");
            metrics::counter!("calsync_jobs_total", "outcome" => "done").increment(1);
            Ok(serde_json::to_value(&report).unwrap_or(serde_json::Value::Null))
        }
        Err(e) if e.is_permanent() => {
            tracing::error!(job_id, user_id, attempt, kind = e.kind(), error = %e, "user sync failed permanently; not retrying");
            metrics::counter!("calsync_jobs_total", "outcome" => "killed").increment(1);
            Err(AbortError::new(e).into())
        }
        Err(e) => {
            if let Some(wait) = e.retry_after() {
                let hint = sqlx::query(
                    "INSERT INTO calsync.retry_hints (job_id, not_before) VALUES ($1, now() + $2 * interval '1 second') \
                     ON CONFLICT (job_id) DO UPDATE SET not_before = EXCLUDED.not_before",
                )
                .bind(&job_id)
                .bind(wait.as_secs_f64())
                .execute(&deps.pool)
                .await;
                if let Err(db) = hint {
                    tracing::warn!(job_id, error = %db, "could not record the retry-after hint");
                }
            }
            let max_attempts: i32 =
                sqlx::query_scalar("SELECT max_attempts FROM apalis.jobs WHERE id = $1")
                    .bind(&job_id)
                    .fetch_optional(&deps.pool)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(i32::MAX);
            if attempt as i64 >= max_attempts as i64 {
                tracing::error!(job_id, user_id, attempt, max_attempts, kind = e.kind(), error = %e,
                    "user sync failed on its last attempt");
                if let Err(db) =
                    users::record_failure(&deps.pool, user_id, SyncStatus::Failing, &e.to_string())
                        .await
                {
                    tracing::error!(user_id, error = %db, "could not record the sync failure");
                }
                metrics::counter!("calsync_jobs_total", "outcome" => "failed").increment(1);
            } else {
                tracing::warn!(job_id, user_id, attempt, max_attempts, kind = e.kind(), error = %e,
                    "user sync failed; will retry with backoff");
                metrics::counter!("calsync_jobs_total", "outcome" => "retry").increment(1);
            }
            Err(e.into())
        }
    }
}
