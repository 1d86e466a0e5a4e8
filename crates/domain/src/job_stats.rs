//! Queue health for the dashboard's overview, cheap at any table size:
//!
//! * throughput per minute (last 24 hours) and per hour (last 14 days) by attempt
//!   outcome, from buckets an incremental roll-up maintains ([`roll_up`], see the
//!   migration `…0500_job_attempts.sql` for its correctness rule) plus the attempts not
//!   rolled up yet, read in one statement;
//! * the queue right now ([`queue_health`]): what is waiting, scheduled, running and
//!   retrying (index scans over active jobs only), the oldest waiting job, and failed /
//!   killed counts capped at [`FINAL_COUNT_CAP`].
//!
//! Nothing here scans the job history: the cost follows the active jobs and the
//! attempts since the last roll-up, not the 1,000,000 finished jobs.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow, PgPool};

use crate::{
    DomainError,
    queue::{self, JobState},
};

/// Advisory lock (two-key form; its own namespace) held by a roll-up, so concurrent
/// readers never add the same attempts twice.
const LOCK_NAMESPACE: i32 = 0x7374_6174; // "stat"
const LOCK_KEY: i32 = 1;

/// The per-bucket sums, shared by the roll-up and the readers' tail (`a`: a
/// `calsync.job_attempts` row). The outcome names are `calsync.attempt_outcome`'s.
const SUMS: &str = "count(*) FILTER (WHERE a.outcome = 'done') AS done, \
     count(*) FILTER (WHERE a.outcome = 'retried') AS retried, \
     count(*) FILTER (WHERE a.outcome = 'abandoned') AS abandoned, \
     count(*) FILTER (WHERE a.outcome = 'failed') AS failed, \
     count(a.started_at) AS timed, \
     coalesce(sum(greatest(0, extract(epoch FROM a.finished_at - a.started_at) * 1000)), 0)::bigint AS duration_ms";

/// A read-committed transaction with JIT compilation off. The planner's estimates for
/// "attempts since the watermark" cannot know the watermark, so at a million attempts
/// they cross `jit_above_cost` and every view would spend tens of milliseconds
/// compiling a query that runs in one: these statements never need JIT.
async fn without_jit(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DomainError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    Ok(tx)
}

/// The bucket size of a throughput series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Per minute, the last 24 hours (1,440 buckets).
    Minute,
    /// Per hour, the last 14 days (336 buckets).
    Hour,
}

impl Resolution {
    fn unit(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Resolution::Minute => "calsync.job_stats_minute",
            Resolution::Hour => "calsync.job_stats_hour",
        }
    }

    /// How long the roll-up keeps buckets (longer than any series shows).
    fn kept(self) -> &'static str {
        match self {
            Resolution::Minute => "48 hours",
            Resolution::Hour => "90 days",
        }
    }

    /// Buckets in a series.
    pub fn buckets(self) -> i64 {
        match self {
            Resolution::Minute => 24 * 60,
            Resolution::Hour => 14 * 24,
        }
    }

    /// The length of one bucket.
    pub fn step(self) -> TimeDelta {
        match self {
            Resolution::Minute => TimeDelta::minutes(1),
            Resolution::Hour => TimeDelta::hours(1),
        }
    }
}

/// Attempts that ended in one bucket, by outcome (all queues).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, FromRow)]
pub struct Bucket {
    /// Start of the bucket (UTC).
    pub start: DateTime<Utc>,
    pub done: i64,
    /// Failed, will run again.
    pub retried: i64,
    /// The worker was lost; will run again.
    pub abandoned: i64,
    /// Failed; the job is over.
    pub failed: i64,
    /// Attempts whose start is known (the ones `duration_ms` sums).
    pub timed: i64,
    pub duration_ms: i64,
}

impl Bucket {
    /// Every attempt that ended in the bucket.
    pub fn attempts(&self) -> i64 {
        self.done + self.retried + self.abandoned + self.failed
    }

    /// Mean attempt duration, when any attempt's start is known.
    pub fn mean_duration_ms(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.duration_ms as f64 / self.timed as f64)
    }

    /// Add another bucket's counts.
    pub fn add(&mut self, o: &Bucket) {
        self.done += o.done;
        self.retried += o.retried;
        self.abandoned += o.abandoned;
        self.failed += o.failed;
        self.timed += o.timed;
        self.duration_ms += o.duration_ms;
    }
}

/// What one [`roll_up`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollUp {
    /// False when another roll-up held the lock (nothing done; readers stay exact).
    pub ran: bool,
    /// Attempts added to the buckets.
    pub attempts: i64,
}

