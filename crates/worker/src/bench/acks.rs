//! `calsync bench` case `acks`: apalis' acknowledgement of nightly jobs (its own
//! statement, prepared, four workers at once acknowledging jobs of one run) with
//! 10,000 vs. 1,000,000 finished jobs in the table, and what calsync's attempt
//! recording adds to it.

use sqlx::PgPool;

use super::{Goal, Pair, ROUNDS, Row, Samples, checkpoint, insert_history};

/// apalis-postgres 1.0's acknowledgement (`queries/task/handle_result.sql`), the
/// statement its workers run for every batch of finished tasks.
const APALIS_ACK: &str = "WITH j AS ( \
        SELECT (value ->> 'task_id')::text AS task_id, (value ->> 'attempt')::integer AS attempt, \
               value -> 'result' AS result, value ->> 'status' AS status \
        FROM jsonb_array_elements($1::jsonb) AS value \
    ), locked AS ( \
        SELECT jobs.id FROM apalis.jobs AS jobs INNER JOIN j ON j.task_id = jobs.id \
        WHERE jobs.lock_by = $2 ORDER BY jobs.id FOR UPDATE \
    ) \
    UPDATE apalis.jobs AS jobs SET status = j.status, attempts = j.attempt, last_result = j.result, done_at = NOW() \
    FROM j INNER JOIN locked ON locked.id = j.task_id WHERE jobs.id = locked.id";

const WORKERS: usize = 4;
const BATCH: usize = 32;
const BATCHES: usize = 20;

/// Jobs of nightly run `run` being run by `worker`, as apalis leaves them after fetching.
async fn running_jobs(
    pool: &PgPool,
    worker: &str,
    run: i64,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    // Users of their own per worker (`bench-ack-<digit>`): one active job per user.
    let slot = worker
        .bytes()
        .last()
        .map_or(0, |b| i64::from(b.saturating_sub(b'0')));
    let first_user = 1_000_000 + 100_000 * slot;
    Ok(sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, lock_by, lock_at) \
         SELECT apalis.generate_ulid(), 'sync-calendar', \
                convert_to(jsonb_build_object('user_id', $4 + g, 'reason', 'nightly', 'run_id', $2::bigint)::text, 'UTF8'), \
                'Running', 0, 8, now(), 0, $1, now() \
         FROM generate_series(1, $3) g RETURNING id",
    )
    .bind(worker)
    .bind(run)
    .bind(n as i64)
    .bind(first_user)
    .fetch_all(pool)
    .await?)
}

fn ack_body(ids: &[String]) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|id| serde_json::json!({"task_id": id, "attempt": 1, "result": {"Ok": null}, "status": "Done"}))
            .collect(),
    )
}

/// One round: `WORKERS` workers acknowledge `BATCHES` batches each, at once. Seconds per
/// acknowledged job.
async fn round(pool: &PgPool, run: i64) -> anyhow::Result<f64> {
    let mut work = Vec::new();
    for w in 0..WORKERS {
        let worker = format!("bench-ack-{w}");
        let ids = running_jobs(pool, &worker, run, BATCH * BATCHES).await?;
        work.push((worker, ids));
    }
    sqlx::query("ANALYZE apalis.jobs").execute(pool).await?;
    checkpoint(pool).await;
    let start = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (worker, ids) in work {
        let pool = pool.clone();
        set.spawn(async move {
            for batch in ids.chunks(BATCH) {
                let done = sqlx::query(APALIS_ACK)
                    .bind(ack_body(batch))
                    .bind(&worker)
                    .execute(&pool)
                    .await?
                    .rows_affected();
                anyhow::ensure!(
                    done as usize == batch.len(),
                    "acknowledged {done} of {}",
                    batch.len()
                );
            }
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let per_job = start.elapsed().as_secs_f64() / (WORKERS * BATCH * BATCHES) as f64;
    // The acknowledged jobs leave, so the history keeps its size.
    sqlx::query("DELETE FROM apalis.jobs WHERE id > '02'")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM apalis.jobs").execute(pool).await?;
    Ok(per_job)
}

/// Buffers one acknowledgement of a batch touches, planned as a prepared statement
/// reused many times is (the generic plan).
async fn buffers_per_ack(pool: &PgPool, run: i64) -> anyhow::Result<f64> {
    let ids = running_jobs(pool, "bench-ack-0", run, BATCH).await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PREPARE bench_ack(jsonb, text) AS {APALIS_ACK}"
    )))
    .execute(&mut *conn)
    .await?;
    let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bench_ack('{}', 'bench-ack-0')",
        ack_body(&ids).to_string().replace('\'', "''")
    )))
    .fetch_one(&mut *conn)
    .await?;
    for sql in ["DEALLOCATE bench_ack", "RESET plan_cache_mode"] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
    }
    drop(conn);
    sqlx::query("DELETE FROM apalis.jobs WHERE id > '02'")
        .execute(pool)
        .await?;
    let top = &plan[0]["Plan"];
    let blocks = top["Shared Hit Blocks"].as_f64().unwrap_or(0.0)
        + top["Shared Read Blocks"].as_f64().unwrap_or(0.0);
    Ok(blocks / BATCH as f64)
}

