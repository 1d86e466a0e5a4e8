//! Priority classes: the SQL definition and its Rust twin agree; an interactive request
//! raises a waiting job (never lowers it, never adds one); "due now" moves a job off its
//! backoff but never off Google's quota; the per-caller budget above the nightly class.

mod common;

use calsync_domain::{
    DomainError,
    priority::{self, PriorityClass, RequestOutcome, SyncRequest},
    queue::{self, JobFilter, RunTrigger},
    users::{self, AttemptFailure, AttemptOutcome},
};
use chrono::Utc;
use common::seed;
use sqlx::PgPool;

fn req(user_id: i64, class: PriorityClass) -> SyncRequest<'static> {
    SyncRequest {
        user_id,
        reason: "test",
        class,
        due_now: false,
    }
}

async fn job(pool: &PgPool, id: &str) -> (String, i32, f64) {
    sqlx::query_as(
        "SELECT status, priority, extract(epoch FROM run_at - now())::float8 FROM apalis.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn jobs_of(pool: &PgPool, user: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE calsync.job_user_id(calsync.job_payload(job)) = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn set_budget(pool: &PgPool, per_minute: Option<i32>) {
    sqlx::query("UPDATE calsync.queue_settings SET priority_budget_per_minute = $1")
        .bind(per_minute)
        .execute(pool)
        .await
        .unwrap();
}

/// Take the job as a worker would, then fail the attempt: the queue trigger puts it on
/// its retry backoff (run_at in the future).
async fn fail_once(pool: &PgPool, id: &str) {
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = 1, last_result = '{\"Err\": \"x\"}' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrations = false)]
async fn rust_and_sql_agree_on_the_priority_classes(pool: PgPool) {
    seed(&pool).await;
    let sql: Vec<(String, i32)> = sqlx::query_as(
        "SELECT name, priority FROM calsync.priority_classes ORDER BY priority DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let rust: Vec<(String, i32)> = PriorityClass::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), c.priority()))
        .collect();
    assert_eq!(sql, rust, "calsync.priority_classes vs PriorityClass::ALL");
    for c in PriorityClass::ALL {
        let p: Option<i32> = sqlx::query_scalar("SELECT calsync.class_priority($1)")
            .bind(c.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(p, Some(c.priority()), "{c}");
    }
    let bounds: Vec<i32> = PriorityClass::ALL
        .iter()
        .flat_map(|c| [c.priority() - 1, c.priority(), c.priority() + 1])
        .chain([i32::MIN, -100_000, 100_000, i32::MAX])
        .collect();
    let sql: Vec<String> =
        sqlx::query_scalar("SELECT calsync.priority_class(p) FROM unnest($1::int[]) WITH ORDINALITY t(p, n) ORDER BY n")
            .bind(&bounds)
            .fetch_all(&pool)
            .await
            .unwrap();
    let rust: Vec<String> = bounds
        .iter()
        .map(|p| PriorityClass::of(*p).as_str().to_string())
        .collect();
    assert_eq!(sql, rust, "class of priorities {bounds:?}");
}

#[sqlx::test(migrations = false)]
async fn an_interactive_request_raises_the_waiting_nightly_job_and_never_adds_one(pool: PgPool) {
    let u = seed(&pool).await;
    sqlx::query("UPDATE users SET calendar_needs_sync = true")
        .execute(&pool)
        .await
        .unwrap();
    let run = queue::run_nightly_pass(&pool, Utc::now(), RunTrigger::Manual, "test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.enqueued, 3);
    let nightly: String = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE calsync.job_user_id(calsync.job_payload(job)) = $1",
    )
    .bind(u.alice)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        job(&pool, &nightly).await.1,
        PriorityClass::Nightly.priority()
    );

    let r = priority::request_sync(&pool, &req(u.alice, PriorityClass::Interactive), "ops")
        .await
        .unwrap();
    assert_eq!(r.job_id, nightly, "the waiting job, not a new one");
    assert_eq!(r.outcome, RequestOutcome::Raised);
    assert_eq!(r.class, PriorityClass::Interactive);
    assert!(!r.made_due && !r.demoted);
    assert_eq!(
        job(&pool, &nightly).await.1,
        PriorityClass::Interactive.priority()
    );
    assert_eq!(jobs_of(&pool, u.alice).await, 1);

    // Never lowered: a later api or maintenance request leaves it as it is.
    for class in [PriorityClass::Api, PriorityClass::Maintenance] {
        let r = priority::request_sync(&pool, &req(u.alice, class), "ops")
            .await
            .unwrap();
        assert_eq!(
            (r.job_id.as_str(), r.outcome, r.class),
            (
                nightly.as_str(),
                RequestOutcome::Unchanged,
                PriorityClass::Interactive
            )
        );
    }
    // The old SQL calls keep working (api by default) and raise too.
    let via_sql: String = sqlx::query_scalar("SELECT calsync.enqueue_sync($1, 'registrar')")
        .bind(u.bob)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(job(&pool, &via_sql).await.1, PriorityClass::Api.priority());
    let again: String = sqlx::query_scalar("SELECT calsync.enqueue_sync($1)")
        .bind(u.bob)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, via_sql);
    assert_eq!(jobs_of(&pool, u.bob).await, 1);

    // A running job: reported, not changed, never duplicated.
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_at = now() WHERE id = $1")
        .bind(&via_sql)
        .execute(&pool)
        .await
        .unwrap();
    let r = priority::request_sync(&pool, &req(u.bob, PriorityClass::Interactive), "ops")
        .await
        .unwrap();
    assert_eq!(
        (r.job_id.as_str(), r.outcome, r.class),
        (
            via_sql.as_str(),
            RequestOutcome::Running,
            PriorityClass::Api
        )
    );
    assert_eq!(jobs_of(&pool, u.bob).await, 1);

    // Each request is audited with what it did.
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM calsync.audit_log WHERE action = 'sync_user' ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(detail["outcome"], "raised");
    assert_eq!(detail["class"], "interactive");
    assert_eq!(detail["job_id"], nightly.as_str());
}

