//! The sync engine: what a `SyncUserJob` executes. Reconciles the events a user's
//! schedule needs with what is in their course calendar: inserts, updates and deletes
//! only what differs, never empties the calendar, and clears the user's flag only if
//! nothing changed since it read the schedule.

use std::{collections::HashMap, time::Instant};

use calsync_domain::{
    DomainError,
    events::{
        self, DesiredEvent, EventTiming, FINGERPRINT_PROPERTY, OWNER_PROPERTY, OWNER_VALUE,
        Reminders, Transparency, Visibility,
    },
    schedule,
    users::{self, FinishOutcome, SyncStatus},
};
use chrono::Utc;
use google_calendar3::api::{
    Event, EventDateTime, EventExtendedProperties, EventReminder, EventReminders,
};
use serde::Serialize;
use sqlx::PgPool;

use crate::google::{CalendarSession, Deleted, GoogleClient, GoogleError, Inserted};

/// Advisory-lock namespace of per-user syncs (`pg_try_advisory_lock(NS, user_id)`).
const LOCK_NAMESPACE: i32 = 0x6361_6c73; // "cals"
/// Passes a sync makes when the schedule keeps changing under it.
const MAX_PASSES: u32 = 3;

/// A per-user session advisory lock on a pooled connection. If the sync is cancelled
/// (job timeout) or panics before [`UserLock::unlock`], the connection is closed instead
/// of going back to the pool, so the lock cannot outlive the sync.
struct UserLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    user_id: i64,
}

impl UserLock {
    async fn try_lock(&mut self) -> Result<bool, sqlx::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2::int)")
            .bind(LOCK_NAMESPACE)
            .bind(self.user_id as i32)
            .fetch_one(&mut **conn)
            .await
    }

    async fn unlock(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2::int)")
                .bind(LOCK_NAMESPACE)
                .bind(self.user_id as i32)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Could not unlock: close the connection, which releases the lock.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for UserLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not unlocked (cancelled or panicked): closing the connection releases it.
            drop(conn.detach());
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub user_id: i64,
    pub inserted: u32,
    pub updated: u32,
    /// Events the student deleted in Google, put back.
    pub restored: u32,
    pub deleted: u32,
    pub unchanged: u32,
    pub skipped_meetings: u32,
    pub google_calls: u32,
    pub passes: u32,
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
    Google {
        user_id: i64,
        calendar_id: String,
        #[source]
        source: GoogleError,
    },
    #[error("sync of user {user_id}: database error: {source}")]
    Database {
        user_id: i64,
        #[source]
        source: DomainError,
    },
}

impl SyncError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            SyncError::UnknownUser(_) | SyncError::NoCalendar(_) => true,
            SyncError::AlreadyRunning(_) | SyncError::Database { .. } => false,
            SyncError::Google { source, .. } => source.is_permanent(),
        }
    }

    /// The earliest time a retry makes sense, when Google asked for a long wait.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SyncError::Google {
                source: GoogleError::Retryable { retry_after, .. },
                ..
            } => *retry_after,
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
            SyncError::Google { source, .. } => source.kind(),
        }
    }
}

/// Syncs users' course calendars.
pub struct SyncEngine {
    pool: PgPool,
    google: GoogleClient,
    tz: chrono_tz::Tz,
}

impl SyncEngine {
    /// A sync engine writing events in the school's time zone `tz`.
    pub fn new(pool: PgPool, google: GoogleClient, tz: chrono_tz::Tz) -> SyncEngine {
        SyncEngine { pool, google, tz }
    }

