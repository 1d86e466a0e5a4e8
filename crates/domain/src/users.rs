//! Users, their calendar-sync flags, and the compare-and-clear that ends a sync.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgExecutor, PgPool, Postgres, pool::PoolConnection};

use crate::{DomainError, queue};

/// Where a user's calendar sync stands, beyond the `calendar_needs_sync` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Nothing stands in the way of a sync.
    Ok,
    /// Google refused the refresh token (`invalid_grant`): the student must sign in again.
    /// Not retried until new credentials arrive.
    NeedsReauth,
    /// The course calendar no longer exists in Google (the student deleted it).
    /// Not retried until the calendar id changes.
    CalendarMissing,
    /// The last sync failed after all retries; the next nightly pass tries again.
    Failing,
}

impl SyncStatus {
    /// The value stored in `users.calendar_sync_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Ok => "ok",
            SyncStatus::NeedsReauth => "needs_reauth",
            SyncStatus::CalendarMissing => "calendar_missing",
            SyncStatus::Failing => "failing",
        }
    }
}

/// A row of `users`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub google_course_calendar_id: Option<String>,
    pub calendar_needs_sync: bool,
    pub last_calendar_sync_at: Option<DateTime<Utc>>,
    pub calendar_sync_generation: i64,
    pub calendar_sync_status: SyncStatus,
    pub last_sync_error: Option<String>,
    pub last_sync_error_at: Option<DateTime<Utc>>,
}

const USER_COLUMNS: &str = "id, email, name, google_course_calendar_id, calendar_needs_sync, \
     last_calendar_sync_at, calendar_sync_generation, calendar_sync_status, last_sync_error, last_sync_error_at";

/// The SQL condition that makes a user due for the nightly sync: flagged or never
/// synced, and either with a course calendar and not blocked on something only the
/// student can fix (re-authentication, a deleted calendar), or — when calsync owns the
/// calendars (`calsync.owns_calendars()`, service-account modes) — with an e-mail: the
/// sync provisions or re-provisions their calendar.
pub const DUE_CONDITION: &str = "(calendar_needs_sync OR last_calendar_sync_at IS NULL) AND ( \
     (google_course_calendar_id IS NOT NULL AND google_course_calendar_id <> '' \
      AND calendar_sync_status NOT IN ('needs_reauth', 'calendar_missing')) \
     OR (calsync.owns_calendars() AND email <> ''))";

/// The SQL condition of a user who has, or can be given, a course calendar.
pub const HAS_OR_GETS_CALENDAR: &str = "((google_course_calendar_id IS NOT NULL AND google_course_calendar_id <> '') \
     OR (calsync.owns_calendars() AND email <> ''))";

/// Load one user, with the changes logged so far folded into its flag first
/// ([`crate::tracking::apply_pending_flags`]).
pub async fn get_current(pool: &PgPool, id: i64) -> Result<User, DomainError> {
    crate::tracking::apply_pending_flags(pool).await?;
    get(pool, id).await
}

/// Load one user as stored (changes logged but not folded yet are not in its flag: see
/// [`get_current`]).
pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<User, DomainError> {
    sqlx::query_as::<_, User>(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(DomainError::UnknownUser(id))
}

/// Find a user by e-mail (case-insensitive).
pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<User>, DomainError> {
    Ok(sqlx::query_as::<_, User>(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)"
    )))
    .bind(email)
    .fetch_optional(db)
    .await?)
}

/// Ids of every user due for sync, in id order (pending changes folded first).
pub async fn due_user_ids(pool: &PgPool) -> Result<Vec<i64>, DomainError> {
    crate::tracking::apply_pending_flags(pool).await?;
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM users WHERE {DUE_CONDITION} ORDER BY id"
    )))
    .fetch_all(pool)
    .await?)
}

/// Flag one user for sync (the seed's "manual sync" for a single user).
pub async fn mark_for_sync(db: impl PgExecutor<'_>, id: i64) -> Result<(), DomainError> {
    let flagged: i64 = sqlx::query_scalar("SELECT calsync.flag_users_now(ARRAY[$1::bigint])")
        .bind(id)
        .fetch_one(db)
        .await?;
    if flagged == 0 {
        return Err(DomainError::UnknownUser(id));
    }
    Ok(())
}

/// Flag every user that has a course calendar (or, when calsync owns the calendars, can
/// get one), audited as `mark_all` by `actor` in the same transaction. Returns how many
/// were flagged.
pub async fn mark_all_for_sync(pool: &PgPool, actor: &str) -> Result<i64, DomainError> {
    let mut tx = pool.begin().await?;
    let flagged: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT calsync.flag_users_now(ARRAY(SELECT id FROM users WHERE {HAS_OR_GETS_CALENDAR}))"
    )))
    .fetch_one(&mut *tx)
    .await?;
    queue::audit(
        &mut *tx,
        actor,
        "mark_all",
        serde_json::json!({ "flagged": flagged }),
    )
    .await?;
    tx.commit().await?;
    Ok(flagged)
}

