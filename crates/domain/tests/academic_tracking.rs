//! Change tracking of the academic calendar and final exams: set-based statement
//! triggers flag exactly the students whose calendars change, in one statement however
//! many; bad rows are refused with a clear message.

mod common;

use std::collections::BTreeMap;

use calsync_domain::{events, schedule};
use calsync_seed::{CourseSpec, MeetingSpec, Seed, StudentSpec, hm, ymd};
use chrono::Weekday;
use common::{Uni, exec, flagged, seed, settle};
use sqlx::PgPool;

async fn assert_flags(pool: &PgPool, sql: &str, expected: &[i64]) {
    settle(pool).await;
    exec(pool, sql).await;
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(flagged(pool).await, want, "after: {sql}");
}

/// The common university plus dave, who only takes a summer course (Thursdays,
/// 2026-06-01 .. 2026-07-31).
async fn with_dave(pool: &PgPool) -> (Uni, i64) {
    let u = seed(pool).await;
    let mut s = Seed::new();
    let dave = s.add_student(StudentSpec::new("dave@uni.edu").calendar("cal-dave"));
    let summer = s.add_course(
        CourseSpec::new("Summer Statistics", "ST", "100").dates(ymd(2026, 6, 1), ymd(2026, 7, 31)),
    );
    s.add_meeting(MeetingSpec::new(summer, Weekday::Thu, hm(9, 0), hm(10, 0)));
    s.enroll(dave, summer);
    let ids = s.insert_with_pool(pool).await.unwrap();
    settle(pool).await;
    (u, ids[dave])
}

fn holiday(title: &str, first: &str, last: &str, no_classes: bool, publish: bool) -> String {
    format!(
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date, no_classes, publish) \
         VALUES ('{title}', 'holiday', '{first}', '{last}', {no_classes}, {publish})"
    )
}

#[sqlx::test(migrations = false)]
async fn a_holiday_flags_exactly_the_students_with_a_class_that_day(pool: PgPool) {
    let (u, _dave) = with_dave(&pool).await;
    // Monday 2026-01-19: CS 101 meets on Mondays, MA 201 on Tuesdays only.
    assert_flags(
        &pool,
        &holiday("MLK Day", "2026-01-19", "2026-01-19", true, false),
        &[u.alice, u.bob],
    )
    .await;
    // A week-long break touches every spring class, not the summer one.
    assert_flags(
        &pool,
        &holiday("Spring break", "2026-03-09", "2026-03-13", true, false),
        &[u.alice, u.bob, u.carol],
    )
    .await;
    // Before any course starts, or between terms: nobody.
    assert_flags(
        &pool,
        &holiday("Quiet", "2026-01-05", "2026-01-09", true, false),
        &[],
    )
    .await;
    assert_flags(
        &pool,
        &holiday("Gap", "2026-05-11", "2026-05-29", true, false),
        &[],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn moving_toggling_or_deleting_a_holiday_flags_old_and_new_range(pool: PgPool) {
    let (u, dave) = with_dave(&pool).await;
    exec(
        &pool,
        &holiday("Snow day", "2026-02-17", "2026-02-17", true, false),
    )
    .await; // Tue
    // Moved from Tuesday (MA 201) to Monday (CS 101): both.
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET start_date = '2026-02-16', end_date = '2026-02-16'",
        &[u.alice, u.bob, u.carol],
    )
    .await;
    // Moved into the summer (a Thursday): the Monday students and dave.
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET start_date = '2026-06-04', end_date = '2026-06-04'",
        &[u.alice, u.bob, dave],
    )
    .await;
    // Classes back on: dave.
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET no_classes = false",
        &[dave],
    )
    .await;
    // No longer cancelling anything, so deleting it flags nobody…
    assert_flags(&pool, "DELETE FROM academic_calendar_events", &[]).await;
    // …while deleting a cancelling one gives the class back.
    exec(
        &pool,
        &holiday("MLK Day", "2026-01-19", "2026-01-19", true, false),
    )
    .await;
    assert_flags(
        &pool,
        "DELETE FROM academic_calendar_events",
        &[u.alice, u.bob],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn published_rows_flag_students_whose_courses_overlap(pool: PgPool) {
    let (u, dave) = with_dave(&pool).await;
    // Not cancelling classes, not published: nobody sees it.
    assert_flags(
        &pool,
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date, publish) \
         VALUES ('Last day to withdraw', 'other', '2026-03-20', '2026-03-20', false)",
        &[],
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET title = 'Withdraw deadline'",
        &[],
    )
    .await;
    // Published (a Friday no class meets): every student of an overlapping course.
    let spring = [u.alice, u.bob, u.carol];
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET publish = true",
        &spring,
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET title = 'Last day to drop'",
        &spring,
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET category = 'holiday'",
        &spring,
    )
    .await;
    // Untracked bookkeeping.
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET updated_at = now() + interval '1 hour'",
        &[],
    )
    .await;
    // Moved into the summer: the spring students lose it, dave gains it.
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET start_date = '2026-07-03', end_date = '2026-07-03'",
        &[u.alice, u.bob, u.carol, dave],
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE academic_calendar_events SET publish = false",
        &[dave],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn final_exams_flag_the_course_students(pool: PgPool) {
    let u = seed(&pool).await;
    let cs = [u.alice, u.bob];
    assert_flags(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id) \
             VALUES ({}, '2026-05-01 09:00', '2026-05-01 12:00', NULL)",
            u.cs101
        ),
        &cs,
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE final_exams SET starts_at = starts_at + interval '1 hour', ends_at = ends_at + interval '1 hour'",
        &cs,
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE final_exams SET notes = 'calculators allowed'",
        &[],
    )
    .await;
    assert_flags(
        &pool,
        &format!("UPDATE final_exams SET room_id = {}", u.room_b),
        &cs,
    )
    .await;
    // Renaming the exam's room: Jones is also MA 201's room, so its students too.
    assert_flags(
        &pool,
        &format!("UPDATE rooms SET number = 'B3' WHERE id = {}", u.room_b),
        &[u.alice, u.bob, u.carol],
    )
    .await;
    // Moved to another course: both courses' students.
    assert_flags(
        &pool,
        &format!("UPDATE final_exams SET course_id = {}", u.ma201),
        &[u.alice, u.bob, u.carol],
    )
    .await;
    assert_flags(&pool, "DELETE FROM final_exams", &[u.bob, u.carol]).await;
}

