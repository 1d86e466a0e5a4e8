//! `calsync bench`: throughput and overhead measured against baselines in the same run,
//! on a scratch database, printed as ratios (machine speed cancels out).
//!
//! 1. queue: apalis-postgres no-op jobs/s vs. a hand-written SKIP LOCKED loop;
//! 2. nightly fan-out of 100,000 due users vs. a bare INSERT … SELECT;
//! 3. change tracking: bulk course import and bulk update with vs. without triggers;
//! 4. sync: users/s and Google calls per user against the fake with injected latency,
//!    for changed vs. unchanged users;
//! 5. dashboard job pages at 1,000,000 jobs;
//! 6. a campus-wide holiday flagging 40,000 students vs. a bare UPDATE of the same users;
//! 7. an interactive enqueue → start behind a 20,000-job nightly backlog vs. idle.

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use calsync_domain::queue::RunTrigger;
use calsync_fake_google::{FakeGoogle, FaultRule};
use chrono::Utc;
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool, postgres::PgPoolOptions};

use crate::{
    cli::BenchArgs,
    config::{DatabaseUrl, GoogleSettings, SyncSettings},
};

mod dashboard_health;
mod priority;

/// One measured comparison.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    subject: f64,
    baseline: f64,
    unit: &'static str,
    ratio: f64,
    note: String,
}

impl Row {
    fn new(name: &str, subject: f64, baseline: f64, unit: &'static str, note: String) -> Row {
        Row {
            name: name.into(),
            subject,
            baseline,
            unit,
            ratio: if baseline > 0.0 {
                subject / baseline
            } else {
                f64::NAN
            },
            note,
        }
    }
}

