//! End-to-end: credentials at rest with real processes — `calsync credentials
//! rotate-key` run while a worker process syncs (no failed job, no plain token left), a
//! token no configured key opens (that student `needs_reauth`, the worker carries on),
//! `calsync status` naming what the keys cannot open, a per-user worker refusing to run
//! without keys, and the credentials / cleanup commands' error paths (said once, on
//! stderr, with a non-zero exit).

use std::{path::PathBuf, time::Duration};

use calsync_e2e::harness::*;
use calsync_fake_google::{FakeGoogle, FaultRule};
use sqlx::PgPool;

const MINUTE: Duration = Duration::from_secs(60);

/// `KEY_ID:BASE64` of a key made of 32 bytes `byte`.
fn key(kid: &str, byte: u8) -> String {
    use base64::Engine;
    format!(
        "{kid}:{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

fn test_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/worker/tests/data")
        .join(name)
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Every column of every credentials row, as text.
async fn stored_text(pool: &PgPool) -> String {
    sqlx::query_scalar::<_, String>(
        "SELECT coalesce(string_agg(row_to_json(g)::text, ' '), '') FROM google_credentials g",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn job_states(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT status, attempts FROM apalis.jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn running_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Running'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn all_jobs_done(pool: &PgPool) -> bool {
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'")
        .fetch_one(pool)
        .await
        .unwrap();
    open == 0 && unsynced_users(pool).await == 0
}

/// The one line starting with `error:` on stderr (the command's error, said once).
fn the_error(run: &CliRun) -> String {
    assert!(!run.success, "expected a failure: {run:?}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "the error is printed once: {run:?}");
    let error = errors[0].to_string();
    let head: String = error["error: ".len()..].chars().take(40).collect();
    assert_eq!(
        error.matches(&head).count(),
        1,
        "no part is said twice: {error}"
    );
    error
}

/// Arguments, environment, and what the error must say.
type ErrorCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);

#[test]
fn test_keys_are_32_bytes_of_base64() {
    assert_eq!(
        key("e2e", 1),
        E2E_CREDENTIALS_KEYS,
        "the harness' key is 32 bytes of 0x01"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_runs_online_next_to_a_syncing_worker_and_leaves_no_plain_token() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let public = test_data("test-sealing-key.pub.asc");
    let private = test_data("test-sealing-key.sec.asc");
    let added = run_calsync(
        &url,
        None,
        &["credentials", "add-sealing-key", path_str(&public)],
        &[],
        MINUTE,
    );
    assert!(added.success, "{added:?}");
    // Other services write tokens: the database seals them at once.
    let users = seed_university(&pool, &fake, 12).await;
    let tokens: Vec<String> = users.iter().map(|id| format!("e2e-rt-{id}")).collect();
    let k1 = key("k1", 1);
    let k2 = key("k2", 2);
    let k2_k1 = format!("{k2},{k1}");
    let sealing = ("CALSYNC_CREDENTIALS_SEALING_KEY_FILE", path_str(&private));
    let env1 = [("CALSYNC_CREDENTIALS_KEYS", k1.as_str()), sealing];
    let env2 = [("CALSYNC_CREDENTIALS_KEYS", k2_k1.as_str()), sealing];
    let args = ["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"];
    let mut first = WorkerProcess::spawn_env(&url, &fake, "rot1", &args, &env1);
    let nightly = run_calsync(&url, None, &["nightly", "--now"], &[], MINUTE);
    assert!(nightly.success, "{nightly:?}");
    first
        .wait_until(&pool, "everyone synced under k1", MINUTE, || {
            all_jobs_done(&pool)
        })
        .await;
    assert!(first.terminate(MINUTE).success());

    // Deploy k2 first (k1 kept), then rotate while every student syncs again, slowly
    // enough that the rotation meets running syncs (and their access-token writes).
    let second = WorkerProcess::spawn_env(&url, &fake, "rot2", &args, &env2);
    fake.expire_access_tokens();
    fake.add_fault(FaultRule::latency(Duration::from_millis(800)).method("events.list"));
    let mark = run_calsync(&url, None, &["mark-all"], &[], MINUTE);
    assert!(mark.success, "{mark:?}");
    let nightly = run_calsync(&url, None, &["nightly", "--now"], &[], MINUTE);
    assert!(nightly.success, "{nightly:?}");
    second
        .wait_until(&pool, "syncs are running", MINUTE, || async {
            running_jobs(&pool).await > 0
        })
        .await;
    let rotation_started = chrono::Utc::now();
    let rotated = {
        let (url, keys, sealing_file) = (url.clone(), k2_k1.clone(), private.clone());
        tokio::task::spawn_blocking(move || {
            run_calsync(
                &url,
                None,
                &["credentials", "rotate-key", "--batch-size", "3"],
                &[
                    ("CALSYNC_CREDENTIALS_KEYS", keys.as_str()),
                    (
                        "CALSYNC_CREDENTIALS_SEALING_KEY_FILE",
                        path_str(&sealing_file),
                    ),
                ],
                MINUTE,
            )
        })
    };
    let rotated = rotated.await.unwrap();
    let rotation_finished = chrono::Utc::now();
    assert!(rotated.success, "{rotated:?}");
    assert!(rotated.stdout.contains("under key k2"), "{rotated:?}");
    second
        .wait_until(&pool, "every sync of the second pass done", MINUTE, || {
            all_jobs_done(&pool)
        })
        .await;
    for (status, attempts) in job_states(&pool).await {
        assert_eq!((status.as_str(), attempts), ("Done", 1), "no job failed");
    }
    let overlapping: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE lock_at <= $2 AND done_at >= $1",
    )
    .bind(rotation_started)
    .bind(rotation_finished)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(overlapping > 0, "the rotation ran while syncs ran");
    let stored = stored_text(&pool).await;
    for t in &tokens {
        assert!(!stored.contains(t.as_str()), "{t} stored in plain text");
    }
    let (under_k2, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE refresh_token LIKE '%:aead:k2:%' \
                                 AND (access_token IS NULL OR access_token LIKE 'calsync:v1::aead:k2:%')), \
                count(*) FROM google_credentials",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((under_k2, total), (12, 12), "everything under the new key");

    // k1 can be retired: status with k2 alone finds nothing it cannot open; with k1
    // alone it names k2.
    let k2_only = run_calsync(
        &url,
        None,
        &["status"],
        &[("CALSYNC_CREDENTIALS_KEYS", k2.as_str()), sealing],
        MINUTE,
    );
    assert!(k2_only.success, "{k2_only:?}");
    assert!(k2_only.stdout.contains("calendar mode:    user_oauth"));
    assert!(
        k2_only
            .stdout
            .contains("refresh tokens: 12 encrypted, 0 sealed by the database, 0 plain"),
        "{}",
        k2_only.stdout
    );
    assert!(!k2_only.stdout.contains("warning:"), "{}", k2_only.stdout);
    let k1_only = run_calsync(
        &url,
        None,
        &["status"],
        &[("CALSYNC_CREDENTIALS_KEYS", k1.as_str()), sealing],
        MINUTE,
    );
    assert!(
        k1_only.stdout.contains(
            "12 refresh tokens are encrypted with key \"k2\", which is not configured here"
        ),
        "{}",
        k1_only.stdout
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_no_key_opens_marks_that_student_needs_reauth_and_the_worker_carries_on() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 2).await;
    let args = ["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"];
    let lost = key("lost", 9);
    // A deployment encrypted user 1's token with a key that was lost since.
    let mut old = WorkerProcess::spawn_env(
        &url,
        &fake,
        "lostkey",
        &args,
        &[("CALSYNC_CREDENTIALS_KEYS", lost.as_str())],
    );
    let synced = sync_user_and_wait(&url, users[0]);
    assert!(synced.success, "{synced:?}");
    assert!(old.terminate(MINUTE).success());

    let mut worker = WorkerProcess::spawn(&url, &fake, "newkey", &args);
    let failed = sync_user_and_wait(&url, users[0]);
    assert!(!failed.success, "{failed:?}");
    assert!(failed.stdout.contains("killed"), "{failed:?}");
    assert!(failed.stdout.contains("cannot be decrypted"), "{failed:?}");
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT calendar_sync_status::text, last_sync_error FROM users WHERE id = $1",
    )
    .bind(users[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "needs_reauth");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("cannot be decrypted") && error.contains("\"lost\""),
        "{error}"
    );
    // Everyone else syncs, on the same worker.
    let other = sync_user_and_wait(&url, users[1]);
    assert!(other.success && other.stdout.contains("done"), "{other:?}");
    assert!(worker.is_running(), "{}", worker.log_text());
    assert!(
        worker.log_text().contains(
            "1 refresh tokens are encrypted with key \"lost\", which is not configured here"
        ),
        "the worker warned at startup: {}",
        worker.log_text()
    );

    // What the operator sees, and what rotate-key says about the row.
    let status = run_calsync(&url, None, &["status"], &[], MINUTE);
    assert!(status.success, "{status:?}");
    for needle in [
        "needs re-auth:   1",
        "warning: 1 refresh tokens are encrypted with key \"lost\", which is not configured here",
    ] {
        assert!(
            status.stdout.contains(needle),
            "{needle}: {}",
            status.stdout
        );
    }
    let rotate = run_calsync(&url, None, &["credentials", "rotate-key"], &[], MINUTE);
    let error = the_error(&rotate);
    assert!(
        error.contains("1 stored credentials could not be decrypted")
            && error.contains("\"lost\"")
            && error.contains(&format!("users [{}]", users[0])),
        "{error}"
    );
    assert!(worker.terminate(MINUTE).success());
}

#[tokio::test]
async fn credentials_and_cleanup_errors_are_clear_said_once_and_exit_non_zero() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, _pool, _db) = fresh_database(&base_url()).await;
    let dir = std::env::temp_dir().join(format!("calsync-e2e-keys-{:016x}", random_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.asc");
    std::fs::write(&garbage, "this is not a key").unwrap();
    let not_json = dir.join("key.json");
    std::fs::write(&not_json, "{ not json").unwrap();
    let private_key = test_data("test-sealing-key.sec.asc");
    let cases: Vec<ErrorCase> = vec![
        (
            vec![
                "credentials",
                "add-sealing-key",
                "/nonexistent/sealing.pub.asc",
            ],
            vec![],
            vec!["/nonexistent/sealing.pub.asc", "No such file"],
        ),
        (
            vec!["credentials", "add-sealing-key", path_str(&private_key)],
            vec![],
            vec!["that is a private key: register the public key"],
        ),
        (
            vec!["credentials", "add-sealing-key", path_str(&garbage)],
            vec![],
            vec!["not a usable OpenPGP public key"],
        ),
        (
            vec!["credentials", "rotate-key"],
            vec![("CALSYNC_CREDENTIALS_KEYS", "")],
            vec!["no credentials keys configured: set CALSYNC_CREDENTIALS_KEYS"],
        ),
        (
            vec!["credentials", "rotate-key"],
            vec![("CALSYNC_CREDENTIALS_KEYS", "k1:c2VjcmV0LW1hdGVyaWFs")],
            vec!["credentials key \"k1\" must be 32 bytes (AES-256), got 15"],
        ),
        (
            vec!["credentials", "rotate-key"],
            vec![("CALSYNC_CREDENTIALS_KEYS", "secret-material-without-id")],
            vec!["a credentials key has no key id: expected KEY_ID:BASE64"],
        ),
        (
            vec!["credentials", "rotate-key"],
            vec![("CALSYNC_CREDENTIALS_KEYS_FILE", "/nonexistent/keys")],
            vec!["could not read CALSYNC_CREDENTIALS_KEYS_FILE from /nonexistent/keys"],
        ),
        (
            vec!["cleanup", "--dry-run"],
            vec![("CALSYNC_GOOGLE_AUTH_MODE", "service-account")],
            vec!["CALSYNC_GOOGLE_AUTH_MODE=service-account needs a service-account key"],
        ),
        (
            vec!["cleanup"],
            vec![
                ("CALSYNC_GOOGLE_AUTH_MODE", "delegated"),
                (
                    "CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE",
                    path_str(&not_json),
                ),
            ],
            vec!["the service-account key is not JSON"],
        ),
        (
            vec!["cleanup", "--dry-run"],
            vec![("CALSYNC_CREDENTIALS_KEYS", "")],
            vec![
                "no credentials key is configured",
                "CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT=true",
            ],
        ),
        (
            vec!["worker", "--no-cron", "--http-listen", "127.0.0.1:0"],
            vec![("CALSYNC_CREDENTIALS_KEYS", "")],
            vec![
                "CALSYNC_GOOGLE_AUTH_MODE=oauth stores students' Google refresh tokens, and no credentials key is configured",
                "CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT=true",
            ],
        ),
    ];
    for (args, env, needles) in cases {
        let run = run_calsync(&url, Some(&fake), &args, &env, MINUTE);
        let error = the_error(&run);
        for needle in needles {
            assert!(error.contains(needle), "{args:?}: {needle}: {error}");
        }
        assert!(
            !error.contains("c2VjcmV0") && !error.contains("secret-material"),
            "never key material: {error}"
        );
    }
    // Explicitly allowed, the per-user mode runs without keys (development only).
    let mut w = WorkerProcess::spawn_env(
        &url,
        &fake,
        "plaintext",
        &["--no-cron"],
        &[
            ("CALSYNC_CREDENTIALS_KEYS", ""),
            ("CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT", "true"),
        ],
    );
    wait_until("the worker started", MINUTE, || async {
        w.log_text().contains("calsync worker started")
    })
    .await;
    assert!(
        w.log_text().contains(
            "no credentials keys (CALSYNC_CREDENTIALS_KEYS): Google tokens are stored unencrypted"
        ),
        "{}",
        w.log_text()
    );
    assert!(w.terminate(MINUTE).success());
    let _ = std::fs::remove_dir_all(&dir);
}