#[sqlx::test(migrations = false)]
async fn an_exam_room_renamed_flags_the_course_even_without_meetings_there(pool: PgPool) {
    let u = seed(&pool).await;
    exec(
        &pool,
        "INSERT INTO rooms (building, number) VALUES ('Gym', '1')",
    )
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id) \
             SELECT {}, '2026-05-01 09:00', '2026-05-01 12:00', id FROM rooms WHERE building = 'Gym'",
            u.ma201
        ),
    )
    .await;
    assert_flags(
        &pool,
        "UPDATE rooms SET building = 'Field House' WHERE building = 'Gym'",
        &[u.bob, u.carol],
    )
    .await;
    assert_flags(
        &pool,
        "DELETE FROM rooms WHERE building = 'Field House'",
        &[u.bob, u.carol],
    )
    .await;
}

/// The triggers and the event model agree: for a series of registrar changes, the
/// flagged students are exactly those whose planned events changed.
#[sqlx::test(migrations = false)]
async fn flagged_students_are_exactly_those_whose_events_change(pool: PgPool) {
    let (u, dave) = with_dave(&pool).await;
    let users = [u.alice, u.bob, u.carol, dave];
    exec(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at) VALUES ({}, '2026-05-04 09:00', '2026-05-04 11:00')",
            u.ma201
        ),
    )
    .await;
    let plans = |pool: PgPool| async move {
        let mut out = BTreeMap::new();
        for id in users {
            let snap = schedule::load_snapshot(&pool, id).await.unwrap();
            out.insert(
                id,
                events::plan_events(&snap, chrono_tz::America::New_York).events,
            );
        }
        out
    };
    for sql in [
        holiday("MLK Day", "2026-01-19", "2026-01-19", true, false),
        holiday("Summer holiday", "2026-07-02", "2026-07-03", true, true),
        "UPDATE academic_calendar_events SET start_date = '2026-01-20', end_date = '2026-01-20' WHERE title = 'MLK Day'".into(),
        "UPDATE academic_calendar_events SET publish = true WHERE title = 'MLK Day'".into(),
        "UPDATE academic_calendar_events SET title = 'Independence Day' WHERE title = 'Summer holiday'".into(),
        "UPDATE academic_calendar_events SET no_classes = false WHERE title = 'Independence Day'".into(),
        holiday("Outside", "2026-08-10", "2026-08-14", true, true),
        "UPDATE final_exams SET ends_at = ends_at + interval '30 minutes'".into(),
        "UPDATE final_exams SET notes = 'open book'".into(),
        "DELETE FROM academic_calendar_events WHERE title = 'MLK Day'".into(),
        "DELETE FROM final_exams".into(),
    ] {
        let before = plans(pool.clone()).await;
        settle(&pool).await;
        exec(&pool, &sql).await;
        let after = plans(pool.clone()).await;
        let changed: Vec<i64> = users.into_iter().filter(|id| before[id] != after[id]).collect();
        assert_eq!(flagged(&pool).await, changed, "after: {sql}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_campus_wide_holiday_flags_thousands_in_one_statement(pool: PgPool) {
    let _ = seed(&pool).await;
    let mut s = Seed::new();
    let course = s.add_course(
        CourseSpec::new("Everyone's Seminar", "GE", "100").dates(ymd(2026, 1, 12), ymd(2026, 5, 1)),
    );
    s.add_meeting(MeetingSpec::new(course, Weekday::Mon, hm(11, 0), hm(12, 0)));
    for g in 0..3000 {
        let st =
            s.add_student(StudentSpec::new(format!("bulk{g}@uni.edu")).calendar(format!("c{g}")));
        s.enroll(st, course);
    }
    s.insert_with_pool(&pool).await.unwrap();
    settle(&pool).await;
    let generations = || async {
        sqlx::query_scalar::<_, i64>("SELECT sum(calendar_sync_generation)::bigint FROM users")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = generations().await;
    exec(
        &pool,
        &holiday("Presidents Day", "2026-02-16", "2026-02-16", true, true),
    )
    .await;
    // 3000 bulk students + alice, bob, carol (all in spring courses: published), each
    // flagged once.
    assert_eq!(flagged(&pool).await.len(), 3003);
    assert_eq!(generations().await - before, 3003);
}

async fn refused(pool: &PgPool, sql: &str) -> String {
    let err = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .expect_err(sql);
    err.to_string()
}

#[sqlx::test(migrations = false)]
async fn nonsense_rows_are_refused_with_a_clear_message(pool: PgPool) {
    let u = seed(&pool).await;
    let msg = refused(
        &pool,
        &holiday("Backwards", "2026-11-27", "2026-11-25", true, false),
    )
    .await;
    assert!(
        msg.contains("academic_calendar_events_end_date_on_or_after_start_date"),
        "{msg}"
    );
    let msg = refused(
        &pool,
        &holiday("Typo", "2026-11-25", "2062-11-27", true, false),
    )
    .await;
    assert!(
        msg.contains("academic_calendar_events_at_most_a_year_long"),
        "{msg}"
    );
    let msg = refused(
        &pool,
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date) \
         VALUES ('Party', 'fiesta', '2026-11-25', '2026-11-25')",
    )
    .await;
    assert!(
        msg.contains("academic_calendar_events_category_is_known"),
        "{msg}"
    );
    let msg = refused(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at) VALUES ({}, '2026-05-01 12:00', '2026-05-01 09:00')",
            u.cs101
        ),
    )
    .await;
    assert!(msg.contains("final_exams_ends_after_it_starts"), "{msg}");
    // Nothing was written and nobody flagged.
    assert_eq!(flagged(&pool).await, Vec::<i64>::new());
}

