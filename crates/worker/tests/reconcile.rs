//! The sync engine against real Postgres and the fake Google Calendar API, through the
//! real google-calendar3 client: event bodies, idempotency, restores, paging, and every
//! error class.

mod support;

use std::time::Duration;
use support::backend;

use calsync_fake_google::{FakeGoogle, FaultRule};
use calsync_worker::{
    failure::Decision,
    job::{self, AttemptCtx, JobDeps, Outcome},
    sync::{SyncEngine, SyncError},
};
use serde_json::json;
use sqlx::PgPool;

struct World {
    fake: FakeGoogle,
    engine: SyncEngine,
    /// What the job handler runs with (its own engine on the same backend).
    deps: JobDeps,
    pool: PgPool,
    user: i64,
    cal: String,
    course: i64,
    mt_mon: i64,
}

/// One student in one course meeting Mon and Wed 09:00-10:15 in Smith 101,
/// 2026-01-12 .. 2026-05-01, with a calendar in the fake.
async fn world(pool: PgPool, calendar_id: &str) -> World {
    calsync_domain::migrate(&pool).await.unwrap();
    let fake = FakeGoogle::start().await.unwrap();
    fake.create_calendar_with_id(calendar_id, "Courses");
    fake.add_refresh_token("rt-1");
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ('s@uni.edu', 'S', $1) RETURNING id",
    )
    .bind(calendar_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO google_credentials (user_id, refresh_token) VALUES ($1, 'rt-1')")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let room: i64 = sqlx::query_scalar(
        "INSERT INTO rooms (building, number) VALUES ('Smith', '101') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let course: i64 = sqlx::query_scalar(
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
         VALUES ('Databases', 'CS', '340', '002', '2026-01-12', '2026-05-01') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut mts = Vec::new();
    for day in [1i16, 3] {
        mts.push(
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time, room_id) \
                 VALUES ($1, $2, '09:00', '10:15', $3) RETURNING id",
            )
            .bind(course)
            .bind(day)
            .bind(room)
            .fetch_one(&pool)
            .await
            .unwrap(),
        );
    }
    sqlx::query("INSERT INTO enrollments (user_id, course_id) VALUES ($1, $2)")
        .bind(user)
        .bind(course)
        .execute(&pool)
        .await
        .unwrap();
    let backend = backend(&fake, &pool);
    let tz = chrono_tz::America::New_York;
    let engine = SyncEngine::new(pool.clone(), backend.clone(), tz);
    let deps = JobDeps {
        pool: pool.clone(),
        engine: SyncEngine::new(pool.clone(), backend, tz),
    };
    World {
        fake,
        engine,
        deps,
        pool,
        user,
        cal: calendar_id.to_string(),
        course,
        mt_mon: mts[0],
    }
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap();
}

