//! The sync's dry-run against real Postgres and the fake Google through the real
//! google-calendar3 client: it predicts exactly what the next sync does (the same diff),
//! field by field, makes no Google write and changes nothing in the database, and draws
//! its calls from the same quota as the sync.

mod support;

use calsync_domain::dry_run::{CalendarCheck, ChangeAction};
use calsync_fake_google::FakeGoogle;
use sqlx::PgPool;

async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap();
}

/// A student with a calendar in the fake (or none), refresh token `rt-1`.
async fn student(pool: &PgPool, fake: &FakeGoogle, calendar: Option<&str>) -> i64 {
    calsync_domain::migrate(pool).await.unwrap();
    if let Some(c) = calendar {
        fake.create_calendar_with_id(c, "Courses");
    }
    fake.add_refresh_token("rt-1");
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ('s@uni.edu', 'S', $1) RETURNING id",
    )
    .bind(calendar)
    .fetch_one(pool)
    .await
    .unwrap();
    exec(
        pool,
        &format!("INSERT INTO google_credentials (user_id, refresh_token) VALUES ({user}, 'rt-1')"),
    )
    .await;
    user
}

/// A course with meetings on `days` (0 = Sunday) at 09:00–09:50, the student enrolled;
/// returns the course and meeting ids.
async fn course(pool: &PgPool, user: i64, title: &str, days: &[i16]) -> (i64, Vec<i64>) {
    let course = scalar_i64(
        pool,
        &format!(
            "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
             VALUES ('{title}', 'MATH', '1750', '01', '2026-08-31', '2026-12-11') RETURNING id"
        ),
    )
    .await;
    let mut meetings = Vec::new();
    for d in days {
        meetings.push(
            scalar_i64(
                pool,
                &format!(
                    "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time) \
                     VALUES ({course}, {d}, '09:00', '09:50') RETURNING id"
                ),
            )
            .await,
        );
    }
    exec(
        pool,
        &format!("INSERT INTO enrollments (user_id, course_id) VALUES ({user}, {course})"),
    )
    .await;
    (course, meetings)
}

