//! End-to-end in headless Chromium: "why is this student's calendar wrong?" — the user
//! page's week grid shows a seeded class on its day at its time (with the title the
//! student's preferences render, and the day a holiday cancels), and "Check against
//! Google" on a real `calsync dashboard` process shows the drift seeded in the fake
//! Google calendar, field by field, without a single Google write (the fake's call
//! log). Screenshots go to `target/e2e-screenshots/`.

use std::time::Duration;

use calsync_e2e::{browser::*, harness::*};
use calsync_fake_google::FakeGoogle;
use fantoccini::Locator;
use sqlx::PgPool;

/// The student's Monday meeting: its id, course title and begin hour.
async fn monday_meeting(pool: &PgPool, user: i64) -> (i64, String, i32) {
    sqlx::query_as(
        "SELECT mt.id, c.title, extract(hour FROM mt.begin_time)::int \
         FROM meeting_times mt JOIN courses c ON c.id = mt.course_id \
         JOIN enrollments e ON e.course_id = c.id AND e.user_id = $1 \
         WHERE mt.day_of_week = 1 ORDER BY mt.begin_time LIMIT 1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_week_grid_shows_a_class_on_its_day_and_time() {
    let fake = FakeGoogle::start().await.unwrap();
    let (_url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    let user = users[0];
    // Martin Luther King Jr. Day (a Monday) cancels the Monday classes; the student's
    // class titles carry the course code.
    sqlx::query(
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date, publish) \
         VALUES ('Martin Luther King Jr. Day', 'holiday', '2026-01-19', '2026-01-19', true)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO calendar_preferences (user_id, scope, title_template) \
         VALUES ($1, 'class', '{{ course_title }} ({{ course_code }})')",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let (mt, title, hour) = monday_meeting(&pool, user).await;
    let event = format!("cs{user}m{mt}");

    let addr = serve_dashboard(&pool).await;
    let base = format!("http://{addr}");
    let (_driver, c, profile) = browser().await;
    c.set_window_size(1300, 1500).await.unwrap();
    log_in(&c, &base, READONLY).await;
    page_with(&c, "<h1>Overview</h1>").await;
    c.goto(&format!("{base}/users/{user}")).await.unwrap();
    page_with(&c, "id=\"week-grid\"").await;

    let block = format!("#week-grid g.block[data-event='{event}']");
    assert_eq!(
        js(
            &c,
            &format!("document.querySelector(\"{block}\").dataset.day")
        )
        .await,
        serde_json::json!("mon")
    );
    // Drawn in Monday's column, its top on the line of its hour.
    let geometry = js(
        &c,
        &format!(
            "(() => {{ const r = document.querySelector(\"{block} rect.box\").getBoundingClientRect(); \
             const d = document.querySelector(\"#week-grid text.dayname[data-day='mon']\").getBoundingClientRect(); \
             const h = document.querySelector(\"#week-grid text.hour-label[data-hour='{hour:02}:00']\").getBoundingClientRect(); \
             const mid = d.left + d.width / 2; \
             return [r.left < mid && mid < r.right, Math.round(Math.abs(r.top - (h.top + h.height / 2))), Math.round(r.width)]; }})()"
        ),
    )
    .await;
    let [in_column, off, width] =
        <[serde_json::Value; 3]>::try_from(geometry.as_array().cloned().unwrap_or_default())
            .unwrap_or_else(|v| panic!("{v:?}"));
    assert_eq!(in_column, serde_json::json!(true), "{geometry}");
    assert!(
        off.as_f64().unwrap() <= 4.0,
        "block top vs hour line: {geometry}"
    );
    assert!(width.as_f64().unwrap() > 100.0, "{geometry}");
    // The rendered title, the time and the room in the block; the holiday in its row.
    let text = js(
        &c,
        &format!("document.querySelector(\"{block}\").textContent"),
    )
    .await;
    let text = text.as_str().unwrap();
    assert!(text.contains(&format!("{title} (CS")), "{text}");
    assert!(
        text.contains(&format!("{hour:02}:00–{:02}:00", hour + 1)),
        "{text}"
    );
    assert!(text.contains("101") || text.contains("202"), "{text}");
    let row = js(
        &c,
        &format!(
            "document.querySelector(\"table.week-classes tr[data-event='{event}']\").textContent"
        ),
    )
    .await;
    assert!(row.as_str().unwrap().contains("2026-01-19"), "{row}");
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("Martin Luther King Jr. Day"),
    );
    // This dashboard has no Google configuration: the check is explained, not offered.
    assert!(
        c.find(Locator::Css("p.check-unavailable")).await.is_ok(),
        "the not-available note"
    );
    c.execute("document.getElementById('week').scrollIntoView()", vec![])
        .await
        .unwrap();
    screenshot(&c, "user-week").await;
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_google_shows_the_drift_and_writes_nothing() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    let user = users[0];
    let cal = "e2e-cal-1";
    // A real worker syncs the student first.
    let mut worker = WorkerProcess::spawn(
        &url,
        &fake,
        "check",
        &["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"],
    );
    calsync_domain::queue::enqueue_sync(&pool, user, "browser", "test")
        .await
        .unwrap();
    worker
        .wait_until(&pool, "the student synced", Duration::from_secs(60), || async {
            fake.live_events(cal).len() == 4
                && sqlx::query_scalar::<_, bool>(
                    "SELECT last_calendar_sync_at IS NOT NULL AND NOT calendar_needs_sync FROM users WHERE id = $1",
                )
                .bind(user)
                .fetch_one(&pool)
                .await
                .unwrap()
        })
        .await;
    assert!(worker.terminate(Duration::from_secs(20)).success());

    // Drift. The registrar renames the Monday course; the student moves one event's
    // location by hand and deletes another; a meeting time is dropped.
    let (mon, old_title, _) = monday_meeting(&pool, user).await;
    sqlx::query(
        "UPDATE courses SET title = 'Calculus I' WHERE id = (SELECT course_id FROM meeting_times WHERE id = $1)",
    )
    .bind(mon)
    .execute(&pool)
    .await
    .unwrap();
    let others: Vec<(i64, i16)> = sqlx::query_as(
        "SELECT mt.id, mt.day_of_week FROM meeting_times mt JOIN enrollments e ON e.course_id = mt.course_id \
         AND e.user_id = $1 WHERE mt.course_id <> (SELECT course_id FROM meeting_times WHERE id = $2) ORDER BY mt.id",
    )
    .bind(user)
    .bind(mon)
    .fetch_all(&pool)
    .await
    .unwrap();
    let (moved, deleted, dropped) = (
        format!("cs{user}m{}", others[0].0),
        format!("cs{user}m{}", others[1].0),
        format!("cs{user}m{mon}"),
    );
    fake.user_edit_event(cal, &moved, serde_json::json!({"location": "Library 3"}));
    fake.user_delete_event(cal, &deleted);
    // The renamed course's Wednesday meeting stays (an update); its Monday one goes.
    sqlx::query("DELETE FROM meeting_times WHERE id = $1")
        .bind(mon)
        .execute(&pool)
        .await
        .unwrap();
    let renamed: String = sqlx::query_scalar(
        "SELECT format('cs%sm%s', $1::bigint, mt.id) FROM meeting_times mt JOIN courses c ON c.id = mt.course_id \
         WHERE c.title = 'Calculus I'",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();

    let dashboard = DashboardProcess::spawn(&url, &fake, ADMIN, READONLY).await;
    let base = format!("http://{}", dashboard.addr);
    let (_driver, c, profile) = browser().await;
    c.set_window_size(1300, 1100).await.unwrap();
    log_in(&c, &base, READONLY).await;
    page_with(&c, "<h1>Overview</h1>").await;
    c.goto(&format!("{base}/users/{user}")).await.unwrap();
    page_with(&c, "Check against Google").await;
    fake.reset_calls();
    c.find(Locator::XPath("//button[text()='Check against Google']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page_with(&c, "checked against Google").await;

    let rows = js(
        &c,
        "[...document.querySelectorAll('table.check-changes tr[data-event]')].map(r => r.dataset.action + ' ' + r.dataset.event)",
    )
    .await;
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(
        rows,
        vec![
            format!("update {renamed}"),
            format!("update {moved}"),
            format!("restore {deleted}"),
            format!("delete {dropped}"),
        ],
        "{}",
        dashboard.log_text()
    );
    let fields = |event: &str| {
        format!(
            "[...document.querySelectorAll(\"tr[data-event='{event}'] li[data-field]\")].map(li => li.textContent)"
        )
    };
    assert_eq!(
        js(&c, &fields(&renamed)).await,
        serde_json::json!([format!("summary: '{old_title}' → 'Calculus I'")])
    );
    let moved_fields: Vec<String> = serde_json::from_value(js(&c, &fields(&moved)).await).unwrap();
    assert_eq!(moved_fields.len(), 1, "{moved_fields:?}");
    assert!(
        moved_fields[0].starts_with("location: 'Library 3' → '"),
        "{moved_fields:?}"
    );
    let note = js(
        &c,
        &format!("document.querySelector(\"tr[data-event='{deleted}'] .change-note\").textContent"),
    )
    .await;
    assert_eq!(note, serde_json::json!("a student deleted this event"));
    // The read-only role may check, not sync.
    assert!(!c.source().await.unwrap().contains("Sync now"));
    // Google was only read: one events.list (and maybe a token), no write at all.
    let calls = fake.calls();
    assert_eq!(fake.write_calls(), 0, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.method == "events.list" || c.method == "token"),
        "{calls:?}"
    );
    assert_eq!(fake.count_calls("events.list"), 1, "{calls:?}");
    assert_eq!(
        fake.live_events(cal).len(),
        3,
        "the calendar is as the student left it"
    );
    screenshot(&c, "user-check").await;
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}
