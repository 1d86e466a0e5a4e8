//! What a dry-run of one student's sync found: the events a sync would insert, update,
//! restore and delete, with the field-level differences — the report the worker's
//! dry-run produces (`calsync sync-user ID --dry-run`, the dashboard's "Check against
//! Google") and the CLI and dashboard show. Plain data; the worker computes it with the
//! same diff function the real sync acts on.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::events::{EventKind, SkippedItem};
use crate::render::RenderWarning;

/// What a sync would do to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    /// Not in the calendar: created.
    Insert,
    /// In the calendar, but not as calsync wants it: rewritten.
    Update,
    /// Deleted in the calendar (by the student): put back.
    Restore,
    /// calsync's, but no longer in the schedule: deleted.
    Delete,
}

impl ChangeAction {
    /// Every action, in the order a report lists them.
    pub const ALL: [ChangeAction; 4] = [
        ChangeAction::Insert,
        ChangeAction::Update,
        ChangeAction::Restore,
        ChangeAction::Delete,
    ];

    /// `insert`, `update`, `restore`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Insert => "insert",
            ChangeAction::Update => "update",
            ChangeAction::Restore => "restore",
            ChangeAction::Delete => "delete",
        }
    }
}

/// One field that differs between the calendar and what calsync would write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// e.g. `summary`, `start`, `recurrence`, `status`.
    pub field: &'static str,
    /// The calendar's value now (for `recurrence`: the lines only the calendar has).
    pub before: String,
    /// What calsync would write (for `recurrence`: the lines only calsync's has).
    pub after: String,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: '{}' → '{}'", self.field, self.before, self.after)
    }
}

/// One event a sync would write or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    pub action: ChangeAction,
    pub event_id: String,
    /// The kind of event (`None`: a calsync event the schedule no longer has and whose
    /// kind its tags do not tell).
    pub kind: Option<EventKind>,
    /// The title calsync would write (deletes: the title in the calendar).
    pub summary: String,
    /// Why, in words, when the fields alone do not say it (e.g. "a student deleted
    /// this event").
    pub note: Option<String>,
    /// Updates and restores: the fields that differ.
    pub fields: Vec<FieldChange>,
}

/// What the calendar check found before any diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CalendarCheck {
    /// The calendar was listed: the changes are what a sync would do now.
    Listed,
    /// The student has no course calendar. `provisioned`: a sync would create one and
    /// insert every event (listed as inserts); otherwise there is nothing to sync to.
    NoCalendar { provisioned: bool },
    /// The calendar is gone in Google. `provisioned`: a sync would replace it and insert
    /// every event (listed as inserts); otherwise the sync stops and the student is
    /// marked `calendar_missing`.
    Missing { provisioned: bool },
}

/// A dry-run of one student's sync: nothing was written, to Google or the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRunReport {
    pub user_id: i64,
    /// The calendar checked (`None`: the student has none).
    pub calendar_id: Option<String>,
    pub calendar: CalendarCheck,
    /// Inserts, updates, restores, then deletes, each in event-id order.
    pub changes: Vec<PlannedChange>,
    /// Events already exactly as calsync wants them.
    pub unchanged: u32,
    /// Schedule rows that produce no event.
    pub skipped: Vec<SkippedItem>,
    /// Template failures (the field keeps its built-in text).
    pub warnings: Vec<RenderWarning>,
    /// Calendar API calls the check made (all reads).
    pub api_calls: u32,
    pub checked_at: DateTime<Utc>,
}

impl DryRunReport {
    /// How many changes of `action`.
    pub fn count(&self, action: ChangeAction) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// Whether a sync would change nothing.
    pub fn in_sync(&self) -> bool {
        self.changes.is_empty() && self.calendar == CalendarCheck::Listed
    }

    /// One line on the calendar and the counts, e.g. `calendar c1: 1 insert, 2
    /// updates, 0 restores, 0 deletes, 5 unchanged`.
    pub fn summary(&self) -> String {
        let counts = ChangeAction::ALL
            .iter()
            .map(|a| {
                let n = self.count(*a);
                format!("{n} {}{}", a.as_str(), if n == 1 { "" } else { "s" })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let calendar = self.calendar_id.as_deref().unwrap_or("(none)");
        let state = match self.calendar {
            CalendarCheck::Listed => "",
            CalendarCheck::NoCalendar { provisioned: true } => {
                " — no calendar yet: a sync would create one"
            }
            CalendarCheck::NoCalendar { provisioned: false } => {
                " — no course calendar: a sync has nothing to write to"
            }
            CalendarCheck::Missing { provisioned: true } => {
                " — the calendar is gone in Google: a sync would replace it"
            }
            CalendarCheck::Missing { provisioned: false } => {
                " — the calendar is gone in Google: a sync would stop and mark the student calendar_missing"
            }
        };
        format!(
            "user {} calendar {calendar}: {counts}, {} unchanged{state}",
            self.user_id, self.unchanged
        )
    }

    /// The report as text, one line per change and one indented line per field.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("dry run (nothing written): {}", self.summary())];
        for c in &self.changes {
            let kind = c
                .kind
                .map(|k| format!(" [{}]", k.as_str()))
                .unwrap_or_default();
            out.push(format!(
                "{:<7} {}{kind} {:?}{}",
                c.action.as_str(),
                c.event_id,
                c.summary,
                c.note
                    .as_deref()
                    .map(|n| format!(" — {n}"))
                    .unwrap_or_default()
            ));
            for f in &c.fields {
                out.push(format!("          {f}"));
            }
        }
        for s in &self.skipped {
            out.push(format!(
                "skipped {} {}: {}",
                s.source.kind().as_str(),
                s.source.id(),
                s.reason
            ));
        }
        for w in &self.warnings {
            out.push(format!("warning {w}"));
        }
        if self.in_sync() {
            out.push("the calendar is in sync: a sync would write nothing".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_as_text() {
        let report = DryRunReport {
            user_id: 42,
            calendar_id: Some("c1".into()),
            calendar: CalendarCheck::Listed,
            changes: vec![
                PlannedChange {
                    action: ChangeAction::Update,
                    event_id: "cs42m1".into(),
                    kind: Some(EventKind::Class),
                    summary: "Calculus I".into(),
                    note: None,
                    fields: vec![FieldChange {
                        field: "summary",
                        before: "Calc 1".into(),
                        after: "Calculus I".into(),
                    }],
                },
                PlannedChange {
                    action: ChangeAction::Restore,
                    event_id: "cs42m2".into(),
                    kind: Some(EventKind::Class),
                    summary: "Physics".into(),
                    note: Some("a student deleted this event".into()),
                    fields: vec![],
                },
            ],
            unchanged: 3,
            skipped: vec![],
            warnings: vec![],
            api_calls: 1,
            checked_at: Utc::now(),
        };
        let text = report.lines().join("\n");
        assert!(
            text.contains("0 inserts, 1 update, 1 restore, 0 deletes, 3 unchanged"),
            "{text}"
        );
        assert!(text.contains("summary: 'Calc 1' → 'Calculus I'"), "{text}");
        assert!(text.contains("a student deleted this event"), "{text}");
        assert!(!report.in_sync());
    }
}
