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
            Some(queue::active_job_key(u.alice).as_str()),
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

// ---------------------------------------------------------------- one home per fact

const STATUSES: [&str; 6] = ["Pending", "Queued", "Running", "Done", "Failed", "Killed"];

#[sqlx::test(migrations = false)]
async fn rust_and_sql_agree_on_the_active_job_key_and_on_finality(pool: PgPool) {
    let _ = seed(&pool).await;
    for user in [1i64, 42, 4_294_967_297, i64::MAX] {
        let sql: String = sqlx::query_scalar("SELECT calsync.active_job_key($1)")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(sql, queue::active_job_key(user), "user {user}");
    }
    let mut checked = 0;
    for status in STATUSES {
        for attempts in 0..4 {
            for max_attempts in 1..4 {
                let (sql_final, sql_state): (bool, String) = sqlx::query_as(sqlx::AssertSqlSafe(
                    format!(
                        "SELECT calsync.job_is_final(j.status, j.attempts, j.max_attempts), {} \
                         FROM (SELECT $1::text AS status, $2::int AS attempts, $3::int AS max_attempts) j",
                        JobState::SQL_EXPR
                    ),
                ))
                .bind(status)
                .bind(attempts)
                .bind(max_attempts)
                .fetch_one(&pool)
                .await
                .unwrap();
                let case = format!("{status} {attempts}/{max_attempts}");
                assert_eq!(
                    sql_final,
                    queue::job_is_final(status, attempts, max_attempts),
                    "{case}"
                );
                let state = JobState::of(status, attempts, max_attempts);
                assert_eq!(sql_state, state.as_str(), "{case}");
                // Each state's SQL condition holds for exactly that state.
                for other in JobState::ALL {
                    let holds: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT {} FROM (SELECT $1::text AS status, $2::int AS attempts, $3::int AS max_attempts) j",
                        other.condition()
                    )))
                    .bind(status)
                    .bind(attempts)
                    .bind(max_attempts)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    assert_eq!(holds, other == state, "{case}: {other:?}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 4 * 3);
}

#[sqlx::test(migrations = false)]
async fn the_fact_functions_are_inlined_into_plans(pool: PgPool) {
    let _ = seed(&pool).await;
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM apalis.jobs j \
         WHERE calsync.job_is_final(j.status, j.attempts, j.max_attempts) \
           AND j.idempotency_key = calsync.active_job_key(j.attempts::bigint)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        !plan.contains("job_is_final") && !plan.contains("active_job_key"),
        "SQL functions must inline (plain expressions keep indexes usable):\n{plan}"
    );
}

#[sqlx::test(migrations = false)]
async fn the_backoff_is_exponential_jittered_capped_and_follows_the_settings(pool: PgPool) {
    let _ = seed(&pool).await;
    let backoff = |attempt: i32, jitter: f64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>(
                "SELECT extract(epoch FROM calsync.retry_backoff($1, $2))::float8",
            )
            .bind(attempt)
            .bind(jitter)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Defaults: base 30 s, cap 1 h; jitter spreads over the upper half.
    for (attempt, full) in [(1, 30.0), (2, 60.0), (3, 120.0), (7, 1920.0), (8, 3600.0)] {
        assert_eq!(backoff(attempt, 1.0).await, full, "attempt {attempt}");
        assert_eq!(backoff(attempt, 0.0).await, full / 2.0, "attempt {attempt}");
    }
    // Huge attempt numbers stay capped instead of overflowing; odd jitter is clamped.
    assert_eq!(backoff(100_000, 1.0).await, 3600.0);
    assert_eq!(backoff(0, 5.0).await, 30.0);
    exec(
        &pool,
        "UPDATE calsync.queue_settings SET backoff_base_seconds = 2, backoff_cap_seconds = 10",
    )
    .await;
    assert_eq!(backoff(2, 1.0).await, 4.0);
    assert_eq!(backoff(5, 1.0).await, 10.0);
    // The random variant stays inside the window.
    for _ in 0..20 {
        let d: f64 =
            sqlx::query_scalar("SELECT extract(epoch FROM calsync.retry_backoff(3))::float8")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!((4.0..=8.0).contains(&d), "{d}");
    }
}

// ---------------------------------------------------------------- every writer

async fn raw_insert(pool: &PgPool, payload: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to($1, 'UTF8'), 'Pending', 0, 8, now(), 0) \
         RETURNING id",
    )
    .bind(payload)
    .fetch_one(pool)
    .await
}

