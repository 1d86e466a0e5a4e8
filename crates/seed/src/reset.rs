//! Wiping a scratch university before seeding it again (the demo re-seeds the same
//! database on every run). These are the only deletes in this crate; callers guard
//! them (the demo refuses a database holding anyone outside its own e-mail domain).

use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::SeedError;

/// Every table a seed writes, plus what calsync derived from them (runs and their
/// progress log, the change log, owned calendars, pending cleanups), emptied with their
/// sequences restarted. A table derived from these that is left out keeps rows naming
/// ids the restarted sequences hand out again (e.g. an old run's progress counted for
/// the new run 1).
const SEEDED_TABLES: &str = "calendar_preferences, final_exams, academic_calendar_events, \
     enrollments, meeting_times, courses, rooms, google_credentials, users, \
     calsync.nightly_runs, calsync.nightly_run_progress, calsync.pending_flags, \
     calsync.owned_calendars, calsync.provisioning_attempts, calsync.calendar_cleanup";

/// How many users have an e-mail address outside `domain` (e.g. `@demo.calsync.test`),
/// so a caller can refuse to wipe a database that holds real people.
pub async fn users_outside_domain(pool: &PgPool, domain: &str) -> Result<i64, SeedError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE email IS NULL OR right(email, length($1)) <> $1",
    )
    .bind(domain)
    .fetch_one(pool)
    .await?)
}

/// Empty the university (see [`SEEDED_TABLES`]) and the sync jobs queued for it.
pub async fn clear_university(conn: &mut PgConnection) -> Result<(), SeedError> {
    sqlx::query(AssertSqlSafe(format!(
        "TRUNCATE {SEEDED_TABLES} RESTART IDENTITY"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'sync-calendar'")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forget every student's calendar and refresh token, as before calsync provisioned
/// anything (the service-account demo starts here).
pub async fn forget_calendars(conn: &mut PgConnection) -> Result<(), SeedError> {
    sqlx::query("DELETE FROM google_credentials")
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE users SET google_course_calendar_id = NULL")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
