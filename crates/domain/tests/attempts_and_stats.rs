//! Job attempts recorded by the trigger on apalis' own status transitions (apalis'
//! fetch / lock / acknowledge / re-enqueue statements, verbatim), the incremental
//! roll-up's exactly-once rule, queue health, and the error search.

mod common;

use std::borrow::Cow;

use calsync_domain::{
    MIGRATOR,
    attempts::{self, AttemptOutcome, ErrorSearch},
    job_stats::{self, FINAL_COUNT_CAP, Resolution},
    jobs,
    queue::{self, JobFilter},
};
use common::{exec, seed};
use sqlx::{PgPool, migrate::Migrator};

const WORKER: &str = "test-worker";

async fn register_worker(pool: &PgPool) {
    exec(
        pool,
        &format!(
            "INSERT INTO apalis.workers (id, worker_type, storage_name) VALUES ('{WORKER}', 'sync-calendar', 'test')"
        ),
    )
    .await;
}

/// apalis' fetch (`apalis.get_jobs`) and lock (`lock_by_id.sql`): Queued, then Running.
async fn fetch_and_start(pool: &PgPool, id: &str) {
    exec(
        pool,
        &format!("UPDATE apalis.jobs SET run_at = now() - interval '1 second' WHERE id = '{id}'"),
    )
    .await;
    let fetched: Vec<String> =
        sqlx::query_scalar("SELECT id FROM apalis.get_jobs($1, 'sync-calendar', 10)")
            .bind(WORKER)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(fetched, [id.to_string()]);
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Running', lock_at = now(), lock_by = $2 \
         WHERE (status = 'Pending' OR status = 'Queued' OR (status = 'Failed' AND attempts < max_attempts)) \
           AND run_at < now() AND id = ANY($1)",
    )
    .bind(vec![id.to_string()])
    .bind(WORKER)
    .execute(pool)
    .await
    .unwrap();
}

/// apalis' acknowledgement (`handle_result.sql`).
async fn ack(pool: &PgPool, id: &str, attempt: i32, status: &str, result: serde_json::Value) {
    let payload = serde_json::json!([{
        "task_id": id, "attempt": attempt, "status": status, "result": result
    }]);
    let n = sqlx::query(
        "WITH j AS ( \
             SELECT (value ->> 'task_id')::text AS task_id, (value ->> 'attempt')::integer AS attempt, \
                    value -> 'result' AS result, value ->> 'status' AS status \
             FROM jsonb_array_elements($1::jsonb) AS value \
         ), locked AS ( \
             SELECT jobs.id FROM apalis.jobs AS jobs INNER JOIN j ON j.task_id = jobs.id \
             WHERE jobs.lock_by = $2 ORDER BY jobs.id FOR UPDATE \
         ) \
         UPDATE apalis.jobs AS jobs SET status = j.status, attempts = j.attempt, last_result = j.result, done_at = NOW() \
         FROM j INNER JOIN locked ON locked.id = j.task_id WHERE jobs.id = locked.id",
    )
    .bind(payload)
    .bind(WORKER)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
}

/// apalis' re-enqueue of a job whose worker stopped heart-beating
/// (`reenqueue_orphaned.sql`).
async fn orphan(pool: &PgPool, id: &str) {
    exec(
        pool,
        &format!(
            "UPDATE apalis.jobs SET status = 'Pending', done_at = NULL, lock_by = NULL, lock_at = NULL, \
             attempts = attempts + 1, last_result = '{{\"Err\": \"Re-enqueued due to worker heartbeat timeout.\"}}' \
             WHERE id = '{id}'"
        ),
    )
    .await;
}

