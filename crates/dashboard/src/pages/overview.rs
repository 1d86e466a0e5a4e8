//! The overview: "is the system healthy tonight?" — the queue right now, attempts per
//! minute (24 h) and per hour (14 days) by outcome, the nightly runs, users by sync
//! state. Charts are server-rendered SVG with a data table each; the numbers come from
//! `calsync_domain::job_stats` (a roll-up, never a scan of the job history).

use axum::extract::State;
use calsync_domain::{
    job_stats::{self, Bucket, FINAL_COUNT_CAP, QueueHealth, Resolution},
    queue::{self, JobState, NightlyRun},
    users::{self, UserCounts},
};
use chrono::{DateTime, Datelike, Timelike, Utc};
use maud::{Markup, html};

use super::{
    Ctx, PageResult,
    charts::{self, Series, Tick},
    layout::{button, duration_text, enc},
    runs,
};
use crate::{SharedState, error::PageError, input::QueryParams};

/// Nightly runs charted.
const RUNS_CHARTED: i64 = 14;
/// Auto-refresh periods offered (seconds).
const REFRESH: [u32; 2] = [30, 120];

/// `GET /` (`?refresh=30` reloads every 30 seconds).
pub async fn page(
    State(st): State<SharedState>,
    ctx: Ctx,
    QueryParams(p): QueryParams,
) -> PageResult {
    let refresh = p
        .number::<u32>("refresh", "refresh")?
        .map(|s| {
            if (10..=3600).contains(&s) {
                Ok(s)
            } else {
                Err(PageError::BadRequest(
                    "refresh must be between 10 and 3600 seconds".into(),
                ))
            }
        })
        .transpose()?;
    // Bring the buckets up to date first (cheap: only what arrived since the last
    // roll-up). Readers are exact without it, so a failure only costs speed.
    if let Err(e) = job_stats::roll_up(&st.pool).await {
        tracing::warn!(error = %e, "dashboard: job statistics roll-up failed");
    }
    let (health, minutes, hours, nightly, user_counts) = tokio::try_join!(
        job_stats::queue_health(&st.pool),
        job_stats::throughput(&st.pool, Resolution::Minute),
        job_stats::throughput(&st.pool, Resolution::Hour),
        queue::recent_nightly_runs(&st.pool, RUNS_CHARTED),
        users::counts(&st.pool),
    )?;
    let now = Utc::now();
    let body = html! {
        p.note {
            "Auto-refresh: "
            @if refresh.is_some() { a href="/" { "off" } } @else { "off" }
            @for s in REFRESH {
                " · "
                @if refresh == Some(s) { (s) " s" } @else { a href={ "/?refresh=" (s) } { (s) " s" } }
            }
            " · times in UTC"
        }
        h2 { "Queue now" }
        (queue_now(&health, now))
        h2 { "Attempts per minute, last 24 hours" }
        (per_minute(&minutes))
        h2 { "Attempts per hour, last 14 days" }
        (per_hour(&hours))
        h2 { "Nightly runs" }
        (nightly_charts(&nightly, now))
        (runs::table(&nightly[..nightly.len().min(5)]))
        @if ctx.admin() {
            p { (button("/runs/now", "Run the nightly sync now", ctx.csrf(), &[("back", "/runs".into())], false)) }
        }
        h2 { "Users" }
        (user_cards(&user_counts))
    };
    ctx.render_refreshing("Overview", refresh, body)
}

fn capped(n: i64) -> String {
    if n > FINAL_COUNT_CAP {
        format!("{FINAL_COUNT_CAP}+")
    } else {
        n.to_string()
    }
}

fn age(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    since
        .map(|t| duration_text((now - t).num_milliseconds()))
        .unwrap_or_else(|| "—".into())
}