async fn user_row(
    pool: &PgPool,
    id: i64,
) -> (
    bool,
    Option<chrono::DateTime<chrono::Utc>>,
    String,
    Option<String>,
) {
    sqlx::query_as(
        "SELECT calendar_needs_sync, last_calendar_sync_at, calendar_sync_status, last_sync_error FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Run one attempt of the user's job the way the worker's handler does; returns the
/// failure policy's decision and the error.
async fn attempt(w: &World, attempt: usize, max_attempts: usize) -> (Decision, String) {
    let payload = format!(r#"{{"user_id": {}, "reason": "test"}}"#, w.user);
    attempt_with(w, payload.as_bytes(), attempt, max_attempts).await
}

async fn attempt_with(
    w: &World,
    payload: &[u8],
    attempt: usize,
    max_attempts: usize,
) -> (Decision, String) {
    let ctx = AttemptCtx {
        job_id: "01JOBJOBJOBJOBJOBJOBJOBJOB",
        attempt,
        max_attempts,
        worker: "test-worker",
    };
    match job::run_attempt(&w.deps, ctx, payload).await {
        Outcome::Failed { decision, error } => (decision, error.to_string()),
        Outcome::Done(report) => panic!("expected a failure, got {report}"),
    }
}

#[sqlx::test(migrations = false)]
async fn first_sync_writes_the_golden_events_and_clears_the_flag(pool: PgPool) {
    let w = world(pool, "c_golden@group.calendar.google.com").await;
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!((report.inserted, report.updated, report.deleted), (2, 0, 0));
    assert!(report.cleared);
    let ev = w
        .fake
        .event(&w.cal, &format!("cs{}m{}", w.user, w.mt_mon))
        .expect("event with the deterministic id");
    assert_eq!(ev["summary"], "Databases");
    assert_eq!(ev["description"], "CS-340-002");
    assert_eq!(ev["location"], "Smith 101");
    assert_eq!(ev["status"], "confirmed");
    // 09:00 EST on Monday 2026-01-12 is 14:00 UTC.
    assert_eq!(ev["start"]["dateTime"], "2026-01-12T14:00:00Z");
    assert_eq!(ev["start"]["timeZone"], "America/New_York");
    assert_eq!(ev["end"]["dateTime"], "2026-01-12T15:15:00Z");
    assert_eq!(
        ev["recurrence"],
        json!(["RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20260502T035959Z"])
    );
    assert_eq!(ev["extendedProperties"]["private"]["calsync"], "1");
    assert_eq!(
        ev["extendedProperties"]["private"]["calsyncMeetingTime"],
        w.mt_mon.to_string()
    );
    let (flag, last, status, err) = user_row(&w.pool, w.user).await;
    assert!(!flag);
    assert!(last.is_some());
    assert_eq!(status, "ok");
    assert_eq!(err, None);
}

#[sqlx::test(migrations = false)]
async fn dst_start_after_spring_forward_has_the_summer_offset(pool: PgPool) {
    let w = world(pool, "c_dst@group.calendar.google.com").await;
    exec(
        &w.pool,
        &format!(
            "UPDATE meeting_times SET start_date = '2026-03-09' WHERE id = {}",
            w.mt_mon
        ),
    )
    .await;
    w.engine.sync_user(w.user).await.unwrap();
    let ev = w
        .fake
        .event(&w.cal, &format!("cs{}m{}", w.user, w.mt_mon))
        .unwrap();
    // 09:00 EDT (UTC-4) on Monday 2026-03-09.
    assert_eq!(ev["start"]["dateTime"], "2026-03-09T13:00:00Z");
}

#[sqlx::test(migrations = false)]
async fn second_sync_without_changes_makes_no_writes(pool: PgPool) {
    let w = world(pool, "c_idem@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    w.fake.reset_calls();
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.unchanged, 2);
    assert_eq!(w.fake.write_calls(), 0, "{:?}", w.fake.calls());
}

#[sqlx::test(migrations = false)]
async fn a_data_change_updates_only_the_affected_event(pool: PgPool) {
    let w = world(pool, "c_change@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    exec(
        &w.pool,
        &format!(
            "UPDATE meeting_times SET begin_time = '08:30' WHERE id = {}",
            w.mt_mon
        ),
    )
    .await;
    w.fake.reset_calls();
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(
        (report.updated, report.unchanged, report.inserted),
        (1, 1, 0)
    );
    let writes: Vec<_> = w
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.is_write())
        .collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "events.update");
    assert_eq!(
        writes[0].event_id.as_deref(),
        Some(format!("cs{}m{}", w.user, w.mt_mon).as_str())
    );
    assert!(!user_row(&w.pool, w.user).await.0);
}

#[sqlx::test(migrations = false)]
async fn a_crash_after_the_google_writes_does_not_duplicate_events(pool: PgPool) {
    let w = world(pool, "c_crash@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    // As if the process died after inserting but before finish_sync.
    exec(&w.pool, &format!("UPDATE users SET calendar_needs_sync = true, last_calendar_sync_at = NULL WHERE id = {}", w.user)).await;
    w.fake.reset_calls();
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.inserted, 0);
    assert_eq!(w.fake.write_calls(), 0);
    assert_eq!(w.fake.live_events(&w.cal).len(), 2);
}

#[sqlx::test(migrations = false)]
async fn user_deleted_events_are_restored_and_manual_edits_reverted(pool: PgPool) {
    let w = world(pool, "c_restore@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    let mon = format!("cs{}m{}", w.user, w.mt_mon);
    let ids: Vec<String> = w
        .fake
        .live_events(&w.cal)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let wed = ids.iter().find(|i| **i != mon).unwrap().clone();
    w.fake.user_delete_event(&w.cal, &mon);
    w.fake.user_edit_event(
        &w.cal,
        &wed,
        json!({"summary": "Skipping this one", "location": "Beach"}),
    );
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!((report.restored, report.updated), (1, 1));
    let events = w.fake.live_events(&w.cal);
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e["summary"] == "Databases" && e["location"] == "Smith 101")
    );
}

