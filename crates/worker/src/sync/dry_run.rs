//! A sync's dry-run: what a sync of one student would insert, update, restore and
//! delete right now, field by field, without writing anything. It plans the events
//! exactly as a sync does, lists the calendar through the same provider seam (so the
//! call passes the same cluster-wide Google quota), and describes the decisions of the
//! same [`diff`](super::diff::diff) the sync carries out. It takes no per-user lock,
//! records no render warning and never touches the user's sync flag or status.
//!
//! `calsync sync-user ID --dry-run` prints it; the dashboard's "Check against Google"
//! reaches it through [`EnginePreview`], the worker's implementation of the dashboard's
//! [`calsync_dashboard::SyncPreview`].

use std::{future::Future, pin::Pin, sync::Arc};

use calsync_dashboard::{PreviewError, SyncPreview};
use calsync_domain::{
    DomainError,
    dry_run::{CalendarCheck, DryRunReport},
    events, schedule,
};
use chrono::Utc;

use super::{SyncEngine, SyncError, diff, owner_query};
use crate::backend::{Account, ErrorClass, UserAction};

impl SyncEngine {
    /// What a sync of `user_id` would do now; reads the database and lists the
    /// calendar, writes nothing. Fails like a sync would before its first write
    /// (unknown user, refused credentials, Google errors).
    pub async fn dry_run(&self, user_id: i64) -> Result<DryRunReport, SyncError> {
        let snap =
            schedule::load_snapshot(&self.pool, user_id)
                .await
                .map_err(|source| match source {
                    DomainError::UnknownUser(id) => SyncError::UnknownUser(id),
                    source => SyncError::Database { user_id, source },
                })?;
        let plan = events::plan_events(&snap, self.tz);
        let calendar_id = snap
            .user
            .google_course_calendar_id
            .clone()
            .filter(|c| !c.is_empty());
        let provisioned = self.provisioner.is_some();
        let mut report = DryRunReport {
            user_id,
            calendar_id: calendar_id.clone(),
            calendar: CalendarCheck::Listed,
            changes: Vec::new(),
            unchanged: 0,
            skipped: plan.skipped.clone(),
            warnings: plan.warnings.clone(),
            api_calls: 0,
            checked_at: Utc::now(),
        };
        let Some(calendar_id) = calendar_id else {
            // Nothing to list: the student has no calendar yet.
            report.calendar = CalendarCheck::NoCalendar { provisioned };
            if provisioned {
                report.changes = diff::all_inserts(&plan.events);
            }
            return Ok(report);
        };
        let backend = |source| SyncError::Backend {
            user_id,
            calendar_id: calendar_id.clone(),
            source,
        };
        let account = Account {
            user_id,
            email: snap.user.email.clone(),
        };
        let mut session = self.backend.session(&account).await.map_err(backend)?;
        let listed = session.list_events(&calendar_id, &owner_query()).await;
        report.api_calls = session.calls();
        match listed {
            Ok(listed) => {
                let decisions = diff::diff(&plan.events, &listed);
                report.unchanged = decisions
                    .iter()
                    .filter(|d| matches!(d, diff::Decision::Unchanged { .. }))
                    .count() as u32;
                report.changes = diff::describe(&decisions);
            }
            Err(e) if e.class == ErrorClass::NeedsUser(UserAction::RecreateCalendar) => {
                report.calendar = CalendarCheck::Missing { provisioned };
                if provisioned {
                    report.changes = diff::all_inserts(&plan.events);
                }
            }
            Err(e) => return Err(backend(e)),
        }
        Ok(report)
    }
}

/// The sync engine as the dashboard's [`SyncPreview`]: "Check against Google" runs
/// [`SyncEngine::dry_run`].
#[derive(Clone)]
pub struct EnginePreview(pub Arc<SyncEngine>);

impl SyncPreview for EnginePreview {
    fn dry_run(
        &self,
        user_id: i64,
    ) -> Pin<Box<dyn Future<Output = Result<DryRunReport, PreviewError>> + Send + '_>> {
        Box::pin(async move {
            self.0.dry_run(user_id).await.map_err(|e| match e {
                SyncError::UnknownUser(id) => PreviewError::UnknownUser(id),
                e => {
                    tracing::warn!(user_id, error = %e, kind = e.kind(), "dry run failed");
                    PreviewError::Failed(e.to_string())
                }
            })
        })
    }
}
