//! Job attempts recorded by the trigger on apalis' own status transitions (apalis'
//! fetch / lock / acknowledge / re-enqueue statements, verbatim), the migration's
//! backfill, and the search for jobs by error text.

mod common;

use std::borrow::Cow;

use calsync_domain::{
    MIGRATOR,
    attempts::{self, AttemptOutcome, ErrorSearch},
    job_stats::{self, Resolution},
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
    let job = queue::enqueue_sync(&pool, u.alice, "t", "test")
        .await
        .unwrap();

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
    let other = queue::enqueue_sync(&pool, u.bob, "t", "test")
        .await
        .unwrap();
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
    let third = queue::enqueue_sync(&pool, u.carol, "t", "test")
        .await
        .unwrap();
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
    let pruned = queue::prune_finished_jobs(&pool, 30, "test").await.unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(attempt_rows(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn jobs_are_found_by_any_attempts_error_and_show_durations(pool: PgPool) {
    let u = seed(&pool).await;
    register_worker(&pool).await;
    assert!(
        attempts::error_search_indexed(&pool).await.unwrap(),
        "pg_trgm is available here"
    );
    let recovered = queue::enqueue_sync(&pool, u.alice, "t", "test")
        .await
        .unwrap();
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
    let dead = queue::enqueue_sync(&pool, u.bob, "t", "test")
        .await
        .unwrap();
    fetch_and_start(&pool, &dead).await;
    ack(
        &pool,
        &dead,
        1,
        "Killed",
        serde_json::json!({"Err": "token refresh failed: invalid_grant"}),
    )
    .await;
    let running = queue::enqueue_sync(&pool, u.carol, "t", "test")
        .await
        .unwrap();
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
