//! The change-tracking declaration: which columns of which tables flag students when
//! they change.
//!
//! The one home of that fact is the SQL table `calsync.tracked_columns` (migration
//! `…_tracked_columns.sql`): every column of every tracked table is declared `key`,
//! `tracked` or `untracked`, and the trigger functions' change conditions are generated
//! from it. This module reads it, and lists what the Rust side depends on, so tests can
//! prove both sides agree:
//!
//! * [`TRACKED_TABLES`] must be exactly the tables the declaration covers and exactly
//!   the tables carrying change-tracking triggers;
//! * every column of those tables must be declared ([`undeclared_columns`]);
//! * every column the sync snapshot reads ([`snapshot_columns`]) must be a key or
//!   tracked, and every tracked column of a table the snapshot reads must be read.
//!
//! Tracking a new column: one row in `calsync.tracked_columns` (a new migration).
//!
//! The triggers log what changed (`calsync.pending_flags`, one row per statement);
//! [`apply_pending_flags`] folds the log into the students' flags. Every reader of the
//! flags in calsync calls it first (migration `…0301_pending_flags.sql`).

use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Row};

use crate::{DomainError, schedule};

/// The tables whose changes flag students (the registrar contract, credentials, and
/// students' calendar preferences).
pub const TRACKED_TABLES: [&str; 9] = [
    "academic_calendar_events",
    "calendar_preferences",
    "courses",
    "enrollments",
    "final_exams",
    "google_credentials",
    "meeting_times",
    "rooms",
    "users",
];

/// Fold the changes the tracking triggers logged into `users.calendar_needs_sync` and
/// `calendar_sync_generation` (each affected student flagged once). When it returns,
/// every change committed before it started is in the flags. Returns how many students
/// were flagged.
pub async fn apply_pending_flags(db: impl PgExecutor<'_>) -> Result<i64, DomainError> {
    Ok(sqlx::query_scalar("SELECT calsync.apply_pending_flags()")
        .fetch_one(db)
        .await?)
}

/// What a column's change means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Identifies the row.
    Key,
    /// Changing it flags the affected students.
    Tracked,
    /// Changing it flags nobody.
    Untracked,
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeclaredColumn {
    pub table_name: String,
    pub column_name: String,
    pub role: Role,
    pub note: String,
}

/// A `(table, column)` pair.
pub type Column = (String, String);

/// The declaration, ordered by table and column.
pub async fn declared_columns(pool: &PgPool) -> Result<Vec<DeclaredColumn>, DomainError> {
    Ok(sqlx::query_as::<_, DeclaredColumn>(
        "SELECT table_name, column_name, role, note FROM calsync.tracked_columns \
         ORDER BY table_name, column_name",
    )
    .fetch_all(pool)
    .await?)
}

/// Columns of [`TRACKED_TABLES`] that the declaration does not mention.
pub async fn undeclared_columns(pool: &PgPool) -> Result<Vec<Column>, DomainError> {
    let rows = sqlx::query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name = ANY ($1) \
           AND NOT EXISTS (SELECT 1 FROM calsync.tracked_columns t \
                           WHERE t.table_name = c.table_name AND t.column_name = c.column_name) \
         ORDER BY 1, 2",
    )
    .bind(TRACKED_TABLES.as_slice())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("table_name")?, r.try_get("column_name")?)))
        .collect()
}

/// Public tables carrying a trigger that runs one of calsync's functions (the tables
/// change tracking actually watches), sorted.
pub async fn tables_with_tracking_triggers(pool: &PgPool) -> Result<Vec<String>, DomainError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT c.relname::text FROM pg_trigger t \
         JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace \
         WHERE NOT t.tgisinternal AND n.nspname = 'public' AND pn.nspname = 'calsync' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

/// The `(table, column)` every column of the sync snapshot's queries
/// ([`schedule::SNAPSHOT_QUERIES`]) comes from, as Postgres describes them; sorted and
/// deduplicated. Computed columns (none today) have no origin and are left out.
pub async fn snapshot_columns(pool: &PgPool) -> Result<Vec<Column>, DomainError> {
    use sqlx::{Column as _, Executor, SqlSafeStr, Statement};
    let mut origins: Vec<(i64, i16)> = Vec::new();
    let mut conn = pool.acquire().await?;
    for sql in schedule::SNAPSHOT_QUERIES {
        let stmt = (&mut *conn).prepare(sql.into_sql_str()).await?;
        for col in stmt.columns() {
            if let (Some(rel), Some(attno)) = (col.relation_id(), col.relation_attribute_no()) {
                origins.push((i64::from(rel.0), attno));
            } else {
                return Err(DomainError::InvalidData(format!(
                    "snapshot column {} has no table of origin",
                    col.name()
                )));
            }
        }
    }
    let (rels, attnos): (Vec<i64>, Vec<i16>) = origins.into_iter().unzip();
    let rows = sqlx::query(
        "SELECT DISTINCT c.relname::text AS table_name, a.attname::text AS column_name \
         FROM unnest($1::bigint[], $2::smallint[]) AS o(rel, attno) \
         JOIN pg_class c ON c.oid = o.rel::oid \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = o.attno \
         ORDER BY 1, 2",
    )
    .bind(&rels)
    .bind(&attnos)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("table_name")?, r.try_get("column_name")?)))
        .collect()
}