#[sqlx::test(migrations = false)]
async fn a_dry_run_predicts_the_next_sync_and_writes_nothing(pool: PgPool) {
    let fake = FakeGoogle::start().await.unwrap();
    let cal = "c_dry@group.calendar.google.com";
    let user = student(&pool, &fake, Some(cal)).await;
    let (calc, calc_mt) = course(&pool, user, "Calc 1", &[1]).await;
    let (physics, physics_mt) = course(&pool, user, "Physics", &[3, 5]).await;
    let engine = support::oauth_engine(&fake, &pool);
    let first = engine.sync_user(user).await.unwrap();
    assert_eq!(first.inserted, 3);

    // Drift: the registrar renames Calc 1 and moves Physics' Friday meeting to a new
    // Tuesday one; the
    // student deletes Wednesday's Physics in their calendar.
    exec(
        &pool,
        &format!("UPDATE courses SET title = 'Calculus I' WHERE id = {calc}"),
    )
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time) VALUES ({physics}, 2, '13:00', '13:50')"
        ),
    )
    .await;
    exec(
        &pool,
        &format!("DELETE FROM meeting_times WHERE id = {}", physics_mt[1]),
    )
    .await;
    fake.user_delete_event(cal, &format!("cs{user}m{}", physics_mt[0]));
    let new_mt = scalar_i64(
        &pool,
        &format!("SELECT max(id) FROM meeting_times WHERE course_id = {physics}"),
    )
    .await;
    let flagged = || async {
        // Tracked writes are logged; fold the log into the flags before reading them.
        calsync_domain::tracking::apply_pending_flags(&pool)
            .await
            .unwrap();
        sqlx::query_as::<_, (bool, i64, String)>(
            "SELECT calendar_needs_sync, calendar_sync_generation, calendar_sync_status FROM users WHERE id = $1",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = flagged().await;
    assert!(before.0);
    fake.reset_calls();

    let report = engine.dry_run(user).await.unwrap();
    let text = report.lines().join("\n");
    assert_eq!(report.calendar, CalendarCheck::Listed, "{text}");
    assert_eq!(report.calendar_id.as_deref(), Some(cal));
    let of = |a| {
        report
            .changes
            .iter()
            .filter(|c| c.action == a)
            .map(|c| c.event_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(ChangeAction::Insert),
        vec![format!("cs{user}m{new_mt}")],
        "{text}"
    );
    assert_eq!(
        of(ChangeAction::Update),
        vec![format!("cs{user}m{}", calc_mt[0])],
        "{text}"
    );
    assert_eq!(
        of(ChangeAction::Restore),
        vec![format!("cs{user}m{}", physics_mt[0])],
        "{text}"
    );
    assert_eq!(
        of(ChangeAction::Delete),
        vec![format!("cs{user}m{}", physics_mt[1])],
        "{text}"
    );
    assert_eq!(report.unchanged, 0);
    assert!(text.contains("summary: 'Calc 1' → 'Calculus I'"), "{text}");
    assert!(text.contains("a student deleted this event"), "{text}");
    // Only reads reached Google, each through the quota (one events.list), and nothing
    // changed in the database.
    assert_eq!(fake.write_calls(), 0, "{:?}", fake.calls());
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.method == "events.list" || c.method == "token"),
        "{:?}",
        fake.calls()
    );
    assert_eq!(report.api_calls, 1);
    assert_eq!(flagged().await, before);

    // The sync does exactly what the dry run said.
    let done = engine.sync_user(user).await.unwrap();
    assert_eq!(
        (
            done.inserted,
            done.updated,
            done.restored,
            done.deleted,
            done.unchanged
        ),
        (1, 1, 1, 1, 0),
        "{done:?}"
    );
    let again = engine.dry_run(user).await.unwrap();
    assert!(again.in_sync(), "{}", again.lines().join("\n"));
    assert_eq!(again.unchanged, 3);
}

#[sqlx::test(migrations = false)]
async fn a_missing_calendar_or_none_is_reported_without_a_write(pool: PgPool) {
    let fake = FakeGoogle::start().await.unwrap();
    // The calendar id points nowhere (the student deleted it).
    let user = student(&pool, &fake, None).await;
    course(&pool, user, "Calc 1", &[1, 3]).await;
    exec(
        &pool,
        &format!("UPDATE users SET google_course_calendar_id = 'c_gone@group.calendar.google.com' WHERE id = {user}"),
    )
    .await;
    let engine = support::oauth_engine(&fake, &pool);
    let report = engine.dry_run(user).await.unwrap();
    assert_eq!(
        report.calendar,
        CalendarCheck::Missing { provisioned: false }
    );
    assert!(report.changes.is_empty());
    assert!(
        report.summary().contains("calendar_missing"),
        "{}",
        report.summary()
    );
    assert_eq!(fake.write_calls(), 0);
    // The call was drawn from the student's quota bucket like a sync's, and the student
    // is not marked: a dry run decides nothing.
    assert_eq!(
        scalar_i64(
            &pool,
            &format!(
                "SELECT count(*) FROM calsync.google_quota_buckets WHERE bucket = 'user:{user}'"
            )
        )
        .await,
        1
    );
    let status: String = sqlx::query_scalar("SELECT calendar_sync_status FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "ok");

    // No calendar at all: nothing to list, no Google call.
    exec(
        &pool,
        &format!("UPDATE users SET google_course_calendar_id = NULL WHERE id = {user}"),
    )
    .await;
    fake.reset_calls();
    let report = engine.dry_run(user).await.unwrap();
    assert_eq!(
        report.calendar,
        CalendarCheck::NoCalendar { provisioned: false }
    );
    assert_eq!(report.api_calls, 0);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}
