//! Typed configuration: plain structs, validated once when the command line (and its
//! environment fallbacks, see [`crate::cli`]) is translated into them. Everything below
//! the CLI — [`crate::runtime`], [`crate::telemetry`], the sync engine and Google client
//! construction ([`crate::build_engine`]), the dashboard, [`crate::database`] — takes
//! these types and never sees clap.
//!
//! One module per seam: [`database`] (URL, pool budgets, connect policy), [`logging`],
//! [`google`] (the Google client, its quota, how calsync authenticates and who owns
//! calendars), [`worker`] (the worker process: cron, API token, dashboard). Everything
//! is re-exported here, so callers write `config::DatabaseConfig`.
//!
//! Adding an option: a field in the module of the struct that uses it (with its rule in
//! a constructor if it has one), the flag with its `CALSYNC_…` variable in `cli.rs` and
//! its line in the translation there, and the README's configuration table.

pub mod database;
pub mod google;
pub mod logging;
pub mod worker;

pub use database::*;
pub use google::*;
pub use logging::*;
pub use worker::*;

use calsync_domain::credentials::Secret;

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
    #[error(transparent)]
    Credentials(#[from] crate::vault::KeyringError),
    #[error(transparent)]
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
    #[error(
        "CALSYNC_GOOGLE_AUTH_MODE=oauth stores students' Google refresh tokens, and no credentials key is configured: \
         set CALSYNC_CREDENTIALS_KEYS=\"k1:$(openssl rand -base64 32)\" (or CALSYNC_CREDENTIALS_KEYS_FILE) so they are stored encrypted \
         (docs/operations.md, \"Credentials at rest\"); to store them unencrypted anyway (development only) set CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT=true"
    )]
    NoCredentialsKeys,
    #[error("{option} must be {rule}, got {value}")]
    OutOfRange {
        option: &'static str,
        rule: &'static str,
        value: String,
    },
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