/// What [`finish_sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// Nothing changed since the sync read the data: flag cleared, sync time stamped.
    Cleared,
    /// Something changed while the sync ran: the sync time is stamped but the flag
    /// stays set, so the change is not lost.
    ChangedDuringSync,
}

/// End a successful sync: clear the flag only if the user's generation is still the one
/// the sync read (compare-and-clear), stamp `last_calendar_sync_at` either way, and
/// reset the status and last error.
///
/// Changes logged but not folded yet are folded first, so a change committed while the
/// sync ran moves the generation and keeps the flag (one committed after this fold is
/// folded later and flags the user again: never lost).
pub async fn finish_sync(
    pool: &PgPool,
    id: i64,
    generation: i64,
) -> Result<FinishOutcome, DomainError> {
    crate::tracking::apply_pending_flags(pool).await?;
    let db = pool;
    let cleared: Option<bool> = sqlx::query_scalar(
        "UPDATE users SET \
             calendar_needs_sync = CASE WHEN calendar_sync_generation = $2 THEN false ELSE calendar_needs_sync END, \
             last_calendar_sync_at = now(), calendar_sync_status = 'ok', \
             last_sync_error = NULL, last_sync_error_at = NULL, updated_at = now() \
         WHERE id = $1 \
         RETURNING calendar_sync_generation = $2",
    )
    .bind(id)
    .bind(generation)
    .fetch_optional(db)
    .await?;
    match cleared {
        None => Err(DomainError::UnknownUser(id)),
        Some(true) => Ok(FinishOutcome::Cleared),
        Some(false) => Ok(FinishOutcome::ChangedDuringSync),
    }
}

/// What the worker's failure policy decided about a failed sync attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Another attempt follows (the queue trigger schedules it with backoff), not
    /// before `not_before` from now when set (e.g. Google's daily quota). `quota`: the
    /// job waits on Google's quota (a rate-limit or quota answer), recorded in
    /// `calsync.quota_waits` so a "due now" request leaves its time alone. The user's
    /// status is left as it is.
    Retry {
        not_before: Option<Duration>,
        quota: bool,
    },
    /// The job ends here: the user's status becomes `status`.
    Final { status: SyncStatus },
}

/// One failed sync attempt, as [`record_attempt_failure`] records it.
#[derive(Debug, Clone)]
pub struct AttemptFailure<'a> {
    /// The apalis job id.
    pub job_id: &'a str,
    /// The user the job syncs (`None` when its payload names nobody usable).
    pub user_id: Option<i64>,
    /// The attempt that failed (1 = first).
    pub attempt: i64,
    pub outcome: AttemptOutcome,
    /// The error, as operators should read it (never contains secrets).
    pub error: &'a str,
    /// Who decided (the worker's name), for the audit log.
    pub actor: &'a str,
}

