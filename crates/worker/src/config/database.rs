//! Where and how a process connects: the database URL (shown without its password),
//! the pool budget per kind of process, and how long to keep trying.

use std::{fmt, str::FromStr, time::Duration};

use sqlx::postgres::PgConnectOptions;

use super::ConfigError;

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
}
