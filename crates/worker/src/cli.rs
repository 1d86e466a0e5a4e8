//! The command line: flags with environment fallbacks (the public contract, see the
//! README's configuration table), and their thin translation into the typed
//! configuration of [`crate::config`]. Nothing below this layer sees clap.

use std::net::SocketAddr;
#[cfg(feature = "dev-tools")]
use std::path::PathBuf;
use std::time::Duration;

use calsync_domain::credentials::Secret;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod auth;
pub use auth::{AuthArgs, AuthModeArg, CredentialsKeyArgs, ServiceAccountKeyArgs, ShareRoleArg};

use crate::config::{
    self, ApiToken, CATCH_UP_WINDOW, ConfigError, CronConfig, DashboardSettings, DatabaseConfig,
    DatabaseUrl, GoogleSettings, LogFormat, LoggingConfig, NightlySchedule, QuotaLimits,
    SyncSettings, WorkerConfig,
};

/// calsync: keeps students' course schedules in Google Calendar.
#[derive(Debug, Parser)]
#[command(name = "calsync", version, about, long_about = None)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log format.
    #[arg(long, env = "CALSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Pretty, global = true)]
    pub log_format: LogFormatArg,

    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (apalis queue schema, then calsync's).
    Migrate,
    /// Run a queue worker: SyncUserJobs, the nightly cron, and the HTTP API.
    Worker(Box<WorkerArgs>),
    /// Run the nightly fan-out pass (enqueue one SyncUserJob per due user).
    Nightly(NightlyArgs),
    /// Enqueue a sync of one user.
    SyncUser(SyncUserArgs),
    /// Flag every user with a course calendar for sync (picked up by the next nightly pass).
    MarkAll,
    /// Print flagged / due / failed counts.
    Status(StatusArgs),
    /// Delete finished jobs older than the retention period.
    Prune(PruneArgs),
    /// Serve the jobs dashboard.
    Dashboard(DashboardArgs),
    /// Stored Google credentials: register a sealing key, re-encrypt under a new key, status.
    Credentials(CredentialsArgs),
    /// Delete calendars no user uses any more (calsync's events, or calendars calsync owns).
    Cleanup(Box<CleanupArgs>),
    /// One-command demo: Postgres, a seeded university, the fake Google API, a nightly
    /// sync, and the dashboard.
    #[cfg(feature = "dev-tools")]
    Demo(DemoArgs),
    /// Benchmarks that print ratios against baselines measured in the same run.
    #[cfg(feature = "dev-tools")]
    Bench(BenchArgs),
    /// Serve the fake Google Calendar API (for local experiments).
    #[cfg(feature = "dev-tools")]
    FakeGoogle(FakeGoogleArgs),
    /// Show, set, validate, preview or clear a student's calendar preferences.
    Preferences(crate::preferences_cli::PreferencesArgs),
}

