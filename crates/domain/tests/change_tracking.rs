//! Change tracking: every tracked change flags exactly the enrolled users; untracked
//! changes flag nobody; bulk and raw-SQL writes are tracked; a change during a sync is
//! never lost.

mod common;

use calsync_domain::{schedule, users};
use common::{exec, flagged, seed, settle};
use sqlx::PgPool;

async fn assert_flags(pool: &PgPool, sql: &str, expected: &[i64]) {
    settle(pool).await;
    exec(pool, sql).await;
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(flagged(pool).await, want, "after: {sql}");
}

#[sqlx::test(migrations = false)]
async fn enrollment_created_flags_the_student(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!(
            "INSERT INTO enrollments (user_id, course_id) VALUES ({}, {})",
            u.alice, u.ma201
        ),
        &[u.alice],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn enrollment_deleted_flags_the_student(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!(
            "DELETE FROM enrollments WHERE user_id = {} AND course_id = {}",
            u.bob, u.ma201
        ),
        &[u.bob],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn enrollment_moved_flags_old_and_new_student(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!(
            "UPDATE enrollments SET user_id = {} WHERE user_id = {} AND course_id = {}",
            u.carol, u.alice, u.cs101
        ),
        &[u.alice, u.carol],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn each_tracked_course_column_flags_enrolled_students(pool: PgPool) {
    let u = seed(&pool).await;
    for set in [
        "title = 'Intro to Computing'",
        "start_date = '2026-01-19'",
        "end_date = '2026-05-08'",
        "subject = 'CSC'",
        "course_number = '102'",
        "section_number = '002'",
        "start_date = NULL",
    ] {
        assert_flags(
            &pool,
            &format!("UPDATE courses SET {set} WHERE id = {}", u.cs101),
            &[u.alice, u.bob],
        )
        .await;
    }
}

#[sqlx::test(migrations = false)]
async fn course_deleted_flags_enrolled_students(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!("DELETE FROM courses WHERE id = {}", u.ma201),
        &[u.bob, u.carol],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn each_tracked_meeting_time_column_flags_enrolled_students(pool: PgPool) {
    let u = seed(&pool).await;
    let other_room = u.room_b;
    for set in [
        "begin_time = '08:30'".to_string(),
        "end_time = '10:30'".to_string(),
        "day_of_week = 4".to_string(),
        "start_date = '2026-02-01'".to_string(),
        "end_date = '2026-04-01'".to_string(),
        format!("room_id = {other_room}"),
        "room_id = NULL".to_string(),
    ] {
        assert_flags(
            &pool,
            &format!("UPDATE meeting_times SET {set} WHERE id = {}", u.mt_cs_mon),
            &[u.alice, u.bob],
        )
        .await;
    }
}

#[sqlx::test(migrations = false)]
async fn meeting_time_added_deleted_or_moved_flags_students(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!(
            "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time) VALUES ({}, 5, '13:00', '14:00')",
            u.ma201
        ),
        &[u.bob, u.carol],
    )
    .await;
    assert_flags(
        &pool,
        &format!("DELETE FROM meeting_times WHERE id = {}", u.mt_cs_wed),
        &[u.alice, u.bob],
    )
    .await;
    // Moving a meeting time to another course changes both courses' calendars.
    assert_flags(
        &pool,
        &format!(
            "UPDATE meeting_times SET course_id = {} WHERE id = {}",
            u.ma201, u.mt_cs_mon
        ),
        &[u.alice, u.bob, u.carol],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn room_renamed_or_deleted_flags_students_meeting_there(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!("UPDATE rooms SET number = '102' WHERE id = {}", u.room_a),
        &[u.alice, u.bob],
    )
    .await;
    assert_flags(
        &pool,
        &format!(
            "UPDATE rooms SET building = 'Annex' WHERE id = {}",
            u.room_b
        ),
        &[u.bob, u.carol],
    )
    .await;
    assert_flags(
        &pool,
        &format!(
            "UPDATE rooms SET is_placeholder = true WHERE id = {}",
            u.room_b
        ),
        &[u.bob, u.carol],
    )
    .await;
    assert_flags(
        &pool,
        &format!("DELETE FROM rooms WHERE id = {}", u.room_b),
        &[u.bob, u.carol],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn calendar_id_change_flags_only_that_user(pool: PgPool) {
    let u = seed(&pool).await;
    assert_flags(
        &pool,
        &format!(
            "UPDATE users SET google_course_calendar_id = 'new-cal' WHERE id = {}",
            u.carol
        ),
        &[u.carol],
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn untracked_changes_flag_nobody(pool: PgPool) {
    let u = seed(&pool).await;
    for sql in [
        format!("UPDATE courses SET description = 'new words', capacity = 99, updated_at = now() WHERE id = {}", u.cs101),
        format!("UPDATE courses SET title = title WHERE id = {}", u.cs101),
        format!("UPDATE meeting_times SET notes = 'bring a laptop' WHERE id = {}", u.mt_cs_mon),
        format!("UPDATE meeting_times SET begin_time = '09:00' WHERE id = {}", u.mt_cs_mon),
        format!("UPDATE rooms SET capacity = 120 WHERE id = {}", u.room_a),
        format!("UPDATE users SET name = 'Alice A.' WHERE id = {}", u.alice),
        format!("UPDATE users SET google_course_calendar_id = 'cal-alice' WHERE id = {}", u.alice),
        "INSERT INTO courses (title, subject, course_number, section_number) VALUES ('Empty', 'X', '1', '1')".into(),
        "INSERT INTO rooms (building, number) VALUES ('New', '1')".into(),
    ] {
        assert_flags(&pool, &sql, &[]).await;
    }
}

#[sqlx::test(migrations = false)]
async fn bulk_update_of_many_courses_flags_all_students_in_one_statement(pool: PgPool) {
    let _ = seed(&pool).await;
    exec(
        &pool,
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
         SELECT 'Course ' || g, 'BULK', g::text, '001', '2026-01-12', '2026-05-01' FROM generate_series(1, 2000) g",
    )
    .await;
    exec(
        &pool,
        "INSERT INTO users (email, name, google_course_calendar_id) \
         SELECT 'student' || g || '@uni.edu', 'S' || g, 'cal-' || g FROM generate_series(1, 3000) g",
    )
    .await;
    // Each bulk student takes two bulk courses.
    exec(
        &pool,
        "INSERT INTO enrollments (user_id, course_id) \
         SELECT u.id, c.id FROM users u JOIN courses c ON c.subject = 'BULK' \
           AND (c.course_number::int = (substring(u.email from 'student(\\d+)')::int % 2000) + 1 \
             OR c.course_number::int = ((substring(u.email from 'student(\\d+)')::int + 7) % 2000) + 1) \
         WHERE u.email LIKE 'student%'",
    )
    .await;
    settle(&pool).await;
    let bulk_students: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email LIKE 'student%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let gen_sum = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT sum(calendar_sync_generation)::bigint FROM users WHERE email LIKE 'student%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = gen_sum(pool.clone()).await;
    exec(
        &pool,
        "UPDATE courses SET title = title || ' (revised)' WHERE subject = 'BULK'",
    )
    .await;
    let flagged_now = flagged(&pool).await.len() as i64;
    assert_eq!(flagged_now, bulk_students);
    // Every flagged student's generation moved by exactly one although each takes two of
    // the changed courses: one pass over distinct users, not one per row.
    assert_eq!(gen_sum(pool.clone()).await - before, bulk_students);
}

#[sqlx::test(migrations = false)]
async fn change_during_sync_keeps_the_flag(pool: PgPool) {
    let u = seed(&pool).await;
    exec(
        &pool,
        &format!("UPDATE courses SET title = 'v2' WHERE id = {}", u.cs101),
    )
    .await;
    // The sync reads its snapshot…
    let snap = schedule::load_snapshot(&pool, u.alice).await.unwrap();
    assert!(snap.user.calendar_needs_sync);
    assert_eq!(snap.courses[0].course.title, "v2");
    // …a registrar changes the course while the sync talks to Google…
    exec(
        &pool,
        &format!("UPDATE courses SET title = 'v3' WHERE id = {}", u.cs101),
    )
    .await;
    // …and the sync's compare-and-clear must not clear the newer change.
    let outcome = users::finish_sync(&pool, u.alice, snap.user.calendar_sync_generation)
        .await
        .unwrap();
    assert_eq!(outcome, users::FinishOutcome::ChangedDuringSync);
    let user = users::get(&pool, u.alice).await.unwrap();
    assert!(
        user.calendar_needs_sync,
        "the change made during the sync must stay flagged"
    );
    assert!(user.last_calendar_sync_at.is_some());

    // A sync that reads the newest data clears it.
    let snap = schedule::load_snapshot(&pool, u.alice).await.unwrap();
    let outcome = users::finish_sync(&pool, u.alice, snap.user.calendar_sync_generation)
        .await
        .unwrap();
    assert_eq!(outcome, users::FinishOutcome::Cleared);
    assert!(
        !users::get(&pool, u.alice)
            .await
            .unwrap()
            .calendar_needs_sync
    );
}

#[sqlx::test(migrations = false)]
async fn snapshot_loads_the_whole_schedule(pool: PgPool) {
    let u = seed(&pool).await;
    let snap = schedule::load_snapshot(&pool, u.bob).await.unwrap();
    assert_eq!(snap.courses.len(), 2);
    assert_eq!(snap.courses[0].course.id, u.cs101);
    assert_eq!(snap.courses[0].meeting_times.len(), 2);
    assert_eq!(
        snap.courses[1].meeting_times[0]
            .room
            .as_ref()
            .unwrap()
            .building,
        "Jones"
    );
    assert!(matches!(
        schedule::load_snapshot(&pool, 999_999).await,
        Err(calsync_domain::DomainError::UnknownUser(999_999))
    ));
}

#[sqlx::test(migrations = false)]
async fn due_users_are_flagged_or_never_synced_with_a_calendar(pool: PgPool) {
    let u = seed(&pool).await;
    assert!(users::due_user_ids(&pool).await.unwrap().is_empty());
    exec(
        &pool,
        &format!(
            "UPDATE users SET calendar_needs_sync = true WHERE id = {}",
            u.alice
        ),
    )
    .await;
    exec(
        &pool,
        &format!(
            "UPDATE users SET last_calendar_sync_at = NULL WHERE id = {}",
            u.bob
        ),
    )
    .await;
    // Flagged but without a calendar: not due.
    exec(
        &pool,
        &format!("UPDATE users SET google_course_calendar_id = NULL, calendar_needs_sync = true WHERE id = {}", u.carol),
    )
    .await;
    exec(
        &pool,
        "INSERT INTO users (email, name) VALUES ('nocal@uni.edu', 'No Cal')",
    )
    .await;
    assert_eq!(
        users::due_user_ids(&pool).await.unwrap(),
        vec![u.alice, u.bob]
    );
    // A user who must re-authenticate is not retried every night.
    users::record_attempt_failure(
        &pool,
        &users::AttemptFailure {
            job_id: "test-job",
            user_id: Some(u.alice),
            attempt: 1,
            outcome: users::AttemptOutcome::Final {
                status: users::SyncStatus::NeedsReauth,
            },
            error: "invalid_grant",
            actor: "test",
        },
    )
    .await
    .unwrap();
    assert_eq!(users::due_user_ids(&pool).await.unwrap(), vec![u.bob]);
    // New credentials lift it.
    calsync_domain::credentials::upsert_refresh_token(&pool, u.alice, "new-refresh")
        .await
        .unwrap();
    assert_eq!(
        users::due_user_ids(&pool).await.unwrap(),
        vec![u.alice, u.bob]
    );
    let counts = users::counts(&pool).await.unwrap();
    assert_eq!(counts.users, 4);
    assert_eq!(counts.due, 2);
}

#[sqlx::test(migrations = false)]
async fn manual_marking(pool: PgPool) {
    let u = seed(&pool).await;
    users::mark_for_sync(&pool, u.carol).await.unwrap();
    assert_eq!(flagged(&pool).await, vec![u.carol]);
    assert!(matches!(
        users::mark_for_sync(&pool, 424_242).await,
        Err(calsync_domain::DomainError::UnknownUser(424_242))
    ));
    exec(
        &pool,
        "INSERT INTO users (email, name) VALUES ('nocal@uni.edu', 'No Cal')",
    )
    .await;
    assert_eq!(users::mark_all_for_sync(&pool, "test").await.unwrap(), 3);
    assert_eq!(flagged(&pool).await, vec![u.alice, u.bob, u.carol]);
}

#[sqlx::test(migrations = false)]
async fn calendar_change_lifts_calendar_missing(pool: PgPool) {
    let u = seed(&pool).await;
    users::record_attempt_failure(
        &pool,
        &users::AttemptFailure {
            job_id: "test-job",
            user_id: Some(u.bob),
            attempt: 1,
            outcome: users::AttemptOutcome::Final {
                status: users::SyncStatus::CalendarMissing,
            },
            error: "404",
            actor: "test",
        },
    )
    .await
    .unwrap();
    exec(
        &pool,
        &format!(
            "UPDATE users SET google_course_calendar_id = 'cal-bob-2' WHERE id = {}",
            u.bob
        ),
    )
    .await;
    let bob = users::get(&pool, u.bob).await.unwrap();
    assert_eq!(bob.calendar_sync_status, users::SyncStatus::Ok);
    assert!(bob.calendar_needs_sync);
}

#[sqlx::test(migrations = false)]
async fn logged_changes_flag_at_the_next_fold_and_the_nightly_sees_them(pool: PgPool) {
    use calsync_domain::queue::{self, RunTrigger};
    use chrono::{TimeZone, Utc};
    let u = seed(&pool).await;
    // A bulk change writes one log row and no user row…
    exec(&pool, "UPDATE courses SET title = title || ' (rev)'").await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.pending_flags")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, 1);
    assert!(
        !users::get(&pool, u.alice)
            .await
            .unwrap()
            .calendar_needs_sync
    );
    // …the nightly pass folds it first and enqueues every affected student.
    let tick = Utc.with_ymd_and_hms(2026, 11, 26, 8, 30, 0).unwrap();
    let run = queue::run_nightly_pass(&pool, tick, RunTrigger::Cron, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.users_due, 3);
    exec(&pool, "DELETE FROM apalis.jobs").await;
    settle(&pool).await;

    // A sync that ends before a change is logged clears the flag; the change, logged
    // afterwards, flags the student again at the next fold: never lost.
    let snap = schedule::load_snapshot(&pool, u.alice).await.unwrap();
    let outcome = users::finish_sync(&pool, u.alice, snap.user.calendar_sync_generation)
        .await
        .unwrap();
    assert_eq!(outcome, users::FinishOutcome::Cleared);
    exec(
        &pool,
        &format!("UPDATE courses SET title = 'v9' WHERE id = {}", u.cs101),
    )
    .await;
    let stored = users::get(&pool, u.alice).await.unwrap();
    assert!(!stored.calendar_needs_sync, "logged, not folded yet");
    let current = users::get_current(&pool, u.alice).await.unwrap();
    assert!(current.calendar_needs_sync);
    assert_eq!(
        current.calendar_sync_generation,
        snap.user.calendar_sync_generation + 1
    );
    assert_eq!(flagged(&pool).await, vec![u.alice, u.bob]);
}
