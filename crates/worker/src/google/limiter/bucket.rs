//! One bucket as one process sees it: a stash of permits drawn in batches from the
//! database, one caller drawing at a time for everybody waiting.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use calsync_domain::{DomainError, quota};
use sqlx::PgPool;

use super::policy::{BucketPolicy, Sizing};

/// Permits drawn together, usable from `usable_from` until `use_by`.
#[derive(Debug)]
struct Batch {
    left: u32,
    usable_from: Instant,
    use_by: Instant,
}

/// What the stash has for a caller.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Local {
    /// A permit, to use before this instant.
    Taken(Instant),
    /// `left` permits booked for later; the first usable at `at`.
    Booked {
        at: Instant,
        left: u32,
    },
    Empty,
}

/// The pace of a stash is measured over this long.
const PACE_HORIZON: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Stash {
    batches: VecDeque<Batch>,
    /// When permits were taken, over the last [`PACE_HORIZON`].
    taken: VecDeque<Instant>,
    /// The last draw: when it was sent and what it granted.
    last_draw: Option<(Instant, u32)>,
}

impl Stash {
    /// Permits per second taken lately.
    fn pace(&mut self, now: Instant) -> f64 {
        while self
            .taken
            .front()
            .is_some_and(|t| now.duration_since(*t) >= PACE_HORIZON)
        {
            self.taken.pop_front();
        }
        self.taken.len() as f64 / PACE_HORIZON.as_secs_f64()
    }
}

/// One bucket as this process sees it: a stash of drawn permits and one drawer at a
/// time.
pub(super) struct Bucket {
    key: String,
    kind: &'static str,
    policy: BucketPolicy,
    stash: Mutex<Stash>,
    /// Held by the one caller drawing from the database (or sleeping until the bucket
    /// refills); the others wait for `changed`.
    drawer: tokio::sync::Mutex<()>,
    /// Callers waiting for a permit of this bucket.
    waiting: AtomicUsize,
    /// Wakes every waiting caller (and a sleeping drawer) when permits arrive, are
    /// given back, or the drawer gives up its role.
    changed: tokio::sync::Notify,
}

/// The drawer's role; when it ends (permits drawn, the bucket short, an error, or the
/// caller cancelled) every waiting caller is woken to take a permit or draw next.
struct Drawing<'a> {
    bucket: &'a Bucket,
    guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Drop for Drawing<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.bucket.changed.notify_waiters();
    }
}

