//! `calsync bench`: "Sync now" behind the nightly backlog (issue 16) — the time from an
//! interactive enqueue to its job starting while a worker drains a nightly backlog
//! against the fake Google, vs. the same enqueue on an idle queue, same worker, same
//! run.
//!
//! A real worker runtime (the one `calsync worker` runs: apalis, LISTEN/NOTIFY, the
//! handler, the sync engine) drains the backlog; each probe enqueues one user at the
//! interactive class with [`priority::request_sync`]. Enqueue and start are read from
//! the database's own clock: the job's `run_at` (the enqueue transaction's `now()`) and
//! the `started_at` of its attempt (apalis' `lock_at` when the worker started it).

use std::time::{Duration, Instant};

use anyhow::Context;
use calsync_domain::{
    priority::{self, PriorityClass, RequestOutcome, SyncRequest},
    queue::{self, RunTrigger},
};
use calsync_fake_google::{FakeGoogle, FaultRule};
use chrono::Utc;
use clap::Parser;
use sqlx::PgPool;

use super::{Goal, Pair, Row};
use crate::{
    cli::{Cli, Command},
    config::DatabaseUrl,
    runtime::{Runtime, Shutdown},
};

/// Probes per case (the median is reported).
const PROBES: usize = 5;
/// Injected latency of every fake Google call: a realistic Google (the worker's default
/// `CALSYNC_GOOGLE_LATENCY_MS`).
const LATENCY: Duration = Duration::from_millis(100);

/// Seed `backlog` students for the nightly pass plus `PROBES * 2 + 1` probe students, with
/// calendars and refresh tokens in the fake; every student has 2 courses × 2 meetings.
/// Returns the probe students' ids.
async fn seed(pool: &PgPool, fake: &FakeGoogle, backlog: i64) -> anyhow::Result<Vec<i64>> {
    let probes = (PROBES * 2 + 1) as i64;
    sqlx::query(
        "INSERT INTO rooms (building, number) SELECT 'Prio', g::text FROM generate_series(1, 10) g",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
         SELECT 'Priority course ' || g, 'PR', g::text, '001', DATE '2026-01-12', DATE '2026-05-01' \
         FROM generate_series(1, 20) g",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time, room_id) \
         SELECT c.id, d, TIME '13:00', TIME '14:15', (SELECT min(id) FROM rooms WHERE building = 'Prio') + c.id % 10 \
         FROM courses c CROSS JOIN (VALUES (1), (3)) v(d) WHERE c.subject = 'PR'",
    )
    .execute(pool)
    .await?;
    let ids: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO users (email, name, google_course_calendar_id) \
         SELECT 'prio' || g || '@bench.edu', 'P' || g, 'prio-cal-' || g FROM generate_series(1, $1) g \
         RETURNING id, google_course_calendar_id",
    )
    .bind(backlog + probes)
    .fetch_all(pool)
    .await?;
    sqlx::query(
        "INSERT INTO google_credentials (user_id, refresh_token) \
         SELECT id, 'prio-rt-' || id FROM users WHERE email LIKE 'prio%@bench.edu'",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO enrollments (user_id, course_id) \
         SELECT u.id, c.id FROM users u \
         JOIN courses c ON c.subject = 'PR' AND (c.course_number::int % 10) IN (u.id % 10, (u.id + 3) % 10) \
         WHERE u.email LIKE 'prio%@bench.edu' AND c.course_number::int <= 10 \
         ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await?;
    for (id, cal) in &ids {
        fake.create_calendar_with_id(cal, "Courses");
        fake.add_refresh_token(&format!("prio-rt-{id}"));
    }
    // Probes are never flagged, so the nightly pass leaves them out.
    let mut probe_ids: Vec<i64> = ids.iter().map(|(id, _)| *id).collect();
    let probe_ids = probe_ids.split_off(backlog as usize);
    sqlx::query("UPDATE users SET calendar_needs_sync = false, last_calendar_sync_at = now() WHERE id = ANY($1)")
        .bind(&probe_ids)
        .execute(pool)
        .await?;
    sqlx::query("UPDATE users SET calendar_needs_sync = true WHERE email LIKE 'prio%@bench.edu' AND NOT id = ANY($1)")
        .bind(&probe_ids)
        .execute(pool)
        .await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(probe_ids)
}

