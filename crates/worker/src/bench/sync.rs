//! `calsync bench` case `sync`: the sync engine against the fake Google API with
//! injected latency, changed vs. unchanged users.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use calsync_fake_google::{FakeGoogle, FaultRule};
use sqlx::PgPool;

use super::{Pair, ROUNDS, Row};
use crate::config::{GoogleSettings, SyncSettings};

pub(super) async fn run(pool: &PgPool, users: i64) -> anyhow::Result<Vec<Row>> {
    let fake = FakeGoogle::start().await?;
    let latency = Duration::from_millis(15);
    fake.add_fault(FaultRule::latency(latency));
    sqlx::query(
        "INSERT INTO rooms (building, number) SELECT 'Hall', g::text FROM generate_series(1, 20) g",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
         SELECT 'Sync course ' || g, 'SY', g::text, '001', DATE '2026-01-12', DATE '2026-05-01' FROM generate_series(1, 40) g",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time, room_id) \
         SELECT c.id, d, TIME '10:00', TIME '11:15', 1 + c.id % 20 FROM courses c CROSS JOIN (VALUES (2), (4)) v(d)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO users (email, name, google_course_calendar_id) \
         SELECT 'sync' || g || '@bench.edu', 'S' || g, 'bench-cal-' || g FROM generate_series(1, $1) g",
    )
    .bind(users)
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO google_credentials (user_id, refresh_token) SELECT id, 'bench-rt-' || id FROM users")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO enrollments (user_id, course_id) \
         SELECT u.id, 1 + ((u.id + k * 7) % 40) FROM users u CROSS JOIN generate_series(0, 3) k ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await?;
    let ids: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, google_course_calendar_id FROM users ORDER BY id")
            .fetch_all(pool)
            .await?;
    for (id, cal) in &ids {
        fake.create_calendar_with_id(cal, "bench");
        fake.add_refresh_token(&format!("bench-rt-{id}"));
    }
    let settings = SyncSettings {
        google: GoogleSettings {
            api_base_url: fake.base_url(),
            api_root_url: fake.root_url(),
            token_url: fake.token_url(),
            client_id: "bench".into(),
            client_secret: calsync_domain::credentials::Secret::new("bench"),
            // Far above what the fake is asked for: the sync is measured, not the quota.
            quota: crate::google::QuotaLimits {
                project: 6_000_000,
                per_user: 60_000,
                window: Duration::from_secs(60),
            },
            request_timeout: Duration::from_secs(30),
        },
        school_time_zone: chrono_tz::America::New_York,
        auth: crate::config::GoogleAuth::Oauth {
            vault: crate::vault::Vault::default(),
        },
    };
    let engine = Arc::new(crate::build_engine(pool, &settings)?);
    let user_ids: Vec<i64> = ids.iter().map(|(id, _)| *id).collect();

    // One pass over every user, 16 at once: users/s and Google calls per user.
    let pass = |engine: Arc<crate::sync::SyncEngine>| {
        let user_ids = user_ids.clone();
        let fake = fake.clone();
        async move {
            fake.reset_calls();
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for chunk in user_ids.chunks(user_ids.len().div_ceil(16)) {
                let engine = engine.clone();
                let chunk = chunk.to_vec();
                set.spawn(async move {
                    for id in chunk {
                        engine
                            .sync_user(id)
                            .await
                            .map_err(|e| anyhow::anyhow!("user {id}: {e}"))?;
                    }
                    Ok::<(), anyhow::Error>(())
                });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            let secs = start.elapsed().as_secs_f64();
            Ok::<_, anyhow::Error>((
                users as f64 / secs,
                fake.calls().len() as f64 / users as f64,
            ))
        }
    };
    // Warm-up: the first sync inserts every event.
    let (_, first_calls) = pass(engine.clone()).await?;
    let mut rates = Pair::default();
    let mut calls = Pair::default();
    for round in 0..ROUNDS {
        for unchanged in Pair::order(round) {
            if !unchanged {
                // Every course renamed: every event of every user changes.
                sqlx::query("UPDATE courses SET title = 'Sync course ' || id || ' v' || $1")
                    .bind(round as i64)
                    .execute(pool)
                    .await?;
            }
            let (rate, per_user) = pass(engine.clone()).await?;
            rates.push(unchanged, rate);
            calls.push(unchanged, per_user);
        }
    }
    Ok(vec![
        Row::new(
            "sync",
            &format!("sync users/s, unchanged vs changed ({users} users, 16 at once)"),
            rates,
            "users/s",
            None,
            format!(
                "{} ms injected latency per Google call; each user has 8 weekly events, all renamed \
                 in a changed round; the first sync ({first_calls:.1} calls per user) is the warm-up",
                latency.as_millis()
            ),
        ),
        Row::new(
            "sync",
            "Google calls per user, unchanged vs changed",
            calls,
            "calls",
            None,
            "an unchanged user costs one events.list and no write".into(),
        ),
    ])
}
