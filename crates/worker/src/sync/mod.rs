//! The sync engine: what a `SyncUserJob` executes. Reconciles the events a user's
//! schedule needs with what is in their course calendar: inserts, updates and deletes
//! only what differs, never empties the calendar, and clears the user's flag only if
//! nothing changed since it read the schedule.
//!
//! What to write is decided by one pure function, [`diff::diff`] (desired events vs the
//! calsync events listed from the calendar); this module carries its decisions out, and
//! [`dry_run`] describes them without writing (`calsync sync-user --dry-run`, the
//! dashboard's "Check against Google").

pub mod diff;
pub mod dry_run;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use calsync_domain::{
    DomainError,
    events::{
        self, DesiredEvent, EventTiming, FINGERPRINT_PROPERTY, OWNER_PROPERTY, OWNER_VALUE,
        Transparency, Visibility,
    },
    schedule,
    users::{self, FinishOutcome, UserSyncLock},
};
use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    backend::{
        Account, BackendError, CalendarBackend, CalendarEvent, CalendarSession, Deleted,
        ErrorClass, EventQuery, EventStatus, EventTime, Inserted, Updated, UserAction,
    },
    failure::Calendars,
    provision::{ProvisionError, Provisioner},
    sync::diff::Decision,
};
use calsync_domain::owned_calendars::ProvisionReason;

/// Passes a sync makes when the schedule keeps changing under it.
const MAX_PASSES: u32 = 3;

/// What one sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub user_id: i64,
    pub inserted: u32,
    pub updated: u32,
    /// Events the student deleted in their calendar, put back.
    pub restored: u32,
    pub deleted: u32,
    pub unchanged: u32,
    pub skipped_meetings: u32,
    /// Calendar API calls made (token requests not included).
    pub api_calls: u32,
    pub passes: u32,
    /// The sync gave the user a calendar first: `new` (they had none) or `replaced`
    /// (theirs was deleted in Google), service-account modes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<&'static str>,
    /// Whether the flag could be cleared (`ChangedDuringSync`: a change arrived meanwhile
    /// and the flag stays set for the next pass).
    pub cleared: bool,
    pub duration_ms: u64,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("user {0} does not exist")]
    UnknownUser(i64),
    #[error("user {0} has no google_course_calendar_id")]
    NoCalendar(i64),
    #[error("another sync of user {0} is running")]
    AlreadyRunning(i64),
    #[error("sync of user {user_id} (calendar {calendar_id:?}): {source}")]
    Backend {
        user_id: i64,
        calendar_id: String,
        #[source]
        source: BackendError,
    },
    #[error("sync of user {user_id}: database error: {source}")]
    Database {
        user_id: i64,
        #[source]
        source: DomainError,
    },
}

impl SyncError {
    /// What the failure means, for the failure policy ([`crate::failure::decide`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            SyncError::UnknownUser(_) | SyncError::NoCalendar(_) => ErrorClass::Permanent,
            SyncError::AlreadyRunning(_) | SyncError::Database { .. } => ErrorClass::Retryable {
                retry_after: None,
                quota: false,
            },
            SyncError::Backend { source, .. } => source.class,
        }
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self.class(), ErrorClass::Retryable { .. })
    }

    /// The earliest time a retry makes sense, when the provider asked for a long wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class() {
            ErrorClass::Retryable { retry_after, .. } => retry_after,
            _ => None,
        }
    }

    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::UnknownUser(_) => "unknown_user",
            SyncError::NoCalendar(_) => "no_calendar",
            SyncError::AlreadyRunning(_) => "already_running",
            SyncError::Database { .. } => "database",
            SyncError::Backend { source, .. } => source.kind,
        }
    }
}

/// Syncs users' course calendars through a [`CalendarBackend`] (cheap to clone: the
/// clones share the backend, its Google client and quota stash). It reports failures
/// and never records them: what a failure means for the job and the user is the
/// failure policy's call ([`crate::failure`], applied by [`crate::job`]).
#[derive(Clone)]
pub struct SyncEngine {
    pool: PgPool,
    backend: Arc<dyn CalendarBackend>,
    tz: chrono_tz::Tz,
    /// Service-account modes: users without a calendar (or whose calendar is gone) get
    /// one provisioned in the same sync.
    provisioner: Option<Provisioner>,
}

impl SyncEngine {
    /// A sync engine writing events in the school's time zone `tz`.
    pub fn new(pool: PgPool, backend: Arc<dyn CalendarBackend>, tz: chrono_tz::Tz) -> SyncEngine {
        SyncEngine {
            pool,
            backend,
            tz,
            provisioner: None,
        }
    }

    /// Provision calendars for users without one, and replace deleted ones.
    pub fn with_provisioner(mut self, provisioner: Provisioner) -> SyncEngine {
        self.provisioner = Some(provisioner);
        self
    }

    /// Who owns the calendars this engine syncs (what a missing calendar means).
    pub fn calendars(&self) -> Calendars {
        match self.provisioner {
            Some(_) => Calendars::Provisioned,
            None => Calendars::UserOwned,
        }
    }

