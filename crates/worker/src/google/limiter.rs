//! The cluster-wide Google quota, as one process sees it.
//!
//! Google counts Calendar API requests per project and per user over a sliding window
//! (10,000 and 600 per minute by default). Every replica draws permits for its calls
//! from buckets in Postgres (`calsync_domain::quota`): one `project` bucket and one
//! bucket per student, keyed by the student's user id (the identity Google counts per
//! user: the student's own OAuth grant, or the `quotaUser` a service account sends for
//! them). A process draws permits in batches and keeps them in a local stash for at
//! most a short *lease*; a call takes one permit from the student's stash and one from
//! the project's, then goes out at once.
//!
//! Why the bound is strict: a permit granted at time `g` reaches Google before
//! `g + lease + SEND_MARGIN` (the stash drops permits older than the lease, measured
//! from before the draw was sent), so the requests Google counts in any window of its
//! length `W` come from grants within one window of `W + lease + SEND_MARGIN`, and the
//! database never grants more than the quota within such a window. A replica that dies
//! holding permits leaves them unused; they still count, so nobody exceeds the quota.
//!
//! Why it uses the quota: the sustained rate is `quota / (W + lease + SEND_MARGIN)`
//! (99 % of Google's per-minute quota for the project bucket), an idle replica draws
//! nothing (the replicas with work get all permits), and permits are drawn for callers
//! that are waiting or about to call, so few expire unused.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use calsync_domain::{
    DomainError,
    quota::{self, BucketLimits},
};
use sqlx::PgPool;

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

    /// One student's sustained rate in requests per second.
    pub fn user_rate(&self) -> f64 {
        QuotaPolicy::new(self).user.limits.rate
    }
}

/// Longest time from taking a permit to the request reaching Google (building the
/// request, a pooled connection, the network): counted into the window, so a permit used
/// late never lets Google see more than the quota.
pub const SEND_MARGIN: Duration = Duration::from_millis(150);

/// How batches are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sizing {
    /// Shared by all calls of the process: enough for the recent pace over one lease.
    Pace,
    /// One student's session, calls one after another: 4, then twice the last batch
    /// while the session keeps calling (few draws for long syncs, little waste for short).
    Doubling,
}

/// One kind of bucket: its limits in the database and how this process draws from it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BucketPolicy {
    limits: BucketLimits,
    /// How long drawn permits may wait in the stash.
    lease: Duration,
    /// The fewest permits worth a draw when the bucket is short.
    min_batch: u32,
    sizing: Sizing,
}

/// The buckets' parameters derived from [`QuotaLimits`] (the one place that turns
/// Google's numbers into windows, paces and leases).
#[derive(Debug, Clone, Copy, PartialEq)]
struct QuotaPolicy {
    project: BucketPolicy,
    user: BucketPolicy,
}

impl QuotaPolicy {
    fn new(q: &QuotaLimits) -> QuotaPolicy {
        let w = q.window.max(Duration::from_secs(1));
        // The project's permits are shared by every call of the process and drawn for
        // callers that are waiting: a short lease (W/200, 0.3 s at Google's minute).
        let project_lease = (w / 200).clamp(Duration::from_millis(50), Duration::from_millis(500));
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
                },
                lease,
                min_batch,
                sizing,
            }
        };
        QuotaPolicy {
            // A second's worth at most at once: the pace stays even across replicas.
            project: bucket(q.project, project_lease, &|rate| rate, Sizing::Pace),
            // A tenth of the window's quota at once: a whole typical sync in one draw.
            user: bucket(
                q.per_user,
                user_lease,
                &|_| f64::from(q.per_user) / 10.0,
                Sizing::Doubling,
            ),
        }
    }
}

/// Permits drawn together, usable until `use_by`.
#[derive(Debug)]
struct Batch {
    left: u32,
    use_by: Instant,
}

