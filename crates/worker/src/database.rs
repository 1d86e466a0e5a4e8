//! Connecting to PostgreSQL within a process' connection budget: retry with backoff
//! while the failure looks transient (server full, starting up, not answering yet) for
//! as long as the process' [`ConnectPolicy`] allows, fail at once when it cannot get
//! better (wrong password, unknown database), and always say the root cause with the
//! URL minus its password.

use std::{fmt, time::Duration};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::time::Instant;

use crate::config::{ConfigError, ConnectPolicy, DatabaseConfig};

/// Errors of process setup (configuration, connecting, schema).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not connect to the database at {url}: {cause}{}", gave_up(*.waited))]
    Connect {
        url: String,
        cause: ConnectFailure,
        waited: Duration,
    },
    #[error(
        "the database at {url} is not migrated (missing calsync/apalis tables, or migrations of this release): run `calsync migrate` first"
    )]
    NotMigrated { url: String },
    #[error("database error: {0}")]
    Database(#[from] calsync_domain::DomainError),
    #[error("invalid Google configuration: {0}")]
    Google(String),
}

fn gave_up(waited: Duration) -> String {
    if waited >= Duration::from_millis(500) {
        format!(" (gave up after {:.0} s of retrying)", waited.as_secs_f64())
    } else {
        String::new()
    }
}

/// Why a connection attempt failed, as an operator needs to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Nothing listens at the address.
    Refused,
    /// The host name does not resolve.
    UnknownHost(String),
    /// No answer within the attempt's timeout.
    Timeout(Duration),
    /// Another network error.
    Network(String),
    /// The server refused the credentials.
    AuthFailed(String),
    /// The database named in the URL does not exist.
    NoSuchDatabase(String),
    /// The server has no free connection slot.
    TooManyConnections(String),
    /// The server is starting up or shutting down.
    NotAvailable(String),
    /// TLS negotiation failed.
    Tls(String),
    /// Anything else.
    Other(String),
}

/// How a failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// The server is there but busy: wait [`ConnectPolicy::busy_wait`].
    Busy,
    /// The server does not answer: retry for [`ConnectPolicy::unreachable_wait`].
    Unreachable,
    /// Retrying cannot help.
    Permanent,
}

impl ConnectFailure {
    /// Classify a connection error.
    pub fn classify(err: &sqlx::Error) -> ConnectFailure {
        match err {
            sqlx::Error::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                std::io::ErrorKind::TimedOut => ConnectFailure::Timeout(Duration::ZERO),
                _ if io.to_string().contains("lookup address")
                    || io.to_string().contains("resolve") =>
                {
                    ConnectFailure::UnknownHost(io.to_string())
                }
                _ => ConnectFailure::Network(io.to_string()),
            },
            sqlx::Error::Tls(e) => ConnectFailure::Tls(e.to_string()),
            sqlx::Error::PoolTimedOut => ConnectFailure::Timeout(Duration::ZERO),
            sqlx::Error::Database(db) => {
                let msg = db.message().to_string();
                match db.code().as_deref() {
                    Some("28P01" | "28000") => ConnectFailure::AuthFailed(msg),
                    Some("3D000") => ConnectFailure::NoSuchDatabase(msg),
                    Some("53300") => ConnectFailure::TooManyConnections(msg),
                    Some("57P03" | "57P01") => ConnectFailure::NotAvailable(msg),
                    _ => ConnectFailure::Other(msg),
                }
            }
            other => ConnectFailure::Other(other.to_string()),
        }
    }

    /// Whether and how long to retry.
    pub fn transience(&self) -> Transience {
        match self {
            ConnectFailure::TooManyConnections(_) | ConnectFailure::NotAvailable(_) => {
                Transience::Busy
            }
            ConnectFailure::Refused
            | ConnectFailure::UnknownHost(_)
            | ConnectFailure::Timeout(_)
            | ConnectFailure::Network(_) => Transience::Unreachable,
            ConnectFailure::AuthFailed(_)
            | ConnectFailure::NoSuchDatabase(_)
            | ConnectFailure::Tls(_)
            | ConnectFailure::Other(_) => Transience::Permanent,
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Refused => {
                f.write_str("connection refused (is PostgreSQL running and listening there?)")
            }
            ConnectFailure::UnknownHost(e) => {
                write!(f, "the host name does not resolve ({e})")
            }
            ConnectFailure::Timeout(d) if d.is_zero() => {
                f.write_str("the server did not answer in time (host down or firewalled?)")
            }
            ConnectFailure::Timeout(d) => write!(
                f,
                "the server did not answer within {} s (host down or firewalled?)",
                d.as_secs()
            ),
            ConnectFailure::Network(e) => write!(f, "network error: {e}"),
            ConnectFailure::AuthFailed(m) => write!(
                f,
                "authentication failed: {m} (check the user and password in DATABASE_URL)"
            ),
            ConnectFailure::NoSuchDatabase(m) => write!(
                f,
                "{m} (create it, or fix the database name in DATABASE_URL)"
            ),
            ConnectFailure::TooManyConnections(m) => write!(
                f,
                "the server has no free connection ({m}); raise its max_connections or lower the pools, see docs/operations.md"
            ),
            ConnectFailure::NotAvailable(m) => {
                write!(f, "the server is not accepting connections ({m})")
            }
            ConnectFailure::Tls(e) => write!(f, "TLS error: {e}"),
            ConnectFailure::Other(e) => f.write_str(e),
        }
    }
}

