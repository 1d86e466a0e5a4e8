//! The queue at scale (migration …0300): the insert trigger's fast path lets through
//! only rows it would not change, final jobs release their worker, run counters are
//! append-only and exact, the run and user filters find pending jobs without indexing
//! them, and job counts agree with a full count.

mod common;

use calsync_domain::{
    jobs,
    queue::{self, JobFilter, JobState, RunTrigger},
};
use chrono::{TimeZone, Utc};
use common::{exec, seed};
use sqlx::PgPool;

/// Insert a Pending sync job carrying `key`; the key it ends up with.
async fn insert_with_key(
    pool: &PgPool,
    payload: &str,
    key: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to($1, 'UTF8'), 'Pending', 0, 8, now(), 0, $2) \
         RETURNING idempotency_key",
    )
    .bind(payload)
    .bind(key)
    .fetch_one(pool)
    .await
}

#[sqlx::test(migrations = false)]
async fn the_insert_trigger_is_skipped_only_for_rows_it_would_not_change(pool: PgPool) {
    let u = seed(&pool).await;
    // The fast path's key format is calsync.active_job_key's.
    for id in [1_i64, 42, u.alice, 999_999_999_999_999_999] {
        let (fast, sql): (String, String) = sqlx::query_as(
            "SELECT 'sync-user:' || (jsonb_build_object('user_id', $1::bigint) -> 'user_id')::text, \
                    calsync.active_job_key($1)",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(fast, sql);
        assert_eq!(sql, queue::active_job_key(id));
    }
    let alice_key = queue::active_job_key(u.alice);
    // The right key: kept (the trigger would keep it too).
    let key = insert_with_key(&pool, &format!(r#"{{"user_id": {}}}"#, u.alice), &alice_key)
        .await
        .unwrap();
    assert_eq!(key.as_deref(), Some(alice_key.as_str()));
    exec(&pool, "DELETE FROM apalis.jobs").await;
    // A user id that is a string, or no user id: the trigger runs and takes the key away.
    for payload in [
        format!(r#"{{"user_id": "{}"}}"#, u.alice),
        r#"{"user": 1}"#.into(),
    ] {
        let key = insert_with_key(&pool, &payload, &alice_key).await.unwrap();
        assert_eq!(key, None, "{payload}");
    }
    // Another user's key: the trigger gives the row its own user's key.
    let key = insert_with_key(&pool, &format!(r#"{{"user_id": {}}}"#, u.bob), &alice_key)
        .await
        .unwrap();
    assert_eq!(key, Some(queue::active_job_key(u.bob)));
    // Not an object: refused with the trigger's message.
    let err = insert_with_key(&pool, &format!("[{}]", u.alice), &alice_key)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("malformed sync-calendar job payload"),
        "{err}"
    );
    // A second active job for bob through the fast path: the unique index refuses it.
    let err = insert_with_key(
        &pool,
        &format!(r#"{{"user_id": {}}}"#, u.bob),
        &queue::active_job_key(u.bob),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23505")
    );
}

#[sqlx::test(migrations = false)]
async fn nightly_jobs_are_valid_ulids_in_the_runs_id_range(pool: PgPool) {
    let u = seed(&pool).await;
    exec(&pool, "UPDATE users SET calendar_needs_sync = true").await;
    let tick = Utc.with_ymd_and_hms(2026, 11, 26, 8, 30, 0).unwrap();
    let run = queue::run_nightly_pass(&pool, tick, RunTrigger::Cron, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.enqueued, 3);
    let rows: Vec<(String, Option<String>, Option<i32>, bool)> = sqlx::query_as(
        "SELECT j.id, j.idempotency_key, j.priority, \
                j.id BETWEEN calsync.ulid_floor(r.started_at) AND calsync.ulid_ceiling(r.enqueue_finished_at) \
         FROM apalis.jobs j, calsync.nightly_runs r WHERE r.id = $1 ORDER BY j.id",
    )
    .bind(run.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let users = [u.alice, u.bob, u.carol];
    for ((id, key, priority, in_range), user) in rows.iter().zip(users) {
        assert!(in_range, "{id} made during the run");
        assert_eq!(id.len(), 26);
        assert!(
            id.chars()
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)),
            "{id}"
        );
        assert_eq!(key.as_deref(), Some(queue::active_job_key(user).as_str()));
        assert_eq!(*priority, Some(queue::NIGHTLY_PRIORITY));
    }
    // The ULID time prefix is the run's millisecond, as any ULID library reads it.
    let (prefix, started): (String, chrono::DateTime<Utc>) = sqlx::query_as(
        "SELECT calsync.ulid_time_prefix(started_at), started_at FROM calsync.nightly_runs WHERE id = $1",
    )
    .bind(run.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let ms = prefix.chars().fold(0_i64, |acc, c| {
        acc * 32
            + "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
                .find(c)
                .expect("a Crockford character") as i64
    });
    assert_eq!(ms, started.timestamp_millis());
    // Ids ascend with the user, so the run's jobs are in user order.
    let ids: Vec<&String> = rows.iter().map(|r| &r.0).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // The run filter finds the run's jobs (pending, so in no calsync index) and only
    // them; the user filter finds a user's pending job through its key.
    let erin: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ('erin@uni.edu', 'Erin', 'cal-erin') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let other = queue::enqueue_sync(&pool, erin, "t", "t").await.unwrap();
    let by_run = jobs::list(
        &pool,
        &JobFilter {
            run_id: Some(run.id),
            ..Default::default()
        },
        None,
        50,
    )
    .await
    .unwrap();
    assert_eq!(by_run.len(), 3);
    assert!(by_run.iter().all(|j| j.id != other));
    let by_user = jobs::list(
        &pool,
        &JobFilter {
            user_id: Some(u.bob),
            ..Default::default()
        },
        None,
        50,
    )
    .await
    .unwrap();
    assert_eq!(by_user.len(), 1);
    assert_eq!(by_user[0].user_id, Some(u.bob));
    assert_eq!(by_user[0].state, JobState::Pending);
    // Once it ran, it is found through the payload index.
    exec(
        &pool,
        &format!(
            "UPDATE apalis.jobs SET status = 'Done', attempts = 1 WHERE id = '{}'",
            by_user[0].id
        ),
    )
    .await;
    let by_user = jobs::list(
        &pool,
        &JobFilter {
            user_id: Some(u.bob),
            state: Some(JobState::Done),
            ..Default::default()
        },
        None,
        50,
    )
    .await
    .unwrap();
    assert_eq!(by_user.len(), 1);
}

#[sqlx::test(migrations = false)]
async fn final_jobs_release_their_worker_and_runs_count_without_a_shared_row(pool: PgPool) {
    let u = seed(&pool).await;
    exec(&pool, "UPDATE users SET calendar_needs_sync = true").await;
    exec(
        &pool,
        "INSERT INTO apalis.workers (id, worker_type, storage_name) VALUES ('w1', 'sync-calendar', 't')",
    )
    .await;
    let tick = Utc.with_ymd_and_hms(2026, 11, 26, 8, 30, 0).unwrap();
    let run = queue::run_nightly_pass(&pool, tick, RunTrigger::Cron, "t")
        .await
        .unwrap()
        .unwrap();
    exec(
        &pool,
        "UPDATE apalis.jobs SET status = 'Running', lock_by = 'w1', lock_at = now()",
    )
    .await;
    // alice done, bob failed with attempts left (keeps its worker until refetched),
    // carol killed.
    let ids: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, (calsync.job_payload(job) ->> 'user_id')::bigint FROM apalis.jobs ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, user) in &ids {
        let set = if *user == u.alice {
            "status = 'Done', attempts = 1"
        } else if *user == u.bob {
            "status = 'Failed', attempts = 1"
        } else {
            "status = 'Killed', attempts = 1"
        };
        exec(
            &pool,
            &format!("UPDATE apalis.jobs SET {set} WHERE id = '{id}'"),
        )
        .await;
    }
    let workers: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT (calsync.job_payload(job) ->> 'user_id')::bigint, lock_by FROM apalis.jobs",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (user, lock_by) in workers {
        let expected = (user == u.bob).then(|| "w1".to_string());
        assert_eq!(lock_by, expected, "user {user}");
    }
    // The attempts keep the worker's name.
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calsync.job_attempts WHERE worker = 'w1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, 3);
    // Counters: exact before any fold, the run row untouched by the acknowledgements.
    let stored: (i32, i32) =
        sqlx::query_as("SELECT succeeded, failed FROM calsync.nightly_runs WHERE id = $1")
            .bind(run.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, (0, 0));
    let now = queue::nightly_run(&pool, run.id).await.unwrap().unwrap();
    assert_eq!((now.succeeded, now.failed), (1, 1));
    assert!(now.finished_at.is_none(), "bob will run again");
    // bob fails for good: the run is finished; an operator retries carol: it is not.
    let bob = &ids.iter().find(|(_, user)| *user == u.bob).unwrap().0;
    exec(
        &pool,
        &format!("UPDATE apalis.jobs SET status = 'Failed', attempts = 8 WHERE id = '{bob}'"),
    )
    .await;
    let now = queue::nightly_run(&pool, run.id).await.unwrap().unwrap();
    assert_eq!((now.succeeded, now.failed), (1, 2));
    assert!(now.finished_at.is_some());
    assert_eq!(queue::fold_nightly_run_progress(&pool).await.unwrap(), 3);
    let folded = queue::nightly_run(&pool, run.id).await.unwrap().unwrap();
    assert_eq!((folded.succeeded, folded.failed), (1, 2));
    assert_eq!(folded.finished_at, now.finished_at);
    let out = queue::retry_jobs(
        &pool,
        &JobFilter {
            state: Some(JobState::Killed),
            ..Default::default()
        },
        "op",
    )
    .await
    .unwrap();
    assert_eq!(out.changed.len(), 1);
    let now = queue::nightly_run(&pool, run.id).await.unwrap().unwrap();
    assert_eq!((now.succeeded, now.failed), (1, 1));
    assert!(now.finished_at.is_none());
    assert_eq!(
        queue::recent_nightly_runs(&pool, 5).await.unwrap()[0].failed,
        1
    );
}

#[sqlx::test(migrations = false)]
async fn job_counts_agree_with_a_full_count(pool: PgPool) {
    let _ = seed(&pool).await;
    exec(
        &pool,
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         SELECT apalis.generate_ulid(), CASE WHEN g % 5 = 0 THEN 'other-queue' ELSE 'sync-calendar' END, \
                convert_to('{\"user_id\": ' || (1000 + g) || '}', 'UTF8'), \
                (ARRAY['Pending', 'Queued', 'Running', 'Done', 'Failed', 'Killed'])[1 + g % 6], \
                g % 3, 1 + g % 4, now(), 0 \
         FROM generate_series(1, 300) g",
    )
    .await;
    let counts = queue::job_counts(&pool).await.unwrap();
    let full: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT j.job_type, {} AS state, count(*) FROM apalis.jobs j GROUP BY 1, 2 ORDER BY 1, 2",
        JobState::SQL_EXPR
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let counts: Vec<(String, String, i64)> = counts
        .into_iter()
        .map(|(q, s, n)| (q, s.as_str().to_string(), n))
        .collect();
    assert_eq!(counts, full);

    // Finished states stop at the cap; active ones never do.
    let cap = queue::JOB_COUNT_CAP;
    exec(
        &pool,
        &format!(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
             SELECT apalis.generate_ulid(), 'big', convert_to('{{}}', 'UTF8'), s, a, 3, now(), 0 \
             FROM (SELECT 'Done' AS s, 1 AS a, g FROM generate_series(1, {cap} + 5) g \
                   UNION ALL SELECT 'Failed', 3, g FROM generate_series(1, {cap} + 3) g \
                   UNION ALL SELECT 'Failed', 1, g FROM generate_series(1, 2) g \
                   UNION ALL SELECT 'Pending', 0, g FROM generate_series(1, {cap} + 7) g) x"
        ),
    )
    .await;
    let big: Vec<(JobState, i64)> = queue::job_counts(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|(q, _, _)| q == "big")
        .map(|(_, s, n)| (s, n))
        .collect();
    assert_eq!(
        big,
        vec![
            (JobState::Done, cap + 1),
            (JobState::Failed, cap + 1),
            (JobState::Pending, cap + 7),
            (JobState::Retrying, 2),
        ]
    );
}
