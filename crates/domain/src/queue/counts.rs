//! Job counts by queue and state for `/metrics` and `calsync status`, cheap at any
//! history size.

use sqlx::{AssertSqlSafe, PgPool};

use super::{FETCHABLE, JobState};
use crate::DomainError;

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