/// Google API settings.
#[derive(Debug, Clone, Args)]
pub struct GoogleArgs {
    /// Calendar API base URL (with trailing slash).
    #[arg(
        long,
        env = "CALSYNC_GOOGLE_API_BASE_URL",
        default_value = "https://www.googleapis.com/calendar/v3/"
    )]
    pub google_api_base_url: String,
    /// Google API root URL (with trailing slash).
    #[arg(
        long,
        env = "CALSYNC_GOOGLE_API_ROOT_URL",
        default_value = "https://www.googleapis.com/"
    )]
    pub google_api_root_url: String,
    /// OAuth token endpoint.
    #[arg(
        long,
        env = "CALSYNC_GOOGLE_TOKEN_URL",
        default_value = "https://oauth2.googleapis.com/token"
    )]
    pub google_token_url: String,
    /// OAuth client id.
    #[arg(long, env = "CALSYNC_GOOGLE_CLIENT_ID", default_value = "")]
    pub google_client_id: String,
    /// OAuth client secret.
    #[arg(
        long,
        env = "CALSYNC_GOOGLE_CLIENT_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub google_client_secret: String,
    /// Calendar API requests per quota window for the whole Google Cloud project, shared
    /// by every replica (Google's default: 10,000 per minute).
    #[arg(long, env = "CALSYNC_GOOGLE_PROJECT_QUOTA", default_value_t = 10_000)]
    pub google_project_quota: u32,
    /// Calendar API requests per quota window for each student (Google's default: 600
    /// per minute).
    #[arg(long, env = "CALSYNC_GOOGLE_USER_QUOTA", default_value_t = 600)]
    pub google_user_quota: u32,
    /// Length of Google's quota window in seconds (Google counts per minute).
    #[arg(long, env = "CALSYNC_GOOGLE_QUOTA_WINDOW_SECS", default_value_t = 60)]
    pub google_quota_window_secs: u64,
    /// Typical latency of one Google API call in milliseconds (sizes the default
    /// concurrency).
    #[arg(long, env = "CALSYNC_GOOGLE_LATENCY_MS", default_value_t = 100)]
    pub google_latency_ms: u64,
    /// Deprecated (it was per process): caps the per-student quota of the whole cluster
    /// at this many requests per second. Use CALSYNC_GOOGLE_USER_QUOTA.
    #[arg(long, env = "CALSYNC_GOOGLE_PER_USER_RPS")]
    pub google_per_user_rps: Option<f64>,
    /// Deprecated (it was per process): caps the project quota of the whole cluster at
    /// this many requests per second. Use CALSYNC_GOOGLE_PROJECT_QUOTA.
    #[arg(long, env = "CALSYNC_GOOGLE_PROJECT_RPS")]
    pub google_project_rps: Option<f64>,
    /// Timeout of one Google API request, in seconds.
    #[arg(long, env = "CALSYNC_GOOGLE_TIMEOUT_SECS", default_value_t = 30)]
    pub google_timeout_secs: u64,
    /// The school's time zone: class times are wall-clock times in it.
    #[arg(
        long,
        env = "CALSYNC_SCHOOL_TIME_ZONE",
        default_value = "America/New_York"
    )]
    pub school_time_zone: chrono_tz::Tz,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// `calsync worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs run at once by this process (default: sized from the Google quota and
    /// latency, see docs/operations.md).
    #[arg(long, env = "CALSYNC_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: Option<u16>,
    /// Nightly schedule, cron with seconds first (6-7 fields).
    #[arg(long, env = "CALSYNC_NIGHTLY_SCHEDULE", default_value = "0 30 3 * * *")]
    pub nightly_schedule: String,
    /// Time zone of the nightly schedule.
    #[arg(
        long,
        env = "CALSYNC_NIGHTLY_TIME_ZONE",
        default_value = "America/New_York"
    )]
    pub nightly_time_zone: chrono_tz::Tz,
    /// Do not run the nightly cron in this process.
    #[arg(long, env = "CALSYNC_NO_CRON")]
    pub no_cron: bool,
    /// HTTP API (health, metrics, enqueue) listen address; port 0 picks a free port.
    #[arg(long, env = "CALSYNC_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Bearer token required by the enqueue API (unset: the API only accepts loopback callers).
    #[arg(long, env = "CALSYNC_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Prefix of this process' worker names (made unique per process).
    #[arg(long, env = "CALSYNC_WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Heartbeat interval in seconds; a worker silent for 3 heartbeats is presumed dead
    /// and its jobs are handed to other workers.
    #[arg(long, env = "CALSYNC_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Poll interval in seconds (fallback to LISTEN/NOTIFY; picks up retries whose backoff ended).
    #[arg(long, env = "CALSYNC_POLL_SECS", default_value_t = 2)]
    pub poll_secs: u64,
    /// After each nightly pass, delete finished jobs older than this many days (0: never).
    #[arg(long, env = "CALSYNC_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    /// Longest a single sync may take, in seconds.
    #[arg(long, env = "CALSYNC_JOB_TIMEOUT_SECS", default_value_t = 600)]
    pub job_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish, in seconds.
    #[arg(long, env = "CALSYNC_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Also serve the dashboard from this process on this address.
    #[arg(long, env = "CALSYNC_WORKER_DASHBOARD_LISTEN")]
    pub dashboard_listen: Option<SocketAddr>,
    /// Database connections of this process (default: concurrency + 6; never fewer
    /// than concurrency + 4, as each running sync holds one).
    #[arg(long, env = "CALSYNC_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    #[command(flatten)]
    pub google: GoogleArgs,
    #[command(flatten)]
    pub dashboard: DashboardAuthArgs,
}