/// Record a failed sync attempt in one transaction: the user's last error (and, when the
/// job ends, their status), the retry hint for the queue trigger, and — when the job
/// ends — a `sync_failed` audit row. The flag is left as it is, so the user stays due.
/// This is the only writer of `calendar_sync_status` other than [`finish_sync`].
pub async fn record_attempt_failure(
    pool: &PgPool,
    failure: &AttemptFailure<'_>,
) -> Result<(), DomainError> {
    // Postgres text cannot hold NUL; an error quoting a hostile payload or answer might.
    let error = failure.error.replace('\0', "\\u{0}");
    let mut tx = pool.begin().await?;
    let status = match failure.outcome {
        AttemptOutcome::Final { status } => Some(status),
        AttemptOutcome::Retry { .. } => None,
    };
    if let Some(user_id) = failure.user_id {
        sqlx::query(
            "UPDATE users SET calendar_sync_status = coalesce($2, calendar_sync_status), \
                 last_sync_error = $3, last_sync_error_at = now(), updated_at = now() \
             WHERE id = $1",
        )
        .bind(user_id)
        .bind(status)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
    }
    if let AttemptOutcome::Retry { quota, .. } = failure.outcome {
        // Why the job waits: Google's quota, or only the queue's backoff.
        let sql = if quota {
            "INSERT INTO calsync.quota_waits (job_id) SELECT id FROM apalis.jobs WHERE id = $1 \
             ON CONFLICT (job_id) DO UPDATE SET recorded_at = now()"
        } else {
            "DELETE FROM calsync.quota_waits WHERE job_id = $1"
        };
        sqlx::query(sql)
            .bind(failure.job_id)
            .execute(&mut *tx)
            .await?;
    }
    match failure.outcome {
        AttemptOutcome::Retry {
            not_before: Some(wait),
            ..
        } => {
            sqlx::query(
                "INSERT INTO calsync.retry_hints (job_id, not_before) \
                 VALUES ($1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (job_id) DO UPDATE SET not_before = EXCLUDED.not_before",
            )
            .bind(failure.job_id)
            .bind(wait.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        }
        AttemptOutcome::Retry {
            not_before: None, ..
        } => {}
        AttemptOutcome::Final { status } => {
            queue::audit(
                &mut *tx,
                failure.actor,
                "sync_failed",
                serde_json::json!({
                    "job_id": failure.job_id,
                    "user_id": failure.user_id,
                    "attempt": failure.attempt,
                    "status": status.as_str(),
                    "error": error,
                }),
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Bit pattern mixed into a user id to make its advisory-lock key: `"cals"` with the
/// sign bit set, so calsync's keys are negative and never meet the positive keys other
/// tools use (sqlx's migrator), and XOR keeps the mapping one-to-one over all 64 bits.
const LOCK_TAG: i64 = 0xE361_6C73_0000_0000_u64 as i64;

/// The advisory-lock key of a user's sync: distinct for every user id (no truncation).
pub fn sync_lock_key(user_id: i64) -> i64 {
    user_id ^ LOCK_TAG
}

/// A held per-user sync lock: a session advisory lock on a pooled connection, so two
/// syncs of one user never interleave (across processes too). If it is dropped without
/// [`UserSyncLock::unlock`] (the sync was cancelled or panicked) the connection is
/// closed instead of going back to the pool, so the lock cannot outlive the sync.
#[derive(Debug)]
pub struct UserSyncLock {
    conn: Option<PoolConnection<Postgres>>,
    user_id: i64,
}

impl UserSyncLock {
    /// Take the user's sync lock if nobody holds it (`None`: another sync runs).
    pub async fn try_acquire(
        pool: &PgPool,
        user_id: i64,
    ) -> Result<Option<UserSyncLock>, DomainError> {
        let mut conn = pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(sync_lock_key(user_id))
            .fetch_one(&mut *conn)
            .await?;
        // Not ours: the connection holds nothing and may go back to the pool.
        Ok(locked.then_some(UserSyncLock {
            conn: Some(conn),
            user_id,
        }))
    }

    /// Release the lock (closing the connection if the unlock itself fails).
    pub async fn unlock(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(sync_lock_key(self.user_id))
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Could not unlock: close the connection, which releases the lock.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for UserSyncLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not unlocked (cancelled or panicked): closing the connection releases it.
            drop(conn.detach());
        }
    }
}

/// Counts for `calsync status` and the dashboard.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct UserCounts {
    pub users: i64,
    pub with_calendar: i64,
    pub flagged: i64,
    pub never_synced: i64,
    pub due: i64,
    pub needs_reauth: i64,
    pub calendar_missing: i64,
    pub failing: i64,
}

/// Count users by sync state (pending changes folded first).
pub async fn counts(pool: &PgPool) -> Result<UserCounts, DomainError> {
    crate::tracking::apply_pending_flags(pool).await?;
    let db = pool;
    Ok(sqlx::query_as::<_, UserCounts>(AssertSqlSafe(format!(
        "SELECT count(*) AS users, \
           count(*) FILTER (WHERE google_course_calendar_id IS NOT NULL AND google_course_calendar_id <> '') AS with_calendar, \
           count(*) FILTER (WHERE calendar_needs_sync) AS flagged, \
           count(*) FILTER (WHERE last_calendar_sync_at IS NULL) AS never_synced, \
           count(*) FILTER (WHERE {DUE_CONDITION}) AS due, \
           count(*) FILTER (WHERE calendar_sync_status = 'needs_reauth') AS needs_reauth, \
           count(*) FILTER (WHERE calendar_sync_status = 'calendar_missing') AS calendar_missing, \
           count(*) FILTER (WHERE calendar_sync_status = 'failing') AS failing \
         FROM users"
    )))
    .fetch_one(db)
    .await?)
}

/// Flagged users the nightly pass will not sync, by reason (`calsync status` explains
/// them), and flagged users whose last sync failed after all retries.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct FlaggedNotDue {
    /// Flagged, but without a `google_course_calendar_id`: nothing to sync to (per-user
    /// mode; with calsync owning the calendars such users get one provisioned).
    pub no_calendar: i64,
    /// Flagged, but the student must sign in to Google again.
    pub needs_reauth: i64,
    /// Flagged, but the course calendar was deleted in Google.
    pub calendar_missing: i64,
    /// Flagged and due, but the last sync failed after all retries (retried each pass).
    pub failing: i64,
}

/// Count flagged users that are not due (or keep failing), by reason.
/// Pending changes are folded first.
pub async fn flagged_not_due(pool: &PgPool) -> Result<FlaggedNotDue, DomainError> {
    crate::tracking::apply_pending_flags(pool).await?;
    let db = pool;
    Ok(sqlx::query_as::<_, FlaggedNotDue>(
        "SELECT \
           count(*) FILTER (WHERE (google_course_calendar_id IS NULL OR google_course_calendar_id = '') \
                            AND NOT calsync.owns_calendars()) AS no_calendar, \
           count(*) FILTER (WHERE google_course_calendar_id <> '' AND calendar_sync_status = 'needs_reauth') AS needs_reauth, \
           count(*) FILTER (WHERE google_course_calendar_id <> '' AND calendar_sync_status = 'calendar_missing') AS calendar_missing, \
           count(*) FILTER (WHERE google_course_calendar_id <> '' AND calendar_sync_status = 'failing') AS failing \
         FROM users WHERE calendar_needs_sync",
    )
    .fetch_one(db)
    .await?)
}
