//! The user page's calendar-preferences section: stored rows, effective values per
//! kind, the last sync's template warnings and a preview of the rendered events, all
//! escaped.

mod common;

use calsync_domain::{
    preferences::{self, store},
    render::RenderWarning,
};
use calsync_seed::{CourseSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd};
use chrono::Weekday;
use common::{READONLY, app, get, login};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn the_user_page_shows_effective_preferences_warnings_and_a_preview(pool: PgPool) {
    let app = app(&pool, 50).await;
    let mut s = Seed::new();
    let room = s.add_room(RoomSpec::new("Smith Hall", "101"));
    let course = s.add_course(
        CourseSpec::new("Calculus I", "MATH", "1750")
            .section("01")
            .dates(ymd(2026, 8, 31), ymd(2026, 12, 11)),
    );
    s.add_meeting(MeetingSpec::new(course, Weekday::Mon, hm(9, 0), hm(9, 50)).room(room));
    let ana = s.add_student(StudentSpec::new("ana@uni.edu").calendar("cal-ana"));
    let bare = s.add_student(StudentSpec::new("bare@uni.edu").calendar("cal-bare"));
    s.enroll(ana, course);
    let ids = s.insert_with_pool(&pool).await.unwrap();
    let (ana, bare) = (ids[ana], ids[bare]);
    let prefs = preferences::parse_preferences(&json!([
        {"title_template": "<b>{{ course_code }}</b> · {{ course_title }}"},
        {"scope": "exam", "color_id": 11, "reminders": {"overrides": [{"method": "popup", "minutes": 1440}]}},
        {"scope": "class", "visibility": "private"}
    ]))
    .unwrap();
    store::replace(&pool, ana, &prefs, "test").await.unwrap();
    store::record_render_warnings(
        &pool,
        ana,
        &[RenderWarning {
            event_id: "cs1m1".into(),
            field: "title".into(),
            preference: "global".into(),
            message: "needs more work than a template may do".into(),
        }],
    )
    .await
    .unwrap();

    let cookie = login(&app, READONLY).await;
    let page = get(&app, &format!("/users/{ana}"), Some(&cookie)).await;
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(b.contains("Calendar preferences"), "{b}");
    // The stored template, escaped, never rendered as HTML.
    assert!(
        b.contains("&lt;b&gt;{{ course_code }}&lt;/b&gt; · {{ course_title }}"),
        "{b}"
    );
    assert!(!b.contains("<b>MATH"));
    // Effective values with their origin; unset fields are built in.
    assert!(b.contains("11 <span class=\"muted\">(exam)</span>"), "{b}");
    assert!(b.contains("popup 1440 min"), "{b}");
    assert!(
        b.contains("private <span class=\"muted\">(class)</span>"),
        "{b}"
    );
    assert!(b.contains("built-in"));
    // The last sync's warning.
    assert!(b.contains("needs more work than a template may do"));
    // The preview renders the template (escaped as text).
    assert!(
        b.contains("&lt;b&gt;MATH 1750-01&lt;/b&gt; · Calculus I"),
        "{b}"
    );
    assert!(b.contains("Monday 2026-08-31 09:00–09:50, weekly"), "{b}");
    assert!(b.contains("Smith Hall 101"));

    let page = get(&app, &format!("/users/{bare}"), Some(&cookie)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("No preferences: every event has the built-in look.")
    );
    assert!(page.body.contains("No events."));
}
