//! How the deployment's Google credentials stand, per calendar mode: what a worker warns
//! about at startup and what `calsync status` shows.
//!
//! * Per-user OAuth: how the stored refresh tokens are protected (encrypted, sealed by
//!   the database and waiting for a worker, legacy plain), which credentials keys they
//!   are encrypted under, whether a sealing key is registered — and, given the keys a
//!   process runs with, whether they open everything: tokens under a key id it lacks, a
//!   sealing key that does not open the newest registered one, no keys at all.
//! * Service account: whether the key is readable, and how far provisioning has got
//!   (calendars owned, not yet shared, users waiting for one, cleanup pending).
//!
//! Reads only; all SQL is in `calsync_domain`.

use calsync_domain::{
    DomainError, credentials, owned_calendars,
    settings::{self, CalendarMode},
    users,
};
use serde::Serialize;
use sqlx::PgPool;

use crate::{config::ConfigError, google::ServiceAccountKey, vault::Vault};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Worth knowing; nothing is wrong.
    Note,
    /// Something is or will go wrong (students needing re-authentication, tokens in
    /// plain text) until an operator acts.
    Warning,
}

/// One thing an operator should know, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl Finding {
    fn note(message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Note,
            message: message.into(),
        }
    }
    fn warning(message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            message: message.into(),
        }
    }
}

/// The per-user OAuth mode's credentials.
#[derive(Debug, Clone, Serialize)]
pub struct OauthStatus {
    /// Students whose refresh token Google refused (or that no key opens).
    pub needs_reauth: i64,
    /// Refresh tokens by protection.
    pub refresh_tokens: credentials::EnvelopeCounts,
    /// Encrypted envelopes per credentials key id.
    pub key_usage: Vec<credentials::KeyUsage>,
    /// The registered sealing keys, the one in use first.
    pub sealing_keys: Vec<String>,
    /// The credentials keys this process was given (ids only), the active one first;
    /// `None` when it was given none to check.
    pub configured_keys: Option<Vec<String>>,
    pub findings: Vec<Finding>,
}

/// Check the stored credentials against `vault` (the keys this process runs with), or
/// only what the database shows when `vault` is `None`.
pub async fn oauth(pool: &PgPool, vault: Option<&Vault>) -> Result<OauthStatus, DomainError> {
    let refresh_tokens = credentials::envelope_counts(pool).await?;
    let key_usage = credentials::key_usage(pool).await?;
    let sealing_keys: Vec<String> = credentials::sealing_keys(pool)
        .await?
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    let needs_reauth = users::counts(pool).await?.needs_reauth;
    let mut findings = Vec::new();
    let newest_sealing = sealing_keys.first();
    match newest_sealing {
        None => findings.push(Finding::warning(
            "no sealing key is registered: calsync.store_credentials refuses, and tokens other services write \
             into google_credentials are kept in plain text; register one with \
             `calsync credentials add-sealing-key PUBLIC_KEY_FILE` (docs/operations.md, \"Credentials at rest\")",
        )),
        Some(id) if vault.is_none() => {
            findings.push(Finding::note(format!("sealing key {id} is registered")))
        }
        Some(_) => {}
    }
    if refresh_tokens.plain > 0 {
        findings.push(Finding::warning(format!(
            "{} refresh tokens are stored in plain text (written before a sealing key was registered): \
             run `calsync credentials rotate-key` with CALSYNC_CREDENTIALS_KEYS set to encrypt them",
            refresh_tokens.plain
        )));
    }
    let configured_keys = vault.map(Vault::key_ids);
    if let Some(vault) = vault {
        let active = vault.active_key_id();
        match active {
            None => findings.push(Finding::warning(
                "no credentials keys (CALSYNC_CREDENTIALS_KEYS): Google tokens are stored unencrypted \
                 (CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT)",
            )),
            Some(active) => {
                for usage in &key_usage {
                    let n = usage.refresh_tokens + usage.access_tokens;
                    if !vault.has_key(&usage.key_id) && usage.refresh_tokens > 0 {
                        findings.push(Finding::warning(format!(
                            "{} refresh tokens are encrypted with key {:?}, which is not configured here: \
                             their students get needs_reauth at their next sync unless the key is added back to \
                             CALSYNC_CREDENTIALS_KEYS",
                            usage.refresh_tokens, usage.key_id
                        )));
                    } else if !vault.has_key(&usage.key_id) {
                        findings.push(Finding::note(format!(
                            "{} cached access tokens are encrypted with key {:?}, which is not configured here: \
                             they are fetched again when needed",
                            usage.access_tokens, usage.key_id
                        )));
                    } else if usage.key_id != active {
                        findings.push(Finding::note(format!(
                            "{n} stored tokens are still encrypted with the old key {:?}: run \
                             `calsync credentials rotate-key`, then remove it from CALSYNC_CREDENTIALS_KEYS",
                            usage.key_id
                        )));
                    }
                }
            }
        }
        if let Some(id) = newest_sealing {
            match vault.sealing_key() {
                None => findings.push(Finding::warning(format!(
                    "sealing key {id} is registered but this process has no sealing private key \
                     (CALSYNC_CREDENTIALS_SEALING_KEY_FILE): tokens the database seals cannot be opened and their \
                     students get needs_reauth"
                ))),
                Some(private) => match credentials::sealing_key_opens(pool, private).await? {
                    Some(false) => findings.push(Finding::warning(format!(
                        "the configured sealing private key does not open the newest registered sealing key {id} \
                         (an old or wrong key): tokens sealed from now on cannot be opened and their students get \
                         needs_reauth; configure the private key of {id} in CALSYNC_CREDENTIALS_SEALING_KEY_FILE"
                    ))),
                    _ => findings.push(Finding::note(format!(
                        "sealing key {id} is registered and this process' private key opens it"
                    ))),
                },
            }
        }
    } else {
        findings.push(Finding::note(
            "no credentials keys in this environment: set CALSYNC_CREDENTIALS_KEYS (and \
             CALSYNC_CREDENTIALS_SEALING_KEY_FILE) as for the workers to check that they open every stored token",
        ));
    }
    if refresh_tokens.sealed > 0 {
        findings.push(Finding::note(format!(
            "{} refresh tokens are sealed by the database and wait for their next sync (or \
             `calsync credentials rotate-key`) to be re-encrypted",
            refresh_tokens.sealed
        )));
    }
    if needs_reauth > 0 {
        findings.push(Finding::note(format!(
            "students who must sign in to Google again: {needs_reauth} (dashboard: /users?status=needs_reauth)"
        )));
    }
    Ok(OauthStatus {
        needs_reauth,
        refresh_tokens,
        key_usage,
        sealing_keys,
        configured_keys,
        findings,
    })
}