async fn attempt_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM calsync.job_attempts")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn every_attempt_is_recorded_as_it_ends(pool: PgPool) {
    let u = seed(&pool).await;
    register_worker(&pool).await;
    let job = queue::enqueue_sync(&pool, u.alice, "t").await.unwrap();

    // Attempt 1 fails with a retryable error, attempt 2 succeeds.
    fetch_and_start(&pool, &job).await;
    assert_eq!(
        attempt_rows(&pool).await,
        0,
        "a running attempt is no row yet"
    );
    ack(
        &pool,
        &job,
        1,
        "Failed",
        serde_json::json!({"Err": "HTTP 503 backendError"}),
    )
    .await;
    fetch_and_start(&pool, &job).await;
    ack(
        &pool,
        &job,
        2,
        "Done",
        serde_json::json!({"Ok": {"inserted": 2}}),
    )
    .await;

    let rows = attempts::for_job(&pool, &job).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].attempt, rows[0].outcome, rows[0].error.as_deref()),
        (1, AttemptOutcome::Retried, Some("HTTP 503 backendError"))
    );
    assert_eq!(
        (rows[1].attempt, rows[1].outcome, rows[1].error.as_deref()),
        (2, AttemptOutcome::Done, None)
    );
    for a in &rows {
        assert_eq!(a.worker.as_deref(), Some(WORKER));
        let d = a.duration().expect("start recorded");
        assert!(d >= chrono::TimeDelta::zero(), "{d}");
    }

    // A worker that vanishes: abandoned, then the crash-loop guard gives up.
    let other = queue::enqueue_sync(&pool, u.bob, "t").await.unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET max_attempts = 2 WHERE id = '{other}'"),
    )
    .await;
    fetch_and_start(&pool, &other).await;
    orphan(&pool, &other).await;
    fetch_and_start(&pool, &other).await;
    orphan(&pool, &other).await;
    let rows = attempts::for_job(&pool, &other).await.unwrap();
    let outcomes: Vec<_> = rows.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Abandoned, AttemptOutcome::Failed]
    );
    assert!(
        rows[1]
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts")
    );

    // A permanent error (Killed) and a last attempt (Failed, no attempts left) are final.
    let third = queue::enqueue_sync(&pool, u.carol, "t").await.unwrap();
    fetch_and_start(&pool, &third).await;
    ack(
        &pool,
        &third,
        1,
        "Killed",
        serde_json::json!({"Err": "invalid_grant"}),
    )
    .await;
    assert_eq!(
        attempts::for_job(&pool, &third).await.unwrap()[0].outcome,
        AttemptOutcome::Failed
    );

    // Operator actions are not attempts.
    let before = attempt_rows(&pool).await;
    let f = |id: &str| JobFilter {
        ids: Some(vec![id.to_string()]),
        ..Default::default()
    };
    queue::retry_jobs(&pool, &f(&third), "test").await.unwrap();
    queue::discard_jobs(&pool, &f(&third), "test")
        .await
        .unwrap();
    assert_eq!(attempt_rows(&pool).await, before);

    // Attempts go with their job when it is pruned.
    exec(
        &pool,
        "UPDATE apalis.jobs SET done_at = now() - interval '40 days'",
    )
    .await;
    let pruned = queue::prune_finished_jobs(&pool, 30).await.unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(attempt_rows(&pool).await, 0);
}

async fn totals(pool: &PgPool) -> (i64, i64, i64, i64) {
    let mut sum = job_stats::Bucket::default();
    for b in job_stats::throughput(pool, Resolution::Minute)
        .await
        .unwrap()
    {
        sum.add(&b);
    }
    let mut hours = job_stats::Bucket::default();
    for b in job_stats::throughput(pool, Resolution::Hour).await.unwrap() {
        hours.add(&b);
    }
    assert_eq!(
        (sum.done, sum.retried, sum.failed),
        (hours.done, hours.retried, hours.failed),
        "minute and hour series agree"
    );
    (sum.done, sum.retried, sum.abandoned, sum.failed)
}

/// A finished attempt (as the trigger writes it) in its own transaction, left open.
async fn attempt_in_open_tx(
    pool: &PgPool,
    job: &str,
    outcome: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO calsync.job_attempts (job_id, queue, attempt, started_at, finished_at, outcome) \
         VALUES ($1, 'sync-calendar', 1, now() - interval '2 seconds', now(), $2)",
    )
    .bind(job)
    .bind(outcome)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

