//! Typed configuration: plain structs, validated once when the command line (and its
//! environment fallbacks, see [`crate::cli`]) is translated into them. Everything below
//! the CLI — [`crate::runtime`], [`crate::telemetry`], the sync engine and Google client
//! construction ([`crate::build_engine`]), the dashboard, [`crate::database`] — takes
//! these types and never sees clap.
//!
//! Adding an option: a field here (with its rule in a constructor if it has one), the
//! flag with its `CALSYNC_…` variable in `cli.rs` and its line in the translation there,
//! and the README's configuration table.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

pub use crate::google::QuotaLimits;
use calsync_domain::credentials::Secret;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use subtle::ConstantTimeEq;

/// The shortest accepted bearer token (the enqueue API's, like the dashboard's).
pub const MIN_TOKEN_LEN: usize = 12;

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "DATABASE_URL is not set: export it or pass --database-url (e.g. postgres://user@127.0.0.1:5432/calsync)"
    )]
    NoDatabaseUrl,
    #[error(
        "DATABASE_URL is not a valid PostgreSQL URL ({0}); expected e.g. postgres://user:password@host:5432/calsync"
    )]
    InvalidDatabaseUrl(String),
    #[error(
        "invalid nightly schedule {schedule:?}: {reason} (cron with seconds first, e.g. \"0 30 3 * * *\")"
    )]
    Schedule { schedule: String, reason: String },
    #[error(
        "CALSYNC_API_TOKEN must be at least {MIN_TOKEN_LEN} characters (it is the bearer token of the enqueue API); unset it to accept loopback callers only"
    )]
    WeakApiToken,
    #[error("{0}")]
    Credentials(#[from] crate::vault::KeyringError),
    #[error("service-account key: {0}")]
    ServiceAccountKey(#[from] crate::google::service_account::KeyError),
    #[error("could not read {what} from {path}: {error}")]
    ReadFile {
        what: &'static str,
        path: String,
        error: String,
    },
    #[error(
        "CALSYNC_GOOGLE_AUTH_MODE={0} needs a service-account key: set CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE (or CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY)"
    )]
    NoServiceAccountKey(&'static str),
    #[error("{option} must be {rule}, got {value}")]
    OutOfRange {
        option: &'static str,
        rule: &'static str,
        value: String,
    },
}

// ------------------------------------------------------------------------ database

/// A PostgreSQL URL: the parsed connection options, and the URL without its password
/// for messages.
#[derive(Clone)]
pub struct DatabaseUrl {
    options: PgConnectOptions,
    redacted: String,
}

impl DatabaseUrl {
    /// Parse `DATABASE_URL` (absent or empty: [`ConfigError::NoDatabaseUrl`]).
    pub fn parse(url: Option<&str>) -> Result<DatabaseUrl, ConfigError> {
        let url = url
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or(ConfigError::NoDatabaseUrl)?;
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(ConfigError::InvalidDatabaseUrl(format!(
                "the scheme must be postgres:// or postgresql://, got {:?}",
                scheme.chars().take(20).collect::<String>()
            )));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| ConfigError::InvalidDatabaseUrl(redact_error(&e.to_string(), url)))?;
        Ok(DatabaseUrl {
            options,
            redacted: redact_url(url),
        })
    }

    /// Connection options for sqlx.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// The URL without its password (safe to print and log).
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// `url` without its password (userinfo or `password=` query parameter).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable URL>".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(None);
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("password"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if parsed.query().is_some() {
        if pairs.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    parsed.to_string()
}

/// An error message about `url` with the URL's password taken out, if it appears.
fn redact_error(msg: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(String::from))
    {
        Some(pw) if !pw.is_empty() => msg.replace(&pw, "***"),
        _ => msg.to_string(),
    }
}

/// How long a process keeps trying to connect, by the kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// The server answers but has no slot ("too many clients") or is starting up: wait
    /// this long for one to free up.
    pub busy_wait: Duration,
    /// Nothing answers (connection refused, timeout, unknown host): retry this long.
    pub unreachable_wait: Duration,
}

impl ConnectPolicy {
    /// One-shot CLI commands: say why quickly when the server is not there, but wait
    /// for a free connection slot when it is merely full.
    pub const CLI: ConnectPolicy = ConnectPolicy {
        busy_wait: Duration::from_secs(30),
        unreachable_wait: Duration::from_secs(2),
    };
    /// Long-running processes (worker, dashboard): ride out a database that is
    /// restarting or not up yet (deploy order), then fail so the supervisor restarts us.
    pub const SERVICE: ConnectPolicy = ConnectPolicy {
        busy_wait: Duration::from_secs(60),
        unreachable_wait: Duration::from_secs(30),
    };
}

/// Database connections of one CLI call: it runs its statements one after another.
pub const CLI_POOL_SIZE: u32 = 2;
/// Database connections of a dashboard process (default).
pub const DASHBOARD_POOL_SIZE: u32 = 5;
/// A worker's connections beyond one per concurrent sync (default): the LISTEN
/// connections (the sync worker's and its fast lane's), apalis' fetch, acknowledgement
/// and heartbeat, the cron and the HTTP API.
pub const WORKER_POOL_EXTRA: u32 = 6;
/// The fewest connections beyond one per concurrent sync a worker runs with.
pub const WORKER_POOL_MIN_EXTRA: u32 = 4;

