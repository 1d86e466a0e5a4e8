//! The cluster-wide Google Calendar API quota: buckets of permits that every worker
//! replica draws from in batches (migration `…_google_quota.sql`).
//!
//! A grant is a batch of permits with a start time. A bucket starts a grant once its
//! token bucket (`rate` per second up to `burst`) has earned the permits (the even
//! pace; a worker asking for more than there is gets a later start, at most `ahead`
//! away, instead of asking again and again) and once the grants starting within any
//! `window` leave room for it (`limit`: the strict bound). Granted permits count until
//! they leave the window whether or not they are used, so a worker that dies holding
//! permits can only leave quota unused. What the numbers are — Google's quota turned into a window,
//! a rate and a burst — is the worker's business (`calsync_worker::google`); this module
//! only keeps the books.

use std::time::Duration;

use sqlx::PgExecutor;

use crate::DomainError;

/// The bucket of the whole Google Cloud project.
pub const PROJECT_BUCKET: &str = "project";

/// The bucket of one student (Google's per-user quota).
pub fn user_bucket(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// How much one bucket admits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketLimits {
    /// Permits granted within any `window` (sliding) never exceed this.
    pub limit: u32,
    /// The sliding window the limit applies to.
    pub window: Duration,
    /// Token refill per second (the sustained pace).
    pub rate: f64,
    /// Most tokens the bucket holds (the largest single grant after a pause).
    pub burst: u32,
    /// How far ahead a grant may start.
    pub ahead: Duration,
}

/// The answer to a draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    /// Permits granted: 0, or between the minimum and the number wanted.
    pub granted: u32,
    /// How long until the granted permits may be used (measured when they were granted).
    pub starts_in: Duration,
    /// When nothing was granted: how long until asking again makes sense.
    pub retry_after: Duration,
}

/// Take between `min` and `wanted` permits from `bucket`, starting as soon as the bucket
/// allows and at most `limits.ahead` from now (one round trip; concurrent callers are
/// serialised on the bucket's row).
pub async fn take_permits(
    db: impl PgExecutor<'_>,
    bucket: &str,
    wanted: u32,
    min: u32,
    limits: &BucketLimits,
) -> Result<Grant, DomainError> {
    let window = limits.window.as_secs_f64();
    if min < 1
        || wanted < min
        || limits.limit < min
        || limits.burst < min
        || !(window > 0.0 && window.is_finite())
        || !(limits.rate > 0.0 && limits.rate.is_finite())
        || !limits.ahead.as_secs_f64().is_finite()
        || bucket.is_empty()
    {
        return Err(DomainError::InvalidInput(format!(
            "quota draw from {bucket:?}: wanted {wanted}, min {min}, {limits:?} \
             (need 1 <= min <= wanted, min <= limit and burst, a positive window and rate)"
        )));
    }
    let clamp = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let (granted, starts_in, retry_after): (i32, f64, f64) = sqlx::query_as(
        "SELECT granted, starts_in_secs, retry_after_secs \
         FROM calsync.take_google_permits($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(bucket)
    .bind(clamp(wanted))
    .bind(clamp(min))
    .bind(clamp(limits.limit))
    .bind(window)
    .bind(limits.rate)
    .bind(f64::from(limits.burst))
    .bind(limits.ahead.as_secs_f64())
    .fetch_one(db)
    .await?;
    let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(limits.window);
    Ok(Grant {
        granted: u32::try_from(granted).unwrap_or(0),
        starts_in: secs(starts_in),
        retry_after: secs(retry_after),
    })
}

/// Permits of `bucket` starting within the `window` that ends at its latest grant (0
/// for a bucket never drawn from or forgotten).
pub async fn granted_in_window(
    db: impl PgExecutor<'_>,
    bucket: &str,
    window: Duration,
) -> Result<i64, DomainError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(g.permits), 0)::bigint \
         FROM calsync.google_quota_grants g JOIN calsync.google_quota_buckets b USING (bucket) \
         WHERE g.bucket = $1 AND g.starts_at > b.last_start - make_interval(secs => $2)",
    )
    .bind(bucket)
    .bind(window.as_secs_f64())
    .fetch_one(db)
    .await?)
}
