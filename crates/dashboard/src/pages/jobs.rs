//! Jobs: the list (filters, search by error text, a duration column, keyset paging),
//! one job with the timeline of its attempts, and the retry/discard actions on one job
//! or on everything a filter matches.

use std::fmt::Write;

use axum::extract::State;
use calsync_domain::{
    attempts::{self, Attempt, AttemptOutcome, ErrorSearch},
    jobs::{self, JobDetail, JobSummary},
    priority::PriorityClass,
    queue::{self, ActionOutcome, JobFilter, JobState},
};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::{
    Action, Ctx, PageResult,
    charts::{self, Span},
    layout::{badge, button, duration_text, enc, job_badge, query, short, ts},
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
    let class = p
        .get("class")
        .map(|c| PriorityClass::parse(c).map_err(|e| PageError::BadRequest(e.to_string())))
        .transpose()?;
    Ok(JobFilter {
        state,
        queue: p.get("queue").map(str::to_string),
        user_id: p.number("user_id", "user id")?,
        run_id: p.number("run_id", "run id")?,
        ids: None,
        class,
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
    if let Some(c) = f.class {
        v.push(("class", c.as_str().to_string()));
    }
    v
}

/// A priority class, with the raw priority when it is not the class' own number (a
/// raw INSERT by another service).
fn class_cell(class: PriorityClass, priority: i32) -> Markup {
    html! {
        span class={ "cls cls-" (class.as_str()) } { (class.as_str()) }
        @if priority != class.priority() { " " span.muted { "(" (priority) ")" } }
    }
}

/// The duration cell: the last attempt's, or "running …" for the current one.
fn duration_cell(j: &JobSummary) -> String {
    match (j.state, j.duration_ms) {
        (JobState::Running, Some(ms)) => format!("running {}", duration_text(ms)),
        (_, Some(ms)) => duration_text(ms),
        (_, None) => "—".into(),
    }
}

/// A table of jobs (also on the run and user pages).
pub fn table(rows: &[JobSummary]) -> Markup {
    table_with(rows, false)
}

/// A table of jobs; `searched`: the error column shows the error that matched the
/// search (which may be an earlier attempt's).
fn table_with(rows: &[JobSummary], searched: bool) -> Markup {
    html! {
        table {
            tr {
                th { "job" } th { "queue" } th { "state" }
                th title="priority class: interactive > api > nightly > maintenance" { "class" }
                th { "user" }
                th.num { "attempts" } th { "run at" }
                th title="the last attempt's, or the running attempt's so far" { "duration" }
                th { @if searched { "matching error" } @else { "last error" } }
            }
            @if rows.is_empty() {
                tr { td.muted colspan="9" { "No jobs match." } }
            }
            @for j in rows {
                tr {
                    td { a href={ "/jobs/" (enc(&j.id)) } { code { (j.id) } } }
                    td { (j.queue) }
                    td { (job_badge(j.state)) }
                    td { (class_cell(j.class, j.priority)) }
                    td {
                        @if let Some(u) = j.user_id { a href={ "/users/" (u) } { (u) } } @else { "—" }
                    }
                    td.num { (j.attempts) "/" (j.max_attempts) }
                    td { (ts(Some(j.run_at))) }
                    td { (duration_cell(j)) }
                    td {
                        @if searched {
                            (short(j.matched_error.as_deref().unwrap_or(""), 120))
                        } @else {
                            (short(j.last_error.as_deref().unwrap_or(""), 120))
                        }
                    }
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
    let error = p
        .get("error")
        .map(|t| ErrorSearch::new(t).map_err(|e| PageError::BadRequest(e.to_string())))
        .transpose()?;
    let before = p.get("before");
    let mut rows = jobs::search(&st.pool, &f, error.as_ref(), before, st.page_size + 1).await?;
    let indexed = match error {
        Some(_) => attempts::error_search_indexed(&st.pool).await?,
        None => true,
    };
    let more = rows.len() as i64 > st.page_size;
    rows.truncate(st.page_size as usize);
    let fields = filter_fields(&f);
    let mut listed = fields.clone();
    if let Some(e) = &error {
        listed.push(("error", e.text().to_string()));
    }
    let here = format!("/jobs?{}", query(&fields));
    let next = rows.last().filter(|_| more).map(|last| {
        let mut q = listed.clone();
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
            label {
                "class "
                select name="class" {
                    option value="" { "any" }
                    @for c in PriorityClass::ALL {
                        option selected[f.class == Some(c)] { (c.as_str()) }
                    }
                }
            }
            label { "queue " input name="queue" value=(f.queue.as_deref().unwrap_or("")) size="14"; }
            label { "user id " input name="user_id" value=(f.user_id.map(|u| u.to_string()).unwrap_or_default()) size="8"; }
            label { "run id " input name="run_id" value=(f.run_id.map(|u| u.to_string()).unwrap_or_default()) size="6"; }
            label title={ "any attempt's error contains this text (case-insensitive, at least " (ErrorSearch::MIN_CHARS) " characters)" } {
                "error contains "
                input name="error" type="search" value=(error.as_ref().map(|e| e.text()).unwrap_or("")) size="24";
            }
            button { "Filter" }
        }
        @if !indexed {
            p.note role="status" {
                "Error search is not indexed on this database (the pg_trgm extension was not available when calsync migrated), "
                "so each search reads every recorded error; see docs/operations.md to add the index."
            }
        }
        @if error.is_some() {
            p.note {
                "Jobs with an attempt whose error contains the text, newest first. "
                @if ctx.admin() { "Retry and discard by filter ignore the error search: clear it to act on the filter, or act on jobs one by one." }
            }
        } @else if ctx.admin() {
            p {
                (button("/jobs/retry", "Retry all failed/killed matching this filter", ctx.csrf(), &hidden, false))
                " "
                (button("/jobs/discard", "Discard all pending matching this filter", ctx.csrf(), &hidden, true))
            }
        }
        (table_with(&rows, error.is_some()))
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
    let (job, tries) =
        tokio::try_join!(jobs::get(&st.pool, &id), attempts::for_job(&st.pool, &id))?;
    let job = job.ok_or_else(|| PageError::NotFound(format!("There is no job {id}.")))?;
    let body = detail_body(&ctx, &job, &tries, Utc::now());
    ctx.render(&format!("Job {id}"), body)
}

/// The attempt timeline: SVG bars on a time axis plus a table with every detail.
fn attempts_section(j: &JobDetail, tries: &[Attempt], now: DateTime<Utc>) -> Markup {
    // The running attempt is not recorded yet: it is the job's lock time until now.
    let running = (j.state == JobState::Running)
        .then_some(j.lock_at)
        .flatten();
    if tries.is_empty() && running.is_none() {
        return html! { p.muted { "No attempt has ended yet." } };
    }
    let shown = &tries[tries.len().saturating_sub(50)..];
    let t0 = shown
        .iter()
        .map(|a| a.started_at.unwrap_or(a.finished_at))
        .chain(running)
        .min()
        .unwrap_or(now);
    let t1 = shown
        .iter()
        .map(|a| a.finished_at)
        .chain(running.map(|_| now))
        .max()
        .unwrap_or(now);
    let secs = |t: DateTime<Utc>| (t - t0).num_milliseconds() as f64 / 1000.0;
    let mut spans: Vec<Span> = shown
        .iter()
        .map(|a| Span {
            label: format!("#{}", a.attempt),
            from: a.started_at.map(secs),
            to: secs(a.finished_at),
            key: a.outcome.as_str(),
            tip: format!(
                "attempt {}: {}, {}{}",
                a.attempt,
                a.outcome.as_str(),
                a.duration()
                    .map(|d| duration_text(d.num_milliseconds()))
                    .unwrap_or_else(|| "start unknown".into()),
                a.error
                    .as_deref()
                    .map(|e| format!(": {}", short(e, 200)))
                    .unwrap_or_default()
            ),
        })
        .collect();
    if let Some(start) = running {
        spans.push(Span {
            label: format!("#{}", j.attempts + 1),
            from: Some(secs(start)),
            to: secs(now),
            key: "running",
            tip: format!(
                "attempt {}: running for {}",
                j.attempts + 1,
                duration_text((now - start).num_milliseconds())
            ),
        });
    }
    let count = |o: AttemptOutcome| tries.iter().filter(|a| a.outcome == o).count();
    let desc = format!(
        "{} recorded attempts ({} done, {} retried, {} abandoned, {} failed){}, from {} to {}.",
        tries.len(),
        count(AttemptOutcome::Done),
        count(AttemptOutcome::Retried),
        count(AttemptOutcome::Abandoned),
        count(AttemptOutcome::Failed),
        if running.is_some() {
            " and one running"
        } else {
            ""
        },
        ts(Some(t0)),
        ts(Some(t1)),
    );
    let span_ms = (t1 - t0).num_milliseconds();
    let axis = [
        t0.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        format!("+{}", duration_text(span_ms / 2)),
        format!("+{}", duration_text(span_ms)),
    ];
    html! {
        (charts::timeline("chart-attempts", "Attempts of this job", &desc, &spans, axis))
        (charts::legend(&[("done", "done"), ("retried", "retried"), ("abandoned", "abandoned (worker lost)"), ("failed", "failed"), ("running", "running")]))
        @if tries.len() > shown.len() {
            p.note { "The timeline shows the last " (shown.len()) " of " (tries.len()) " attempts." }
        }
        table.attempts {
            tr {
                th.num { "attempt" } th { "worker" } th { "started" } th { "ended" } th { "duration" }
                th { "outcome" } th { "error" }
            }
            @for a in tries {
                tr {
                    td.num { (a.attempt) }
                    td { (a.worker.as_deref().unwrap_or("—")) }
                    td { (ts(a.started_at)) }
                    td { (ts(Some(a.finished_at))) }
                    td { (a.duration().map(|d| duration_text(d.num_milliseconds())).unwrap_or_else(|| "—".into())) }
                    td { (badge(a.outcome.as_str())) }
                    td { @if let Some(e) = &a.error { pre { (e) } } }
                }
            }
            @if let Some(start) = running {
                tr {
                    td.num { (j.attempts + 1) }
                    td { (j.lock_by.as_deref().unwrap_or("—")) }
                    td { (ts(Some(start))) }
                    td { "—" }
                    td { "running " (duration_text((now - start).num_milliseconds())) }
                    td { (badge("running")) }
                    td {}
                }
            }
        }
    }
}

fn detail_body(ctx: &Ctx, j: &JobDetail, tries: &[Attempt], now: DateTime<Utc>) -> Markup {
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
            tr { th { "priority" } td { (class_cell(j.class, j.priority)) " " span.muted { "(priority " (j.priority) ")" } } }
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
        h2 { "Attempts" }
        (attempts_section(j, tries, now))
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