#[sqlx::test(migrations = false)]
async fn no_classes_defaults_by_category(pool: PgPool) {
    let _ = seed(&pool).await;
    exec(
        &pool,
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date) VALUES \
         ('a', 'holiday', '2026-09-07', '2026-09-07'), ('b', 'break', '2026-10-12', '2026-10-13'), \
         ('c', 'reading_day', '2026-12-10', '2026-12-10'), ('d', 'exam_period', '2026-12-14', '2026-12-18'), \
         ('e', 'other', '2026-10-30', '2026-10-30')",
    )
    .await;
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT title, no_classes, publish FROM academic_calendar_events ORDER BY title",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let no_classes: Vec<bool> = rows.iter().map(|r| r.1).collect();
    assert_eq!(no_classes, vec![true, true, true, true, false]);
    assert!(rows.iter().all(|r| !r.2), "publish defaults to false");
}

#[sqlx::test(migrations = false)]
async fn the_snapshot_holds_the_exams_and_the_relevant_calendar(pool: PgPool) {
    let (u, _dave) = with_dave(&pool).await;
    exec(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id) VALUES \
             ({}, '2026-05-04 09:00', '2026-05-04 11:00', {}), ({}, '2026-05-05 09:00', '2026-05-05 11:00', NULL)",
            u.cs101, u.room_a, u.ma201
        ),
    )
    .await;
    exec(
        &pool,
        &holiday("MLK Day", "2026-01-19", "2026-01-19", true, false),
    )
    .await;
    exec(
        &pool,
        &holiday("July 4th", "2026-07-03", "2026-07-03", true, true),
    )
    .await;
    exec(
        &pool,
        &holiday("Nothing", "2026-02-02", "2026-02-02", false, false),
    )
    .await;
    let alice = schedule::load_snapshot(&pool, u.alice).await.unwrap();
    assert_eq!(alice.exams.len(), 1);
    assert_eq!(alice.exams[0].room.as_ref().unwrap().building, "Smith");
    let titles: Vec<&str> = alice
        .academic_calendar
        .iter()
        .map(|a| a.title.as_str())
        .collect();
    assert_eq!(titles, vec!["MLK Day"]);
    let bob = schedule::load_snapshot(&pool, u.bob).await.unwrap();
    assert_eq!(bob.exams.len(), 2);
    assert_eq!(bob.exams[1].room, None);
}
