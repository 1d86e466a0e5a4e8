//! Queue rules: enqueue API, one active job per user, exactly-once nightly fan-out,
//! payload validation, retry backoff, crash-loop guard, operator retry/discard.

mod common;

use calsync_domain::{
    DomainError,
    queue::{self, JobFilter, JobState, RunTrigger, SyncUserJob},
};
use chrono::{TimeZone, Utc};
use common::{exec, seed};
use sqlx::PgPool;

async fn job_row(pool: &PgPool, id: &str) -> (String, i32, i32, Option<String>, f64) {
    sqlx::query_as(
        "SELECT status, attempts, max_attempts, idempotency_key, \
                extract(epoch FROM run_at - now())::float8 FROM apalis.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn active_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'sync-calendar' AND idempotency_key IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn enqueue_is_idempotent_and_validates_users(pool: PgPool) {
    let u = seed(&pool).await;
    let a = queue::enqueue_sync(&pool, u.alice, "test", "enqueuer")
        .await
        .unwrap();
    let b = queue::enqueue_sync(&pool, u.alice, "again", "enqueuer")
        .await
        .unwrap();
    assert_eq!(a, b, "a second enqueue returns the active job");
    assert_eq!(a.len(), 26, "apalis job ids are ULIDs");
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT calsync.job_payload(job) FROM apalis.jobs WHERE id = $1")
            .bind(&a)
            .fetch_one(&pool)
            .await
            .unwrap();
    let job = SyncUserJob::from_payload(&payload).unwrap();
    assert_eq!(job.user_id, u.alice);
    assert_eq!(job.reason, "test");

    assert!(matches!(
        queue::enqueue_sync(&pool, 987_654, "x", "enqueuer").await,
        Err(DomainError::UnknownUser(987_654))
    ));
    exec(
        &pool,
        &format!(
            "UPDATE users SET google_course_calendar_id = NULL WHERE id = {}",
            u.carol
        ),
    )
    .await;
    assert!(matches!(
        queue::enqueue_sync(&pool, u.carol, "x", "enqueuer").await,
        Err(DomainError::NoCalendar(_))
    ));
    assert_eq!(
        active_jobs(&pool).await,
        1,
        "failed enqueues insert nothing"
    );

    // Once the job is done the user can be enqueued again.
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Done' WHERE id = '{a}'"),
    )
    .await;
    let c = queue::enqueue_sync(&pool, u.alice, "later", "enqueuer")
        .await
        .unwrap();
    assert_ne!(a, c);
}