/// Decrements a counter when dropped (also when the waiting caller is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bucket {
    pub(super) fn new(key: String, kind: &'static str, policy: BucketPolicy) -> Bucket {
        Bucket {
            key,
            kind,
            policy,
            stash: Mutex::new(Stash::default()),
            drawer: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn stash(&self) -> std::sync::MutexGuard<'_, Stash> {
        self.stash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a permit from the stash if one is usable now; else say what is booked.
    pub(super) fn take_local(&self) -> Local {
        let now = Instant::now();
        let mut s = self.stash();
        let mut expired = 0u32;
        s.batches.retain(|b| {
            let live = b.use_by > now;
            if !live {
                expired += b.left;
            }
            live
        });
        if expired > 0 {
            metrics::counter!("calsync_google_permits_expired_total", "bucket" => self.kind)
                .increment(u64::from(expired));
            metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind)
                .decrement(f64::from(expired));
        }
        let Some(front) = s.batches.front_mut() else {
            return Local::Empty;
        };
        if front.usable_from > now {
            let at = front.usable_from;
            let left = s.batches.iter().map(|b| b.left).sum();
            return Local::Booked { at, left };
        }
        front.left -= 1;
        let use_by = front.use_by;
        if front.left == 0 {
            s.batches.pop_front();
        }
        s.taken.push_back(now);
        s.pace(now);
        metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind).decrement(1.0);
        Local::Taken(use_by)
    }

    /// How many permits to ask for, and the fewest worth taking, when `booked` permits
    /// are already on their way.
    fn batch_size(&self, now: Instant, booked: u32) -> (u32, u32) {
        let p = &self.policy;
        let waiting = u32::try_from(self.waiting.load(Ordering::Relaxed))
            .unwrap_or(u32::MAX)
            .saturating_sub(booked)
            .max(1);
        let mut s = self.stash();
        let for_lease = (s.pace(now) * p.lease.as_secs_f64()).ceil() as u32;
        let recent = s
            .last_draw
            .filter(|(at, _)| now.duration_since(*at) <= p.lease * 4);
        let anticipated = match (p.sizing, recent) {
            (Sizing::Pace, _) => for_lease,
            (Sizing::Doubling, None) => 4,
            // Twice the last batch, but no more than the session's pace uses within a
            // lease.
            (Sizing::Doubling, Some((_, granted))) => {
                granted.saturating_mul(2).min(for_lease.max(1))
            }
        };
        let burst = p.limits.burst;
        let wanted = waiting.max(anticipated).clamp(p.min_batch, burst);
        // Enough for every caller waiting, or nothing: a short bucket is asked again
        // once it holds that many, not for every permit that trickles in (one draw per
        // call when replicas compete).
        let min = match p.sizing {
            Sizing::Pace => waiting.max(p.min_batch).min(wanted),
            Sizing::Doubling => p.min_batch.min(wanted),
        };
        (wanted, min)
    }

    /// Put back an unused permit taken a moment ago (still within its lease), for the
    /// next call to use.
    pub(super) fn give_back(&self, use_by: Instant) {
        if use_by <= Instant::now() {
            metrics::counter!("calsync_google_permits_expired_total", "bucket" => self.kind)
                .increment(1);
            return;
        }
        let mut s = self.stash();
        s.taken.pop_back();
        // It is usable now: ahead of anything booked for later.
        s.batches.push_front(Batch {
            left: 1,
            usable_from: Instant::now(),
            use_by,
        });
        drop(s);
        metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind).increment(1.0);
        self.changed.notify_waiters();
    }

    /// One draw from the database into the stash (for the callers not covered by the
    /// `booked` permits); `Err(retry_after)` when the bucket cannot book even the
    /// minimum soon enough. The caller holds the drawer's role.
    async fn draw(&self, pool: &PgPool, booked: u32) -> Result<Result<(), Duration>, DomainError> {
        let sent = Instant::now();
        let (wanted, min) = self.batch_size(sent, booked);
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
        if grant.granted == 0 {
            metrics::counter!("calsync_google_quota_draws_total", "bucket" => self.kind, "outcome" => "empty")
                .increment(1);
            return Ok(Err(grant.retry_after));
        }
        let outcome = if grant.starts_in.is_zero() {
            "granted"
        } else {
            "booked"
        };
        metrics::counter!("calsync_google_quota_draws_total", "bucket" => self.kind, "outcome" => outcome)
            .increment(1);
        metrics::counter!("calsync_google_permits_granted_total", "bucket" => self.kind)
            .increment(u64::from(grant.granted));
        let received = Instant::now();
        // Usable once the start has passed here too (the answer left the database after
        // the grant), and until the lease ends counted from before the draw was sent
        // (the grant happened after that): never earlier, never later than granted.
        let batch = Batch {
            left: grant.granted,
            usable_from: received + grant.starts_in,
            use_by: sent + grant.starts_in + self.policy.lease,
        };
        if batch.usable_from >= batch.use_by {
            // The answer took longer than the lease: these permits are lost.
            metrics::counter!("calsync_google_permits_expired_total", "bucket" => self.kind)
                .increment(u64::from(grant.granted));
            return Ok(Ok(()));
        }
        metrics::gauge!("calsync_google_permits_leased", "bucket" => self.kind)
            .increment(f64::from(grant.granted));
        let mut s = self.stash();
        s.last_draw = Some((sent, grant.granted));
        s.batches.push_back(batch);
        drop(s);
        self.changed.notify_waiters();
        Ok(Ok(()))
    }

    /// A permit now, from the stash or one draw, without waiting: `Err(wait)` when the
    /// next one is further away.
    pub(super) async fn try_acquire(
        &self,
        pool: &PgPool,
    ) -> Result<Result<Instant, Duration>, DomainError> {
        let until = |at: Instant| at.saturating_duration_since(Instant::now());
        match self.take_local() {
            Local::Taken(use_by) => return Ok(Ok(use_by)),
            Local::Booked { at, .. } => return Ok(Err(until(at))),
            Local::Empty => {}
        }
        let _drawing = Drawing {
            bucket: self,
            guard: Some(self.drawer.lock().await),
        };
        match self.take_local() {
            Local::Taken(use_by) => return Ok(Ok(use_by)),
            Local::Booked { at, .. } => return Ok(Err(until(at))),
            Local::Empty => {}
        }
        if let Err(retry_after) = self.draw(pool, 0).await? {
            return Ok(Err(retry_after));
        }
        Ok(match self.take_local() {
            Local::Taken(use_by) => Ok(use_by),
            Local::Booked { at, .. } => Err(until(at)),
            Local::Empty => Err(Duration::ZERO),
        })
    }

    /// Wait for a permit; returns its use-by time. One caller at a time draws (sized
    /// for everybody waiting and not covered by what is booked) or sleeps until the
    /// bucket can book again; the others wait for a booked batch to start, or to be
    /// woken, and then all take from the stash at once.
    pub(super) async fn acquire(&self, pool: &PgPool) -> Result<Instant, DomainError> {
        if let Local::Taken(use_by) = self.take_local() {
            return Ok(use_by);
        }
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let mut waited = false;
        loop {
            // Registered before looking, so no wake-up is missed in between.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (booked, at) = match self.take_local() {
                Local::Taken(use_by) => {
                    metrics::histogram!("calsync_google_permit_wait_seconds", "bucket" => self.kind)
                        .record(started.elapsed().as_secs_f64());
                    if waited {
                        metrics::counter!("calsync_google_permit_waits_total", "bucket" => self.kind)
                            .increment(1);
                    }
                    return Ok(use_by);
                }
                Local::Booked { at, left } => (left, Some(at)),
                Local::Empty => (0, None),
            };
            let enough_booked = at.is_some()
                && self.waiting.load(Ordering::Relaxed)
                    <= usize::try_from(booked).unwrap_or(usize::MAX);
            let guard = if enough_booked {
                None
            } else {
                self.drawer.try_lock().ok()
            };
            let Some(guard) = guard else {
                // Wait for what is booked to start, or for news from the drawer.
                waited = true;
                match at {
                    Some(at) => tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = changed => {}
                    },
                    None => changed.await,
                }
                continue;
            };
            let _drawing = Drawing {
                bucket: self,
                guard: Some(guard),
            };
            if let Err(retry_after) = self.draw(pool, booked).await? {
                waited = true;
                // Replicas asking the same bucket spread out (up to 10 % later); a
                // permit given back meanwhile ends the nap.
                let jitter = 1.0 + rand::random::<f64>() * 0.1;
                let pause = retry_after
                    .mul_f64(jitter)
                    .clamp(Duration::from_millis(1), self.policy.limits.window);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = changed => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::QuotaLimits;
    use crate::google::limiter::policy::QuotaPolicy;

    #[test]
    fn batches_follow_waiting_callers_and_the_recent_pace() {
        let policy = QuotaPolicy::new(&QuotaLimits::GOOGLE);
        let b = Bucket::new("project".into(), "project", policy.project);
        let now = Instant::now();
        // Nobody waiting, no history: the minimum batch.
        assert_eq!(b.batch_size(now, 0), (4, 4));
        b.waiting.store(30, Ordering::Relaxed);
        assert_eq!(
            b.batch_size(now, 0),
            (30, 30),
            "all waiting callers, or nothing yet"
        );
        b.waiting.store(1000, Ordering::Relaxed);
        assert_eq!(
            b.batch_size(now, 0),
            (166, 166),
            "never more than the burst"
        );
        b.waiting.store(1, Ordering::Relaxed);
        // 500 permits taken in the last second: 500/s × 0.3 s lease = 150.
        b.stash().taken = (0..500).map(|_| now - Duration::from_millis(500)).collect();
        assert_eq!(
            b.batch_size(now, 0),
            (150, 4),
            "more if there are, at least the minimum"
        );
        // Taken longer ago than the pace horizon: no longer counted.
        b.stash().taken = (0..500).map(|_| now - Duration::from_secs(2)).collect();
        assert_eq!(b.batch_size(now, 0).0, 4);

        let u = Bucket::new("user:1".into(), "user", policy.user);
        let draw = |taken_last_second: usize, ago: Duration, granted: u32| {
            let mut s = u.stash();
            s.taken = (0..taken_last_second)
                .map(|_| now - Duration::from_millis(100))
                .collect();
            s.last_draw = Some((now - ago, granted));
        };
        assert_eq!(u.batch_size(now, 0), (4, 1), "a session starts with 4");
        // 4 calls in the last second: twice the batch (the pace would use 24 in a 6 s
        // lease).
        draw(4, Duration::from_secs(1), 4);
        assert_eq!(u.batch_size(now, 0).0, 8);
        // A slow session (its calls queue for the project) gets what it uses in a lease.
        draw(0, Duration::from_secs(6), 4);
        assert_eq!(u.batch_size(now, 0).0, 1);
        draw(400, Duration::from_secs(1), 400);
        assert_eq!(u.batch_size(now, 0).0, 600, "at most the burst");
        draw(40, Duration::from_secs(60), 40);
        assert_eq!(
            u.batch_size(now, 0).0,
            4,
            "a new session starts small again"
        );
    }

    #[test]
    fn permits_are_handed_out_only_within_their_lease() {
        let policy = QuotaPolicy::new(&QuotaLimits::GOOGLE);
        let b = Bucket::new("project".into(), "project", policy.project);
        let now = Instant::now();
        let batch = |left, from_ms: i64, to_ms: u64| Batch {
            left,
            usable_from: if from_ms < 0 {
                now - Duration::from_millis(from_ms.unsigned_abs())
            } else {
                now + Duration::from_millis(from_ms as u64)
            },
            use_by: now + Duration::from_millis(to_ms),
        };
        // Expired, then one usable now, then two booked for later.
        b.stash().batches.push_back(Batch {
            left: 5,
            usable_from: now - Duration::from_secs(2),
            use_by: now - Duration::from_millis(1),
        });
        b.stash().batches.push_back(batch(1, -10, 1000));
        b.stash().batches.push_back(batch(2, 500, 1500));
        assert_eq!(
            b.take_local(),
            Local::Taken(now + Duration::from_millis(1000))
        );
        assert_eq!(
            b.take_local(),
            Local::Booked {
                at: now + Duration::from_millis(500),
                left: 2
            }
        );
        assert_eq!(b.stash().taken.len(), 1);
        // Given back: usable again at once, ahead of what is booked.
        b.give_back(now + Duration::from_millis(1000));
        assert_eq!(
            b.take_local(),
            Local::Taken(now + Duration::from_millis(1000))
        );
        b.stash().batches.clear();
        assert_eq!(b.take_local(), Local::Empty);
    }
}
