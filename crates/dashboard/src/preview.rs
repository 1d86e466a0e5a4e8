//! The seam for "Check against Google": the dashboard asks a [`SyncPreview`] what a sync
//! of one student would change, and renders the answer. The dashboard does not talk to
//! Google; the process that serves it injects an implementation (`calsync dashboard`
//! and a worker serving the dashboard inject the sync engine's dry-run). Without one
//! the page says the check is not available.
//!
//! A check costs Google quota (one events.list per 2,500 events, plus a token request
//! when the cached one has expired), so checks are limited per process: a token bucket
//! ([`CheckThrottleConfig`]) and one check per student at a time.

use std::{
    collections::HashSet, future::Future, num::NonZeroU32, pin::Pin, sync::Mutex, time::Duration,
};

use calsync_domain::dry_run::DryRunReport;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};

/// What a sync of one student would do, computed without writing anything.
pub trait SyncPreview: Send + Sync {
    /// The dry-run of `user_id`'s sync.
    fn dry_run(
        &self,
        user_id: i64,
    ) -> Pin<Box<dyn Future<Output = Result<DryRunReport, PreviewError>> + Send + '_>>;
}

/// Why a check gave no report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    #[error("there is no user {0}")]
    UnknownUser(i64),
    /// Anything else (Google refused or failed, database error), in words for the
    /// operator; never contains a secret.
    #[error("{0}")]
    Failed(String),
}

/// Limits on "Check against Google" per dashboard process: `burst` checks at once,
/// then one more every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckThrottleConfig {
    pub burst: u32,
    pub period: Duration,
}

impl Default for CheckThrottleConfig {
    /// 10 at once, then 10 a minute.
    fn default() -> Self {
        CheckThrottleConfig {
            burst: 10,
            period: Duration::from_secs(6),
        }
    }
}

/// Why a check may not start now.
pub(crate) enum Refused {
    /// The bucket is empty: try again after this long.
    Busy(Duration),
    /// A check of this student is running already.
    Running,
}

/// The process' check limits.
pub(crate) struct CheckThrottle {
    bucket: DefaultDirectRateLimiter,
    running: Mutex<HashSet<i64>>,
}

/// Marks a student's check as running until dropped.
pub(crate) struct Running<'a> {
    throttle: &'a CheckThrottle,
    user_id: i64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.throttle.set().remove(&self.user_id);
    }
}

impl CheckThrottle {
    /// `None` when the burst or the period is zero.
    pub fn new(c: CheckThrottleConfig) -> Option<CheckThrottle> {
        let quota = Quota::with_period(c.period)?.allow_burst(NonZeroU32::new(c.burst)?);
        Some(CheckThrottle {
            bucket: RateLimiter::direct(quota),
            running: Mutex::new(HashSet::new()),
        })
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a check of `user_id`, or say why not.
    pub fn start(&self, user_id: i64) -> Result<Running<'_>, Refused> {
        if self.set().contains(&user_id) {
            return Err(Refused::Running);
        }
        if let Err(not_until) = self.bucket.check() {
            return Err(Refused::Busy(
                not_until.wait_time_from(self.bucket.clock().now()),
            ));
        }
        if !self.set().insert(user_id) {
            return Err(Refused::Running);
        }
        Ok(Running {
            throttle: self,
            user_id,
        })
    }
}