/// Start a worker runtime on `pool` (no cron, no HTTP API in use) against the fake.
async fn start_worker(
    pool: &PgPool,
    fake: &FakeGoogle,
) -> anyhow::Result<(
    crate::runtime::ShutdownTrigger,
    tokio::task::JoinHandle<()>,
    u16,
)> {
    let opts = pool.connect_options();
    let url = DatabaseUrl::parse(Some(&format!(
        "postgres://{}@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("postgres")
    )))?;
    let argv = vec![
        "calsync".to_string(),
        "worker".into(),
        // Google's default quota (10,000 requests a minute per project, 600 per user)
        // and the concurrency sized from it: the nightly as deployed, where Google's
        // quota is the limit.
        format!("--google-latency-ms={}", LATENCY.as_millis()),
        "--no-cron".into(),
        "--http-listen=127.0.0.1:0".into(),
        "--poll-secs=2".into(),
        format!("--google-api-base-url={}", fake.base_url()),
        format!("--google-api-root-url={}", fake.root_url()),
        format!("--google-token-url={}", fake.token_url()),
        "--google-client-id=bench".into(),
        "--google-client-secret=bench".into(),
        // Tokens encrypted as in production (a fixed, throwaway bench key).
        "--credentials-keys=bench:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
    ];
    let Command::Worker(args) = Cli::try_parse_from(argv)?.command else {
        anyhow::bail!("internal: bench worker arguments did not parse as a worker command");
    };
    let config = args.into_config(url)?;
    let concurrency = config.concurrency;
    let engine = crate::build_engine(pool, &config.sync)?;
    let (trigger, shutdown) = Shutdown::new();
    let started = Runtime {
        pool: pool.clone(),
        engine,
        config,
    }
    .start(shutdown)
    .await?;
    Ok((trigger, started.done, concurrency))
}

/// When the job's first attempt started, relative to its enqueue (database clock), once
/// it has ended.
async fn start_latency(pool: &PgPool, job_id: &str) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM a.started_at - j.run_at)::float8 * 1000 \
             FROM apalis.jobs j JOIN calsync.job_attempts a ON a.job_id = j.id \
             WHERE j.id = $1 ORDER BY a.id LIMIT 1",
        )
        .bind(job_id)
        .fetch_optional(pool)
        .await?;
        if let Some(ms) = ms {
            return Ok(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "probe job {job_id} did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Enqueue each probe at the interactive class, one at a time, and measure its start.
async fn probe(pool: &PgPool, users: &[i64]) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    for &user_id in users {
        let req = SyncRequest {
            user_id,
            reason: "bench",
            class: PriorityClass::Interactive,
            due_now: false,
        };
        let r = priority::request_sync(pool, &req, "bench").await?;
        anyhow::ensure!(
            r.outcome == RequestOutcome::Enqueued && r.class == PriorityClass::Interactive,
            "probe of user {user_id}: {r:?}"
        );
        out.push(start_latency(pool, &r.job_id).await?);
    }
    Ok(out)
}

fn ms(v: &[Duration]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .collect();
    parts.join(", ")
}

/// The case: `backlog` nightly jobs (20,000 at scale 1).
pub async fn run(pool: &PgPool, backlog: i64) -> anyhow::Result<Row> {
    let fake = FakeGoogle::start().await?;
    fake.add_fault(FaultRule::latency(LATENCY));
    let probes = seed(pool, &fake, backlog).await?;
    let (trigger, done, concurrency) = start_worker(pool, &fake).await?;

    // Idle queue: the worker waits on LISTEN/NOTIFY; warm up once, then measure.
    probe(pool, &probes[..1]).await?;
    let idle = probe(pool, &probes[1..=PROBES]).await?;

    // The nightly pass enqueues the backlog; probe once the worker is saturated.
    let run = queue::run_nightly_pass(pool, Utc::now(), RunTrigger::Manual, "bench")
        .await?
        .context("a nightly run for this instant already exists")?;
    let drained = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM calsync.job_attempts a JOIN apalis.jobs j ON j.id = a.job_id \
             WHERE calsync.job_payload(j.job) ->> 'run_id' = $1::text",
        )
        .bind(run.id)
        .fetch_one(pool)
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while drained().await? < 2 * i64::from(concurrency) {
        anyhow::ensure!(Instant::now() < deadline, "the backlog does not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = probe(pool, &probes[PROBES + 1..]).await?;
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE status = 'Pending' AND priority = $1",
    )
    .bind(PriorityClass::Nightly.priority())
    .fetch_one(pool)
    .await?;
    let synced = drained().await?;

    trigger.trigger();
    let _ = done.await;
    // The rest of the backlog is not needed: leave a clean database for later cases.
    queue::discard_jobs(pool, &Default::default(), "bench").await?;

    let mut pair = Pair::default();
    for d in &busy {
        pair.push(true, d.as_secs_f64() * 1000.0);
    }
    for d in &idle {
        pair.push(false, d.as_secs_f64() * 1000.0);
    }
    let busy_ms = pair.subject.median();
    Ok(Row::new(
        "priority",
        &format!("interactive enqueue → start, {backlog}-job nightly backlog vs idle"),
        pair,
        "ms",
        Some(Goal::AtMost(2.0)),
        format!(
            "and < 2,000 ms: {}; {PROBES} probes each (idle first, then behind the backlog: one side cannot alternate with the other): backlog [{}] ms with {behind} nightly jobs still pending ({synced} synced while probing), idle [{}] ms; concurrency {concurrency} (one fast lane), {} ms per Google call, Google's default quota",
            if busy_ms < 2000.0 { "met" } else { "MISSED" },
            ms(&busy),
            ms(&idle),
            LATENCY.as_millis()
        ),
    ))
}
