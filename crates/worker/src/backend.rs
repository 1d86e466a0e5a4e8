//! The provider seam: what the sync engine needs from a calendar provider, in
//! provider-neutral types. [`crate::google`] is one implementation (Google Calendar
//! through google-calendar3); the engine ([`crate::sync`]) and the failure policy
//! ([`crate::failure`]) only see this module.
//!
//! A [`CalendarBackend`] opens a [`CalendarSession`] acting for one user (it obtains
//! whatever credentials that needs); the session performs calendar and event
//! operations and counts the API calls it made. Every failure is a [`BackendError`]
//! whose [`ErrorClass`] says what it means — retry (maybe not before a given time),
//! give up, or wait for the student — which is exactly what the failure policy
//! consumes.

use std::{collections::BTreeMap, fmt, time::Duration};

use async_trait::async_trait;
use calsync_domain::events::{Reminders, Transparency, Visibility};
use chrono::{DateTime, NaiveDate, Utc};

/// The user a session acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: i64,
    /// The student's e-mail (what sharing, or a delegated service account, acts on).
    pub email: String,
}

/// A calendar as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub id: String,
    pub summary: String,
    /// IANA time zone name, when the provider reports one.
    pub time_zone: Option<String>,
    /// The description (where calsync keeps the marker of a calendar it created).
    pub description: Option<String>,
}

/// A calendar to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCalendar {
    pub summary: String,
    pub description: Option<String>,
    /// IANA time zone name.
    pub time_zone: Option<String>,
}

/// What a person a calendar is shared with may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRole {
    /// Sees free/busy only.
    FreeBusyReader,
    /// Sees every event.
    Reader,
    /// Edits events.
    Writer,
    /// Manages the calendar and its sharing.
    Owner,
}

/// Share a calendar with one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The person's e-mail address.
    pub email: String,
    pub role: AccessRole,
    /// Whether the provider should e-mail the person about it.
    pub notify: bool,
}

/// An event's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventStatus {
    #[default]
    Confirmed,
    Tentative,
    /// Deleted (providers keep deleted events, and their ids, around).
    Cancelled,
}

/// When an event starts or ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTime {
    /// An instant, with the IANA time zone recurrences expand in.
    At {
        instant: DateTime<Utc>,
        time_zone: Option<String>,
    },
    /// A whole day (all-day events; the end day is exclusive).
    Day(NaiveDate),
}

/// A calendar event in provider-neutral form: what calsync writes, and what it reads
/// back when it lists its own events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalendarEvent {
    /// Client-chosen, deterministic id.
    pub id: String,
    pub status: EventStatus,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: Option<EventTime>,
    pub end: Option<EventTime>,
    /// RFC 5545 lines (RRULE, EXDATE), empty for single events.
    pub recurrence: Vec<String>,
    /// Color `1`–`11`; `None`: the calendar's color.
    pub color_id: Option<u8>,
    /// `None`: the provider's default.
    pub visibility: Option<Visibility>,
    /// `None`: opaque (busy).
    pub transparency: Option<Transparency>,
    pub reminders: Option<Reminders>,
    /// Private key/value tags only calsync reads (owner marker, fingerprint, source).
    pub private_properties: BTreeMap<String, String>,
}

/// Which events to list: those tagged with a private property, deleted ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub tag_key: String,
    pub tag_value: String,
    pub include_deleted: bool,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// The id is taken already (e.g. an event the student deleted): update it instead.
    Duplicate,
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    Updated,
    /// No event with that id: insert it instead.
    Missing,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Now,
    /// Deleted before, or unknown: nothing to do.
    AlreadyGone,
}

/// Something only the student (or an operator on their behalf) can fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    /// The provider refused the user's credentials: they must sign in again.
    Reauthenticate,
    /// The calendar does not exist (any more).
    RecreateCalendar,
}

/// What a failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later (rate limits, server errors, timeouts, network); not before
    /// `retry_after` when the provider asked for a long wait. `quota`: the provider's
    /// quota refused the call (rate limit, daily quota), so the wait is the provider's,
    /// not just the queue's backoff ("due now" leaves such a job alone).
    Retryable {
        retry_after: Option<Duration>,
        quota: bool,
    },
    /// Retrying cannot help (the request is invalid, access is denied, misconfiguration).
    Permanent,
    /// Retrying cannot help until someone acts.
    NeedsUser(UserAction),
}

/// A failed provider call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub class: ErrorClass,
    /// A stable short name for logs and metrics (`rate_limited`, `bad_request`, …).
    pub kind: &'static str,
    /// What happened, for operators (never contains secrets).
    pub message: String,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

impl BackendError {
    /// A retryable failure.
    pub fn retryable(kind: &'static str, message: impl Into<String>) -> BackendError {
        BackendError {
            class: ErrorClass::Retryable {
                retry_after: None,
                quota: false,
            },
            kind,
            message: message.into(),
        }
    }

    /// A permanent failure.
    pub fn permanent(kind: &'static str, message: impl Into<String>) -> BackendError {
        BackendError {
            class: ErrorClass::Permanent,
            kind,
            message: message.into(),
        }
    }

    /// Whether retrying cannot help (permanent, or waiting for the student).
    pub fn is_permanent(&self) -> bool {
        !matches!(self.class, ErrorClass::Retryable { .. })
    }

    /// The earliest time a retry makes sense, when the provider asked for a long wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class {
            ErrorClass::Retryable { retry_after, .. } => retry_after,
            _ => None,
        }
    }
}

/// A calendar provider.
#[async_trait]
pub trait CalendarBackend: Send + Sync + fmt::Debug {
    /// Open a session acting for `account` (obtains its credentials; a refused
    /// credential is `NeedsUser(Reauthenticate)`).
    async fn session(&self, account: &Account) -> Result<Box<dyn CalendarSession>, BackendError>;
}

/// Calendar operations on behalf of one user.
#[async_trait]
pub trait CalendarSession: Send {
    /// The calendar's metadata; `NeedsUser(RecreateCalendar)` when it does not exist.
    async fn get_calendar(&mut self, calendar_id: &str) -> Result<Calendar, BackendError>;
    /// Create a calendar owned by the session's principal.
    async fn create_calendar(&mut self, calendar: &NewCalendar) -> Result<Calendar, BackendError>;
    /// Delete a calendar and its events.
    async fn delete_calendar(&mut self, calendar_id: &str) -> Result<Deleted, BackendError>;
    /// Every calendar in the session principal's calendar list (all pages).
    async fn list_calendars(&mut self) -> Result<Vec<Calendar>, BackendError>;
    /// Share a calendar with one person.
    async fn share_calendar(
        &mut self,
        calendar_id: &str,
        share: &Share,
    ) -> Result<(), BackendError>;
    /// Every event matching `query`, all pages. A missing calendar is
    /// `NeedsUser(RecreateCalendar)`, so a successful list proves the calendar exists.
    async fn list_events(
        &mut self,
        calendar_id: &str,
        query: &EventQuery,
    ) -> Result<Vec<CalendarEvent>, BackendError>;
    /// Insert an event under its own id.
    async fn insert_event(
        &mut self,
        calendar_id: &str,
        event: &CalendarEvent,
    ) -> Result<Inserted, BackendError>;
    /// Replace the event with `event.id`.
    async fn update_event(
        &mut self,
        calendar_id: &str,
        event: &CalendarEvent,
    ) -> Result<Updated, BackendError>;
    /// Delete an event.
    async fn delete_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Deleted, BackendError>;
    /// Provider API calls made through this session so far.
    fn calls(&self) -> u32;
}