/// Where and how a process connects.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// Pool size: the process' connection budget.
    pub max_connections: u32,
    /// How long a statement waits for a pooled connection.
    pub acquire_timeout: Duration,
    pub connect: ConnectPolicy,
}

impl DatabaseConfig {
    /// A one-shot CLI call.
    pub fn cli(url: DatabaseUrl) -> DatabaseConfig {
        DatabaseConfig {
            url,
            max_connections: CLI_POOL_SIZE,
            acquire_timeout: Duration::from_secs(10),
            connect: ConnectPolicy::CLI,
        }
    }

    /// A dashboard process (`configured`: `CALSYNC_DB_MAX_CONNECTIONS`).
    pub fn dashboard(url: DatabaseUrl, configured: Option<u32>) -> DatabaseConfig {
        DatabaseConfig {
            url,
            max_connections: configured.unwrap_or(DASHBOARD_POOL_SIZE).max(2),
            acquire_timeout: Duration::from_secs(10),
            connect: ConnectPolicy::SERVICE,
        }
    }

    /// A worker running `concurrency` syncs at once. Each running sync holds one
    /// connection for its per-user advisory lock and borrows another briefly, so the
    /// budget follows concurrency: `concurrency + 6` unless configured, and never less
    /// than `concurrency + 4` (a lower `configured` is raised; see [`Self::raised_from`]).
    pub fn worker(url: DatabaseUrl, concurrency: u16, configured: Option<u32>) -> DatabaseConfig {
        let c = u32::from(concurrency);
        let floor = c + WORKER_POOL_MIN_EXTRA;
        DatabaseConfig {
            url,
            max_connections: configured.unwrap_or(c + WORKER_POOL_EXTRA).max(floor),
            acquire_timeout: Duration::from_secs(10),
            connect: ConnectPolicy::SERVICE,
        }
    }

    /// When a configured budget was below a worker's floor: `Some(configured)`.
    pub fn raised_from(&self, configured: Option<u32>) -> Option<u32> {
        configured.filter(|c| *c < self.max_connections)
    }
}

// ------------------------------------------------------------------------- logging

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Logging of one process.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// Filter when `RUST_LOG` is unset.
    pub default_filter: &'static str,
    /// ANSI colours in pretty lines.
    pub color: bool,
}

impl LoggingConfig {
    /// Logging to stderr: colours only on a terminal and without `NO_COLOR`.
    pub fn new(format: LogFormat, default_filter: &'static str) -> LoggingConfig {
        use std::io::IsTerminal;
        LoggingConfig {
            format,
            default_filter,
            color: wants_color(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
        }
    }
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn wants_color(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

// -------------------------------------------------------------------------- google

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

/// Read a secret from a file or take it from a variable (the file wins when both are
/// set). Errors name the path, never the content.
pub fn secret_from(
    what: &'static str,
    value: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Some(Secret::new(s)))
            .map_err(|e| ConfigError::ReadFile {
                what,
                path: path.display().to_string(),
                error: e.to_string(),
            });
    }
    Ok(value.filter(|v| !v.trim().is_empty()).map(Secret::new))
}

// -------------------------------------------------------------------------- worker

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
    fn urls_lose_their_password_and_nothing_else() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db.example:5432/calsync?sslmode=require"),
            "postgres://app@db.example:5432/calsync?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/calsync?password=hunter2&application_name=x"),
            "postgres://app@db/calsync?application_name=x"
        );
        assert_eq!(
            redact_url("postgres://db/calsync?password=hunter2"),
            "postgres://db/calsync"
        );
        let url = DatabaseUrl::parse(Some("postgres://app:hunter2@db/calsync")).unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }

    #[test]
    fn database_url_is_required() {
        for missing in [None, Some(""), Some("  ")] {
            let err = DatabaseUrl::parse(missing).unwrap_err().to_string();
            assert!(err.contains("DATABASE_URL is not set"), "{err}");
        }
        let err = DatabaseUrl::parse(Some("mysql://x:hunter2@h/db"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid PostgreSQL URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn pool_budgets_are_small_and_follow_worker_concurrency() {
        let url = || DatabaseUrl::parse(Some("postgres://h/db")).unwrap();
        assert_eq!(DatabaseConfig::cli(url()).max_connections, 2);
        assert_eq!(DatabaseConfig::dashboard(url(), None).max_connections, 5);
        let w = DatabaseConfig::worker(url(), 8, None);
        assert_eq!(w.max_connections, 14);
        assert_eq!(w.raised_from(None), None);
        let w = DatabaseConfig::worker(url(), 8, Some(4));
        assert_eq!(w.max_connections, 12, "never below concurrency + 4");
        assert_eq!(w.raised_from(Some(4)), Some(4));
        assert_eq!(
            DatabaseConfig::worker(url(), 8, Some(40)).max_connections,
            40
        );
    }

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
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(wants_color(true, None));
        assert!(wants_color(true, Some(OsStr::new(""))));
        assert!(!wants_color(true, Some(OsStr::new("1"))));
        assert!(!wants_color(false, None));
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
        assert!(positive_rate("CALSYNC_GOOGLE_PER_USER_RPS", 0.0).is_err());
        assert!(positive_rate("CALSYNC_GOOGLE_PER_USER_RPS", f64::NAN).is_err());
    }

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