    /// Sync one user's course calendar.
    pub async fn sync_user(&self, user_id: i64) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let db = |source: DomainError| SyncError::Database { user_id, source };
        // Two syncs of one user must never interleave: a session advisory lock on a
        // connection held for the whole sync (released when it ends or the process dies).
        let conn = self.pool.acquire().await.map_err(|e| db(e.into()))?;
        let mut lock = UserLock {
            conn: Some(conn),
            user_id,
        };
        if !lock.try_lock().await.map_err(|e| db(e.into()))? {
            // Not ours: the connection holds nothing and may go back to the pool.
            drop(lock.conn.take());
            return Err(SyncError::AlreadyRunning(user_id));
        }
        let res = self.sync_locked(user_id).await;
        lock.unlock().await;
        metrics::histogram!("calsync_sync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut report = match res {
            Ok(r) => r,
            Err(e) => {
                self.record_failure(user_id, &e).await;
                return Err(e);
            }
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn record_failure(&self, user_id: i64, e: &SyncError) {
        let status = match e {
            SyncError::Google {
                source: GoogleError::NeedsReauth { .. },
                ..
            } => Some(SyncStatus::NeedsReauth),
            SyncError::Google {
                source: GoogleError::CalendarMissing { .. },
                ..
            } => Some(SyncStatus::CalendarMissing),
            SyncError::Google { source, .. } if source.is_permanent() => Some(SyncStatus::Failing),
            _ => None,
        };
        let res = match status {
            Some(status) => {
                users::record_failure(&self.pool, user_id, status, &e.to_string()).await
            }
            None => users::record_error(&self.pool, user_id, &e.to_string()).await,
        };
        if let Err(db) = res {
            tracing::error!(user_id, error = %db, "could not record the sync failure");
        }
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
        let mut session: Option<CalendarSession> = None;
        loop {
            report.passes += 1;
            let snap = schedule::load_snapshot(&self.pool, user_id)
                .await
                .map_err(db)?;
            let calendar_id = snap
                .user
                .google_course_calendar_id
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or(SyncError::NoCalendar(user_id))?;
            let google = |source: GoogleError| SyncError::Google {
                user_id,
                calendar_id: calendar_id.clone(),
                source,
            };
            if session
                .as_ref()
                .is_none_or(|s| s.calendar_id() != calendar_id)
            {
                let mut s = self
                    .google
                    .session(&self.pool, user_id, &calendar_id)
                    .await
                    .map_err(google)?;
                s.check_calendar().await.map_err(google)?;
                session = Some(s);
            }
            let Some(s) = session.as_mut() else {
                return Err(SyncError::NoCalendar(user_id));
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
            reconcile(s, &plan.events, &mut report)
                .await
                .map_err(google)?;
            report.google_calls = s.calls;

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

/// The start and end Google should show for a desired event.
fn event_times(ev: &DesiredEvent) -> (EventDateTime, EventDateTime) {
    match ev.timing {
        EventTiming::Timed { time_zone, .. } => {
            let (start, end) = ev.instants().unwrap_or_default();
            let at = |t: chrono::DateTime<chrono::FixedOffset>| EventDateTime {
                date_time: Some(t.with_timezone(&Utc)),
                time_zone: Some(time_zone.name().to_string()),
                date: None,
            };
            (at(start), at(end))
        }
        EventTiming::AllDay {
            first_day,
            last_day,
        } => {
            let on = |d: chrono::NaiveDate| EventDateTime {
                date: Some(d),
                date_time: None,
                time_zone: None,
            };
            (on(first_day), on(last_day + chrono::Duration::days(1)))
        }
    }
}

/// The reminders Google should show for a desired event.
fn event_reminders(ev: &DesiredEvent) -> EventReminders {
    match &ev.appearance.reminders {
        Reminders::UseDefault => EventReminders {
            use_default: Some(true),
            overrides: None,
        },
        Reminders::Overrides(list) => EventReminders {
            use_default: Some(false),
            overrides: Some(
                list.iter()
                    .map(|r| EventReminder {
                        method: Some(r.method.as_str().to_string()),
                        minutes: Some(i32::try_from(r.minutes).unwrap_or(i32::MAX)),
                    })
                    .collect(),
            ),
        },
    }
}

/// The body calsync writes for a desired event.
pub fn event_body(ev: &DesiredEvent) -> Event {
    let (source_key, source_value) = ev.source.property();
    let private = [
        (OWNER_PROPERTY.to_string(), OWNER_VALUE.to_string()),
        (FINGERPRINT_PROPERTY.to_string(), ev.fingerprint.clone()),
        (source_key.to_string(), source_value),
    ]
    .into_iter()
    .collect();
    let (start, end) = event_times(ev);
    let appearance = &ev.appearance;
    Event {
        id: Some(ev.id.clone()),
        summary: Some(ev.summary.clone()),
        description: Some(ev.description.clone()),
        location: Some(ev.location.clone()),
        start: Some(start),
        end: Some(end),
        recurrence: (!ev.recurrence.is_empty()).then(|| ev.recurrence.clone()),
        status: Some("confirmed".into()),
        color_id: appearance.color_id.map(|c| c.to_string()),
        visibility: (appearance.visibility != Visibility::Default)
            .then(|| appearance.visibility.as_str().to_string()),
        transparency: (appearance.transparency != Transparency::Opaque)
            .then(|| appearance.transparency.as_str().to_string()),
        reminders: Some(event_reminders(ev)),
        extended_properties: Some(EventExtendedProperties {
            private: Some(private),
            shared: None,
        }),
        ..Default::default()
    }
}

/// Whether an event in Google still shows exactly what calsync wants.
fn matches_desired(existing: &Event, ev: &DesiredEvent) -> bool {
    let fp = existing
        .extended_properties
        .as_ref()
        .and_then(|p| p.private.as_ref())
        .and_then(|p| p.get(FINGERPRINT_PROPERTY));
    let (start, end) = event_times(ev);
    let when_matches = |got: &Option<EventDateTime>, want: &EventDateTime| {
        got.as_ref().is_some_and(|d| {
            d.date_time == want.date_time
                && d.date == want.date
                && (want.time_zone.is_none() || d.time_zone == want.time_zone)
        })
    };
    let recurrence = existing.recurrence.as_deref().unwrap_or_default();
    existing.status.as_deref() != Some("cancelled")
        && fp == Some(&ev.fingerprint)
        && existing.summary.as_deref() == Some(ev.summary.as_str())
        && existing.description.as_deref().unwrap_or_default() == ev.description
        && existing.location.as_deref().unwrap_or_default() == ev.location
        && recurrence == ev.recurrence.as_slice()
        && when_matches(&existing.start, &start)
        && when_matches(&existing.end, &end)
}

/// How [`write_event`] got the event into the calendar.
enum Written {
    Created,
    Updated,
}

/// Put `ev` into the calendar under its deterministic id, whatever Google currently
/// holds: update first when the event was listed, insert otherwise, and fall over to
/// the other call when Google disagrees (404 on update, 409 on insert).
async fn write_event(
    s: &mut CalendarSession,
    ev: &DesiredEvent,
    listed: bool,
) -> Result<Written, GoogleError> {
    if listed && s.update(&ev.id, event_body(ev)).await? {
        return Ok(Written::Updated);
    }
    match s.insert(event_body(ev)).await? {
        Inserted::Created => Ok(Written::Created),
        Inserted::Duplicate if s.update(&ev.id, event_body(ev)).await? => Ok(Written::Updated),
        Inserted::Duplicate => Err(GoogleError::BadRequest {
            method: crate::google::method::EVENTS_UPDATE,
            detail: format!(
                "event {} is reported as existing (409) and missing (404)",
                ev.id
            ),
        }),
    }
}

/// Bring the calendar in line with `desired`: inserts and updates first, deletes last,
/// so the calendar is never empty mid-sync.
async fn reconcile(
    s: &mut CalendarSession,
    desired: &[DesiredEvent],
    report: &mut SyncReport,
) -> Result<(), GoogleError> {
    let filter = format!("{OWNER_PROPERTY}={OWNER_VALUE}");
    let existing: HashMap<String, Event> = s
        .list_owned_events(&filter)
        .await?
        .into_iter()
        .filter_map(|e| e.id.clone().map(|id| (id, e)))
        .collect();
    report.inserted = 0;
    report.updated = 0;
    report.restored = 0;
    report.deleted = 0;
    report.unchanged = 0;
    for ev in desired {
        match existing.get(&ev.id) {
            Some(cur) if matches_desired(cur, ev) => report.unchanged += 1,
            Some(cur) => match write_event(s, ev, true).await? {
                Written::Updated if cur.status.as_deref() == Some("cancelled") => {
                    report.restored += 1
                }
                Written::Updated => report.updated += 1,
                Written::Created => report.inserted += 1,
            },
            None => match write_event(s, ev, false).await? {
                Written::Created => report.inserted += 1,
                // The id exists but was not listed (e.g. its properties were stripped):
                // it has been taken over.
                Written::Updated => report.restored += 1,
            },
        }
    }
    let wanted: std::collections::HashSet<&str> = desired.iter().map(|e| e.id.as_str()).collect();
    for (id, cur) in &existing {
        if cur.status.as_deref() == Some("cancelled") || wanted.contains(id.as_str()) {
            continue;
        }
        match s.delete(id).await? {
            Deleted::Now => report.deleted += 1,
            Deleted::AlreadyGone => {}
        }
    }
    Ok(())
}