/// The service account's key as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    Readable { client_email: String },
    Unreadable { error: String },
    NotConfigured,
}

impl KeyState {
    /// From the outcome of reading the configured key.
    pub fn of(key: Result<Option<ServiceAccountKey>, ConfigError>) -> KeyState {
        match key {
            Ok(Some(k)) => KeyState::Readable {
                client_email: k.client_email,
            },
            Ok(None) => KeyState::NotConfigured,
            Err(e) => KeyState::Unreadable {
                error: e.to_string(),
            },
        }
    }
}

/// The service-account modes' state.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceAccountStatus {
    pub key: KeyState,
    pub provisioning: owned_calendars::ProvisioningSummary,
    pub findings: Vec<Finding>,
}

/// Provisioning progress and the key's state.
pub async fn service_account(
    pool: &PgPool,
    key: KeyState,
) -> Result<ServiceAccountStatus, DomainError> {
    let provisioning = owned_calendars::summary(pool).await?;
    let mut findings = Vec::new();
    match &key {
        KeyState::Readable { .. } => {}
        KeyState::Unreadable { error } => findings.push(Finding::warning(format!(
            "the service-account key cannot be used: {error}; workers with it refuse to start"
        ))),
        KeyState::NotConfigured => findings.push(Finding::note(
            "no service-account key in this environment: set CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE as for the \
             workers to check it",
        )),
    }
    if provisioning.users_pending > 0 {
        findings.push(Finding::note(format!(
            "{} users have no calendar yet: their next sync creates and shares one",
            provisioning.users_pending
        )));
    }
    if provisioning.not_shared > 0 {
        findings.push(Finding::note(format!(
            "{} calendars are not yet shared with their student: their next sync shares them",
            provisioning.not_shared
        )));
    }
    if provisioning.cleanup_pending > 0 {
        findings.push(Finding::note(format!(
            "{} calendars wait for cleanup (after the next nightly pass, or `calsync cleanup`)",
            provisioning.cleanup_pending
        )));
    }
    Ok(ServiceAccountStatus {
        key,
        provisioning,
        findings,
    })
}

/// The mode the database runs in, with that mode's state.
#[derive(Debug, Clone, Serialize)]
pub struct AuthStatus {
    /// As recorded by the workers at startup (`calsync.settings`).
    pub calendar_mode: CalendarMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OauthStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountStatus>,
}

impl AuthStatus {
    /// Every finding of the mode.
    pub fn findings(&self) -> &[Finding] {
        match (&self.oauth, &self.service_account) {
            (Some(o), _) => &o.findings,
            (_, Some(s)) => &s.findings,
            _ => &[],
        }
    }
}

/// The state of the mode the database records, checked with the keys given (`vault`
/// for per-user OAuth, `key` for the service-account modes).
pub async fn status(
    pool: &PgPool,
    vault: Option<&Vault>,
    key: KeyState,
) -> Result<AuthStatus, DomainError> {
    let calendar_mode = settings::calendar_mode(pool).await?;
    let (oauth, service_account) = if calendar_mode.provisions() {
        (None, Some(service_account(pool, key).await?))
    } else {
        (Some(oauth(pool, vault).await?), None)
    };
    Ok(AuthStatus {
        calendar_mode,
        oauth,
        service_account,
    })
}

/// Log what a worker starting in per-user OAuth mode should know about its keys and the
/// stored credentials (warnings as warnings). A database error only skips the check.
pub async fn log_oauth_findings(pool: &PgPool, vault: &Vault) {
    match oauth(pool, Some(vault)).await {
        Ok(status) => {
            for f in &status.findings {
                match f.level {
                    Level::Warning => tracing::warn!("credentials: {}", f.message),
                    Level::Note => tracing::info!("credentials: {}", f.message),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not check the stored credentials"),
    }
}