/// `calsync credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(subcommand)]
    pub command: CredentialsCommand,
}

/// `calsync credentials …`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Register the OpenPGP public key the database seals incoming tokens with.
    AddSealingKey {
        /// ASCII-armored public key file (`gpg --armor --export`).
        public_key_file: std::path::PathBuf,
    },
    /// Re-encrypt every stored credential under the first key of CALSYNC_CREDENTIALS_KEYS,
    /// online, in batches (also encrypts sealed and legacy plain rows).
    RotateKey {
        /// Rows per batch.
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
        #[command(flatten)]
        keys: CredentialsKeyArgs,
    },
    /// How stored refresh tokens are protected, and the registered sealing keys.
    Status,
}

/// `calsync cleanup`.
#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// List exactly what a real run would delete, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub google: GoogleArgs,
}

/// `calsync nightly`.
#[derive(Debug, Clone, Args)]
pub struct NightlyArgs {
    /// Run the pass now (the seed's `NightlyCalendarSyncJob.perform_now`). Required,
    /// so that a stray `calsync nightly` does nothing by surprise.
    #[arg(long)]
    pub now: bool,
}

/// `calsync sync-user`.
#[derive(Debug, Clone, Args)]
pub struct SyncUserArgs {
    /// The user's id.
    pub user_id: i64,
    /// Wait until the job has finished and print its outcome.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Priority class: interactive, api, nightly or maintenance. A waiting job of the
    /// user is raised to it (never lowered).
    #[arg(long, default_value = "interactive")]
    pub class: String,
    /// Also make the user's job due now if it waits on its retry backoff (not when it
    /// waits on Google's quota).
    #[arg(long, conflicts_with = "dry_run")]
    pub due_now: bool,
    /// Enqueue nothing: list the calendar and print what a sync would insert, update,
    /// restore and delete, field by field (reads Google, writes nothing).
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// Google settings (used by --dry-run only).
    #[command(flatten)]
    pub google: GoogleArgs,
}

/// `calsync prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Keep finished jobs for this many days.
    #[arg(long, env = "CALSYNC_RETENTION_DAYS", default_value_t = 30)]
    pub older_than_days: u32,
}

/// `calsync status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Checked when set (as for the workers): is the key readable?
    #[command(flatten)]
    pub service_account: ServiceAccountKeyArgs,
    /// Checked when set (as for the workers): do they open every stored token?
    #[command(flatten)]
    pub credentials: CredentialsKeyArgs,
}

/// Dashboard authentication.
#[derive(Debug, Clone, Args)]
pub struct DashboardAuthArgs {
    /// Token that logs in as admin (may retry, discard, run now).
    #[arg(long, env = "CALSYNC_DASHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub dashboard_admin_token: Option<String>,
    /// Token that logs in read-only.
    #[arg(long, env = "CALSYNC_DASHBOARD_READONLY_TOKEN", hide_env_values = true)]
    pub dashboard_readonly_token: Option<String>,
    /// Key for session fingerprints and CSRF tokens (random per process when unset: sessions end on restart).
    #[arg(long, env = "CALSYNC_DASHBOARD_SESSION_SECRET", hide_env_values = true)]
    pub dashboard_session_secret: Option<String>,
    /// Mark cookies Secure (serve the dashboard behind HTTPS).
    #[arg(long, env = "CALSYNC_DASHBOARD_SECURE_COOKIES")]
    pub dashboard_secure_cookies: bool,
    /// Reverse proxies (addresses or CIDR networks, comma-separated) whose
    /// X-Forwarded-For names the client; unset: X-Forwarded-For is ignored.
    #[arg(long, env = "CALSYNC_DASHBOARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub dashboard_trusted_proxies: Vec<calsync_dashboard::TrustedProxy>,
}

/// `calsync dashboard`.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Listen address (loopback unless told otherwise).
    #[arg(
        long,
        env = "CALSYNC_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// Database connections of this process (default 5).
    #[arg(long, env = "CALSYNC_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    #[command(flatten)]
    pub auth: DashboardAuthArgs,
    /// Google settings: with them (an OAuth client id, or a service-account mode) the
    /// user page offers "Check against Google".
    #[command(flatten)]
    pub google: GoogleArgs,
}

