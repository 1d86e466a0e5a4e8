//! The CLI commands. `anyhow` lives here, at the edge; everything below is typed.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use calsync_domain::queue::{self, RunTrigger};
use chrono::Utc;

use crate::{
    cli::{Cli, Command, NightlyArgs, StatusArgs, SyncUserArgs, WorkerArgs},
    connect, ensure_migrated,
    runtime::{Runtime, Shutdown, run_pass, termination_signal},
};

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.database_url.clone();
    match cli.command {
        Command::Migrate => {
            let pool = connect(url.as_deref(), 2).await?;
            calsync_domain::migrate(&pool).await?;
            println!("database migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => worker(url.as_deref(), *args).await,
        Command::Nightly(args) => nightly(url.as_deref(), args).await,
        Command::SyncUser(args) => sync_user(url.as_deref(), args).await,
        Command::MarkAll => {
            let pool = connect(url.as_deref(), 2).await?;
            ensure_migrated(&pool).await?;
            let n = calsync_domain::users::mark_all_for_sync(&pool).await?;
            queue::audit(
                &pool,
                "cli",
                "mark_all",
                serde_json::json!({ "flagged": n }),
            )
            .await?;
            println!(
                "flagged {n} users with a course calendar; the next nightly pass (or `calsync nightly --now`) syncs them"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => status(url.as_deref(), args).await,
        Command::Prune(args) => {
            let pool = connect(url.as_deref(), 2).await?;
            ensure_migrated(&pool).await?;
            let n = queue::prune_finished_jobs(&pool, args.older_than_days).await?;
            println!(
                "deleted {n} finished jobs older than {} days",
                args.older_than_days
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboard(args) => {
            let pool = connect(url.as_deref(), 10).await?;
            ensure_migrated(&pool).await?;
            // Refuses (closed by default) before anything is announced.
            let app = calsync_dashboard::router(pool, crate::dashboard_config(&args.auth))?;
            let (trigger, shutdown) = Shutdown::new();
            tokio::spawn(async move {
                termination_signal().await;
                trigger.trigger();
            });
            println!("dashboard on http://{}/", args.listen);
            calsync_dashboard::serve_router(app, args.listen, shutdown.wait()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => crate::demo::run(url.as_deref(), args).await,
        Command::Bench(args) => crate::bench::run(url.as_deref(), args).await,
        Command::Preferences(args) => crate::preferences_cli::run(url.as_deref(), args).await,
        Command::FakeGoogle(args) => {
            let fake = calsync_fake_google::FakeGoogle::start_on(args.listen).await?;
            println!(
                "fake Google Calendar API on {} (token endpoint {})",
                fake.base_url(),
                fake.token_url()
            );
            termination_signal().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn worker(url: Option<&str>, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    crate::runtime::parse_schedule(&args.nightly_schedule)?;
    // Each running sync holds one connection (its per-user advisory lock) and borrows
    // others briefly; never let the pool be the bottleneck that times syncs out.
    let needed = u32::from(args.concurrency) * 2 + 4;
    if args.db_max_connections < needed {
        tracing::warn!(
            configured = args.db_max_connections,
            using = needed,
            "CALSYNC_DB_MAX_CONNECTIONS is below 2 × concurrency + 4; raising it"
        );
    }
    let pool = connect(url, args.db_max_connections.max(needed)).await?;
    ensure_migrated(&pool).await?;
    let engine = crate::build_engine(&pool, &args.google)?;
    let (trigger, shutdown) = Shutdown::new();
    let started = Runtime { pool, engine, args }.start(shutdown).await?;
    println!("calsync worker: HTTP API on http://{}/", started.http_addr);
    termination_signal().await;
    trigger.trigger();
    started.done.await.context("worker runtime panicked")?;
    Ok(ExitCode::SUCCESS)
}

async fn nightly(url: Option<&str>, args: NightlyArgs) -> anyhow::Result<ExitCode> {
    if !args.now {
        bail!(
            "`calsync nightly` needs --now to run the pass immediately (the cron runs it inside `calsync worker`)"
        );
    }
    let pool = connect(url, 2).await?;
    ensure_migrated(&pool).await?;
    match run_pass(&pool, Utc::now(), RunTrigger::Manual, "cli").await? {
        Some(run) => println!(
            "nightly run {}: {} users to sync, {} enqueued, {} already queued; workers pick them up now",
            run.id, run.users_due, run.enqueued, run.already_queued
        ),
        None => println!("a run for this instant already exists"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn sync_user(url: Option<&str>, args: SyncUserArgs) -> anyhow::Result<ExitCode> {
    let pool = connect(url, 2).await?;
    ensure_migrated(&pool).await?;
    let job_id = queue::enqueue_sync(&pool, args.user_id, "cli").await?;
    println!("job {job_id} enqueued for user {}", args.user_id);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let job = crate::http::load_job(&pool, &job_id)
            .await?
            .with_context(|| format!("job {job_id} disappeared"))?;
        match job.state.as_str() {
            "done" => {
                println!("job {job_id} done: {}", job.last_result.unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            "failed" | "killed" => {
                println!(
                    "job {job_id} {}: {}",
                    job.state,
                    job.last_result.unwrap_or_default()
                );
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "job {job_id} still {} after {} s (is a `calsync worker` running?)",
                job.state,
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status(url: Option<&str>, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = connect(url, 2).await?;
    ensure_migrated(&pool).await?;
    let users = calsync_domain::users::counts(&pool).await?;
    let jobs = queue::job_counts(&pool).await?;
    let runs = queue::recent_nightly_runs(&pool, 1).await?;
    if args.json {
        let jobs: Vec<_> = jobs
            .iter()
            .map(|(q, s, n)| serde_json::json!({"queue": q, "state": s, "count": n}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"users": users, "jobs": jobs, "last_run": runs.first()})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("users:            {}", users.users);
    println!("  with calendar:  {}", users.with_calendar);
    println!("  flagged:        {}", users.flagged);
    println!("  never synced:   {}", users.never_synced);
    println!("  due:            {}", users.due);
    println!("  needs re-auth:  {}", users.needs_reauth);
    println!("  calendar gone:  {}", users.calendar_missing);
    println!("  failing:        {}", users.failing);
    println!("jobs:");
    if jobs.is_empty() {
        println!("  (none)");
    }
    for (q, s, n) in &jobs {
        println!("  {q:<16} {:<9} {n}", s.as_str());
    }
    if let Some(run) = runs.first() {
        println!(
            "last nightly run {} ({}, {}): {} due, {} enqueued, {} succeeded, {} failed{}",
            run.id,
            run.trigger,
            run.scheduled_for,
            run.users_due,
            run.enqueued,
            run.succeeded,
            run.failed,
            if run.finished_at.is_some() {
                ", finished"
            } else {
                ", in progress"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