#[sqlx::test(migrations = false)]
async fn stale_events_go_and_foreign_events_stay(pool: PgPool) {
    let w = world(pool, "c_stale@group.calendar.google.com").await;
    let foreign = w.fake.user_insert_event(
        &w.cal,
        json!({"summary": "Dentist", "start": {"dateTime": "2026-02-02T15:00:00Z"}, "end": {"dateTime": "2026-02-02T16:00:00Z"}}),
    );
    w.engine.sync_user(w.user).await.unwrap();
    exec(
        &w.pool,
        &format!("DELETE FROM meeting_times WHERE id = {}", w.mt_mon),
    )
    .await;
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.deleted, 1);
    let live = w.fake.live_events(&w.cal);
    assert_eq!(live.len(), 2, "{live:#?}");
    assert!(
        live.iter().any(|e| e["id"] == foreign.as_str()),
        "the student's own event is never touched"
    );
    // Re-imported meeting times (new ids) replace the old events instead of orphaning them.
    exec(
        &w.pool,
        &format!("DELETE FROM meeting_times WHERE course_id = {}", w.course),
    )
    .await;
    exec(
        &w.pool,
        &format!("INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time) VALUES ({}, 5, '13:00', '14:00')", w.course),
    )
    .await;
    w.engine.sync_user(w.user).await.unwrap();
    let calsync_live: Vec<_> = w
        .fake
        .live_events(&w.cal)
        .into_iter()
        .filter(|e| e["id"] != foreign.as_str())
        .collect();
    assert_eq!(calsync_live.len(), 1);
    assert_eq!(calsync_live[0]["location"], "TBD");
}

#[sqlx::test(migrations = false)]
async fn thousands_of_stale_events_are_paged_through_and_removed(pool: PgPool) {
    let w = world(pool, "c_paging@group.calendar.google.com").await;
    for i in 0..2_600 {
        w.fake.user_insert_event(
            &w.cal,
            json!({
                "id": format!("csstale{i:05}"),
                "summary": "old", "start": {"dateTime": "2025-09-01T14:00:00Z"}, "end": {"dateTime": "2025-09-01T15:00:00Z"},
                "extendedProperties": {"private": {"calsync": "1"}}
            }),
        );
    }
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.deleted, 2_600);
    assert_eq!(report.inserted, 2);
    let lists = w
        .fake
        .calls()
        .iter()
        .filter(|c| c.method == "events.list")
        .count();
    assert!(lists >= 2, "more than one page was listed");
    assert_eq!(w.fake.live_events(&w.cal).len(), 2);
}

#[sqlx::test(migrations = false)]
async fn an_already_deleted_event_counts_as_deleted(pool: PgPool) {
    let w = world(pool, "c_gone@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    exec(
        &w.pool,
        &format!("DELETE FROM meeting_times WHERE id = {}", w.mt_mon),
    )
    .await;
    w.fake.add_fault(
        FaultRule::error(410, "deleted")
            .method("events.delete")
            .times(1),
    );
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.deleted, 0);
    assert!(report.cleared, "a 410 on delete must not fail the sync");
}

#[sqlx::test(migrations = false)]
async fn a_revoked_refresh_token_marks_the_user_for_reauthentication(pool: PgPool) {
    let w = world(pool, "c_revoked@group.calendar.google.com").await;
    w.fake.revoke_refresh_token("rt-1");
    let err = w.engine.sync_user(w.user).await.unwrap_err();
    assert!(err.is_permanent());
    assert_eq!(err.kind(), "needs_reauth");
    assert!(
        !err.to_string().contains("rt-1"),
        "no secret in errors: {err}"
    );
    // The job kills itself and marks the user (the engine only reports).
    let (decision, _) = attempt(&w, 1, 8).await;
    assert_eq!(
        decision,
        Decision::NeedsUser(calsync_domain::users::SyncStatus::NeedsReauth)
    );
    let (flag, _, status, last) = user_row(&w.pool, w.user).await;
    assert_eq!(status, "needs_reauth");
    assert!(flag || last.is_some());
    let revoked: bool =
        sqlx::query_scalar("SELECT revoked FROM google_credentials WHERE user_id = $1")
            .bind(w.user)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(revoked);
    // Next time Google is not even asked.
    w.fake.reset_calls();
    assert_eq!(
        w.engine.sync_user(w.user).await.unwrap_err().kind(),
        "needs_reauth"
    );
    assert!(w.fake.calls().is_empty());
}