    /// The provider backend (cleanup uses the same one).
    pub fn backend(&self) -> Arc<dyn CalendarBackend> {
        self.backend.clone()
    }

    /// Sync one user's course calendar.
    pub async fn sync_user(&self, user_id: i64) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        // Two syncs of one user must never interleave: a session advisory lock on a
        // connection held for the whole sync (released when it ends or the process dies).
        let lock = UserSyncLock::try_acquire(&self.pool, user_id)
            .await
            .map_err(|source| SyncError::Database { user_id, source })?
            .ok_or(SyncError::AlreadyRunning(user_id))?;
        let res = self.sync_locked(user_id).await;
        lock.unlock().await;
        metrics::histogram!("calsync_sync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut report = res?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn sync_locked(&self, user_id: i64) -> Result<SyncReport, SyncError> {
        let db = |source: DomainError| match source {
            DomainError::UnknownUser(id) => SyncError::UnknownUser(id),
            source => SyncError::Database { user_id, source },
        };
        let mut report = SyncReport {
            user_id,
            ..Default::default()
        };
        let mut session: Option<Box<dyn CalendarSession>> = None;
        loop {
            report.passes += 1;
            let snap = schedule::load_snapshot(&self.pool, user_id)
                .await
                .map_err(db)?;
            let calendar = snap
                .user
                .google_course_calendar_id
                .clone()
                .filter(|c| !c.is_empty());
            let shown = calendar.clone().unwrap_or_default();
            let backend = |source: BackendError| SyncError::Backend {
                user_id,
                calendar_id: shown.clone(),
                source,
            };
            if calendar.is_none() && self.provisioner.is_none() {
                return Err(SyncError::NoCalendar(user_id));
            }
            if session.is_none() {
                let account = Account {
                    user_id,
                    email: snap.user.email.clone(),
                };
                session = Some(self.backend.session(&account).await.map_err(backend)?);
            }
            let Some(s) = session.as_mut() else {
                return Err(SyncError::NoCalendar(user_id));
            };
            let calendar_id = match (calendar, &self.provisioner) {
                (Some(c), _) => c,
                (None, Some(p)) => {
                    // No calendar yet: provision one, then sync it in this same job.
                    p.provision(
                        s.as_mut(),
                        user_id,
                        &snap.user.email,
                        ProvisionReason::New,
                        None,
                    )
                    .await
                    .map_err(|e| self.provision_error(user_id, e))?;
                    report.provisioned = Some(ProvisionReason::New.as_str());
                    report.passes -= 1;
                    continue;
                }
                (None, None) => return Err(SyncError::NoCalendar(user_id)),
            };
            let plan = events::plan_events(&snap, self.tz);
            for skipped in &plan.skipped {
                tracing::warn!(user_id, source = ?skipped.source, reason = %skipped.reason,
                    "schedule row produces no calendar event");
            }
            report.skipped_meetings = plan.skipped.len() as u32;
            calsync_domain::preferences::store::note_render_warnings(
                &self.pool,
                user_id,
                &plan.warnings,
            )
            .await;
            // No calendars.get: listing the calendar's events proves it exists (a
            // missing calendar fails the list with NeedsUser(RecreateCalendar)).
            let res = reconcile(s.as_mut(), &calendar_id, &plan.events, &mut report).await;
            report.api_calls = s.calls();
            match (res, &self.provisioner) {
                (Ok(()), _) => {}
                // The calendar calsync owns is gone: replace it (once per sync) and sync
                // the new one now.
                (Err(e), Some(p))
                    if e.class == ErrorClass::NeedsUser(UserAction::RecreateCalendar)
                        && report.provisioned != Some(ProvisionReason::Replaced.as_str()) =>
                {
                    tracing::warn!(user_id, %calendar_id, "course calendar is gone in Google; provisioning a new one");
                    p.provision(
                        s.as_mut(),
                        user_id,
                        &snap.user.email,
                        ProvisionReason::Replaced,
                        Some(&calendar_id),
                    )
                    .await
                    .map_err(|e| self.provision_error(user_id, e))?;
                    report.provisioned = Some(ProvisionReason::Replaced.as_str());
                    report.passes -= 1;
                    continue;
                }
                (Err(e), _) => return Err(backend(e)),
            }

            match users::finish_sync(&self.pool, user_id, snap.user.calendar_sync_generation)
                .await
                .map_err(db)?
            {
                FinishOutcome::Cleared => {
                    report.cleared = true;
                    return Ok(report);
                }
                FinishOutcome::ChangedDuringSync if report.passes < MAX_PASSES => {
                    tracing::info!(
                        user_id,
                        pass = report.passes,
                        "schedule changed during the sync; syncing again"
                    );
                }
                FinishOutcome::ChangedDuringSync => {
                    tracing::info!(
                        user_id,
                        "schedule keeps changing; leaving the user flagged for the next pass"
                    );
                    return Ok(report);
                }
            }
        }
    }
}

impl SyncEngine {
    fn provision_error(&self, user_id: i64, e: ProvisionError) -> SyncError {
        match e {
            ProvisionError::Backend(source) => SyncError::Backend {
                user_id,
                calendar_id: String::new(),
                source,
            },
            ProvisionError::Database(source) => SyncError::Database { user_id, source },
        }
    }
}

