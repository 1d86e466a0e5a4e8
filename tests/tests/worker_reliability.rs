//! End-to-end: real `calsync worker` processes where the failure needs them — a nightly
//! tick that falls into a PostgreSQL outage, and replicas with different heartbeat
//! settings sharing a slow job.

use std::time::Duration;

use calsync_domain::queue;
use calsync_e2e::harness::*;
use calsync_fake_google::{FakeGoogle, FaultRule};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;

/// Scheduled ticks of `*/20 * * * * *`: every 20 s.
const TICK_SECS: i64 = 20;

async fn run_rows_for(pool: &PgPool, tick: DateTime<Utc>) -> Vec<(String, String)> {
    sqlx::query_as("SELECT trigger, enqueued_by FROM calsync.nightly_runs WHERE scheduled_for = $1")
        .bind(tick)
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_falls_into_a_postgres_outage_runs_once_when_the_database_is_back() {
    let cluster = PrivateCluster::start();
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&cluster.url()).await;
    seed_university(&pool, &fake, 5).await;
    let args = [
        "--nightly-schedule",
        "*/20 * * * * *",
        "--nightly-time-zone",
        "UTC",
        "--heartbeat-secs",
        "1",
        "--poll-secs",
        "1",
    ];
    let mut replicas = [
        WorkerProcess::spawn(&url, &fake, "outage-a", &args),
        WorkerProcess::spawn(&url, &fake, "outage-b", &args),
    ];
    // Both replicas up (a worker whose start-up meets a database outage exits for its
    // supervisor to restart it; past start-up everything it runs is supervised) and a
    // first tick run.
    wait_until(
        "both replicas started and a first tick ran",
        Duration::from_secs(60),
        || async {
            replicas
                .iter()
                .all(|w| w.log_text().contains("calsync worker started"))
                && sqlx::query_scalar::<_, i64>("SELECT count(*) FROM calsync.nightly_runs")
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|n| n >= 1)
        },
    )
    .await;

    // Down before the next tick, and longer than a pool's acquire timeout after it.
    cluster.stop();
    let stopped = Utc::now().timestamp();
    let missed = Utc
        .timestamp_opt((stopped / TICK_SECS + 1) * TICK_SECS, 0)
        .unwrap();
    // Only a failure of the missed tick itself counts: the replica that did not run the
    // first tick may still be trying it (its start-up catch-up, or the tick's own firing
    // on a loaded machine) when the database goes away, and that earlier tick fails too.
    let missed_failed = format!(
        "nightly calendar sync pass failed; retrying until it succeeds or its catch-up window ends scheduled_for={missed}"
    );
    wait_until(
        "a replica tried the missed tick and failed",
        Duration::from_secs(90),
        || async {
            replicas
                .iter()
                .any(|w| w.log_text().contains(&missed_failed))
        },
    )
    .await;
    assert!(Utc::now() > missed, "the missed tick's time has come");
    cluster.start_again();

    // Replicas that ran through the outage catch the tick up; exactly one of them wins.
    wait_until(
        "the missed tick ran after the database came back",
        Duration::from_secs(90),
        || async { !run_rows_for(&pool, missed).await.is_empty() },
    )
    .await;
    let rows = run_rows_for(&pool, missed).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "cron");
    assert!(
        rows[0].1.starts_with("outage-"),
        "run by a replica: {rows:?}"
    );
    let (n, ticks): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT scheduled_for) FROM calsync.nightly_runs")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, ticks, "one run per tick");
    for w in &mut replicas {
        assert!(w.is_running(), "{}", w.log_text());
        assert!(
            w.terminate(Duration::from_secs(30)).success(),
            "{}",
            w.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_different_heartbeats_leave_each_others_live_jobs_alone() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    // Four slow inserts: the sync runs for about 10 s, longer than three heartbeats of
    // the fast replica, while the slow replica beats only every 5 s.
    fake.add_fault(FaultRule::latency(Duration::from_millis(2500)).method("events.insert"));
    let mut slow = WorkerProcess::spawn(
        &url,
        &fake,
        "slowbeat",
        &["--no-cron", "--heartbeat-secs", "5", "--poll-secs", "1"],
    );
    let job = queue::enqueue_sync(&pool, users[0], "e2e", "test")
        .await
        .unwrap();
    let state = || {
        let pool = pool.clone();
        let job = job.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, i32)>(
                "SELECT status, lock_by, attempts FROM apalis.jobs WHERE id = $1",
            )
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    wait_until(
        "the slow-heartbeat replica runs the job",
        Duration::from_secs(30),
        || async {
            let (status, lock_by, _) = state().await;
            status == "Running" && lock_by.is_some_and(|l| l.starts_with("slowbeat"))
        },
    )
    .await;
    let mut fast = WorkerProcess::spawn(
        &url,
        &fake,
        "fastbeat",
        &["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"],
    );

    wait_until("the job finished", Duration::from_secs(60), || async {
        let (status, _, _) = state().await;
        !matches!(status.as_str(), "Running" | "Queued" | "Pending")
    })
    .await;
    let (status, lock_by, attempts) = state().await;
    assert_eq!(status, "Done", "{}", fast.log_text());
    assert_eq!(
        attempts, 1,
        "the live job was not handed to another replica"
    );
    assert!(
        lock_by.is_none_or(|l| l.starts_with("slowbeat")),
        "finished by the replica that ran it"
    );
    let inserts = fake
        .calls()
        .iter()
        .filter(|c| c.method == "events.insert")
        .count();
    assert_eq!(inserts, 4, "each event inserted once, by one sync");
    assert!(fast.is_running() && slow.is_running());
    for w in [&mut slow, &mut fast] {
        assert!(
            w.terminate(Duration::from_secs(30)).success(),
            "{}",
            w.log_text()
        );
    }
}
