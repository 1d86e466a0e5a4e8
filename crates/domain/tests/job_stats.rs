//! The incremental roll-up's exactly-once rule, the throughput series, and queue
//! health.

mod common;

use calsync_domain::{
    job_stats::{self, FINAL_COUNT_CAP, Resolution},
    queue,
};
use common::{exec, seed};
use sqlx::PgPool;

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
    let job = queue::enqueue_sync(&pool, u.alice, "t", "test")
        .await
        .unwrap();
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
    let job = queue::enqueue_sync(&pool, u.alice, "t", "test")
        .await
        .unwrap();
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
    let a = queue::enqueue_sync(&pool, u.alice, "t", "test")
        .await
        .unwrap();
    let b = queue::enqueue_sync(&pool, u.bob, "t", "test")
        .await
        .unwrap();
    let c = queue::enqueue_sync(&pool, u.carol, "t", "test")
        .await
        .unwrap();
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
    assert_eq!(
        (s.pending, s.retrying, s.failed),
        (1, 1, 0),
        "retrying is not failed"
    );
    // Failed for good next to the retrying one: exact below the cap, capped above.
    let final_failed = |n: i64| {
        format!(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
             SELECT apalis.generate_ulid(), 'sync-calendar', convert_to('{{\"user_id\": 1}}', 'UTF8'), 'Failed', 8, 8, now(), 0 \
             FROM generate_series(1, {n})"
        )
    };
    exec(&pool, &final_failed(3)).await;
    let s = job_stats::queue_health(&pool).await.unwrap().remove(1);
    assert_eq!((s.retrying, s.failed), (1, 3));
    exec(&pool, &final_failed(FINAL_COUNT_CAP)).await;
    let s = job_stats::queue_health(&pool).await.unwrap().remove(1);
    assert_eq!((s.retrying, s.failed), (1, FINAL_COUNT_CAP + 1), "capped");
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