/// A pool within `db`'s budget. The first connection is made by hand so that a failure
/// is reported with its cause (the pool would only say it timed out); transient
/// failures are retried with backoff within the policy's bounds.
pub async fn connect(db: &DatabaseConfig) -> Result<PgPool, SetupError> {
    let url = db.url.redacted().to_string();
    first_connection(db).await?;
    PgPoolOptions::new()
        .max_connections(db.max_connections)
        .acquire_timeout(db.acquire_timeout)
        .connect_with(db.url.options().clone())
        .await
        .map_err(|e| SetupError::Connect {
            url,
            cause: ConnectFailure::classify(&e),
            waited: Duration::ZERO,
        })
}

async fn first_connection(db: &DatabaseConfig) -> Result<(), SetupError> {
    let started = Instant::now();
    let ConnectPolicy {
        busy_wait,
        unreachable_wait,
    } = db.connect;
    // One attempt may take as long as the server needs to answer, within reason.
    let attempt_timeout = unreachable_wait.clamp(Duration::from_secs(2), Duration::from_secs(10));
    let mut delay = Duration::from_millis(100);
    let mut announced: Option<Transience> = None;
    loop {
        let cause = match tokio::time::timeout(
            attempt_timeout,
            PgConnection::connect_with(db.url.options()),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(e)) => ConnectFailure::classify(&e),
            Err(_) => ConnectFailure::Timeout(attempt_timeout),
        };
        let transience = cause.transience();
        let bound = match transience {
            Transience::Busy => busy_wait,
            Transience::Unreachable => unreachable_wait,
            Transience::Permanent => Duration::ZERO,
        };
        let waited = started.elapsed();
        if waited + delay > bound {
            return Err(SetupError::Connect {
                url: db.url.redacted().to_string(),
                cause,
                waited,
            });
        }
        if announced != Some(transience) {
            tracing::warn!(
                url = db.url.redacted(),
                retry_for_secs = bound.saturating_sub(waited).as_secs(),
                "cannot connect to the database yet: {cause}; retrying"
            );
            announced = Some(transience);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Fail with a clear message when the schema (or this release's part of it) is missing.
pub async fn ensure_migrated(pool: &PgPool, db: &DatabaseConfig) -> Result<(), SetupError> {
    if calsync_domain::is_migrated(pool).await? {
        Ok(())
    } else {
        Err(SetupError::NotMigrated {
            url: db.url.redacted().to_string(),
        })
    }
}

/// [`connect`], then [`ensure_migrated`].
pub async fn connect_migrated(db: &DatabaseConfig) -> Result<PgPool, SetupError> {
    let pool = connect(db).await?;
    ensure_migrated(&pool, db).await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_retrying_can_do() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let f = ConnectFailure::classify(&refused);
        assert_eq!(f, ConnectFailure::Refused);
        assert_eq!(f.transience(), Transience::Unreachable);
        assert!(f.to_string().contains("connection refused"));
        assert_eq!(
            ConnectFailure::TooManyConnections("sorry, too many clients already".into())
                .transience(),
            Transience::Busy
        );
        for permanent in [
            ConnectFailure::AuthFailed("password authentication failed for user \"x\"".into()),
            ConnectFailure::NoSuchDatabase("database \"nope\" does not exist".into()),
        ] {
            assert_eq!(permanent.transience(), Transience::Permanent);
        }
    }

    #[test]
    fn the_message_names_the_url_without_its_password_and_the_wait() {
        let e = SetupError::Connect {
            url: crate::config::redact_url("postgres://app:hunter2@db:5432/calsync"),
            cause: ConnectFailure::Refused,
            waited: Duration::from_secs(2),
        }
        .to_string();
        assert_eq!(
            e,
            "could not connect to the database at postgres://app@db:5432/calsync: connection refused (is PostgreSQL running and listening there?) (gave up after 2 s of retrying)"
        );
    }
}
