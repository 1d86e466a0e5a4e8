//! The read side of `calsync.audit_log` (operator actions). Rows are written by the
//! actions themselves, in their own transaction (see [`crate::queue::audit`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::DomainError;

/// One operator action.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who did it (`dashboard:admin`, `cli`, …).
    pub actor: String,
    /// What was done (`retry_jobs`, `discard_jobs`, `run_now`, …).
    pub action: String,
    /// Details of the action as JSON.
    pub detail: serde_json::Value,
}

/// The newest entries first, with ids strictly below `before` (the last id of the
/// previous page), at most `limit` of them (a primary-key range scan).
pub async fn recent(
    db: impl PgExecutor<'_>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, DomainError> {
    Ok(sqlx::query_as(
        "SELECT id, at, actor, action, detail FROM calsync.audit_log \
         WHERE id < coalesce($1, 9223372036854775807) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?)
}
