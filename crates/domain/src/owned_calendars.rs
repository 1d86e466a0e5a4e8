//! Calendars calsync owns (service-account modes): the record that makes provisioning
//! idempotent across crashes, and the marker by which a calendar created but never
//! recorded is found again.
//!
//! Provisioning order (see the worker's `provision` module): look for the user's active
//! owned calendar here; else look for a calendar carrying the user's [`marker`] in the
//! owner's calendar list (a crash between create and record); else create one with the
//! marker in its description; record it here at once; share it; then store its id in
//! `users.google_course_calendar_id` with a `calendar_provisioned` audit row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::{DomainError, queue};

/// The deterministic marker calsync writes into the description of a calendar it creates
/// for `user_id` in the installation `installation_id`.
pub fn marker(installation_id: &str, user_id: i64) -> String {
    format!("[calsync:{installation_id}:user:{user_id}]")
}

/// The user id a calendar description's marker names, for this installation.
pub fn marker_user(installation_id: &str, description: &str) -> Option<i64> {
    let prefix = format!("[calsync:{installation_id}:user:");
    let start = description.find(&prefix)? + prefix.len();
    let rest = &description[start..];
    let end = rest.find(']')?;
    rest[..end].parse().ok().filter(|id: &i64| *id > 0)
}

/// A row of `calsync.owned_calendars`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OwnedCalendar {
    pub calendar_id: String,
    pub user_id: i64,
    pub owner: String,
    pub shared_with: Option<String>,
    pub shared_at: Option<DateTime<Utc>>,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "calendar_id, user_id, owner, shared_with, shared_at, state, created_at";

/// The user's active owned calendar, if any (the newest).
pub async fn active_for_user(
    db: impl PgExecutor<'_>,
    user_id: i64,
) -> Result<Option<OwnedCalendar>, DomainError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calsync.owned_calendars WHERE user_id = $1 AND state = 'active' \
         ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(user_id)
    .fetch_optional(db)
    .await?)
}

/// One owned calendar by id.
pub async fn get(
    db: impl PgExecutor<'_>,
    calendar_id: &str,
) -> Result<Option<OwnedCalendar>, DomainError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calsync.owned_calendars WHERE calendar_id = $1"
    )))
    .bind(calendar_id)
    .fetch_optional(db)
    .await?)
}

/// Record a calendar created (or adopted) for `user_id`, owned by `owner`. Idempotent.
pub async fn record(
    db: impl PgExecutor<'_>,
    calendar_id: &str,
    user_id: i64,
    owner: &str,
) -> Result<(), DomainError> {
    // One statement: the calendar is recorded and the creation attempt ends together.
    sqlx::query(
        "WITH recorded AS ( \
             INSERT INTO calsync.owned_calendars (calendar_id, user_id, owner) VALUES ($1, $2, $3) \
             ON CONFLICT (calendar_id) DO NOTHING \
         ) DELETE FROM calsync.provisioning_attempts WHERE user_id = $2",
    )
    .bind(calendar_id)
    .bind(user_id)
    .bind(owner)
    .execute(db)
    .await?;
    Ok(())
}

/// Note that a calendar creation for `user_id` begins (before `calendars.insert`).
/// Returns true when an earlier creation began and was never recorded ([`record`]):
/// a crash may have left a calendar in Google, so the caller looks for it by its
/// [`marker`] before creating another. False on the usual path, where there is nothing
/// to look for (and no need to list every calendar the owner has).
pub async fn begin_creation(db: impl PgExecutor<'_>, user_id: i64) -> Result<bool, DomainError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO calsync.provisioning_attempts AS p (user_id) VALUES ($1) \
         ON CONFLICT (user_id) DO UPDATE SET started_at = now() \
         RETURNING p.xmax <> 0",
    )
    .bind(user_id)
    .fetch_one(db)
    .await?)
}

/// Record that the calendar is shared with `email`.
pub async fn mark_shared(
    db: impl PgExecutor<'_>,
    calendar_id: &str,
    email: &str,
) -> Result<(), DomainError> {
    sqlx::query(
        "UPDATE calsync.owned_calendars SET shared_with = $2, shared_at = now() WHERE calendar_id = $1",
    )
    .bind(calendar_id)
    .bind(email)
    .execute(db)
    .await?;
    Ok(())
}

