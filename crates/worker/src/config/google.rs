//! The Google side: the Calendar API client's settings, Google's quota (cluster-wide)
//! and the default concurrency it implies, and how calsync authenticates to Google —
//! which decides who owns the course calendars.

use std::time::Duration;

pub use crate::google::QuotaLimits;

use calsync_domain::credentials::Secret;

use super::ConfigError;

/// The Google Calendar API client's settings.
#[derive(Debug, Clone)]
pub struct GoogleSettings {
    pub api_base_url: String,
    pub api_root_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Google's quota, for all replicas together ([`google_quota`]).
    pub quota: QuotaLimits,
    pub request_timeout: Duration,
}

/// The longest quota window accepted (Google's is a minute).
pub const MAX_QUOTA_WINDOW: Duration = Duration::from_secs(3600);

/// Google's quota, validated: `project` and `per_user` requests per `window_secs`
/// (1 s to 1 h), both positive.
pub fn google_quota(
    project: u32,
    per_user: u32,
    window_secs: u64,
) -> Result<QuotaLimits, ConfigError> {
    let positive = |option, value: u32| {
        if value == 0 {
            Err(ConfigError::OutOfRange {
                option,
                rule: "a positive number of requests",
                value: value.to_string(),
            })
        } else {
            Ok(value)
        }
    };
    let window = Duration::from_secs(window_secs);
    if window.is_zero() || window > MAX_QUOTA_WINDOW {
        return Err(ConfigError::OutOfRange {
            option: "CALSYNC_GOOGLE_QUOTA_WINDOW_SECS",
            rule: "between 1 and 3600 seconds",
            value: window_secs.to_string(),
        });
    }
    Ok(QuotaLimits {
        project: positive("CALSYNC_GOOGLE_PROJECT_QUOTA", project)?,
        per_user: positive("CALSYNC_GOOGLE_USER_QUOTA", per_user)?,
        window,
    })
}

/// A deprecated per-process rate (`CALSYNC_GOOGLE_PROJECT_RPS`,
/// `CALSYNC_GOOGLE_PER_USER_RPS`) read the only way that is safe for every existing
/// deployment: as a cap on the whole cluster, `rps × window` requests per window. Never
/// more than what the deployment allowed before (its replicas together made at least
/// `rps`), never more than `limit`. Returns the limit and whether the rate lowered it.
pub fn capped_by_deprecated_rate(
    option: &'static str,
    limit: u32,
    rps: Option<f64>,
    window: Duration,
) -> Result<(u32, bool), ConfigError> {
    let Some(rps) = rps else {
        return Ok((limit, false));
    };
    let rps = positive_rate(option, rps)?;
    let cap = (rps * window.as_secs_f64())
        .floor()
        .clamp(1.0, f64::from(u32::MAX)) as u32;
    Ok((limit.min(cap), cap < limit))
}

/// Validate a requests-per-second option.
pub fn positive_rate(option: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            option,
            rule: "a positive number",
            value: value.to_string(),
        })
    }
}

/// How calsync authenticates to Google, and so who owns the course calendars.
#[derive(Debug, Clone)]
pub enum GoogleAuth {
    /// Per-user OAuth (the default): each student's refresh token from
    /// `google_credentials`, opened with these keys.
    Oauth { vault: crate::vault::Vault },
    /// A service account owns every course calendar and shares it with the student
    /// (`delegate`: it acts as each student instead, with domain-wide delegation).
    ServiceAccount {
        key: crate::google::ServiceAccountKey,
        delegate: bool,
        provisioning: crate::provision::ProvisionSettings,
    },
}

impl GoogleAuth {
    /// The per-user OAuth mode with `vault`. Secure by default: students' Google tokens
    /// are stored encrypted, so a vault without credentials keys is refused unless
    /// plain storage is explicitly allowed (`allow_plaintext`, development only).
    pub fn oauth(
        vault: crate::vault::Vault,
        allow_plaintext: bool,
    ) -> Result<GoogleAuth, ConfigError> {
        if !vault.encrypts() && !allow_plaintext {
            return Err(ConfigError::NoCredentialsKeys);
        }
        Ok(GoogleAuth::Oauth { vault })
    }

