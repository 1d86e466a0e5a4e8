//! Users: search and filter, one user with their recent jobs, and "sync now".
//!
//! The user page is a list of sections, each a function of data loaded in `detail`:
//! `profile`, `actions`, the Google check (`check::section`), the week grid
//! (`week::section`), `recent_jobs`, and the calendar preferences.

use axum::extract::State;
use calsync_domain::{
    DomainError,
    jobs::{self, JobSummary},
    priority::{self, PriorityClass, RequestOutcome, Requested, SyncRequest},
    queue::{JobFilter, JobState},
    user_list::{self, UserFilter, UserQuery},
    users,
};
use maud::{Markup, html};

use super::{
    Action, Ctx, PageResult,
    layout::{badge, button, query, short, ts},
};
use crate::{
    SharedState,
    error::PageError,
    input::{PathId, QueryParams},
};

/// `GET /users`.
pub async fn list(
    State(st): State<SharedState>,
    ctx: Ctx,
    QueryParams(p): QueryParams,
) -> PageResult {
    let search = p.get("q").map(str::trim).unwrap_or("").to_string();
    let filter = p
        .get("status")
        .map(|s| {
            UserFilter::parse(s)
                .ok_or_else(|| PageError::BadRequest(format!("unknown status {s:?}")))
        })
        .transpose()?;
    let q = UserQuery {
        search: Some(search.clone()).filter(|s| !s.is_empty()),
        filter,
        after: p.number("after", "after")?,
        limit: st.page_size + 1,
    };
    let mut rows = user_list::list(&st.pool, &q).await?;
    let more = rows.len() as i64 > st.page_size;
    rows.truncate(st.page_size as usize);
    let status = filter.map(|f| f.as_str()).unwrap_or("");
    let next = rows.last().filter(|_| more).map(|last| {
        format!(
            "/users?{}",
            query(&[
                ("q", search.clone()),
                ("status", status.to_string()),
                ("after", last.id.to_string())
            ])
        )
    });
    let body = html! {
        form.filters method="get" action="/users" {
            label { "id or e-mail " input name="q" value=(search); }
            label {
                "status "
                select name="status" {
                    option value="" { "any" }
                    @for f in UserFilter::ALL {
                        option selected[filter == Some(f)] { (f.as_str()) }
                    }
                }
            }
            button { "Search" }
        }
        table {
            tr {
                th { "id" } th { "e-mail" } th { "name" } th { "calendar" }
                th { "flagged" } th { "last sync" } th { "status" } th { "last error" }
            }
            @if rows.is_empty() {
                tr { td.muted colspan="8" { "No users match." } }
            }
            @for u in &rows {
                tr {
                    td { a href={ "/users/" (u.id) } { (u.id) } }
                    td { (u.email) }
                    td { (u.name) }
                    td { @if u.has_calendar { "yes" } @else { "none" } }
                    td { @if u.calendar_needs_sync { "yes" } @else { "no" } }
                    td { (ts(u.last_calendar_sync_at)) }
                    td { (badge(u.calendar_sync_status.as_str())) }
                    td { (short(u.last_sync_error.as_deref().unwrap_or(""), 100)) }
                }
            }
        }
        @if let Some(next) = next {
            p { a rel="next" href=(next) { "Next →" } }
        }
    };
    ctx.render("Users", body)
}

/// `GET /users/{id}`.
pub async fn detail(
    State(st): State<SharedState>,
    ctx: Ctx,
    PathId(id): PathId<i64>,
) -> PageResult {
    let u = match users::get_current(&st.pool, id).await {
        Ok(u) => u,
        Err(DomainError::UnknownUser(_)) => {
            return Err(PageError::NotFound(format!("There is no user {id}.")));
        }
        Err(e) => return Err(e.into()),
    };
    let of_user = JobFilter {
        user_id: Some(id),
        ..Default::default()
    };
    let recent = jobs::list(&st.pool, &of_user, None, 20).await?;
    let prefs = calsync_domain::preferences::view::user_preferences(&st.pool, id).await?;
    let week = calsync_domain::week::student_week(&st.pool, id).await?;
    let body = html! {
        (profile(id, &u))
        (actions(&ctx, id, recent.iter().any(|j| j.state == JobState::Retrying)))
        (super::check::section(&ctx, id, st.preview.is_some()))
        (super::week::section(&week))
        (recent_jobs(id, &recent))
        (super::preferences::section(&prefs))
    };
    ctx.render(&format!("User {id}"), body)
}

