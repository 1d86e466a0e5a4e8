//! Shared fixtures for the domain tests: a small university in a fresh database.

#![allow(dead_code)]

use calsync_seed::{CourseSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd};
use chrono::Weekday;
use sqlx::PgPool;

/// Ids of the seeded rows.
pub struct Uni {
    pub alice: i64,
    pub bob: i64,
    pub carol: i64,
    pub cs101: i64,
    pub ma201: i64,
    pub mt_cs_mon: i64,
    pub mt_cs_wed: i64,
    pub mt_ma_tue: i64,
    pub room_a: i64,
    pub room_b: i64,
}

/// Migrate the fresh test database and seed: alice and bob in CS 101 (Mon and Wed),
/// bob and carol in MA 201 (Tue), all 09:00–10:15 from 2026-01-12 to 2026-05-01;
/// everybody starts synced and unflagged.
pub async fn seed(pool: &PgPool) -> Uni {
    calsync_domain::migrate(pool).await.expect("migrate");
    let mut s = Seed::new();
    let student = |s: &mut Seed, name: &str| {
        s.add_student(StudentSpec::new(format!("{name}@uni.edu")).calendar(format!("cal-{name}")))
    };
    let alice = student(&mut s, "alice");
    let bob = student(&mut s, "bob");
    let carol = student(&mut s, "carol");
    let course = |s: &mut Seed, title: &str, subject: &str, number: &str| {
        s.add_course(
            CourseSpec::new(title, subject, number)
                .dates(ymd(2026, 1, 12), ymd(2026, 5, 1))
                .description("desc")
                .capacity(30),
        )
    };
    let cs101 = course(&mut s, "Intro to CS", "CS", "101");
    let ma201 = course(&mut s, "Linear Algebra", "MA", "201");
    let room_a = s.add_room(RoomSpec::new("Smith", "101"));
    let room_b = s.add_room(RoomSpec::new("Jones", "B2"));
    let mt = |s: &mut Seed, course, day, room| {
        s.add_meeting(
            MeetingSpec::new(course, day, hm(9, 0), hm(10, 15))
                .room(room)
                .notes("n"),
        )
    };
    let mt_cs_mon = mt(&mut s, cs101, Weekday::Mon, room_a);
    let mt_cs_wed = mt(&mut s, cs101, Weekday::Wed, room_a);
    let mt_ma_tue = mt(&mut s, ma201, Weekday::Tue, room_b);
    for (u, c) in [(alice, cs101), (bob, cs101), (bob, ma201), (carol, ma201)] {
        s.enroll(u, c);
    }
    let ids = s.insert_with_pool(pool).await.expect("seed");
    settle(pool).await;
    Uni {
        alice: ids[alice],
        bob: ids[bob],
        carol: ids[carol],
        cs101: ids[cs101],
        ma201: ids[ma201],
        mt_cs_mon: ids[mt_cs_mon],
        mt_cs_wed: ids[mt_cs_wed],
        mt_ma_tue: ids[mt_ma_tue],
        room_a: ids[room_a],
        room_b: ids[room_b],
    }
}

/// Mark everybody synced and unflagged (changes logged so far are folded first, so
/// none is left to flag anybody later).
pub async fn settle(pool: &PgPool) {
    calsync_domain::tracking::apply_pending_flags(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET calendar_needs_sync = false, last_calendar_sync_at = now()")
        .execute(pool)
        .await
        .unwrap();
}

/// Ids of flagged users, sorted (changes logged so far folded into the flags first).
pub async fn flagged(pool: &PgPool) -> Vec<i64> {
    calsync_domain::tracking::apply_pending_flags(pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT id FROM users WHERE calendar_needs_sync ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Run one statement.
pub async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
