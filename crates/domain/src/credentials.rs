//! Per-user Google OAuth credentials (refresh token, cached access token), stored as
//! envelopes, never as plain tokens (see `migrations/…_encrypted_credentials.sql`):
//!
//! * `calsync:v1:<ref>:pgp:<base64>` — sealed by the database (trigger
//!   `credentials_00_seal`, or [`store`] through `calsync.store_credentials`) with
//!   `pgp_pub_encrypt` under the newest registered sealing key;
//! * `calsync:v1:<ref>:aead:<key id>:<base64>` — encrypted by the worker (AES-256-GCM);
//! * `calsync:v1:<ref>:plain:<token>` — legacy, written before a sealing key existed.
//!
//! This module only moves envelopes; opening and sealing them is the worker's
//! (`calsync_worker::vault`), which holds the keys. The database never holds a key that
//! opens them: it has public sealing keys only, and [`unseal`] receives the private key
//! as a bind parameter of one statement.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::{DomainError, queue};

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

/// A row of `google_credentials`: envelopes, not tokens.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: i64,
    /// The refresh token's envelope.
    pub refresh_token: Secret,
    /// The cached access token's envelope.
    pub access_token: Option<Secret>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

type CredentialsRow = (i64, String, Option<String>, Option<DateTime<Utc>>, bool);

fn from_row((user_id, refresh, access, expires, revoked): CredentialsRow) -> Credentials {
    Credentials {
        user_id,
        refresh_token: Secret(refresh),
        access_token: access.map(Secret),
        access_token_expires_at: expires,
        revoked,
    }
}