#[sqlx::test(migrations = false)]
async fn a_raw_insert_gets_the_active_job_key_and_never_makes_a_second_active_job(pool: PgPool) {
    let u = seed(&pool).await;
    let payload = format!(r#"{{"user_id": {}, "reason": "registrar"}}"#, u.alice);
    let raw = raw_insert(&pool, &payload).await.unwrap();
    assert_eq!(
        job_row(&pool, &raw).await.3.as_deref(),
        Some(queue::active_job_key(u.alice).as_str()),
        "the trigger keyed the raw insert"
    );
    // A second raw insert for the same user is refused with a clear error…
    let err = raw_insert(&pool, &payload).await.unwrap_err();
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("23505"));
    assert!(
        db.message().contains(&format!(
            "user {} already has an active sync job {raw}",
            u.alice
        )),
        "{}",
        db.message()
    );
    // …calsync's own paths return the existing job, and the nightly pass skips the user.
    assert_eq!(
        queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
            .await
            .unwrap(),
        raw
    );
    exec(
        &pool,
        &format!(
            "UPDATE users SET calendar_needs_sync = true WHERE id IN ({}, {})",
            u.alice, u.bob
        ),
    )
    .await;
    let run = queue::run_nightly_pass(&pool, Utc::now(), RunTrigger::Manual, "tester")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.enqueued, run.already_queued), (1, 1));
    assert_eq!(active_jobs(&pool).await, 2);
    // Once the raw job is final, another raw insert is welcome; a raw insert of a
    // finished job holds no key.
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Done' WHERE id = '{raw}'"),
    )
    .await;
    assert!(raw_insert(&pool, &payload).await.is_ok());
    let done: Option<String> = sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to($1, 'UTF8'), 'Done', 1, 8, now(), 0) \
         RETURNING idempotency_key",
    )
    .bind(&payload)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(done, None);
    // A raw insert cannot dodge the rule with a key of its own choosing.
    for forged in ["anything".to_string(), queue::active_job_key(u.bob)] {
        let key: Option<String> = sqlx::query_scalar(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key) \
             VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to($1, 'UTF8'), 'Pending', 0, 8, now(), 0, $2) \
             RETURNING idempotency_key",
        )
        .bind(format!(r#"{{"user_id": {}}}"#, u.carol))
        .bind(&forged)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(key, Some(queue::active_job_key(u.carol)), "{forged}");
        exec(&pool, "UPDATE apalis.jobs SET status = 'Killed' \
             WHERE idempotency_key = calsync.active_job_key((SELECT id FROM users WHERE email = 'carol@uni.edu'))").await;
    }
    // A raw UPDATE that re-activates a finished job of a user with an active job is refused.
    let err = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs SET status = 'Pending' WHERE id = '{raw}'"
    )))
    .execute(&pool)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23505"),
        "{err}"
    );
}

