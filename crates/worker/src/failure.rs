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
    /// provider asked for a long wait). `quota`: the provider's quota refused the call,
    /// so the job waits on the provider ("due now" requests leave it alone). The
    /// user's status is unchanged.
    Retry {
        after: Option<Duration>,
        quota: bool,
    },
    /// A retryable error on the last attempt: the job ends Failed and the user is
    /// marked `failing` (the next nightly pass tries again).
    OutOfAttempts,
    /// Retrying cannot help: the job is Killed and the user marked `failing`.
    Kill,
    /// Only the student can fix it: the job is Killed and the user gets this status
    /// (`needs_reauth`, `calendar_missing`), which the nightly pass skips until fixed.
    NeedsUser(SyncStatus),
}

/// Who owns the course calendars the failed sync wrote to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendars {
    /// The students' own (per-user OAuth): a missing calendar is theirs to recreate.
    UserOwned,
    /// calsync provisions them (service-account modes).
    Provisioned,
}

/// Decide what a failed attempt means. `attempt` is the attempt that failed (1 = the
/// first), `max_attempts` the job's budget, `calendars` who owns the calendars.
pub fn decide(
    error: ErrorClass,
    attempt: usize,
    max_attempts: usize,
    calendars: Calendars,
) -> Decision {
    match error {
        ErrorClass::NeedsUser(UserAction::Reauthenticate) => {
            Decision::NeedsUser(SyncStatus::NeedsReauth)
        }
        // calsync provisions calendars: a sync already replaces a missing one, so one
        // still missing (gone again right after being created) is retried like any
        // transient failure — never the `calendar_missing` dead end.
        ErrorClass::NeedsUser(UserAction::RecreateCalendar)
            if calendars == Calendars::Provisioned =>
        {
            if attempt >= max_attempts {
                Decision::OutOfAttempts
            } else {
                Decision::Retry {
                    after: None,
                    quota: false,
                }
            }
        }
        ErrorClass::NeedsUser(UserAction::RecreateCalendar) => {
            Decision::NeedsUser(SyncStatus::CalendarMissing)
        }
        ErrorClass::Permanent => Decision::Kill,
        ErrorClass::Retryable { .. } if attempt >= max_attempts => Decision::OutOfAttempts,
        ErrorClass::Retryable { retry_after, quota } => Decision::Retry {
            after: retry_after,
            quota,
        },
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
            Decision::Retry { after, quota } => AttemptOutcome::Retry {
                not_before: after,
                quota,
            },
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

    const U: Calendars = Calendars::UserOwned;
    const HOUR: Duration = Duration::from_secs(3600);

    fn retryable(after: Option<Duration>) -> ErrorClass {
        ErrorClass::Retryable {
            retry_after: after,
            quota: after.is_some(),
        }
    }

    #[test]
    fn retryable_errors_are_retried_until_the_last_attempt() {
        for attempt in 1..8 {
            assert_eq!(
                decide(retryable(None), attempt, 8, U),
                Decision::Retry {
                    after: None,
                    quota: false
                },
                "attempt {attempt}"
            );
        }
        assert_eq!(decide(retryable(None), 8, 8, U), Decision::OutOfAttempts);
        // Re-enqueued crash loops can push the attempt past the budget.
        assert_eq!(decide(retryable(None), 9, 8, U), Decision::OutOfAttempts);
        assert_eq!(decide(retryable(None), 1, 1, U), Decision::OutOfAttempts);
    }

    #[test]
    fn a_retry_hint_is_passed_on_but_never_buys_an_extra_attempt() {
        assert_eq!(
            decide(retryable(Some(HOUR)), 3, 8, U),
            Decision::Retry {
                after: Some(HOUR),
                quota: true
            }
        );
        assert_eq!(
            decide(retryable(Some(HOUR)), 8, 8, U),
            Decision::OutOfAttempts
        );
        assert_eq!(
            decide(retryable(Some(HOUR)), 3, 8, U).outcome(),
            AttemptOutcome::Retry {
                not_before: Some(HOUR),
                quota: true
            }
        );
    }

    #[test]
    fn permanent_errors_kill_at_once_and_mark_the_user_failing() {
        for attempt in [1, 5, 8] {
            let d = decide(ErrorClass::Permanent, attempt, 8, U);
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
                U,
            );
            assert_eq!(d, Decision::NeedsUser(SyncStatus::NeedsReauth));
            assert!(d.kills_job());
            let d = decide(
                ErrorClass::NeedsUser(UserAction::RecreateCalendar),
                attempt,
                8,
                U,
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
        let d = decide(retryable(None), 8, 8, U);
        assert!(!d.kills_job());
        assert_eq!(d.metric(), "failed");
        assert_eq!(
            d.outcome(),
            AttemptOutcome::Final {
                status: SyncStatus::Failing
            }
        );
        assert_eq!(decide(retryable(None), 2, 8, U).metric(), "retry");
        assert_eq!(decide(ErrorClass::Permanent, 2, 8, U).metric(), "killed");
    }

    #[test]
    fn a_missing_calendar_calsync_provisions_is_retried_never_a_dead_end() {
        let gone = ErrorClass::NeedsUser(UserAction::RecreateCalendar);
        assert_eq!(
            decide(gone, 1, 8, Calendars::Provisioned),
            Decision::Retry {
                after: None,
                quota: false
            }
        );
        assert_eq!(
            decide(gone, 8, 8, Calendars::Provisioned),
            Decision::OutOfAttempts
        );
        assert_eq!(
            decide(gone, 1, 8, Calendars::UserOwned),
            Decision::NeedsUser(SyncStatus::CalendarMissing)
        );
        // Re-authentication means the same in both modes.
        assert_eq!(
            decide(
                ErrorClass::NeedsUser(UserAction::Reauthenticate),
                1,
                8,
                Calendars::Provisioned
            ),
            Decision::NeedsUser(SyncStatus::NeedsReauth)
        );
    }
}
