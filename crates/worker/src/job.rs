//! The `SyncUserJob` handler: decode and validate the payload, run the sync engine,
//! ask the failure policy what a failure means, record it, and answer apalis in its
//! vocabulary (Done / Failed → retried with backoff / Killed).
//!
//! The worker's backend hands the handler the payload's raw bytes ([`RawPayload`]):
//! apalis decodes payloads before a handler runs and treats a decode error as a
//! backend failure that stops the worker, so a row serde cannot read (a number like
//! `1e400`, nesting deeper than serde_json's recursion limit, …) would stop every job
//! fetched with it. Decoding here instead makes any such row fail alone.

use std::{convert::Infallible, panic::AssertUnwindSafe, sync::Arc};

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data, TaskId, WorkerContext};
use apalis_core::{
    backend::{codec::Codec, ext::with_codec::WithCodec},
    task::{Task, from_request::FromRequest},
};
use calsync_domain::{
    queue::{PayloadError, SyncUserJob},
    users::{self, AttemptFailure},
};
use futures::FutureExt;
use sqlx::PgPool;

use crate::{
    backend::ErrorClass,
    failure::{self, Decision},
    sync::{SyncEngine, SyncError},
};

/// What every job handler invocation needs.
pub struct JobDeps {
    pub pool: PgPool,
    pub engine: SyncEngine,
}

/// A codec that hands the stored payload bytes over untouched, so decoding cannot fail
/// before the handler runs (it parses and validates them itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawPayload;

impl Codec<Vec<u8>> for RawPayload {
    type Error = Infallible;
    type Compact = Vec<u8>;

    fn encode(&self, val: &Vec<u8>) -> Result<Vec<u8>, Infallible> {
        Ok(val.clone())
    }

    fn decode(&self, val: &Vec<u8>) -> Result<Vec<u8>, Infallible> {
        Ok(val.clone())
    }
}

/// Wrap the worker's apalis-postgres backend (of `Vec<u8>` payloads) so it hands the
/// handler raw bytes.
pub fn raw_payloads<B>(backend: B) -> WithCodec<B, RawPayload> {
    WithCodec::new(backend, RawPayload)
}

/// The job's attempt budget (`apalis.jobs.max_attempts`), as apalis fetched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAttempts(pub usize);

impl<Args: Sync> FromRequest<Task<Args>> for MaxAttempts {
    type Error = Infallible;

    async fn from_request(task: &Task<Args>) -> Result<Self, Infallible> {
        Ok(MaxAttempts(task.max_attempts().unwrap_or(usize::MAX)))
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A bug: never retried, never allowed to take the worker down.
    #[error("calsync: the sync of user {user_id} panicked: {message}")]
    Panicked { user_id: i64, message: String },
}

impl JobError {
    /// What the failure means, for the failure policy.
    pub fn class(&self) -> ErrorClass {
        match self {
            JobError::Payload(_) | JobError::Panicked { .. } => ErrorClass::Permanent,
            JobError::Sync(e) => e.class(),
        }
    }

    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Payload(_) => "malformed_payload",
            JobError::Panicked { .. } => "panic",
            JobError::Sync(e) => e.kind(),
        }
    }
}

/// One attempt of a job, independent of apalis.
#[derive(Debug, Clone, Copy)]
pub struct AttemptCtx<'a> {
    pub job_id: &'a str,
    /// 1 = the first attempt.
    pub attempt: usize,
    pub max_attempts: usize,
    /// Who runs it (the worker's name), for the audit log.
    pub worker: &'a str,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Synced: the report for `last_result`.
    Done(serde_json::Value),
    /// Failed; the policy's decision (already recorded).
    Failed { decision: Decision, error: JobError },
}