/// Record that the calendar no longer exists in Google.
pub async fn mark_deleted(db: impl PgExecutor<'_>, calendar_id: &str) -> Result<(), DomainError> {
    sqlx::query(
        "UPDATE calsync.owned_calendars SET state = 'deleted', deleted_at = now() \
         WHERE calendar_id = $1 AND state <> 'deleted'",
    )
    .bind(calendar_id)
    .execute(db)
    .await?;
    Ok(())
}

/// How the user got their calendar, for the audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionReason {
    /// The user had no calendar.
    New,
    /// Their calendar was deleted in Google: a new one replaces it.
    Replaced,
}

impl ProvisionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionReason::New => "new",
            ProvisionReason::Replaced => "replaced",
        }
    }
}

/// Make `calendar_id` the user's course calendar, audited as `calendar_provisioned` by
/// `actor` in the same transaction. A replaced calendar is marked deleted (it is gone in
/// Google) and its cleanup row settled; the user's status becomes `ok` (a
/// `calendar_missing` left from per-user mode no longer applies).
pub async fn assign(
    pool: &PgPool,
    user_id: i64,
    calendar_id: &str,
    reason: ProvisionReason,
    previous: Option<&str>,
    actor: &str,
) -> Result<(), DomainError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE users SET google_course_calendar_id = $2, \
             calendar_sync_status = CASE WHEN calendar_sync_status = 'calendar_missing' THEN 'ok' \
                                         ELSE calendar_sync_status END, updated_at = now() \
         WHERE id = $1",
    )
    .bind(user_id)
    .bind(calendar_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(DomainError::UnknownUser(user_id));
    }
    if let Some(old) = previous.filter(|p| *p != calendar_id) {
        mark_deleted(&mut *tx, old).await?;
        sqlx::query(
            "UPDATE calsync.calendar_cleanup SET done_at = now(), outcome = 'calendar was already gone' \
             WHERE calendar_id = $1 AND done_at IS NULL",
        )
        .bind(old)
        .execute(&mut *tx)
        .await?;
    }
    queue::audit(
        &mut *tx,
        actor,
        "calendar_provisioned",
        serde_json::json!({
            "user_id": user_id,
            "calendar_id": calendar_id,
            "reason": reason.as_str(),
            "previous_calendar_id": previous,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Calendar ids calsync owns in any state (for the orphan sweep of the calendar list).
pub async fn known_ids(db: impl PgExecutor<'_>) -> Result<Vec<String>, DomainError> {
    Ok(
        sqlx::query_scalar("SELECT calendar_id FROM calsync.owned_calendars")
            .fetch_all(db)
            .await?,
    )
}

/// How far provisioning has got (for `calsync status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ProvisioningSummary {
    /// Calendars calsync owns that a user has now.
    pub active: i64,
    /// Of those, calendars not yet shared with their student (service-account mode
    /// only; the next sync shares them).
    pub not_shared: i64,
    /// Users with an e-mail and no calendar: the next sync provisions one for each.
    pub users_pending: i64,
    /// Calendars calsync owned that were deleted (in Google, or by cleanup).
    pub deleted: i64,
    /// Items in the cleanup queue not yet worked off.
    pub cleanup_pending: i64,
}

/// Count owned calendars by state, users waiting for one, and pending cleanup.
pub async fn summary(db: impl PgExecutor<'_>) -> Result<ProvisioningSummary, DomainError> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM calsync.owned_calendars WHERE state = 'active') AS active, \
                (SELECT count(*) FROM calsync.owned_calendars \
                  WHERE state = 'active' AND shared_with IS NULL \
                    AND (SELECT calendar_mode FROM calsync.settings) = 'service_account') AS not_shared, \
                (SELECT count(*) FROM users WHERE email <> '' AND \
                  (google_course_calendar_id IS NULL OR google_course_calendar_id = '')) AS users_pending, \
                (SELECT count(*) FROM calsync.owned_calendars WHERE state = 'deleted') AS deleted, \
                (SELECT count(*) FROM calsync.calendar_cleanup WHERE done_at IS NULL) AS cleanup_pending",
    )
    .fetch_one(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_their_user_only_within_their_installation() {
        let m = marker("abc123", 42);
        assert_eq!(m, "[calsync:abc123:user:42]");
        assert_eq!(marker_user("abc123", &format!("Courses {m}")), Some(42));
        assert_eq!(marker_user("other", &m), None);
        assert_eq!(marker_user("abc123", "[calsync:abc123:user:x]"), None);
        assert_eq!(marker_user("abc123", "[calsync:abc123:user:-1]"), None);
    }
}