/// Run the benchmarks on a scratch database next to `url`'s.
pub async fn run(url: DatabaseUrl, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.options().clone())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let db = format!("calsync_bench_{:08x}", rand::random::<u32>());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect_with(url.options().clone().database(&db))
        .await?;
    let res = run_all(&pool, &args).await;
    pool.close().await;
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    let rows = res?;
    println!();
    println!(
        "{:<52} {:>12} {:>12} {:>8}  unit",
        "benchmark", "calsync", "baseline", "ratio"
    );
    for r in &rows {
        println!(
            "{:<52} {:>12.3} {:>12.3} {:>8.2}  {}",
            r.name, r.subject, r.baseline, r.ratio, r.unit
        );
        if !r.note.is_empty() {
            println!("    {}", r.note);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn scaled(n: f64, scale: f64) -> i64 {
    ((n * scale).round() as i64).max(10)
}

async fn run_all(pool: &PgPool, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    calsync_domain::migrate(pool).await?;
    let mut rows = Vec::new();
    println!("==> queue throughput");
    rows.push(queue_throughput(pool, scaled(20_000.0, args.scale)).await?);
    println!("==> nightly fan-out");
    rows.push(fan_out(pool, scaled(100_000.0, args.scale)).await?);
    println!("==> change tracking overhead");
    rows.extend(trigger_overhead(pool, scaled(20_000.0, args.scale)).await?);
    println!("==> sync against the fake Google API");
    rows.extend(sync_throughput(pool, scaled(200.0, args.scale)).await?);
    println!(
        "==> dashboard job pages at {} jobs",
        scaled(1_000_000.0, args.scale)
    );
    rows.extend(dashboard_pages(pool, scaled(1_000_000.0, args.scale)).await?);
    rows.extend(dashboard_health::run(pool, scaled(1_000_000.0, args.scale)).await?);
    println!("==> campus-wide holiday flagging");
    rows.push(campus_wide_holiday(pool, scaled(40_000.0, args.scale)).await?);
    println!("==> interactive sync behind the nightly backlog");
    rows.push(priority::run(pool, scaled(20_000.0, args.scale)).await?);
    Ok(rows)
}

async fn noop(_job: serde_json::Value) -> Result<(), BoxDynError> {
    Ok(())
}

async fn queue_throughput(pool: &PgPool, n: i64) -> anyhow::Result<Row> {
    const QUEUE: &str = "bench-noop";
    let concurrency = 32usize;
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         SELECT apalis.generate_ulid(), $1, convert_to('{\"n\":' || g || '}', 'UTF8'), 'Pending', 0, 3, now(), 0 \
         FROM generate_series(1, $2) g",
    )
    .bind(QUEUE)
    .bind(n)
    .execute(pool)
    .await?;
    let config = Config::default().queue(QUEUE).batch_size(concurrency);
    let backend = PostgresStorage::<serde_json::Value>::new(pool)
        .with_config(config)
        .with_pubsub()
        .poll_with_interval(Duration::from_millis(100));
    let ctx = WorkerContext::new("bench-noop-worker");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .concurrency(concurrency)
        .build(noop);
    let start = Instant::now();
    let handle = tokio::spawn(worker.run());
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(QUEUE)
        .fetch_one(pool)
        .await?;
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let apalis_rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = ctx.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;

    // Baseline: the textbook Postgres queue, 4 loops claiming batches with SKIP LOCKED.
    sqlx::query(
        "CREATE TABLE bench_floor (id bigserial PRIMARY KEY, status text NOT NULL, payload jsonb)",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX ON bench_floor (id) WHERE status = 'Pending'")
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO bench_floor (status, payload) SELECT 'Pending', jsonb_build_object('n', g) FROM generate_series(1, $1) g")
        .bind(n)
        .execute(pool)
        .await?;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        set.spawn(async move {
            loop {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE bench_floor SET status = 'Running' WHERE id IN ( \
                       SELECT id FROM bench_floor WHERE status = 'Pending' ORDER BY id LIMIT 32 FOR UPDATE SKIP LOCKED) \
                     RETURNING id",
                )
                .fetch_all(&pool)
                .await?;
                if ids.is_empty() {
                    return Ok::<(), sqlx::Error>(());
                }
                sqlx::query("UPDATE bench_floor SET status = 'Done' WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&pool)
                    .await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let floor_rate = n as f64 / start.elapsed().as_secs_f64();
    Ok(Row::new(
        &format!("queue: no-op jobs/s ({n} jobs, concurrency {concurrency})"),
        apalis_rate,
        floor_rate,
        "jobs/s",
        "baseline: 4 loops of UPDATE … FOR UPDATE SKIP LOCKED LIMIT 32 on a bare table".into(),
    ))
}

async fn fan_out(pool: &PgPool, n: i64) -> anyhow::Result<Row> {
    sqlx::query(
        "INSERT INTO users (email, name, google_course_calendar_id, calendar_needs_sync) \
         SELECT 'fan' || g || '@bench.edu', 'U' || g, 'cal-' || g, true FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE users").execute(pool).await?;
    let start = Instant::now();
    let run =
        calsync_domain::queue::run_nightly_pass(pool, Utc::now(), RunTrigger::Manual, "bench")
            .await?
            .context("run exists")?;
    let pass = start.elapsed().as_secs_f64();
    anyhow::ensure!(run.enqueued as i64 == n, "enqueued {} of {n}", run.enqueued);

    sqlx::query("CREATE TABLE bench_jobs (LIKE apalis.jobs INCLUDING DEFAULTS)")
        .execute(pool)
        .await?;
    let start = Instant::now();
    sqlx::query(
        "INSERT INTO bench_jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         SELECT gen_random_uuid()::text, 'sync-calendar', convert_to(jsonb_build_object('user_id', id)::text, 'UTF8'), \
                'Pending', 0, 8, now(), 0 \
         FROM users WHERE calendar_needs_sync AND google_course_calendar_id IS NOT NULL",
    )
    .execute(pool)
    .await?;
    let bare = start.elapsed().as_secs_f64();
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'sync-calendar'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM users").execute(pool).await?;
    Ok(Row::new(
        &format!("nightly fan-out of {n} due users (seconds)"),
        pass,
        bare,
        "s",
        format!(
            "calsync: run row + ULIDs + one-active-job conflict check + payload validation in one transaction; \
             baseline: bare INSERT … SELECT into an index-less copy; {:.0} users/s",
            n as f64 / pass
        ),
    ))
}

async fn trigger_overhead(pool: &PgPool, n: i64) -> anyhow::Result<Vec<Row>> {
    // A population with enrollments so the triggers have real work to do.
    let students = n * 2;
    sqlx::query(
        "INSERT INTO users (email, name, google_course_calendar_id) \
         SELECT 'trk' || g || '@bench.edu', 'T' || g, 'cal-' || g FROM generate_series(1, $1) g",
    )
    .bind(students)
    .execute(pool)
    .await?;
    const TRIGGERS: [(&str, &str); 6] = [
        ("courses", "courses_track_update"),
        ("courses", "courses_track_delete"),
        ("meeting_times", "meeting_times_track_insert"),
        ("meeting_times", "meeting_times_track_update"),
        ("enrollments", "enrollments_track_insert"),
        ("meeting_times", "meeting_times_track_delete"),
    ];
    let mut import = [0f64; 2];
    let mut update = [0f64; 2];
    for (i, tracked) in [true, false].into_iter().enumerate() {
        for (table, trigger) in TRIGGERS {
            let verb = if tracked { "ENABLE" } else { "DISABLE" };
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {table} {verb} TRIGGER {trigger}"
            )))
            .execute(pool)
            .await?;
        }
        sqlx::query("TRUNCATE courses, meeting_times, enrollments RESTART IDENTITY")
            .execute(pool)
            .await?;
        let start = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
             SELECT 'Course ' || g, 'BN', g::text, '001', DATE '2026-01-12', DATE '2026-05-01' FROM generate_series(1, $1) g",
        )
        .bind(n)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time) \
             SELECT c.id, d, TIME '09:00', TIME '10:15' FROM courses c CROSS JOIN (VALUES (1), (3)) v(d)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO enrollments (user_id, course_id) \
             SELECT u.id, 1 + ((u.id * 7 + k * 53) % $1) FROM users u CROSS JOIN generate_series(0, 3) k \
             WHERE u.email LIKE 'trk%' ON CONFLICT DO NOTHING",
        )
        .bind(n)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        import[i] = start.elapsed().as_secs_f64();
        let start = Instant::now();
        sqlx::query("UPDATE courses SET title = title || ' (rev)'")
            .execute(pool)
            .await?;
        update[i] = start.elapsed().as_secs_f64();
    }
    sqlx::query("TRUNCATE courses, meeting_times, enrollments RESTART IDENTITY")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM users").execute(pool).await?;
    Ok(vec![
        Row::new(
            &format!(
                "bulk import {n} courses + meeting times + {} enrollments (s)",
                students * 4
            ),
            import[0],
            import[1],
            "s",
            "with change tracking vs. the same import with calsync's triggers disabled".into(),
        ),
        Row::new(
            &format!(
                "bulk UPDATE of {n} course titles, {} students flagged (s)",
                students
            ),
            update[0],
            update[1],
            "s",
            "with change tracking vs. triggers disabled".into(),
        ),
    ])
}

