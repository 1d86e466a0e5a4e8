//! `calsync bench`: calsync measured against baselines in the same run, on a scratch
//! database, printed as ratios (machine speed cancels out), each with its goal.
//!
//! Every comparison follows one protocol ([`Pair`]): both sides run on the same cluster
//! (its durability settings are printed first), into tables with the same indexes and
//! constraints, with the same batching; one untimed warm-up each, then at least three
//! timed rounds in alternating order; the medians are compared and the spread printed.
//!
//! 1. `queue`: apalis-postgres no-op jobs/s vs. a hand-written SKIP LOCKED loop over a
//!    table with apalis' schema;
//! 2. `fan-out`: the nightly pass for 100,000 due users vs. a bare INSERT … SELECT of
//!    the same rows into a table with apalis' own indexes and constraints (goal ≤ 1.5×);
//! 3. `tracking`: a bulk import, and a bulk UPDATE of 10,000 course titles that changes
//!    50,000 students' calendars, with vs. without calsync's change tracking (goals ≤ 1.3×
//!    and ≤ 2×);
//! 4. `acks`: apalis' acknowledgement of nightly jobs at 1,000,000 vs. 10,000 finished
//!    jobs in the table (goal ≤ 1.2×), and what recording attempts adds to it;
//! 5. `sync`: users/s and Google calls per user against the fake with injected latency,
//!    for changed vs. unchanged users;
//! 6. `dashboard`: job pages, the overview and the error search at 1,000,000 jobs vs.
//!    1,000, and `queue::job_counts` (metrics, `calsync status`);
//! 7. `holiday`: a campus-wide holiday flagging 40,000 students vs. a bare UPDATE of the
//!    same users;
//! 8. `priority`: an interactive enqueue → start behind a draining 20,000-job nightly
//!    backlog vs. on an idle queue, same worker (goal ≤ 2× and < 2 s).

use std::{process::ExitCode, time::Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool, postgres::PgPoolOptions};

use crate::{cli::BenchArgs, config::DatabaseUrl};

mod acks;
mod dashboard;
mod dashboard_health;
mod fan_out;
mod holiday;
mod priority;
mod queue;
mod sync;
mod tracking;

/// The cases `--only` can name, in the order they run.
const CASES: [&str; 8] = [
    "queue",
    "fan-out",
    "tracking",
    "acks",
    "sync",
    "dashboard",
    "holiday",
    "priority",
];

/// Timed rounds per side (after one warm-up each).
const ROUNDS: usize = 3;

/// What a ratio must stay within.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Goal {
    /// calsync / baseline must not exceed this.
    AtMost(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio <= g,
        }
    }

    fn show(self) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {g}"),
        }
    }
}

/// Timings of one side of a comparison.
#[derive(Debug, Clone, Default, Serialize)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    fn spread(&self) -> String {
        format!("{:.3}–{:.3}", self.min(), self.max())
    }
}

/// The two sides of a comparison, measured in alternating order: round `i` runs
/// calsync first when `i` is even, the baseline first when it is odd.
#[derive(Debug, Default)]
struct Pair {
    subject: Samples,
    baseline: Samples,
}

impl Pair {
    /// The order of round `round`: `true` = calsync's side.
    fn order(round: usize) -> [bool; 2] {
        if round.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        }
    }

    fn push(&mut self, subject: bool, secs: f64) {
        if subject {
            self.subject.push(secs);
        } else {
            self.baseline.push(secs);
        }
    }
}

/// One measured comparison.
#[derive(Debug, Serialize)]
struct Row {
    case: &'static str,
    name: String,
    subject: f64,
    baseline: f64,
    unit: &'static str,
    ratio: f64,
    goal: Option<Goal>,
    subject_runs: Vec<f64>,
    baseline_runs: Vec<f64>,
    note: String,
}

impl Row {
    fn new(
        case: &'static str,
        name: &str,
        pair: Pair,
        unit: &'static str,
        goal: Option<Goal>,
        note: String,
    ) -> Row {
        let (subject, baseline) = (pair.subject.median(), pair.baseline.median());
        Row {
            case,
            name: name.into(),
            subject,
            baseline,
            unit,
            ratio: if baseline > 0.0 {
                subject / baseline
            } else {
                f64::NAN
            },
            goal,
            subject_runs: pair.subject.0,
            baseline_runs: pair.baseline.0,
            note,
        }
    }

    fn verdict(&self) -> String {
        match self.goal {
            Some(g) if g.met(self.ratio) => format!("goal {} met", g.show()),
            Some(g) => format!("goal {} MISSED", g.show()),
            None => String::new(),
        }
    }
}

/// The server settings the numbers depend on.
#[derive(Debug, Serialize)]
struct Server {
    settings: Vec<(String, String)>,
    cpus: usize,
}

