//! What the worker runtime and CLI ask of the database: worker liveness by each worker's
//! own heartbeat interval (against apalis-postgres' real orphan rescue), the migration
//! check, job status, and why flagged users are not due.

use std::time::Duration;

use calsync_domain::{queue, users, workers};
use sqlx::PgPool;

async fn user(pool: &PgPool, email: &str, calendar: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ($1, $1, $2) RETURNING id",
    )
    .bind(email)
    .bind(calendar)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A worker row as apalis registers it, last seen `secs_ago`.
async fn apalis_worker(pool: &PgPool, id: &str, secs_ago: f64) {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen) \
         VALUES ($1, 'sync-calendar', 'PgStorage', '', now() - make_interval(secs => $2))",
    )
    .bind(id)
    .bind(secs_ago)
    .execute(pool)
    .await
    .unwrap();
}

/// A job running on `worker`.
async fn running_job(pool: &PgPool, user_id: i64, worker: &str) -> String {
    let id = queue::enqueue_sync(pool, user_id, "t", "test")
        .await
        .unwrap();
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Running', lock_by = $2, lock_at = now(), attempts = 1 WHERE id = $1",
    )
    .bind(&id)
    .bind(worker)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn job(pool: &PgPool, id: &str) -> (String, Option<String>, i32) {
    sqlx::query_as("SELECT status, lock_by, attempts FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn orphan_rescue_spares_jobs_of_workers_alive_by_their_own_interval(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    // A worker beating every 10 s, last seen 5 s ago: alive (dead after 30 s).
    apalis_worker(&pool, "slow", 5.0).await;
    workers::record_liveness(&pool, "slow", Duration::from_secs(10), 3)
        .await
        .unwrap();
    // The same interval, silent for a minute: dead.
    apalis_worker(&pool, "dead", 60.0).await;
    workers::record_liveness(&pool, "dead", Duration::from_secs(10), 3)
        .await
        .unwrap();
    // A worker that recorded nothing (an older calsync): apalis' judgement stands.
    apalis_worker(&pool, "legacy", 5.0).await;
    assert_eq!(workers::is_alive(&pool, "slow").await.unwrap(), Some(true));
    assert_eq!(workers::is_alive(&pool, "dead").await.unwrap(), Some(false));
    assert_eq!(workers::is_alive(&pool, "legacy").await.unwrap(), None);

    let on_slow = running_job(&pool, user(&pool, "a@x", Some("c1")).await, "slow").await;
    let on_dead = running_job(&pool, user(&pool, "b@x", Some("c2")).await, "dead").await;
    let on_legacy = running_job(&pool, user(&pool, "c@x", Some("c3")).await, "legacy").await;

    // An observer beating every second presumes anyone silent for 3 s dead.
    let mut conn = pool.acquire().await.unwrap();
    let rescued = apalis_postgres::queries::reenqueue_orphaned(&mut *conn, queue::SYNC_QUEUE, 3)
        .await
        .unwrap();
    assert_eq!(rescued, 2, "the live worker's job is not re-enqueued");
    assert_eq!(
        job(&pool, &on_slow).await,
        ("Running".into(), Some("slow".into()), 1)
    );
    assert_eq!(job(&pool, &on_dead).await, ("Pending".into(), None, 2));
    assert_eq!(job(&pool, &on_legacy).await, ("Pending".into(), None, 2));

    // A live worker handing its own jobs back at shutdown is let through.
    let handed_back = apalis_postgres::queries::reenqueue_abandoned(
        &mut *conn,
        queue::SYNC_QUEUE,
        "slow",
        std::slice::from_ref(&on_slow),
    )
    .await
    .unwrap();
    assert_eq!(handed_back, 1);
    assert_eq!(job(&pool, &on_slow).await, ("Pending".into(), None, 2));
}

#[sqlx::test(migrations = false)]
async fn the_migration_check_wants_every_migration_of_this_release(pool: PgPool) {
    assert!(!calsync_domain::is_migrated(&pool).await.unwrap());
    calsync_domain::migrate(&pool).await.unwrap();
    assert!(calsync_domain::is_migrated(&pool).await.unwrap());
    calsync_domain::ping(&pool).await.unwrap();
    // A database one release behind (its newest migration not applied yet).
    let newest = calsync_domain::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();
    assert!(!calsync_domain::is_migrated(&pool).await.unwrap());
}

#[sqlx::test(migrations = false)]
async fn job_status_reports_state_and_payload(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let alice = user(&pool, "a@x", Some("cal")).await;
    let id = queue::enqueue_sync(&pool, alice, "registrar", "test")
        .await
        .unwrap();
    let status = queue::job_status(&pool, &id).await.unwrap().unwrap();
    assert_eq!(status.job_state(), Some(queue::JobState::Pending));
    assert_eq!(status.queue, queue::SYNC_QUEUE);
    assert_eq!(status.payload.unwrap()["reason"], "registrar");
    assert!(queue::job_status(&pool, "nope").await.unwrap().is_none());
}

#[sqlx::test(migrations = false)]
async fn flagged_users_that_are_not_due_are_counted_by_reason(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let ok = user(&pool, "ok@x", Some("c-ok")).await;
    let reauth = user(&pool, "reauth@x", Some("c-r")).await;
    let gone = user(&pool, "gone@x", Some("c-g")).await;
    let failing = user(&pool, "failing@x", Some("c-f")).await;
    let nocal = user(&pool, "nocal@x", None).await;
    for (id, status) in [
        (reauth, users::SyncStatus::NeedsReauth),
        (gone, users::SyncStatus::CalendarMissing),
        (failing, users::SyncStatus::Failing),
    ] {
        users::record_attempt_failure(
            &pool,
            &users::AttemptFailure {
                job_id: "test-job",
                user_id: Some(id),
                attempt: 1,
                outcome: users::AttemptOutcome::Final { status },
                error: "e",
                actor: "test",
            },
        )
        .await
        .unwrap();
    }
    sqlx::query("UPDATE users SET calendar_needs_sync = true WHERE id = ANY($1)")
        .bind(vec![ok, reauth, gone, failing, nocal])
        .execute(&pool)
        .await
        .unwrap();
    let s = users::flagged_not_due(&pool).await.unwrap();
    assert_eq!(
        (s.no_calendar, s.needs_reauth, s.calendar_missing, s.failing),
        (1, 1, 1, 1)
    );
}