/// The start and end a desired event has in the calendar.
fn event_times(ev: &DesiredEvent) -> (EventTime, EventTime) {
    match ev.timing {
        EventTiming::Timed { time_zone, .. } => {
            let (start, end) = ev.instants().unwrap_or_default();
            let at = |t: chrono::DateTime<chrono::FixedOffset>| EventTime::At {
                instant: t.with_timezone(&Utc),
                time_zone: Some(time_zone.name().to_string()),
            };
            (at(start), at(end))
        }
        // The end day is exclusive in the calendar.
        EventTiming::AllDay {
            first_day,
            last_day,
        } => (
            EventTime::Day(first_day),
            EventTime::Day(last_day + chrono::Duration::days(1)),
        ),
    }
}

/// The event calsync writes for a desired event: its content, its appearance, and the
/// private tags that mark it as calsync's (owner, fingerprint, source row).
pub fn event_body(ev: &DesiredEvent) -> CalendarEvent {
    let (source_key, source_value) = ev.source.property();
    let private_properties = BTreeMap::from([
        (OWNER_PROPERTY.to_string(), OWNER_VALUE.to_string()),
        (FINGERPRINT_PROPERTY.to_string(), ev.fingerprint.clone()),
        (source_key.to_string(), source_value),
    ]);
    let (start, end) = event_times(ev);
    let appearance = &ev.appearance;
    CalendarEvent {
        id: ev.id.clone(),
        status: EventStatus::Confirmed,
        summary: Some(ev.summary.clone()),
        description: Some(ev.description.clone()),
        location: Some(ev.location.clone()),
        start: Some(start),
        end: Some(end),
        recurrence: ev.recurrence.clone(),
        color_id: appearance.color_id,
        visibility: (appearance.visibility != Visibility::Default).then_some(appearance.visibility),
        transparency: (appearance.transparency != Transparency::Opaque)
            .then_some(appearance.transparency),
        reminders: Some(appearance.reminders.clone()),
        private_properties,
    }
}

/// How [`write_event`] got the event into the calendar.
enum Written {
    Created,
    Updated,
}

/// Put `ev` into the calendar under its deterministic id, whatever the calendar
/// currently holds: update first when the event was listed, insert otherwise, and fall
/// over to the other call when the provider disagrees (missing on update, duplicate on
/// insert).
async fn write_event(
    s: &mut dyn CalendarSession,
    calendar_id: &str,
    ev: &DesiredEvent,
    listed: bool,
) -> Result<Written, BackendError> {
    let body = event_body(ev);
    if listed && s.update_event(calendar_id, &body).await? == Updated::Updated {
        return Ok(Written::Updated);
    }
    match s.insert_event(calendar_id, &body).await? {
        Inserted::Created => Ok(Written::Created),
        Inserted::Duplicate => match s.update_event(calendar_id, &body).await? {
            Updated::Updated => Ok(Written::Updated),
            Updated::Missing => Err(BackendError::permanent(
                "inconsistent",
                format!(
                    "the calendar reports event {} as existing (on insert) and missing (on update)",
                    ev.id
                ),
            )),
        },
    }
}

/// The query listing calsync's own events in a calendar, deleted ones included.
fn owner_query() -> EventQuery {
    EventQuery {
        tag_key: OWNER_PROPERTY.to_string(),
        tag_value: OWNER_VALUE.to_string(),
        include_deleted: true,
    }
}

/// Bring the calendar in line with `desired`: list calsync's events, then carry out
/// [`diff::diff`]'s decisions in its order — inserts, updates and restores first,
/// deletes last, so the calendar is never empty mid-sync.
async fn reconcile(
    s: &mut dyn CalendarSession,
    calendar_id: &str,
    desired: &[DesiredEvent],
    report: &mut SyncReport,
) -> Result<(), BackendError> {
    let listed = s.list_events(calendar_id, &owner_query()).await?;
    report.inserted = 0;
    report.updated = 0;
    report.restored = 0;
    report.deleted = 0;
    report.unchanged = 0;
    for decision in diff::diff(desired, &listed) {
        match decision {
            Decision::Unchanged { .. } => report.unchanged += 1,
            Decision::Update { desired, existing } | Decision::Restore { desired, existing } => {
                match write_event(s, calendar_id, desired, true).await? {
                    Written::Updated if existing.status == EventStatus::Cancelled => {
                        report.restored += 1
                    }
                    Written::Updated => report.updated += 1,
                    Written::Created => report.inserted += 1,
                }
            }
            Decision::Insert { desired } => {
                match write_event(s, calendar_id, desired, false).await? {
                    Written::Created => report.inserted += 1,
                    // The id exists but was not listed (e.g. its tags were stripped): it has
                    // been taken over.
                    Written::Updated => report.restored += 1,
                }
            }
            Decision::Delete { existing } => match s.delete_event(calendar_id, &existing.id).await?
            {
                Deleted::Now => report.deleted += 1,
                Deleted::AlreadyGone => {}
            },
        }
    }
    Ok(())
}
