//! `calsync bench` case `dashboard` (second half, issue 14): the overview and the error
//! search at 1,000,000 jobs vs. at 1,000. (What recording attempts costs an
//! acknowledgement is measured by the `acks` case.)

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};

use super::{Goal, Pair, ROUNDS, Row, insert_history};

/// Seed job attempts for the history `insert_history` made (ids `from..from+n`): one
/// attempt per job, an earlier retried attempt for every 29th job, finished over the
/// last 14 days; killed jobs carry an error naming their calendar, failed ones and
/// retries Google's 503.
async fn insert_attempt_history(pool: &PgPool, from: i64, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO calsync.job_attempts (job_id, queue, attempt, started_at, finished_at, outcome, error) \
         SELECT id, 'sync-calendar', a, f - interval '1 second' * (1 + g % 7), f, o, e FROM ( \
             SELECT '01' || lpad(upper(to_hex(g)), 24, '0') AS id, g, \
                    now() - interval '1 minute' * (g % 20160) AS f, \
                    CASE WHEN g % 100 = 0 OR g % 37 = 0 THEN 8 ELSE 1 + (g % 29 = 0)::int END AS a, \
                    CASE WHEN g % 100 = 0 OR g % 37 = 0 THEN 'failed' ELSE 'done' END AS o, \
                    CASE WHEN g % 100 = 0 THEN 'calendar bench-cal-' || g || ' was deleted (HTTP 404 notFound)' \
                         WHEN g % 37 = 0 THEN 'Google events.insert failed (retryable): HTTP 503 backendError' END AS e \
             FROM generate_series($1, $2) g \
             UNION ALL \
             SELECT '01' || lpad(upper(to_hex(g)), 24, '0'), g, now() - interval '1 minute' * (g % 20160) - interval '30 seconds', \
                    1, 'retried', 'Google events.insert failed (retryable): HTTP 503 backendError' \
             FROM generate_series($1, $2) g WHERE g % 29 = 0 AND g % 100 <> 0 AND g % 37 <> 0 \
         ) s",
    )
    .bind(from)
    .bind(from + n - 1)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE calsync.job_attempts")
        .execute(pool)
        .await?;
    Ok(())
}

/// Mean latency (ms) of `urls` through the router; before each round, the `between`
/// statements run (untimed).
async fn mean_ms(
    app: &axum::Router,
    urls: &[String],
    rounds: usize,
    pool: &PgPool,
    between: &[&str],
) -> anyhow::Result<f64> {
    use tower::ServiceExt;
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        for sql in between {
            sqlx::query(AssertSqlSafe(sql.to_string()))
                .execute(pool)
                .await?;
        }
        for url in urls {
            let req = axum::http::Request::get(url.as_str())
                .header("authorization", "Bearer bench-admin-token")
                .body(axum::body::Body::empty())?;
            let start = Instant::now();
            let resp = app.clone().oneshot(req).await?;
            let status = resp.status();
            let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
            total += start.elapsed();
            anyhow::ensure!(status.is_success(), "{url}: {status}");
        }
    }
    Ok(total.as_secs_f64() * 1000.0 / (rounds * urls.len()) as f64)
}

/// The overview (queue health, throughput charts from the roll-up, nightly runs) and the
/// error search, at `n` finished jobs with their attempts vs. at 1,000. Between overview
/// views 50 attempts end through the real trigger, so every view also rolls up.
pub(super) async fn run(pool: &PgPool, n: i64) -> anyhow::Result<Vec<Row>> {
    println!("==> dashboard overview and error search at {n} jobs");
    sqlx::query(
        "TRUNCATE apalis.jobs, calsync.job_attempts, calsync.quota_waits, calsync.job_stats_minute, calsync.job_stats_hour",
    )
    .execute(pool)
    .await?;
    let app = calsync_dashboard::router(
        pool.clone(),
        calsync_dashboard::DashboardConfig {
            admin_token: Some("bench-admin-token".into()),
            page_size: 50,
            ..Default::default()
        },
    )?;
    // The same active queue at both sizes: 200 waiting, 20 running, 30 retrying.
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, lock_at) \
         SELECT '02' || lpad(upper(to_hex(g)), 24, '0'), 'sync-calendar', \
                convert_to(jsonb_build_object('user_id', g)::text, 'UTF8'), \
                CASE WHEN g <= 200 THEN 'Pending' WHEN g <= 220 THEN 'Running' ELSE 'Failed' END, \
                CASE WHEN g <= 220 THEN 0 ELSE 1 END, 8, now() - interval '1 minute', 0, \
                CASE WHEN g BETWEEN 201 AND 220 THEN now() END \
         FROM generate_series(1, 250) g",
    )
    .execute(pool)
    .await?;
    // 50 attempts end (Running → Done, through calsync's trigger) before each view.
    let churn = [
        "UPDATE apalis.jobs j SET status = 'Running', lock_at = now() FROM ( \
             SELECT id FROM apalis.jobs WHERE id < '02' AND status = 'Done' ORDER BY id DESC LIMIT 50) p \
         WHERE j.id = p.id",
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() WHERE id < '02' AND status = 'Running'",
    ];
    let overview = ["/".to_string()];
    let small = 1_000;
    let mut overview_ms = Pair::default();
    let mut rare_ms = Pair::default();
    let mut common_ms = Pair::default();
    let mut rollup_note = String::new();
    for (big, from, count) in [(false, 1, small), (true, small + 1, n - small)] {
        insert_history(pool, from, count).await?;
        insert_attempt_history(pool, from, count).await?;
        let start = Instant::now();
        let rolled = calsync_domain::job_stats::roll_up(pool).await?;
        rollup_note = format!(
            "catch-up roll-up of {} attempts took {:.2} s (once; later roll-ups add only what is new)",
            rolled.attempts,
            start.elapsed().as_secs_f64()
        );
        let total = from + count - 1;
        let rare = format!("/jobs?error=bench-cal-{}00%20was", total / 200);
        mean_ms(&app, &overview, 2, pool, &[]).await?; // warm up
        for _ in 0..ROUNDS {
            overview_ms.push(big, mean_ms(&app, &overview, 20, pool, &churn).await?);
            rare_ms.push(
                big,
                mean_ms(&app, std::slice::from_ref(&rare), 10, pool, &[]).await?,
            );
            common_ms.push(
                big,
                mean_ms(
                    &app,
                    &["/jobs?error=backendError".to_string()],
                    10,
                    pool,
                    &[],
                )
                .await?,
            );
        }
    }
    Ok(vec![
        Row::new(
            "dashboard",
            &format!("dashboard overview at {n} vs {small} jobs"),
            overview_ms,
            "ms/view",
            Some(Goal::AtMost(1.2)),
            format!(
                "queue health, attempts per minute and per hour (roll-up + tail), nightly runs; \
                 50 new attempts rolled up per view; {rollup_note}"
            ),
        ),
        Row::new(
            "dashboard",
            &format!("jobs by a rare error text at {n} vs {small} jobs"),
            rare_ms,
            "ms/page",
            None,
            "one job's error among 1 % killed jobs with similar texts; trigram index on attempts' errors".into(),
        ),
        Row::new(
            "dashboard",
            &format!("jobs by a common error text at {n} vs {small} jobs"),
            common_ms,
            "ms/page",
            None,
            "first page (50) of the jobs whose attempts hit Google's 503, newest first".into(),
        ),
    ])
}