#[sqlx::test(migrations = false)]
async fn malformed_payloads_are_rejected_at_insert_or_fail_validation(pool: PgPool) {
    let _ = seed(&pool).await;
    let err = sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', '\\xdeadbeef'::bytea, 'Pending', 0, 8, now(), 0)",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("malformed sync-calendar job payload"),
        "{err}"
    );
    // Valid JSON of the wrong shape gets in, and the handler's validation names the problem.
    for (json, needle) in [
        (serde_json::json!({"user_id": "abc"}), "invalid type"),
        (serde_json::json!({"user": 1}), "missing field `user_id`"),
        (serde_json::json!({"user_id": -3}), "must be positive"),
    ] {
        let e = SyncUserJob::from_payload(&json).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        assert!(
            e.to_string().contains("malformed SyncUserJob payload"),
            "{e}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn nightly_pass_runs_once_per_tick_and_never_duplicates_active_jobs(pool: PgPool) {
    let u = seed(&pool).await;
    // alice flagged, bob never synced, carol synced; dave flagged without a calendar.
    exec(
        &pool,
        &format!(
            "UPDATE users SET calendar_needs_sync = true WHERE id = {}",
            u.alice
        ),
    )
    .await;
    exec(
        &pool,
        &format!(
            "UPDATE users SET last_calendar_sync_at = NULL WHERE id = {}",
            u.bob
        ),
    )
    .await;
    exec(&pool, "INSERT INTO users (email, name, calendar_needs_sync) VALUES ('dave@uni.edu', 'Dave', true)").await;
    // bob already has a job queued by another service.
    let bobs = queue::enqueue_sync(&pool, u.bob, "api", "enqueuer")
        .await
        .unwrap();

    let tick = Utc.with_ymd_and_hms(2026, 11, 25, 8, 30, 0).unwrap();
    let run = queue::run_nightly_pass(&pool, tick, RunTrigger::Cron, "replica-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.users_due, 2);
    assert_eq!(run.enqueued, 1);
    assert_eq!(run.already_queued, 1);
    // Every other replica firing for the same tick does nothing.
    for replica in ["replica-2", "replica-3"] {
        assert!(
            queue::run_nightly_pass(&pool, tick, RunTrigger::Cron, replica)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(active_jobs(&pool).await, 2);
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT calsync.job_payload(job) ->> 'user_id' FROM apalis.jobs ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(users, vec![u.alice.to_string(), u.bob.to_string()]);
    // bob's existing job was kept, not replaced.
    assert_eq!(job_row(&pool, &bobs).await.0, "Pending");

    // Counters: finishing the run's job counts it; the run finishes when all are counted.
    let alice_job: String = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE calsync.job_payload(job) ->> 'run_id' = $1",
    )
    .bind(run.id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Done', attempts = 1 WHERE id = '{alice_job}'"),
    )
    .await;
    let run = queue::nightly_run(&pool, run.id).await.unwrap().unwrap();
    assert_eq!((run.succeeded, run.failed), (1, 0));
    assert!(run.finished_at.is_some());
}

#[sqlx::test(migrations = false)]
async fn failed_attempts_back_off_exponentially_and_release_the_user_at_the_end(pool: PgPool) {
    let u = seed(&pool).await;
    let id = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    let mut last_delay = 0.0;
    for attempt in 1..=3 {
        // What apalis' ack does after a failed attempt.
        exec(
            &pool,
            &format!("UPDATE apalis.jobs SET status = 'Running' WHERE id = '{id}'"),
        )
        .await;
        exec(
            &pool,
            &format!("UPDATE apalis.jobs SET status = 'Failed', attempts = {attempt}, last_result = '{{\"Err\":\"503\"}}' WHERE id = '{id}'"),
        )
        .await;
        let (status, _, _, key, delay) = job_row(&pool, &id).await;
        assert_eq!(status, "Failed");
        assert_eq!(
            key.as_deref(),
            Some(format!("sync-user:{}", u.alice).as_str()),
            "still the active job"
        );
        let base = 30.0 * 2f64.powi(attempt - 1);
        assert!(
            delay >= base * 0.5 - 1.0 && delay <= base + 1.0,
            "attempt {attempt}: delay {delay} vs base {base}"
        );
        if attempt > 1 {
            assert!(delay > last_delay * 0.9 || delay >= base * 0.5 - 1.0);
        }
        last_delay = delay;
    }
    // The last attempt fails: the job is final and the user's slot is released.
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Running' WHERE id = '{id}'"),
    )
    .await;
    exec(
        &pool,
        &format!(
            "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts WHERE id = '{id}'"
        ),
    )
    .await;
    let (_, _, _, key, _) = job_row(&pool, &id).await;
    assert_eq!(key, None);
    assert_ne!(
        queue::enqueue_sync(&pool, u.alice, "again", "enqueuer")
            .await
            .unwrap(),
        id
    );
}

#[sqlx::test(migrations = false)]
async fn a_job_that_keeps_killing_its_worker_is_given_up(pool: PgPool) {
    let u = seed(&pool).await;
    let id = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET max_attempts = 3 WHERE id = '{id}'"),
    )
    .await;
    for _ in 0..3 {
        // A worker fetched it and died; apalis' orphan rescue puts it back with attempts + 1.
        exec(
            &pool,
            &format!("UPDATE apalis.jobs SET status = 'Running' WHERE id = '{id}'"),
        )
        .await;
        exec(
            &pool,
            &format!("UPDATE apalis.jobs SET status = 'Pending', attempts = attempts + 1, last_result = '{{\"Err\": \"Re-enqueued due to worker heartbeat timeout.\"}}' WHERE id = '{id}'"),
        )
        .await;
    }
    let (status, attempts, _, key, _) = job_row(&pool, &id).await;
    assert_eq!((status.as_str(), attempts), ("Killed", 3));
    assert_eq!(key, None);
    let err: String =
        sqlx::query_scalar("SELECT last_result ->> 'Err' FROM apalis.jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(err.contains("gave up after 3 attempts"), "{err}");
}

#[sqlx::test(migrations = false)]
async fn retry_and_discard_respect_one_active_job_per_user(pool: PgPool) {
    let u = seed(&pool).await;
    let a1 = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Killed' WHERE id = '{a1}'"),
    )
    .await;
    let a2 = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(
        &pool,
        &format!(
            "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts WHERE id = '{a2}'"
        ),
    )
    .await;
    let b1 = queue::enqueue_sync(&pool, u.bob, "t", "enqueuer")
        .await
        .unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Killed' WHERE id = '{b1}'"),
    )
    .await;
    let c1 = queue::enqueue_sync(&pool, u.carol, "t", "enqueuer")
        .await
        .unwrap(); // still pending

    // Retry everything failed or killed: alice's two jobs collapse to one, bob's is retried.
    let out = queue::retry_jobs(&pool, &JobFilter::default(), "tester")
        .await
        .unwrap();
    assert_eq!(out.changed.len(), 2, "{out:?}");
    assert_eq!(out.skipped, 1);
    assert!(out.changed.contains(&b1));
    assert_eq!(active_jobs(&pool).await, 3);
    let (status, attempts, _, _, delay) = job_row(&pool, &b1).await;
    assert_eq!((status.as_str(), attempts), ("Pending", 0));
    assert!(delay <= 0.5);

    // Filtered retry: nothing failed for carol.
    let f = JobFilter {
        user_id: Some(u.carol),
        state: Some(JobState::Failed),
        ..Default::default()
    };
    assert!(
        queue::retry_jobs(&pool, &f, "tester")
            .await
            .unwrap()
            .changed
            .is_empty()
    );

    // Discard carol's pending job: it is killed and her slot is free again.
    let f = JobFilter {
        user_id: Some(u.carol),
        ..Default::default()
    };
    let out = queue::discard_jobs(&pool, &f, "tester").await.unwrap();
    assert_eq!(out.changed, vec![c1.clone()]);
    assert_eq!(job_row(&pool, &c1).await.0, "Killed");
    assert_ne!(
        queue::enqueue_sync(&pool, u.carol, "t", "enqueuer")
            .await
            .unwrap(),
        c1
    );

    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calsync.audit_log WHERE actor = 'tester'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audits, 3);
    let counts = queue::job_counts(&pool).await.unwrap();
    assert!(
        counts
            .iter()
            .any(|(q, s, n)| q == "sync-calendar" && *s == JobState::Killed && *n >= 2)
    );
}