/// Load a user's credentials.
pub async fn get(db: impl PgExecutor<'_>, user_id: i64) -> Result<Credentials, DomainError> {
    let row: Option<CredentialsRow> = sqlx::query_as(
        "SELECT user_id, refresh_token, access_token, access_token_expires_at, revoked \
         FROM google_credentials WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(from_row(row.ok_or(DomainError::NoCredentials(user_id))?))
}

/// Store (or replace) a user's refresh token, as the sign-in flow does (the trigger
/// seals it, or keeps a legacy `plain` envelope while no sealing key is registered).
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

/// Store credentials through `calsync.store_credentials` (what other services call):
/// refused while no sealing key is registered, so a token is never kept in plain text.
pub async fn store(
    db: impl PgExecutor<'_>,
    user_id: i64,
    refresh_token: &Secret,
) -> Result<(), DomainError> {
    sqlx::query("SELECT calsync.store_credentials($1, $2)")
        .bind(user_id)
        .bind(refresh_token.expose())
        .execute(db)
        .await?;
    Ok(())
}

/// Cache a freshly obtained access token (its envelope).
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

/// Replace a row's envelopes with re-encrypted ones, only if the row still holds
/// `old_refresh` and `old_access` (a new token written meanwhile wins). The token
/// reference is unchanged, so this flags nobody. Returns whether the row was replaced.
pub async fn replace_envelopes(
    db: impl PgExecutor<'_>,
    user_id: i64,
    old_refresh: &Secret,
    new_refresh: &Secret,
    old_access: Option<&Secret>,
    new_access: Option<&Secret>,
) -> Result<bool, DomainError> {
    let n = sqlx::query(
        "UPDATE google_credentials SET refresh_token = $3, access_token = $5 \
         WHERE user_id = $1 AND refresh_token = $2 AND access_token IS NOT DISTINCT FROM $4",
    )
    .bind(user_id)
    .bind(old_refresh.expose())
    .bind(new_refresh.expose())
    .bind(old_access.map(Secret::expose))
    .bind(new_access.map(Secret::expose))
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
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

/// Open a database-sealed value (the base64 payload of a `pgp` envelope) with the
/// sealing key's private half (ASCII-armored OpenPGP secret key), passed as a bind
/// parameter of this one statement. `None` when the key does not open it.
pub async fn unseal(
    db: impl PgExecutor<'_>,
    sealed_base64: &str,
    private_key_armored: &Secret,
) -> Result<Option<Secret>, DomainError> {
    let res: Result<String, sqlx::Error> =
        sqlx::query_scalar("SELECT pgp_pub_decrypt(decode($1, 'base64'), dearmor($2))")
            .bind(sealed_base64)
            .bind(private_key_armored.expose())
            .fetch_one(db)
            .await;
    match res {
        Ok(token) => Ok(Some(Secret(token))),
        // pgcrypto: wrong key, corrupt data, not a PGP message (SQLSTATE 39000).
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("39000") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A registered sealing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SealingKey {
    pub key_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// Register an ASCII-armored OpenPGP public key (RSA) to seal incoming tokens with (the
/// newest registered key is used), audited as `add_sealing_key`. Returns its key id.
/// A key pgcrypto cannot use is refused with [`DomainError::InvalidInput`].
pub async fn add_sealing_key(
    pool: &PgPool,
    public_key_armored: &str,
    actor: &str,
) -> Result<String, DomainError> {
    if public_key_armored.contains("PRIVATE KEY") {
        return Err(DomainError::InvalidInput(
            "that is a private key: register the public key (gpg --armor --export)".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    // Sealing a probe proves pgcrypto can use the key (RSA or Elgamal with an encryption key).
    let key_id: Result<String, sqlx::Error> =
        sqlx::query_scalar("SELECT pgp_key_id(pgp_pub_encrypt('probe', dearmor($1)))")
            .bind(public_key_armored)
            .fetch_one(&mut *tx)
            .await;
    let key_id = match key_id {
        Ok(id) => id,
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("39000" | "22023" | "22000")) =>
        {
            return Err(DomainError::InvalidInput(format!(
                "not a usable OpenPGP public key ({}); pgcrypto needs an RSA (or Elgamal) encryption key",
                e.message()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    sqlx::query(
        "INSERT INTO calsync.credential_sealing_keys (key_id, public_key, created_by) VALUES ($1, $2, $3) \
         ON CONFLICT (key_id) DO UPDATE SET created_at = clock_timestamp(), created_by = EXCLUDED.created_by",
    )
    .bind(&key_id)
    .bind(public_key_armored)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    queue::audit(
        &mut *tx,
        actor,
        "add_sealing_key",
        serde_json::json!({"key_id": key_id}),
    )
    .await?;
    tx.commit().await?;
    Ok(key_id)
}

/// The registered sealing keys, newest (the one in use) first.
pub async fn sealing_keys(db: impl PgExecutor<'_>) -> Result<Vec<SealingKey>, DomainError> {
    Ok(sqlx::query_as(
        "SELECT key_id, created_at, created_by FROM calsync.credential_sealing_keys \
         ORDER BY created_at DESC, key_id",
    )
    .fetch_all(db)
    .await?)
}

/// Up to `limit` rows (user id above `after`, in id order) holding an envelope that is
/// not AEAD-encrypted under `active_key_id` — what `calsync credentials rotate-key`
/// re-encrypts, batch by batch.
pub async fn needing_reencryption(
    db: impl PgExecutor<'_>,
    active_key_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Credentials>, DomainError> {
    let rows: Vec<CredentialsRow> = sqlx::query_as(
        "SELECT user_id, refresh_token, access_token, access_token_expires_at, revoked \
         FROM google_credentials \
         WHERE user_id > $2 AND ( \
             split_part(refresh_token, ':', 4) <> 'aead' OR split_part(refresh_token, ':', 5) <> $1 \
             OR (access_token IS NOT NULL AND (split_part(access_token, ':', 4) <> 'aead' \
                                               OR split_part(access_token, ':', 5) <> $1))) \
         ORDER BY user_id LIMIT $3",
    )
    .bind(active_key_id)
    .bind(after)
    .bind(limit.max(1))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// How the stored refresh tokens are protected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EnvelopeCounts {
    /// Sealed by the database, waiting for the worker to re-encrypt them.
    pub sealed: i64,
    /// Encrypted by calsync (AEAD).
    pub encrypted: i64,
    /// Legacy plain tokens (written before a sealing key was registered).
    pub plain: i64,
}

/// Count refresh tokens by protection.
pub async fn envelope_counts(db: impl PgExecutor<'_>) -> Result<EnvelopeCounts, DomainError> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE split_part(refresh_token, ':', 4) = 'pgp') AS sealed, \
                count(*) FILTER (WHERE split_part(refresh_token, ':', 4) = 'aead') AS encrypted, \
                count(*) FILTER (WHERE split_part(refresh_token, ':', 4) NOT IN ('pgp', 'aead')) AS plain \
         FROM google_credentials",
    )
    .fetch_one(db)
    .await?)
}

/// Stored envelopes encrypted under one AEAD key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct KeyUsage {
    pub key_id: String,
    pub refresh_tokens: i64,
    pub access_tokens: i64,
}

/// Which AEAD key ids the stored envelopes are encrypted under, and how many of each
/// (what a deployment must keep configured until `rotate-key` has moved them).
pub async fn key_usage(db: impl PgExecutor<'_>) -> Result<Vec<KeyUsage>, DomainError> {
    Ok(sqlx::query_as(
        "SELECT key_id, sum(r)::bigint AS refresh_tokens, sum(a)::bigint AS access_tokens FROM ( \
             SELECT split_part(refresh_token, ':', 5) AS key_id, 1 AS r, 0 AS a FROM google_credentials \
              WHERE split_part(refresh_token, ':', 4) = 'aead' \
             UNION ALL \
             SELECT split_part(access_token, ':', 5), 0, 1 FROM google_credentials \
              WHERE split_part(access_token, ':', 4) = 'aead') k \
         GROUP BY key_id ORDER BY key_id",
    )
    .fetch_all(db)
    .await?)
}

/// Whether `private_key_armored` opens what the newest registered sealing key seals
/// (a probe sealed and opened in one statement); `None` when no sealing key is
/// registered. `Some(false)` means the worker's sealing key is old or wrong: tokens the
/// database seals from now on will not open.
pub async fn sealing_key_opens(
    db: impl PgExecutor<'_>,
    private_key_armored: &Secret,
) -> Result<Option<bool>, DomainError> {
    let res: Result<Option<bool>, sqlx::Error> = sqlx::query_scalar(
        "SELECT pgp_pub_decrypt(pgp_pub_encrypt('calsync-probe', dearmor(public_key)), dearmor($1)) = 'calsync-probe' \
         FROM calsync.credential_sealing_keys ORDER BY created_at DESC, key_id LIMIT 1",
    )
    .bind(private_key_armored.expose())
    .fetch_optional(db)
    .await;
    match res {
        Ok(v) => Ok(v),
        // pgcrypto: wrong key (39000), or not a key at all (22023 / 22000).
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("39000" | "22023" | "22000")) =>
        {
            Ok(Some(false))
        }
        Err(e) => Err(e.into()),
    }
}
