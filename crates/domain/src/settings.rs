//! Deployment-wide settings the database must know (`calsync.settings`, one row): the
//! calendar mode, written by every worker at startup so SQL (the nightly's due
//! condition, `calsync.enqueue_sync`, mark-all) knows whether users without a calendar
//! can get one, and the installation id that makes calsync's calendar markers unique.

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::{DomainError, queue};

/// Who owns students' course calendars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarMode {
    /// Per-user OAuth: another app created each student's calendar (the default).
    UserOauth,
    /// calsync's service account owns every course calendar and shares it with the student.
    ServiceAccount,
    /// The service account acts as each student (domain-wide delegation): calendars are
    /// created in the student's own account.
    Delegated,
}

impl CalendarMode {
    /// The value stored in `calsync.settings.calendar_mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarMode::UserOauth => "user_oauth",
            CalendarMode::ServiceAccount => "service_account",
            CalendarMode::Delegated => "delegated",
        }
    }

    /// Parse a stored value.
    pub fn parse(s: &str) -> Option<CalendarMode> {
        [
            CalendarMode::UserOauth,
            CalendarMode::ServiceAccount,
            CalendarMode::Delegated,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// Whether calsync provisions (creates and owns) course calendars in this mode.
    pub fn provisions(self) -> bool {
        self != CalendarMode::UserOauth
    }
}

/// The calendar mode the database currently assumes.
pub async fn calendar_mode(db: impl PgExecutor<'_>) -> Result<CalendarMode, DomainError> {
    let mode: String = sqlx::query_scalar("SELECT calendar_mode FROM calsync.settings")
        .fetch_one(db)
        .await?;
    CalendarMode::parse(&mode)
        .ok_or_else(|| DomainError::InvalidData(format!("unknown calendar mode {mode:?}")))
}

/// Record the mode this worker runs in. A change is audited (`calendar_mode_changed`)
/// in the same transaction; returns the previous mode.
pub async fn record_calendar_mode(
    pool: &PgPool,
    mode: CalendarMode,
    actor: &str,
) -> Result<CalendarMode, DomainError> {
    let mut tx = pool.begin().await?;
    let previous: String =
        sqlx::query_scalar("SELECT calendar_mode FROM calsync.settings FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let previous = CalendarMode::parse(&previous).unwrap_or(CalendarMode::UserOauth);
    if previous != mode {
        sqlx::query(
            "UPDATE calsync.settings SET calendar_mode = $1, updated_at = now(), updated_by = $2",
        )
        .bind(mode.as_str())
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        queue::audit(
            &mut *tx,
            actor,
            "calendar_mode_changed",
            serde_json::json!({"from": previous.as_str(), "to": mode.as_str()}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(previous)
}

/// This database's installation id (part of calsync's calendar marker).
pub async fn installation_id(db: impl PgExecutor<'_>) -> Result<String, DomainError> {
    Ok(
        sqlx::query_scalar("SELECT installation_id FROM calsync.settings")
            .fetch_one(db)
            .await?,
    )
}
