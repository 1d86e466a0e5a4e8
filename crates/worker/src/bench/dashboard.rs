//! `calsync bench` case `dashboard` (first half): the dashboard's job pages and
//! `queue::job_counts` at 1,000,000 jobs vs. 1,000.

use std::time::Instant;

use sqlx::PgPool;

use super::{Goal, Pair, ROUNDS, Row, insert_history};

/// Mean latency of the dashboard's job pages (first page, a state filter, a user filter,
/// a page deep in the history), rendered through the real router.
async fn page_latency(app: &axum::Router, deep_before: &str) -> anyhow::Result<f64> {
    use tower::ServiceExt;
    let urls = [
        "/jobs".to_string(),
        "/jobs?state=failed".into(),
        "/jobs?state=pending".into(),
        "/jobs?user_id=4242".into(),
        format!("/jobs?before={deep_before}"),
        format!("/jobs?state=done&before={deep_before}"),
    ];
    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        for url in &urls {
            let req = axum::http::Request::get(url.as_str())
                .header("authorization", "Bearer bench-admin-token")
                .body(axum::body::Body::empty())?;
            let resp = app.clone().oneshot(req).await?;
            anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / (rounds * urls.len()) as f64)
}

pub(super) async fn run(pool: &PgPool, n: i64) -> anyhow::Result<Vec<Row>> {
    sqlx::query("DELETE FROM apalis.jobs").execute(pool).await?;
    let app = calsync_dashboard::router(
        pool.clone(),
        calsync_dashboard::DashboardConfig {
            admin_token: Some("bench-admin-token".into()),
            page_size: 50,
            ..Default::default()
        },
    )?;
    let small = 1_000;
    insert_history(pool, 1, small).await?;
    let mid = format!("01{:0>24X}", small / 2);
    let mut pages = Pair::default();
    let mut counts = Pair::default();
    page_latency(&app, &mid).await?; // warm-up
    for _ in 0..ROUNDS {
        pages.push(false, page_latency(&app, &mid).await?);
        counts.push(false, job_counts_ms(pool).await?);
    }
    insert_history(pool, small + 1, n - small).await?;
    let mid = format!("01{:0>24X}", n / 2);
    page_latency(&app, &mid).await?; // warm-up
    for _ in 0..ROUNDS {
        pages.push(true, page_latency(&app, &mid).await?);
        counts.push(true, job_counts_ms(pool).await?);
    }
    Ok(vec![
        Row::new(
            "dashboard",
            &format!("dashboard job pages at {n} vs {small} jobs"),
            pages,
            "ms/page",
            Some(Goal::AtMost(2.0)),
            "keyset pagination: first page, state filter, user filter, deep pages; rendered through the router"
                .into(),
        ),
        Row::new(
            "dashboard",
            &format!("queue::job_counts (metrics, calsync status) at {n} vs {small} jobs"),
            counts,
            "ms",
            None,
            format!(
                "index counts per queue and state: active states exact, finished ones up to {} (more shows as \"more than\")",
                calsync_domain::queue::JOB_COUNT_CAP
            ),
        ),
    ])
}

/// Milliseconds `queue::job_counts` takes (mean of 5).
async fn job_counts_ms(pool: &PgPool) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..5 {
        calsync_domain::queue::job_counts(pool).await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / 5.0)
}
