//! Nightly runs: the list, one run with its failed jobs, and "run now". (The nightly
//! chart will join the list.)

use axum::extract::State;
use calsync_domain::{
    jobs,
    queue::{self, JobFilter, JobState, NightlyRun, RunTrigger},
};
use chrono::Utc;
use maud::{Markup, html};

use super::{
    Action, Ctx, PageResult,
    layout::{button, ts},
};
use crate::{SharedState, error::PageError, input::PathId};

fn duration(r: &NightlyRun) -> String {
    r.finished_at
        .map(|f| {
            format!(
                "{:.1} s",
                (f - r.started_at).num_milliseconds() as f64 / 1000.0
            )
        })
        .unwrap_or_else(|| "—".into())
}

/// A table of runs (also on the overview).
pub fn table(runs: &[NightlyRun]) -> Markup {
    html! {
        table {
            tr {
                th { "run" } th { "scheduled for" } th { "trigger" } th.num { "due" } th.num { "enqueued" }
                th.num { "already queued" } th.num { "succeeded" } th.num { "failed" } th { "duration" } th { "status" }
            }
            @if runs.is_empty() {
                tr { td.muted colspan="10" { "No runs yet." } }
            }
            @for r in runs {
                tr {
                    td { a href={ "/runs/" (r.id) } { "#" (r.id) } }
                    td { (ts(Some(r.scheduled_for))) }
                    td { (r.trigger) }
                    td.num { (r.users_due) }
                    td.num { (r.enqueued) }
                    td.num { (r.already_queued) }
                    td.num { (r.succeeded) }
                    td.num {
                        @if r.failed > 0 {
                            a href={ "/jobs?run_id=" (r.id) "&state=killed" } { (r.failed) }
                        } @else { "0" }
                    }
                    td { (duration(r)) }
                    td { @if r.finished_at.is_some() { "finished" } @else { "in progress" } }
                }
            }
        }
    }
}

/// `GET /runs`.
pub async fn list(State(st): State<SharedState>, ctx: Ctx) -> PageResult {
    let runs = queue::recent_nightly_runs(&st.pool, 100).await?;
    let body = html! {
        @if ctx.admin() {
            p { (button("/runs/now", "Run the nightly sync now", ctx.csrf(), &[("back", "/runs".into())], false)) }
        }
        (table(&runs))
    };
    ctx.render("Nightly runs", body)
}

/// `GET /runs/{id}`.
pub async fn detail(
    State(st): State<SharedState>,
    ctx: Ctx,
    PathId(id): PathId<i64>,
) -> PageResult {
    let run = queue::nightly_run(&st.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no nightly run {id}.")))?;
    let of_run = |state| JobFilter {
        run_id: Some(id),
        state: Some(state),
        ..Default::default()
    };
    let mut failed = jobs::list(&st.pool, &of_run(JobState::Killed), None, st.page_size).await?;
    failed.extend(jobs::list(&st.pool, &of_run(JobState::Failed), None, st.page_size).await?);
    let enqueue_took = run
        .enqueue_finished_at
        .map(|f| format!("{} ms", (f - run.started_at).num_milliseconds()))
        .unwrap_or_else(|| "—".into());
    let here = format!("/runs/{id}");
    let body = html! {
        (table(std::slice::from_ref(&run)))
        p {
            "enqueued by " code { (run.enqueued_by) } ", enqueue took " (enqueue_took) ". "
            a href={ "/jobs?run_id=" (id) } { "All jobs of this run" }
        }
        h2 { "Failed jobs" }
        (super::jobs::table(&failed))
        @if ctx.admin() && !failed.is_empty() {
            p { (button("/jobs/retry", "Retry this run's failed jobs", ctx.csrf(), &[("run_id", id.to_string()), ("back", here)], false)) }
        }
    };
    ctx.render(&format!("Nightly run #{id}"), body)
}

/// `POST /runs/now`.
pub async fn run_now(State(st): State<SharedState>, act: Action) -> PageResult {
    let Some(run) =
        queue::run_nightly_pass(&st.pool, Utc::now(), RunTrigger::Manual, act.actor()).await?
    else {
        return Ok(act.back_to("/runs", "A run for this instant already exists"));
    };
    tracing::info!(
        run_id = run.id,
        enqueued = run.enqueued,
        "dashboard: nightly run started by hand"
    );
    Ok(act.back_to(
        "/runs",
        &format!(
            "Nightly run #{} started: {} users due, {} jobs enqueued, {} already queued",
            run.id, run.users_due, run.enqueued, run.already_queued
        ),
    ))
}
