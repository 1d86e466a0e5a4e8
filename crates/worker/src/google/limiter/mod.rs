//! The cluster-wide Google quota, as one process sees it.
//!
//! Google counts Calendar API requests per project and per user over a sliding window
//! (10,000 and 600 per minute by default). Every replica draws permits for its calls
//! from buckets in Postgres (`calsync_domain::quota`): one `project` bucket and one
//! bucket per student, keyed by the student's user id (the identity Google counts per
//! user: the student's own OAuth grant, or the `quotaUser` a service account sends for
//! them). A process draws a batch of permits for the calls that are waiting (and, when
//! busy, for its recent pace over one lease) and keeps them in a local stash. A batch
//! comes with a start time: when the bucket is short the database books the batch for
//! the moment it will have earned it (at most a second ahead) instead of refusing, so
//! replicas do not poll. A call queues for a permit of the project's, takes one of the
//! student's right after, and goes out at once.
//!
//! Why the bound is strict: a batch starting at `s` is used before
//! `s + lease` (the stash drops permits past their lease, counted from before the draw
//! was sent) and its requests reach Google before `s + lease + SEND_MARGIN`, so the
//! requests Google counts in any window of its length `W` come from grants starting
//! within one window of `W + lease + SEND_MARGIN`, and the database never lets more
//! than the quota start within such a window. A replica that dies holding permits leaves
//! them unused; they still count, so nobody exceeds the quota.
//!
//! Why it uses the quota: the sustained rate is `quota / (W + lease + SEND_MARGIN)`
//! (99.3 % of Google's per-minute project quota), an idle replica draws nothing (the
//! replicas with work get every permit; there is no share per replica to leave unused),
//! and permits are drawn for callers that are waiting or about to call, so few expire.

mod bucket;
mod policy;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use calsync_domain::{DomainError, quota};
use sqlx::PgPool;

use bucket::Bucket;
use policy::QuotaPolicy;
pub use policy::{QuotaLimits, SEND_MARGIN};

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

    /// Wait until a call for `user_id` may go out: a permit of the project's (calls
    /// queue for these), then one of the student's, taken right away (from the stash or
    /// one draw) so that neither waits out its lease while the call queues for the
    /// other. Fails only when the database does.
    pub(crate) async fn acquire(&self, user_id: i64) -> Result<(), DomainError> {
        let user = self.user(user_id);
        loop {
            let project = self.project.acquire(&self.pool).await?;
            match user.try_acquire(&self.pool).await? {
                Ok(_) if Instant::now() < project => return Ok(()),
                Ok(student) => {
                    // The student's draw outlasted the project permit's lease: that one
                    // stays unused; keep the student's for the next round.
                    metrics::counter!("calsync_google_permits_expired_total", "bucket" => "project")
                        .increment(1);
                    user.give_back(student);
                }
                Err(_) => {
                    // The student is at their limit: let other calls have the project's
                    // permit while this one waits for the student's.
                    self.project.give_back(project);
                    let student = user.acquire(&self.pool).await?;
                    user.give_back(student);
                }
            }
        }
    }
}