    /// The calendar mode the database is told about.
    pub fn calendar_mode(&self) -> calsync_domain::settings::CalendarMode {
        use calsync_domain::settings::CalendarMode;
        match self {
            GoogleAuth::Oauth { .. } => CalendarMode::UserOauth,
            GoogleAuth::ServiceAccount {
                delegate: false, ..
            } => CalendarMode::ServiceAccount,
            GoogleAuth::ServiceAccount { delegate: true, .. } => CalendarMode::Delegated,
        }
    }
}

/// Default concurrency: room for this many times the calls Little's law says are in
/// flight, for the part of a job spent outside Google calls (database, token refresh).
pub const CONCURRENCY_HEADROOM: f64 = 1.5;
/// The largest default concurrency (each running job holds a database connection).
pub const MAX_DEFAULT_CONCURRENCY: u16 = 64;

/// Jobs one worker runs at once when `CALSYNC_CONCURRENCY` is unset: enough for one
/// replica alone to keep the project's quota busy. By Little's law the calls in flight
/// are `rate × latency` (the project's sustained rate, [`QuotaLimits::project_rate`],
/// times the typical latency of one call); each job has at most one call in flight, so
/// `ceil(1.5 × rate × latency)`, between 1 and 64. Google's defaults (10,000/min) at
/// 100 ms: 25.
pub fn default_concurrency(quota: &QuotaLimits, latency: Duration) -> u16 {
    let jobs = (CONCURRENCY_HEADROOM * quota.project_rate() * latency.as_secs_f64()).ceil();
    if jobs.is_finite() {
        (jobs as u16).clamp(1, MAX_DEFAULT_CONCURRENCY)
    } else {
        MAX_DEFAULT_CONCURRENCY
    }
}

/// What the sync engine needs: the Google client, the school's time zone, and how it
/// authenticates.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub google: GoogleSettings,
    /// Class times are wall-clock times in this zone.
    pub school_time_zone: chrono_tz::Tz,
    pub auth: GoogleAuth,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn quotas_must_be_positive_within_a_sane_window() {
        let q = google_quota(10_000, 600, 60).unwrap();
        assert_eq!(q, QuotaLimits::GOOGLE);
        for (p, u, w, option) in [
            (0, 600, 60, "CALSYNC_GOOGLE_PROJECT_QUOTA"),
            (10, 0, 60, "CALSYNC_GOOGLE_USER_QUOTA"),
            (10, 10, 0, "CALSYNC_GOOGLE_QUOTA_WINDOW_SECS"),
            (10, 10, 3601, "CALSYNC_GOOGLE_QUOTA_WINDOW_SECS"),
        ] {
            let err = google_quota(p, u, w).unwrap_err().to_string();
            assert!(err.starts_with(option), "{err}");
        }
    }

    #[test]
    fn deprecated_per_process_rates_only_ever_lower_the_cluster_quota() {
        let minute = Duration::from_secs(60);
        let cap = |rps| capped_by_deprecated_rate("X", 10_000, rps, minute).unwrap();
        assert_eq!(cap(None), (10_000, false));
        // A rate above the quota changes nothing.
        assert_eq!(cap(Some(1000.0)), (10_000, false));
        // One replica that set the old default (150/s) keeps exactly its old pace.
        assert_eq!(cap(Some(150.0)), (9_000, true));
        // An operator who divided the quota by 3 replicas gets the third, cluster-wide:
        // slower than before, never faster.
        assert_eq!(cap(Some(55.0)), (3_300, true));
        assert_eq!(cap(Some(0.001)), (1, true));
        assert!(capped_by_deprecated_rate("X", 10, Some(-1.0), minute).is_err());
    }

    #[test]
    fn default_concurrency_follows_littles_law() {
        let ms = Duration::from_millis;
        // 10,000/min ≈ 165/s sustained × 100 ms × 1.5.
        assert_eq!(default_concurrency(&QuotaLimits::GOOGLE, ms(100)), 25);
        assert_eq!(default_concurrency(&QuotaLimits::GOOGLE, ms(200)), 50);
        assert_eq!(default_concurrency(&QuotaLimits::GOOGLE, ms(2000)), 64);
        let small = google_quota(100, 20, 10).unwrap();
        assert_eq!(default_concurrency(&small, ms(100)), 2);
        assert_eq!(default_concurrency(&small, ms(0)), 1);
    }
}