impl Server {
    async fn read(pool: &PgPool) -> anyhow::Result<Server> {
        let settings = sqlx::query_as(
            "SELECT name, current_setting(name) FROM pg_settings \
             WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'full_page_writes', \
                            'wal_level', 'shared_buffers', 'work_mem', 'jit', 'max_wal_size') \
             ORDER BY name",
        )
        .fetch_all(pool)
        .await?;
        Ok(Server {
            settings,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    fn get(&self, name: &str) -> &str {
        self.settings
            .iter()
            .find(|(n, _)| n == name)
            .map_or("?", |(_, v)| v.as_str())
    }

    fn durable(&self) -> bool {
        self.get("fsync") == "on"
            && self.get("synchronous_commit") == "on"
            && self.get("full_page_writes") == "on"
    }
}

#[derive(Serialize)]
struct Report<'a> {
    server: &'a Server,
    build: &'static str,
    rows: &'a [Row],
}

/// Run the benchmarks on a scratch database next to `url`'s.
pub async fn run(url: DatabaseUrl, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.options().clone())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let server = Server::read(&admin).await?;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "server: PostgreSQL {}; fsync={} synchronous_commit={} full_page_writes={} wal_level={} \
         shared_buffers={} jit={}; {} CPUs; {build} build",
        server.get("server_version"),
        server.get("fsync"),
        server.get("synchronous_commit"),
        server.get("full_page_writes"),
        server.get("wal_level"),
        server.get("shared_buffers"),
        server.get("jit"),
        server.cpus,
    );
    if !server.durable() {
        println!(
            "WARNING: this cluster does not make commits durable; publish numbers from a \
             cluster with fsync, synchronous_commit and full_page_writes on"
        );
    }
    let db = format!("calsync_bench_{:08x}", rand::random::<u32>());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect_with(url.options().clone().database(&db))
        .await?;
    let mut rows = Vec::new();
    let res = run_all(&pool, &args, &mut rows).await;
    pool.close().await;
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    println!();
    println!(
        "{:<66} {:>11} {:>11} {:>7}  goal",
        "benchmark (median of the runs)", "calsync", "baseline", "ratio"
    );
    for r in &rows {
        println!(
            "{:<66} {:>11.4} {:>11.4} {:>7.2}  {}",
            format!("{} ({})", r.name, r.unit),
            r.subject,
            r.baseline,
            r.ratio,
            r.verdict()
        );
        if r.subject_runs.len() > 1 {
            println!(
                "    runs: calsync {} ({}), baseline {} ({})",
                Samples(r.subject_runs.clone()).spread(),
                r.subject_runs.len(),
                Samples(r.baseline_runs.clone()).spread(),
                r.baseline_runs.len()
            );
        }
        if !r.note.is_empty() {
            println!("    {}", r.note);
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            server: &server,
            build,
            rows: &rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // The cases that finished are printed even when a later one failed.
    res?;
    Ok(ExitCode::SUCCESS)
}

fn scaled(n: f64, scale: f64) -> i64 {
    ((n * scale).round() as i64).max(10)
}

async fn run_all(pool: &PgPool, args: &BenchArgs, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    calsync_domain::migrate(pool).await?;
    if let Some(unknown) = args.only.iter().find(|c| !CASES.contains(&c.as_str())) {
        anyhow::bail!(
            "unknown bench case {unknown:?}: the cases are {}",
            CASES.join(", ")
        );
    }
    let wanted = |case: &str| args.only.is_empty() || args.only.iter().any(|c| c == case);
    let s = args.scale;
    if wanted("queue") {
        println!("==> queue throughput");
        rows.push(queue::run(pool, scaled(20_000.0, s)).await?);
    }
    if wanted("fan-out") {
        println!("==> nightly fan-out");
        rows.push(fan_out::run(pool, scaled(100_000.0, s)).await?);
    }
    if wanted("tracking") {
        println!("==> change tracking");
        rows.extend(tracking::run(pool, scaled(10_000.0, s), scaled(50_000.0, s)).await?);
    }
    if wanted("acks") {
        println!("==> acknowledgements against the finished-job history");
        rows.extend(acks::run(pool, scaled(10_000.0, s), scaled(1_000_000.0, s)).await?);
    }
    if wanted("sync") {
        println!("==> sync against the fake Google API");
        rows.extend(sync::run(pool, scaled(200.0, s)).await?);
    }
    if wanted("dashboard") {
        let n = scaled(1_000_000.0, s);
        println!("==> dashboard job pages at {n} jobs");
        rows.extend(dashboard::run(pool, n).await?);
        rows.extend(dashboard_health::run(pool, n).await?);
    }
    if wanted("holiday") {
        println!("==> campus-wide holiday flagging");
        rows.push(holiday::run(pool, scaled(40_000.0, s)).await?);
    }
    if wanted("priority") {
        println!("==> interactive sync behind the nightly backlog");
        rows.push(priority::run(pool, scaled(20_000.0, s)).await?);
    }
    Ok(())
}

/// Time one future, in seconds.
async fn timed<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<f64> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Flush dirty buffers before a timed round, so a checkpoint started by one side's
/// writes does not land in the other side's round. Needs superuser (or
/// `pg_checkpoint`); without it the rounds simply share checkpoints at random.
async fn checkpoint(pool: &PgPool) {
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
}

/// Insert `n` finished sync jobs with ids after `from` (cheap sortable ids, a realistic
/// mix of states, one user per 50 jobs), as calsync leaves them: final jobs hold no
/// worker (`lock_by`), their attempts' rows do.
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
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await?;
    Ok(())
}