async fn sync_throughput(pool: &PgPool, users: i64) -> anyhow::Result<Vec<Row>> {
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

    let mut results = Vec::new();
    for label in ["changed", "unchanged"] {
        fake.reset_calls();
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let chunks: Vec<Vec<i64>> = user_ids
            .chunks(user_ids.len().div_ceil(16))
            .map(|c| c.to_vec())
            .collect();
        for chunk in chunks {
            let engine = engine.clone();
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
        let calls = fake.calls().len() as f64 / users as f64;
        results.push((label, users as f64 / secs, calls));
    }
    let (_, changed_rate, changed_calls) = results[0];
    let (_, unchanged_rate, unchanged_calls) = results[1];
    Ok(vec![
        Row::new(
            &format!("sync users/s, unchanged vs changed ({users} users, 16 at once)"),
            unchanged_rate,
            changed_rate,
            "users/s",
            format!(
                "{} ms injected latency per Google call; each user has 8 weekly events",
                latency.as_millis()
            ),
        ),
        Row::new(
            "Google calls per user, unchanged vs changed",
            unchanged_calls,
            changed_calls,
            "calls",
            "unchanged users cost reads only (one events.list), no writes".into(),
        ),
    ])
}

/// Insert `n` finished sync jobs with ids after `from` (cheap sortable ids, a realistic
/// mix of states, one user per 50 jobs).
async fn insert_history(pool: &PgPool, from: i64, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, done_at, priority, last_result) \
         SELECT '01' || lpad(upper(to_hex(g)), 24, '0'), 'sync-calendar', \
                convert_to(jsonb_build_object('user_id', 1 + g % 20000, 'reason', 'nightly', 'run_id', 1 + g / 20000)::text, 'UTF8'), \
                CASE WHEN g % 100 = 0 THEN 'Killed' WHEN g % 37 = 0 THEN 'Failed' ELSE 'Done' END, \
                8, 8, now(), now(), 0, \
                CASE WHEN g % 100 = 0 OR g % 37 = 0 THEN '{\"Err\": \"HTTP 503 backendError\"}'::jsonb ELSE '{\"Ok\": null}'::jsonb END \
         FROM generate_series($1, $2) g",
    )
    .bind(from)
    .bind(from + n - 1)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE apalis.jobs").execute(pool).await?;
    Ok(())
}

