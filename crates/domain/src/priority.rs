//! Priority classes of sync jobs and the enqueue that honours them.
//!
//! apalis-postgres fetches `ORDER BY priority DESC, run_at ASC`, so a job's class is its
//! `apalis.jobs.priority`. The classes are defined once in SQL (the view
//! `calsync.priority_classes`); [`PriorityClass`] is the Rust twin, checked against it
//! by a test. [`request_sync`] is calsync's own way in (CLI, HTTP API, dashboard): the
//! SQL function `calsync.request_sync` plus the audit row, in one transaction.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{DomainError, queue};

/// The suffix of a fast-lane worker's name: such a worker is never handed a job at or
/// below the nightly class (the queue trigger `calsync.jobs_fast_lane` matches
/// `'%' || FAST_LANE_SUFFIX`; a test checks that they agree). Every worker process runs
/// one, as one of its `CALSYNC_CONCURRENCY` slots.
pub const FAST_LANE_SUFFIX: &str = "-fast-lane";

/// How urgently a sync should run. Higher classes are fetched first; within a class,
/// the job due first runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    /// Background work that may wait for everything else.
    Maintenance,
    /// The nightly pass (apalis' default priority 0: a raw INSERT lands here).
    Nightly,
    /// Other services (the HTTP API, `calsync.enqueue_sync`): their default.
    Api,
    /// A person is waiting: the dashboard's "Sync now", `calsync sync-user`.
    Interactive,
}

impl PriorityClass {
    /// Every class, most urgent first.
    pub const ALL: [PriorityClass; 4] = [
        PriorityClass::Interactive,
        PriorityClass::Api,
        PriorityClass::Nightly,
        PriorityClass::Maintenance,
    ];

    /// The name used in SQL, the HTTP API, the CLI and the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::Interactive => "interactive",
            PriorityClass::Api => "api",
            PriorityClass::Nightly => "nightly",
            PriorityClass::Maintenance => "maintenance",
        }
    }

    /// `apalis.jobs.priority` of the class (the Rust twin of
    /// `calsync.class_priority(name)`).
    pub const fn priority(self) -> i32 {
        match self {
            PriorityClass::Interactive => 200,
            PriorityClass::Api => 100,
            PriorityClass::Nightly => 0,
            PriorityClass::Maintenance => -100,
        }
    }

    /// The class of a job's priority: the highest class at or below it, the lowest
    /// class below all (the Rust twin of `calsync.priority_class(priority)`).
    pub fn of(priority: i32) -> PriorityClass {
        PriorityClass::ALL
            .into_iter()
            .find(|c| c.priority() <= priority)
            .unwrap_or(PriorityClass::Maintenance)
    }

    /// The priorities of this class, `[low, high)` (`None`: unbounded), for filters.
    pub fn range(self) -> (Option<i32>, Option<i32>) {
        let low = (self != PriorityClass::Maintenance).then(|| self.priority());
        let high = PriorityClass::ALL
            .into_iter()
            .rev()
            .find(|c| c.priority() > self.priority())
            .map(|c| c.priority());
        (low, high)
    }

    /// Parse a class name, with an error that lists the known ones.
    pub fn parse(s: &str) -> Result<PriorityClass, DomainError> {
        PriorityClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = PriorityClass::ALL.iter().map(|c| c.as_str()).collect();
                let shown: String = s.chars().take(40).flat_map(char::escape_default).collect();
                DomainError::InvalidInput(format!(
                    "unknown priority class \"{shown}\" (known: {})",
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to sync one user now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest<'a> {
    pub user_id: i64,
    /// Why (shown on the dashboard; validated by [`queue::validate_reason`]).
    pub reason: &'a str,
    pub class: PriorityClass,
    /// Make the user's job due now if it waits on the queue's retry backoff (a job
    /// waiting on Google's quota keeps its time).
    pub due_now: bool,
}

/// What happened to the user's active job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// A new job was enqueued.
    Enqueued,
    /// The user's waiting job was moved up to the class asked for.
    Raised,
    /// The user's waiting job was already at or above that class.
    Unchanged,
    /// A worker is running the user's job: nothing changed, no second job.
    Running,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Enqueued => "enqueued",
            RequestOutcome::Raised => "raised",
            RequestOutcome::Unchanged => "unchanged",
            RequestOutcome::Running => "running",
        }
    }

    fn parse(s: &str) -> Result<RequestOutcome, DomainError> {
        [
            RequestOutcome::Enqueued,
            RequestOutcome::Raised,
            RequestOutcome::Unchanged,
            RequestOutcome::Running,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| DomainError::InvalidData(format!("unknown enqueue outcome {s:?}")))
    }
}