pub(super) async fn run(pool: &PgPool, small: i64, big: i64) -> anyhow::Result<Vec<Row>> {
    sqlx::query("TRUNCATE apalis.jobs CASCADE")
        .execute(pool)
        .await?;
    for w in 0..WORKERS {
        sqlx::query(
            "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen) \
             VALUES ($1, 'sync-calendar', 'bench', '', now()) ON CONFLICT DO NOTHING",
        )
        .bind(format!("bench-ack-{w}"))
        .execute(pool)
        .await?;
    }
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO calsync.nightly_runs (scheduled_for, trigger, enqueued_by, enqueued, enqueue_finished_at) \
         VALUES ('2030-01-01', 'manual', 'bench', 1000000000, now()) RETURNING id",
    )
    .fetch_one(pool)
    .await?;

    let mut sizes = Pair::default();
    let mut buffers = [0f64; 2];
    insert_history(pool, 1, small).await?;
    round(pool, run).await?; // warm-up
    for _ in 0..ROUNDS {
        sizes.push(false, round(pool, run).await?);
    }
    buffers[0] = buffers_per_ack(pool, run).await?;
    insert_history(pool, small + 1, big - small).await?;
    round(pool, run).await?; // warm-up
    for _ in 0..ROUNDS {
        sizes.push(true, round(pool, run).await?);
    }
    buffers[1] = buffers_per_ack(pool, run).await?;

    // What recording each attempt adds (at the big size), alternating.
    let mut recording = Pair::default();
    for r in 0..ROUNDS {
        for with in Pair::order(r) {
            let verb = if with { "ENABLE" } else { "DISABLE" };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE apalis.jobs {verb} TRIGGER calsync_jobs_record_attempt"
            )))
            .execute(pool)
            .await?;
            recording.push(with, round(pool, run).await?);
        }
    }
    sqlx::query("ALTER TABLE apalis.jobs ENABLE TRIGGER calsync_jobs_record_attempt")
        .execute(pool)
        .await?;
    let folded = calsync_domain::queue::fold_nightly_run_progress(pool).await?;
    anyhow::ensure!(folded > 0, "the acknowledged jobs counted for their run");
    sqlx::query("TRUNCATE apalis.jobs CASCADE")
        .execute(pool)
        .await?;

    let us = |s: &Samples| s.median() * 1e6;
    let extra = us(&recording.subject) - us(&recording.baseline);
    let per_job = |p: Pair| {
        let mut q = Pair::default();
        for v in p.subject.0 {
            q.push(true, v * 1e6);
        }
        for v in p.baseline.0 {
            q.push(false, v * 1e6);
        }
        q
    };
    Ok(vec![
        Row::new(
            "acks",
            &format!("acknowledgement per job at {big} vs {small} finished jobs"),
            per_job(sizes),
            "µs",
            Some(Goal::AtMost(1.2)),
            format!(
                "apalis' own statement, prepared, {WORKERS} workers at once acknowledging batches of {BATCH} \
                 jobs of one nightly run; {:.1} vs {:.1} buffers per acknowledged job (generic plan)",
                buffers[1], buffers[0]
            ),
        ),
        Row::new(
            "acks",
            &format!(
                "acknowledgement per job at {big} finished jobs, with vs without attempt recording"
            ),
            per_job(recording),
            "µs",
            None,
            format!("calsync's attempt trigger adds {extra:.0} µs per acknowledged job"),
        ),
    ])
}
