//! `calsync worker`: the nightly cron, the enqueue API's token, the dashboard it may
//! serve, and everything the process runs with.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ConfigError, DatabaseConfig, MIN_TOKEN_LEN, SyncSettings};

/// The nightly cron schedule (seconds first) and its time zone, validated.
#[derive(Debug, Clone)]
pub struct NightlySchedule {
    pub expression: String,
    pub schedule: cron::Schedule,
    pub time_zone: chrono_tz::Tz,
}

impl NightlySchedule {
    /// Parse and validate a cron schedule (6-7 fields, seconds first).
    pub fn parse(
        expression: &str,
        time_zone: chrono_tz::Tz,
    ) -> Result<NightlySchedule, ConfigError> {
        let schedule = cron::Schedule::from_str(expression).map_err(|e| ConfigError::Schedule {
            schedule: expression.to_string(),
            reason: e.to_string(),
        })?;
        Ok(NightlySchedule {
            expression: expression.to_string(),
            schedule,
            time_zone,
        })
    }
}

/// The nightly cron of a worker.
#[derive(Debug, Clone)]
pub struct CronConfig {
    pub schedule: NightlySchedule,
    /// After each pass, delete finished jobs older than this many days (0: never).
    pub retention_days: u32,
    /// How long after its time a tick may still run (catch-up after an outage).
    pub catch_up_window: Duration,
}

/// How long after its time a nightly tick is still run.
pub const CATCH_UP_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// The enqueue API's bearer token (at least [`MIN_TOKEN_LEN`] characters). Only its
/// SHA-256 digest is kept; comparisons are constant-time.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    /// Accept a token of at least [`MIN_TOKEN_LEN`] characters.
    pub fn new(token: &str) -> Result<ApiToken, ConfigError> {
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(ConfigError::WeakApiToken);
        }
        Ok(ApiToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `given` is the token (constant time in the token and `given`).
    pub fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(given.ct_eq(&self.digest))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(set)")
    }
}

/// The dashboard served from a process.
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    pub listen: SocketAddr,
    /// Tokens and cookies; the dashboard itself refuses a configuration without a
    /// token or with a short one.
    pub auth: calsync_dashboard::DashboardConfig,
}

/// Everything `calsync worker` runs with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub database: DatabaseConfig,
    /// Jobs run at once ([`default_concurrency`] unless configured).
    pub concurrency: u16,
    /// The nightly cron; `None` with `--no-cron`.
    pub cron: Option<CronConfig>,
    /// HTTP API (health, metrics, enqueue) address; port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// The enqueue API's token; `None`: loopback callers only.
    pub api_token: Option<ApiToken>,
    /// Prefix of this process' worker names (made unique per process).
    pub name_prefix: String,
    /// Heartbeat interval; a worker silent for [`MISSED_HEARTBEATS`] of its own
    /// intervals is presumed dead.
    pub heartbeat: Duration,
    /// Poll interval (fallback to LISTEN/NOTIFY).
    pub poll_interval: Duration,
    /// Longest a sync may run.
    pub job_timeout: Duration,
    /// Grace period for in-flight jobs on SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Also serve the dashboard from this process.
    pub dashboard: Option<DashboardSettings>,
    pub sync: SyncSettings,
}

/// Heartbeats a worker may miss before its jobs are handed to other workers.
pub const MISSED_HEARTBEATS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn api_tokens_are_long_enough_and_compared_whole() {
        for weak in ["", "short", "elevenchars"] {
            assert!(matches!(
                ApiToken::new(weak),
                Err(ConfigError::WeakApiToken)
            ));
        }
        let token = ApiToken::new("twelve-chars").unwrap();
        assert!(token.matches("twelve-chars"));
        for wrong in ["", "twelve-char", "twelve-chars ", "TWELVE-CHARS"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "ApiToken(set)");
    }

    #[test]
    fn bad_schedules_are_rejected_with_a_clear_error() {
        let err = NightlySchedule::parse("30 3 * * *", chrono_tz::UTC)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid nightly schedule") && err.contains("seconds first"),
            "{err}"
        );
        assert!(super::super::positive_rate("CALSYNC_GOOGLE_PER_USER_RPS", 0.0).is_err());
        assert!(super::super::positive_rate("CALSYNC_GOOGLE_PER_USER_RPS", f64::NAN).is_err());
    }
}