/// The answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requested {
    /// The user's active job (new or existing).
    pub job_id: String,
    pub outcome: RequestOutcome,
    /// The job's class now.
    pub class: PriorityClass,
    /// The job was waiting on its retry backoff and is due now.
    pub made_due: bool,
    /// The caller's budget above the nightly class was spent: the request counted as
    /// `nightly` (see docs/operations.md, "Priority classes").
    pub demoted: bool,
    /// When the job is due.
    pub run_at: DateTime<Utc>,
}

/// Enqueue a sync of one user at a class, or raise the user's waiting job (never
/// lower it, never a second job), audited as `sync_user` by `actor` in the same
/// transaction. `actor` is also the caller whose fairness budget pays for a job placed
/// above the nightly class. Same rules as the SQL function `calsync.request_sync`,
/// which this calls; the reason is validated first.
pub async fn request_sync(
    pool: &PgPool,
    req: &SyncRequest<'_>,
    actor: &str,
) -> Result<Requested, DomainError> {
    queue::validate_reason(req.reason)?;
    let mut tx = pool.begin().await?;
    let res = sqlx::query_as::<_, (String, String, String, bool, bool, DateTime<Utc>)>(
        "SELECT job_id, outcome, class, made_due, demoted, run_at \
         FROM calsync.request_sync($1, $2, $3, $4, $5)",
    )
    .bind(req.user_id)
    .bind(req.reason)
    .bind(req.class.as_str())
    .bind(req.due_now)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await;
    let (job_id, outcome, class, made_due, demoted, run_at) = match res {
        Ok(row) => row,
        Err(e) => {
            let err = DomainError::from(e);
            return match err.sqlstate().as_deref() {
                Some("23503") => Err(DomainError::UnknownUser(req.user_id)),
                Some("22023") => Err(DomainError::NoCalendar(req.user_id)),
                _ => Err(err),
            };
        }
    };
    let requested = Requested {
        job_id,
        outcome: RequestOutcome::parse(&outcome)?,
        class: PriorityClass::parse(&class)
            .map_err(|_| DomainError::InvalidData(format!("unknown priority class {class:?}")))?,
        made_due,
        demoted,
        run_at,
    };
    queue::audit(
        &mut *tx,
        actor,
        "sync_user",
        serde_json::json!({
            "user_id": req.user_id,
            "job_id": requested.job_id,
            "reason": req.reason,
            "class": req.class,
            "due_now": req.due_now,
            "outcome": requested.outcome,
            "job_class": requested.class,
            "made_due": requested.made_due,
            "demoted": requested.demoted,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_by_priority_and_parse_back() {
        for w in PriorityClass::ALL.windows(2) {
            assert!(w[0].priority() > w[1].priority());
            assert!(w[0] > w[1]);
        }
        for c in PriorityClass::ALL {
            assert_eq!(PriorityClass::parse(c.as_str()).unwrap(), c);
            assert_eq!(PriorityClass::of(c.priority()), c);
        }
        let err = PriorityClass::parse("urgent").unwrap_err().to_string();
        assert!(
            err.contains("\"urgent\"") && err.contains("interactive, api, nightly, maintenance"),
            "{err}"
        );
    }

    #[test]
    fn ranges_cover_every_priority_once() {
        for p in [-1000, -101, -100, -1, 0, 1, 99, 100, 199, 200, 10_000] {
            let owners: Vec<PriorityClass> = PriorityClass::ALL
                .into_iter()
                .filter(|c| {
                    let (lo, hi) = c.range();
                    lo.is_none_or(|lo| p >= lo) && hi.is_none_or(|hi| p < hi)
                })
                .collect();
            assert_eq!(owners, vec![PriorityClass::of(p)], "priority {p}");
        }
    }
}
