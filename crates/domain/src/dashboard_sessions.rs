//! Server-side dashboard sessions (`calsync.dashboard_sessions`), so a session can be
//! ended: by logout (the row is deleted) or by rotating the token that created it (the
//! stored token fingerprint no longer matches). The dashboard computes the hashes and
//! fingerprints; this module only stores and finds them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::DomainError;

/// What a dashboard caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including retry, discard, run now, sync now.
    Admin,
    /// Look, never touch.
    ReadOnly,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "readonly",
        }
    }
}

/// A session to record at login.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// SHA-256 of the random session id the cookie carries.
    pub id_hash: &'a [u8],
    pub role: Role,
    /// Names the key the fingerprint was made with.
    pub key_id: &'a [u8],
    /// Keyed fingerprint of the token that logged in.
    pub token_fingerprint: &'a [u8],
    /// The client's address, for operators reading the table.
    pub client_addr: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
}

/// A live (unexpired) session.
#[derive(Debug, Clone, FromRow)]
pub struct StoredSession {
    pub role: Role,
    pub key_id: Vec<u8>,
    pub token_fingerprint: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Record a new session.
pub async fn create(db: impl PgExecutor<'_>, s: &NewSession<'_>) -> Result<(), DomainError> {
    sqlx::query(
        "INSERT INTO calsync.dashboard_sessions (id_hash, role, key_id, token_fingerprint, client_addr, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(s.id_hash)
    .bind(s.role)
    .bind(s.key_id)
    .bind(s.token_fingerprint)
    .bind(s.client_addr)
    .bind(s.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// The unexpired session with this id hash, if any.
pub async fn find(
    db: impl PgExecutor<'_>,
    id_hash: &[u8],
) -> Result<Option<StoredSession>, DomainError> {
    Ok(sqlx::query_as(
        "SELECT role, key_id, token_fingerprint, created_at, expires_at FROM calsync.dashboard_sessions \
         WHERE id_hash = $1 AND expires_at > now()",
    )
    .bind(id_hash)
    .fetch_optional(db)
    .await?)
}

/// End one session. Returns whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, id_hash: &[u8]) -> Result<bool, DomainError> {
    Ok(
        sqlx::query("DELETE FROM calsync.dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(db)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Delete expired sessions, and the sessions made with key `key_id` whose token
/// fingerprint is not the current one of their role (`None`: the role has no token
/// now). Sessions made with another key (another process' secret) are left alone
/// unless expired. Returns how many were deleted.
pub async fn purge(
    db: impl PgExecutor<'_>,
    key_id: &[u8],
    admin_fingerprint: Option<&[u8]>,
    readonly_fingerprint: Option<&[u8]>,
) -> Result<u64, DomainError> {
    Ok(sqlx::query(
        "DELETE FROM calsync.dashboard_sessions WHERE expires_at <= now() OR (key_id = $1 AND NOT coalesce( \
             (role = 'admin' AND token_fingerprint = $2) OR (role = 'readonly' AND token_fingerprint = $3), false))",
    )
    .bind(key_id)
    .bind(admin_fingerprint)
    .bind(readonly_fingerprint)
    .execute(db)
    .await?
    .rows_affected())
}
