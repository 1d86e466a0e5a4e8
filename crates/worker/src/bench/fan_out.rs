//! `calsync bench` case `fan-out`: the nightly pass for `n` due users vs. a bare
//! INSERT … SELECT of the same rows into a table with apalis' own indexes and
//! constraints.

use chrono::{TimeZone, Utc};
use sqlx::PgPool;

use calsync_domain::{queue::RunTrigger, users::DUE_CONDITION};

use super::{Goal, Pair, ROUNDS, Row, checkpoint, timed};

/// The bare INSERT … SELECT: the same due users, the same payload bytes, key, state
/// and ON CONFLICT, ascending ids; no run row, no trigger.
async fn bare(pool: &PgPool) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO bench_jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key) \
         SELECT lpad(id::text, 26, '0'), 'sync-calendar', \
                convert_to(jsonb_build_object('user_id', id, 'reason', 'nightly', 'run_id', 1::bigint)::text, 'UTF8'), \
                'Pending', 0, 8, clock_timestamp(), 0, 'sync-user:' || id \
         FROM users WHERE {DUE_CONDITION} \
         ON CONFLICT (job_type, idempotency_key) DO NOTHING"
    )))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    for sql in [
        "TRUNCATE apalis.jobs CASCADE",
        "TRUNCATE bench_jobs",
        "VACUUM ANALYZE apalis.jobs",
        "VACUUM ANALYZE bench_jobs",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    checkpoint(pool).await;
    Ok(())
}

pub(super) async fn run(pool: &PgPool, n: i64) -> anyhow::Result<Row> {
    sqlx::query(
        "INSERT INTO users (email, name, google_course_calendar_id, calendar_needs_sync) \
         SELECT 'fan' || g || '@bench.edu', 'U' || g, 'cal-' || g, true FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(pool)
    .await?;
    // apalis' schema for jobs as apalis' migrations intend it: its columns with their
    // defaults and checks, the primary key, the unique idempotency key, the partial fetch
    // index, the lock_by index and the worker foreign key.
    for sql in [
        "CREATE TABLE bench_jobs (LIKE apalis.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "ALTER TABLE bench_jobs ADD PRIMARY KEY (id)",
        "CREATE UNIQUE INDEX ON bench_jobs (job_type, idempotency_key)",
        "CREATE INDEX ON bench_jobs (job_type, priority DESC, run_at) \
         WHERE status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)",
        "CREATE INDEX ON bench_jobs (lock_by)",
        "ALTER TABLE bench_jobs ADD FOREIGN KEY (lock_by) REFERENCES apalis.workers (id)",
        "VACUUM ANALYZE users",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    let mut tick = 0;
    let mut pass = |pool: PgPool| {
        tick += 1;
        let scheduled = Utc.timestamp_opt(1_800_000_000 + tick * 86_400, 0).unwrap();
        async move {
            let run = calsync_domain::queue::run_nightly_pass(
                &pool,
                scheduled,
                RunTrigger::Manual,
                "bench",
            )
            .await?
            .ok_or_else(|| anyhow::anyhow!("the run exists"))?;
            Ok::<_, anyhow::Error>(run.enqueued as u64)
        }
    };
    // Warm-up, untimed (caches, plans).
    reset(pool).await?;
    pass(pool.clone()).await?;
    bare(pool).await?;
    let mut pair = Pair::default();
    for round in 0..ROUNDS {
        for calsync in Pair::order(round) {
            reset(pool).await?;
            let secs = if calsync {
                let f = pass(pool.clone());
                let start = std::time::Instant::now();
                let enqueued = f.await?;
                anyhow::ensure!(enqueued as i64 == n, "enqueued {enqueued} of {n}");
                start.elapsed().as_secs_f64()
            } else {
                timed(async {
                    let inserted = bare(pool).await?;
                    anyhow::ensure!(inserted as i64 == n, "inserted {inserted} of {n}");
                    Ok(())
                })
                .await?
            };
            pair.push(calsync, secs);
        }
    }
    let users_per_s = n as f64 / pair.subject.median();
    reset(pool).await?;
    for sql in ["DROP TABLE bench_jobs", "DELETE FROM users"] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    Ok(Row::new(
        "fan-out",
        &format!("nightly fan-out of {n} due users"),
        pair,
        "s",
        Some(Goal::AtMost(1.5)),
        format!(
            "calsync: the whole pass (run row, ULIDs, one-active-job keys, queue rules, audit row) \
             in one transaction, {users_per_s:.0} users/s; baseline: one INSERT … SELECT of the same \
             rows into a copy of apalis.jobs with apalis' indexes and constraints"
        ),
    ))
}
