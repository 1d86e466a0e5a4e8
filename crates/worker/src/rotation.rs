//! `calsync credentials rotate-key`: re-encrypt every stored credential under the
//! active key, online, in batches. Each row is replaced only if it still holds what was
//! read (compare-and-swap), so a sync that re-encrypts or refreshes the same row
//! meanwhile, or a new token written by the sign-in flow, always wins; the token
//! reference is kept, so nobody is flagged. Also the migration path: database-sealed
//! and legacy plain rows are encrypted the same way.

use calsync_domain::{DomainError, credentials};
use serde::Serialize;
use sqlx::PgPool;

use crate::vault::{Column, Vault};

/// What a rotation did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RotationReport {
    pub reencrypted: u64,
    /// Rows changed by someone else between read and write (left to them).
    pub changed_meanwhile: u64,
    /// Rows whose refresh token no configured key opens (left as they are; their users
    /// get `needs_reauth` with the reason at their next sync).
    pub unreadable: Vec<UnreadableRow>,
}

/// A row rotation could not open.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnreadableRow {
    pub user_id: i64,
    /// Why (never the value): e.g. encrypted with a key this process does not have.
    pub reason: String,
}

impl RotationReport {
    /// The distinct reasons rows could not be opened, each with its users.
    pub fn unreadable_by_reason(&self) -> Vec<(String, Vec<i64>)> {
        let mut by: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
        for r in &self.unreadable {
            by.entry(&r.reason).or_default().push(r.user_id);
        }
        by.into_iter().map(|(r, u)| (r.to_string(), u)).collect()
    }
}

/// Why a rotation could not run.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(
        "no credentials keys configured: set CALSYNC_CREDENTIALS_KEYS (the new key first, then the old ones)"
    )]
    NoKeys,
    #[error("{0}")]
    Database(#[from] DomainError),
}

/// Re-encrypt every row not yet AEAD-encrypted under the active key, `batch` rows at a time.
pub async fn rotate(
    pool: &PgPool,
    vault: &Vault,
    batch: i64,
) -> Result<RotationReport, RotationError> {
    let active = vault
        .active_key_id()
        .ok_or(RotationError::NoKeys)?
        .to_string();
    let mut report = RotationReport::default();
    let mut after = 0i64;
    // Rows a concurrent sync changed are picked up by another round (a few at most).
    let mut rounds = 1;
    let mut raced_this_round = 0;
    loop {
        let rows = credentials::needing_reencryption(pool, &active, after, batch).await?;
        let Some(last) = rows.last() else {
            if raced_this_round > 0 && rounds < 10 {
                rounds += 1;
                raced_this_round = 0;
                after = 0;
                continue;
            }
            report.unreadable.sort_by_key(|r| r.user_id);
            report.unreadable.dedup_by_key(|r| r.user_id);
            return Ok(report);
        };
        after = last.user_id;
        for row in rows {
            let user_id = row.user_id;
            let refresh = match vault
                .open(pool, user_id, Column::RefreshToken, &row.refresh_token)
                .await
            {
                Ok(o) => o.secret,
                Err(e) if e.is_unreadable() => {
                    tracing::warn!(user_id, error = %e, "stored refresh token cannot be decrypted; left as it is");
                    report.unreadable.push(UnreadableRow {
                        user_id,
                        reason: e.to_string(),
                    });
                    continue;
                }
                Err(e) => return Err(RotationError::Database(into_domain(e))),
            };
            // An access token that does not open is only a cache: drop it.
            let access = match &row.access_token {
                Some(env) => vault
                    .open(pool, user_id, Column::AccessToken, env)
                    .await
                    .ok()
                    .map(|o| vault.seal(user_id, Column::AccessToken, "", &o.secret)),
                None => None,
            };
            let token_ref = Vault::token_ref(row.refresh_token.expose()).to_string();
            let new_refresh = vault.seal(user_id, Column::RefreshToken, &token_ref, &refresh);
            if credentials::replace_envelopes(
                pool,
                user_id,
                &row.refresh_token,
                &new_refresh,
                row.access_token.as_ref(),
                access.as_ref(),
            )
            .await?
            {
                report.reencrypted += 1;
            } else {
                report.changed_meanwhile += 1;
                raced_this_round += 1;
            }
        }
    }
}

fn into_domain(e: crate::vault::VaultError) -> DomainError {
    match e {
        crate::vault::VaultError::Database(d) => d,
        other => DomainError::InvalidData(other.to_string()),
    }
}