#[sqlx::test(migrations = false)]
async fn a_deleted_calendar_marks_the_user_calendar_missing(pool: PgPool) {
    let w = world(pool, "c_deleted@group.calendar.google.com").await;
    w.fake.delete_calendar(&w.cal);
    let err = w.engine.sync_user(w.user).await.unwrap_err();
    assert_eq!(err.kind(), "calendar_missing");
    assert!(err.is_permanent());
    // The 404 came from events.list: no calendars.get is needed to find out.
    assert_eq!(w.fake.count_calls("calendars.get"), 0);
    assert_eq!(w.fake.count_calls("events.list"), 1);
    let (decision, _) = attempt(&w, 1, 8).await;
    assert_eq!(
        decision,
        Decision::NeedsUser(calsync_domain::users::SyncStatus::CalendarMissing)
    );
    assert_eq!(user_row(&w.pool, w.user).await.2, "calendar_missing");
}

#[sqlx::test(migrations = false)]
async fn transient_google_errors_are_retryable(pool: PgPool) {
    let w = world(pool, "c_transient@group.calendar.google.com").await;
    for rule in [
        FaultRule::error(429, "rateLimitExceeded"),
        FaultRule::error(403, "rateLimitExceeded"),
        FaultRule::error(403, "userRateLimitExceeded"),
        FaultRule::error(500, "backendError"),
        FaultRule::error(503, "backendError"),
        FaultRule::non_json(502),
    ] {
        w.fake.clear_faults();
        w.fake
            .add_fault(rule.clone().method("events.list").times(1));
        let err = w.engine.sync_user(w.user).await.unwrap_err();
        assert!(!err.is_permanent(), "{rule:?} must be retryable: {err}");
        assert!(matches!(err, SyncError::Backend { .. }));
        // The flag stays, so the retry (or the next night) syncs the user.
        assert!(user_row(&w.pool, w.user).await.0 || user_row(&w.pool, w.user).await.1.is_none());
    }
    w.fake.clear_faults();
    assert!(w.engine.sync_user(w.user).await.unwrap().cleared);
}

#[sqlx::test(migrations = false)]
async fn a_rejected_event_is_a_permanent_error_with_a_clear_message(pool: PgPool) {
    let w = world(pool, "c_bad@group.calendar.google.com").await;
    w.fake.add_fault(
        FaultRule::error(400, "invalid")
            .message("Invalid recurrence rule.")
            .method("events.insert")
            .times(1),
    );
    let err = w.engine.sync_user(w.user).await.unwrap_err();
    assert!(err.is_permanent());
    assert_eq!(err.kind(), "bad_request");
    let msg = err.to_string();
    assert!(
        msg.contains("events.insert") && msg.contains("Invalid recurrence rule"),
        "{msg}"
    );
    assert!(msg.contains(&w.cal), "{msg}");
}

#[sqlx::test(migrations = false)]
async fn an_expired_access_token_is_refreshed_transparently(pool: PgPool) {
    let w = world(pool, "c_expired@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    let tokens = w.fake.count_calls("token");
    assert_eq!(tokens, 1);
    // Cached token reused on the next sync.
    w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(w.fake.count_calls("token"), 1);
    // Google forgets it (expired early, rotated): 401, refresh once, carry on.
    w.fake.expire_access_tokens();
    exec(
        &w.pool,
        &format!(
            "UPDATE courses SET title = 'Databases II' WHERE id = {}",
            w.course
        ),
    )
    .await;
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.updated, 2);
    assert_eq!(w.fake.count_calls("token"), 2);
}

