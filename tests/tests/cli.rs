//! End-to-end: the `calsync` CLI — migrate, sync-user --wait, nightly --now, mark-all,
//! status — clear errors for bad configuration, said once, with their root cause, and
//! output fit for pipes.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use calsync_e2e::harness::*;
use calsync_fake_google::FakeGoogle;

fn calsync(db_url: Option<&str>, args: &[&str]) -> (bool, String) {
    calsync_env(db_url, args, &[("NO_COLOR", "1")])
}

/// Run `calsync` with its output piped (not a terminal) and `env` set; give up (and
/// fail) after 60 s.
fn calsync_env(db_url: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out_file = std::env::temp_dir().join(format!("calsync-cli-{:016x}.out", random_u64()));
    let file = std::fs::File::create(&out_file).expect("output file");
    let mut cmd = Command::new(calsync_bin());
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env("CALSYNC_LOG_FORMAT", "pretty")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("output file"))
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(url) = db_url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("run calsync");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for calsync") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "calsync {args:?} still running after 60 s: {}",
                std::fs::read_to_string(&out_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    (status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_drive_a_running_worker() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let (ok, out) = calsync(Some(&url), &["migrate"]);
    assert!(ok, "{out}");
    assert!(out.contains("database migrated"));
    let users = seed_university(&pool, &fake, 5).await;
    let _worker = WorkerProcess::spawn(&url, &fake, "cli", &["--no-cron", "--heartbeat-secs", "1"]);

    let (ok, out) = calsync(
        Some(&url),
        &[
            "sync-user",
            &users[0].to_string(),
            "--wait",
            "--timeout-secs",
            "60",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("done"), "{out}");
    assert_eq!(fake.live_events("e2e-cal-1").len(), 4);

    let (ok, out) = calsync(Some(&url), &["sync-user", "999999"]);
    assert!(!ok);
    assert!(out.contains("unknown user 999999"), "{out}");

    let (ok, out) = calsync(Some(&url), &["nightly", "--now"]);
    assert!(ok, "{out}");
    assert!(out.contains("4 users to sync"), "{out}");
    // Users are marked synced before apalis acknowledges their jobs: wait for the acks.
    wait_until("nightly pass done", Duration::from_secs(60), || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Done'")
                .fetch_one(&pool)
                .await
                .unwrap();
        unsynced_users(&pool).await == 0 && done == 5
    })
    .await;

    let (ok, out) = calsync(Some(&url), &["mark-all"]);
    assert!(ok, "{out}");
    assert!(out.contains("flagged 5 users"), "{out}");
    let (ok, out) = calsync(Some(&url), &["status", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("status --json prints JSON");
    assert_eq!(v["users"]["flagged"], 5);
    assert_eq!(v["users"]["due"], 5);
    assert!(
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["state"] == "done")
    );
    let (ok, out) = calsync(Some(&url), &["status"]);
    assert!(ok && out.contains("flagged:        5"), "{out}");

    let (ok, out) = calsync(Some(&url), &["prune", "--older-than-days", "0"]);
    assert!(ok, "{out}");
    assert!(out.contains("deleted 5 finished jobs"), "{out}");

    let (ok, out) = calsync(Some(&url), &["nightly"]);
    assert!(!ok && out.contains("--now"), "{out}");
}

#[tokio::test]
async fn bad_configuration_fails_fast_with_a_clear_message() {
    let (ok, out) = calsync(None, &["status"]);
    assert!(!ok);
    assert!(out.contains("DATABASE_URL is not set"), "{out}");

    let (url, _pool, _db) = fresh_database(&base_url()).await;
    let (ok, out) = calsync(Some(&url), &["worker", "--nightly-schedule", "30 3 * * *"]);
    assert!(!ok);
    assert!(
        out.contains("invalid nightly schedule") && out.contains("seconds first"),
        "{out}"
    );

    let (ok, out) = calsync(
        Some(&url),
        &["worker", "--nightly-time-zone", "Mars/Olympus"],
    );
    assert!(!ok);
    assert!(out.contains("Mars/Olympus"), "{out}");

    let (ok, out) = calsync(Some(&url), &["worker", "--concurrency", "0"]);
    assert!(!ok);
    assert!(out.contains("concurrency"), "{out}");

    let (ok, out) = calsync(Some("postgres://nobody@127.0.0.1:1/none"), &["status"]);
    assert!(!ok);
    assert!(out.contains("could not connect to the database"), "{out}");

    // An unmigrated database is named as such.
    let admin = sqlx::PgPool::connect(&base_url()).await.unwrap();
    let name = format!("calsync_e2e_empty_{:08x}", random_u64() as u32);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let (ok, out) = calsync(Some(&with_database(&base_url(), &name)), &["worker"]);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    assert!(!ok);
    assert!(out.contains("calsync migrate"), "{out}");

    let (ok, out) = calsync(Some(&url), &["dashboard", "--listen", "127.0.0.1:0"]);
    assert!(
        !ok,
        "the dashboard must not start without credentials: {out}"
    );
    assert!(out.contains("CALSYNC_DASHBOARD_ADMIN_TOKEN"), "{out}");
}

/// `url` with its user (and password) replaced by `user`.
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..host_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}://{user}@{host}")
}

