//! Provisioning (service-account modes): give a user a course calendar calsync owns,
//! idempotently — a crash at any point never leaves two calendars for one user.
//!
//! 1. The user's active row in `calsync.owned_calendars` (a crash after the record but
//!    before the user's row was updated) is reused.
//! 2. Else, when an earlier creation for this user began and was never recorded
//!    (`calsync.provisioning_attempts`, written before `calendars.insert`), a calendar in
//!    the owner's calendar list whose description carries the user's marker
//!    (`[calsync:<installation>:user:<id>]`; a crash between create and record) is
//!    adopted. Only then is the owner's whole calendar list read: on the usual path a
//!    new student costs no listing, however many calendars the owner has.
//! 3. Else a calendar is created (summary and time zone from the configuration, the
//!    marker in its description) and recorded at once.
//!
//! Then it is shared with the student (service-account mode; ACL role from the
//! configuration, notification e-mails off unless configured), and its id stored in
//! `users.google_course_calendar_id` with a `calendar_provisioned` audit row
//! (`owned_calendars::assign`). Every step is idempotent, so a retry after any failure
//! resumes where the last attempt stopped.

use calsync_domain::{
    DomainError,
    owned_calendars::{self, ProvisionReason},
    settings::{self, CalendarMode},
};
use sqlx::PgPool;

use crate::backend::{AccessRole, BackendError, CalendarSession, NewCalendar, Share};

/// What provisioned calendars look like.
#[derive(Debug, Clone)]
pub struct ProvisionSettings {
    /// The calendar's name in Google.
    pub summary: String,
    /// Its IANA time zone.
    pub time_zone: String,
    /// What the student may do with it (service-account mode).
    pub share_role: AccessRole,
    /// Whether Google e-mails the student about the share.
    pub notify: bool,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Database(#[from] DomainError),
}

/// Creates, finds and shares calendars calsync owns.
#[derive(Debug, Clone)]
pub struct Provisioner {
    pool: PgPool,
    mode: CalendarMode,
    /// The service account's e-mail (the owner in service-account mode).
    service_account: String,
    settings: ProvisionSettings,
}

impl Provisioner {
    /// A provisioner for `mode` (which must provision).
    pub fn new(
        pool: PgPool,
        mode: CalendarMode,
        service_account: String,
        settings: ProvisionSettings,
    ) -> Provisioner {
        Provisioner {
            pool,
            mode,
            service_account,
            settings,
        }
    }

    /// The mode it provisions for.
    pub fn mode(&self) -> CalendarMode {
        self.mode
    }

    /// Who owns the calendars it creates for the student `email`.
    pub fn owner(&self, email: &str) -> String {
        match self.mode {
            CalendarMode::Delegated => email.trim().to_lowercase(),
            _ => self.service_account.clone(),
        }
    }

    /// Give `user_id` a calendar through `session` (acting as the owner); `previous`: the
    /// calendar that disappeared, when replacing one. Returns the calendar id.
    pub async fn provision(
        &self,
        session: &mut dyn CalendarSession,
        user_id: i64,
        email: &str,
        reason: ProvisionReason,
        previous: Option<&str>,
    ) -> Result<String, ProvisionError> {
        let owner = self.owner(email);
        if let Some(old) = previous {
            owned_calendars::mark_deleted(&self.pool, old).await?;
        }
        let recorded = owned_calendars::active_for_user(&self.pool, user_id)
            .await?
            .filter(|c| Some(c.calendar_id.as_str()) != previous);
        let (calendar_id, shared_with) = match recorded {
            Some(c) => (c.calendar_id, c.shared_with),
            None => {
                let installation = settings::installation_id(&self.pool).await?;
                let marker = owned_calendars::marker(&installation, user_id);
                // Only after a creation that began and was never recorded can a calendar
                // with this marker exist: then look for it (listing every calendar the
                // owner has), otherwise create straight away.
                let found = if owned_calendars::begin_creation(&self.pool, user_id).await? {
                    session
                        .list_calendars()
                        .await?
                        .into_iter()
                        .filter(|c| Some(c.id.as_str()) != previous)
                        .find(|c| {
                            c.description
                                .as_deref()
                                .is_some_and(|d| d.contains(&marker))
                        })
                } else {
                    None
                };
                let id = match found {
                    Some(c) => {
                        tracing::info!(user_id, calendar_id = %c.id,
                            "adopting a calendar created for this user before (found by its marker)");
                        c.id
                    }
                    None => {
                        session
                            .create_calendar(&NewCalendar {
                                summary: self.settings.summary.clone(),
                                description: Some(format!(
                                    "Your course schedule, kept up to date by calsync. {marker}"
                                )),
                                time_zone: Some(self.settings.time_zone.clone()),
                            })
                            .await?
                            .id
                    }
                };
                owned_calendars::record(&self.pool, &id, user_id, &owner).await?;
                (id, None)
            }
        };
        // The student owns calendars created in their own account (delegation).
        let student = email.trim().to_lowercase();
        if self.mode == CalendarMode::ServiceAccount && shared_with.as_deref() != Some(&student) {
            session
                .share_calendar(
                    &calendar_id,
                    &Share {
                        email: student.clone(),
                        role: self.settings.share_role,
                        notify: self.settings.notify,
                    },
                )
                .await?;
            owned_calendars::mark_shared(&self.pool, &calendar_id, &student).await?;
        }
        owned_calendars::assign(
            &self.pool,
            user_id,
            &calendar_id,
            reason,
            previous,
            "calsync",
        )
        .await?;
        tracing::info!(user_id, %calendar_id, reason = reason.as_str(), "course calendar provisioned");
        Ok(calendar_id)
    }
}
