//! Per-user Google OAuth credentials (refresh token, cached access token).

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::DomainError;

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A row of `google_credentials`.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: i64,
    pub refresh_token: Secret,
    pub access_token: Option<Secret>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

type CredentialsRow = (i64, String, Option<String>, Option<DateTime<Utc>>, bool);

/// Load a user's credentials.
pub async fn get(db: impl PgExecutor<'_>, user_id: i64) -> Result<Credentials, DomainError> {
    let row: Option<CredentialsRow> = sqlx::query_as(
        "SELECT user_id, refresh_token, access_token, access_token_expires_at, revoked \
         FROM google_credentials WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    let (user_id, refresh, access, expires, revoked) =
        row.ok_or(DomainError::NoCredentials(user_id))?;
    Ok(Credentials {
        user_id,
        refresh_token: Secret(refresh),
        access_token: access.map(Secret),
        access_token_expires_at: expires,
        revoked,
    })
}

/// Store (or replace) a user's refresh token, as the sign-in flow does.
pub async fn upsert_refresh_token(
    db: impl PgExecutor<'_>,
    user_id: i64,
    refresh_token: &str,
) -> Result<(), DomainError> {
    sqlx::query(
        "INSERT INTO google_credentials (user_id, refresh_token) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET refresh_token = EXCLUDED.refresh_token, revoked = false, \
           access_token = NULL, access_token_expires_at = NULL, updated_at = now()",
    )
    .bind(user_id)
    .bind(refresh_token)
    .execute(db)
    .await?;
    Ok(())
}

/// Cache a freshly obtained access token.
pub async fn store_access_token(
    db: impl PgExecutor<'_>,
    user_id: i64,
    access_token: &Secret,
    expires_at: DateTime<Utc>,
) -> Result<(), DomainError> {
    sqlx::query(
        "UPDATE google_credentials SET access_token = $2, access_token_expires_at = $3, updated_at = now() \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(access_token.expose())
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Forget a cached access token (Google rejected it).
pub async fn clear_access_token(db: impl PgExecutor<'_>, user_id: i64) -> Result<(), DomainError> {
    sqlx::query(
        "UPDATE google_credentials SET access_token = NULL, access_token_expires_at = NULL, updated_at = now() \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Mark the refresh token revoked (Google answered `invalid_grant`).
pub async fn mark_revoked(db: impl PgExecutor<'_>, user_id: i64) -> Result<(), DomainError> {
    sqlx::query(
        "UPDATE google_credentials SET revoked = true, access_token = NULL, access_token_expires_at = NULL, \
         updated_at = now() WHERE user_id = $1",
    )
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(())
}