#[sqlx::test(migrations = false)]
async fn the_roll_up_counts_every_attempt_exactly_once(pool: PgPool) {
    let u = seed(&pool).await;
    let job = queue::enqueue_sync(&pool, u.alice, "t").await.unwrap();
    assert_eq!(totals(&pool).await, (0, 0, 0, 0));

    // T1 (older) is still open while T2 (newer) commits: a watermark by row id would
    // skip T1's row for ever once T2's is rolled up.
    let t1 = attempt_in_open_tx(&pool, &job, "failed").await;
    let t2 = attempt_in_open_tx(&pool, &job, "done").await;
    t2.commit().await.unwrap();
    assert_eq!(
        totals(&pool).await,
        (1, 0, 0, 0),
        "readers see T2 in the tail"
    );
    let r = job_stats::roll_up(&pool).await.unwrap();
    assert!(r.ran);
    assert_eq!(
        r.attempts, 0,
        "T1 is open, so nothing at or after it is final"
    );
    t1.commit().await.unwrap();
    assert_eq!(totals(&pool).await, (1, 0, 0, 1));
    let mut rolled = catch_up(&pool, 2).await;
    assert_eq!(rolled, 2);
    assert_eq!(totals(&pool).await, (1, 0, 0, 1), "rolled up, not doubled");
    assert_eq!(job_stats::roll_up(&pool).await.unwrap().attempts, 0);

    // Many roll-ups at once while attempts keep arriving: still each counted once.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let pool = pool.clone();
        let job = job.clone();
        writers.spawn(async move {
            for i in 0..25 {
                let outcome = ["done", "retried", "abandoned", "failed"][(w + i) % 4];
                attempt_in_open_tx(&pool, &job, outcome)
                    .await
                    .commit()
                    .await
                    .unwrap();
            }
        });
    }
    let mut rollers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        rollers.spawn(async move {
            let mut n = 0;
            for _ in 0..10 {
                n += job_stats::roll_up(&pool).await.unwrap().attempts;
                assert_eq!(below_watermark(&pool).await, (true, true));
            }
            n
        });
    }
    writers.join_all().await;
    rolled += rollers.join_all().await.into_iter().sum::<i64>();
    assert_eq!(
        totals(&pool).await,
        (26, 25, 25, 26),
        "exact before the roll-up caught up"
    );
    assert!(rolled <= 102);
    assert_eq!(
        stored(&pool).await,
        rolled,
        "the buckets hold what the roll-ups added"
    );
    assert_eq!(below_watermark(&pool).await, (true, true));
    rolled += catch_up(&pool, 102 - rolled).await;
    assert_eq!(rolled, 102);
    assert_eq!(stored(&pool).await, 102);
    assert_eq!(totals(&pool).await, (26, 25, 25, 26));
}

