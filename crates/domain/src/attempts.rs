//! Job attempts as they happened: `calsync.job_attempts`, one row per attempt, written
//! by a trigger on `apalis.jobs` status transitions (so every worker is covered) and
//! deleted with its job. apalis itself keeps only the last attempt's result.
//!
//! How an attempt ended is decided in one place, the SQL function
//! `calsync.attempt_outcome` (migration `…0500_job_attempts.sql`); this module only
//! reads its verdicts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::DomainError;

/// How an attempt ended (the values `calsync.attempt_outcome` returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// It succeeded.
    Done,
    /// It failed; the job runs again after its backoff.
    Retried,
    /// The worker died, shut down or missed its heartbeats; the job runs again.
    Abandoned,
    /// It failed and the job is over (killed, or out of attempts).
    Failed,
}

impl AttemptOutcome {
    /// Every outcome, in display order.
    pub const ALL: [AttemptOutcome; 4] = [
        AttemptOutcome::Done,
        AttemptOutcome::Retried,
        AttemptOutcome::Abandoned,
        AttemptOutcome::Failed,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Done => "done",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::Abandoned => "abandoned",
            AttemptOutcome::Failed => "failed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<AttemptOutcome> {
        AttemptOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One finished attempt of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// Insertion order (attempt numbers restart after an operator retry).
    pub id: i64,
    /// apalis' attempt number.
    pub attempt: i32,
    /// When the worker started (or fetched) it; `None` when apalis did not record it.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    /// The error, for every outcome but `Done`.
    pub error: Option<String>,
    /// The worker that ran it.
    pub worker: Option<String>,
}

impl Attempt {
    /// How long it ran, when its start is known.
    pub fn duration(&self) -> Option<chrono::TimeDelta> {
        self.started_at.map(|s| self.finished_at - s)
    }
}

#[derive(FromRow)]
struct AttemptRow {
    id: i64,
    attempt: i32,
    started_at: Option<DateTime<Utc>>,
    finished_at: DateTime<Utc>,
    outcome: String,
    error: Option<String>,
    worker: Option<String>,
}

/// The most attempts [`for_job`] returns (the newest ones).
pub const MAX_LISTED: i64 = 200;

/// The finished attempts of a job, oldest first (at most the newest [`MAX_LISTED`]).
/// A running attempt is not here yet: it is the job's `lock_at` while the job is
/// Queued or Running.
pub async fn for_job(db: impl PgExecutor<'_>, job_id: &str) -> Result<Vec<Attempt>, DomainError> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT * FROM ( \
             SELECT id, attempt, started_at, finished_at, outcome, error, worker \
             FROM calsync.job_attempts WHERE job_id = $1 ORDER BY id DESC LIMIT $2 \
         ) newest ORDER BY id",
    )
    .bind(job_id)
    .bind(MAX_LISTED)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Attempt {
                outcome: AttemptOutcome::parse(&r.outcome).ok_or_else(|| {
                    DomainError::InvalidData(format!("unknown attempt outcome {:?}", r.outcome))
                })?,
                id: r.id,
                attempt: r.attempt,
                started_at: r.started_at,
                finished_at: r.finished_at,
                error: r.error,
                worker: r.worker,
            })
        })
        .collect()
}

/// A search for jobs by the text of an attempt's error: a case-insensitive substring,
/// taken literally (`%` and `_` match themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorSearch {
    text: String,
}

/// A search text that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorSearchError {
    #[error(
        "search for at least {min} characters of the error text (a trigram index needs 3)",
        min = ErrorSearch::MIN_CHARS
    )]
    TooShort,
    #[error("search for at most {max} characters of the error text", max = ErrorSearch::MAX_CHARS)]
    TooLong,
}

impl ErrorSearch {
    /// Shortest search text (shorter texts have no trigram to look up).
    pub const MIN_CHARS: usize = 3;
    /// Longest search text.
    pub const MAX_CHARS: usize = 200;

    /// Validate a search text (surrounding whitespace is ignored).
    pub fn new(text: &str) -> Result<ErrorSearch, ErrorSearchError> {
        let text = text.trim();
        let n = text.chars().count();
        if n < Self::MIN_CHARS {
            return Err(ErrorSearchError::TooShort);
        }
        if n > Self::MAX_CHARS {
            return Err(ErrorSearchError::TooLong);
        }
        Ok(ErrorSearch { text: text.into() })
    }

    /// The text searched for.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `ILIKE` pattern (default escape character `\`).
    pub fn pattern(&self) -> String {
        let mut p = String::with_capacity(self.text.len() + 2);
        p.push('%');
        for c in self.text.chars() {
            if matches!(c, '%' | '_' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push('%');
        p
    }
}

/// Whether error searches use a trigram index (the migration creates it when the
/// `pg_trgm` extension is available); without it they scan every recorded error.
pub async fn error_search_indexed(db: impl PgExecutor<'_>) -> Result<bool, DomainError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes \
         WHERE schemaname = 'calsync' AND indexname = 'job_attempts_error_trgm_idx')",
    )
    .fetch_one(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_literal_and_bounded() {
        assert_eq!(
            ErrorSearch::new("  50%_of\\x ").unwrap().pattern(),
            "%50\\%\\_of\\\\x%"
        );
        assert_eq!(ErrorSearch::new("ab"), Err(ErrorSearchError::TooShort));
        assert_eq!(ErrorSearch::new("  ab  "), Err(ErrorSearchError::TooShort));
        assert!(ErrorSearch::new("héé").is_ok());
        assert_eq!(
            ErrorSearch::new(&"x".repeat(201)),
            Err(ErrorSearchError::TooLong)
        );
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
        }
    }
}
