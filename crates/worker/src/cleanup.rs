//! Orphan cleanup: calendars no user uses any more.
//!
//! Items come from `calsync.calendar_cleanup` (a user's calendar id changed, a user with
//! owned calendars was deleted) and, in service-account mode, from a sweep of the
//! service account's calendar list for calendars carrying this installation's marker
//! that no user uses and calsync has no record of (left by a crash between create and
//! record). [`Cleaner::plan`] decides what each item means, reading Google but changing
//! nothing: a calendar calsync owns is deleted; in a calendar of the student's own only
//! calsync's events (private property `calsyncOwner`) are removed — foreign events are
//! never listed, so never touched. [`Cleaner::run`] executes exactly that plan, so
//! `calsync cleanup --dry-run` lists exactly what a real run deletes.

use std::{collections::HashSet, sync::Arc};

use calsync_domain::{
    DomainError,
    cleanup::{self, CleanupItem, Settled},
    events::{OWNER_PROPERTY, OWNER_VALUE},
    owned_calendars, settings,
};
use serde::Serialize;
use sqlx::PgPool;

use crate::backend::{
    Account, BackendError, CalendarBackend, Deleted, ErrorClass, EventQuery, EventStatus,
};

/// Items looked at per pass.
const BATCH: i64 = 500;

/// What cleaning one calendar means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Delete the calendar (calsync owns it).
    DeleteCalendar,
    /// Remove calsync's events from the student's calendar.
    RemoveEvents { event_ids: Vec<String> },
    /// Nothing to delete; the item is settled with this reason.
    Skip { reason: String },
}

/// One planned item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// The queue row (`None`: found by the calendar-list sweep, queued when run).
    pub item: Option<i64>,
    pub user_id: i64,
    pub calendar_id: String,
    /// Who acts on it in Google (the owner, or the student).
    #[serde(skip)]
    pub account: Account,
    pub action: Action,
}