/// Run one attempt of a `SyncUserJob` with raw payload bytes: parse, sync, and on
/// failure decide ([`failure::decide`]) and record ([`users::record_attempt_failure`]).
pub async fn run_attempt(deps: &JobDeps, ctx: AttemptCtx<'_>, payload: &[u8]) -> Outcome {
    let (user_id, res) = match SyncUserJob::from_bytes(payload) {
        Err(e) => (None, Err(JobError::from(e))),
        Ok(job) => {
            tracing::debug!(job_id = ctx.job_id, user_id = job.user_id, attempt = ctx.attempt,
                reason = %job.reason, run_id = ?job.run_id, "sync job started");
            (
                Some(job.user_id),
                sync_catching_panics(deps, job.user_id).await,
            )
        }
    };
    let error = match res {
        Ok(report) => {
            tracing::info!(job_id = ctx.job_id, user_id, attempt = ctx.attempt, report = ?report,
                "user calendar synced");
            metrics::counter!("calsync_jobs_total", "outcome" => "done").increment(1);
            return Outcome::Done(serde_json::to_value(&report).unwrap_or_default());
        }
        Err(e) => e,
    };
    let decision = failure::decide(
        error.class(),
        ctx.attempt,
        ctx.max_attempts,
        deps.engine.calendars(),
    );
    log_failure(&ctx, user_id, decision, &error);
    metrics::counter!("calsync_jobs_total", "outcome" => decision.metric()).increment(1);
    let message = error.to_string();
    let recorded = users::record_attempt_failure(
        &deps.pool,
        &AttemptFailure {
            job_id: ctx.job_id,
            user_id,
            attempt: i64::try_from(ctx.attempt).unwrap_or(i64::MAX),
            outcome: decision.outcome(),
            error: &message,
            actor: ctx.worker,
        },
    )
    .await;
    if let Err(db) = recorded {
        tracing::error!(job_id = ctx.job_id, user_id, error = %db, "could not record the sync failure");
    }
    Outcome::Failed { decision, error }
}

/// Run the sync; a panic is a bug, not a transient failure: it fails this job (killed
/// by the policy) instead of taking the worker down.
async fn sync_catching_panics(
    deps: &JobDeps,
    user_id: i64,
) -> Result<crate::sync::SyncReport, JobError> {
    match AssertUnwindSafe(deps.engine.sync_user(user_id))
        .catch_unwind()
        .await
    {
        Ok(res) => res.map_err(JobError::from),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(JobError::Panicked { user_id, message })
        }
    }
}

fn log_failure(ctx: &AttemptCtx<'_>, user_id: Option<i64>, decision: Decision, e: &JobError) {
    let (job_id, attempt, max_attempts, kind) =
        (ctx.job_id, ctx.attempt, ctx.max_attempts, e.kind());
    match decision {
        Decision::Retry { after, .. } => {
            tracing::warn!(job_id, user_id, attempt, max_attempts, kind,
            not_before_secs = after.map(|d| d.as_secs()), error = %e,
            "user sync failed; will retry with backoff")
        }
        Decision::OutOfAttempts => tracing::error!(job_id, user_id, attempt, max_attempts, kind,
            error = %e, "user sync failed on its last attempt"),
        Decision::Kill => tracing::error!(job_id, user_id, attempt, max_attempts, kind, error = %e,
            "user sync failed permanently; not retrying"),
        Decision::NeedsUser(status) => tracing::warn!(job_id, user_id, attempt, kind,
            status = status.as_str(), error = %e,
            "user sync needs the student to act; not retrying until they do"),
    }
}

/// The apalis handler of `SyncUserJob`s (raw payload bytes, see [`RawPayload`]):
///
/// * success → `Ok(report)` → Done;
/// * a failure the policy retries, or the last attempt's → `Err` → Failed (the queue
///   trigger schedules the retry with backoff, or the job is out of attempts);
/// * a failure the policy kills (malformed payload, permanent error, the student must
///   act, a panic) → `AbortError` → Killed at once, with the full error as its result.
pub async fn handle_sync_user(
    payload: Vec<u8>,
    task_id: TaskId,
    attempt: Attempt,
    max_attempts: MaxAttempts,
    worker: WorkerContext,
    deps: Data<Arc<JobDeps>>,
) -> Result<serde_json::Value, BoxDynError> {
    let job_id = task_id.to_string();
    let ctx = AttemptCtx {
        job_id: &job_id,
        attempt: attempt.current(),
        max_attempts: max_attempts.0,
        worker: worker.name(),
    };
    match run_attempt(&deps, ctx, &payload).await {
        Outcome::Done(report) => Ok(report),
        Outcome::Failed { decision, error } => {
            let message = storable(error.to_string());
            if decision.kills_job() {
                Err(AbortError::new(message).into())
            } else {
                Err(message.into())
            }
        }
    }
}

/// An error text apalis can store: its `last_result` is jsonb, which refuses NUL (the
/// acknowledgement would fail and stop the worker), and an error may quote a hostile
/// payload or a provider's answer.
fn storable(message: String) -> String {
    if message.contains('\0') {
        message.replace('\0', "\\u{0}")
    } else {
        message
    }
}
