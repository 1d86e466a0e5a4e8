//! The flags of how calsync authenticates to Google and protects stored credentials
//! (flattened into `worker`, `cleanup`, `status` and `credentials rotate-key`), and
//! their translation into [`crate::config::GoogleAuth`] and [`crate::vault::Vault`].

use clap::{Args, ValueEnum};

use crate::config::{self, ConfigError, GoogleAuth};

/// Who owns course calendars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthModeArg {
    /// Per-user OAuth refresh tokens from google_credentials (calendars made by another app).
    Oauth,
    /// A service account owns every course calendar and shares it with the student.
    ServiceAccount,
    /// The service account acts as each student (domain-wide delegation); calendars live in the student's account.
    Delegated,
}

impl AuthModeArg {
    /// The value of `CALSYNC_GOOGLE_AUTH_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthModeArg::Oauth => "oauth",
            AuthModeArg::ServiceAccount => "service-account",
            AuthModeArg::Delegated => "delegated",
        }
    }
}

/// The ACL role students get on calendars calsync shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShareRoleArg {
    FreeBusyReader,
    Reader,
    Writer,
}

/// The service account's JSON key.
#[derive(Debug, Clone, Args)]
pub struct ServiceAccountKeyArgs {
    /// Service-account JSON key file (service-account and delegated modes).
    #[arg(long, env = "CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE")]
    pub google_service_account_key_file: Option<std::path::PathBuf>,
    /// Service-account JSON key itself (instead of a file).
    #[arg(
        long,
        env = "CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY",
        hide_env_values = true
    )]
    pub google_service_account_key: Option<String>,
}

impl ServiceAccountKeyArgs {
    /// The key, when one is configured (the file wins); a key that cannot be read or
    /// parsed is an error naming the file, never the content.
    pub fn key(&self) -> Result<Option<crate::google::ServiceAccountKey>, ConfigError> {
        let json = config::secret_from(
            "CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE",
            self.google_service_account_key.clone(),
            self.google_service_account_key_file.as_deref(),
        )?;
        json.map(|j| crate::google::ServiceAccountKey::from_json(j.expose()))
            .transpose()
            .map_err(ConfigError::from)
    }
}

/// The keys of the credentials at rest (per-user OAuth mode).
#[derive(Debug, Clone, Args)]
pub struct CredentialsKeyArgs {
    /// AES-256-GCM keys for stored credentials: KEY_ID:BASE64(32 bytes), comma-separated,
    /// the first encrypts (rotation: put the new key first).
    #[arg(long, env = "CALSYNC_CREDENTIALS_KEYS", hide_env_values = true)]
    pub credentials_keys: Option<String>,
    /// File with the credentials keys (one KEY_ID:BASE64 per line, the first encrypts).
    #[arg(long, env = "CALSYNC_CREDENTIALS_KEYS_FILE")]
    pub credentials_keys_file: Option<std::path::PathBuf>,
    /// ASCII-armored OpenPGP private key that opens tokens the database sealed.
    #[arg(long, env = "CALSYNC_CREDENTIALS_SEALING_KEY", hide_env_values = true)]
    pub credentials_sealing_key: Option<String>,
    /// File with the sealing private key.
    #[arg(long, env = "CALSYNC_CREDENTIALS_SEALING_KEY_FILE")]
    pub credentials_sealing_key_file: Option<std::path::PathBuf>,
    /// Run the per-user OAuth mode without credentials keys, storing Google tokens
    /// unencrypted (development only; refused otherwise).
    #[arg(long, env = "CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT")]
    pub credentials_allow_plaintext: bool,
}

impl CredentialsKeyArgs {
    /// The credentials vault (keys from variables or files; either may be absent).
    pub fn vault(&self) -> Result<crate::vault::Vault, ConfigError> {
        let keys = config::secret_from(
            "CALSYNC_CREDENTIALS_KEYS_FILE",
            self.credentials_keys.clone(),
            self.credentials_keys_file.as_deref(),
        )?;
        let keyring = match keys {
            Some(k) => crate::vault::Keyring::parse(k.expose())?,
            None => None,
        };
        let sealing = config::secret_from(
            "CALSYNC_CREDENTIALS_SEALING_KEY_FILE",
            self.credentials_sealing_key.clone(),
            self.credentials_sealing_key_file.as_deref(),
        )?;
        Ok(crate::vault::Vault::new(keyring, sealing))
    }
}

/// How calsync authenticates to Google and protects stored credentials.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Who owns course calendars: oauth (per-user tokens), service-account, delegated.
    #[arg(long, env = "CALSYNC_GOOGLE_AUTH_MODE", value_enum, default_value_t = AuthModeArg::Oauth)]
    pub google_auth_mode: AuthModeArg,
    #[command(flatten)]
    pub service_account: ServiceAccountKeyArgs,
    /// Name of the course calendars calsync creates.
    #[arg(long, env = "CALSYNC_CALENDAR_SUMMARY", default_value = "Courses")]
    pub calendar_summary: String,
    /// Time zone of the calendars calsync creates (default: the school's).
    #[arg(long, env = "CALSYNC_CALENDAR_TIME_ZONE")]
    pub calendar_time_zone: Option<chrono_tz::Tz>,
    /// What students may do with the calendar calsync shares with them.
    #[arg(long, env = "CALSYNC_CALENDAR_SHARE_ROLE", value_enum, default_value_t = ShareRoleArg::Reader)]
    pub calendar_share_role: ShareRoleArg,
    /// Let Google e-mail students when their calendar is shared with them.
    #[arg(long, env = "CALSYNC_CALENDAR_SHARE_NOTIFY")]
    pub calendar_share_notify: bool,
    #[command(flatten)]
    pub credentials: CredentialsKeyArgs,
}

impl AuthArgs {
    /// The authentication settings, validated: oauth needs credentials keys (unless
    /// plain storage is explicitly allowed), the service-account modes a readable key.
    pub fn into_auth(self, school_time_zone: chrono_tz::Tz) -> Result<GoogleAuth, ConfigError> {
        let delegate = match self.google_auth_mode {
            AuthModeArg::Oauth => {
                return GoogleAuth::oauth(
                    self.credentials.vault()?,
                    self.credentials.credentials_allow_plaintext,
                );
            }
            AuthModeArg::ServiceAccount => false,
            AuthModeArg::Delegated => true,
        };
        let key = self
            .service_account
            .key()?
            .ok_or(ConfigError::NoServiceAccountKey(
                self.google_auth_mode.as_str(),
            ))?;
        let share_role = match self.calendar_share_role {
            ShareRoleArg::FreeBusyReader => crate::backend::AccessRole::FreeBusyReader,
            ShareRoleArg::Reader => crate::backend::AccessRole::Reader,
            ShareRoleArg::Writer => crate::backend::AccessRole::Writer,
        };
        Ok(GoogleAuth::ServiceAccount {
            key,
            delegate,
            provisioning: crate::provision::ProvisionSettings {
                summary: self.calendar_summary,
                time_zone: self
                    .calendar_time_zone
                    .unwrap_or(school_time_zone)
                    .name()
                    .to_string(),
                share_role,
                notify: self.calendar_share_notify,
            },
        })
    }
}