#[sqlx::test(migrations = false)]
async fn concurrent_syncs_of_one_user_never_duplicate(pool: PgPool) {
    let w = world(pool, "c_concurrent@group.calendar.google.com").await;
    w.fake
        .add_fault(FaultRule::latency(Duration::from_millis(50)).method("events.insert"));
    let (a, b) = tokio::join!(w.engine.sync_user(w.user), w.engine.sync_user(w.user));
    let outcomes = [a, b];
    assert!(outcomes.iter().any(|r| r.is_ok()));
    for r in &outcomes {
        if let Err(e) = r {
            assert_eq!(e.kind(), "already_running");
            assert!(!e.is_permanent());
        }
    }
    assert_eq!(w.fake.count_calls("events.insert"), 2);
    assert_eq!(w.fake.live_events(&w.cal).len(), 2);
}

#[sqlx::test(migrations = false)]
async fn calendar_ids_with_reserved_characters_are_escaped(pool: PgPool) {
    let w = world(pool, "team#courses/2026@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(w.fake.live_events(&w.cal).len(), 2);
    assert!(w.fake.calendar_exists(&w.cal));
}

#[sqlx::test(migrations = false)]
async fn unknown_users_and_users_without_calendar_fail_permanently(pool: PgPool) {
    let w = world(pool, "c_unknown@group.calendar.google.com").await;
    let err = w.engine.sync_user(424_242).await.unwrap_err();
    assert_eq!(err.kind(), "unknown_user");
    assert!(err.is_permanent());
    exec(
        &w.pool,
        &format!(
            "UPDATE users SET google_course_calendar_id = NULL WHERE id = {}",
            w.user
        ),
    )
    .await;
    let err = w.engine.sync_user(w.user).await.unwrap_err();
    assert_eq!(err.kind(), "no_calendar");
}

#[sqlx::test(migrations = false)]
async fn a_daily_quota_error_asks_for_a_long_wait(pool: PgPool) {
    let w = world(pool, "c_quota@group.calendar.google.com").await;
    w.fake.add_fault(
        FaultRule::error(403, "quotaExceeded")
            .method("events.list")
            .times(1),
    );
    let err = w.engine.sync_user(w.user).await.unwrap_err();
    assert!(!err.is_permanent());
    assert_eq!(err.kind(), "rate_limited");
    assert!(
        err.retry_after()
            .is_some_and(|d| d >= Duration::from_secs(3600))
    );
    // A short rate limit leaves the pacing to the exponential backoff.
    w.fake.add_fault(
        FaultRule::error(429, "rateLimitExceeded")
            .method("events.list")
            .times(1),
    );
    assert_eq!(
        w.engine.sync_user(w.user).await.unwrap_err().retry_after(),
        None
    );
}

#[sqlx::test(migrations = false)]
async fn a_cancelled_sync_does_not_leave_the_user_locked(pool: PgPool) {
    let w = world(pool, "c_cancel@group.calendar.google.com").await;
    w.fake
        .add_fault(FaultRule::latency(Duration::from_secs(5)).method("events.list"));
    // The job timeout drops the sync future while it holds the user's lock.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(300), w.engine.sync_user(w.user)).await;
    assert!(
        cancelled.is_err(),
        "the sync should have been cancelled mid-flight"
    );
    // The lock's connection is closed rather than pooled, so the server drops the lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
        if held == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the advisory lock outlived the cancelled sync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.fake.clear_faults();
    let report = w
        .engine
        .sync_user(w.user)
        .await
        .expect("the lock died with the cancelled sync");
    assert!(report.cleared);
}

#[sqlx::test(migrations = false)]
async fn an_event_gone_between_list_and_update_is_created_again(pool: PgPool) {
    let w = world(pool, "c_purged@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    exec(
        &w.pool,
        &format!(
            "UPDATE courses SET title = 'Databases II' WHERE id = {}",
            w.course
        ),
    )
    .await;
    w.fake.add_fault(
        FaultRule::error(404, "notFound")
            .method("events.update")
            .times(1),
    );
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.inserted + report.updated, 2, "{report:?}");
    assert!(report.cleared);
    assert!(
        w.fake
            .live_events(&w.cal)
            .iter()
            .all(|e| e["summary"] == "Databases II")
    );
}

// ------------------------------------------------------------------ provider seam