#[sqlx::test(migrations = false)]
async fn a_retry_hint_pushes_the_next_attempt_past_the_backoff(pool: PgPool) {
    let u = seed(&pool).await;
    let id = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Running' WHERE id = '{id}'"),
    )
    .await;
    // The handler learned Google wants an hour (daily quota)…
    exec(
        &pool,
        &format!("INSERT INTO calsync.retry_hints (job_id, not_before) VALUES ('{id}', now() + interval '1 hour')"),
    )
    .await;
    // …and apalis acks the failure.
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Failed', attempts = 1 WHERE id = '{id}'"),
    )
    .await;
    let (_, _, _, _, delay) = job_row(&pool, &id).await;
    assert!(delay > 3500.0, "run_at must honour the hint, got {delay} s");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.retry_hints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a hint is used once");
}

#[sqlx::test(migrations = false)]
async fn pruning_removes_only_old_finished_jobs(pool: PgPool) {
    let u = seed(&pool).await;
    let old_done = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(&pool, &format!("UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '40 days' WHERE id = '{old_done}'")).await;
    let old_killed = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(&pool, &format!("UPDATE apalis.jobs SET status = 'Killed', done_at = now() - interval '40 days' WHERE id = '{old_killed}'")).await;
    let recent_done = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    exec(&pool, &format!("UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '2 days' WHERE id = '{recent_done}'")).await;
    // An old but still active (pending) job stays.
    let old_pending = queue::enqueue_sync(&pool, u.bob, "t", "enqueuer")
        .await
        .unwrap();
    exec(
        &pool,
        &format!(
            "UPDATE apalis.jobs SET run_at = now() - interval '90 days' WHERE id = '{old_pending}'"
        ),
    )
    .await;

    assert_eq!(
        queue::prune_finished_jobs(&pool, 30, "tester")
            .await
            .unwrap(),
        2
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM apalis.jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut want = vec![recent_done, old_pending];
    want.sort();
    assert_eq!(left, want);
}
