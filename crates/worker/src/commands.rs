//! The CLI commands. `anyhow` lives here, at the edge; everything below is typed. Each
//! command translates its flags into [`crate::config`] types first (validated once),
//! then connects within its budget ([`crate::database`]).

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use calsync_domain::{
    credentials,
    priority::{self, PriorityClass, RequestOutcome, Requested, SyncRequest},
    queue::{self, JobState, RunTrigger},
    users,
};
use chrono::Utc;
use sqlx::PgPool;

use crate::{
    cli::{
        CleanupArgs, Cli, Command, CredentialsArgs, CredentialsCommand, NightlyArgs, SyncUserArgs,
    },
    config::{DashboardSettings, DatabaseConfig, DatabaseUrl, SyncSettings, WorkerConfig},
    database::{connect, connect_migrated},
    nightly::run_pass,
    runtime::{Runtime, Shutdown, termination_signal},
    sync::{SyncError, dry_run::EnginePreview},
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
        Command::Status(args) => crate::status::run(cli_pool(url?).await?, args).await,
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
            let (db, settings, google) = args.into_config(url?)?;
            dashboard(db, settings, google).await
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

/// An error with its causes, each said once: `outer: cause: root`, skipping a cause whose
/// text an outer message already includes (error types that show their source in their
/// own message would otherwise print it twice).
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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
    match args.command {
        CredentialsCommand::AddSealingKey { public_key_file } => {
            let key = std::fs::read_to_string(&public_key_file)
                .with_context(|| format!("reading {}", public_key_file.display()))?;
            let pool = cli_pool(url).await?;
            let id = credentials::add_sealing_key(&pool, &key, "cli").await?;
            println!(
                "sealing key {id} registered: new tokens written to google_credentials are sealed with it"
            );
        }
        CredentialsCommand::RotateKey { batch_size, keys } => {
            let vault = keys.vault()?;
            if !vault.encrypts() {
                return Err(crate::rotation::RotationError::NoKeys.into());
            }
            let pool = cli_pool(url).await?;
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
                let reasons: Vec<String> = r
                    .unreadable_by_reason()
                    .into_iter()
                    .map(|(reason, users)| format!("{reason} (users {users:?})"))
                    .collect();
                bail!(
                    "{} stored credentials could not be decrypted with the configured keys and were left as they are: {}; \
                     add the missing key to CALSYNC_CREDENTIALS_KEYS (or CALSYNC_CREDENTIALS_SEALING_KEY_FILE) and run rotate-key again, \
                     or let those students sign in again",
                    r.unreadable.len(),
                    reasons.join("; ")
                );
            }
        }
        CredentialsCommand::Status => {
            let pool = cli_pool(url).await?;
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
    let settings = args.google.into_settings()?;
    let pool = cli_pool(url).await?;
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

async fn dashboard(
    db: DatabaseConfig,
    mut settings: DashboardSettings,
    google: Option<SyncSettings>,
) -> anyhow::Result<ExitCode> {
    let pool = connect_migrated(&db).await?;
    match google {
        Some(google) => {
            let engine = crate::build_engine(&pool, &google)?;
            settings.auth.sync_preview = Some(Arc::new(EnginePreview(Arc::new(engine))));
        }
        None => tracing::info!(
            "no Google configuration (CALSYNC_GOOGLE_CLIENT_ID or a service-account mode): \
             the user page's \"Check against Google\" is not available"
        ),
    }
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
    let class = PriorityClass::parse(&args.class)?;
    let pool = cli_pool(url).await?;
    if args.dry_run {
        return sync_user_dry_run(&pool, args).await;
    }
    let req = SyncRequest {
        user_id: args.user_id,
        reason: "cli",
        class,
        due_now: args.due_now,
    };
    let requested = priority::request_sync(&pool, &req, "cli").await?;
    let job_id = requested.job_id.clone();
    println!("{}", describe_request(args.user_id, &requested));
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

/// One line saying what a sync request did.
fn describe_request(user_id: i64, r: &Requested) -> String {
    let job = &r.job_id;
    let class = r.class;
    let mut line = match r.outcome {
        RequestOutcome::Enqueued => format!("job {job} enqueued for user {user_id} ({class})"),
        RequestOutcome::Raised => {
            format!("job {job} of user {user_id} was waiting; raised to {class}")
        }
        RequestOutcome::Unchanged => {
            format!("job {job} of user {user_id} is already waiting ({class})")
        }
        RequestOutcome::Running => format!(
            "job {job} of user {user_id} is running now; no second job (a change it missed keeps the user flagged: ask again once it has finished)"
        ),
    };
    if r.made_due {
        line.push_str("; due now instead of after its retry backoff");
    }
    if r.demoted {
        line.push_str(
            "; this caller's budget above the nightly class is spent for now, so it counts as nightly",
        );
    }
    line
}

/// `calsync sync-user ID --dry-run`: what a sync would change, written nowhere.
async fn sync_user_dry_run(pool: &PgPool, args: SyncUserArgs) -> anyhow::Result<ExitCode> {
    let settings = args.google.into_settings()?;
    let engine = crate::build_engine(pool, &settings)?;
    let report = match engine.dry_run(args.user_id).await {
        Ok(report) => report,
        Err(SyncError::UnknownUser(id)) => bail!("unknown user {id}"),
        Err(e) => return Err(e.into()),
    };
    for line in report.lines() {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Shows(#[source] std::io::Error);

    #[test]
    fn errors_are_described_with_each_cause_once() {
        let io = || std::io::Error::other("connection refused");
        let e = anyhow::Error::new(Shows(io())).context("could not connect");
        assert_eq!(describe_error(&e), "could not connect: connection refused");
        let e = anyhow::Error::new(io()).context("reading key.json");
        assert_eq!(describe_error(&e), "reading key.json: connection refused");
    }
}
