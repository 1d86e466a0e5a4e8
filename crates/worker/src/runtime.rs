//! The worker runtime: the apalis `SyncUserJob` worker, the nightly cron, and the HTTP
//! API, supervised (restart with backoff on database errors) and shut down gracefully.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use apalis_postgres::{Config, PostgresStorage};
use calsync_domain::queue::{self, RunTrigger, SYNC_QUEUE};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    cli::WorkerArgs,
    http::{self, ApiState},
    job::{JobDeps, handle_sync_user},
    sync::SyncEngine,
};

/// Errors that stop the worker process.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "invalid nightly schedule {schedule:?}: {reason} (cron with seconds first, e.g. \"0 30 3 * * *\")"
    )]
    Schedule { schedule: String, reason: String },
    #[error("could not bind the HTTP API on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("dashboard: {0}")]
    Dashboard(String),
}

/// A shutdown signal shared by every part of the process.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending half of [`Shutdown`].
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }
    /// Resolves once shutdown was triggered.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

impl ShutdownTrigger {
    /// Ask everything to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Parse and validate a cron schedule (seconds first).
pub fn parse_schedule(schedule: &str) -> Result<cron::Schedule, RuntimeError> {
    cron::Schedule::from_str(schedule).map_err(|e| RuntimeError::Schedule {
        schedule: schedule.to_string(),
        reason: e.to_string(),
    })
}

/// A unique-per-process worker name prefix: `<prefix>-<host>-<pid>-<random>`.
pub fn worker_base_name(prefix: Option<&str>) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let rand: u32 = rand::random();
    format!(
        "{}-{host}-{}-{rand:08x}",
        prefix.unwrap_or("calsync"),
        std::process::id()
    )
}

/// Everything the runtime needs.
pub struct Runtime {
    pub pool: PgPool,
    pub engine: SyncEngine,
    pub args: WorkerArgs,
}

/// Handles of a started runtime.
pub struct Started {
    /// Address the HTTP API is bound to.
    pub http_addr: std::net::SocketAddr,
    /// Resolves when everything has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

impl Runtime {
    /// Start the workers, the cron and the HTTP API; they run until `shutdown` fires.
    pub async fn start(self, shutdown: Shutdown) -> Result<Started, RuntimeError> {
        let Runtime { pool, engine, args } = self;
        let schedule = parse_schedule(&args.nightly_schedule)?;
        let base = worker_base_name(args.worker_name.as_deref());
        let ready = Arc::new(AtomicBool::new(false));

        let listener = tokio::net::TcpListener::bind(args.http_listen)
            .await
            .map_err(|source| RuntimeError::Bind {
                addr: args.http_listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| RuntimeError::Bind {
            addr: args.http_listen,
            source,
        })?;
        let _ = crate::telemetry::prometheus();

        let mut tasks = tokio::task::JoinSet::new();
        let api = ApiState {
            pool: pool.clone(),
            api_token: args.api_token.as_deref().map(Arc::from),
            ready: ready.clone(),
        };
        {
            let sd = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = http::serve(listener, api, sd.wait()).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
        }
        if let Some(addr) = args.dashboard_listen {
            // Fails fast on a dashboard without credentials.
            let app =
                calsync_dashboard::router(pool.clone(), crate::dashboard_config(&args.dashboard))
                    .map_err(|e| RuntimeError::Dashboard(e.to_string()))?;
            let sd = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = calsync_dashboard::serve_router(app, addr, sd.wait()).await {
                    tracing::error!(error = %e, "dashboard stopped");
                }
            });
        }

        let deps = Arc::new(JobDeps {
            pool: pool.clone(),
            engine,
        });
        tasks.spawn(supervise("sync-worker", shutdown.clone(), {
            let pool = pool.clone();
            let args = args.clone();
            let base = base.clone();
            let ready = ready.clone();
            move |generation, sd| {
                let pool = pool.clone();
                let args = args.clone();
                let deps = deps.clone();
                let name = format!("{base}-sync-{generation}");
                let ready = ready.clone();
                async move { run_sync_worker(pool, args, deps, name, ready, sd).await }
            }
        }));
        if !args.no_cron {
            let tz = args.nightly_time_zone;
            let retention_days = args.retention_days;
            tasks.spawn(supervise("nightly-cron", shutdown.clone(), {
                let pool = pool.clone();
                let base = base.clone();
                move |generation, sd| {
                    let pool = pool.clone();
                    let schedule = schedule.clone();
                    let name = format!("{base}-cron-{generation}");
                    async move { run_cron(pool, schedule, tz, retention_days, name, sd).await }
                }
            }));
        }
        tracing::info!(
            worker = %base,
            http = %http_addr,
            concurrency = args.concurrency,
            schedule = %args.nightly_schedule,
            schedule_tz = %args.nightly_time_zone,
            cron = !args.no_cron,
            "calsync worker started"
        );

