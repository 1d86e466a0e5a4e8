//! End-to-end: `calsync worker` processes in service-account mode against the fake
//! Google (JWT-bearer grant, real RS256 verification): students with an e-mail and no
//! calendar get one created, shared, recorded and synced in the same job; a calendar
//! deleted in Google is replaced (audit row, status ok); `calsync status` shows the mode
//! and how far provisioning got; `calsync cleanup --dry-run` lists exactly what
//! `calsync cleanup` then deletes. And the demo, which runs in this mode by default.

use std::time::Duration;

use calsync_domain::settings::{self, CalendarMode};
use calsync_e2e::harness::*;
use calsync_fake_google::{FakeGoogle, test_keys::SERVICE_ACCOUNT_EMAIL};
use sqlx::PgPool;

const MINUTE: Duration = Duration::from_secs(60);

/// The environment of a service-account worker or CLI call.
fn service_account_env(key: &ServiceAccountKeyFile) -> [(&'static str, &str); 2] {
    [
        ("CALSYNC_GOOGLE_AUTH_MODE", "service-account"),
        ("CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE", key.as_str()),
    ]
}

async fn calendar_of(pool: &PgPool, user: i64) -> Option<String> {
    sqlx::query_scalar("SELECT google_course_calendar_id FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `(status, attempts)` of every sync job of `user`, oldest first.
async fn jobs_of(pool: &PgPool, user: i64) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT status, attempts FROM apalis.jobs WHERE calsync.job_user_id(calsync.job_payload(job)) = $1 ORDER BY id",
    )
    .bind(user)
    .fetch_all(pool)
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

/// The `detail` of every audit row of `action`, oldest first.
async fn audit(pool: &PgPool, action: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar("SELECT detail FROM calsync.audit_log WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}

fn reader_rule_for(fake: &FakeGoogle, calendar: &str, email: &str) -> bool {
    fake.acl_rules(calendar)
        .iter()
        .any(|r| r["role"] == "reader" && r["scope"]["value"] == email)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_worker_provisions_shares_syncs_replaces_and_cleans_up() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_students_without_calendars(&pool, 4).await;
    let key = ServiceAccountKeyFile::new(&fake);
    let env = service_account_env(&key);
    let worker = WorkerProcess::spawn_env(
        &url,
        &fake,
        "sa",
        &["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"],
        &env,
    );
    // The worker tells the database its mode at startup; from then on students without a
    // calendar are due.
    worker
        .wait_until(&pool, "the worker recorded its mode", MINUTE, || async {
            settings::calendar_mode(&pool).await.ok() == Some(CalendarMode::ServiceAccount)
        })
        .await;
    let status = run_calsync(&url, None, &["status"], &env, MINUTE);
    assert!(status.success, "{status:?}");
    for needle in [
        "calendar mode:    service_account",
        &format!("service-account key: readable ({SERVICE_ACCOUNT_EMAIL})"),
        "waiting for a calendar: 4",
        "4 users have no calendar yet: their next sync creates and shares one",
    ] {
        assert!(
            status.stdout.contains(needle),
            "{needle}: {}",
            status.stdout
        );
    }

    let nightly = run_calsync(&url, None, &["nightly", "--now"], &[], MINUTE);
    assert!(nightly.success, "{nightly:?}");
    assert!(nightly.stdout.contains("4 users to sync"), "{nightly:?}");
    worker
        .wait_until(
            &pool,
            "every student provisioned and synced",
            MINUTE,
            || all_jobs_done(&pool),
        )
        .await;
    for (g, user) in users.iter().enumerate() {
        let email = format!("e2e{}@uni.edu", g + 1);
        let cal = calendar_of(&pool, *user).await.expect("calendar recorded");
        assert_eq!(
            fake.calendar_owner_email(&cal).as_deref(),
            Some(SERVICE_ACCOUNT_EMAIL),
            "owned by the service account"
        );
        assert!(reader_rule_for(&fake, &cal, &email), "shared with {email}");
        assert_eq!(fake.live_events(&cal).len(), 4, "synced");
        assert_eq!(
            jobs_of(&pool, *user).await,
            vec![("Done".to_string(), 1)],
            "provisioned and synced in one job, first attempt"
        );
    }
    assert_eq!(fake.count_calls("calendars.insert"), 4, "one calendar each");
    assert!(fake.sharing_notifications().is_empty(), "no e-mails");
    let provisioned = audit(&pool, "calendar_provisioned").await;
    assert_eq!(provisioned.len(), 4);
    assert!(provisioned.iter().all(|a| a["reason"] == "new"));
    let status = run_calsync(&url, None, &["status", "--json"], &env, MINUTE);
    assert!(status.success, "{status:?}");
    let v: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("JSON");
    assert_eq!(v["auth"]["calendar_mode"], "service_account");
    assert_eq!(v["auth"]["service_account"]["key"]["state"], "readable");
    assert_eq!(v["auth"]["service_account"]["provisioning"]["active"], 4);
    assert_eq!(
        v["auth"]["service_account"]["provisioning"]["users_pending"],
        0
    );
    assert_eq!(
        v["auth"]["service_account"]["provisioning"]["not_shared"],
        0
    );

    // The student's calendar is deleted in Google: the next sync replaces it, in one job.
    let old = calendar_of(&pool, users[0]).await.unwrap();
    fake.delete_calendar(&old);
    let again = sync_user_and_wait(&url, users[0]);
    assert!(again.success, "{again:?}");
    assert!(again.stdout.contains("done"), "{again:?}");
    let new = calendar_of(&pool, users[0]).await.unwrap();
    assert_ne!(new, old);
    assert!(reader_rule_for(&fake, &new, "e2e1@uni.edu"));
    assert_eq!(fake.live_events(&new).len(), 4);
    let replaced = audit(&pool, "calendar_provisioned").await;
    let last = replaced.last().unwrap();
    assert_eq!(last["reason"], "replaced");
    assert_eq!(last["previous_calendar_id"], old.as_str());
    assert_eq!(last["calendar_id"], new.as_str());
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT calendar_sync_status::text, last_sync_error FROM users WHERE id = $1",
    )
    .bind(users[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "ok", "never calendar_missing: {error:?}");
    assert_eq!(
        jobs_of(&pool, users[0]).await.last().unwrap(),
        &("Done".to_string(), 1)
    );

    // A student leaves: the dry run lists their calendar, the real run deletes exactly it.
    let leaving = calendar_of(&pool, users[1]).await.unwrap();
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(users[1])
        .execute(&pool)
        .await
        .unwrap();
    let dry = run_calsync(&url, Some(&fake), &["cleanup", "--dry-run"], &env, MINUTE);
    assert!(dry.success, "{dry:?}");
    assert_eq!(
        dry.stdout.trim(),
        format!("delete calendar {leaving} (user {})", users[1])
    );
    assert!(fake.calendar_exists(&leaving), "a dry run deletes nothing");
    fake.reset_calls();
    let real = run_calsync(&url, Some(&fake), &["cleanup"], &env, MINUTE);
    assert!(real.success, "{real:?}");
    assert!(
        real.stdout.contains(&format!("deleted calendar {leaving}")),
        "{real:?}"
    );
    let deleted: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| c.method.ends_with(".delete") && c.status < 300)
        .filter_map(|c| c.calendar_id.clone())
        .collect();
    assert_eq!(
        deleted,
        vec![leaving.clone()],
        "exactly what the dry run listed"
    );
    assert!(!fake.calendar_exists(&leaving));
    for user in [users[0], users[2], users[3]] {
        let cal = calendar_of(&pool, user).await.unwrap();
        assert!(fake.calendar_exists(&cal), "calendars in use stay");
    }
    let settled = run_calsync(&url, Some(&fake), &["cleanup", "--dry-run"], &env, MINUTE);
    assert!(
        settled.stdout.contains("nothing to clean up"),
        "{settled:?}"
    );
    drop(worker);
}

#[tokio::test]
async fn the_demo_runs_in_service_account_mode_by_default() {
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let demo = run_calsync(
        &url,
        None,
        &[
            "demo",
            "--students",
            "24",
            "--courses",
            "12",
            "--exit-after-sync",
            "--dashboard-listen",
            "127.0.0.1:0",
        ],
        &[],
        Duration::from_secs(120),
    );
    assert!(demo.success, "{demo:?}");
    for needle in [
        "service-account mode",
        "24 users synced",
        "users still due: 0, needs re-auth: 0, calendar missing: 0",
        &format!(
            "calendars provisioned: 24 created (calendars.insert) and shared with their student (acl.insert: 24), by {SERVICE_ACCOUNT_EMAIL}"
        ),
    ] {
        assert!(demo.stdout.contains(needle), "{needle}: {}", demo.stdout);
    }
    assert_eq!(
        settings::calendar_mode(&pool).await.unwrap(),
        CalendarMode::ServiceAccount
    );
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM calsync.owned_calendars WHERE state = 'active' AND shared_with IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owned, 24);

    // The per-user mode still works, its tokens encrypted as in production.
    let demo = run_calsync(
        &url,
        None,
        &[
            "demo",
            "--students",
            "12",
            "--courses",
            "6",
            "--exit-after-sync",
            "--dashboard-listen",
            "127.0.0.1:0",
            "--auth-mode",
            "oauth",
        ],
        &[],
        Duration::from_secs(120),
    );
    assert!(demo.success, "{demo:?}");
    assert!(demo.stdout.contains("12 users synced"), "{}", demo.stdout);
    let (encrypted, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE split_part(refresh_token, ':', 4) = 'aead'), count(*) FROM google_credentials",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((encrypted, total), (12, 12));
}

/// `(calendar, event)` pairs of a dry run's "delete event E from calendar C (user U)"
/// lines, or of a real run's "deleted event E from calendar C" lines.
fn event_deletions(out: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("delete event ")
                .or_else(|| l.strip_prefix("deleted event "))?;
            let (event, rest) = rest.split_once(" from calendar ")?;
            let calendar = rest.split(' ').next()?;
            Some((calendar.to_string(), event.to_string()))
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_only_calsyncs_events_from_calendars_students_stopped_using() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 4).await;
    let args = ["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"];
    let mut worker = WorkerProcess::spawn(&url, &fake, "cleanup", &args);
    let nightly = run_calsync(&url, None, &["nightly", "--now"], &[], MINUTE);
    assert!(nightly.success, "{nightly:?}");
    worker
        .wait_until(&pool, "everyone synced", MINUTE, || all_jobs_done(&pool))
        .await;
    // Students keep their own events next to calsync's, then switch calendars (users 1
    // and 2) or leave (user 3).
    let mut own = Vec::new();
    for g in 1..=4 {
        let cal = format!("e2e-cal-{g}");
        own.push(fake.user_insert_event(
            &cal,
            serde_json::json!({"summary": "Dentist", "start": {"dateTime": "2026-02-02T10:00:00Z"},
                               "end": {"dateTime": "2026-02-02T11:00:00Z"}}),
        ));
    }
    for (i, user) in users.iter().take(2).enumerate() {
        let new = format!("e2e-new-cal-{}", i + 1);
        fake.create_calendar_with_id(&new, "Courses");
        sqlx::query("UPDATE users SET google_course_calendar_id = $2 WHERE id = $1")
            .bind(user)
            .bind(&new)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(users[2])
        .execute(&pool)
        .await
        .unwrap();

    let dry = run_calsync(&url, Some(&fake), &["cleanup", "--dry-run"], &[], MINUTE);
    assert!(dry.success, "{dry:?}");
    let planned = event_deletions(&dry.stdout);
    assert_eq!(
        planned.len(),
        8,
        "4 calsync events in each old calendar: {dry:?}"
    );
    assert!(
        planned
            .iter()
            .all(|(c, _)| c == "e2e-cal-1" || c == "e2e-cal-2"),
        "{planned:?}"
    );
    assert!(
        !dry.stdout.contains("e2e-cal-3"),
        "a deleted student's own calendar cannot be reached (their token is gone): {dry:?}"
    );
    assert_eq!(
        fake.live_events("e2e-cal-1").len(),
        5,
        "a dry run deletes nothing"
    );

    fake.reset_calls();
    let real = run_calsync(&url, Some(&fake), &["cleanup"], &[], MINUTE);
    assert!(real.success, "{real:?}");
    assert_eq!(event_deletions(&real.stdout), planned, "{real:?}");
    let mut deleted: Vec<(String, String)> = fake
        .calls()
        .iter()
        .filter(|c| c.method == "events.delete" && c.status < 300)
        .map(|c| {
            (
                c.calendar_id.clone().unwrap_or_default(),
                c.event_id.clone().unwrap_or_default(),
            )
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, planned, "Google saw exactly the planned deletions");
    assert_eq!(fake.count_calls("calendars.delete"), 0);
    for (g, event) in own.iter().enumerate().take(3) {
        let cal = format!("e2e-cal-{}", g + 1);
        let live: Vec<String> = fake
            .live_events(&cal)
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_string())
            .collect();
        if g < 2 {
            assert_eq!(
                live,
                vec![event.clone()],
                "only the student's own event is left"
            );
        } else {
            assert_eq!(live.len(), 5, "the unreachable calendar is untouched");
        }
    }
    let settled = run_calsync(&url, Some(&fake), &["cleanup", "--dry-run"], &[], MINUTE);
    assert!(
        settled.stdout.contains("nothing to clean up"),
        "{settled:?}"
    );
    assert!(worker.terminate(MINUTE).success());

    // The replica that runs a nightly pass cleans up after it.
    let cron = WorkerProcess::spawn(
        &url,
        &fake,
        "cleanup-cron",
        &[
            "--nightly-schedule",
            "*/2 * * * * *",
            "--nightly-time-zone",
            "UTC",
            "--heartbeat-secs",
            "1",
            "--poll-secs",
            "1",
        ],
    );
    fake.create_calendar_with_id("e2e-new-cal-4", "Courses");
    sqlx::query("UPDATE users SET google_course_calendar_id = 'e2e-new-cal-4' WHERE id = $1")
        .bind(users[3])
        .execute(&pool)
        .await
        .unwrap();
    cron.wait_until(
        &pool,
        "the pass after a nightly tick cleaned up the old calendar",
        MINUTE,
        || async {
            // Google's side first, then the audit row the pass writes after it.
            fake.live_events("e2e-cal-4")
                .iter()
                .map(|e| e["id"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                == vec![own[3].clone()]
                && sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM calsync.audit_log WHERE action = 'calendar_cleanup' \
                     AND detail->>'calendar_id' = 'e2e-cal-4'",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    > 0
        },
    )
    .await;
    let by: String = sqlx::query_scalar(
        "SELECT actor FROM calsync.audit_log WHERE action = 'calendar_cleanup' \
         AND detail->>'calendar_id' = 'e2e-cal-4'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(by.starts_with("cleanup-cron"), "{by}");
}
