//! Service-account mode through the real google-calendar3 client against the fake:
//! provisioning end to end, idempotence across crashes, a deleted calendar replaced in
//! the same job, domain-wide delegation, `quotaUser`, and one token request for many
//! concurrent syncs.

mod support;

use std::time::Duration;

use calsync_domain::{owned_calendars, queue, settings, users};
use calsync_fake_google::{FakeGoogle, FaultRule, QuotaConfig, test_keys::SERVICE_ACCOUNT_EMAIL};
use calsync_worker::{
    backend::{Account, NewCalendar},
    config::GoogleAuth,
    job::{self, AttemptCtx, JobDeps, Outcome},
};
use sqlx::PgPool;
use support::*;

#[sqlx::test(migrations = false)]
async fn a_student_without_a_calendar_gets_one_shared_with_them_and_synced_in_the_same_job(
    pool: PgPool,
) {
    let course = course(&pool).await;
    let user = student(&pool, course, "Ada@Uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    // Per-user mode: nothing to sync to.
    assert!(users::due_user_ids(&pool).await.unwrap().is_empty());
    assert!(
        queue::enqueue_sync(&pool, user, "test", "test")
            .await
            .is_err()
    );

    let settings = service_account(&fake, false);
    let engine = engine(&pool, &settings).await;
    assert_eq!(
        settings::calendar_mode(&pool).await.unwrap(),
        settings::CalendarMode::ServiceAccount
    );
    // The mode is visible to SQL: the user is due and the SQL enqueue API accepts them.
    assert_eq!(users::due_user_ids(&pool).await.unwrap(), vec![user]);
    let job: String = sqlx::query_scalar("SELECT calsync.enqueue_sync($1)")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!job.is_empty());

    let report = engine.sync_user(user).await.unwrap();
    assert_eq!(report.provisioned, Some("new"));
    assert_eq!(report.inserted, 2);
    assert!(report.cleared);
    let cal = calendar_of(&pool, user).await.expect("calendar recorded");
    assert_eq!(
        fake.calendar_owner_email(&cal).as_deref(),
        Some(SERVICE_ACCOUNT_EMAIL)
    );
    let rules = fake.acl_rules(&cal);
    assert!(
        rules
            .iter()
            .any(|r| r["role"] == "reader" && r["scope"]["value"] == "ada@uni.edu"),
        "{rules:?}"
    );
    assert!(
        fake.sharing_notifications().is_empty(),
        "no e-mails by default"
    );
    assert_eq!(fake.live_events(&cal).len(), 2);
    let audit = audit_actions(&pool, "calendar_provisioned").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["reason"], "new");
    assert_eq!(audit[0]["calendar_id"], cal.as_str());
    assert!(!users::due_user_ids(&pool).await.unwrap().contains(&user));

    // The next sync finds everything in place: no calendar created, nothing shared again.
    fake.reset_calls();
    sqlx::query("SELECT calsync.flag_users(ARRAY[$1::bigint])")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let report = engine.sync_user(user).await.unwrap();
    assert_eq!(report.provisioned, None);
    assert_eq!(report.unchanged, 2);
    assert_eq!(fake.count_calls("calendars.insert"), 0);
    assert_eq!(fake.count_calls("acl.insert"), 0);
}