fn queue_now(health: &[QueueHealth], now: DateTime<Utc>) -> Markup {
    let sum = |f: fn(&QueueHealth) -> i64| health.iter().map(f).sum::<i64>();
    let oldest = health.iter().filter_map(|q| q.oldest_waiting_since).min();
    let (failed, killed) = (sum(|q| q.failed), sum(|q| q.killed));
    html! {
        div.cards {
            div.card title="pending or retrying jobs whose time has come: what workers fetch next" {
                b { (sum(|q| q.waiting)) } "waiting (queue depth)"
            }
            div.card.bad[oldest.is_some_and(|t| now - t > chrono::TimeDelta::minutes(5))]
                title="how long the longest-waiting job has been due" {
                b { (age(oldest, now)) } "oldest waiting"
            }
            div.card title="pending or retrying jobs due later (backoff, delayed)" { b { (sum(|q| q.scheduled)) } "scheduled" }
            a.card href="/jobs?state=running" { b { (sum(|q| q.running)) } "running" }
            a.card href="/jobs?state=retrying" { b { (sum(|q| q.retrying)) } "retrying" }
            a.card.bad[failed > 0] href="/jobs?state=failed" { b { (capped(failed)) } "failed (out of attempts)" }
            a.card.bad[killed > 0] href="/jobs?state=killed" { b { (capped(killed)) } "killed" }
        }
        table {
            tr {
                th { "queue" } th.num { "waiting" } th { "oldest waiting" } th.num { "scheduled" }
                @for s in [JobState::Pending, JobState::Running, JobState::Retrying, JobState::Failed, JobState::Killed] {
                    th.num { (s.as_str()) }
                }
                th { "finished" }
            }
            @if health.is_empty() {
                tr { td.muted colspan="10" { "No jobs yet." } }
            }
            @for q in health {
                @let link = |s: JobState, n: String| html! {
                    a href={ "/jobs?queue=" (enc(&q.queue)) "&state=" (s.as_str()) } { (n) }
                };
                tr {
                    td { (q.queue) }
                    td.num { (q.waiting) }
                    td { (age(q.oldest_waiting_since, now)) }
                    td.num { (q.scheduled) }
                    td.num { (link(JobState::Pending, q.pending.to_string())) }
                    td.num { (link(JobState::Running, q.running.to_string())) }
                    td.num { (link(JobState::Retrying, q.retrying.to_string())) }
                    td.num { (link(JobState::Failed, capped(q.failed))) }
                    td.num { (link(JobState::Killed, capped(q.killed))) }
                    td { (link(JobState::Done, "done jobs".into())) }
                }
            }
        }
        p.note { "Failed and killed counts stop at " (FINAL_COUNT_CAP) " (shown as " (FINAL_COUNT_CAP) "+)." }
    }
}

fn total(buckets: &[Bucket]) -> Bucket {
    let mut t = Bucket::default();
    for b in buckets {
        t.add(b);
    }
    t
}

/// The three charted series: done, retried (with abandoned: both run again), failed.
fn outcome_series(buckets: &[Bucket]) -> Vec<Series<'static>> {
    let pick = |f: fn(&Bucket) -> i64| buckets.iter().map(|b| f(b) as f64).collect();
    vec![
        Series {
            key: "done",
            label: "done",
            values: pick(|b| b.done),
        },
        Series {
            key: "retried",
            label: "retried",
            values: pick(|b| b.retried + b.abandoned),
        },
        Series {
            key: "failed",
            label: "failed",
            values: pick(|b| b.failed),
        },
    ]
}

fn summary(t: &Bucket) -> String {
    format!(
        "{} done, {} retried ({} of them abandoned by a lost worker), {} failed",
        t.done,
        t.retried + t.abandoned,
        t.abandoned,
        t.failed
    )
}

fn busiest(buckets: &[Bucket], fmt: &str) -> String {
    match buckets
        .iter()
        .filter(|b| b.attempts() > 0)
        .max_by_key(|b| (b.attempts(), b.start))
    {
        Some(b) => format!(
            " Busiest: {} UTC with {} attempts.",
            b.start.format(fmt),
            b.attempts()
        ),
        None => " No attempts ended in this period.".into(),
    }
}

fn totals_cards(t: &Bucket, period: &str) -> Markup {
    html! {
        div.cards {
            div.card { b { (t.done) } "done, " (period) }
            div.card { b { (t.retried + t.abandoned) } "retried, " (period) }
            div.card.bad[t.failed > 0] { b { (t.failed) } "failed, " (period) }
            div.card { b { (t.mean_duration_ms().map(|ms| duration_text(ms.round() as i64)).unwrap_or_else(|| "—".into())) } "mean attempt, " (period) }
        }
    }
}

fn bucket_table(rows: &[&Bucket], fmt: &str) -> Markup {
    html! {
        table {
            tr {
                th { "UTC" } th.num { "done" } th.num { "retried" } th.num { "of which abandoned" }
                th.num { "failed" } th { "mean attempt" }
            }
            @if rows.is_empty() {
                tr { td.muted colspan="6" { "No attempts ended in this period." } }
            }
            @for b in rows {
                tr {
                    td { (b.start.format(fmt)) }
                    td.num { (b.done) }
                    td.num { (b.retried + b.abandoned) }
                    td.num { (b.abandoned) }
                    td.num { (b.failed) }
                    td { (b.mean_duration_ms().map(|ms| duration_text(ms.round() as i64)).unwrap_or_else(|| "—".into())) }
                }
            }
        }
    }
}

/// Newest first, only buckets with attempts, at most `n`.
fn active_rows(buckets: &[Bucket], n: usize) -> Vec<&Bucket> {
    buckets
        .iter()
        .rev()
        .filter(|b| b.attempts() > 0)
        .take(n)
        .collect()
}