#[derive(Debug, Default)]
struct Stash {
    batches: VecDeque<Batch>,
    /// Permits taken from this stash so far.
    used: u64,
    /// The last draw: when it was sent, `used` then, and what it granted.
    last_draw: Option<(Instant, u64, u32)>,
    /// Recent permits per second taken from this stash.
    pace: f64,
}

/// One bucket as this process sees it: a stash of drawn permits and one drawer at a
/// time.
struct Bucket {
    key: String,
    kind: &'static str,
    policy: BucketPolicy,
    stash: Mutex<Stash>,
    /// Held by the caller drawing from the database (callers queue behind it and then
    /// find the permits it drew).
    drawer: tokio::sync::Mutex<()>,
    /// Callers waiting for a permit of this bucket.
    waiting: AtomicUsize,
}

/// Decrements a counter when dropped (also when the waiting caller is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bucket {
    fn new(key: String, kind: &'static str, policy: BucketPolicy) -> Bucket {
        Bucket {
            key,
            kind,
            policy,
            stash: Mutex::new(Stash::default()),
            drawer: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
        }
    }

    fn stash(&self) -> std::sync::MutexGuard<'_, Stash> {
        self.stash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a permit from the stash, if one is still within its lease; returns its
    /// use-by time.
    fn take_local(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut s = self.stash();
        let mut expired = 0u32;
        while s.batches.front().is_some_and(|b| b.use_by <= now) {
            expired += s.batches.pop_front().map_or(0, |b| b.left);
        }
        if expired > 0 {
            metrics::counter!("calsync_google_permits_expired_total", "bucket" => self.kind)
                .increment(u64::from(expired));
            metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind)
                .decrement(f64::from(expired));
        }
        let front = s.batches.front_mut()?;
        front.left -= 1;
        let use_by = front.use_by;
        if front.left == 0 {
            s.batches.pop_front();
        }
        s.used += 1;
        metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind).decrement(1.0);
        Some(use_by)
    }

    /// How many permits to ask for (at least the minimum returned second).
    fn batch_size(&self, now: Instant) -> (u32, u32) {
        let p = &self.policy;
        let waiting = u32::try_from(self.waiting.load(Ordering::Relaxed))
            .unwrap_or(u32::MAX)
            .max(1);
        let mut s = self.stash();
        let recent = s
            .last_draw
            .filter(|(at, _, _)| now.duration_since(*at) <= p.lease * 4);
        let anticipated = match p.sizing {
            Sizing::Pace => {
                if let Some((at, used_then, _)) = recent {
                    let dt = now.duration_since(at).as_secs_f64().max(0.001);
                    let sample = (s.used - used_then) as f64 / dt;
                    s.pace = 0.5 * s.pace + 0.5 * sample;
                } else {
                    s.pace = 0.0;
                }
                (s.pace * p.lease.as_secs_f64()).ceil() as u32
            }
            Sizing::Doubling => match recent {
                Some((_, _, granted)) => granted.saturating_mul(2),
                None => 4,
            },
        };
        let burst = p.limits.burst;
        let wanted = waiting.max(anticipated).clamp(p.min_batch, burst);
        (wanted, p.min_batch.min(wanted))
    }

    /// Wait for a permit; returns its use-by time.
    async fn acquire(&self, pool: &PgPool) -> Result<Instant, DomainError> {
        if let Some(use_by) = self.take_local() {
            return Ok(use_by);
        }
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let _drawer = self.drawer.lock().await;
        let mut waited = false;
        loop {
            if let Some(use_by) = self.take_local() {
                metrics::histogram!("calsync_google_permit_wait_seconds", "bucket" => self.kind)
                    .record(started.elapsed().as_secs_f64());
                if waited {
                    metrics::counter!("calsync_google_permit_waits_total", "bucket" => self.kind)
                        .increment(1);
                }
                return Ok(use_by);
            }
            let sent = Instant::now();
            let (wanted, min) = self.batch_size(sent);
            let grant = match quota::take_permits(pool, &self.key, wanted, min, &self.policy.limits)
                .await
            {
                Ok(g) => g,
                Err(e) => {
                    metrics::counter!("calsync_google_quota_draws_total", "bucket" => self.kind, "outcome" => "error")
                        .increment(1);
                    return Err(e);
                }
            };
            if grant.granted > 0 {
                metrics::counter!("calsync_google_quota_draws_total", "bucket" => self.kind, "outcome" => "granted")
                    .increment(1);
                metrics::counter!("calsync_google_permits_granted_total", "bucket" => self.kind)
                    .increment(u64::from(grant.granted));
                metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind)
                    .increment(f64::from(grant.granted));
                let mut s = self.stash();
                let used = s.used;
                s.last_draw = Some((sent, used, grant.granted));
                s.batches.push_back(Batch {
                    left: grant.granted,
                    use_by: sent + self.policy.lease,
                });
                continue;
            }
            metrics::counter!("calsync_google_quota_draws_total", "bucket" => self.kind, "outcome" => "empty")
                .increment(1);
            waited = true;
            // Replicas polling the same bucket spread out (up to 10 % later).
            let jitter = 1.0 + rand::random::<f64>() * 0.1;
            let pause = grant
                .retry_after
                .mul_f64(jitter)
                .clamp(Duration::from_millis(1), self.policy.limits.window);
            tokio::time::sleep(pause).await;
        }
    }
}

