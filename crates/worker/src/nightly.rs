//! The nightly cron: every replica's apalis-cron fires every tick and hands it to a tick
//! keeper, which runs the tick's fan-out pass. A tick's pass runs exactly once however
//! many replicas try (`calsync.nightly_runs.scheduled_for` is unique), and a tick is
//! never dropped because the database was unreachable at its time: the keeper retries
//! it with backoff until it succeeds or its catch-up window ends, and a keeper starting
//! up (a new replica, a restarted cron) also tries the last tick within the window.

use std::collections::BTreeSet;
use std::time::Duration;

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use calsync_domain::queue::{self, RunTrigger};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::{config::CronConfig, runtime::Shutdown};

/// First wait before retrying a failed pass; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two tries of a failed pass.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// At most this many ticks wait for the database at once (a schedule firing every few
/// seconds during a long outage); older ones are dropped with an error.
const MAX_PENDING: usize = 32;

/// Run one fan-out pass and log it like the seed's job does ("N users to sync").
/// Errors are returned, not logged: the caller decides what they mean.
pub async fn run_pass(
    pool: &PgPool,
    scheduled_for: DateTime<Utc>,
    trigger: RunTrigger,
    by: &str,
) -> Result<Option<queue::NightlyRun>, calsync_domain::DomainError> {
    let run = queue::run_nightly_pass(pool, scheduled_for, trigger, by).await?;
    match &run {
        Some(run) => tracing::info!(
            run_id = run.id,
            scheduled_for = %run.scheduled_for,
            users_to_sync = run.users_due,
            enqueued = run.enqueued,
            already_queued = run.already_queued,
            "nightly calendar sync: {} users to sync",
            run.users_due
        ),
        None => tracing::info!(
            %scheduled_for,
            "nightly calendar sync for this tick already enqueued by another replica"
        ),
    }
    Ok(run)
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

/// What the apalis-cron handler needs: where to hand the tick.
#[derive(Clone)]
struct CronDeps {
    ticks: mpsc::Sender<DateTime<Utc>>,
}

async fn on_tick(tick: Tick<chrono_tz::Tz>, deps: Data<CronDeps>) -> Result<(), BoxDynError> {
    let ts = i64::try_from(tick.get_timestamp()).unwrap_or(i64::MAX);
    let scheduled_for = DateTime::from_timestamp(ts, 0).unwrap_or_else(Utc::now);
    if deps.ticks.try_send(scheduled_for).is_err() {
        tracing::error!(%scheduled_for, "nightly tick keeper is not keeping up; tick dropped");
    }
    Ok(())
}

/// Run the cron and its tick keeper until `shutdown`.
pub(crate) async fn run_cron(
    pool: PgPool,
    config: CronConfig,
    cleaner: std::sync::Arc<crate::cleanup::Cleaner>,
    name: String,
    shutdown: Shutdown,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(MAX_PENDING);
    let keeper = TickKeeper {
        pool,
        config: config.clone(),
        cleaner,
        name: name.clone(),
    };
    let keeper = tokio::spawn(keeper.run(rx, shutdown.clone()));
    let backend = CronScheduler::new(config.schedule.schedule.clone())
        .with_timezone(config.schedule.time_zone);
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(CronDeps { ticks: tx })
        .build(on_tick);
    let res = worker
        .run_until(async move {
            shutdown.wait().await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| e.to_string());
    keeper.abort();
    res
}

/// Runs each tick's pass until it succeeds or its catch-up window ends.
struct TickKeeper {
    pool: PgPool,
    config: CronConfig,
    /// Orphan cleanup, run by the replica that ran the pass.
    cleaner: std::sync::Arc<crate::cleanup::Cleaner>,
    name: String,
}

impl TickKeeper {
    fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.catch_up_window)
            .unwrap_or_else(|_| chrono::Duration::hours(6))
    }

    async fn run(self, mut ticks: mpsc::Receiver<DateTime<Utc>>, shutdown: Shutdown) {
        let mut pending = BTreeSet::new();
        // A tick missed while no cron of ours ran (deploy at 03:29, outage, restart):
        // harmless when another replica ran it, the pass then finds its run row.
        let schedule = &self.config.schedule;
        if let Some(missed) = last_tick_within(
            &schedule.schedule,
            schedule.time_zone,
            Utc::now(),
            self.window(),
        ) {
            pending.insert(missed);
        }
        let mut delay = RETRY_MIN;
        loop {
            while let Ok(t) = ticks.try_recv() {
                pending.insert(t);
            }
            self.forget_expired(&mut pending);
            let Some(&tick) = pending.first() else {
                tokio::select! {
                    t = ticks.recv() => match t {
                        Some(t) => { pending.insert(t); continue; }
                        None => return,
                    },
                    _ = shutdown.clone().wait() => return,
                }
            };
            let attempt = tokio::select! {
                res = run_pass(&self.pool, tick, RunTrigger::Cron, &self.name) => res,
                _ = shutdown.clone().wait() => return,
            };
            match attempt {
                Ok(run) => {
                    pending.remove(&tick);
                    delay = RETRY_MIN;
                    let late = Utc::now() - tick;
                    if run.is_some() && late > chrono::Duration::seconds(60) {
                        tracing::warn!(
                            %tick,
                            late_secs = late.num_seconds(),
                            "caught up a nightly tick that could not run at its time"
                        );
                    }
                    if run.is_some() {
                        self.prune().await;
                        self.cleanup().await;
                    }
                }
                Err(e) => {
                    tracing::error!(
                        scheduled_for = %tick,
                        error = %e,
                        retry_in_secs = delay.as_secs(),
                        "nightly calendar sync pass failed; retrying until it succeeds or its catch-up window ends"
                    );
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            t = ticks.recv() => match t {
                                Some(t) => { pending.insert(t); }
                                None => return,
                            },
                            _ = shutdown.clone().wait() => return,
                        }
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn forget_expired(&self, pending: &mut BTreeSet<DateTime<Utc>>) {
        let now = Utc::now();
        let window = self.window();
        pending.retain(|tick| {
            let keep = *tick + window > now;
            if !keep {
                tracing::error!(
                    scheduled_for = %tick,
                    "nightly tick could not run within its catch-up window; giving up (the next tick syncs everyone due)"
                );
            }
            keep
        });
        while pending.len() > MAX_PENDING {
            if let Some(oldest) = pending.pop_first() {
                tracing::error!(scheduled_for = %oldest, "too many nightly ticks waiting for the database; dropping the oldest");
            }
        }
    }

    /// The replica that ran a pass also cleans up calendars no user uses any more.
    async fn cleanup(&self) {
        match self.cleaner.run(&self.name).await {
            Ok(r) => tracing::info!(
                calendars_deleted = r.calendars_deleted.len(),
                events_deleted = r.events_deleted.len(),
                skipped = r.skipped,
                deferred = r.deferred,
                "calendar cleanup pass"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "calendar cleanup pass failed; the next pass tries again")
            }
        }
    }

    /// The replica that ran a pass also trims the job history.
    async fn prune(&self) {
        let days = self.config.retention_days;
        if days == 0 {
            return;
        }
        match queue::prune_finished_jobs(&self.pool, days, &self.name).await {
            Ok(n) => tracing::info!(deleted = n, retention_days = days, "pruned finished jobs"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NightlySchedule;
    use chrono::TimeZone;

    fn schedule(expr: &str) -> cron::Schedule {
        NightlySchedule::parse(expr, chrono_tz::UTC)
            .unwrap()
            .schedule
    }

    #[test]
    fn nightly_schedule_follows_the_configured_time_zone_across_dst() {
        let schedule = schedule("0 30 3 * * *");
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
    fn missed_tick_is_found_only_inside_the_window() {
        let schedule = schedule("0 30 3 * * *");
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
