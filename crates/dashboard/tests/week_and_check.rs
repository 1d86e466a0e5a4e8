//! The user page's week grid (from the event plan, preferences rendered) and "Check
//! against Google" (the injected `SyncPreview`: both roles, CSRF, throttled, a clear
//! state when not configured), through the router against real Postgres.

mod common;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::http::{StatusCode, header};
use calsync_dashboard::{CheckThrottleConfig, DashboardConfig, PreviewError, SyncPreview, router};
use calsync_domain::{
    dry_run::{CalendarCheck, ChangeAction, DryRunReport, FieldChange, PlannedChange},
    events::EventKind,
};
use calsync_seed::{AcademicSpec, CourseSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd};
use chrono::Weekday;
use common::*;
use sqlx::PgPool;

/// One student in MATH 1750 (Mon 10:00–10:50 in Smith 101, Thu 14:00–15:15 in a
/// placeholder room), with Labor Day off, a title template and a calendar.
async fn student(pool: &PgPool) -> (i64, i64, i64) {
    calsync_domain::migrate(pool).await.unwrap();
    let mut seed = Seed::new();
    let smith = seed.add_room(RoomSpec::new("Smith", "101"));
    let tbd = seed.add_room(RoomSpec::new("TBA", "0").placeholder(true));
    let course = seed.add_course(
        CourseSpec::new("Calculus I", "MATH", "1750")
            .section("01")
            .dates(ymd(2026, 8, 31), ymd(2026, 12, 11)),
    );
    let mon =
        seed.add_meeting(MeetingSpec::new(course, Weekday::Mon, hm(10, 0), hm(10, 50)).room(smith));
    let thu =
        seed.add_meeting(MeetingSpec::new(course, Weekday::Thu, hm(14, 0), hm(15, 15)).room(tbd));
    seed.add_academic(AcademicSpec::holiday("Labor Day", ymd(2026, 9, 7)).publish(true));
    let s = seed.add_student(StudentSpec::new("week@uni.edu").calendar("cal-week"));
    seed.enroll(s, course);
    let seeded = seed.insert_with_pool(pool).await.unwrap();
    let user = seeded[s];
    sqlx::query(
        "INSERT INTO calendar_preferences (user_id, scope, title_template) \
         VALUES ($1, 'class', '{{ course_code }} · {{ course_title }}')",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    (user, seeded[mon], seeded[thu])
}

#[sqlx::test(migrations = false)]
async fn the_user_page_shows_the_students_week(pool: PgPool) {
    let (user, mon, thu) = student(&pool).await;
    let app = router(pool.clone(), config()).unwrap();
    let cookie = login(&app, READONLY).await;
    let r = get(&app, &format!("/users/{user}"), Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let b = &r.body;
    // Monday's block at 10:00, with the rendered title and the room.
    let mon_block = format!(
        "data-event=\"cs{user}m{mon}\" data-day=\"mon\" data-start=\"10:00\" data-end=\"10:50\""
    );
    assert!(b.contains(&mon_block), "{b}");
    assert!(
        b.contains(&format!(
            "data-event=\"cs{user}m{thu}\" data-day=\"thu\" data-start=\"14:00\" data-end=\"15:15\""
        )),
        "{b}"
    );
    assert!(
        b.contains("MATH 1750-01 · Calculus I"),
        "the rendered title: {b}"
    );
    assert!(b.contains("Smith 101") && b.contains("TBD"), "{b}");
    // The term, the no-class day and the occurrence it cancels (Monday only).
    assert!(
        b.contains("<strong>2026-08-31</strong> to <strong>2026-12-11</strong>"),
        "{b}"
    );
    assert!(b.contains("Labor Day"), "{b}");
    let row = b
        .split("<tr data-event=")
        .find(|r| r.starts_with(&format!("\"cs{user}m{mon}\"")))
        .and_then(|r| r.split("</tr>").next())
        .expect("Monday's row");
    assert!(row.contains("2026-09-07"), "{row}");
    let thu_row = b
        .split("<tr data-event=")
        .find(|r| r.starts_with(&format!("\"cs{user}m{thu}\"")))
        .and_then(|r| r.split("</tr>").next())
        .expect("Thursday's row");
    assert!(!thu_row.contains("2026-09-07"), "{thu_row}");
    // The published holiday is an event calsync writes too.
    assert!(b.contains("class=\"other-events\""), "{b}");
    // No preview configured: the check is explained, not offered.
    assert!(b.contains("check-unavailable"), "{b}");
    assert!(!b.contains("Check against Google</button>"), "{b}");
}

/// A preview that answers a fixed report and counts its calls.
struct Stub {
    calls: AtomicUsize,
    answer: Result<DryRunReport, PreviewError>,
}

impl SyncPreview for Stub {
    fn dry_run(
        &self,
        user_id: i64,
    ) -> Pin<Box<dyn Future<Output = Result<DryRunReport, PreviewError>> + Send + '_>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.clone().map(|mut r| {
            r.user_id = user_id;
            r
        });
        Box::pin(async move { answer })
    }
}