/// A process' access to the cluster-wide quota: the project's bucket and one per
/// student (forgotten in bulk past 10,000 students: a forgotten stash only leaves its
/// permits unused).
pub(crate) struct Quota {
    pool: PgPool,
    policy: QuotaPolicy,
    project: Bucket,
    users: Mutex<HashMap<i64, Arc<Bucket>>>,
}

impl Quota {
    pub(crate) fn new(pool: PgPool, limits: &QuotaLimits) -> Quota {
        let policy = QuotaPolicy::new(limits);
        for (kind, p) in [("project", &policy.project), ("user", &policy.user)] {
            metrics::gauge!("calsync_google_quota_rate", "bucket" => kind).set(p.limits.rate);
        }
        Quota {
            pool,
            project: Bucket::new(quota::PROJECT_BUCKET.to_string(), "project", policy.project),
            policy,
            users: Mutex::new(HashMap::new()),
        }
    }

    fn user(&self, user_id: i64) -> Arc<Bucket> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() > 10_000 {
            users.clear();
        }
        users
            .entry(user_id)
            .or_insert_with(|| {
                Arc::new(Bucket::new(
                    quota::user_bucket(user_id),
                    "user",
                    self.policy.user,
                ))
            })
            .clone()
    }

    /// Wait until a call for `user_id` may go out: a permit of the student's and one of
    /// the project's, both within their lease. Fails only when the database does.
    pub(crate) async fn acquire(&self, user_id: i64) -> Result<(), DomainError> {
        let user = self.user(user_id);
        let mut project: Option<Instant> = None;
        loop {
            let user_use_by = user.acquire(&self.pool).await?;
            match project {
                Some(use_by) if use_by > Instant::now() => {}
                Some(_) => {
                    // The project's permit outlived its lease while the call waited for
                    // another student permit (below): it stays unused.
                    metrics::counter!("calsync_google_permits_expired_total", "bucket" => "project")
                        .increment(1);
                    project = Some(self.project.acquire(&self.pool).await?);
                }
                None => project = Some(self.project.acquire(&self.pool).await?),
            }
            if Instant::now() < user_use_by {
                return Ok(());
            }
            // The student's permit outlived its lease while the call waited for the
            // project: it stays unused (and counted); take another.
            metrics::counter!("calsync_google_permits_expired_total", "bucket" => "user")
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_quota_becomes_a_strict_window_and_an_even_pace() {
        let p = QuotaPolicy::new(&QuotaLimits::GOOGLE);
        // Project: 10,000 per (60 s + 0.3 s lease + 0.15 s margin), ~165/s, 99.3 % of
        // 10,000/min; at most a second's worth at once.
        assert_eq!(p.project.limits.limit, 10_000);
        assert_eq!(p.project.lease, Duration::from_millis(300));
        assert_eq!(p.project.limits.window, Duration::from_millis(60_450));
        assert!((p.project.limits.rate - 10_000.0 / 60.45).abs() < 1e-9);
        assert!(p.project.limits.rate / (10_000.0 / 60.0) > 0.99);
        assert_eq!(p.project.limits.burst, 166);
        assert_eq!(p.project.min_batch, 4);
        // Per user: 600 per (60 + 6 + 0.15) s, 60 at once.
        assert_eq!(p.user.limits.limit, 600);
        assert_eq!(p.user.lease, Duration::from_secs(6));
        assert_eq!(p.user.limits.burst, 60);
        assert!(p.user.limits.rate < 10.0 && p.user.limits.rate > 9.0);
    }

    #[test]
    fn small_quotas_still_draw_whole_permits() {
        let p = QuotaPolicy::new(&QuotaLimits {
            project: 100,
            per_user: 5,
            window: Duration::from_secs(10),
        });
        assert_eq!(p.project.lease, Duration::from_millis(50));
        assert_eq!(p.project.limits.window, Duration::from_millis(10_200));
        assert!(p.project.limits.rate / 10.0 > 0.98);
        assert_eq!(p.project.limits.burst, 10);
        assert_eq!(p.project.min_batch, 1);
        assert_eq!(p.user.limits.burst, 1);
        assert_eq!(p.user.min_batch, 1);
    }

    #[test]
    fn batches_follow_waiting_callers_and_the_recent_pace() {
        let policy = QuotaPolicy::new(&QuotaLimits::GOOGLE);
        let b = Bucket::new("project".into(), "project", policy.project);
        let now = Instant::now();
        // Nobody waiting, no history: the minimum batch.
        assert_eq!(b.batch_size(now), (4, 4));
        b.waiting.store(30, Ordering::Relaxed);
        assert_eq!(b.batch_size(now), (30, 4));
        b.waiting.store(1000, Ordering::Relaxed);
        assert_eq!(b.batch_size(now), (166, 4), "never more than the burst");
        b.waiting.store(1, Ordering::Relaxed);
        // 100 permits used in the 0.1 s since the last draw: ~1000/s, pace halves in
        // → 500/s × 0.3 s lease = 150.
        {
            let mut s = b.stash();
            s.used = 100;
            s.last_draw = Some((now - Duration::from_millis(100), 0, 100));
        }
        assert_eq!(b.batch_size(now).0, 150);

        let u = Bucket::new("user:1".into(), "user", policy.user);
        assert_eq!(u.batch_size(now), (4, 1), "a session starts with 4");
        u.stash().last_draw = Some((now, 0, 4));
        assert_eq!(u.batch_size(now).0, 8);
        u.stash().last_draw = Some((now, 0, 40));
        assert_eq!(u.batch_size(now).0, 60, "at most the burst");
        u.stash().last_draw = Some((now - Duration::from_secs(60), 0, 40));
        assert_eq!(u.batch_size(now).0, 4, "a new session starts small again");
    }

    #[test]
    fn permits_past_their_lease_are_never_handed_out() {
        let policy = QuotaPolicy::new(&QuotaLimits::GOOGLE);
        let b = Bucket::new("project".into(), "project", policy.project);
        let now = Instant::now();
        b.stash().batches.push_back(Batch {
            left: 5,
            use_by: now - Duration::from_millis(1),
        });
        b.stash().batches.push_back(Batch {
            left: 1,
            use_by: now + Duration::from_secs(1),
        });
        assert_eq!(b.take_local(), Some(now + Duration::from_secs(1)));
        assert_eq!(b.take_local(), None);
        assert_eq!(b.stash().used, 1);
    }
}