/// `calsync demo`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Students to seed.
    #[arg(long, default_value_t = 2000)]
    pub students: u32,
    /// Courses to seed.
    #[arg(long, default_value_t = 300)]
    pub courses: u32,
    /// Dashboard listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub dashboard_listen: SocketAddr,
    /// Exit after the nightly sync instead of serving the dashboard.
    #[arg(long)]
    pub exit_after_sync: bool,
    /// service-account (default): calsync's service account provisions every student's
    /// calendar; oauth: students bring calendars and refresh tokens (the per-user mode).
    #[arg(long, value_enum, default_value_t = DemoAuthMode::ServiceAccount)]
    pub auth_mode: DemoAuthMode,
}

/// How the demo's students get their calendars.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoAuthMode {
    ServiceAccount,
    Oauth,
}

/// `calsync bench`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scale factor (1.0 = the documented sizes).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run only these cases (comma-separated: queue, fan-out, tracking, acks, sync,
    /// dashboard, holiday, priority); all when empty.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// `calsync fake-google`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Args)]
pub struct FakeGoogleArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8085")]
    pub listen: SocketAddr,
}

// ------------------------------------------------------------------ translation

impl Cli {
    /// The logging of this invocation: long-running commands log at info, one-shot
    /// commands, the demo and the benchmarks only warnings and errors (their output is
    /// their own lines).
    pub fn logging(&self) -> LoggingConfig {
        let filter = match self.command {
            Command::Worker(_) | Command::Dashboard(_) => crate::telemetry::DEFAULT_FILTER,
            #[cfg(feature = "dev-tools")]
            Command::FakeGoogle(_) => crate::telemetry::DEFAULT_FILTER,
            _ => crate::telemetry::QUIET_FILTER,
        };
        let format = match self.log_format {
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        };
        LoggingConfig::new(format, filter)
    }

    /// `DATABASE_URL`, validated.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        DatabaseUrl::parse(self.database_url.as_deref())
    }
}

impl GoogleArgs {
    /// Google's quota for the whole cluster. The deprecated per-process rates, when
    /// set, can only lower it (see [`config::capped_by_deprecated_rate`]); either way
    /// their new meaning is logged.
    pub fn quota(&self) -> Result<QuotaLimits, ConfigError> {
        let mut quota = config::google_quota(
            self.google_project_quota,
            self.google_user_quota,
            self.google_quota_window_secs,
        )?;
        for (option, rps, limit, replacement) in [
            (
                "CALSYNC_GOOGLE_PROJECT_RPS",
                self.google_project_rps,
                &mut quota.project,
                "CALSYNC_GOOGLE_PROJECT_QUOTA",
            ),
            (
                "CALSYNC_GOOGLE_PER_USER_RPS",
                self.google_per_user_rps,
                &mut quota.per_user,
                "CALSYNC_GOOGLE_USER_QUOTA",
            ),
        ] {
            let (capped, lowered) =
                config::capped_by_deprecated_rate(option, *limit, rps, quota.window)?;
            if rps.is_some() {
                tracing::warn!(
                    option,
                    requests_per_window = capped,
                    window_secs = quota.window.as_secs(),
                    lowered,
                    "{option} is deprecated: it was a per-process rate and now caps all replicas together; \
                     set {replacement} (requests per quota window, Google's number) instead"
                );
            }
            *limit = capped;
        }
        Ok(quota)
    }

    /// Whether Google is configured at all: an OAuth client id, or a service-account
    /// mode (which requires its key). Without it, a dashboard offers no Google check.
    pub fn configured(&self) -> bool {
        self.auth.google_auth_mode != AuthModeArg::Oauth || !self.google_client_id.is_empty()
    }

    /// The sync engine's settings.
    pub fn into_settings(self) -> Result<SyncSettings, ConfigError> {
        let quota = self.quota()?;
        Ok(SyncSettings {
            google: GoogleSettings {
                api_base_url: self.google_api_base_url,
                api_root_url: self.google_api_root_url,
                token_url: self.google_token_url,
                client_id: self.google_client_id,
                client_secret: Secret::new(self.google_client_secret),
                quota,
                request_timeout: Duration::from_secs(self.google_timeout_secs.max(1)),
            },
            auth: self.auth.into_auth(self.school_time_zone)?,
            school_time_zone: self.school_time_zone,
        })
    }
}