#[sqlx::test(migrations = false)]
async fn a_new_student_costs_no_listing_of_the_owners_calendars(pool: PgPool) {
    // The service account already owns many calendars (more than one calendarList
    // page): looking through them for every new student made provisioning quadratic.
    let course = course(&pool).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    let engine = engine(&pool, &settings).await;
    let first = student(&pool, course, "first@uni.edu", None).await;
    let mut s = engine
        .backend()
        .session(&Account {
            user_id: first,
            email: "first@uni.edu".into(),
        })
        .await
        .unwrap();
    for i in 0..260 {
        s.create_calendar(&NewCalendar {
            summary: format!("Courses {i}"),
            description: None,
            time_zone: None,
        })
        .await
        .unwrap();
    }
    let users = [
        first,
        student(&pool, course, "second@uni.edu", None).await,
        student(&pool, course, "third@uni.edu", None).await,
    ];
    fake.reset_calls();
    for user in users {
        let report = engine.sync_user(user).await.unwrap();
        assert_eq!(report.provisioned, Some("new"));
    }
    assert_eq!(fake.count_calls("calendars.insert"), 3);
    assert_eq!(
        fake.count_calls("calendarList.list"),
        0,
        "no creation had begun before: nothing to look for"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.provisioning_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every creation recorded");
}

#[sqlx::test(migrations = false)]
async fn a_crash_between_create_and_record_leaves_exactly_one_calendar(pool: PgPool) {
    let course = course(&pool).await;
    let user = student(&pool, course, "ada@uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    let engine = engine(&pool, &settings).await;
    // A previous attempt began a creation, created the calendar (with its marker) and
    // died before recording it anywhere.
    let installation = settings::installation_id(&pool).await.unwrap();
    assert!(
        !owned_calendars::begin_creation(&pool, user).await.unwrap(),
        "no earlier attempt"
    );
    let mut s = engine
        .backend()
        .session(&Account {
            user_id: user,
            email: "ada@uni.edu".into(),
        })
        .await
        .unwrap();
    let created = s
        .create_calendar(&NewCalendar {
            summary: "Courses".into(),
            description: Some(format!(
                "created before the crash {}",
                owned_calendars::marker(&installation, user)
            )),
            time_zone: Some("America/New_York".into()),
        })
        .await
        .unwrap();
    // Another user's marker must not be adopted.
    let other = student(&pool, course, "bob@uni.edu", None).await;
    s.create_calendar(&NewCalendar {
        summary: "Courses".into(),
        description: Some(owned_calendars::marker(&installation, other)),
        time_zone: None,
    })
    .await
    .unwrap();
    fake.reset_calls();

    let report = engine.sync_user(user).await.unwrap();
    assert_eq!(report.provisioned, Some("new"));
    assert_eq!(
        calendar_of(&pool, user).await.as_deref(),
        Some(created.id.as_str())
    );
    assert_eq!(
        fake.count_calls("calendars.insert"),
        0,
        "adopted, not created again"
    );
    assert_eq!(fake.live_events(&created.id).len(), 2);

    // A crash after the record but before the share and the user's row: the retry
    // resumes with the recorded calendar.
    let third = student(&pool, course, "cy@uni.edu", None).await;
    fake.add_fault(
        FaultRule::error(503, "backendError")
            .times(1)
            .method("acl.insert"),
    );
    let err = engine.sync_user(third).await.unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert_eq!(calendar_of(&pool, third).await, None);
    let report = engine.sync_user(third).await.unwrap();
    assert_eq!(report.provisioned, Some("new"));
    let owned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calsync.owned_calendars WHERE user_id = $1")
            .bind(third)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(owned, 1);
    let cal = calendar_of(&pool, third).await.unwrap();
    assert!(
        fake.acl_rules(&cal)
            .iter()
            .any(|r| r["scope"]["value"] == "cy@uni.edu")
    );
    // Three calendars in all: the adopted one, the other user's, the third user's.
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.method == "calendars.insert" && c.status < 300)
            .count(),
        1
    );
}

#[sqlx::test(migrations = false)]
async fn a_calendar_deleted_in_google_is_replaced_and_synced_in_the_same_job(pool: PgPool) {
    let course = course(&pool).await;
    let user = student(&pool, course, "ada@uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    let engine = engine(&pool, &settings).await;
    let deps = JobDeps {
        pool: pool.clone(),
        engine: calsync_worker::build_engine(&pool, &settings).unwrap(),
    };
    engine.sync_user(user).await.unwrap();
    let old = calendar_of(&pool, user).await.unwrap();
    fake.delete_calendar(&old);
    sqlx::query("SELECT calsync.flag_users(ARRAY[$1::bigint])")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();

    let payload = format!(r#"{{"user_id": {user}}}"#);
    let outcome = job::run_attempt(
        &deps,
        AttemptCtx {
            job_id: "01JTESTREPROVISION0000000000",
            attempt: 1,
            max_attempts: 8,
            worker: "test",
        },
        payload.as_bytes(),
    )
    .await;
    let Outcome::Done(report) = outcome else {
        panic!("expected the job to succeed: {outcome:?}");
    };
    assert_eq!(report["provisioned"], "replaced");
    let new = calendar_of(&pool, user).await.unwrap();
    assert_ne!(new, old);
    assert_eq!(fake.live_events(&new).len(), 2);
    let u = users::get(&pool, user).await.unwrap();
    assert_eq!(u.calendar_sync_status, users::SyncStatus::Ok);
    assert!(!u.calendar_needs_sync);
    let audit = audit_actions(&pool, "calendar_provisioned").await;
    assert_eq!(audit.last().unwrap()["reason"], "replaced");
    assert_eq!(audit.last().unwrap()["previous_calendar_id"], old.as_str());
    let old_state = owned_calendars::get(&pool, &old)
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(old_state, "deleted");
    // Nothing left for cleanup: the old calendar is gone already.
    assert!(
        calsync_domain::cleanup::pending(&pool, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrations = false)]
async fn with_domain_wide_delegation_calendars_are_created_in_the_students_account(pool: PgPool) {
    let course = course(&pool).await;
    let user = student(&pool, course, "ada@uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, true);
    fake.enable_domain_wide_delegation(SERVICE_ACCOUNT_EMAIL);
    let engine = engine(&pool, &settings).await;
    assert_eq!(
        settings::calendar_mode(&pool).await.unwrap(),
        settings::CalendarMode::Delegated
    );
    engine.sync_user(user).await.unwrap();
    let cal = calendar_of(&pool, user).await.unwrap();
    assert_eq!(
        fake.calendar_owner_email(&cal).as_deref(),
        Some("ada@uni.edu")
    );
    assert_eq!(fake.count_calls("acl.insert"), 0, "the student owns it");
    let calls = fake.calls();
    assert!(
        calls
            .iter()
            .filter(|c| c.method != "token")
            .all(|c| c.principal.as_deref() == Some("ada@uni.edu")),
        "every call acts as the student"
    );
    // Delegation not granted: a clear, permanent error (not a student problem).
    fake.set_domain_wide_delegation(SERVICE_ACCOUNT_EMAIL, false);
    let bob = student(&pool, course, "bob@uni.edu", None).await;
    let err = engine.sync_user(bob).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("unauthorized_client"), "{err}");
}

#[sqlx::test(migrations = false)]
async fn every_call_carries_quota_user_so_students_do_not_share_one_per_user_quota(pool: PgPool) {
    let course = course(&pool).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(student(&pool, course, &format!("s{i}@uni.edu"), None).await);
    }
    let fake = FakeGoogle::start().await.unwrap();
    // Each student's sync needs ~5 calls; all of them together twice the 15 one user may make.
    fake.set_quota(QuotaConfig::per_project(10_000, Duration::from_secs(60)).with_per_user(15));
    let settings = service_account(&fake, false);
    let engine = engine(&pool, &settings).await;
    for id in &ids {
        engine.sync_user(*id).await.unwrap();
    }
    let calls: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method != "token")
        .collect();
    assert!(calls.len() >= 30, "{} calls", calls.len());
    assert!(
        calls.iter().all(|c| c.status < 300),
        "no call was rate limited"
    );
    assert!(
        calls
            .iter()
            .all(|c| c.principal.as_deref() == Some(SERVICE_ACCOUNT_EMAIL))
    );
}

#[sqlx::test(migrations = false)]
async fn many_concurrent_syncs_share_one_token_request(pool: PgPool) {
    let course = course(&pool).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(student(&pool, course, &format!("s{i}@uni.edu"), None).await);
    }
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    // Each running sync holds a connection for its lock: a pool like a worker's.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(30)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let engine = std::sync::Arc::new(engine(&pool, &settings).await);
    let syncs = ids.iter().map(|id| {
        let engine = engine.clone();
        let id = *id;
        async move { engine.sync_user(id).await }
    });
    for r in futures::future::join_all(syncs).await {
        r.unwrap();
    }
    assert_eq!(fake.count_calls("token"), 1);
    // The key was never sent: only a signed assertion.
    assert!(matches!(settings.auth, GoogleAuth::ServiceAccount { .. }));
}