#[sqlx::test(migrations = false)]
async fn an_unchanged_user_costs_one_list_call_and_no_calendar_check(pool: PgPool) {
    let w = world(pool, "c_cheap@group.calendar.google.com").await;
    w.engine.sync_user(w.user).await.unwrap();
    w.fake.reset_calls();
    let report = w.engine.sync_user(w.user).await.unwrap();
    assert_eq!(report.unchanged, 2);
    let methods: Vec<String> = w.fake.calls().into_iter().map(|c| c.method).collect();
    assert_eq!(methods, vec!["events.list".to_string()]);
    assert_eq!(report.api_calls, 1);
}

#[sqlx::test(migrations = false)]
async fn users_whose_ids_agree_in_the_low_32_bits_sync_concurrently(pool: PgPool) {
    let w = world(pool, "c_lowbits@group.calendar.google.com").await;
    // A second student whose id differs from the first only above bit 32.
    let twin = w.user + (1i64 << 32);
    let twin_cal = "c_lowbits_twin@group.calendar.google.com";
    w.fake.create_calendar_with_id(twin_cal, "Courses");
    sqlx::query(
        "INSERT INTO users (id, email, name, google_course_calendar_id) VALUES ($1, 't@uni.edu', 'T', $2)",
    )
    .bind(twin)
    .bind(twin_cal)
    .execute(&w.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO google_credentials (user_id, refresh_token) VALUES ($1, 'rt-1')")
        .bind(twin)
        .execute(&w.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO enrollments (user_id, course_id) VALUES ($1, $2)")
        .bind(twin)
        .bind(w.course)
        .execute(&w.pool)
        .await
        .unwrap();
    // Both syncs hold their lock while their inserts are slow.
    w.fake
        .add_fault(FaultRule::latency(Duration::from_millis(100)).method("events.insert"));
    let (a, b) = tokio::join!(w.engine.sync_user(w.user), w.engine.sync_user(twin));
    assert!(a.is_ok(), "{a:?}");
    assert!(
        b.is_ok(),
        "two different users never block each other: {b:?}"
    );
    assert_eq!(w.fake.live_events(&w.cal).len(), 2);
    assert_eq!(w.fake.live_events(twin_cal).len(), 2);
}

#[sqlx::test(migrations = false)]
async fn the_google_backend_creates_and_deletes_calendars(pool: PgPool) {
    use calsync_worker::backend::{Account, CalendarBackend, Deleted, NewCalendar};
    let w = world(pool, "c_owner@group.calendar.google.com").await;
    let backend = backend(&w.fake, &w.pool);
    let account = Account {
        user_id: w.user,
        email: "s@uni.edu".into(),
    };
    let mut s = backend.session(&account).await.unwrap();
    let created = s
        .create_calendar(&NewCalendar {
            summary: "Courses 2026".into(),
            description: Some("Managed by calsync".into()),
            time_zone: Some("America/New_York".into()),
        })
        .await
        .unwrap();
    assert!(w.fake.calendar_exists(&created.id), "{created:?}");
    assert_eq!(created.summary, "Courses 2026");
    let got = s.get_calendar(&created.id).await.unwrap();
    assert_eq!(got.id, created.id);
    assert_eq!(s.delete_calendar(&created.id).await.unwrap(), Deleted::Now);
    assert!(!w.fake.calendar_exists(&created.id));
    assert_eq!(
        s.delete_calendar(&created.id).await.unwrap(),
        Deleted::AlreadyGone
    );
    let missing = s.get_calendar(&created.id).await.unwrap_err();
    assert_eq!(missing.kind, "calendar_missing");
    assert_eq!(s.calls(), 5);
}

#[sqlx::test(migrations = false)]
async fn the_google_backend_shares_a_calendar_with_the_student(pool: PgPool) {
    use calsync_worker::backend::{AccessRole, Account, CalendarBackend, Share};
    let w = world(pool, "c_share@group.calendar.google.com").await;
    let backend = backend(&w.fake, &w.pool);
    let mut s = backend
        .session(&Account {
            user_id: w.user,
            email: "s@uni.edu".into(),
        })
        .await
        .unwrap();
    s.share_calendar(
        &w.cal,
        &Share {
            email: "s@uni.edu".into(),
            role: AccessRole::Reader,
            notify: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(w.fake.count_calls("acl.insert"), 1);
    let rules = w.fake.acl_rules(&w.cal);
    assert!(
        rules
            .iter()
            .any(|r| r["role"] == "reader" && r["scope"]["value"] == "s@uni.edu"),
        "{rules:?}"
    );
    assert!(
        w.fake.sharing_notifications().is_empty(),
        "sendNotifications=false"
    );
}

// ------------------------------------------------------------------ failure policy

async fn audit_actions(pool: &PgPool) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as("SELECT action, detail FROM calsync.audit_log ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_retryable_failure_is_retried_then_fails_the_user_on_the_last_attempt(pool: PgPool) {
    let w = world(pool, "c_policy@group.calendar.google.com").await;
    w.fake
        .add_fault(FaultRule::error(503, "backendError").method("events.list"));
    let (decision, error) = attempt(&w, 1, 3).await;
    assert_eq!(
        decision,
        Decision::Retry {
            after: None,
            quota: false
        }
    );
    assert!(error.contains("503"), "{error}");
    let (_, _, status, last) = user_row(&w.pool, w.user).await;
    assert_eq!(status, "ok", "a retry leaves the status alone");
    assert!(last.is_some_and(|e| e.contains("503")));
    assert!(
        audit_actions(&w.pool).await.is_empty(),
        "retries are not audited"
    );

    let (decision, _) = attempt(&w, 3, 3).await;
    assert_eq!(decision, Decision::OutOfAttempts);
    assert_eq!(user_row(&w.pool, w.user).await.2, "failing");
    let audits = audit_actions(&w.pool).await;
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].0, "sync_failed");
    assert_eq!(audits[0].1["status"], "failing");
    assert_eq!(audits[0].1["user_id"], w.user);
}

#[sqlx::test(migrations = false)]
async fn a_daily_quota_error_leaves_a_retry_hint_for_the_queue(pool: PgPool) {
    let w = world(pool, "c_hint@group.calendar.google.com").await;
    w.fake.add_fault(
        FaultRule::error(403, "quotaExceeded")
            .method("events.list")
            .times(1),
    );
    let (decision, _) = attempt(&w, 1, 8).await;
    assert_eq!(
        decision,
        Decision::Retry {
            after: Some(Duration::from_secs(3600)),
            quota: true
        }
    );
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM not_before - now())::float8 FROM calsync.retry_hints WHERE job_id = $1",
    )
    .bind("01JOBJOBJOBJOBJOBJOBJOBJOB")
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(wait > 3500.0, "{wait}");
}