/// Attempts in the minute buckets.
async fn stored(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(done + retried + abandoned + failed), 0)::bigint FROM calsync.job_stats_minute",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The roll-up's invariant, read in one snapshot: the minute and hour buckets hold
/// exactly the attempts below the watermark.
async fn below_watermark(pool: &PgPool) -> (bool, bool) {
    sqlx::query_as(
        "WITH below AS (SELECT count(*) AS n FROM calsync.job_attempts \
                        WHERE tx < (SELECT watermark FROM calsync.job_stats_rollup)) \
         SELECT (SELECT coalesce(sum(done + retried + abandoned + failed), 0) FROM calsync.job_stats_minute) = below.n, \
                (SELECT coalesce(sum(done + retried + abandoned + failed), 0) FROM calsync.job_stats_hour) = below.n \
         FROM below",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Roll up until `n` more attempts are in the buckets. Snapshots' xmin is cluster-wide:
/// another test's open transaction holds the roll-up back (readers stay exact), so
/// this polls with a deadline.
async fn catch_up(pool: &PgPool, n: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut rolled = 0;
    while rolled < n {
        rolled += job_stats::roll_up(pool).await.unwrap().attempts;
        assert!(
            std::time::Instant::now() < deadline,
            "roll-up stuck at {rolled} of {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    rolled
}

#[sqlx::test(migrations = false)]
async fn series_are_dense_and_bucketed_in_utc(pool: PgPool) {
    let u = seed(&pool).await;
    let job = queue::enqueue_sync(&pool, u.alice, "t").await.unwrap();
    exec(&pool, "SET TIME ZONE 'Asia/Kolkata'").await; // a half-hour offset
    for (ago, outcome) in [
        ("0 minutes", "done"),
        ("90 minutes", "failed"),
        ("3 days", "retried"),
        ("20 days", "done"),
    ] {
        exec(
            &pool,
            &format!(
                "INSERT INTO calsync.job_attempts (job_id, queue, attempt, started_at, finished_at, outcome) \
                 VALUES ('{job}', 'sync-calendar', 1, now() - interval '{ago}' - interval '1500 ms', now() - interval '{ago}', '{outcome}')"
            ),
        )
        .await;
    }
    job_stats::roll_up(&pool).await.unwrap();
    let minutes = job_stats::throughput(&pool, Resolution::Minute)
        .await
        .unwrap();
    assert_eq!(minutes.len(), 1440);
    assert!(
        minutes
            .windows(2)
            .all(|w| w[1].start - w[0].start == chrono::TimeDelta::minutes(1))
    );
    let last = minutes.last().unwrap();
    assert_eq!(last.done, 1, "the current minute");
    assert_eq!(last.mean_duration_ms(), Some(1500.0));
    assert_eq!(minutes.iter().map(|b| b.failed).sum::<i64>(), 1);
    assert_eq!(
        minutes.iter().map(|b| b.retried).sum::<i64>(),
        0,
        "3 days ago is outside 24 h"
    );
    let hours = job_stats::throughput(&pool, Resolution::Hour)
        .await
        .unwrap();
    assert_eq!(hours.len(), 336);
    assert!(
        hours.iter().all(|b| b.start.timestamp() % 3600 == 0),
        "UTC hours"
    );
    assert_eq!(hours.iter().map(|b| b.retried).sum::<i64>(), 1);
    assert_eq!(
        hours.iter().map(|b| b.done).sum::<i64>(),
        1,
        "20 days ago is outside 14 days"
    );
}

#[sqlx::test(migrations = false)]
async fn queue_health_counts_active_jobs_and_caps_finished_ones(pool: PgPool) {
    let u = seed(&pool).await;
    assert!(job_stats::queue_health(&pool).await.unwrap().is_empty());
    let a = queue::enqueue_sync(&pool, u.alice, "t").await.unwrap();
    let b = queue::enqueue_sync(&pool, u.bob, "t").await.unwrap();
    let c = queue::enqueue_sync(&pool, u.carol, "t").await.unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET run_at = now() - interval '10 minutes' WHERE id = '{a}'"),
    )
    .await;
    exec(&pool, &format!("UPDATE apalis.jobs SET status = 'Failed', attempts = 1, run_at = now() + interval '1 hour' WHERE id = '{b}'")).await;
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Running', lock_at = now() WHERE id = '{c}'"),
    )
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
             SELECT apalis.generate_ulid(), 'sync-calendar', convert_to('{{\"user_id\": 1}}', 'UTF8'), 'Killed', 1, 8, now(), 0 \
             FROM generate_series(1, {})",
            FINAL_COUNT_CAP + 5
        ),
    )
    .await;
    exec(
        &pool,
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'other-queue', convert_to('{}', 'UTF8'), 'Failed', 3, 3, now(), 0)",
    )
    .await;
    let h = job_stats::queue_health(&pool).await.unwrap();
    let names: Vec<&str> = h.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(names, ["other-queue", "sync-calendar"]);
    let s = &h[1];
    assert_eq!((s.waiting, s.scheduled, s.running), (1, 1, 1));
    assert_eq!((s.pending, s.retrying, s.failed), (1, 1, 0));
    assert_eq!(s.killed, FINAL_COUNT_CAP + 1, "capped");
    let since = s.oldest_waiting_since.expect("a waiting job");
    let age = chrono::Utc::now() - since;
    assert!(
        age >= chrono::TimeDelta::minutes(9) && age < chrono::TimeDelta::minutes(11),
        "{age}"
    );
    assert_eq!(
        (h[0].failed, h[0].waiting, h[0].oldest_waiting_since),
        (1, 0, None)
    );
}

