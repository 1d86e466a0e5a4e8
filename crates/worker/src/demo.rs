//! `calsync demo`: a seeded university against the fake Google Calendar API, a nightly
//! sync run end to end through the real worker, and the dashboard to look at it.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use calsync_domain::queue::RunTrigger;
use calsync_fake_google::FakeGoogle;
use chrono::Utc;
use clap::Parser;
use sqlx::{AssertSqlSafe, PgPool};

use crate::{
    cli::{Cli, Command, DemoArgs},
    config::{DatabaseConfig, DatabaseUrl},
    database::connect,
    nightly::run_pass,
    runtime::{Runtime, Shutdown, termination_signal},
};

const DEMO_DOMAIN: &str = "@demo.calsync.edu";

/// Concurrent syncs of the demo's worker.
const DEMO_CONCURRENCY: u16 = 32;

/// Run the demo.
pub async fn run(url: DatabaseUrl, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    step("connecting to PostgreSQL");
    // One pool for seeding and the in-process worker: the worker's budget.
    let pool = connect(&DatabaseConfig::worker(url.clone(), DEMO_CONCURRENCY, None)).await?;
    step("migrating");
    calsync_domain::migrate(&pool).await?;

    step("starting the fake Google Calendar API");
    let fake = FakeGoogle::start()
        .await
        .context("starting the fake Google API")?;
    println!("    {}", fake.base_url());

    step(&format!(
        "seeding a university: {} students, {} courses",
        args.students, args.courses
    ));
    seed(&pool, &fake, args.students, args.courses).await?;

    let admin_token = format!("demo-{:016x}", rand::random::<u64>());
    let cli = Cli::try_parse_from([
        "calsync".to_string(),
        "worker".into(),
        format!("--concurrency={DEMO_CONCURRENCY}"),
        "--no-cron".into(),
        "--http-listen=127.0.0.1:0".into(),
        format!("--google-api-base-url={}", fake.base_url()),
        format!("--google-api-root-url={}", fake.root_url()),
        format!("--google-token-url={}", fake.token_url()),
        "--google-client-id=demo-client".into(),
        "--google-client-secret=demo-secret".into(),
        "--google-per-user-rps=100".into(),
        "--google-project-rps=5000".into(),
        format!("--dashboard-listen={}", args.dashboard_listen),
        format!("--dashboard-admin-token={admin_token}"),
    ])?;
    let Command::Worker(worker_args) = cli.command else {
        bail!("internal: demo worker arguments did not parse as a worker command");
    };
    let config = worker_args.into_config(url)?;
    let engine = crate::build_engine(&pool, &config.sync)?;
    let (trigger, shutdown) = Shutdown::new();
    step(&format!(
        "starting a worker ({DEMO_CONCURRENCY} concurrent jobs) and the dashboard"
    ));
    let runtime = Runtime {
        pool: pool.clone(),
        engine,
        config,
    }
    .start(shutdown)
    .await?;

    step("running the nightly sync now");
    let run = run_pass(&pool, Utc::now(), RunTrigger::Manual, "demo")
        .await?
        .context("a nightly run for this instant already exists")?;
    println!(
        "    nightly run {}: {} users to sync, {} jobs enqueued",
        run.id, run.users_due, run.enqueued
    );
    let sync_started = std::time::Instant::now();
    let mut last_line = String::new();
    loop {
        let r = calsync_domain::queue::nightly_run(&pool, run.id)
            .await?
            .context("run vanished")?;
        let done = r.succeeded + r.failed;
        let line = progress_line(done, r.enqueued, r.failed);
        if line != last_line {
            println!("    {line}");
            last_line = line;
        }
        if r.finished_at.is_some() || done >= r.enqueued {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = termination_signal() => { trigger.trigger(); let _ = runtime.done.await; return Ok(ExitCode::FAILURE); }
        }
    }
    let secs = sync_started.elapsed().as_secs_f64();
    let counts = calsync_domain::users::counts(&pool).await?;
    let calls = fake.calls();
    let writes = fake.write_calls();
    println!();
    println!(
        "nightly sync finished in {secs:.1} s: {} users synced ({:.0}/s), {} Google API calls ({} writes)",
        run.enqueued,
        run.enqueued as f64 / secs.max(0.001),
        calls.len(),
        writes
    );
    println!(
        "users still due: {}, needs re-auth: {}, calendar missing: {}",
        counts.due, counts.needs_reauth, counts.calendar_missing
    );
    let sample = calsync_domain::users::find_by_email(&pool, &format!("student1{DEMO_DOMAIN}"))
        .await?
        .and_then(|u| u.google_course_calendar_id);
    if let Some(cal) = sample {
        let events = fake.live_events(&cal);
        println!(
            "e.g. calendar {cal} now holds {} events; first: {}",
            events.len(),
            events
                .first()
                .map(|e| format!("{} ({}) {}", e["summary"], e["location"], e["recurrence"]))
                .unwrap_or_default()
        );
    }
    println!("total demo time {:.1} s", started.elapsed().as_secs_f64());

    if args.exit_after_sync {
        trigger.trigger();
        let _ = runtime.done.await;
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    println!(
        "dashboard:  http://{}/   (admin token: {admin_token})",
        args.dashboard_listen
    );
    println!(
        "worker API: http://{}/metrics, /healthz, POST /v1/users/<id>/sync",
        runtime.http_addr
    );
    println!("fake Google control API: {}_fake/calls", fake.root_url());
    println!(
        "try: change a course title in psql, then press the dashboard's \"Run now\"; Ctrl-C to stop"
    );
    termination_signal().await;
    trigger.trigger();
    let _ = runtime.done.await;
    Ok(ExitCode::SUCCESS)
}

fn step(what: &str) {
    println!("==> {what}");
}

fn progress_line(done: i32, total: i32, failed: i32) -> String {
    let total = total.max(1);
    let width = 30usize;
    let filled = (done as usize * width) / total as usize;
    format!(
        "[{}{}] {done}/{total} synced{}",
        "#".repeat(filled.min(width)),
        ".".repeat(width - filled.min(width)),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    )
}

/// Seed the demo university (set-based SQL) and the matching calendars and refresh
/// tokens in the fake. Refuses to touch a database that holds non-demo users.
async fn seed(pool: &PgPool, fake: &FakeGoogle, students: u32, courses: u32) -> anyhow::Result<()> {
    let foreign: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM users WHERE email NOT LIKE '%{DEMO_DOMAIN}'"
    )))
    .fetch_one(pool)
    .await?;
    if foreign > 0 {
        bail!(
            "this database holds {foreign} non-demo users; run the demo against an empty database (unset DATABASE_URL to get a throwaway one)"
        );
    }
    let mut tx = pool.begin().await?;
    sqlx::query("TRUNCATE enrollments, meeting_times, courses, rooms, google_credentials, users, calsync.nightly_runs RESTART IDENTITY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'sync-calendar'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO rooms (building, number, is_placeholder, capacity) \
         SELECT (ARRAY['Smith Hall','Jones Hall','Science Center','Library','Engineering Hall'])[1 + g % 5], \
                (100 + g)::text, g % 25 = 0, 40 FROM generate_series(1, 60) g",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date, description, capacity) \
         SELECT (ARRAY['Foundations of','Methods in','Seminar in','Laboratory in','Topics in'])[1 + g % 5] || ' ' || \
                (ARRAY['Computing','Calculus','Physics','Chemistry','Biology','Literature','History','Economics'])[1 + g % 8], \
                (ARRAY['CS','MA','PH','CH','BI','EN','HI','EC'])[1 + g % 8], (100 + g)::text, lpad((1 + g % 3)::text, 3, '0'), \
                DATE '2026-01-12', DATE '2026-05-01', 'Demo course', 40 \
         FROM generate_series(1, $1) g",
    )
    .bind(courses as i32)
    .execute(&mut *tx)
    .await?;
    // Two meetings a week (Mon/Wed or Tue/Thu), daytime and a few evening sections.
    sqlx::query(
        "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time, room_id) \
         SELECT c.id, d.day, t.begin, t.begin + interval '75 minutes', 1 + c.id % 60 \
         FROM courses c \
         CROSS JOIN LATERAL (SELECT CASE WHEN c.id % 10 = 9 THEN TIME '18:30' \
                                         ELSE TIME '08:00' + (c.id % 9) * interval '1 hour' END AS begin) t \
         CROSS JOIN LATERAL (SELECT unnest(CASE WHEN c.id % 2 = 0 THEN ARRAY[1, 3] ELSE ARRAY[2, 4] END) AS day) d",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO users (email, name, google_course_calendar_id) \
         SELECT 'student' || g || '{DEMO_DOMAIN}', 'Student ' || g, 'demo-student-' || g || '@group.calendar.google.com' \
         FROM generate_series(1, $1) g"
    )))
    .bind(students as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO google_credentials (user_id, refresh_token) SELECT id, 'demo-refresh-' || id FROM users",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO enrollments (user_id, course_id) \
         SELECT u.id, 1 + ((u.id * 7 + k * 53) % $1) FROM users u CROSS JOIN generate_series(0, 3) k \
         ON CONFLICT DO NOTHING",
    )
    .bind(courses as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let ids: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, google_course_calendar_id FROM users ORDER BY id")
            .fetch_all(pool)
            .await?;
    for (id, cal) in &ids {
        fake.create_calendar_with_id(cal, &format!("Courses (student {id})"));
        fake.add_refresh_token(&format!("demo-refresh-{id}"));
    }
    let (mts, enr): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM meeting_times), (SELECT count(*) FROM enrollments)",
    )
    .fetch_one(pool)
    .await?;
    println!(
        "    {} students, {courses} courses, {mts} meeting times, {enr} enrollments, 60 rooms",
        ids.len()
    );
    Ok(())
}
