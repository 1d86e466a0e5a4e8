//! End-to-end: priority classes with real `calsync worker` processes — an interactive
//! sync enqueued behind a draining nightly backlog runs next; a waiting nightly job
//! raised by `calsync sync-user` runs next and is not duplicated; a caller flooding
//! interactive requests beyond its budget cannot push the nightly back.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use calsync_domain::{
    priority::{self, PriorityClass, RequestOutcome, SyncRequest},
    queue::{self, RunTrigger},
};
use calsync_e2e::harness::*;
use calsync_fake_google::{FakeGoogle, FaultRule};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Mark users synced, so the nightly pass leaves them out.
async fn settle(pool: &PgPool, users: &[i64]) {
    // The seed's tracked writes are logged; fold them first, or the log would flag
    // these users again after this update.
    calsync_domain::tracking::apply_pending_flags(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET calendar_needs_sync = false, last_calendar_sync_at = now() WHERE id = ANY($1)")
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
}

/// The sync job of `user` (there must be exactly one).
async fn job_of(pool: &PgPool, user: i64) -> String {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE calsync.job_user_id(calsync.job_payload(job)) = $1",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(ids.len(), 1, "user {user} has one job: {ids:?}");
    ids.into_iter().next().unwrap()
}

async fn done(pool: &PgPool, job: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT status = 'Done' FROM apalis.jobs WHERE id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// When the job's (only) attempt started, and which worker ran it.
async fn started(pool: &PgPool, job: &str) -> (DateTime<Utc>, String) {
    let rows: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT started_at, coalesce(worker, '') FROM calsync.job_attempts WHERE job_id = $1",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "job {job} ran once: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// Nightly jobs of `run` whose attempt started in `(after, before)`, and those that had
/// not started by `before`.
async fn nightly_around(
    pool: &PgPool,
    run: i64,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE a.started_at > $2 AND a.started_at < $3), \
                count(*) FILTER (WHERE a.started_at IS NULL OR a.started_at >= $3) \
         FROM apalis.jobs j LEFT JOIN calsync.job_attempts a ON a.job_id = j.id \
         WHERE calsync.job_payload(j.job) ->> 'run_id' = $1::text",
    )
    .bind(run)
    .bind(after)
    .bind(before)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn attempts_of_run(pool: &PgPool, run: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM calsync.job_attempts a JOIN apalis.jobs j ON j.id = a.job_id \
         WHERE calsync.job_payload(j.job) ->> 'run_id' = $1::text",
    )
    .bind(run)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn cli(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(calsync_bin())
        .args(args)
        .env("DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run calsync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_syncs_overtake_a_draining_nightly_backlog_without_duplicates() {
    let fake = FakeGoogle::start().await.unwrap();
    // ~6 calls per student: a slot takes about a quarter of a second per student.
    fake.add_fault(FaultRule::latency(Duration::from_millis(40)));
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 41).await;
    let (backlog, probe) = (&users[..40], users[40]);
    settle(&pool, &[probe]).await;
    let run = queue::run_nightly_pass(&pool, Utc::now(), RunTrigger::Manual, "test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.enqueued, 40);
    // Two slots: one takes any job, the other is the fast lane.
    let worker = WorkerProcess::spawn(
        &url,
        &fake,
        "prio",
        &["--no-cron", "--concurrency", "2", "--poll-secs", "1"],
    );
    worker
        .wait_until(
            &pool,
            "the backlog drains",
            Duration::from_secs(60),
            || async { attempts_of_run(&pool, run.id).await >= 3 },
        )
        .await;

    // 1. A new interactive job runs next.
    let req = SyncRequest {
        user_id: probe,
        reason: "student complaint",
        class: PriorityClass::Interactive,
        due_now: false,
    };
    let r = priority::request_sync(&pool, &req, "operator")
        .await
        .unwrap();
    assert_eq!(
        (r.outcome, r.class),
        (RequestOutcome::Enqueued, PriorityClass::Interactive)
    );
    let enqueued = now(&pool).await;
    worker
        .wait_until(
            &pool,
            "the interactive job",
            Duration::from_secs(60),
            || async { done(&pool, &r.job_id).await },
        )
        .await;
    let (start, by) = started(&pool, &r.job_id).await;
    let (between, behind) = nightly_around(&pool, run.id, enqueued, start).await;
    // At most what the two slots had already fetched when it was enqueued.
    assert!(
        between <= 2,
        "{between} nightly jobs started before the interactive one"
    );
    assert!(
        behind >= 20,
        "it ran ahead of the backlog ({behind} nightly jobs after it)"
    );
    assert!(by.ends_with("-fast-lane") || by.contains("-sync-"), "{by}");

    // 2. The nightly job last in line, raised by `calsync sync-user`, runs next: the same
    //    job, never a second one.
    let (last_user, last_job): (i64, String) = sqlx::query_as(
        "SELECT calsync.job_user_id(calsync.job_payload(job)), id FROM apalis.jobs \
         WHERE status = 'Pending' ORDER BY priority DESC, run_at DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(backlog.contains(&last_user));
    let (ok, out) = cli(&url, &["sync-user", &last_user.to_string()]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "job {last_job} of user {last_user} was waiting; raised to interactive"
        )),
        "{out}"
    );
    let raised = now(&pool).await;
    worker
        .wait_until(&pool, "the raised job", Duration::from_secs(60), || async {
            done(&pool, &last_job).await
        })
        .await;
    let (start, _) = started(&pool, &last_job).await;
    let (between, behind) = nightly_around(&pool, run.id, raised, start).await;
    assert!(
        between <= 2,
        "{between} nightly jobs started before the raised one"
    );
    assert!(behind >= 15, "{behind} nightly jobs after it");
    assert_eq!(job_of(&pool, last_user).await, last_job, "not duplicated");

    // A class the CLI does not know: a clear error, nothing enqueued.
    let (ok, out) = cli(
        &url,
        &["sync-user", &probe.to_string(), "--class", "urgent"],
    );
    assert!(!ok);
    assert!(
        out.contains(
            "unknown priority class \"urgent\" (known: interactive, api, nightly, maintenance)"
        ),
        "{out}"
    );
    assert_eq!(job_of(&pool, probe).await, r.job_id);

    // The whole backlog still completes, each student once.
    worker
        .wait_until(
            &pool,
            "every job done",
            Duration::from_secs(120),
            || async { unsynced_users(&pool).await == 0 },
        )
        .await;
    for u in &users {
        job_of(&pool, *u).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_interactive_requests_cannot_push_the_nightly_back() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 14).await;
    let (nightly, flood) = users.split_at(8);
    settle(&pool, flood).await;
    sqlx::query("UPDATE calsync.queue_settings SET priority_budget_per_minute = 2")
        .execute(&pool)
        .await
        .unwrap();
    let run = queue::run_nightly_pass(&pool, Utc::now(), RunTrigger::Manual, "test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.enqueued, 8);

    // One caller asks for 6 interactive syncs: 2 fit its budget, 4 count as nightly —
    // accepted, queued behind the nightly jobs already waiting.
    let mut flood_jobs = Vec::new();
    for (i, &user) in flood.iter().enumerate() {
        let req = SyncRequest {
            user_id: user,
            reason: "flood",
            class: PriorityClass::Interactive,
            due_now: false,
        };
        let r = priority::request_sync(&pool, &req, "registrar-portal")
            .await
            .unwrap();
        assert_eq!(r.outcome, RequestOutcome::Enqueued);
        let want = if i < 2 {
            PriorityClass::Interactive
        } else {
            PriorityClass::Nightly
        };
        assert_eq!((r.class, r.demoted), (want, i >= 2), "request {i}");
        flood_jobs.push(r.job_id);
    }

    let worker = WorkerProcess::spawn(
        &url,
        &fake,
        "fair",
        &["--no-cron", "--concurrency", "2", "--poll-secs", "1"],
    );
    worker
        .wait_until(&pool, "every job done", Duration::from_secs(90), || async {
            unsynced_users(&pool).await == 0
                && sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 0
        })
        .await;

    // Each slot runs its jobs one after another, so their start order is the fetch
    // order: the fast lane ran interactive jobs only; the other slot ran the interactive
    // jobs it got first, then the nightly jobs in their order, then the requests beyond
    // the budget.
    let kind = |job: &str| -> &'static str {
        match flood_jobs.iter().position(|j| j == job) {
            Some(i) if i < 2 => "interactive",
            Some(_) => "beyond the budget",
            None => "nightly",
        }
    };
    let runs: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.job_id, coalesce(a.worker, ''), calsync.job_user_id(calsync.job_payload(j.job)) \
         FROM calsync.job_attempts a JOIN apalis.jobs j ON j.id = a.job_id ORDER BY a.started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), 14, "every job ran once: {runs:?}");
    let (fast, main): (Vec<_>, Vec<_>) = runs.iter().partition(|r| r.1.ends_with("-fast-lane"));
    assert!(
        fast.iter().all(|r| kind(&r.0) == "interactive"),
        "the fast lane ran only interactive jobs: {fast:?}"
    );
    let order: Vec<&str> = main.iter().map(|r| kind(&r.0)).collect();
    let interactive_first = order.iter().take_while(|k| **k == "interactive").count();
    let mut want = vec!["interactive"; interactive_first];
    want.extend(["nightly"; 8]);
    want.extend(["beyond the budget"; 4]);
    assert_eq!(order, want, "{main:?}");
    // The nightly jobs ran in their queue order (run_at), give or take a place or two:
    // the fast lane's fetch locks the head nightly row for a moment (apalis' SKIP LOCKED
    // fetch, which the fast-lane trigger then declines), so the other slot may take the
    // next one first.
    let mut nightly_run_at = Vec::new();
    for r in main.iter().filter(|r| kind(&r.0) == "nightly") {
        let at: DateTime<Utc> = sqlx::query_scalar("SELECT run_at FROM apalis.jobs WHERE id = $1")
            .bind(&r.0)
            .fetch_one(&pool)
            .await
            .unwrap();
        nightly_run_at.push(at);
    }
    assert_eq!(nightly_run_at.len(), nightly.len());
    let mut by_run_at: Vec<usize> = (0..nightly_run_at.len()).collect();
    by_run_at.sort_by_key(|i| nightly_run_at[*i]);
    assert!(
        by_run_at
            .iter()
            .enumerate()
            .all(|(rank, started)| rank.abs_diff(*started) <= 2),
        "the nightly jobs in their order (give or take two places): {nightly_run_at:?}"
    );
}