impl DashboardAuthArgs {
    /// The dashboard's own configuration (it validates the tokens itself).
    pub fn into_config(self) -> calsync_dashboard::DashboardConfig {
        let set = |o: Option<String>| o.filter(|t| !t.is_empty());
        calsync_dashboard::DashboardConfig {
            admin_token: set(self.dashboard_admin_token),
            readonly_token: set(self.dashboard_readonly_token),
            session_secret: set(self.dashboard_session_secret),
            page_size: 50,
            secure_cookies: self.dashboard_secure_cookies,
            trusted_proxies: self.dashboard_trusted_proxies,
            ..Default::default()
        }
    }
}

impl DashboardArgs {
    /// `calsync dashboard`: its database budget, what it serves, and the Google
    /// settings of its check against Google (`None`: not configured).
    pub fn into_config(
        self,
        url: DatabaseUrl,
    ) -> Result<(DatabaseConfig, DashboardSettings, Option<SyncSettings>), ConfigError> {
        let google = if self.google.configured() {
            Some(self.google.into_settings()?)
        } else {
            None
        };
        Ok((
            DatabaseConfig::dashboard(url, self.db_max_connections),
            DashboardSettings {
                listen: self.listen,
                auth: self.auth.into_config(),
            },
            google,
        ))
    }
}