/// Add the attempts recorded since the last roll-up to the minute and hour buckets,
/// move the watermark, drop buckets past their retention, and fold the nightly runs'
/// progress rows into their counters ([`crate::queue::fold_nightly_run_progress`]). Skips (does not wait)
/// when another roll-up is running. Cost: the attempts since the last roll-up.
pub async fn roll_up(pool: &PgPool) -> Result<RollUp, DomainError> {
    let mut tx = without_jit(pool).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
        .bind(LOCK_NAMESPACE)
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(RollUp {
            ran: false,
            attempts: 0,
        });
    }
    // One statement, one snapshot: the xmin read here is that of the snapshot that
    // reads the attempts, so every row below it is committed and visible (or aborted).
    let upsert = |r: Resolution| {
        format!(
            "INSERT INTO {table} AS b (bucket, queue, done, retried, abandoned, failed, timed, duration_ms) \
             SELECT date_trunc('{unit}', a.finished_at, 'UTC'), a.queue, {SUMS} \
             FROM fresh a WHERE a.finished_at >= now() - interval '{kept}' GROUP BY 1, 2 \
             ON CONFLICT (bucket, queue) DO UPDATE SET done = b.done + EXCLUDED.done, \
                 retried = b.retried + EXCLUDED.retried, abandoned = b.abandoned + EXCLUDED.abandoned, \
                 failed = b.failed + EXCLUDED.failed, timed = b.timed + EXCLUDED.timed, \
                 duration_ms = b.duration_ms + EXCLUDED.duration_ms",
            table = r.table(),
            unit = r.unit(),
            kept = r.kept(),
        )
    };
    let attempts: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH st AS ( \
             SELECT watermark AS lo, greatest(watermark, pg_snapshot_xmin(pg_current_snapshot())) AS hi \
             FROM calsync.job_stats_rollup \
         ), fresh AS MATERIALIZED ( \
             SELECT a.queue, a.outcome, a.started_at, a.finished_at \
             FROM calsync.job_attempts a \
             WHERE a.tx >= (SELECT lo FROM st) AND a.tx < (SELECT hi FROM st) \
         ), per_minute AS ({minute}), per_hour AS ({hour}), \
         advance AS ( \
             UPDATE calsync.job_stats_rollup r SET watermark = st.hi, rolled_up_at = now() FROM st \
         ) \
         SELECT count(*) FROM fresh",
        minute = upsert(Resolution::Minute),
        hour = upsert(Resolution::Hour),
    )))
    .fetch_one(&mut *tx)
    .await?;
    // The nightly runs' counters too: their progress rows go into the run rows.
    crate::queue::fold_nightly_run_progress(&mut *tx).await?;
    for r in [Resolution::Minute, Resolution::Hour] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE bucket < now() - interval '{}'",
            r.table(),
            r.kept()
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(RollUp {
        ran: true,
        attempts,
    })
}

