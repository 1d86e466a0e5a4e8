//! End-to-end: job rows that Postgres accepts as JSON objects but serde cannot read
//! (numbers out of range, nesting deeper than serde_json's recursion limit) fail alone —
//! Killed with a clear error — while a real `calsync worker` keeps running and the
//! innocent jobs fetched in the same batch succeed on their first attempt.

use std::time::Duration;

use calsync_domain::queue;
use calsync_e2e::harness::*;
use calsync_fake_google::FakeGoogle;
use sqlx::PgPool;

/// Insert a sync job the way another service might: plain SQL, any JSON object.
async fn raw_job(pool: &PgPool, json: &str) -> String {
    sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to($1, 'UTF8'), 'Pending', 0, 5, now(), 0) \
         RETURNING id",
    )
    .bind(json)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("Postgres refused {json:.80}: {e}"))
}

async fn job(pool: &PgPool, id: &str) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, attempts, last_result ->> 'Err' FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for_status(pool: &PgPool, id: &str, status: &str, w: &WorkerProcess) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (now, _, _) = job(pool, id).await;
        if now == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} still {now}, expected {status}; worker log:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_payloads_fail_alone_and_the_worker_keeps_running() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 3).await;
    let deep = |user: i64| {
        format!(
            r#"{{"user_id": {user}, "reason": "deep", "x": {}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        )
    };

    // Poison first, innocents right behind: one fetch batch holds them all.
    let mut poison = vec![
        (
            raw_job(&pool, r#"{"user_id": 1e400}"#).await,
            "number out of range",
        ),
        (
            raw_job(&pool, &deep(users[2])).await,
            "recursion limit exceeded",
        ),
        (
            raw_job(&pool, r#"{"user_id": 987654, "run_id": 1e400}"#).await,
            "number out of range",
        ),
    ];
    let mut innocents = Vec::new();
    for &user in &users[..2] {
        innocents.push(
            queue::enqueue_sync(&pool, user, "e2e", "test")
                .await
                .unwrap(),
        );
    }

    let mut w = WorkerProcess::spawn(&url, &fake, "poison", &["--no-cron", "--poll-secs", "1"]);
    for id in &innocents {
        wait_for_status(&pool, id, "Done", &w).await;
    }
    for (id, _) in &poison {
        wait_for_status(&pool, id, "Killed", &w).await;
    }

    // A second round while the worker runs: poison next to the third user's job (its
    // slot was held by the deep poison job until that was killed).
    poison.push((
        raw_job(&pool, r#"{"user_id": 2, "reason": 1e999}"#).await,
        "number out of range",
    ));
    let third = queue::enqueue_sync(&pool, users[2], "e2e", "test")
        .await
        .unwrap();
    innocents.push(third.clone());
    wait_for_status(&pool, &third, "Done", &w).await;
    wait_for_status(&pool, &poison[3].0, "Killed", &w).await;

    for (id, needle) in &poison {
        let (_, _, err) = job(&pool, id).await;
        let err = err.unwrap_or_default();
        assert!(
            err.contains("malformed SyncUserJob payload") && err.contains(needle),
            "job {id}: {err}"
        );
    }
    for id in &innocents {
        let (status, attempts, err) = job(&pool, id).await;
        assert_eq!(
            (status.as_str(), attempts),
            ("Done", 1),
            "job {id} lost no attempt: {err:?}"
        );
    }
    for cal in ["e2e-cal-1", "e2e-cal-2", "e2e-cal-3"] {
        assert_eq!(fake.live_events(cal).len(), 4, "calendar {cal}");
    }
    assert!(w.is_running(), "poison must not stop the worker");
    let log = w.log_text();
    assert!(
        !log.contains("failed; restarting"),
        "the sync worker never stopped and restarted:\n{log}"
    );
    assert!(w.terminate(Duration::from_secs(20)).success());
}