impl WorkerArgs {
    /// `calsync worker`'s configuration, validated. An API token that is set must be
    /// usable (an empty one would otherwise be a token everybody knows).
    pub fn into_config(self, url: DatabaseUrl) -> Result<WorkerConfig, ConfigError> {
        let schedule = NightlySchedule::parse(&self.nightly_schedule, self.nightly_time_zone)?;
        let api_token = self.api_token.as_deref().map(ApiToken::new).transpose()?;
        let latency = Duration::from_millis(self.google.google_latency_ms);
        let sync = self.google.into_settings()?;
        let concurrency = self.concurrency.unwrap_or_else(|| {
            let sized = config::default_concurrency(&sync.google.quota, latency);
            tracing::info!(
                concurrency = sized,
                project_rate = sync.google.quota.project_rate(),
                latency_ms = latency.as_millis() as u64,
                "CALSYNC_CONCURRENCY unset: sized from the Google quota ({} × rate × latency)",
                config::CONCURRENCY_HEADROOM
            );
            sized
        });
        let database = DatabaseConfig::worker(url, concurrency, self.db_max_connections);
        if let Some(configured) = database.raised_from(self.db_max_connections) {
            tracing::warn!(
                configured,
                using = database.max_connections,
                "CALSYNC_DB_MAX_CONNECTIONS is below concurrency + {}; raising it",
                config::WORKER_POOL_MIN_EXTRA
            );
        }
        Ok(WorkerConfig {
            database,
            concurrency,
            cron: (!self.no_cron).then_some(CronConfig {
                schedule,
                retention_days: self.retention_days,
                catch_up_window: CATCH_UP_WINDOW,
            }),
            http_listen: self.http_listen,
            api_token,
            name_prefix: self
                .worker_name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "calsync".into()),
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            poll_interval: Duration::from_secs(self.poll_secs.max(1)),
            job_timeout: Duration::from_secs(self.job_timeout_secs.max(1)),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            dashboard: self.dashboard_listen.map(|listen| DashboardSettings {
                listen,
                auth: self.dashboard.into_config(),
            }),
            sync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GoogleAuth;

    /// A test key for `--credentials-keys` (32 bytes of 0x01).
    const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn worker(args: &[&str]) -> Result<WorkerConfig, ConfigError> {
        let mut argv = vec!["calsync", "worker", "--credentials-keys", KEYS];
        argv.extend_from_slice(args);
        worker_exactly(&argv)
    }

    fn worker_exactly(argv: &[&str]) -> Result<WorkerConfig, ConfigError> {
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Command::Worker(w) = cli.command else {
            panic!("not a worker command")
        };
        w.into_config(DatabaseUrl::parse(Some("postgres://h/db")).unwrap())
    }

    #[test]
    fn worker_flags_become_typed_configuration() {
        let c = worker(&["--concurrency", "4", "--heartbeat-secs", "0", "--no-cron"]).unwrap();
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert!(c.cron.is_none());
        assert!(c.api_token.is_none());
        assert_eq!(c.database.max_connections, 10);
        let c = worker(&["--nightly-time-zone", "Europe/Berlin"]).unwrap();
        let cron = c.cron.unwrap();
        assert_eq!(cron.schedule.expression, "0 30 3 * * *");
        assert_eq!(cron.schedule.time_zone, chrono_tz::Europe::Berlin);
    }

    #[test]
    fn quota_flags_size_the_default_concurrency() {
        let c = worker(&[]).unwrap();
        assert_eq!(c.sync.google.quota, QuotaLimits::GOOGLE);
        assert_eq!(c.concurrency, 25, "Google's 10,000/min at 100 ms");
        assert_eq!(c.database.max_connections, 31);
        let c = worker(&[
            "--google-project-quota",
            "100",
            "--google-user-quota",
            "20",
            "--google-quota-window-secs",
            "10",
            "--google-latency-ms",
            "100",
        ])
        .unwrap();
        assert_eq!(c.sync.google.quota.project, 100);
        assert_eq!(c.sync.google.quota.per_user, 20);
        assert_eq!(c.sync.google.quota.window, Duration::from_secs(10));
        assert_eq!(c.concurrency, 2);
        assert_eq!(worker(&["--concurrency", "3"]).unwrap().concurrency, 3);
        // The deprecated per-process rates cap the cluster-wide quota.
        let c = worker(&["--google-project-rps", "50", "--google-per-user-rps", "8"]).unwrap();
        assert_eq!(c.sync.google.quota.project, 3_000);
        assert_eq!(c.sync.google.quota.per_user, 480);
        let err = worker(&["--google-project-quota", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CALSYNC_GOOGLE_PROJECT_QUOTA"), "{err}");
    }

    #[test]
    fn empty_or_short_api_tokens_are_refused() {
        for weak in ["", "s3cret"] {
            let err = worker(&["--api-token", weak]).unwrap_err().to_string();
            assert!(
                err.contains("CALSYNC_API_TOKEN must be at least 12"),
                "{err}"
            );
        }
        assert!(
            worker(&["--api-token", "a-long-enough-token"])
                .unwrap()
                .api_token
                .is_some()
        );
    }

    #[test]
    fn oauth_mode_refuses_to_store_tokens_unencrypted_unless_told_to() {
        let err = worker_exactly(&["calsync", "worker"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no credentials key is configured")
                && err.contains("CALSYNC_CREDENTIALS_KEYS=")
                && err.contains("CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT=true"),
            "{err}"
        );
        let c = worker_exactly(&["calsync", "worker", "--credentials-allow-plaintext"]).unwrap();
        assert!(matches!(&c.sync.auth, GoogleAuth::Oauth { vault } if !vault.encrypts()));
        let c = worker(&[]).unwrap();
        assert!(
            matches!(&c.sync.auth, GoogleAuth::Oauth { vault } if vault.active_key_id() == Some("k1"))
        );
        // A malformed key is named by its id, never echoed.
        let err = worker_exactly(&["calsync", "worker", "--credentials-keys", "k9:not-base64!"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"k9\"") && err.contains("KEY_ID:BASE64"),
            "{err}"
        );
        assert!(!err.contains("not-base64"), "{err}");
    }

    #[test]
    fn the_service_account_modes_need_a_readable_key_and_no_credentials_keys() {
        for mode in ["service-account", "delegated"] {
            let err = worker_exactly(&["calsync", "worker", "--google-auth-mode", mode])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "CALSYNC_GOOGLE_AUTH_MODE={mode} needs a service-account key"
                )),
                "{err}"
            );
        }
        let err = worker_exactly(&[
            "calsync",
            "worker",
            "--google-auth-mode",
            "service-account",
            "--google-service-account-key-file",
            "/nonexistent/key.json",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/key.json"), "{err}");
    }
}
