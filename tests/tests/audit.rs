//! End-to-end: operator actions through the real `calsync` CLI leave their audit rows
//! (`sync-user`, `nightly --now`, `prune`, `mark-all`), written by the domain in the
//! action's own transaction; failed actions leave none.

use std::process::Command;

use calsync_e2e::harness::*;
use calsync_fake_google::FakeGoogle;
use sqlx::PgPool;

fn calsync(db_url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(calsync_bin())
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("NO_COLOR", "1")
        .output()
        .expect("run calsync");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn audit_log(pool: &PgPool) -> Vec<(String, String, serde_json::Value)> {
    sqlx::query_as("SELECT actor, action, detail FROM calsync.audit_log ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_actions_are_audited() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 2).await;

    let (ok, out) = calsync(&url, &["sync-user", &users[0].to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = calsync(&url, &["sync-user", "999999"]);
    assert!(!ok, "{out}");
    let (ok, out) = calsync(&url, &["nightly", "--now"]);
    assert!(ok, "{out}");
    let (ok, out) = calsync(&url, &["prune", "--older-than-days", "30"]);
    assert!(ok, "{out}");
    let (ok, out) = calsync(&url, &["mark-all"]);
    assert!(ok, "{out}");

    let log = audit_log(&pool).await;
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|(actor, action, _)| (actor.as_str(), action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("cli", "sync_user"),
            ("cli", "nightly_pass"),
            ("cli", "prune_jobs"),
            ("cli", "mark_all"),
        ],
        "{log:#?}"
    );
    assert_eq!(log[0].2["user_id"], users[0]);
    // The pass found both users due; the first already had its job from sync-user.
    assert_eq!(log[1].2["users_due"], 2);
    assert_eq!(log[1].2["already_queued"], 1);
    assert_eq!(log[3].2["flagged"], 2);
}