#[sqlx::test(migrations = false)]
async fn unknown_classes_are_refused_with_the_known_ones(pool: PgPool) {
    let u = seed(&pool).await;
    let err = sqlx::query_scalar::<_, String>("SELECT calsync.enqueue_sync($1, 'x', 'urgent')")
        .bind(u.alice)
        .fetch_one(&pool)
        .await
        .unwrap_err();
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("22023"));
    assert!(
        db.message().contains("unknown priority class 'urgent'"),
        "{db}"
    );
    let hint: Option<String> = match &err {
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|e| e.hint().map(str::to_string)),
        _ => None,
    };
    assert_eq!(
        hint.as_deref(),
        Some("Known classes: interactive, api, nightly, maintenance.")
    );
    assert_eq!(jobs_of(&pool, u.alice).await, 0, "nothing enqueued");
    assert!(matches!(
        PriorityClass::parse("Interactive"),
        Err(DomainError::InvalidInput(_))
    ));
}

#[sqlx::test(migrations = false)]
async fn due_now_moves_a_job_off_its_backoff_only_when_asked_and_never_off_googles_quota(
    pool: PgPool,
) {
    let u = seed(&pool).await;
    let a = queue::enqueue_sync(&pool, u.alice, "t", "ops")
        .await
        .unwrap();
    fail_once(&pool, &a).await;
    let (status, _, wait) = job(&pool, &a).await;
    assert_eq!(status, "Failed");
    assert!(wait > 10.0, "on its backoff: {wait}");

    // Not asked: raised, but it keeps its time.
    let r = priority::request_sync(&pool, &req(u.alice, PriorityClass::Interactive), "ops")
        .await
        .unwrap();
    assert_eq!((r.outcome, r.made_due), (RequestOutcome::Raised, false));
    assert!(job(&pool, &a).await.2 > 10.0);

    // Asked: due now (and already interactive: unchanged otherwise).
    let due = SyncRequest {
        due_now: true,
        ..req(u.alice, PriorityClass::Interactive)
    };
    let r = priority::request_sync(&pool, &due, "ops").await.unwrap();
    assert_eq!((r.outcome, r.made_due), (RequestOutcome::Unchanged, true));
    assert!(job(&pool, &a).await.2 <= 0.0);

    // A job whose attempt Google's quota refused keeps its time, even when asked.
    let b = queue::enqueue_sync(&pool, u.bob, "t", "ops").await.unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_at = now() WHERE id = $1")
        .bind(&b)
        .execute(&pool)
        .await
        .unwrap();
    let quota = |quota| AttemptFailure {
        job_id: &b,
        user_id: Some(u.bob),
        attempt: 1,
        outcome: AttemptOutcome::Retry {
            not_before: None,
            quota,
        },
        error: "HTTP 429 rateLimitExceeded",
        actor: "w",
    };
    users::record_attempt_failure(&pool, &quota(true))
        .await
        .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = 1 WHERE id = $1")
        .bind(&b)
        .execute(&pool)
        .await
        .unwrap();
    let before = job(&pool, &b).await.2;
    assert!(before > 10.0);
    let due = SyncRequest {
        due_now: true,
        ..req(u.bob, PriorityClass::Interactive)
    };
    let r = priority::request_sync(&pool, &due, "ops").await.unwrap();
    assert_eq!((r.outcome, r.made_due), (RequestOutcome::Raised, false));
    assert!(
        (job(&pool, &b).await.2 - before).abs() < 1.0,
        "kept Google's wait"
    );
    // Its next failure was a plain one: the quota wait is forgotten.
    users::record_attempt_failure(&pool, &quota(false))
        .await
        .unwrap();
    let r = priority::request_sync(&pool, &due, "ops").await.unwrap();
    assert!(r.made_due);
    assert!(job(&pool, &b).await.2 <= 0.0);

    // A pending job (not on a backoff) is never moved by due_now.
    let c = SyncRequest {
        due_now: true,
        ..req(u.carol, PriorityClass::Api)
    };
    assert!(
        !priority::request_sync(&pool, &c, "ops")
            .await
            .unwrap()
            .made_due
    );
}