#[tokio::test]
async fn a_refused_connection_fails_fast_with_its_cause_said_once_and_no_password() {
    let url = "postgres://calsync:hunter2@127.0.0.1:1/calsync";
    let started = Instant::now();
    let (ok, out) = calsync_env(Some(url), &["status"], &[]);
    let took = started.elapsed();
    assert!(!ok, "{out}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {out}");
    assert!(out.contains("connection refused"), "{out}");
    assert!(
        out.contains("postgres://calsync@127.0.0.1:1/calsync"),
        "names the URL: {out}"
    );
    assert!(!out.contains("hunter2"), "never the password: {out}");
    assert_eq!(
        out.matches("could not connect to the database").count(),
        1,
        "the error is printed once: {out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "no escape codes in piped output: {out:?}"
    );

    // A database that does not exist is named, at once.
    let missing = with_database(&base_url(), "calsync_no_such_db");
    let started = Instant::now();
    let (ok, out) = calsync_env(Some(&missing), &["status"], &[]);
    assert!(!ok);
    assert!(started.elapsed() < Duration::from_secs(5), "{out}");
    assert!(
        out.contains("database \"calsync_no_such_db\" does not exist"),
        "{out}"
    );

    // So is a user the server does not accept.
    let stranger = with_user(&base_url(), "calsync_no_such_role");
    let started = Instant::now();
    let (ok, out) = calsync_env(Some(&stranger), &["status"], &[]);
    assert!(!ok);
    assert!(started.elapsed() < Duration::from_secs(5), "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(out.contains("calsync_no_such_role"), "{out}");
}

#[tokio::test]
async fn a_command_error_is_printed_once() {
    let (url, _pool, _db) = fresh_database(&base_url()).await;
    let (ok, out) = calsync_env(Some(&url), &["sync-user", "999999"], &[]);
    assert!(!ok);
    assert_eq!(out.matches("unknown user 999999").count(), 1, "{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_worker_logs_carry_no_escape_codes() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, _pool, _db) = fresh_database(&base_url()).await;
    // The harness pipes the worker's output to a file and does not set NO_COLOR.
    let mut w = WorkerProcess::spawn(&url, &fake, "nocolor", &["--no-cron"]);
    wait_until("the worker logged", Duration::from_secs(30), || async {
        w.log_text().contains("calsync worker started")
    })
    .await;
    let log = w.log_text();
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(w.terminate(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn an_empty_or_short_api_token_is_refused_at_startup() {
    let (url, _pool, _db) = fresh_database(&base_url()).await;
    for token in ["", "short"] {
        let (ok, out) = calsync_env(
            Some(&url),
            &["worker", "--no-cron", "--http-listen", "127.0.0.1:0"],
            &[("CALSYNC_API_TOKEN", token)],
        );
        assert!(!ok, "{token:?}: {out}");
        assert!(
            out.contains("CALSYNC_API_TOKEN must be at least 12 characters"),
            "{token:?}: {out}"
        );
    }
}

#[tokio::test]
async fn status_explains_flagged_users_that_are_not_due() {
    let (url, pool, _db) = fresh_database(&base_url()).await;
    sqlx::query(
        "INSERT INTO users (email, name, google_course_calendar_id, calendar_needs_sync, calendar_sync_status) VALUES \
         ('r@x', 'R', 'c-r', true, 'needs_reauth'), ('g@x', 'G', 'c-g', true, 'calendar_missing'), \
         ('f@x', 'F', 'c-f', true, 'failing'), ('n@x', 'N', NULL, true, 'ok')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (ok, out) = calsync(Some(&url), &["status"]);
    assert!(ok, "{out}");
    for needle in [
        "1 need to sign in to Google again",
        "/users?status=needs_reauth",
        "1 deleted their course calendar",
        "/users?status=calendar_missing",
        "1 have no google_course_calendar_id",
        "1 failed on every retry",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let (ok, out) = calsync(Some(&url), &["status", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["flagged_not_due"]["needs_reauth"], 1);
}

/// The Google settings of the fake, as the CLI reads them.
fn fake_google_env(fake: &FakeGoogle) -> Vec<(&'static str, String)> {
    vec![
        ("NO_COLOR", "1".into()),
        ("CALSYNC_GOOGLE_API_BASE_URL", fake.base_url()),
        ("CALSYNC_GOOGLE_API_ROOT_URL", fake.root_url()),
        ("CALSYNC_GOOGLE_TOKEN_URL", fake.token_url()),
        ("CALSYNC_GOOGLE_CLIENT_ID", "e2e-client".into()),
        ("CALSYNC_GOOGLE_CLIENT_SECRET", "e2e-secret".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_user_dry_run_prints_what_a_sync_would_change_and_writes_nothing() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    let user = users[0].to_string();
    let env = fake_google_env(&fake);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Before any sync: every event is an insert.
    let (ok, out) = calsync_env(Some(&url), &["sync-user", &user, "--dry-run"], &env);
    assert!(ok, "{out}");
    assert!(out.contains("dry run (nothing written)"), "{out}");
    assert!(
        out.contains("4 inserts, 0 updates, 0 restores, 0 deletes"),
        "{out}"
    );
    assert_eq!(fake.write_calls(), 0);

    let mut worker = WorkerProcess::spawn(
        &url,
        &fake,
        "cli-dry",
        &["--no-cron", "--heartbeat-secs", "1"],
    );
    let (ok, out) = calsync(
        Some(&url),
        &["sync-user", &user, "--wait", "--timeout-secs", "60"],
    );
    assert!(ok, "{out}");
    assert!(worker.terminate(Duration::from_secs(20)).success());
    // Drift: a course renamed by the registrar, an event deleted by the student.
    let (course, old): (i64, String) = sqlx::query_as(
        "SELECT c.id, c.title FROM courses c JOIN enrollments e ON e.course_id = c.id WHERE e.user_id = $1 ORDER BY c.id LIMIT 1",
    )
    .bind(users[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE courses SET title = 'Calculus I' WHERE id = $1")
        .bind(course)
        .execute(&pool)
        .await
        .unwrap();
    let gone = fake
        .live_events("e2e-cal-1")
        .into_iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .find(|id| !id.is_empty())
        .unwrap();
    fake.user_delete_event("e2e-cal-1", &gone);
    fake.reset_calls();

    let (ok, out) = calsync_env(Some(&url), &["sync-user", &user, "--dry-run"], &env);
    assert!(ok, "{out}");
    println!("{out}");
    assert!(
        out.contains(&format!("summary: '{old}' → 'Calculus I'")),
        "{out}"
    );
    assert!(out.contains(&format!("restore {gone}")), "{out}");
    assert!(out.contains("a student deleted this event"), "{out}");
    assert_eq!(fake.write_calls(), 0, "{:?}", fake.calls());
    assert_eq!(fake.count_calls("events.list"), 1);
    // Nothing was enqueued.
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1, "only the --wait sync's job");

    let (ok, out) = calsync_env(Some(&url), &["sync-user", "999999", "--dry-run"], &env);
    assert!(!ok);
    assert!(out.contains("unknown user 999999"), "{out}");
    let (ok, out) = calsync(Some(&url), &["sync-user", &user, "--dry-run", "--wait"]);
    assert!(!ok);
    assert!(out.contains("cannot be used with"), "{out}");
}
