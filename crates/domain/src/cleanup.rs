//! The queue of calendars to clean up (`calsync.calendar_cleanup`): written by triggers
//! when a user's `google_course_calendar_id` changes (the old calendar) or a user with
//! calendars calsync owns is deleted; worked off by `calsync cleanup` and the pass after
//! each nightly run (the worker's `cleanup` module decides what each item means).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::{DomainError, queue};

/// One calendar to clean up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CleanupItem {
    pub id: i64,
    pub user_id: i64,
    pub calendar_id: String,
    /// `calendar_changed` or `user_deleted`.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    /// When calsync owns the calendar: who owns it in Google.
    pub owner: Option<String>,
    /// The state of calsync's record of the calendar, when it owns it.
    pub owned_state: Option<String>,
    /// The user's e-mail, while the user exists.
    pub user_email: Option<String>,
    /// The user's current calendar (never cleaned while still in use).
    pub current_calendar_id: Option<String>,
}

/// Pending items, oldest first, at most `limit`.
pub async fn pending(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<CleanupItem>, DomainError> {
    Ok(sqlx::query_as(
        "SELECT c.id, c.user_id, c.calendar_id, c.reason, c.created_at, c.attempts, \
                o.owner, o.state AS owned_state, u.email AS user_email, \
                u.google_course_calendar_id AS current_calendar_id \
         FROM calsync.calendar_cleanup c \
         LEFT JOIN calsync.owned_calendars o ON o.calendar_id = c.calendar_id \
         LEFT JOIN users u ON u.id = c.user_id \
         WHERE c.done_at IS NULL ORDER BY c.id LIMIT $1",
    )
    .bind(limit.max(0))
    .fetch_all(db)
    .await?)
}

/// What was done with an item, for its row and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settled<'a> {
    pub id: i64,
    pub calendar_id: &'a str,
    /// e.g. `calendar deleted`, `3 events removed`, `skipped: …`.
    pub outcome: &'a str,
    /// The calendar itself was deleted (calsync owned it).
    pub calendar_deleted: bool,
    /// Event ids removed from it.
    pub events_removed: &'a [String],
}

/// Settle an item: mark it done, mark an owned calendar deleted, and write a
/// `calendar_cleanup` audit row by `actor` — one transaction.
pub async fn settle(pool: &PgPool, item: &Settled<'_>, actor: &str) -> Result<(), DomainError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE calsync.calendar_cleanup SET done_at = now(), outcome = $2, attempts = attempts + 1 \
         WHERE id = $1",
    )
    .bind(item.id)
    .bind(item.outcome)
    .execute(&mut *tx)
    .await?;
    if item.calendar_deleted {
        crate::owned_calendars::mark_deleted(&mut *tx, item.calendar_id).await?;
    }
    queue::audit(
        &mut *tx,
        actor,
        "calendar_cleanup",
        serde_json::json!({
            "item": item.id,
            "calendar_id": item.calendar_id,
            "outcome": item.outcome,
            "calendar_deleted": item.calendar_deleted,
            "events_removed": item.events_removed,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An attempt failed (retryable): count it and keep the error; the item stays pending.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    id: i64,
    error: &str,
) -> Result<(), DomainError> {
    sqlx::query(
        "UPDATE calsync.calendar_cleanup SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(error.replace('\0', "\\u{0}"))
    .execute(db)
    .await?;
    Ok(())
}

/// Queue an owned calendar found in Google that no user uses (the orphan sweep of the
/// owner's calendar list: a crash after create whose user was deleted, or a calendar
/// replaced before it was recorded). Records it as owned and orphaned. Returns false
/// when it was queued already.
pub async fn queue_stray(
    pool: &PgPool,
    calendar_id: &str,
    user_id: i64,
    owner: &str,
) -> Result<bool, DomainError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO calsync.owned_calendars (calendar_id, user_id, owner, state, orphaned_at) \
         VALUES ($1, $2, $3, 'orphaned', now()) ON CONFLICT (calendar_id) DO NOTHING",
    )
    .bind(calendar_id)
    .bind(user_id)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    let queued = sqlx::query(
        "INSERT INTO calsync.calendar_cleanup (user_id, calendar_id, reason) \
         SELECT $2, $1, CASE WHEN EXISTS (SELECT 1 FROM users WHERE id = $2) THEN 'calendar_changed' ELSE 'user_deleted' END \
         WHERE NOT EXISTS (SELECT 1 FROM calsync.calendar_cleanup WHERE calendar_id = $1 AND done_at IS NULL)",
    )
    .bind(calendar_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(queued > 0)
}

/// The calendar ids currently assigned to users (never cleaned up).
pub async fn calendars_in_use(db: impl PgExecutor<'_>) -> Result<Vec<String>, DomainError> {
    Ok(sqlx::query_scalar(
        "SELECT google_course_calendar_id FROM users \
         WHERE google_course_calendar_id IS NOT NULL AND google_course_calendar_id <> ''",
    )
    .fetch_all(db)
    .await?)
}

/// Whether a user exists.
pub async fn user_exists(db: impl PgExecutor<'_>, user_id: i64) -> Result<bool, DomainError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(user_id)
            .fetch_one(db)
            .await?,
    )
}