impl Planned {
    /// A line for `calsync cleanup`.
    pub fn describe(&self) -> Vec<String> {
        match &self.action {
            Action::DeleteCalendar => vec![format!(
                "delete calendar {} (user {})",
                self.calendar_id, self.user_id
            )],
            Action::RemoveEvents { event_ids } if event_ids.is_empty() => vec![format!(
                "nothing to remove from calendar {} (user {}): no calsync events",
                self.calendar_id, self.user_id
            )],
            Action::RemoveEvents { event_ids } => event_ids
                .iter()
                .map(|e| {
                    format!(
                        "delete event {e} from calendar {} (user {})",
                        self.calendar_id, self.user_id
                    )
                })
                .collect(),
            Action::Skip { reason } => vec![format!(
                "skip calendar {} (user {}): {reason}",
                self.calendar_id, self.user_id
            )],
        }
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("cleanup: {0}")]
    Database(#[from] DomainError),
    #[error("cleanup: {0}")]
    Backend(#[from] BackendError),
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub calendars_deleted: Vec<String>,
    /// `(calendar, event)` pairs removed.
    pub events_deleted: Vec<(String, String)>,
    pub skipped: usize,
    /// Items left for the next pass (a retryable error).
    pub deferred: usize,
}

/// Runs cleanup passes through a provider backend.
pub struct Cleaner {
    pool: PgPool,
    backend: Arc<dyn CalendarBackend>,
    /// Service-account mode: sweep this service account's calendar list.
    sweep_as: Option<String>,
}

impl Cleaner {
    /// A cleaner; `sweep_as`: the service account whose calendar list is swept for strays.
    pub fn new(
        pool: PgPool,
        backend: Arc<dyn CalendarBackend>,
        sweep_as: Option<String>,
    ) -> Cleaner {
        Cleaner {
            pool,
            backend,
            sweep_as,
        }
    }

    /// What a run would do now (reads Google, changes nothing). Items that cannot be
    /// planned because of a retryable error are left out (a run defers them too).
    pub async fn plan(&self) -> Result<Vec<Planned>, CleanupError> {
        let mut out = Vec::new();
        let items = cleanup::pending(&self.pool, BATCH).await?;
        let queued: HashSet<String> = items.iter().map(|i| i.calendar_id.clone()).collect();
        for item in items {
            if let Some(p) = self.plan_item(&item).await? {
                out.push(p);
            }
        }
        out.extend(self.sweep(&queued).await?);
        Ok(out)
    }

    async fn plan_item(&self, item: &CleanupItem) -> Result<Option<Planned>, CleanupError> {
        let planned = |account: Account, action: Action| Planned {
            item: Some(item.id),
            user_id: item.user_id,
            calendar_id: item.calendar_id.clone(),
            account,
            action,
        };
        let nobody = Account {
            user_id: item.user_id,
            email: String::new(),
        };
        if item.current_calendar_id.as_deref() == Some(item.calendar_id.as_str()) {
            return Ok(Some(planned(
                nobody,
                Action::Skip {
                    reason: "it is the user's calendar again".into(),
                },
            )));
        }
        if let Some(owner) = &item.owner {
            if item.owned_state.as_deref() == Some("deleted") {
                return Ok(Some(planned(
                    nobody,
                    Action::Skip {
                        reason: "already deleted".into(),
                    },
                )));
            }
            let account = Account {
                user_id: item.user_id,
                email: owner.clone(),
            };
            return Ok(Some(planned(account, Action::DeleteCalendar)));
        }
        let Some(email) = &item.user_email else {
            return Ok(Some(planned(
                nobody,
                Action::Skip {
                    reason: "the user was deleted; calsync cannot reach a calendar it does not own"
                        .into(),
                },
            )));
        };
        let account = Account {
            user_id: item.user_id,
            email: email.clone(),
        };
        let listed = async {
            let mut s = self.backend.session(&account).await?;
            s.list_events(
                &item.calendar_id,
                &EventQuery {
                    tag_key: OWNER_PROPERTY.to_string(),
                    tag_value: OWNER_VALUE.to_string(),
                    include_deleted: false,
                },
            )
            .await
        }
        .await;
        match listed {
            Ok(events) => {
                let event_ids = events
                    .into_iter()
                    .filter(|e| e.status != EventStatus::Cancelled)
                    .map(|e| e.id)
                    .collect();
                Ok(Some(planned(account, Action::RemoveEvents { event_ids })))
            }
            Err(e) if matches!(e.class, ErrorClass::Retryable { .. }) => {
                cleanup::record_failure(&self.pool, item.id, &e.to_string()).await?;
                Ok(None)
            }
            Err(e) => Ok(Some(planned(
                account,
                Action::Skip {
                    reason: format!("cannot reach the calendar: {e}"),
                },
            ))),
        }
    }

    /// Service-account mode: calendars in the service account's list carrying this
    /// installation's marker that no user uses and that are neither active nor queued.
    async fn sweep(&self, queued: &HashSet<String>) -> Result<Vec<Planned>, CleanupError> {
        let Some(sa) = &self.sweep_as else {
            return Ok(Vec::new());
        };
        let installation = settings::installation_id(&self.pool).await?;
        let in_use: HashSet<String> = cleanup::calendars_in_use(&self.pool)
            .await?
            .into_iter()
            .collect();
        let account = Account {
            user_id: 0,
            email: sa.clone(),
        };
        let mut s = self.backend.session(&account).await?;
        let mut out = Vec::new();
        for cal in s.list_calendars().await? {
            let Some(user_id) = cal
                .description
                .as_deref()
                .and_then(|d| owned_calendars::marker_user(&installation, d))
            else {
                continue;
            };
            if in_use.contains(&cal.id) || queued.contains(&cal.id) {
                continue;
            }
            // A calendar recorded as active is being provisioned right now (recorded,
            // not yet assigned): leave it to its sync.
            if let Some(rec) = owned_calendars::get(&self.pool, &cal.id).await?
                && rec.state == "active"
                && cleanup::user_exists(&self.pool, user_id).await?
            {
                continue;
            }
            out.push(Planned {
                item: None,
                user_id,
                calendar_id: cal.id,
                account: account.clone(),
                action: Action::DeleteCalendar,
            });
        }
        Ok(out)
    }

    /// Plan, then do exactly that; every settled item is audited (`calendar_cleanup`).
    pub async fn run(&self, actor: &str) -> Result<CleanupReport, CleanupError> {
        let mut report = CleanupReport::default();
        for p in self.plan().await? {
            let item = match p.item {
                Some(id) => id,
                None => {
                    cleanup::queue_stray(&self.pool, &p.calendar_id, p.user_id, &p.account.email)
                        .await?;
                    match cleanup::pending(&self.pool, BATCH)
                        .await?
                        .into_iter()
                        .find(|i| i.calendar_id == p.calendar_id)
                    {
                        Some(i) => i.id,
                        None => continue,
                    }
                }
            };
            match self.execute(&p).await {
                Ok((outcome, deleted_calendar, removed)) => {
                    cleanup::settle(
                        &self.pool,
                        &Settled {
                            id: item,
                            calendar_id: &p.calendar_id,
                            outcome: &outcome,
                            calendar_deleted: deleted_calendar,
                            events_removed: &removed,
                        },
                        actor,
                    )
                    .await?;
                    if deleted_calendar {
                        report.calendars_deleted.push(p.calendar_id.clone());
                    }
                    if matches!(p.action, Action::Skip { .. }) {
                        report.skipped += 1;
                    }
                    report
                        .events_deleted
                        .extend(removed.into_iter().map(|e| (p.calendar_id.clone(), e)));
                }
                Err(e) => {
                    tracing::warn!(calendar_id = %p.calendar_id, error = %e, "cleanup of a calendar failed; retried next pass");
                    cleanup::record_failure(&self.pool, item, &e.to_string()).await?;
                    report.deferred += 1;
                }
            }
        }
        Ok(report)
    }

    /// Carry out one planned item: (outcome, calendar deleted, events removed).
    async fn execute(&self, p: &Planned) -> Result<(String, bool, Vec<String>), BackendError> {
        match &p.action {
            Action::Skip { reason } => Ok((format!("skipped: {reason}"), false, Vec::new())),
            Action::DeleteCalendar => {
                let mut s = self.backend.session(&p.account).await?;
                let outcome = match s.delete_calendar(&p.calendar_id).await? {
                    Deleted::Now => "calendar deleted",
                    Deleted::AlreadyGone => "calendar was already gone",
                };
                Ok((outcome.to_string(), true, Vec::new()))
            }
            Action::RemoveEvents { event_ids } => {
                let mut s = self.backend.session(&p.account).await?;
                let mut removed = Vec::new();
                for id in event_ids {
                    if s.delete_event(&p.calendar_id, id).await? == Deleted::Now {
                        removed.push(id.clone());
                    }
                }
                Ok((
                    format!("{} calsync events removed", removed.len()),
                    false,
                    removed,
                ))
            }
        }
    }
}
