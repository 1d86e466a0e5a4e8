//! Jobs: the list (filters, keyset paging), one job, and the retry/discard actions on
//! one job or on everything a filter matches. (The attempt timeline will join the job
//! page; a duration column the list.)

use std::fmt::Write;

use axum::extract::State;
use calsync_domain::{
    jobs::{self, JobDetail, JobSummary},
    queue::{self, ActionOutcome, JobFilter, JobState},
};
use maud::{Markup, html};

use super::{
    Action, Ctx, PageResult,
    layout::{button, enc, job_badge, query, short, ts},
};
use crate::{
    SharedState,
    error::PageError,
    input::{Params, PathId, QueryParams},
};

/// The job filter of a query string or form.
fn filter_from(p: &Params) -> Result<JobFilter, PageError> {
    let state = p
        .get("state")
        .map(|s| {
            JobState::parse(s).ok_or_else(|| PageError::BadRequest(format!("unknown state {s:?}")))
        })
        .transpose()?;
    Ok(JobFilter {
        state,
        queue: p.get("queue").map(str::to_string),
        user_id: p.number("user_id", "user id")?,
        run_id: p.number("run_id", "run id")?,
        ids: None,
    })
}

/// The filter as name/value pairs (for links and hidden fields).
fn filter_fields(f: &JobFilter) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(s) = f.state {
        v.push(("state", s.as_str().to_string()));
    }
    if let Some(q) = &f.queue {
        v.push(("queue", q.clone()));
    }
    if let Some(u) = f.user_id {
        v.push(("user_id", u.to_string()));
    }
    if let Some(r) = f.run_id {
        v.push(("run_id", r.to_string()));
    }
    v
}

/// A table of jobs (also on the run and user pages).
pub fn table(rows: &[JobSummary]) -> Markup {
    html! {
        table {
            tr {
                th { "job" } th { "queue" } th { "state" } th { "user" }
                th.num { "attempts" } th { "run at" } th { "last error" }
            }
            @if rows.is_empty() {
                tr { td.muted colspan="7" { "No jobs match." } }
            }
            @for j in rows {
                tr {
                    td { a href={ "/jobs/" (enc(&j.id)) } { code { (j.id) } } }
                    td { (j.queue) }
                    td { (job_badge(j.state)) }
                    td {
                        @if let Some(u) = j.user_id { a href={ "/users/" (u) } { (u) } } @else { "—" }
                    }
                    td.num { (j.attempts) "/" (j.max_attempts) }
                    td { (ts(Some(j.run_at))) }
                    td { (short(j.last_error.as_deref().unwrap_or(""), 120)) }
                }
            }
        }
    }
}