#[sqlx::test(migrations = false)]
async fn rows_a_worker_could_not_fetch_are_refused_at_insert(pool: PgPool) {
    let u = seed(&pool).await;
    let payload = format!(r#"{{"user_id": {}}}"#, u.alice);
    for (columns, values, needle) in [
        ("id", "'not-a-ulid'", "is not an upper-case ULID"),
        (
            "id",
            "lower(apalis.generate_ulid())",
            "is not an upper-case ULID",
        ),
        ("status", "'Paused'", "is not an apalis status"),
        ("attempts", "-5", "attempts >= 0"),
        ("max_attempts", "0", "max_attempts >= 1"),
        ("metadata", "'a=>NULL'::hstore", "NULL values"),
    ] {
        let mut cols = vec!["id", "status", "attempts", "max_attempts", "metadata"];
        let mut vals = vec!["apalis.generate_ulid()", "'Pending'", "0", "8", "NULL"];
        let i = cols.iter().position(|c| *c == columns).unwrap();
        vals[i] = values;
        cols.extend(["job_type", "job", "run_at", "priority"]);
        vals.extend(["'sync-calendar'", "convert_to($1, 'UTF8')", "now()", "0"]);
        let sql = format!(
            "INSERT INTO apalis.jobs ({}) VALUES ({})",
            cols.join(", "),
            vals.join(", ")
        );
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&payload)
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{columns}: {err}");
    }
    assert_eq!(active_jobs(&pool).await, 0);
    // Nor can an UPDATE turn a good row into one.
    let good = queue::enqueue_sync(&pool, u.carol, "t", "enqueuer")
        .await
        .unwrap();
    for set in [
        "metadata = 'a=>NULL'::hstore",
        "id = 'not-a-ulid'",
        "status = 'Paused'",
        "attempts = -1",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE apalis.jobs SET {set} WHERE id = '{good}'"
        )))
        .execute(&pool)
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("calsync: sync-calendar job"),
            "{set}: {err}"
        );
    }
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET metadata = 'a=>b'::hstore, status = 'Killed' WHERE id = '{good}'"),
    )
    .await;
    assert_eq!(active_jobs(&pool).await, 0);
    // JSON that Postgres reads but serde cannot gets in; it holds a key only when it
    // names a usable user, and the worker kills it as malformed.
    let poison = raw_insert(&pool, r#"{"user_id": 1e400}"#).await.unwrap();
    assert_eq!(job_row(&pool, &poison).await.3, None);
    let poison = raw_insert(&pool, &format!(r#"{{"user_id": {}, "x": 1e400}}"#, u.bob))
        .await
        .unwrap();
    assert_eq!(
        job_row(&pool, &poison).await.3,
        Some(queue::active_job_key(u.bob))
    );
}

#[test]
fn payload_bytes_serde_cannot_read_give_clear_errors() {
    let deep = format!(
        r#"{{"user_id": 1, "x": {}0{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    for (bytes, needle) in [
        (br#"{"user_id": 1e400}"#.to_vec(), "number out of range"),
        (deep.into_bytes(), "recursion limit exceeded"),
        (b"\x00\xff{".to_vec(), "expected value"),
        (
            br#"{"user_id": 9223372036854775808}"#.to_vec(),
            "expected i64",
        ),
        (br#"{"user_id": 0}"#.to_vec(), "must be positive"),
        (br#"[1]"#.to_vec(), "invalid type"),
    ] {
        let e = SyncUserJob::from_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains("malformed SyncUserJob payload"), "{e}");
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains('\0'), "control characters are escaped: {e:?}");
    }
    let job = SyncUserJob::from_bytes(br#"{"user_id": 7, "run_id": 3, "extra": true}"#).unwrap();
    assert_eq!(
        (job.user_id, job.run_id, job.reason.as_str()),
        (7, Some(3), "api")
    );
}

// ---------------------------------------------------------------- audits and input

async fn audit_rows(pool: &PgPool) -> Vec<(String, String, serde_json::Value)> {
    sqlx::query_as("SELECT actor, action, detail FROM calsync.audit_log ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn operator_actions_are_audited_by_their_actor(pool: PgPool) {
    let u = seed(&pool).await;
    let job = queue::enqueue_sync(&pool, u.alice, "cli", "cli")
        .await
        .unwrap();
    exec(
        &pool,
        &format!(
            "UPDATE users SET calendar_needs_sync = true WHERE id = {}",
            u.bob
        ),
    )
    .await;
    let run = queue::run_nightly_pass(&pool, Utc::now(), RunTrigger::Manual, "admin")
        .await
        .unwrap()
        .unwrap();
    exec(&pool, &format!("UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '40 days' WHERE id = '{job}'")).await;
    assert_eq!(
        queue::prune_finished_jobs(&pool, 30, "cli").await.unwrap(),
        1
    );
    assert_eq!(
        calsync_domain::users::mark_all_for_sync(&pool, "cli")
            .await
            .unwrap(),
        3
    );
    // Failed actions leave no audit row.
    assert!(
        queue::enqueue_sync(&pool, 987_654, "x", "cli")
            .await
            .is_err()
    );
    let rows = audit_rows(&pool).await;
    let actions: Vec<(&str, &str)> = rows
        .iter()
        .map(|(a, b, _)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("cli", "sync_user"),
            ("admin", "nightly_pass"),
            ("cli", "prune_jobs"),
            ("cli", "mark_all")
        ]
    );
    assert_eq!(rows[0].2["job_id"], job.as_str());
    assert_eq!(rows[0].2["user_id"], u.alice);
    assert_eq!(rows[1].2["run_id"], run.id);
    assert_eq!(rows[1].2["enqueued"], 1);
    assert_eq!(rows[2].2["deleted"], 1);
    assert_eq!(rows[3].2["flagged"], 3);
}

#[sqlx::test(migrations = false)]
async fn an_action_whose_audit_row_fails_does_not_happen(pool: PgPool) {
    let u = seed(&pool).await;
    let old = queue::enqueue_sync(&pool, u.carol, "t", "enqueuer")
        .await
        .unwrap();
    exec(&pool, &format!("UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '40 days' WHERE id = '{old}'")).await;
    exec(
        &pool,
        "CREATE FUNCTION public.refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$",
    )
    .await;
    exec(
        &pool,
        "CREATE TRIGGER refuse BEFORE INSERT ON calsync.audit_log FOR EACH ROW EXECUTE FUNCTION public.refuse_audit()",
    )
    .await;
    exec(&pool, "UPDATE users SET calendar_needs_sync = true").await;
    assert!(
        queue::enqueue_sync(&pool, u.alice, "t", "cli")
            .await
            .is_err()
    );
    assert!(
        queue::run_nightly_pass(&pool, Utc::now(), RunTrigger::Manual, "cli")
            .await
            .is_err()
    );
    assert!(queue::prune_finished_jobs(&pool, 30, "cli").await.is_err());
    assert!(
        calsync_domain::users::mark_all_for_sync(&pool, "cli")
            .await
            .is_err()
    );
    assert_eq!(active_jobs(&pool).await, 0, "nothing was enqueued");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.nightly_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "no run was recorded");
    assert_eq!(job_row(&pool, &old).await.0, "Done", "nothing was pruned");
}

#[sqlx::test(migrations = false)]
async fn enqueue_reasons_are_validated_before_anything_happens(pool: PgPool) {
    let u = seed(&pool).await;
    for reason in [
        "with a NUL \0 inside".to_string(),
        "line\nbreak".to_string(),
        "bell\u{7}".to_string(),
        "x".repeat(201),
    ] {
        match queue::enqueue_sync(&pool, u.alice, &reason, "http-api").await {
            Err(DomainError::InvalidInput(msg)) => {
                assert!(msg.contains("reason"), "{msg}")
            }
            other => panic!("{reason:?}: expected InvalidInput, got {other:?}"),
        }
    }
    assert_eq!(active_jobs(&pool).await, 0);
    assert!(audit_rows(&pool).await.is_empty());
    // 200 characters (not bytes) and non-ASCII text are fine.
    let reason = "é".repeat(200);
    let id = queue::enqueue_sync(&pool, u.alice, &reason, "http-api")
        .await
        .unwrap();
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT calsync.job_payload(job) FROM apalis.jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(payload["reason"], reason.as_str());
}

// ---------------------------------------------------------------- failures and locks

#[sqlx::test(migrations = false)]
async fn a_failed_attempt_is_recorded_in_one_place(pool: PgPool) {
    use calsync_domain::users::{self, AttemptFailure, AttemptOutcome, SyncStatus};
    let u = seed(&pool).await;
    let job = queue::enqueue_sync(&pool, u.alice, "t", "enqueuer")
        .await
        .unwrap();
    let failure = |outcome, error| AttemptFailure {
        job_id: &job,
        user_id: Some(u.alice),
        attempt: 1,
        outcome,
        error,
        actor: "worker-1",
    };
    // A retry with a hint: last error and hint, status untouched, not audited.
    users::record_attempt_failure(
        &pool,
        &failure(
            AttemptOutcome::Retry {
                not_before: Some(std::time::Duration::from_secs(600)),
                quota: true,
            },
            "quota \0 exceeded",
        ),
    )
    .await
    .unwrap();
    let alice = users::get(&pool, u.alice).await.unwrap();
    assert_eq!(alice.calendar_sync_status, SyncStatus::Ok);
    assert_eq!(
        alice.last_sync_error.as_deref(),
        Some("quota \\u{0} exceeded")
    );
    let hints: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calsync.retry_hints WHERE job_id = $1")
            .bind(&job)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hints, 1);
    assert!(audit_rows(&pool).await.iter().all(|r| r.1 != "sync_failed"));
    // The job ends: status and audit row.
    users::record_attempt_failure(
        &pool,
        &failure(
            AttemptOutcome::Final {
                status: SyncStatus::NeedsReauth,
            },
            "invalid_grant",
        ),
    )
    .await
    .unwrap();
    let alice = users::get(&pool, u.alice).await.unwrap();
    assert_eq!(alice.calendar_sync_status, SyncStatus::NeedsReauth);
    let rows = audit_rows(&pool).await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("worker-1", "sync_failed")
    );
    assert_eq!(last.2["status"], "needs_reauth");
    // A job naming nobody (or an unknown user) is still recorded without error.
    users::record_attempt_failure(
        &pool,
        &AttemptFailure {
            user_id: None,
            ..failure(
                AttemptOutcome::Final {
                    status: SyncStatus::Failing,
                },
                "malformed",
            )
        },
    )
    .await
    .unwrap();
}

#[sqlx::test(migrations = false)]
async fn user_sync_locks_never_truncate_user_ids(pool: PgPool) {
    use calsync_domain::users::{UserSyncLock, sync_lock_key};
    let _ = seed(&pool).await;
    let low = 7i64;
    let high = low + (1i64 << 32);
    let huge = low + (1i64 << 62);
    assert_ne!(sync_lock_key(low), sync_lock_key(high));
    assert_ne!(sync_lock_key(low), sync_lock_key(huge));
    let a = UserSyncLock::try_acquire(&pool, low)
        .await
        .unwrap()
        .unwrap();
    let b = UserSyncLock::try_acquire(&pool, high)
        .await
        .unwrap()
        .expect("a user whose id agrees in the low 32 bits is not blocked");
    let c = UserSyncLock::try_acquire(&pool, huge)
        .await
        .unwrap()
        .unwrap();
    // The same user is blocked until the lock is released.
    assert!(
        UserSyncLock::try_acquire(&pool, high)
            .await
            .unwrap()
            .is_none()
    );
    b.unlock().await;
    let b = UserSyncLock::try_acquire(&pool, high)
        .await
        .unwrap()
        .unwrap();
    for l in [a, b, c] {
        l.unlock().await;
    }
}
