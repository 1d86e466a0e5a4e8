//! The failure policy: the one place that decides what a failed attempt means.
//!
//! [`decide`] is a pure function of the error's class (which carries any retry hint the
//! provider gave), the attempt number and the job's attempt budget. Everything else
//! asks it: the job handler turns the [`Decision`] into apalis' vocabulary (Failed →
//! retried, Killed → never again) and records it with
//! [`calsync_domain::users::record_attempt_failure`] (user status and last error, retry
//! hint, audit row — one transaction); the queue trigger computes the backoff
//! (`calsync.retry_backoff`) and honours the hint.
//!
//! A new retry rule goes here (and, if it needs a new kind of error, into
//! [`ErrorClass`]), with a test below.

use std::time::Duration;

use calsync_domain::users::{AttemptOutcome, SyncStatus};

use crate::backend::{ErrorClass, UserAction};

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again with the queue's backoff, and not before `after` when set (the
    /// provider asked for a long wait). The user's status is unchanged.
    Retry { after: Option<Duration> },
    /// A retryable error on the last attempt: the job ends Failed and the user is
    /// marked `failing` (the next nightly pass tries again).
    OutOfAttempts,
    /// Retrying cannot help: the job is Killed and the user marked `failing`.
    Kill,
    /// Only the student can fix it: the job is Killed and the user gets this status
    /// (`needs_reauth`, `calendar_missing`), which the nightly pass skips until fixed.
    NeedsUser(SyncStatus),
}

/// Decide what a failed attempt means. `attempt` is the attempt that failed (1 = the
/// first), `max_attempts` the job's budget.
pub fn decide(error: ErrorClass, attempt: usize, max_attempts: usize) -> Decision {
    match error {
        ErrorClass::NeedsUser(UserAction::Reauthenticate) => {
            Decision::NeedsUser(SyncStatus::NeedsReauth)
        }
        ErrorClass::NeedsUser(UserAction::RecreateCalendar) => {
            Decision::NeedsUser(SyncStatus::CalendarMissing)
        }
        ErrorClass::Permanent => Decision::Kill,
        ErrorClass::Retryable { .. } if attempt >= max_attempts => Decision::OutOfAttempts,
        ErrorClass::Retryable { retry_after } => Decision::Retry { after: retry_after },
    }
}

impl Decision {
    /// Whether the job is killed (never retried) rather than failed.
    pub fn kills_job(self) -> bool {
        matches!(self, Decision::Kill | Decision::NeedsUser(_))
    }

    /// What the domain records for the user.
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            Decision::Retry { after } => AttemptOutcome::Retry { not_before: after },
            Decision::OutOfAttempts | Decision::Kill => AttemptOutcome::Final {
                status: SyncStatus::Failing,
            },
            Decision::NeedsUser(status) => AttemptOutcome::Final { status },
        }
    }

    /// The `outcome` label of `calsync_jobs_total`.
    pub fn metric(self) -> &'static str {
        match self {
            Decision::Retry { .. } => "retry",
            Decision::OutOfAttempts => "failed",
            Decision::Kill | Decision::NeedsUser(_) => "killed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn retryable(after: Option<Duration>) -> ErrorClass {
        ErrorClass::Retryable { retry_after: after }
    }

    #[test]
    fn retryable_errors_are_retried_until_the_last_attempt() {
        for attempt in 1..8 {
            assert_eq!(
                decide(retryable(None), attempt, 8),
                Decision::Retry { after: None },
                "attempt {attempt}"
            );
        }
        assert_eq!(decide(retryable(None), 8, 8), Decision::OutOfAttempts);
        // Re-enqueued crash loops can push the attempt past the budget.
        assert_eq!(decide(retryable(None), 9, 8), Decision::OutOfAttempts);
        assert_eq!(decide(retryable(None), 1, 1), Decision::OutOfAttempts);
    }

    #[test]
    fn a_retry_hint_is_passed_on_but_never_buys_an_extra_attempt() {
        assert_eq!(
            decide(retryable(Some(HOUR)), 3, 8),
            Decision::Retry { after: Some(HOUR) }
        );
        assert_eq!(decide(retryable(Some(HOUR)), 8, 8), Decision::OutOfAttempts);
        assert_eq!(
            decide(retryable(Some(HOUR)), 3, 8).outcome(),
            AttemptOutcome::Retry {
                not_before: Some(HOUR)
            }
        );
    }

    #[test]
    fn permanent_errors_kill_at_once_and_mark_the_user_failing() {
        for attempt in [1, 5, 8] {
            let d = decide(ErrorClass::Permanent, attempt, 8);
            assert_eq!(d, Decision::Kill);
            assert!(d.kills_job());
            assert_eq!(
                d.outcome(),
                AttemptOutcome::Final {
                    status: SyncStatus::Failing
                }
            );
        }
    }

    #[test]
    fn what_only_the_student_can_fix_sets_their_status_whatever_the_attempt() {
        for attempt in [1, 8, 100] {
            let d = decide(
                ErrorClass::NeedsUser(UserAction::Reauthenticate),
                attempt,
                8,
            );
            assert_eq!(d, Decision::NeedsUser(SyncStatus::NeedsReauth));
            assert!(d.kills_job());
            let d = decide(
                ErrorClass::NeedsUser(UserAction::RecreateCalendar),
                attempt,
                8,
            );
            assert_eq!(
                d.outcome(),
                AttemptOutcome::Final {
                    status: SyncStatus::CalendarMissing
                }
            );
        }
    }

    #[test]
    fn the_last_attempt_fails_the_job_without_killing_it() {
        let d = decide(retryable(None), 8, 8);
        assert!(!d.kills_job());
        assert_eq!(d.metric(), "failed");
        assert_eq!(
            d.outcome(),
            AttemptOutcome::Final {
                status: SyncStatus::Failing
            }
        );
        assert_eq!(decide(retryable(None), 2, 8).metric(), "retry");
        assert_eq!(decide(ErrorClass::Permanent, 2, 8).metric(), "killed");
    }
}
