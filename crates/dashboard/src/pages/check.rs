//! "Check against Google": what a sync of one student would insert, update, restore
//! and delete now, field by field, from a dry-run that lists the student's calendar and
//! writes nothing (the process' [`crate::SyncPreview`]). Open to both roles; a POST
//! (CSRF-checked) because every check spends Google quota, throttled per process.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use calsync_domain::{
    DomainError,
    dry_run::{CalendarCheck, ChangeAction, DryRunReport},
    users,
};
use maud::{Markup, html};

use super::{
    Ctx, PageResult, ReadPost,
    layout::{button, ts},
};
use crate::{
    SharedState,
    error::PageError,
    input::PathId,
    preview::{PreviewError, Refused},
};

/// Longest a check may take (Google answers within its own timeouts long before).
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// What the user page says when this process cannot check.
pub const NOT_AVAILABLE: &str = "Checking against Google is not available in this dashboard process: it has no Google \
     configuration. Serve the dashboard with the workers' Google settings (calsync dashboard reads the same \
     CALSYNC_GOOGLE_… variables), or run `calsync sync-user ID --dry-run`.";

/// The user page's section: the button, or why there is none.
pub fn section(ctx: &Ctx, id: i64, available: bool) -> Markup {
    html! {
        h2 id="check" { "Google Calendar" }
        @if available {
            p {
                (button(&format!("/users/{id}/check"), "Check against Google", ctx.csrf(), &[], false))
                " "
                span.note { "Lists what a sync would insert, update, restore and delete, field by field. Reads the calendar (Google quota: one call, or one per 2,500 events); writes nothing." }
            }
        } @else {
            p.muted.check-unavailable { (NOT_AVAILABLE) }
        }
    }
}

/// `POST /users/{id}/check`.
pub async fn check(
    State(st): State<SharedState>,
    PathId(id): PathId<i64>,
    post: ReadPost,
) -> PageResult {
    let ctx = post.ctx();
    let Some(preview) = st.preview.clone() else {
        return Err(PageError::Unavailable(NOT_AVAILABLE.into()));
    };
    // An unknown user costs no quota.
    match users::get(&st.pool, id).await {
        Ok(_) => {}
        Err(DomainError::UnknownUser(_)) => {
            return Err(PageError::NotFound(format!("There is no user {id}.")));
        }
        Err(e) => return Err(e.into()),
    }
    let _running = st.checks.start(id).map_err(|r| match r {
        Refused::Busy(wait) => PageError::Throttled {
            message: format!(
                "Too many checks against Google from this dashboard just now (they spend Google quota). Try again in {} s.",
                wait.as_secs().max(1)
            ),
            retry_after: Some(wait),
        },
        Refused::Running => PageError::Throttled {
            message: format!("A check of user {id} is running already; wait for it."),
            retry_after: None,
        },
    })?;
    let title = format!("User {id} checked against Google");
    let result = tokio::time::timeout(CHECK_TIMEOUT, preview.dry_run(id)).await;
    let failed = |message: String| -> PageResult {
        let body = html! {
            div.error role="alert" { "The check failed: " (message) }
            (again(ctx, id))
        };
        let mut resp = ctx.render(&title, body)?;
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        Ok(resp)
    };
    match result {
        Err(_) => failed(format!(
            "no answer within {} s; try again later",
            CHECK_TIMEOUT.as_secs()
        )),
        Ok(Err(PreviewError::UnknownUser(_))) => {
            Err(PageError::NotFound(format!("There is no user {id}.")))
        }
        Ok(Err(PreviewError::Failed(message))) => failed(message),
        Ok(Ok(report)) => {
            tracing::info!(
                user_id = id,
                changes = report.changes.len(),
                api_calls = report.api_calls,
                "dashboard: checked a calendar against Google"
            );
            Ok(ctx
                .render(&title, report_body(ctx, id, &report))?
                .into_response())
        }
    }
}

fn again(ctx: &Ctx, id: i64) -> Markup {
    html! {
        p.actions {
            (button(&format!("/users/{id}/check"), "Check again", ctx.csrf(), &[], false))
            @if ctx.admin() {
                " " (button(&format!("/users/{id}/sync"), "Sync now", ctx.csrf(), &[("back", format!("/users/{id}"))], false))
            }
            " " a href={ "/users/" (id) } { "Back to user " (id) }
        }
    }
}

fn calendar_notice(report: &DryRunReport) -> Option<&'static str> {
    match report.calendar {
        CalendarCheck::Listed => None,
        CalendarCheck::NoCalendar { provisioned: true } => Some(
            "The student has no course calendar yet: a sync would create one, share it with them and insert every event below.",
        ),
        CalendarCheck::NoCalendar { provisioned: false } => Some(
            "The student has no course calendar (users.google_course_calendar_id): a sync has nothing to write to.",
        ),
        CalendarCheck::Missing { provisioned: true } => Some(
            "The course calendar is gone in Google: a sync would replace it and insert every event below.",
        ),
        CalendarCheck::Missing { provisioned: false } => Some(
            "The course calendar is gone in Google (the student deleted it): a sync would stop and mark the student calendar_missing.",
        ),
    }
}

fn report_body(ctx: &Ctx, id: i64, r: &DryRunReport) -> Markup {
    html! {
        p.note {
            "Dry run at " (ts(Some(r.checked_at))) " of calendar "
            code { (r.calendar_id.as_deref().unwrap_or("(none)")) }
            ": " (r.api_calls) " Google API call(s), all reads. Nothing was written to Google or the database."
        }
        div.cards.check-counts {
            @for a in ChangeAction::ALL {
                div class={ "card count-" (a.as_str()) } data-count=(r.count(a)) { b { (r.count(a)) } (a.as_str()) }
            }
            div.card.count-unchanged data-count=(r.unchanged) { b { (r.unchanged) } "unchanged" }
        }
        @if let Some(n) = calendar_notice(r) {
            div.error.calendar-state role="status" { (n) }
        }
        @if r.in_sync() {
            div.flash.in-sync role="status" { "In sync: the calendar shows exactly what calsync would write." }
        }
        @if !r.changes.is_empty() {
            table.check-changes {
                tr { th { "action" } th { "event" } th { "kind" } th { "title" } th { "what differs" } }
                @for c in &r.changes {
                    tr data-event=(c.event_id) data-action=(c.action.as_str()) {
                        td { span class={ "st ch-" (c.action.as_str()) } { (c.action.as_str()) } }
                        td { code { (c.event_id) } }
                        td { (c.kind.map(|k| k.as_str()).unwrap_or("—")) }
                        td { (c.summary) }
                        td {
                            @if let Some(n) = &c.note { p.change-note { (n) } }
                            @if !c.fields.is_empty() {
                                ul.fields {
                                    @for f in &c.fields {
                                        li data-field=(f.field) {
                                            strong { (f.field) } ": "
                                            del { "'" (f.before) "'" } " → " ins { "'" (f.after) "'" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !r.warnings.is_empty() {
            h3 { "Template warnings (the built-in text would be used)" }
            ul.check-warnings { @for w in &r.warnings { li { (w.to_string()) } } }
        }
        @if !r.skipped.is_empty() {
            h3 { "Schedule rows without an event" }
            ul.check-skipped {
                @for s in &r.skipped { li { (s.source.kind().as_str()) " " (s.source.id()) ": " (s.reason) } }
            }
        }
        (again(ctx, id))
    }
}
