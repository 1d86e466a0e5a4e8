//! Google's quota turned into buckets: the window, pace, burst and lease of the
//! project's bucket and of each student's (the one place that does this).

use std::time::Duration;

use calsync_domain::quota::BucketLimits;

/// Google's quota as configured: requests per `window` for the whole project and for
/// each user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaLimits {
    pub project: u32,
    pub per_user: u32,
    pub window: Duration,
}

impl QuotaLimits {
    /// Google's defaults: 10,000 requests per minute per project, 600 per user.
    pub const GOOGLE: QuotaLimits = QuotaLimits {
        project: 10_000,
        per_user: 600,
        window: Duration::from_secs(60),
    };

    /// The project's sustained rate in requests per second (what a long nightly uses).
    pub fn project_rate(&self) -> f64 {
        QuotaPolicy::new(self).project.limits.rate
    }
}

/// Longest time from taking a permit to the request reaching Google (building the
/// request, a pooled connection, the network): counted into the window, so a permit used
/// late never lets Google see more than the quota.
pub const SEND_MARGIN: Duration = Duration::from_millis(100);

/// How batches are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sizing {
    /// Shared by all calls of the process: enough for the recent pace over one lease.
    Pace,
    /// One student's session, calls one after another: 4, then twice the last batch
    /// while the session keeps calling (few draws for long syncs, little waste for
    /// short), never more than its pace uses within the lease.
    Doubling,
}

/// One kind of bucket: its limits in the database and how this process draws from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct BucketPolicy {
    pub(super) limits: BucketLimits,
    /// How long drawn permits may wait in the stash.
    pub(super) lease: Duration,
    /// The fewest permits worth a draw.
    pub(super) min_batch: u32,
    pub(super) sizing: Sizing,
}

/// How far ahead the database may book a batch when the bucket is short (a caller then
/// waits for its start instead of asking again).
const BOOK_AHEAD: Duration = Duration::from_secs(1);

/// The buckets' parameters derived from [`QuotaLimits`] (the one place that turns
/// Google's numbers into windows, paces and leases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct QuotaPolicy {
    pub(super) project: BucketPolicy,
    pub(super) user: BucketPolicy,
}

impl QuotaPolicy {
    pub(super) fn new(q: &QuotaLimits) -> QuotaPolicy {
        let w = q.window.max(Duration::from_secs(1));
        // The project's permits are shared by every call of the process and drawn for
        // callers that are waiting: a short lease (W/200, 0.3 s at Google's minute).
        let project_lease = (w / 200).clamp(Duration::from_millis(100), Duration::from_millis(500));
        // A student's permits serve one session's calls one after another: a longer
        // lease (W/10) so a sync needs few draws; Google's per-user quota is rarely the
        // limit, so the lower pace (91 %) costs nothing.
        let user_lease = (w / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let bucket = |limit: u32, lease: Duration, burst_of: &dyn Fn(f64) -> f64, sizing| {
            let limit = limit.max(1);
            let window = w + lease + SEND_MARGIN;
            let rate = f64::from(limit) / window.as_secs_f64();
            let burst = (burst_of(rate).ceil() as u32).clamp(1, limit);
            let min_batch = match sizing {
                Sizing::Pace => ((rate * 0.02).ceil() as u32).clamp(1, burst),
                Sizing::Doubling => 1,
            };
            BucketPolicy {
                limits: BucketLimits {
                    limit,
                    window,
                    rate,
                    burst,
                    ahead: BOOK_AHEAD,
                },
                lease,
                min_batch,
                sizing,
            }
        };
        QuotaPolicy {
            // A second's worth at most at once: the pace stays even across replicas.
            project: bucket(q.project, project_lease, &|rate| rate, Sizing::Pace),
            // A student's sync is a short burst of calls: only the window limits it.
            user: bucket(
                q.per_user,
                user_lease,
                &|_| f64::from(q.per_user),
                Sizing::Doubling,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_quota_becomes_a_strict_window_and_an_even_pace() {
        let p = QuotaPolicy::new(&QuotaLimits::GOOGLE);
        // Project: 10,000 per (60 s + 0.3 s lease + 0.1 s margin), ~165.6/s, 99.3 % of
        // 10,000/min; at most a second's worth at once.
        assert_eq!(p.project.limits.limit, 10_000);
        assert_eq!(p.project.lease, Duration::from_millis(300));
        assert_eq!(p.project.limits.window, Duration::from_millis(60_400));
        assert!((p.project.limits.rate - 10_000.0 / 60.4).abs() < 1e-9);
        assert!(p.project.limits.rate / (10_000.0 / 60.0) > 0.99);
        assert_eq!(p.project.limits.burst, 166);
        assert_eq!(p.project.min_batch, 4);
        // Per user: 600 per (60 + 6 + 0.1) s, no pacing within the window.
        assert_eq!(p.user.limits.limit, 600);
        assert_eq!(p.user.lease, Duration::from_secs(6));
        assert_eq!(p.user.limits.burst, 600);
        assert!(p.user.limits.rate < 10.0 && p.user.limits.rate > 9.0);
    }

    #[test]
    fn small_quotas_still_draw_whole_permits() {
        let p = QuotaPolicy::new(&QuotaLimits {
            project: 100,
            per_user: 5,
            window: Duration::from_secs(10),
        });
        assert_eq!(p.project.lease, Duration::from_millis(100));
        assert_eq!(p.project.limits.window, Duration::from_millis(10_200));
        assert!(p.project.limits.rate / 10.0 > 0.98);
        assert_eq!(p.project.limits.burst, 10);
        assert_eq!(p.project.min_batch, 1);
        assert_eq!(p.user.limits.burst, 5);
        assert_eq!(p.user.min_batch, 1);
    }
}
