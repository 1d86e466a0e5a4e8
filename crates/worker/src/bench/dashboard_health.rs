//! `calsync bench`: the dashboard's health case (issue 14) — what recording attempts
//! costs apalis' acknowledgement, the overview and the error search at 1,000,000 jobs
//! vs. at 1,000.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};

use super::{Row, insert_history};

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
        "TRUNCATE apalis.jobs, calsync.job_attempts, calsync.job_stats_minute, calsync.job_stats_hour",
    )
    .execute(pool)
    .await?;
    // What recording attempts costs apalis' acknowledgement: batches of 32 Running →
    // Done, with calsync's attempt trigger vs. with it disabled, alternating.
    let acks = (n / 50).max(640) / 32 * 32;
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, lock_at) \
         SELECT v || lpad(g::text, 10, '0'), 'bench-ack', convert_to('{}', 'UTF8'), 'Running', 0, 3, now(), 0, now() \
         FROM generate_series(0, $1 - 1) g, unnest(ARRAY['A', 'B', 'C', 'D']) v",
    )
    .bind(acks)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await?;
    let mut ack_secs = [0f64; 2];
    for (prefix, with) in [("A", true), ("B", false), ("C", true), ("D", false)] {
        let verb = if with { "ENABLE" } else { "DISABLE" };
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE apalis.jobs {verb} TRIGGER calsync_jobs_record_attempt"
        )))
        .execute(pool)
        .await?;
        let start = Instant::now();
        for b in 0..acks / 32 {
            sqlx::query(
                "UPDATE apalis.jobs SET status = 'Done', attempts = 1, last_result = '{\"Ok\": null}', done_at = now() \
                 WHERE id >= $1 AND id < $2",
            )
            .bind(format!("{prefix}{:0>10}", b * 32))
            .bind(format!("{prefix}{:0>10}", (b + 1) * 32))
            .execute(pool)
            .await?;
        }
        ack_secs[usize::from(!with)] += start.elapsed().as_secs_f64();
    }
    sqlx::query("ALTER TABLE apalis.jobs ENABLE TRIGGER calsync_jobs_record_attempt")
        .execute(pool)
        .await?;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.job_attempts")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        recorded == 2 * acks,
        "recorded {recorded} of {} attempts",
        2 * acks
    );
    sqlx::query("TRUNCATE apalis.jobs, calsync.job_attempts")
        .execute(pool)
        .await?;
    let ack_row = Row::new(
        &format!(
            "{} acknowledgements in batches of 32, with vs without attempt recording (s)",
            2 * acks
        ),
        ack_secs[0],
        ack_secs[1],
        "s",
        format!(
            "apalis' Running → Done UPDATE with calsync's attempt trigger vs. disabled: {:.0} µs more per attempt",
            (ack_secs[0] - ack_secs[1]) * 1e6 / (2 * acks) as f64
        ),
    );
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
    let mut results = Vec::new();
    let mut rollup_note = String::new();
    for (from, count) in [(1, small), (small + 1, n - small)] {
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
        let overview_ms = mean_ms(&app, &overview, 20, pool, &churn).await?;
        let rare_ms = mean_ms(&app, &[rare], 10, pool, &[]).await?;
        let common_ms = mean_ms(
            &app,
            &["/jobs?error=backendError".to_string()],
            10,
            pool,
            &[],
        )
        .await?;
        results.push((overview_ms, rare_ms, common_ms));
    }
    let [
        (small_overview, small_rare, small_common),
        (big_overview, big_rare, big_common),
    ] = results[..]
    else {
        anyhow::bail!("two sizes measured");
    };
    Ok(vec![
        ack_row,
        Row::new(
            &format!("dashboard overview at {n} vs {small} jobs (ms/view)"),
            big_overview,
            small_overview,
            "ms",
            format!(
                "queue health, attempts per minute and per hour (roll-up + tail), nightly runs; \
                 50 new attempts rolled up per view; {rollup_note}"
            ),
        ),
        Row::new(
            &format!("jobs by a rare error text at {n} vs {small} jobs (ms/page)"),
            big_rare,
            small_rare,
            "ms",
            "one job's error among 1 % killed jobs with similar texts; trigram index on attempts' errors".into(),
        ),
        Row::new(
            &format!("jobs by a common error text at {n} vs {small} jobs (ms/page)"),
            big_common,
            small_common,
            "ms",
            "first page (50) of the jobs whose attempts hit Google's 503, newest first".into(),
        ),
    ])
}
