//! The CLI commands. `anyhow` lives here, at the edge; everything below is typed. Each
//! command translates its flags into [`crate::config`] types first (validated once),
//! then connects within its budget ([`crate::database`]).

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use calsync_domain::{
    credentials,
    queue::{self, JobState, RunTrigger},
    users,
};
use chrono::Utc;
use sqlx::PgPool;

use crate::{
    cli::{
        CleanupArgs, Cli, Command, CredentialsArgs, CredentialsCommand, NightlyArgs, StatusArgs,
        SyncUserArgs,
    },
    config::{DashboardSettings, DatabaseConfig, DatabaseUrl, WorkerConfig},
    database::{connect, connect_migrated},
    nightly::run_pass,
    runtime::{Runtime, Shutdown, termination_signal},
};

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.database_url();
    match cli.command {
        Command::Migrate => {
            let pool = connect(&DatabaseConfig::cli(url?)).await?;
            calsync_domain::migrate(&pool).await?;
            println!("database migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => worker(args.into_config(url?)?).await,
        Command::Nightly(args) => nightly(url?, args).await,
        Command::SyncUser(args) => sync_user(url?, args).await,
        Command::MarkAll => {
            let pool = cli_pool(url?).await?;
            let n = users::mark_all_for_sync(&pool, "cli").await?;
            println!(
                "flagged {n} users with a course calendar; the next nightly pass (or `calsync nightly --now`) syncs them"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => status(url?, args).await,
        Command::Prune(args) => {
            let pool = cli_pool(url?).await?;
            let n = queue::prune_finished_jobs(&pool, args.older_than_days, "cli").await?;
            println!(
                "deleted {n} finished jobs older than {} days",
                args.older_than_days
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Credentials(args) => credentials(url?, args).await,
        Command::Cleanup(args) => cleanup(url?, *args).await,
        Command::Dashboard(args) => {
            let (db, settings) = args.into_config(url?);
            dashboard(db, settings).await
        }
        Command::Preferences(args) => crate::preferences_cli::run(url, args).await,
        #[cfg(feature = "dev-tools")]
        Command::Demo(args) => crate::demo::run(url?, args).await,
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => crate::bench::run(url?, args).await,
        #[cfg(feature = "dev-tools")]
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

/// A one-shot command's pool (two connections at most) on a migrated database.
async fn cli_pool(url: DatabaseUrl) -> anyhow::Result<PgPool> {
    Ok(connect_migrated(&DatabaseConfig::cli(url)).await?)
}

async fn worker(config: WorkerConfig) -> anyhow::Result<ExitCode> {
    let pool = connect_migrated(&config.database).await?;
    let engine = crate::build_engine(&pool, &config.sync)?;
    crate::announce_calendar_mode(&pool, &config.sync, "worker").await?;
    let (trigger, shutdown) = Shutdown::new();
    let started = Runtime {
        pool,
        engine,
        config,
    }
    .start(shutdown)
    .await?;
    println!("calsync worker: HTTP API on http://{}/", started.http_addr);
    termination_signal().await;
    trigger.trigger();
    started.done.await.context("worker runtime panicked")?;
    Ok(ExitCode::SUCCESS)
}

async fn credentials(url: DatabaseUrl, args: CredentialsArgs) -> anyhow::Result<ExitCode> {
    let pool = cli_pool(url).await?;
    match args.command {
        CredentialsCommand::AddSealingKey { public_key_file } => {
            let key = std::fs::read_to_string(&public_key_file)
                .with_context(|| format!("reading {}", public_key_file.display()))?;
            let id = credentials::add_sealing_key(&pool, &key, "cli").await?;
            println!(
                "sealing key {id} registered: new tokens written to google_credentials are sealed with it"
            );
        }
        CredentialsCommand::RotateKey { batch_size, auth } => {
            let vault = auth.vault()?;
            let r = crate::rotation::rotate(&pool, &vault, batch_size.max(1)).await?;
            println!(
                "re-encrypted {} credentials under key {}{}",
                r.reencrypted,
                vault.active_key_id().unwrap_or_default(),
                if r.changed_meanwhile > 0 {
                    format!(
                        " ({} changed by a running sync meanwhile)",
                        r.changed_meanwhile
                    )
                } else {
                    String::new()
                }
            );
            if !r.unreadable.is_empty() {
                println!(
                    "{} rows could not be decrypted with the configured keys (users {:?}); they are left as they are",
                    r.unreadable.len(),
                    r.unreadable
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        CredentialsCommand::Status => {
            let c = credentials::envelope_counts(&pool).await?;
            println!("refresh tokens encrypted by calsync: {}", c.encrypted);
            println!("sealed by the database, not yet re-encrypted: {}", c.sealed);
            println!("legacy plain tokens: {}", c.plain);
            let keys = credentials::sealing_keys(&pool).await?;
            if keys.is_empty() {
                println!(
                    "no sealing key registered: `calsync credentials add-sealing-key FILE` (until then tokens written to google_credentials stay plain)"
                );
            }
            for (i, k) in keys.iter().enumerate() {
                println!(
                    "sealing key {}{} (registered {} by {})",
                    k.key_id,
                    if i == 0 { " (in use)" } else { "" },
                    k.created_at,
                    k.created_by
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn cleanup(url: DatabaseUrl, args: CleanupArgs) -> anyhow::Result<ExitCode> {
    let pool = cli_pool(url).await?;
    let settings = args.google.into_settings()?;
    let engine = crate::build_engine(&pool, &settings)?;
    let cleaner = crate::cleanup::Cleaner::new(pool, engine.backend(), crate::sweep_as(&settings));
    if args.dry_run {
        let plan = cleaner.plan().await?;
        if plan.is_empty() {
            println!("nothing to clean up");
        }
        for p in &plan {
            for line in p.describe() {
                println!("{line}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = cleaner.run("cli").await?;
    for c in &r.calendars_deleted {
        println!("deleted calendar {c}");
    }
    for (c, e) in &r.events_deleted {
        println!("deleted event {e} from calendar {c}");
    }
    println!(
        "cleanup: {} calendars deleted, {} events deleted, {} skipped, {} left for the next pass",
        r.calendars_deleted.len(),
        r.events_deleted.len(),
        r.skipped,
        r.deferred
    );
    Ok(ExitCode::SUCCESS)
}

async fn dashboard(db: DatabaseConfig, settings: DashboardSettings) -> anyhow::Result<ExitCode> {
    let pool = connect_migrated(&db).await?;
    // Refuses (closed by default) before anything is announced.
    let app = calsync_dashboard::router(pool, settings.auth)?;
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        termination_signal().await;
        trigger.trigger();
    });
    println!("dashboard on http://{}/", settings.listen);
    calsync_dashboard::serve_router(app, settings.listen, shutdown.wait()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn nightly(url: DatabaseUrl, args: NightlyArgs) -> anyhow::Result<ExitCode> {
    if !args.now {
        bail!(
            "`calsync nightly` needs --now to run the pass immediately (the cron runs it inside `calsync worker`)"
        );
    }
    let pool = cli_pool(url).await?;
    match run_pass(&pool, Utc::now(), RunTrigger::Manual, "cli").await? {
        Some(run) => println!(
            "nightly run {}: {} users to sync, {} enqueued, {} already queued; workers pick them up now",
            run.id, run.users_due, run.enqueued, run.already_queued
        ),
        None => println!("a run for this instant already exists"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn sync_user(url: DatabaseUrl, args: SyncUserArgs) -> anyhow::Result<ExitCode> {
    let pool = cli_pool(url).await?;
    let job_id = queue::enqueue_sync(&pool, args.user_id, "cli", "cli").await?;
    println!("job {job_id} enqueued for user {}", args.user_id);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let job = queue::job_status(&pool, &job_id)
            .await?
            .with_context(|| format!("job {job_id} disappeared"))?;
        let result = || {
            job.last_result
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default()
        };
        match job.job_state() {
            Some(JobState::Done) => {
                println!("job {job_id} done: {}", result());
                return Ok(ExitCode::SUCCESS);
            }
            Some(JobState::Failed | JobState::Killed) => {
                println!("job {job_id} {}: {}", job.state, result());
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

async fn status(url: DatabaseUrl, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = cli_pool(url).await?;
    let users = users::counts(&pool).await?;
    let stuck = users::flagged_not_due(&pool).await?;
    let jobs = queue::job_counts(&pool).await?;
    let runs = queue::recent_nightly_runs(&pool, 1).await?;
    if args.json {
        let jobs: Vec<_> = jobs
            .iter()
            .map(|(q, s, n)| {
                serde_json::json!({
                    "queue": q, "state": s, "count": n,
                    // Finished states are counted up to queue::JOB_COUNT_CAP + 1.
                    "at_least": *n > queue::JOB_COUNT_CAP,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "users": users,
                "flagged_not_due": stuck,
                "jobs": jobs,
                "last_run": runs.first()
            }))?
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
    for line in explain_flagged_not_due(&stuck) {
        println!("{line}");
    }
    println!("jobs:");
    if jobs.is_empty() {
        println!("  (none)");
    }
    for (q, s, n) in &jobs {
        if *n > queue::JOB_COUNT_CAP {
            println!(
                "  {q:<16} {:<9} more than {}",
                s.as_str(),
                queue::JOB_COUNT_CAP
            );
        } else {
            println!("  {q:<16} {:<9} {n}", s.as_str());
        }
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

/// Why flagged users are not synced, each with what helps.
fn explain_flagged_not_due(s: &users::FlaggedNotDue) -> Vec<String> {
    let mut lines = Vec::new();
    if s.no_calendar + s.needs_reauth + s.calendar_missing + s.failing == 0 {
        return lines;
    }
    lines.push("flagged but not synced by the nightly pass:".to_string());
    if s.needs_reauth > 0 {
        lines.push(format!(
            "  {} need to sign in to Google again (their refresh token was refused); they are skipped until new credentials arrive. Dashboard: /users?status=needs_reauth",
            s.needs_reauth
        ));
    }
    if s.calendar_missing > 0 {
        lines.push(format!(
            "  {} deleted their course calendar in Google; they are skipped until users.google_course_calendar_id changes. Dashboard: /users?status=calendar_missing",
            s.calendar_missing
        ));
    }
    if s.no_calendar > 0 {
        lines.push(format!(
            "  {} have no google_course_calendar_id, so there is nothing to sync to",
            s.no_calendar
        ));
    }
    if s.failing > 0 {
        lines.push(format!(
            "  {} failed on every retry last time (still due: each pass tries again). Dashboard: /users?status=failing; the error: `calsync sync-user ID --wait`",
            s.failing
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagged_users_that_are_not_due_are_explained_with_a_way_out() {
        assert!(explain_flagged_not_due(&users::FlaggedNotDue::default()).is_empty());
        let lines = explain_flagged_not_due(&users::FlaggedNotDue {
            no_calendar: 1,
            needs_reauth: 2,
            calendar_missing: 3,
            failing: 4,
        })
        .join("\n");
        assert!(
            lines.contains("2 need to sign in to Google again"),
            "{lines}"
        );
        assert!(lines.contains("/users?status=needs_reauth"), "{lines}");
        assert!(lines.contains("3 deleted their course calendar"), "{lines}");
        assert!(
            lines.contains("1 have no google_course_calendar_id"),
            "{lines}"
        );
        assert!(lines.contains("4 failed on every retry"), "{lines}");
    }
}
