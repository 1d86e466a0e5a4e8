//! The overview: users by sync state, jobs by queue and state, the latest nightly runs.
//! (Health charts will join here as further sections.)

use axum::extract::State;
use calsync_domain::{
    queue::{self, JobState},
    users::{self, UserCounts},
};
use maud::{Markup, html};

use super::{
    Ctx, PageResult,
    layout::{button, enc},
    runs,
};
use crate::SharedState;

/// `GET /`.
pub async fn page(State(st): State<SharedState>, ctx: Ctx) -> PageResult {
    let (counts, user_counts, latest) = tokio::try_join!(
        queue::job_counts(&st.pool),
        users::counts(&st.pool),
        queue::recent_nightly_runs(&st.pool, 5)
    )?;
    let body = html! {
        h2 { "Users" }
        (user_cards(&user_counts))
        h2 { "Jobs" }
        (jobs_by_state(&counts))
        h2 { "Latest nightly runs" }
        (runs::table(&latest))
        @if ctx.admin() {
            p { (button("/runs/now", "Run the nightly sync now", ctx.csrf(), &[("back", "/runs".into())], false)) }
        }
    };
    ctx.render("Overview", body)
}

fn user_cards(u: &UserCounts) -> Markup {
    let cards = [
        ("users", u.users, "/users"),
        ("with calendar", u.with_calendar, "/users"),
        ("flagged", u.flagged, "/users?status=flagged"),
        ("never synced", u.never_synced, "/users?status=never_synced"),
        ("due", u.due, "/users?status=due"),
        (
            "needs re-auth",
            u.needs_reauth,
            "/users?status=needs_reauth",
        ),
        (
            "calendar missing",
            u.calendar_missing,
            "/users?status=calendar_missing",
        ),
        ("failing", u.failing, "/users?status=failing"),
    ];
    html! {
        div.cards {
            @for (label, n, link) in cards {
                a.card href=(link) { b { (n) } (label) }
            }
        }
    }
}

fn jobs_by_state(counts: &[(String, JobState, i64)]) -> Markup {
    let mut queues: Vec<&str> = counts.iter().map(|c| c.0.as_str()).collect();
    queues.dedup();
    let count = |q: &str, s: JobState| {
        counts
            .iter()
            .find(|c| c.0 == q && c.1 == s)
            .map(|c| c.2)
            .unwrap_or(0)
    };
    html! {
        table {
            tr {
                th { "queue" }
                @for s in JobState::ALL { th.num { (s.as_str()) } }
            }
            @if queues.is_empty() {
                tr { td.muted colspan="7" { "No jobs yet." } }
            }
            @for q in queues {
                tr {
                    td { (q) }
                    @for s in JobState::ALL {
                        td.num {
                            a href={ "/jobs?queue=" (enc(q)) "&state=" (s.as_str()) } { (count(q, s)) }
                        }
                    }
                }
            }
        }
    }
}