#[sqlx::test(migrations = false)]
async fn each_caller_has_a_budget_above_the_nightly_then_counts_as_nightly(pool: PgPool) {
    let u = seed(&pool).await;
    set_budget(&pool, Some(2)).await;
    let interactive = |user| req(user, PriorityClass::Interactive);
    let a = priority::request_sync(&pool, &interactive(u.alice), "flood")
        .await
        .unwrap();
    // Asking again for a job already at the class costs nothing.
    priority::request_sync(&pool, &interactive(u.alice), "flood")
        .await
        .unwrap();
    let b = priority::request_sync(&pool, &interactive(u.bob), "flood")
        .await
        .unwrap();
    let c = priority::request_sync(&pool, &interactive(u.carol), "flood")
        .await
        .unwrap();
    assert_eq!(
        [a.class, b.class, c.class],
        [
            PriorityClass::Interactive,
            PriorityClass::Interactive,
            PriorityClass::Nightly
        ]
    );
    assert!(!a.demoted && !b.demoted && c.demoted);
    assert_eq!(c.outcome, RequestOutcome::Enqueued, "accepted, not refused");
    // Another caller has its own budget: it may still raise carol's job.
    let c2 = priority::request_sync(&pool, &interactive(u.carol), "operator")
        .await
        .unwrap();
    assert_eq!(
        (c2.job_id.as_str(), c2.outcome, c2.class, c2.demoted),
        (
            c.job_id.as_str(),
            RequestOutcome::Raised,
            PriorityClass::Interactive,
            false
        )
    );
    // Nightly and maintenance requests never touch a budget; no budget, no limit.
    queue::discard_jobs(&pool, &JobFilter::default(), "test")
        .await
        .unwrap();
    let m = priority::request_sync(&pool, &req(u.alice, PriorityClass::Maintenance), "flood")
        .await
        .unwrap();
    assert_eq!((m.class, m.demoted), (PriorityClass::Maintenance, false));
    set_budget(&pool, None).await;
    let r = priority::request_sync(&pool, &interactive(u.bob), "flood")
        .await
        .unwrap();
    assert_eq!((r.class, r.demoted), (PriorityClass::Interactive, false));
}

#[sqlx::test(migrations = false)]
async fn the_job_list_shows_and_filters_classes(pool: PgPool) {
    let u = seed(&pool).await;
    for (user, class) in [
        (u.alice, PriorityClass::Interactive),
        (u.bob, PriorityClass::Maintenance),
    ] {
        priority::request_sync(&pool, &req(user, class), "ops")
            .await
            .unwrap();
    }
    // A raw INSERT with a priority of its own belongs to the class below it.
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (apalis.generate_ulid(), 'sync-calendar', convert_to(json_build_object('user_id', $1::bigint)::text, 'UTF8'), \
                 'Pending', 0, 8, now(), 150)",
    )
    .bind(u.carol)
    .execute(&pool)
    .await
    .unwrap();
    for (class, want) in [
        (PriorityClass::Interactive, vec![u.alice]),
        (PriorityClass::Api, vec![u.carol]),
        (PriorityClass::Nightly, vec![]),
        (PriorityClass::Maintenance, vec![u.bob]),
    ] {
        let f = JobFilter {
            class: Some(class),
            ..Default::default()
        };
        let rows = calsync_domain::jobs::list(&pool, &f, None, 50)
            .await
            .unwrap();
        let users: Vec<i64> = rows.iter().filter_map(|r| r.user_id).collect();
        assert_eq!(users, want, "{class}");
        assert!(rows.iter().all(|r| r.class == class));
    }
    let status = queue::job_status(
        &pool,
        &queue::enqueue_sync(&pool, u.carol, "t", "ops")
            .await
            .unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((status.priority, status.class.as_str()), (150, "api"));
}