#[sqlx::test(migrations = false)]
async fn a_rejected_request_kills_the_job_and_marks_the_user_failing(pool: PgPool) {
    let w = world(pool, "c_kill@group.calendar.google.com").await;
    w.fake.add_fault(
        FaultRule::error(400, "invalid")
            .message("Invalid recurrence rule.")
            .method("events.insert"),
    );
    let (decision, error) = attempt(&w, 1, 8).await;
    assert_eq!(decision, Decision::Kill);
    assert!(error.contains("Invalid recurrence rule"), "{error}");
    assert_eq!(user_row(&w.pool, w.user).await.2, "failing");
}

#[sqlx::test(migrations = false)]
async fn payloads_serde_cannot_read_fail_their_job_with_a_clear_error(pool: PgPool) {
    let w = world(pool, "c_poison@group.calendar.google.com").await;
    let deep = format!(
        r#"{{"user_id": 1, "x": {}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for (payload, needle) in [
        (r#"{"user_id": 1e400}"#.to_string(), "out of range"),
        (deep, "recursion limit"),
        (r#"{"user_id": 1, "reason": 7}"#.to_string(), "invalid type"),
        ("\u{0}\u{1}not json".to_string(), "expected value"),
    ] {
        let (decision, error) = attempt_with(&w, payload.as_bytes(), 1, 8).await;
        assert_eq!(decision, Decision::Kill, "{payload}");
        assert!(error.contains("malformed SyncUserJob payload"), "{error}");
        assert!(error.contains(needle), "{error}");
    }
    // Nobody's status changed; each kill is audited.
    assert_eq!(user_row(&w.pool, w.user).await.2, "ok");
    assert_eq!(audit_actions(&w.pool).await.len(), 4);
}
