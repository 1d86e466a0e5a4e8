//! Shared fixtures for the domain tests: a small university in a fresh database.

#![allow(dead_code)]

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

/// Migrate the fresh test database and seed: alice and bob in CS 101, bob and carol in
/// MA 201; everybody starts synced and unflagged.
pub async fn seed(pool: &PgPool) -> Uni {
    calsync_domain::migrate(pool).await.expect("migrate");
    let user = |email: &'static str, cal: Option<&'static str>| async move {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO users (email, name, google_course_calendar_id) VALUES ($1, $1, $2) RETURNING id",
        )
        .bind(email)
        .bind(cal)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let alice = user("alice@uni.edu", Some("cal-alice")).await;
    let bob = user("bob@uni.edu", Some("cal-bob")).await;
    let carol = user("carol@uni.edu", Some("cal-carol")).await;
    let course = |title: &'static str, subject: &'static str, number: &'static str| async move {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date, description, capacity) \
             VALUES ($1, $2, $3, '001', '2026-01-12', '2026-05-01', 'desc', 30) RETURNING id",
        )
        .bind(title)
        .bind(subject)
        .bind(number)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let cs101 = course("Intro to CS", "CS", "101").await;
    let ma201 = course("Linear Algebra", "MA", "201").await;
    let room = |b: &'static str, n: &'static str| async move {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO rooms (building, number) VALUES ($1, $2) RETURNING id",
        )
        .bind(b)
        .bind(n)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let room_a = room("Smith", "101").await;
    let room_b = room("Jones", "B2").await;
    let mt = |course: i64, day: i16, room: i64| async move {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time, room_id, notes) \
             VALUES ($1, $2, '09:00', '10:15', $3, 'n') RETURNING id",
        )
        .bind(course)
        .bind(day)
        .bind(room)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let mt_cs_mon = mt(cs101, 1, room_a).await;
    let mt_cs_wed = mt(cs101, 3, room_a).await;
    let mt_ma_tue = mt(ma201, 2, room_b).await;
    for (u, c) in [(alice, cs101), (bob, cs101), (bob, ma201), (carol, ma201)] {
        sqlx::query("INSERT INTO enrollments (user_id, course_id) VALUES ($1, $2)")
            .bind(u)
            .bind(c)
            .execute(pool)
            .await
            .unwrap();
    }
    settle(pool).await;
    Uni {
        alice,
        bob,
        carol,
        cs101,
        ma201,
        mt_cs_mon,
        mt_cs_wed,
        mt_ma_tue,
        room_a,
        room_b,
    }
}

/// Mark everybody synced and unflagged.
pub async fn settle(pool: &PgPool) {
    sqlx::query("UPDATE users SET calendar_needs_sync = false, last_calendar_sync_at = now()")
        .execute(pool)
        .await
        .unwrap();
}

/// Ids of flagged users, sorted.
pub async fn flagged(pool: &PgPool) -> Vec<i64> {
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
