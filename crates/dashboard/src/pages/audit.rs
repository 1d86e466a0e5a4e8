//! The audit log of operator actions, newest first, keyset-paged.

use axum::extract::State;
use calsync_domain::audit;
use maud::html;

use super::{
    Ctx, PageResult,
    layout::{short, ts},
};
use crate::{SharedState, input::QueryParams};

const PAGE: i64 = 200;

/// `GET /audit`.
pub async fn list(
    State(st): State<SharedState>,
    ctx: Ctx,
    QueryParams(p): QueryParams,
) -> PageResult {
    let before = p.number("before", "before")?;
    let mut rows = audit::recent(&st.pool, before, PAGE + 1).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = rows
        .last()
        .filter(|_| more)
        .map(|r| format!("/audit?before={}", r.id));
    let body = html! {
        table {
            tr { th { "when" } th { "who" } th { "action" } th { "detail" } }
            @if rows.is_empty() {
                tr { td.muted colspan="4" { "Nothing yet." } }
            }
            @for r in &rows {
                tr {
                    td { (ts(Some(r.at))) }
                    td { (r.actor) }
                    td { (r.action) }
                    td { code { (short(&r.detail.to_string(), 300)) } }
                }
            }
        }
        @if let Some(next) = next {
            p { a rel="next" href=(next) { "Older entries →" } }
        }
    };
    ctx.render("Audit log", body)
}
