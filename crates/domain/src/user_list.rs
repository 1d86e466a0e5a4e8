//! The user list operators page through: search by id or e-mail, filter by sync state,
//! keyset paging on the id. Never selects credentials.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};

use crate::{
    DomainError,
    users::{DUE_CONDITION, SyncStatus},
};

/// A sync state to filter users by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFilter {
    /// `calendar_needs_sync` is set.
    Flagged,
    /// Never synced successfully.
    NeverSynced,
    /// Due for the next nightly pass ([`DUE_CONDITION`]).
    Due,
    /// Waiting for the student to sign in again.
    NeedsReauth,
    /// The course calendar was deleted in Google.
    CalendarMissing,
    /// The last sync failed after all retries.
    Failing,
}

impl UserFilter {
    /// Every filter, in display order.
    pub const ALL: [UserFilter; 6] = [
        UserFilter::Flagged,
        UserFilter::NeverSynced,
        UserFilter::Due,
        UserFilter::NeedsReauth,
        UserFilter::CalendarMissing,
        UserFilter::Failing,
    ];

    /// The name used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            UserFilter::Flagged => "flagged",
            UserFilter::NeverSynced => "never_synced",
            UserFilter::Due => "due",
            UserFilter::NeedsReauth => "needs_reauth",
            UserFilter::CalendarMissing => "calendar_missing",
            UserFilter::Failing => "failing",
        }
    }

    /// Parse the URL name.
    pub fn parse(s: &str) -> Option<UserFilter> {
        UserFilter::ALL.into_iter().find(|f| f.as_str() == s)
    }

    fn condition(self) -> &'static str {
        match self {
            UserFilter::Flagged => "calendar_needs_sync",
            UserFilter::NeverSynced => "last_calendar_sync_at IS NULL",
            UserFilter::Due => DUE_CONDITION,
            UserFilter::NeedsReauth => "calendar_sync_status = 'needs_reauth'",
            UserFilter::CalendarMissing => "calendar_sync_status = 'calendar_missing'",
            UserFilter::Failing => "calendar_sync_status = 'failing'",
        }
    }
}

/// Which users to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// A user id (exact) or part of an e-mail address (case-insensitive, literal).
    pub search: Option<String>,
    pub filter: Option<UserFilter>,
    /// Only ids above this one (the last id of the previous page).
    pub after: Option<i64>,
    pub limit: i64,
}

/// One row of the user list.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct UserSummary {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub has_calendar: bool,
    pub calendar_needs_sync: bool,
    pub last_calendar_sync_at: Option<DateTime<Utc>>,
    pub calendar_sync_status: SyncStatus,
    pub last_sync_error: Option<String>,
    pub last_sync_error_at: Option<DateTime<Utc>>,
}

/// Users matching `query`, in id order (pending changes folded into the flags first).
pub async fn list(pool: &PgPool, query: &UserQuery) -> Result<Vec<UserSummary>, DomainError> {
    crate::tracking::apply_pending_flags(pool).await?;
    let db = pool;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, email, name, google_course_calendar_id IS NOT NULL AS has_calendar, calendar_needs_sync, \
         last_calendar_sync_at, calendar_sync_status, last_sync_error, last_sync_error_at FROM users WHERE id > ",
    );
    qb.push_bind(query.after.unwrap_or(0));
    if let Some(f) = query.filter {
        qb.push(" AND (").push(f.condition()).push(")");
    }
    if let Some(search) = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match search.parse::<i64>() {
            Ok(id) => {
                qb.push(" AND id = ").push_bind(id);
            }
            Err(_) => {
                let pattern = format!(
                    "%{}%",
                    search
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                );
                qb.push(" AND email ILIKE ").push_bind(pattern);
            }
        }
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(query.limit.max(0));
    Ok(qb.build_query_as().fetch_all(db).await?)
}