fn report() -> DryRunReport {
    DryRunReport {
        user_id: 0,
        calendar_id: Some("cal-week".into()),
        calendar: CalendarCheck::Listed,
        changes: vec![
            PlannedChange {
                action: ChangeAction::Update,
                event_id: "cs1m1".into(),
                kind: Some(EventKind::Class),
                summary: "Calculus I".into(),
                note: None,
                fields: vec![FieldChange {
                    field: "summary",
                    before: "<script>Calc 1".into(),
                    after: "Calculus I".into(),
                }],
            },
            PlannedChange {
                action: ChangeAction::Restore,
                event_id: "cs1m2".into(),
                kind: Some(EventKind::Class),
                summary: "Calculus I".into(),
                note: Some("a student deleted this event".into()),
                fields: vec![],
            },
        ],
        unchanged: 3,
        skipped: vec![],
        warnings: vec![],
        api_calls: 1,
        checked_at: chrono::Utc::now(),
    }
}

fn with_stub(stub: Arc<Stub>, burst: u32) -> DashboardConfig {
    DashboardConfig {
        sync_preview: Some(stub),
        check_throttle: CheckThrottleConfig {
            burst,
            period: Duration::from_secs(3600),
        },
        ..config()
    }
}

#[sqlx::test(migrations = false)]
async fn both_roles_check_against_google_with_csrf_and_a_throttle(pool: PgPool) {
    let (user, _, _) = student(&pool).await;
    let stub = Arc::new(Stub {
        calls: AtomicUsize::new(0),
        answer: Ok(report()),
    });
    let app = router(pool.clone(), with_stub(stub.clone(), 2)).unwrap();
    let check = format!("/users/{user}/check");
    for token in [READONLY, ADMIN] {
        let cookie = login(&app, token).await;
        let page = get(&app, &format!("/users/{user}"), Some(&cookie)).await;
        assert!(
            page.body.contains("Check against Google</button>"),
            "{}",
            page.body
        );
        let csrf = csrf_of(&page.body);
        // Without the CSRF token: refused before any Google call.
        let r = post(&app, &check, Some(&cookie), &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = post(&app, &check, Some(&cookie), &[("csrf", &csrf)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(
            r.body.contains(
                "summary</strong>: <del>'&lt;script&gt;Calc 1'</del> → <ins>'Calculus I'</ins>"
            ),
            "{}",
            r.body
        );
        assert!(
            r.body.contains("a student deleted this event"),
            "{}",
            r.body
        );
        assert!(r.body.contains("data-count=\"3\""), "unchanged: {}", r.body);
        assert_eq!(r.body.contains("Sync now"), token == ADMIN, "{}", r.body);
    }
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    // The bucket (2 at once, then one an hour) is empty: refused with Retry-After, and
    // Google is not asked.
    let cookie = login(&app, READONLY).await;
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    let r = post(&app, &check, Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert!(
        r.body.contains("Too many checks against Google"),
        "{}",
        r.body
    );
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    // An unknown user is a 404 and costs nothing.
    let r = post(
        &app,
        "/users/999999/check",
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
}

#[sqlx::test(migrations = false)]
async fn a_failed_check_says_why_and_no_preview_means_not_available(pool: PgPool) {
    let (user, _, _) = student(&pool).await;
    let stub = Arc::new(Stub {
        calls: AtomicUsize::new(0),
        answer: Err(PreviewError::Failed(
            "Google refused the student's credentials".into(),
        )),
    });
    let app = router(pool.clone(), with_stub(stub, 5)).unwrap();
    let cookie = login(&app, ADMIN).await;
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    let r = post(
        &app,
        &format!("/users/{user}/check"),
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.body
            .contains("The check failed: Google refused the student"),
        "{}",
        r.body
    );

    let app = router(pool.clone(), config()).unwrap();
    let cookie = login(&app, READONLY).await;
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    let r = post(
        &app,
        &format!("/users/{user}/check"),
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("not available"), "{}", r.body);
}