#[sqlx::test(migrations = false)]
async fn a_refused_service_account_key_fails_permanently_with_a_clear_error(pool: PgPool) {
    let course = course(&pool).await;
    let user = student(&pool, course, "ada@uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    fake.remove_service_account(SERVICE_ACCOUNT_EMAIL);
    let engine = engine(&pool, &settings).await;
    let err = engine.sync_user(user).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"));
}

#[sqlx::test(migrations = false)]
async fn a_dry_run_for_a_student_without_a_calendar_creates_nothing(pool: PgPool) {
    use calsync_domain::dry_run::{CalendarCheck, ChangeAction};
    let course = course(&pool).await;
    let user = student(&pool, course, "grace@uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    let engine = engine(&pool, &service_account(&fake, false)).await;
    let report = engine.dry_run(user).await.unwrap();
    assert_eq!(
        report.calendar,
        CalendarCheck::NoCalendar { provisioned: true }
    );
    assert_eq!(
        report.count(ChangeAction::Insert),
        2,
        "{:?}",
        report.changes
    );
    assert!(report.summary().contains("a sync would create one"));
    // Nothing was asked of Google, nothing recorded.
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert_eq!(calendar_of(&pool, user).await, None);
    assert!(
        audit_actions(&pool, "calendar_provisioned")
            .await
            .is_empty()
    );
}

#[sqlx::test(migrations = false)]
async fn a_cached_token_is_reused_until_five_minutes_before_it_expires(pool: PgPool) {
    let course = course(&pool).await;
    let a = student(&pool, course, "a@uni.edu", None).await;
    let b = student(&pool, course, "b@uni.edu", None).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    let hour = engine(&pool, &settings).await;
    // An hour-long token serves every sync of the process.
    hour.sync_user(a).await.unwrap();
    hour.sync_user(b).await.unwrap();
    assert_eq!(fake.count_calls("token"), 1);
    // A token with less than five minutes left is replaced before it is used: Google
    // never sees a token expire in the middle of a sync.
    fake.set_token_lifetime(Duration::from_secs(290));
    let fresh = engine(&pool, &settings).await;
    fake.reset_calls();
    fresh.sync_user(a).await.unwrap();
    let first = fake.count_calls("token");
    fresh.sync_user(b).await.unwrap();
    assert_eq!(first, 1);
    assert_eq!(
        fake.count_calls("token"),
        2,
        "the 290 s token was refreshed before its last five minutes"
    );
    assert!(
        fake.calls().iter().all(|c| c.status != 401),
        "no call was made with an expired token"
    );
}