        let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_secs);
        let done = tokio::spawn(async move {
            shutdown.clone().wait().await;
            ready.store(false, Ordering::Relaxed);
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
                tracing::warn!(
                    timeout_secs = shutdown_timeout.as_secs(),
                    "shutdown timeout reached; jobs still running are handed back by the heartbeat rescue"
                );
            }
            tracing::info!("calsync worker stopped");
        });
        Ok(Started { http_addr, done })
    }
}

/// Run `make(generation, shutdown)` until shutdown; restart it with capped exponential
/// backoff when it fails (database down, connection lost) instead of exiting.
async fn supervise<F, Fut>(what: &'static str, shutdown: Shutdown, make: F)
where
    F: Fn(u32, Shutdown) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let mut generation = 0u32;
    let mut delay = Duration::from_millis(250);
    loop {
        let started = std::time::Instant::now();
        let res = make(generation, shutdown.clone()).await;
        if shutdown.is_triggered() {
            return;
        }
        match res {
            Ok(()) => tracing::warn!(what, "stopped without a shutdown request; restarting"),
            Err(e) => {
                tracing::error!(what, error = %e, retry_in_ms = delay.as_millis() as u64, "failed; restarting")
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_millis(250);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.clone().wait() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
        generation += 1;
    }
}

async fn run_sync_worker(
    pool: PgPool,
    args: WorkerArgs,
    deps: Arc<JobDeps>,
    name: String,
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
) -> Result<(), String> {
    let config = Config::default()
        .queue(SYNC_QUEUE)
        .batch_size(args.concurrency as usize)
        .heartbeat_interval(args.heartbeat())
        .missed_heartbeats(3);
    let backend = crate::job::raw_payloads(
        PostgresStorage::<Vec<u8>>::new(&pool)
            .with_config(config)
            .with_pubsub()
            .poll_with_interval(Duration::from_secs(args.poll_secs.max(1))),
    );
    let worker = WorkerBuilder::new(name.clone())
        .backend(backend)
        .concurrency(args.concurrency as usize)
        .timeout(Duration::from_secs(args.job_timeout_secs))
        .data(deps)
        .build(handle_sync_user);
    ready.store(true, Ordering::Relaxed);
    tracing::info!(worker = %name, "sync worker running");
    let res = worker
        .run_until(async move {
            shutdown.wait().await;
            Ok::<(), std::io::Error>(())
        })
        .await;
    ready.store(false, Ordering::Relaxed);
    res.map_err(|e| e.to_string())
}

/// How far back a worker starting up looks for a nightly tick nobody ran.
pub const CATCH_UP_HOURS: i64 = 6;

/// Dependencies of the cron handler.
#[derive(Clone)]
struct CronDeps {
    pool: PgPool,
    worker: String,
    retention_days: u32,
}

async fn nightly_tick(tick: Tick<chrono_tz::Tz>, deps: Data<CronDeps>) -> Result<(), BoxDynError> {
    let ts = i64::try_from(tick.get_timestamp()).unwrap_or(i64::MAX);
    let scheduled_for: DateTime<Utc> = DateTime::from_timestamp(ts, 0).unwrap_or_else(Utc::now);
    let won = run_pass(&deps.pool, scheduled_for, RunTrigger::Cron, &deps.worker).await?;
    // The replica that ran the pass also trims the job history.
    if won.is_some() && deps.retention_days > 0 {
        match queue::prune_finished_jobs(&deps.pool, deps.retention_days, &deps.worker).await {
            Ok(n) => tracing::info!(
                deleted = n,
                retention_days = deps.retention_days,
                "pruned finished jobs"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
    }
    Ok(())
}

/// Run one fan-out pass and log it like the seed's job does ("N users to sync").
pub async fn run_pass(
    pool: &PgPool,
    scheduled_for: DateTime<Utc>,
    trigger: RunTrigger,
    by: &str,
) -> Result<Option<queue::NightlyRun>, calsync_domain::DomainError> {
    match queue::run_nightly_pass(pool, scheduled_for, trigger, by).await {
        Ok(Some(run)) => {
            tracing::info!(
                run_id = run.id,
                scheduled_for = %run.scheduled_for,
                users_to_sync = run.users_due,
                enqueued = run.enqueued,
                already_queued = run.already_queued,
                "nightly calendar sync: {} users to sync",
                run.users_due
            );
            Ok(Some(run))
        }
        Ok(None) => {
            tracing::info!(%scheduled_for, "nightly calendar sync for this tick already enqueued by another replica");
            Ok(None)
        }
        Err(e) => {
            tracing::error!(%scheduled_for, error = %e, "nightly calendar sync pass failed");
            Err(e)
        }
    }
}

/// The most recent tick of `schedule` at or before `now` and no older than `window`.
pub fn last_tick_within(
    schedule: &cron::Schedule,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Option<DateTime<Utc>> {
    let from = (now - window).with_timezone(&tz);
    schedule
        .after(&from)
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= now)
        .last()
}

async fn run_cron(
    pool: PgPool,
    schedule: cron::Schedule,
    tz: chrono_tz::Tz,
    retention_days: u32,
    name: String,
    shutdown: Shutdown,
) -> Result<(), String> {
    // Catch up a tick missed while no worker was running (deploy at 03:29, outage):
    // idempotent, because each tick's run row is unique.
    if let Some(missed) = last_tick_within(
        &schedule,
        tz,
        Utc::now(),
        chrono::Duration::hours(CATCH_UP_HOURS),
    ) {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM calsync.nightly_runs WHERE scheduled_for = $1)",
        )
        .bind(missed)
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
        if !exists {
            tracing::warn!(%missed, "catching up a nightly tick that no worker ran");
            run_pass(&pool, missed, RunTrigger::Cron, &name)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let backend = CronScheduler::new(schedule).with_timezone(tz);
    let worker = WorkerBuilder::new(name.clone())
        .backend(backend)
        .data(CronDeps {
            pool,
            worker: name,
            retention_days,
        })
        .build(nightly_tick);
    worker
        .run_until(async move {
            shutdown.wait().await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn nightly_schedule_follows_the_configured_time_zone_across_dst() {
        let schedule = parse_schedule("0 30 3 * * *").unwrap();
        let ny = chrono_tz::America::New_York;
        let winter = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        let next = schedule
            .after(&winter.with_timezone(&ny))
            .next()
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 11, 8, 30, 0).unwrap());
        let summer = Utc.with_ymd_and_hms(2026, 7, 10, 12, 0, 0).unwrap();
        let next = schedule
            .after(&summer.with_timezone(&ny))
            .next()
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 7, 11, 7, 30, 0).unwrap());
    }

    #[test]
    fn bad_schedules_are_rejected_with_a_clear_error() {
        let err = parse_schedule("30 3 * * *").unwrap_err().to_string();
        assert!(err.contains("seconds first"), "{err}");
    }

    #[test]
    fn missed_tick_is_found_only_inside_the_window() {
        let schedule = parse_schedule("0 30 3 * * *").unwrap();
        let ny = chrono_tz::America::New_York;
        let at = |h, m| Utc.with_ymd_and_hms(2026, 1, 11, h, m, 0).unwrap();
        // 03:30 New York = 08:30 UTC. At 10:00 UTC the tick is 1.5 h old.
        assert_eq!(
            last_tick_within(&schedule, ny, at(10, 0), chrono::Duration::hours(6)),
            Some(at(8, 30))
        );
        assert_eq!(
            last_tick_within(&schedule, ny, at(10, 0), chrono::Duration::hours(1)),
            None
        );
        assert_eq!(
            last_tick_within(&schedule, ny, at(8, 29), chrono::Duration::hours(6)),
            None
        );
    }
}