/// `GET /jobs`.
pub async fn list(
    State(st): State<SharedState>,
    ctx: Ctx,
    QueryParams(p): QueryParams,
) -> PageResult {
    let f = filter_from(&p)?;
    let before = p.get("before");
    let mut rows = jobs::list(&st.pool, &f, before, st.page_size + 1).await?;
    let more = rows.len() as i64 > st.page_size;
    rows.truncate(st.page_size as usize);
    let fields = filter_fields(&f);
    let here = format!("/jobs?{}", query(&fields));
    let next = rows.last().filter(|_| more).map(|last| {
        let mut q = fields.clone();
        q.push(("before", last.id.clone()));
        format!("/jobs?{}", query(&q))
    });
    let mut hidden = fields.clone();
    hidden.push(("back", here));
    let body = html! {
        form.filters method="get" action="/jobs" {
            label {
                "state "
                select name="state" {
                    option value="" { "any" }
                    @for s in JobState::ALL {
                        option selected[f.state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "queue " input name="queue" value=(f.queue.as_deref().unwrap_or("")) size="14"; }
            label { "user id " input name="user_id" value=(f.user_id.map(|u| u.to_string()).unwrap_or_default()) size="8"; }
            label { "run id " input name="run_id" value=(f.run_id.map(|u| u.to_string()).unwrap_or_default()) size="6"; }
            button { "Filter" }
        }
        @if ctx.admin() {
            p {
                (button("/jobs/retry", "Retry all failed/killed matching this filter", ctx.csrf(), &hidden, false))
                " "
                (button("/jobs/discard", "Discard all pending matching this filter", ctx.csrf(), &hidden, true))
            }
        }
        (table(&rows))
        @if let Some(next) = next {
            p { a rel="next" href=(next) { "Older jobs →" } }
        }
    };
    ctx.render("Jobs", body)
}

/// `GET /jobs/{id}`.
pub async fn detail(
    State(st): State<SharedState>,
    ctx: Ctx,
    PathId(id): PathId<String>,
) -> PageResult {
    let job = jobs::get(&st.pool, &id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no job {id}.")))?;
    let body = detail_body(&ctx, &job);
    ctx.render(&format!("Job {id}"), body)
}

fn detail_body(ctx: &Ctx, j: &JobDetail) -> Markup {
    let payload_text = match &j.payload {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => j.raw_payload.clone().unwrap_or_default(),
    };
    let last_text = match (&j.last_result, j.last_error()) {
        (_, Some(err)) => err,
        (Some(v), None) => serde_json::to_string_pretty(v).unwrap_or_default(),
        (None, None) => "—".into(),
    };
    let here = format!("/jobs/{}", enc(&j.id));
    let retryable = matches!(
        j.state,
        JobState::Failed | JobState::Killed | JobState::Retrying
    );
    let discardable = matches!(j.state, JobState::Pending | JobState::Retrying);
    html! {
        table {
            tr { th { "id" } td { code { (j.id) } } }
            tr { th { "queue" } td { (j.queue) } }
            tr { th { "state" } td { (job_badge(j.state)) " " span.muted { "(apalis status " (j.status) ")" } } }
            tr { th { "attempts" } td { (j.attempts) " of " (j.max_attempts) } }
            tr { th { "run at" } td { (ts(Some(j.run_at))) } }
            tr { th { "locked by" } td { (j.lock_by.as_deref().unwrap_or("")) } }
            tr { th { "locked at" } td { (ts(j.lock_at)) } }
            tr { th { "done at" } td { (ts(j.done_at)) } }
            tr { th { "active-job key" } td { (j.idempotency_key.as_deref().unwrap_or("")) } }
            tr { th { "priority" } td { (j.priority) } }
        }
        h2 { "Payload" }
        pre { (payload_text) }
        @if let Some(uid) = j.user_id() {
            p {
                a href={ "/users/" (uid) } { "User " (uid) }
                " · "
                a href={ "/jobs?user_id=" (uid) } { "all jobs of this user" }
            }
        }
        h2 { "Last result" }
        pre { (last_text) }
        @if ctx.admin() {
            p {
                @if retryable {
                    (button(&format!("{here}/retry"), "Retry now", ctx.csrf(), &[("back", here.clone())], false))
                    " "
                }
                @if discardable {
                    (button(&format!("{here}/discard"), "Discard", ctx.csrf(), &[("back", here.clone())], true))
                }
            }
        }
    }
}

fn outcome_text(verb: &str, out: &ActionOutcome) -> String {
    let n = out.changed.len();
    let mut s = format!("{verb} {n} job{}", if n == 1 { "" } else { "s" });
    if out.skipped > 0 {
        let _ = write!(
            s,
            ", {} skipped: the user already has an active job",
            out.skipped
        );
    }
    s
}

/// The two operator actions on jobs.
#[derive(Debug, Clone, Copy)]
enum JobAction {
    Retry,
    Discard,
}

async fn run(
    st: &SharedState,
    act: &Action,
    f: JobFilter,
    default_back: &str,
    what: JobAction,
) -> PageResult {
    let (out, verb) = match what {
        JobAction::Retry => (
            queue::retry_jobs(&st.pool, &f, act.actor()).await?,
            "Retried",
        ),
        JobAction::Discard => (
            queue::discard_jobs(&st.pool, &f, act.actor()).await?,
            "Discarded",
        ),
    };
    Ok(act.back_to(default_back, &outcome_text(verb, &out)))
}

fn one(id: &str) -> JobFilter {
    JobFilter {
        ids: Some(vec![id.to_string()]),
        ..Default::default()
    }
}

/// `POST /jobs/{id}/retry`.
pub async fn retry_one(
    State(st): State<SharedState>,
    PathId(id): PathId<String>,
    act: Action,
) -> PageResult {
    run(
        &st,
        &act,
        one(&id),
        &format!("/jobs/{}", enc(&id)),
        JobAction::Retry,
    )
    .await
}

/// `POST /jobs/{id}/discard`.
pub async fn discard_one(
    State(st): State<SharedState>,
    PathId(id): PathId<String>,
    act: Action,
) -> PageResult {
    run(
        &st,
        &act,
        one(&id),
        &format!("/jobs/{}", enc(&id)),
        JobAction::Discard,
    )
    .await
}

/// `POST /jobs/retry`: every failed/killed job the posted filter matches.
pub async fn retry_many(State(st): State<SharedState>, act: Action) -> PageResult {
    let f = filter_from(&act.form)?;
    run(&st, &act, f, "/jobs", JobAction::Retry).await
}

/// `POST /jobs/discard`: every pending job the posted filter matches.
pub async fn discard_many(State(st): State<SharedState>, act: Action) -> PageResult {
    let f = filter_from(&act.form)?;
    run(&st, &act, f, "/jobs", JobAction::Discard).await
}