#[sqlx::test(migrations = false)]
async fn jobs_are_found_by_any_attempts_error_and_show_durations(pool: PgPool) {
    let u = seed(&pool).await;
    register_worker(&pool).await;
    assert!(
        attempts::error_search_indexed(&pool).await.unwrap(),
        "pg_trgm is available here"
    );
    let recovered = queue::enqueue_sync(&pool, u.alice, "t").await.unwrap();
    fetch_and_start(&pool, &recovered).await;
    ack(
        &pool,
        &recovered,
        1,
        "Failed",
        serde_json::json!({"Err": "Google said: HTTP 503 backendError (50% of calls)"}),
    )
    .await;
    fetch_and_start(&pool, &recovered).await;
    ack(
        &pool,
        &recovered,
        2,
        "Done",
        serde_json::json!({"Ok": null}),
    )
    .await;
    let dead = queue::enqueue_sync(&pool, u.bob, "t").await.unwrap();
    fetch_and_start(&pool, &dead).await;
    ack(
        &pool,
        &dead,
        1,
        "Killed",
        serde_json::json!({"Err": "token refresh failed: invalid_grant"}),
    )
    .await;
    let running = queue::enqueue_sync(&pool, u.carol, "t").await.unwrap();
    fetch_and_start(&pool, &running).await;
    exec(
        &pool,
        &format!(
            "UPDATE apalis.jobs SET lock_at = now() - interval '5 seconds' WHERE id = '{running}'"
        ),
    )
    .await;

    let find = |text: &'static str| {
        let pool = pool.clone();
        async move {
            let s = ErrorSearch::new(text).unwrap();
            jobs::search(&pool, &JobFilter::default(), Some(&s), None, 10)
                .await
                .unwrap()
        }
    };
    let hits = find("backenderror").await;
    assert_eq!(hits.len(), 1, "case-insensitive");
    assert_eq!(hits[0].id, recovered, "found by an earlier attempt's error");
    assert!(hits[0].last_error.is_none(), "its last attempt succeeded");
    assert!(
        hits[0]
            .matched_error
            .as_deref()
            .unwrap()
            .contains("HTTP 503")
    );
    assert_eq!(find("50% of").await.len(), 1, "% is literal");
    assert!(find("5_% of").await.is_empty(), "_ is literal");
    assert_eq!(find("INVALID_GRANT").await[0].id, dead);
    assert!(find("no such error").await.is_empty());
    // Combined with the other filters.
    let s = ErrorSearch::new("invalid_grant").unwrap();
    let mine = JobFilter {
        user_id: Some(u.alice),
        ..Default::default()
    };
    assert!(
        jobs::search(&pool, &mine, Some(&s), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let all = jobs::list(&pool, &JobFilter::default(), None, 10)
        .await
        .unwrap();
    let by_id = |id: &str| all.iter().find(|j| j.id == id).unwrap().clone();
    assert!(by_id(&recovered).duration_ms.is_some());
    let live = by_id(&running).duration_ms.expect("running so far");
    assert!((5000..60_000).contains(&live), "{live}");
    assert!(by_id(&running).matched_error.is_none());
}

#[sqlx::test(migrations = false)]
async fn the_migration_backfills_jobs_that_ended_before_it(pool: PgPool) {
    apalis_postgres::PostgresStorage::setup(&pool)
        .await
        .unwrap();
    let version = 20261125000500;
    let earlier = Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    earlier.run(&pool).await.unwrap();
    exec(
        &pool,
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ('a@uni.edu', 'A', 'cal')",
    )
    .await;
    exec(
        &pool,
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, lock_at, done_at, last_result) VALUES \
         (apalis.generate_ulid(), 'sync-calendar', convert_to('{\"user_id\": 1}', 'UTF8'), 'Killed', 3, 8, now(), 0, now() - interval '1 minute', now(), '{\"Err\": \"calendar gone\"}'), \
         (apalis.generate_ulid(), 'sync-calendar', convert_to('{\"user_id\": 1}', 'UTF8'), 'Done', 1, 8, now(), 0, now() - interval '1 minute', now(), '{\"Ok\": null}'), \
         (apalis.generate_ulid(), 'sync-calendar', convert_to('{\"user_id\": 1}', 'UTF8'), 'Pending', 0, 8, now(), 0, NULL, NULL, NULL)",
    )
    .await;
    calsync_domain::migrate(&pool).await.unwrap();
    let rows: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT outcome, attempt, error FROM calsync.job_attempts ORDER BY outcome")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("done".to_string(), 1, None),
            ("failed".to_string(), 3, Some("calendar gone".to_string()))
        ]
    );
    assert_eq!(
        totals(&pool).await,
        (1, 0, 0, 1),
        "and the charts show them"
    );
}