fn profile(id: i64, u: &users::User) -> Markup {
    html! {
        table {
            tr { th { "id" } td { (id) } }
            tr { th { "e-mail" } td { (u.email) } }
            tr { th { "name" } td { (u.name) } }
            tr { th { "course calendar" } td { (u.google_course_calendar_id.as_deref().unwrap_or("none")) } }
            tr { th { "needs sync" } td { @if u.calendar_needs_sync { "yes" } @else { "no" } } }
            tr { th { "last sync" } td { (ts(u.last_calendar_sync_at)) } }
            tr { th { "status" } td { (badge(u.calendar_sync_status.as_str())) } }
            tr { th { "last error" } td { (u.last_sync_error.as_deref().unwrap_or("—")) } }
            tr { th { "last error at" } td { (ts(u.last_sync_error_at)) } }
            tr { th { "change generation" } td { (u.calendar_sync_generation) } }
        }
    }
}

/// "Sync now" (interactive class: ahead of the nightly backlog; a waiting job is raised,
/// never duplicated) and, while the user's job waits on its retry backoff, the same
/// with the wait skipped.
fn actions(ctx: &Ctx, id: i64, retrying: bool) -> Markup {
    let back = ("back", format!("/users/{id}"));
    html! {
        @if ctx.admin() {
            p {
                (button(&format!("/users/{id}/sync"), "Sync now", ctx.csrf(), std::slice::from_ref(&back), false))
                @if retrying {
                    " "
                    (button(&format!("/users/{id}/sync"), "Sync now, skip the retry wait", ctx.csrf(), &[back.clone(), ("due_now", "true".into())], false))
                }
            }
        }
    }
}

fn recent_jobs(id: i64, recent: &[JobSummary]) -> Markup {
    html! {
        h2 { "Recent jobs" }
        (super::jobs::table(recent))
        p { a href={ "/jobs?user_id=" (id) } { "All jobs of this user" } }
    }
}

/// `POST /users/{id}/sync`.
pub async fn sync_now(
    State(st): State<SharedState>,
    PathId(id): PathId<i64>,
    act: Action,
) -> PageResult {
    let here = format!("/users/{id}");
    let req = SyncRequest {
        user_id: id,
        reason: "dashboard",
        class: PriorityClass::Interactive,
        due_now: act.form.get("due_now") == Some("true"),
    };
    match priority::request_sync(&st.pool, &req, act.actor()).await {
        Ok(r) => {
            tracing::info!(user_id = id, job_id = %r.job_id, outcome = r.outcome.as_str(), class = %r.class, "dashboard: sync requested");
            Ok(act.back_to(&here, &sync_flash(id, &r)))
        }
        Err(DomainError::UnknownUser(_)) => {
            Ok(act.back_to("/users", &format!("Unknown user {id}")))
        }
        Err(DomainError::NoCalendar(_)) => Ok(act.back_to(
            &here,
            &format!("User {id} has no course calendar; nothing to sync"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The flash message after "Sync now".
fn sync_flash(id: i64, r: &Requested) -> String {
    let job = &r.job_id;
    let mut text = match r.outcome {
        RequestOutcome::Enqueued => format!("Sync of user {id} queued as job {job} ({})", r.class),
        RequestOutcome::Raised => format!(
            "User {id} already had job {job} waiting; it now runs ahead of the nightly backlog ({})",
            r.class
        ),
        RequestOutcome::Unchanged => format!(
            "User {id} already has job {job} waiting at {} priority",
            r.class
        ),
        RequestOutcome::Running => format!(
            "Job {job} of user {id} is running now, so no second job was queued. A change it missed keeps the user flagged: press Sync now again once it has finished"
        ),
    };
    if r.made_due {
        text.push_str("; it no longer waits for its retry backoff");
    }
    if r.demoted {
        text.push_str(
            ". The dashboard's budget of syncs ahead of the nightly is spent for this minute, so it was queued at nightly priority",
        );
    }
    text
}
