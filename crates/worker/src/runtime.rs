//! The worker runtime: the apalis `SyncUserJob` worker, the nightly cron
//! ([`crate::nightly`]), and the HTTP API, supervised (restart with backoff on database
//! errors) and shut down gracefully.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use calsync_domain::queue::SYNC_QUEUE;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    config::{MISSED_HEARTBEATS, WorkerConfig},
    http::{self, ApiState},
    job::{JobDeps, handle_sync_user},
    sync::SyncEngine,
};

/// Errors that stop the worker process.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
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

/// A unique-per-process worker name prefix: `<prefix>-<host>-<pid>-<random>`.
pub fn worker_base_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let rand: u32 = rand::random();
    format!("{prefix}-{host}-{}-{rand:08x}", std::process::id())
}

/// Everything the runtime needs.
pub struct Runtime {
    pub pool: PgPool,
    pub engine: SyncEngine,
    pub config: WorkerConfig,
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
        let Runtime {
            pool,
            engine,
            config,
        } = self;
        let base = worker_base_name(&config.name_prefix);
        let ready = Arc::new(AtomicBool::new(false));

        let listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| RuntimeError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| RuntimeError::Bind {
            addr: config.http_listen,
            source,
        })?;
        let _ = crate::telemetry::prometheus();

        let mut tasks = tokio::task::JoinSet::new();
        let api = ApiState {
            pool: pool.clone(),
            api_token: config.api_token.clone(),
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
        if let Some(dashboard) = &config.dashboard {
            // Fails fast on a dashboard without credentials.
            // "Check against Google" runs this worker's engine (same Google client and
            // quota stash).
            let mut auth = dashboard.auth.clone();
            auth.sync_preview = Some(Arc::new(crate::sync::dry_run::EnginePreview(Arc::new(
                engine.clone(),
            ))));
            let app = calsync_dashboard::router(pool.clone(), auth)
                .map_err(|e| RuntimeError::Dashboard(e.to_string()))?;
            let sd = shutdown.clone();
            let addr = dashboard.listen;
            tasks.spawn(async move {
                if let Err(e) = calsync_dashboard::serve_router(app, addr, sd.wait()).await {
                    tracing::error!(error = %e, "dashboard stopped");
                }
            });
        }

        let cleaner = Arc::new(crate::cleanup::Cleaner::new(
            pool.clone(),
            engine.backend(),
            crate::sweep_as(&config.sync),
        ));
        let deps = Arc::new(JobDeps {
            pool: pool.clone(),
            engine,
        });
        // One of the process' job slots is a fast lane that only takes jobs above the
        // nightly class (see `fast_lane_name`), so "Sync now" never waits for a nightly
        // job to finish; the other slots take any job, most urgent first.
        let fast_lane = config.concurrency >= 2;
        let slots = usize::from(config.concurrency) - usize::from(fast_lane);
        tasks.spawn(supervise("sync-worker", shutdown.clone(), {
            let pool = pool.clone();
            let config = Arc::new(config.clone());
            let base = base.clone();
            let ready = ready.clone();
            let deps = deps.clone();
            move |generation, sd| {
                let pool = pool.clone();
                let config = config.clone();
                let deps = deps.clone();
                let name = format!("{base}-sync-{generation}");
                let ready = ready.clone();
                async move { run_sync_worker(pool, config, deps, name, slots, ready, sd).await }
            }
        }));
        if fast_lane {
            tasks.spawn(supervise("fast-lane-worker", shutdown.clone(), {
                let pool = pool.clone();
                let config = Arc::new(config.clone());
                let base = base.clone();
                move |generation, sd| {
                    let pool = pool.clone();
                    let config = config.clone();
                    let deps = deps.clone();
                    let name = fast_lane_name(&format!("{base}-sync-{generation}"));
                    // Readiness follows the main sync worker.
                    let ready = Arc::new(AtomicBool::new(false));
                    async move { run_sync_worker(pool, config, deps, name, 1, ready, sd).await }
                }
            }));
        }
        if let Some(cron) = &config.cron {
            tasks.spawn(supervise("nightly-cron", shutdown.clone(), {
                let pool = pool.clone();
                let base = base.clone();
                let cron = cron.clone();
                let cleaner = cleaner.clone();
                move |generation, sd| {
                    let name = format!("{base}-cron-{generation}");
                    crate::nightly::run_cron(pool.clone(), cron.clone(), cleaner.clone(), name, sd)
                }
            }));
        }
        tracing::info!(
            worker = %base,
            http = %http_addr,
            concurrency = config.concurrency,
            heartbeat_secs = config.heartbeat.as_secs_f64(),
            db_max_connections = config.database.max_connections,
            schedule = config.cron.as_ref().map(|c| c.schedule.expression.as_str()).unwrap_or("-"),
            schedule_tz = %config.cron.as_ref().map(|c| c.schedule.time_zone).unwrap_or(chrono_tz::UTC),
            cron = config.cron.is_some(),
            "calsync worker started"
        );

        let shutdown_timeout = config.shutdown_timeout;
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

/// The name of a fast-lane worker: the queue trigger refuses to hand such a worker a job
/// at or below the nightly class (`calsync.jobs_fast_lane`, matching the suffix
/// [`calsync_domain::priority::FAST_LANE_SUFFIX`]).
fn fast_lane_name(base: &str) -> String {
    format!("{base}{}", calsync_domain::priority::FAST_LANE_SUFFIX)
}

/// An apalis worker of `SyncUserJob`s running `slots` jobs at once. It fetches one job
/// per free slot (batch size 1): a prefetched batch would make an urgent job enqueued
/// just after the fetch wait for every job of the batch.
async fn run_sync_worker(
    pool: PgPool,
    config: Arc<WorkerConfig>,
    deps: Arc<JobDeps>,
    name: String,
    slots: usize,
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
) -> Result<(), String> {
    // Record this worker's own heartbeat interval before apalis registers it, so no
    // replica with a shorter interval presumes it dead while it is alive.
    calsync_domain::workers::record_liveness(&pool, &name, config.heartbeat, MISSED_HEARTBEATS)
        .await
        .map_err(|e| format!("recording worker liveness: {e}"))?;
    let apalis_config = Config::default()
        .queue(SYNC_QUEUE)
        .batch_size(1)
        .heartbeat_interval(config.heartbeat)
        .missed_heartbeats(MISSED_HEARTBEATS as usize);
    let backend = crate::job::raw_payloads(
        PostgresStorage::<Vec<u8>>::new(&pool)
            .with_config(apalis_config)
            .with_pubsub()
            .poll_with_interval(config.poll_interval),
    );
    let worker = WorkerBuilder::new(name.clone())
        .backend(backend)
        .concurrency(slots)
        .timeout(config.job_timeout)
        .data(deps)
        .build(handle_sync_user);
    ready.store(true, Ordering::Relaxed);
    tracing::info!(worker = %name, slots, "sync worker running");
    let res = worker
        .run_until(async move {
            shutdown.wait().await;
            Ok::<(), std::io::Error>(())
        })
        .await;
    ready.store(false, Ordering::Relaxed);
    res.map_err(|e| e.to_string())
}
