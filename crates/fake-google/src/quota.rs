//! Calendar API usage quotas: per-project and per-user request limits over a sliding window.
//!
//! Followed: Google Calendar API "Usage limits" / "Manage quotas" (2026): two quotas are
//! enforced, "per minute per project" (10,000 requests) and "per minute per user per
//! project" (600 requests), "calculated per minute using a sliding window"; "If either quota
//! is exceeded, you are rate limited and receive a 403 usageLimits status code or a 429
//! usageLimits status code". And "Handle API errors": 403 `userRateLimitExceeded` ("User Rate
//! Limit Exceeded"), 403 `rateLimitExceeded` ("Rate Limit Exceeded"), 429 `rateLimitExceeded`,
//! all in the `usageLimits` domain. The user is the authenticated principal, or the
//! `quotaUser` system parameter when given (Google's standard parameter for attributing
//! server-side requests to end users).
//!
//! How the fake counts: every authenticated Calendar API call (whatever its outcome) is
//! admitted into the window at the moment it arrives, unless admitting it would exceed a
//! limit — then it is refused and not counted. So the admitted calls never exceed a limit in
//! any window of the configured length. The token endpoint is not counted. Quotas are OFF by
//! default.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::state::Call;

/// Quota settings (`PUT /_fake/quota` takes the same JSON; absent fields take the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaConfig {
    /// Requests allowed per window for the whole project (`None`: unlimited).
    pub per_project: Option<u32>,
    /// Requests allowed per window per user (`None`: unlimited).
    pub per_user: Option<u32>,
    /// Length of the sliding window in milliseconds (Google: one minute).
    pub window_ms: u64,
    /// Status of the rate-limit answer: 403 (default) or 429; both are what Google documents.
    pub status: u16,
}

impl Default for QuotaConfig {
    /// No limits (the fake's default).
    fn default() -> Self {
        Self {
            per_project: None,
            per_user: None,
            window_ms: 60_000,
            status: 403,
        }
    }
}

impl QuotaConfig {
    /// Google's documented defaults: 10,000 requests/min per project, 600/min per user.
    pub fn google() -> Self {
        Self {
            per_project: Some(10_000),
            per_user: Some(600),
            ..Self::default()
        }
    }

    /// `per_project` requests per `window`, no per-user limit.
    pub fn per_project(limit: u32, window: Duration) -> Self {
        Self {
            per_project: Some(limit),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            ..Self::default()
        }
    }

    /// Adds a per-user limit.
    pub fn with_per_user(mut self, limit: u32) -> Self {
        self.per_user = Some(limit);
        self
    }

    /// Answers 429 instead of 403 when a limit is hit.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// Whether any limit is set.
    pub fn is_enabled(&self) -> bool {
        self.per_project.is_some() || self.per_user.is_some()
    }

    /// Rejects nonsense settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_ms == 0 {
            return Err("window_ms must be positive".into());
        }
        if !matches!(self.status, 403 | 429) {
            return Err(format!("status must be 403 or 429, got {}", self.status));
        }
        if self.per_project == Some(0) || self.per_user == Some(0) {
            return Err("limits must be positive (omit a limit to disable it)".into());
        }
        Ok(())
    }
}

/// The sliding windows.
#[derive(Debug, Default)]
pub(crate) struct Quota {
    pub config: QuotaConfig,
    project: VecDeque<Instant>,
    users: HashMap<String, VecDeque<Instant>>,
    /// Admissions since idle users' windows were last dropped.
    since_sweep: usize,
}

/// Drop the windows of idle users every this many admissions (keeps `admit` O(1) amortised).
const SWEEP_EVERY: usize = 4096;

fn prune(window: &mut VecDeque<Instant>, since: Option<Instant>) {
    while window
        .front()
        .is_some_and(|t| since.is_none_or(|s| *t <= s))
    {
        window.pop_front();
    }
}

impl Quota {
    /// Replaces the settings and forgets the counted requests.
    pub fn set(&mut self, config: QuotaConfig) {
        *self = Quota {
            config,
            ..Quota::default()
        };
    }

    /// Counts one request of `user` arriving at `now`, or refuses it like Google.
    pub fn admit(&mut self, user: &str, now: Instant) -> Result<(), ApiError> {
        if !self.config.is_enabled() {
            return Ok(());
        }
        let since = now.checked_sub(self.config.window());
        let status = self.config.status;
        prune(&mut self.project, since);
        if let Some(limit) = self.config.per_project
            && self.project.len() >= limit as usize
        {
            return Err(ApiError::new(
                status,
                "rateLimitExceeded",
                "Rate Limit Exceeded",
            ));
        }
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.users.retain(|_, w| {
                prune(w, since);
                !w.is_empty()
            });
        }
        let user_window = self.users.entry(user.to_string()).or_default();
        prune(user_window, since);
        if let Some(limit) = self.config.per_user
            && user_window.len() >= limit as usize
        {
            return Err(ApiError::new(
                status,
                "userRateLimitExceeded",
                "User Rate Limit Exceeded",
            ));
        }
        user_window.push_back(now);
        self.project.push_back(now);
        Ok(())
    }
}

/// The largest number of `calls` that arrived within any window of length `window`
/// (half-open: a call exactly `window` after another is in the next window).
pub(crate) fn max_in_window<'a>(calls: impl Iterator<Item = &'a Call>, window: Duration) -> usize {
    let mut times: Vec<_> = calls.map(|c| c.at).collect();
    times.sort();
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let mut best = 0;
    let mut end = 0;
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] - *t < window {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn sliding_window_limits() {
        let mut q = Quota::default();
        let t0 = Instant::now();
        assert!(q.admit("a", t0).is_ok(), "off by default");
        q.set(QuotaConfig::per_project(3, Duration::from_secs(10)).with_per_user(2));
        assert!(q.admit("a", t0).is_ok());
        assert!(q.admit("a", t0).is_ok());
        let user = q.admit("a", t0).map_err(|e| (e.status, e.reason, e.domain));
        assert_eq!(
            user,
            Err((403, "userRateLimitExceeded".into(), "usageLimits".into()))
        );
        assert!(q.admit("b", t0).is_ok());
        let project = q.admit("c", t0).map_err(|e| e.reason);
        assert_eq!(project, Err("rateLimitExceeded".into()));
        // Refused requests are not counted: once the window slides, all is well again.
        let later = t0 + Duration::from_secs(10);
        assert!(q.admit("a", later).is_ok());
        assert!(q.admit("a", later).is_ok());
        q.set(QuotaConfig::per_project(1, Duration::from_secs(1)).with_status(429));
        assert!(q.admit("a", t0).is_ok());
        assert_eq!(q.admit("b", t0).map_err(|e| e.status), Err(429));
        assert!(QuotaConfig::google().validate().is_ok());
        assert!(QuotaConfig::google().with_status(500).validate().is_err());
    }

    #[test]
    fn max_window() {
        let call = |ms: i64| Call {
            method: "events.get".into(),
            calendar_id: None,
            event_id: None,
            status: 200,
            at: Utc
                .timestamp_millis_opt(1_000_000 + ms)
                .single()
                .unwrap_or_default(),
            principal: None,
        };
        let calls: Vec<Call> = [0, 100, 900, 1000, 1500, 1999, 3000]
            .into_iter()
            .map(call)
            .collect();
        assert_eq!(max_in_window(calls.iter(), Duration::from_secs(1)), 3);
        assert_eq!(max_in_window(calls.iter(), Duration::from_secs(10)), 7);
        assert_eq!(max_in_window([].iter(), Duration::from_secs(1)), 0);
    }
}