#[sqlx::test(migrations = false)]
async fn the_new_enqueue_sync_keeps_the_grants_of_the_old_one(pool: PgPool) {
    // The schema as it was before this migration, with an operator's grants on the old
    // two-argument function: EXECUTE taken from PUBLIC, given to one service's role.
    const THIS: i64 = 20261126000100;
    apalis_postgres::PostgresStorage::setup(&pool)
        .await
        .unwrap();
    for m in calsync_domain::MIGRATOR.iter().filter(|m| m.version < THIS) {
        sqlx::raw_sql(m.sql.clone()).execute(&pool).await.unwrap();
    }
    let role = format!("calsync_test_registrar_{:08x}", rand_u32());
    let other = format!("{role}_other");
    for sql in [
        format!("CREATE ROLE {role}"),
        format!("CREATE ROLE {other}"),
        "REVOKE EXECUTE ON FUNCTION calsync.enqueue_sync(bigint, text) FROM PUBLIC".into(),
        format!("GRANT EXECUTE ON FUNCTION calsync.enqueue_sync(bigint, text) TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let this = calsync_domain::MIGRATOR
        .iter()
        .find(|m| m.version == THIS)
        .unwrap();
    sqlx::raw_sql(this.sql.clone())
        .execute(&pool)
        .await
        .unwrap();

    let may = |who: &str, f: &str| {
        sqlx::query_scalar::<_, bool>("SELECT has_function_privilege($1, $2, 'EXECUTE')")
            .bind(who.to_string())
            .bind(f.to_string())
            .fetch_one(&pool)
    };
    for f in [
        "calsync.enqueue_sync(bigint, text, text, boolean)",
        "calsync.request_sync(bigint, text, text, boolean, text)",
    ] {
        assert!(may(&role, f).await.unwrap(), "{role} keeps EXECUTE on {f}");
        assert!(
            !may(&other, f).await.unwrap(),
            "PUBLIC still has no EXECUTE on {f}"
        );
    }
    let old: Option<String> =
        sqlx::query_scalar("SELECT to_regprocedure('calsync.enqueue_sync(bigint, text)')::text")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        old, None,
        "one signature: calls with one or two arguments are not ambiguous"
    );
    for sql in [
        format!("DROP OWNED BY {role}, {other}"),
        format!("DROP ROLE {role}"),
        format!("DROP ROLE {other}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32
}

#[sqlx::test(migrations = false)]
async fn a_fast_lane_worker_is_never_handed_a_nightly_job(pool: PgPool) {
    let u = seed(&pool).await;
    let fast = format!("w1{}", priority::FAST_LANE_SUFFIX);
    for w in ["w1", fast.as_str()] {
        sqlx::query("INSERT INTO apalis.workers (id, worker_type, storage_name) VALUES ($1, 'sync-calendar', 'test')")
            .bind(w)
            .execute(&pool)
            .await
            .unwrap();
    }
    // apalis' own fetch, as a worker of that name runs it.
    let fetch = |worker: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT id FROM apalis.get_jobs($1, 'sync-calendar', 1)",
            )
            .bind(worker)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let nightly = priority::request_sync(&pool, &req(u.alice, PriorityClass::Nightly), "t")
        .await
        .unwrap()
        .job_id;
    assert!(
        fetch(fast.clone()).await.is_empty(),
        "the fast lane leaves it"
    );
    assert_eq!(job(&pool, &nightly).await.0, "Pending");
    let api = priority::request_sync(&pool, &req(u.bob, PriorityClass::Api), "t")
        .await
        .unwrap()
        .job_id;
    assert_eq!(fetch(fast.clone()).await, vec![api.clone()]);
    let (status, lock_by): (String, Option<String>) =
        sqlx::query_as("SELECT status, lock_by FROM apalis.jobs WHERE id = $1")
            .bind(&api)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), lock_by.as_deref()),
        ("Queued", Some(fast.as_str()))
    );
    // Any other worker takes the nightly job.
    assert_eq!(fetch("w1".into()).await, vec![nightly]);
}

#[sqlx::test(migrations = false)]
async fn a_spent_budget_is_reported_only_where_it_made_a_difference(pool: PgPool) {
    let u = seed(&pool).await;
    set_budget(&pool, Some(1)).await;
    let first = priority::request_sync(&pool, &req(u.alice, PriorityClass::Interactive), "c")
        .await
        .unwrap();
    assert!(!first.demoted);
    // Budget spent, but the job already is interactive: nothing was held back.
    let again = priority::request_sync(&pool, &req(u.alice, PriorityClass::Interactive), "c")
        .await
        .unwrap();
    assert_eq!(
        (again.outcome, again.class, again.demoted),
        (RequestOutcome::Unchanged, PriorityClass::Interactive, false)
    );
    // An api job raised with the budget spent stays api: held back, so reported.
    let bob = priority::request_sync(&pool, &req(u.bob, PriorityClass::Api), "other")
        .await
        .unwrap();
    let held = priority::request_sync(&pool, &req(u.bob, PriorityClass::Interactive), "c")
        .await
        .unwrap();
    assert_eq!(
        (held.job_id.as_str(), held.outcome, held.class, held.demoted),
        (
            bob.job_id.as_str(),
            RequestOutcome::Unchanged,
            PriorityClass::Api,
            true
        )
    );
}