/// Attempts per bucket over the series' window, oldest first, every bucket present
/// (zeros included), the last one being the current, partial bucket. Exact: the
/// buckets plus the attempts not rolled up yet, read in one statement.
pub async fn throughput(pool: &PgPool, resolution: Resolution) -> Result<Vec<Bucket>, DomainError> {
    let unit = resolution.unit();
    let sql = format!(
        "WITH st AS (SELECT watermark FROM calsync.job_stats_rollup), \
         slots AS ( \
             SELECT generate_series(date_trunc('{unit}', now(), 'UTC') - ({n} - 1) * interval '1 {unit}', \
                                    date_trunc('{unit}', now(), 'UTC'), interval '1 {unit}') AS bucket \
         ), stored AS ( \
             SELECT b.bucket, sum(b.done) AS done, sum(b.retried) AS retried, sum(b.abandoned) AS abandoned, \
                    sum(b.failed) AS failed, sum(b.timed) AS timed, sum(b.duration_ms) AS duration_ms \
             FROM {table} b WHERE b.bucket >= (SELECT min(bucket) FROM slots) GROUP BY b.bucket \
         ), tail AS ( \
             SELECT date_trunc('{unit}', a.finished_at, 'UTC') AS bucket, {SUMS} \
             FROM calsync.job_attempts a \
             WHERE a.tx >= (SELECT watermark FROM st) AND a.finished_at >= (SELECT min(bucket) FROM slots) \
             GROUP BY 1 \
         ) \
         SELECT s.bucket AS start, \
                (coalesce(p.done, 0) + coalesce(t.done, 0))::bigint AS done, \
                (coalesce(p.retried, 0) + coalesce(t.retried, 0))::bigint AS retried, \
                (coalesce(p.abandoned, 0) + coalesce(t.abandoned, 0))::bigint AS abandoned, \
                (coalesce(p.failed, 0) + coalesce(t.failed, 0))::bigint AS failed, \
                (coalesce(p.timed, 0) + coalesce(t.timed, 0))::bigint AS timed, \
                (coalesce(p.duration_ms, 0) + coalesce(t.duration_ms, 0))::bigint AS duration_ms \
         FROM slots s LEFT JOIN stored p ON p.bucket = s.bucket LEFT JOIN tail t ON t.bucket = s.bucket \
         ORDER BY s.bucket",
        n = resolution.buckets(),
        table = resolution.table(),
    );
    let mut tx = without_jit(pool).await?;
    let rows = sqlx::query_as(AssertSqlSafe(sql))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Failed and killed counts stop at this many (more shows as "100+"), so counting
/// them stays cheap however many the retention keeps.
pub const FINAL_COUNT_CAP: i64 = 100;

/// One queue right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, FromRow)]
pub struct QueueHealth {
    pub queue: String,
    /// Pending or retrying with `run_at` passed: what workers would fetch now (the
    /// queue depth).
    pub waiting: i64,
    /// Pending or retrying with `run_at` in the future (backoff, delayed).
    pub scheduled: i64,
    /// Fetched or running.
    pub running: i64,
    /// The job states of [`JobState`], for links to the job list.
    pub pending: i64,
    pub retrying: i64,
    /// Failed for good, up to [`FINAL_COUNT_CAP`] + 1.
    pub failed: i64,
    /// Killed, up to [`FINAL_COUNT_CAP`] + 1.
    pub killed: i64,
    /// When the longest-waiting job became due.
    pub oldest_waiting_since: Option<DateTime<Utc>>,
}

/// Every queue that has jobs, with what is waiting, running and failed.
pub async fn queue_health(pool: &PgPool) -> Result<Vec<QueueHealth>, DomainError> {
    // The queues: a skip scan over the job_type index, one probe per queue. (Listing
    // them first keeps the planner's estimate of the per-queue work small: folded into
    // one statement, its guess of 100 queues made the statement "expensive" enough to
    // be JIT-compiled, 20 ms per view.)
    let queues: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE queues AS ( \
             SELECT min(job_type) AS name FROM apalis.jobs \
             UNION ALL \
             SELECT (SELECT min(job_type) FROM apalis.jobs WHERE job_type > queues.name) \
             FROM queues WHERE queues.name IS NOT NULL \
         ) SELECT name FROM queues WHERE name IS NOT NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    // Pending or retrying, within apalis' fetch predicate so that only its partial
    // index is read (the state conditions alone do not let the planner prove that).
    let active = format!(
        "({} AND ({} OR {}))",
        queue::FETCHABLE,
        JobState::Pending.condition(),
        JobState::Retrying.condition()
    );
    let killed = format!(
        "(SELECT count(*) FROM (SELECT 1 FROM apalis.jobs j WHERE j.job_type = q.name AND {} LIMIT {}) c)",
        JobState::Killed.condition(),
        FINAL_COUNT_CAP + 1
    );
    // Failed for good = every Failed job minus the retrying ones (Failed with attempts
    // left, counted exactly above): an index-only walk of (job_type, status) that stops
    // after cap + 1 + retrying entries, where filtering on attempts would visit every
    // failed job of the history.
    let failed = format!(
        "greatest((SELECT count(*) FROM (SELECT 1 FROM apalis.jobs j WHERE j.job_type = q.name \
                   AND j.status = 'Failed' LIMIT {} + coalesce(a.retrying, 0)) c) - coalesce(a.retrying, 0), 0)",
        FINAL_COUNT_CAP + 1
    );
    let sql = format!(
        "WITH active AS ( \
             SELECT j.job_type, \
                    count(*) FILTER (WHERE j.run_at <= now()) AS waiting, \
                    count(*) FILTER (WHERE j.run_at > now()) AS scheduled, \
                    count(*) FILTER (WHERE {pending}) AS pending, \
                    count(*) FILTER (WHERE {retrying}) AS retrying, \
                    min(j.run_at) FILTER (WHERE j.run_at <= now()) AS oldest_waiting_since \
             FROM apalis.jobs j WHERE {active} GROUP BY j.job_type \
         ), running AS ( \
             SELECT j.job_type, count(*) AS running FROM apalis.jobs j WHERE {running} GROUP BY j.job_type \
         ) \
         SELECT q.name AS queue, coalesce(a.waiting, 0) AS waiting, coalesce(a.scheduled, 0) AS scheduled, \
                coalesce(r.running, 0) AS running, coalesce(a.pending, 0) AS pending, \
                coalesce(a.retrying, 0) AS retrying, {failed} AS failed, {killed} AS killed, \
                a.oldest_waiting_since \
         FROM unnest($1::text[]) AS q(name) \
         LEFT JOIN active a ON a.job_type = q.name LEFT JOIN running r ON r.job_type = q.name \
         ORDER BY q.name",
        pending = JobState::Pending.condition(),
        retrying = JobState::Retrying.condition(),
        running = JobState::Running.condition(),
    );
    // Active jobs are found through apalis' partial fetch index (pending or retrying:
    // the active set only). With bitmap scans the planner ANDs it with the status index
    // and reads every failed job of the history (4-13 ms at 1,000,000 jobs instead of
    // 0.1 ms): not for these statements.
    let mut tx = without_jit(pool).await?;
    sqlx::query("SET LOCAL enable_bitmapscan = off")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query_as(AssertSqlSafe(sql))
        .bind(queues)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}
