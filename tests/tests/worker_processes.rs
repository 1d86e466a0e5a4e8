//! End-to-end: real `calsync worker` processes against one database and the fake Google
//! Calendar API — fan-out once with several replicas, kill -9 mid-job, SIGTERM,
//! a PostgreSQL restart, and fault-injected Google.

use std::time::Duration;

use calsync_domain::queue::{self, RunTrigger};
use calsync_e2e::harness::*;
use calsync_fake_google::{FakeGoogle, FaultRule};
use sqlx::PgPool;

const EVENTS_PER_USER: usize = 4; // 2 courses × 2 meeting times

async fn active_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = 'sync-calendar' AND idempotency_key IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn fast_retries(pool: &PgPool) {
    sqlx::query("UPDATE calsync.queue_settings SET backoff_base_seconds = 0.05, backoff_cap_seconds = 0.2, default_max_attempts = 20")
        .execute(pool)
        .await
        .unwrap();
}

fn assert_calendar(fake: &FakeGoogle, cal: &str) {
    let live = fake.live_events(cal);
    assert_eq!(live.len(), EVENTS_PER_USER, "calendar {cal}: {live:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_fan_out_each_tick_once_and_sync_each_user_once() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 60).await;
    let args = [
        "--nightly-schedule",
        "*/2 * * * * *",
        "--concurrency",
        "4",
        "--heartbeat-secs",
        "1",
        "--poll-secs",
        "1",
    ];
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&url, &fake, &format!("replica{i}"), &args))
        .collect();

    wait_until("every user synced", Duration::from_secs(90), || async {
        unsynced_users(&pool).await == 0 && active_jobs(&pool).await == 0
    })
    .await;
    // Let at least two more ticks fire on all three replicas.
    let runs_now: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.nightly_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    wait_until("two more ticks", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.nightly_runs")
            .fetch_one(&pool)
            .await
            .unwrap();
        n >= runs_now + 2
    })
    .await;

    // One run row per tick, whoever fired it.
    let (rows, ticks): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT scheduled_for) FROM calsync.nightly_runs")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, ticks);
    // Each user was enqueued and synced exactly once in all those ticks.
    let per_user: Vec<(String, i64)> = sqlx::query_as(
        "SELECT calsync.job_payload(job) ->> 'user_id', count(*) FROM apalis.jobs \
         WHERE job_type = 'sync-calendar' GROUP BY 1 HAVING count(*) <> 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        per_user.is_empty(),
        "users with more than one job: {per_user:?}"
    );
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'sync-calendar' AND status = 'Done'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(done, users.len() as i64);
    for i in 1..=users.len() {
        assert_calendar(&fake, &format!("e2e-cal-{i}"));
    }
    let inserts = fake
        .calls()
        .iter()
        .filter(|c| c.method == "events.insert")
        .count();
    assert_eq!(
        inserts,
        users.len() * EVENTS_PER_USER,
        "every event inserted once"
    );
    let busy: usize = workers
        .iter()
        .filter(|w| w.log_text().contains("users to sync"))
        .count();
    assert!(busy >= 1);

    for w in &mut workers {
        assert!(
            w.terminate(Duration::from_secs(20)).success(),
            "{}",
            w.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_is_recovered_by_another_worker_without_duplicates() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    // Slow inserts keep the job in flight long enough to kill its worker mid-sync.
    fake.add_fault(FaultRule::latency(Duration::from_millis(700)).method("events.insert"));
    let args = ["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"];
    let mut a = WorkerProcess::spawn(&url, &fake, "victim", &args);
    let job = queue::enqueue_sync(&pool, users[0], "e2e", "test")
        .await
        .unwrap();
    wait_until("first event inserted", Duration::from_secs(30), || async {
        fake.calls()
            .iter()
            .any(|c| c.method == "events.insert" && c.status == 200)
    })
    .await;
    a.kill9();
    let status: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(&job)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        matches!(status.as_str(), "Running" | "Queued"),
        "job should be stranded mid-run, is {status}"
    );

    fake.clear_faults();
    let mut b = WorkerProcess::spawn(&url, &fake, "rescuer", &args);
    wait_until(
        "stranded job re-run to done",
        Duration::from_secs(60),
        || async {
            let s: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
                .bind(&job)
                .fetch_one(&pool)
                .await
                .unwrap();
            s == "Done"
        },
    )
    .await;
    assert_calendar(&fake, "e2e-cal-1");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM apalis.jobs WHERE id = $1")
        .bind(&job)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(attempts >= 2, "the rescue counts as an attempt");
    assert_eq!(unsynced_users(&pool).await, 0);
    assert!(b.terminate(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_job_finish() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    fake.add_fault(FaultRule::latency(Duration::from_millis(300)).method("events.insert"));
    let mut w = WorkerProcess::spawn(
        &url,
        &fake,
        "graceful",
        &["--no-cron", "--heartbeat-secs", "1"],
    );
    let job = queue::enqueue_sync(&pool, users[0], "e2e", "test")
        .await
        .unwrap();
    wait_until("sync in flight", Duration::from_secs(30), || async {
        fake.calls().iter().any(|c| c.method == "events.insert")
    })
    .await;
    let status = w.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", w.log_text());
    let s: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(&job)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(s, "Done", "{}", w.log_text());
    assert_calendar(&fake, "e2e-cal-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_recovers_from_a_postgres_restart() {
    let cluster = PrivateCluster::start();
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&cluster.url()).await;
    let users = seed_university(&pool, &fake, 10).await;
    let mut w = WorkerProcess::spawn(
        &url,
        &fake,
        "pgrestart",
        &["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"],
    );
    queue::run_nightly_pass(&pool, chrono::Utc::now(), RunTrigger::Manual, "e2e")
        .await
        .unwrap()
        .unwrap();
    wait_until("first pass synced", Duration::from_secs(60), || async {
        unsynced_users(&pool).await == 0
    })
    .await;

    cluster.stop();
    assert!(
        w.is_running(),
        "the worker must not exit when the database goes away"
    );
    cluster.start_again();
    // Acknowledgements lost to the outage are made up for: every job of the first pass
    // ends. (Until then a user's job is still active, so a pass would skip them as
    // "already queued" — and their next change would wait for the next night.)
    w.wait_until(
        &pool,
        "every job of the first pass acknowledged after the restart",
        Duration::from_secs(60),
        || async { active_jobs(&pool).await == 0 },
    )
    .await;

    sqlx::query("UPDATE courses SET title = title || ' (moved)'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(unsynced_users(&pool).await, users.len() as i64);
    queue::run_nightly_pass(&pool, chrono::Utc::now(), RunTrigger::Manual, "e2e")
        .await
        .unwrap()
        .unwrap();
    w.wait_until(
        &pool,
        "second pass synced after the restart",
        Duration::from_secs(90),
        || async { unsynced_users(&pool).await == 0 },
    )
    .await;
    assert!(w.is_running());
    let titles: Vec<String> = fake
        .live_events("e2e-cal-1")
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(titles.iter().all(|t| t.ends_with("(moved)")), "{titles:?}");
    assert!(
        w.terminate(Duration::from_secs(30)).success(),
        "{}",
        w.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injected_google_ends_with_everyone_synced_or_correctly_marked() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 30).await;
    fast_retries(&pool).await;
    let revoked = users[0];
    let deleted = users[1];
    fake.revoke_refresh_token(&format!("e2e-rt-{revoked}"));
    fake.delete_calendar("e2e-cal-2");
    fake.add_fault(FaultRule::error(500, "backendError").rate(0.08).seed(7));
    fake.add_fault(
        FaultRule::error(429, "rateLimitExceeded")
            .rate(0.05)
            .seed(11),
    );
    fake.add_fault(
        FaultRule::error(403, "userRateLimitExceeded")
            .rate(0.03)
            .seed(13),
    );
    fake.add_fault(FaultRule::non_json(502).rate(0.02).seed(17));
    let args = [
        "--no-cron",
        "--concurrency",
        "4",
        "--heartbeat-secs",
        "1",
        "--poll-secs",
        "1",
    ];
    let mut w1 = WorkerProcess::spawn(&url, &fake, "faulty1", &args);
    let mut w2 = WorkerProcess::spawn(&url, &fake, "faulty2", &args);
    let run = queue::run_nightly_pass(&pool, chrono::Utc::now(), RunTrigger::Manual, "e2e")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.enqueued, 30);
    wait_until("every job final", Duration::from_secs(120), || async {
        active_jobs(&pool).await == 0
    })
    .await;

    let status = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT calendar_sync_status FROM users WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(status(revoked).await, "needs_reauth");
    assert_eq!(status(deleted).await, "calendar_missing");
    calsync_domain::tracking::apply_pending_flags(&pool)
        .await
        .unwrap();
    let not_synced: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM users WHERE id <> ALL($1) AND (calendar_needs_sync OR last_calendar_sync_at IS NULL)",
    )
    .bind(vec![revoked, deleted])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(not_synced.is_empty(), "not synced: {not_synced:?}");
    for i in 3..=users.len() {
        assert_calendar(&fake, &format!("e2e-cal-{i}"));
    }
    let retried = fake.calls().iter().filter(|c| c.status >= 429).count();
    assert!(retried > 0, "faults were injected and survived");
    let run = queue::nightly_run(&pool, run.id).await.unwrap().unwrap();
    assert_eq!((run.succeeded, run.failed), (28, 2));
    assert!(run.finished_at.is_some());
    for w in [&mut w1, &mut w2] {
        assert!(w.terminate(Duration::from_secs(20)).success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_fail_their_job_and_never_stop_the_worker() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 2).await;
    let mut w = WorkerProcess::spawn(
        &url,
        &fake,
        "malformed",
        &["--no-cron", "--heartbeat-secs", "1"],
    );
    // Another service inserts jobs by hand: wrong shapes, a deleted user, then a good one.
    let insert = |json: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
                 VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to($1, 'UTF8'), 'Pending', 0, 5, now(), 0) RETURNING id",
            )
            .bind(json)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let bad_type = insert(r#"{"user_id": "abc"}"#).await;
    let no_user = insert(r#"{"reason": "forgot the user"}"#).await;
    let unknown = insert(r#"{"user_id": 987654}"#).await;
    // Bytes that are not JSON never get in.
    let err = sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', '\\x00ff'::bytea, 'Pending', 0, 5, now(), 0)",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
    let good = queue::enqueue_sync(&pool, users[1], "e2e", "test")
        .await
        .unwrap();

    let state = |id: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT status, last_result ->> 'Err' FROM apalis.jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    wait_until("good job done", Duration::from_secs(60), || async {
        state(good.clone()).await.0 == "Done"
    })
    .await;
    for (id, needle) in [
        (bad_type, "invalid type"),
        (no_user, "missing field `user_id`"),
        (unknown, "user 987654 does not exist"),
    ] {
        wait_until("malformed job killed", Duration::from_secs(30), || async {
            state(id.clone()).await.0 == "Killed"
        })
        .await;
        let (_, err) = state(id).await;
        let err = err.unwrap_or_default();
        assert!(err.contains(needle), "{err}");
    }
    assert!(w.is_running(), "malformed jobs must not stop the worker");
    assert!(w.terminate(Duration::from_secs(20)).success());
}