fn per_minute(minutes: &[Bucket]) -> Markup {
    let t = total(minutes);
    let ticks: Vec<Tick> = minutes
        .iter()
        .enumerate()
        .filter(|(_, b)| b.start.minute() == 0 && b.start.hour() % 3 == 0)
        .map(|(i, b)| (i, b.start.format("%H:%M").to_string()))
        .collect();
    let desc = format!(
        "Job attempts that ended per minute over the last 24 hours, UTC: {}.{}",
        summary(&t),
        busiest(minutes, "%H:%M")
    );
    let rows = active_rows(minutes, 60);
    let labels: Vec<String> = minutes
        .iter()
        .map(|b| b.start.format("%H:%M UTC").to_string())
        .collect();
    html! {
        (totals_cards(&t, "24 h"))
        (charts::lines("chart-minutes", "Job attempts per minute, last 24 hours", &desc, &ticks, &labels, &outcome_series(minutes)))
        details {
            summary { "Table: the last " (rows.len()) " minutes with attempts" }
            (bucket_table(&rows, "%Y-%m-%d %H:%M"))
        }
    }
}

fn per_hour(hours: &[Bucket]) -> Markup {
    let t = total(hours);
    let ticks: Vec<Tick> = hours
        .iter()
        .enumerate()
        .filter(|(_, b)| b.start.hour() == 0 && b.start.ordinal() % 2 == 0)
        .map(|(i, b)| (i, b.start.format("%m-%d").to_string()))
        .collect();
    let labels: Vec<String> = hours
        .iter()
        .map(|b| b.start.format("%Y-%m-%d %H:00 UTC").to_string())
        .collect();
    let desc = format!(
        "Job attempts that ended per hour over the last 14 days, UTC: {}.{}",
        summary(&t),
        busiest(hours, "%Y-%m-%d %H:00")
    );
    let rows = active_rows(hours, hours.len());
    html! {
        (charts::stacked_bars("chart-hours", "Job attempts per hour, last 14 days", &desc, &ticks, &labels, &outcome_series(hours)))
        details {
            summary { "Table: the " (rows.len()) " hours with attempts" }
            (bucket_table(&rows, "%Y-%m-%d %H:00"))
        }
    }
}

fn run_seconds(r: &NightlyRun, now: DateTime<Utc>) -> f64 {
    (r.finished_at.unwrap_or(now) - r.started_at).num_milliseconds() as f64 / 1000.0
}

fn nightly_charts(newest_first: &[NightlyRun], now: DateTime<Utc>) -> Markup {
    if newest_first.is_empty() {
        return html! { p.muted { "No nightly runs yet." } };
    }
    let runs: Vec<&NightlyRun> = newest_first.iter().rev().collect();
    let labels: Vec<String> = runs
        .iter()
        .map(|r| format!("{} #{}", r.scheduled_for.format("%m-%d"), r.id))
        .collect();
    let pick = |f: fn(&NightlyRun) -> i32| runs.iter().map(|r| f64::from(f(r))).collect();
    let users = [
        Series {
            key: "due",
            label: "users due",
            values: pick(|r| r.users_due),
        },
        Series {
            key: "succeeded",
            label: "succeeded",
            values: pick(|r| r.succeeded),
        },
        Series {
            key: "failed",
            label: "failed",
            values: pick(|r| r.failed),
        },
    ];
    let secs: Vec<f64> = runs.iter().map(|r| run_seconds(r, now)).collect();
    let longest = secs.iter().copied().fold(0.0, f64::max);
    let (unit, div) = if longest >= 120.0 {
        (" min", 60.0)
    } else {
        (" s", 1.0)
    };
    let duration = [Series {
        key: "duration",
        label: "duration (running runs: so far)",
        values: secs
            .iter()
            .map(|s| (s / div * 10.0).round() / 10.0)
            .collect(),
    }];
    let sum = |f: fn(&NightlyRun) -> i32| runs.iter().map(|r| i64::from(f(r))).sum::<i64>();
    let users_desc = format!(
        "Users due, succeeded and failed for each of the last {} nightly runs: {} due, {} succeeded, {} failed in total.",
        runs.len(),
        sum(|r| r.users_due),
        sum(|r| r.succeeded),
        sum(|r| r.failed)
    );
    let duration_desc = format!(
        "How long each of the last {} nightly runs took, from the fan-out to the last job; the longest took {}.",
        runs.len(),
        duration_text((longest * 1000.0) as i64)
    );
    html! {
        div.pair {
            div { (charts::grouped_bars("chart-runs", "Users per nightly run", &users_desc, 450.0, &labels, &users, "")) }
            div { (charts::grouped_bars("chart-run-durations", "Duration per nightly run", &duration_desc, 450.0, &labels, &duration, unit)) }
        }
    }
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