/// Mean latency of the dashboard's job pages (first page, a state filter, a user filter,
/// a page deep in the history), rendered through the real router.
async fn page_latency(app: &axum::Router, deep_before: &str) -> anyhow::Result<f64> {
    use tower::ServiceExt;
    let urls = [
        "/jobs".to_string(),
        "/jobs?state=failed".into(),
        "/jobs?user_id=4242".into(),
        format!("/jobs?before={deep_before}"),
        format!("/jobs?state=done&before={deep_before}"),
    ];
    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        for url in &urls {
            let req = axum::http::Request::get(url.as_str())
                .header("authorization", "Bearer bench-admin-token")
                .body(axum::body::Body::empty())?;
            let resp = app.clone().oneshot(req).await?;
            anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / (rounds * urls.len()) as f64)
}

async fn dashboard_pages(pool: &PgPool, n: i64) -> anyhow::Result<Vec<Row>> {
    sqlx::query("DELETE FROM apalis.jobs").execute(pool).await?;
    let app = calsync_dashboard::router(
        pool.clone(),
        calsync_dashboard::DashboardConfig {
            admin_token: Some("bench-admin-token".into()),
            page_size: 50,
            ..Default::default()
        },
    )?;
    let small = 1_000;
    insert_history(pool, 1, small).await?;
    let mid = format!("01{:0>24X}", small / 2);
    let small_ms = page_latency(&app, &mid).await?;
    insert_history(pool, small + 1, n - small).await?;
    let mid = format!("01{:0>24X}", n / 2);
    let big_ms = page_latency(&app, &mid).await?;
    Ok(vec![Row::new(
        &format!("dashboard job pages at {n} vs {small} jobs (ms/page)"),
        big_ms,
        small_ms,
        "ms",
        "keyset pagination: first page, state filter, user filter, deep pages; rendered through the router".into(),
    )])
}

/// A campus-wide holiday (one INSERT into `academic_calendar_events`, published, no
/// classes) flags every student of a Fall 2026 university of `students` (seeded with
/// `calsync_seed::presets::fall_term`) through the statement trigger, vs. the bare
/// UPDATE of exactly those users that any tracking has to do. Best of three each.
async fn campus_wide_holiday(pool: &PgPool, students: i64) -> anyhow::Result<Row> {
    use calsync_seed::presets::{Term, fall_term};
    let seed = fall_term(&Term {
        students: students as u32,
        courses: (students / 20).max(10) as u32,
        email_suffix: "@holiday.bench.edu".into(),
        calendar_prefix: "holiday-bench-".into(),
    });
    seed.insert_with_pool(pool).await?;
    // The preset's own calendar is not what is measured.
    sqlx::query("DELETE FROM academic_calendar_events")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    let reset = || async {
        sqlx::query("UPDATE users SET calendar_needs_sync = false WHERE calendar_needs_sync")
            .execute(pool)
            .await
    };
    // Mondays in the term, one per attempt.
    let days = ["2026-09-14", "2026-09-21", "2026-09-28"];
    let mut tracked = f64::MAX;
    let mut flagged = 0i64;
    for day in days {
        reset().await?;
        let start = Instant::now();
        sqlx::query(
            "INSERT INTO academic_calendar_events (title, category, start_date, end_date, no_classes, publish) \
             VALUES ('Campus closed', 'holiday', $1::date, $1::date, true, true)",
        )
        .bind(day)
        .execute(pool)
        .await?;
        tracked = tracked.min(start.elapsed().as_secs_f64());
        flagged = sqlx::query_scalar("SELECT count(*) FROM users WHERE calendar_needs_sync")
            .fetch_one(pool)
            .await?;
    }
    let mut bare = f64::MAX;
    for day in days {
        reset().await?;
        let start = Instant::now();
        sqlx::query(
            "UPDATE users u SET calendar_needs_sync = true, \
                    calendar_sync_generation = u.calendar_sync_generation + 1, updated_at = now() \
             FROM (SELECT DISTINCT e.user_id FROM enrollments e JOIN courses c ON c.id = e.course_id \
                   WHERE c.start_date <= $1::date AND c.end_date >= $1::date) t \
             WHERE u.id = t.user_id",
        )
        .bind(day)
        .execute(pool)
        .await?;
        bare = bare.min(start.elapsed().as_secs_f64());
    }
    anyhow::ensure!(
        flagged >= students,
        "the holiday flagged {flagged} of {students} students"
    );
    Ok(Row::new(
        &format!("campus-wide holiday flags {flagged} students (s)"),
        tracked,
        bare,
        "s",
        "one INSERT into academic_calendar_events through the statement trigger vs. a bare \
         UPDATE of exactly the same users"
            .into(),
    ))
}
