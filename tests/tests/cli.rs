//! End-to-end: the `calsync` CLI — migrate, sync-user --wait, nightly --now, mark-all,
//! status — and clear errors for bad configuration.

use std::{process::Command, time::Duration};

use calsync_e2e::harness::*;
use calsync_fake_google::FakeGoogle;

fn calsync(db_url: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(calsync_bin());
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("CALSYNC_LOG_FORMAT", "pretty")
        .env("NO_COLOR", "1");
    if let Some(url) = db_url {
        cmd.env("DATABASE_URL", url);
    }
    let out = cmd.output().expect("run calsync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
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
