//! `calsync bench` case `queue`: apalis-postgres draining no-op jobs vs. the textbook
//! SKIP LOCKED loop over a table with apalis' own schema.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use sqlx::PgPool;

use super::{Pair, ROUNDS, Row, checkpoint};

const QUEUE: &str = "bench-noop";
const CONCURRENCY: usize = 32;

async fn noop(_job: serde_json::Value) -> Result<(), BoxDynError> {
    Ok(())
}

/// `n` pending no-op jobs in `table` (the same rows on both sides).
async fn fill(pool: &PgPool, table: &str, n: i64) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         SELECT apalis.generate_ulid(), $1, convert_to('{{\"n\":' || g || '}}', 'UTF8'), 'Pending', 0, 3, now(), 0 \
         FROM generate_series(1, $2) g"
    )))
    .bind(QUEUE)
    .bind(n)
    .execute(pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
        .execute(pool)
        .await?;
    Ok(())
}

/// apalis' worker drains `n` jobs; jobs/s.
async fn apalis_round(pool: &PgPool, n: i64, round: usize) -> anyhow::Result<f64> {
    sqlx::query("TRUNCATE apalis.jobs CASCADE")
        .execute(pool)
        .await?;
    fill(pool, "apalis.jobs", n).await?;
    checkpoint(pool).await;
    let config = Config::default().queue(QUEUE).batch_size(CONCURRENCY);
    let backend = PostgresStorage::<serde_json::Value>::new(pool)
        .with_config(config)
        .with_pubsub()
        .poll_with_interval(Duration::from_millis(100));
    let ctx = WorkerContext::new(&format!("bench-noop-worker-{round}"));
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .concurrency(CONCURRENCY)
        .build(noop);
    let start = Instant::now();
    let handle = tokio::spawn(worker.run());
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(QUEUE)
        .fetch_one(pool)
        .await?;
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = ctx.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    Ok(rate)
}

/// Four loops claim batches of 32 with `FOR UPDATE SKIP LOCKED` (apalis' fetch
/// statement) and acknowledge them; jobs/s.
async fn floor_round(pool: &PgPool, n: i64) -> anyhow::Result<f64> {
    sqlx::query("TRUNCATE bench_queue").execute(pool).await?;
    fill(pool, "bench_queue", n).await?;
    checkpoint(pool).await;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        set.spawn(async move {
            loop {
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE bench_queue SET status = 'Queued', lock_by = 'bench-floor', lock_at = now() \
                     WHERE id IN (SELECT id FROM bench_queue \
                                  WHERE (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)) \
                                    AND run_at < now() AND job_type = $1 \
                                  ORDER BY priority DESC, run_at LIMIT 32 FOR UPDATE SKIP LOCKED) \
                     RETURNING id",
                )
                .bind(QUEUE)
                .fetch_all(&pool)
                .await?;
                if ids.is_empty() {
                    return Ok::<(), sqlx::Error>(());
                }
                sqlx::query(
                    "UPDATE bench_queue SET status = 'Done', attempts = 1, last_result = '{\"Ok\": null}', \
                     done_at = now() WHERE id = ANY($1) AND lock_by = 'bench-floor'",
                )
                .bind(&ids)
                .execute(&pool)
                .await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub(super) async fn run(pool: &PgPool, n: i64) -> anyhow::Result<Row> {
    // apalis' schema for jobs: its columns, primary key, idempotency key, fetch index,
    // lock_by index and worker foreign key (what a bare apalis queue maintains).
    sqlx::query(
        "CREATE TABLE bench_queue (LIKE apalis.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
    )
    .execute(pool)
    .await?;
    for sql in [
        "ALTER TABLE bench_queue ADD PRIMARY KEY (id)",
        "CREATE UNIQUE INDEX ON bench_queue (job_type, idempotency_key)",
        "CREATE INDEX ON bench_queue (job_type, priority DESC, run_at) \
         WHERE status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)",
        "CREATE INDEX ON bench_queue (lock_by)",
        "INSERT INTO apalis.workers (id, worker_type, storage_name) VALUES ('bench-floor', 'bench', 'bench') \
         ON CONFLICT DO NOTHING",
        "ALTER TABLE bench_queue ADD FOREIGN KEY (lock_by) REFERENCES apalis.workers (id)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    // Warm-up, untimed.
    apalis_round(pool, n / 10, 0).await?;
    floor_round(pool, n / 10).await?;
    let mut pair = Pair::default();
    for round in 0..ROUNDS {
        for calsync in Pair::order(round) {
            let rate = if calsync {
                apalis_round(pool, n, round + 1).await?
            } else {
                floor_round(pool, n).await?
            };
            pair.push(calsync, rate);
        }
    }
    sqlx::query("TRUNCATE apalis.jobs CASCADE")
        .execute(pool)
        .await?;
    sqlx::query("DROP TABLE bench_queue").execute(pool).await?;
    Ok(Row::new(
        "queue",
        &format!("queue: no-op jobs/s ({n} jobs, concurrency {CONCURRENCY})"),
        pair,
        "jobs/s",
        None,
        "baseline: 4 loops of apalis' fetch statement (batches of 32, SKIP LOCKED) and an \
         acknowledgement, on a table with apalis' indexes and constraints"
            .into(),
    ))
}
