//! Issue 14 points 2 and 5 in process: the overview's health charts and queue cards,
//! the job page's attempt timeline, the jobs list's duration column and error search.

mod common;

use axum::http::StatusCode;
use calsync_domain::queue::{self, RunTrigger};
use chrono::Utc;
use common::*;
use serde_json::json;
use sqlx::PgPool;

/// Three users synced by a nightly run (one after a retry, one killed), and a fourth
/// user's job waiting for 10 minutes.
struct Seeded {
    retried_then_done: String,
    done: String,
    killed: String,
    waiting: String,
}

async fn seed(pool: &PgPool) -> Seeded {
    for u in ["a", "b", "c"] {
        user(pool, &format!("{u}@uni.edu"), Some(&format!("cal-{u}"))).await;
    }
    let run = queue::run_nightly_pass(pool, Utc::now(), RunTrigger::Manual, "test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.enqueued, 3);
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs ORDER BY calsync.job_payload(job) ->> 'user_id'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let [a, b, c] = <[String; 3]>::try_from(ids).unwrap();
    run_attempt(
        pool,
        &a,
        1,
        "Failed",
        json!({"Err": "Google events.insert failed (retryable): HTTP 503 backendError"}),
        3.0,
    )
    .await;
    run_attempt(pool, &a, 2, "Done", json!({"Ok": {"inserted": 4}}), 1.0).await;
    run_attempt(pool, &b, 1, "Done", json!({"Ok": null}), 2.0).await;
    run_attempt(
        pool,
        &c,
        1,
        "Killed",
        json!({"Err": "token refresh failed: invalid_grant error"}),
        0.5,
    )
    .await;
    let d = user(pool, "d@uni.edu", Some("cal-d")).await;
    let waiting = queue::enqueue_sync(pool, d, "test", "test").await.unwrap();
    sqlx::query("UPDATE apalis.jobs SET run_at = now() - interval '10 minutes' WHERE id = $1")
        .bind(&waiting)
        .execute(pool)
        .await
        .unwrap();
    Seeded {
        retried_then_done: a,
        done: b,
        killed: c,
        waiting,
    }
}

/// The SVG element with `id` (up to its closing tag).
fn svg<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!("<svg class=\"chart\" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in {body}"));
    let end = body[start..].find("</svg>").unwrap() + start;
    &body[start..end]
}

#[sqlx::test(migrations = false)]
async fn the_overview_charts_throughput_queue_and_nightly_runs(pool: PgPool) {
    let app = app(&pool, 50).await;
    seed(&pool).await;
    let cookie = login(&app, READONLY).await;
    let home = get(&app, "/", Some(&cookie)).await;
    assert_eq!(home.status, StatusCode::OK);
    let body = &home.body;

    // Per minute: a line per outcome, totals readable back.
    let minutes = svg(body, "chart-minutes");
    assert!(
        minutes.contains("role=\"img\"")
            && minutes.contains("aria-labelledby=\"chart-minutes-t chart-minutes-d\"")
    );
    for (series, total) in [("done", 2), ("retried", 1), ("failed", 1)] {
        assert!(
            minutes.contains(&format!("data-series=\"{series}\" data-total=\"{total}\"")),
            "{series}: {minutes}"
        );
    }
    assert!(minutes.contains("2 done, 1 retried (0 of them abandoned by a lost worker), 1 failed"));
    // Per hour: the current hour's column.
    let hours = svg(body, "chart-hours");
    assert!(
        hours.contains(": 2 done, 1 retried, 1 failed</title>"),
        "{hours}"
    );
    for (series, v) in [("done", 2), ("retried", 1), ("failed", 1)] {
        assert!(
            hours.contains(&format!("data-series=\"{series}\" data-value=\"{v}\"")),
            "{hours}"
        );
    }
    // Nightly runs: due, succeeded, failed; and the duration.
    let runs = svg(body, "chart-runs");
    for (series, v) in [("due", 3), ("succeeded", 2), ("failed", 1)] {
        assert!(
            runs.contains(&format!("data-series=\"{series}\" data-value=\"{v}\"")),
            "{runs}"
        );
    }
    assert!(svg(body, "chart-run-durations").contains("data-series=\"duration\""));
    // The queue now: one job waiting for about 10 minutes; the killed one.
    assert!(body.contains("<b>1</b>waiting (queue depth)"), "{body}");
    assert!(
        body.contains(" min ") && body.contains("oldest waiting"),
        "{body}"
    );
    assert!(body.contains("<b>1</b>killed"), "{body}");
    // Text fallbacks.
    assert!(
        body.contains("<summary>Table: the last 1 minutes with attempts</summary>"),
        "{body}"
    );
    assert!(
        body.contains("<summary>Table: the 1 hours with attempts</summary>"),
        "{body}"
    );

    // Viewing again neither loses nor doubles anything (the roll-up ran once).
    let rolled: bool =
        sqlx::query_scalar("SELECT rolled_up_at IS NOT NULL FROM calsync.job_stats_rollup")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(rolled);
    let again = get(&app, "/", Some(&cookie)).await.body;
    assert!(svg(&again, "chart-minutes").contains("data-series=\"done\" data-total=\"2\""));

    // Optional auto-refresh, without script.
    let r = get(&app, "/?refresh=30", Some(&cookie)).await;
    assert!(
        r.body
            .contains("<meta http-equiv=\"refresh\" content=\"30\">"),
        "{}",
        r.body
    );
    assert!(!body.contains("http-equiv"));
    assert_eq!(
        get(&app, "/?refresh=1", Some(&cookie)).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(!body.contains("<script"), "no JavaScript");
}

#[sqlx::test(migrations = false)]
async fn an_empty_database_renders_empty_charts(pool: PgPool) {
    let app = app(&pool, 50).await;
    let cookie = login(&app, ADMIN).await;
    let home = get(&app, "/", Some(&cookie)).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(svg(&home.body, "chart-minutes").contains("data-total=\"0\""));
    assert!(home.body.contains("No attempts ended in this period."));
    assert!(home.body.contains("No nightly runs yet."));
}

#[sqlx::test(migrations = false)]
async fn the_job_page_shows_the_timeline_of_its_attempts(pool: PgPool) {
    let app = app(&pool, 50).await;
    let s = seed(&pool).await;
    let cookie = login(&app, ADMIN).await;
    let page = get(
        &app,
        &format!("/jobs/{}", s.retried_then_done),
        Some(&cookie),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let timeline = svg(&page.body, "chart-attempts");
    let retried = timeline.find("data-series=\"retried\"").expect("attempt 1");
    let done = timeline.find("data-series=\"done\"").expect("attempt 2");
    assert!(retried < done, "in order: {timeline}");
    assert!(timeline.contains("attempt 1: retried, 3"), "{timeline}");
    assert!(timeline.contains("HTTP 503 backendError"));
    assert!(timeline.contains("2 recorded attempts (1 done, 1 retried, 0 abandoned, 0 failed)"));
    // The table: start, end, duration, outcome, error.
    let table = &page.body[page.body.find("<table class=\"attempts\">").unwrap()..];
    assert!(table.contains("<span class=\"st st-retried\">retried</span>"));
    assert!(table.contains("<span class=\"st st-done\">done</span>"));
    assert!(
        table.contains("<td>3.0 s</td>") || table.contains("<td>3.1 s</td>"),
        "{table}"
    );
    assert!(
        table.contains("<pre>Google events.insert failed (retryable): HTTP 503 backendError</pre>")
    );
    assert!(table.contains("page-test-worker"));

    // A running job: its current attempt, so far.
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_at = now() - interval '5 seconds' WHERE id = $1")
        .bind(&s.waiting)
        .execute(&pool)
        .await
        .unwrap();
    let page = get(&app, &format!("/jobs/{}", s.waiting), Some(&cookie)).await;
    let timeline = svg(&page.body, "chart-attempts");
    assert!(timeline.contains("data-series=\"running\""), "{timeline}");
    assert!(page.body.contains("<td>running 5."), "{}", page.body);
    // A job without any attempt says so.
    let fresh = queue::enqueue_sync(
        &pool,
        user(&pool, "e@uni.edu", Some("cal-e")).await,
        "t",
        "test",
    )
    .await
    .unwrap();
    let page = get(&app, &format!("/jobs/{fresh}"), Some(&cookie)).await;
    assert!(page.body.contains("No attempt has ended yet."));
}

#[sqlx::test(migrations = false)]
async fn the_jobs_list_shows_durations_and_finds_jobs_by_error_text(pool: PgPool) {
    // Pages of one job, and of 50, sharing sessions (one session secret).
    calsync_domain::migrate(&pool).await.unwrap();
    let app = router_with_page_size(&pool, 1).await;
    let s = seed(&pool).await;
    let cookie = login(&app, ADMIN).await;
    let row_of = |body: &str, id: &str| {
        let i = body.find(&format!("<a href=\"/jobs/{id}\">")).unwrap();
        body[i..i + body[i..].find("</tr>").unwrap()].to_string()
    };
    let big = router_with_page_size(&pool, 50).await;
    let list = get(&big, "/jobs", Some(&cookie)).await.body;
    assert!(list.contains(">duration</th>"), "{list}");
    assert!(
        row_of(&list, &s.done).contains("<td>2.0 s</td>")
            || row_of(&list, &s.done).contains("<td>2.1 s</td>"),
        "{list}"
    );
    assert!(row_of(&list, &s.waiting).contains("<td>—</td>"));

    // Any attempt's error, case-insensitive; a job that later succeeded is found too.
    let hits = get(&big, "/jobs?error=BACKENDERROR", Some(&cookie)).await;
    assert_eq!(hits.status, StatusCode::OK);
    assert!(
        hits.body.contains(&s.retried_then_done) && !hits.body.contains(&s.killed),
        "{}",
        hits.body
    );
    assert!(hits.body.contains(">matching error</th>"));
    assert!(hits.body.contains("HTTP 503 backendError"));
    assert!(
        hits.body.contains("value=\"BACKENDERROR\""),
        "the search box keeps the text"
    );
    // Bulk actions would ignore the search, so they are not offered with it.
    assert!(
        !hits
            .body
            .contains("Retry all failed/killed matching this filter")
    );
    assert!(hits.body.contains("ignore the error search"));
    assert!(
        !hits.body.contains("not indexed"),
        "pg_trgm is available here"
    );

    // Paging keeps the search; combined with the other filters.
    let first = get(&app, "/jobs?error=error", Some(&cookie)).await.body;
    assert!(first.contains(&s.killed) && !first.contains(&s.retried_then_done));
    let i = first.find("rel=\"next\" href=\"").unwrap() + "rel=\"next\" href=\"".len();
    let next = first[i..].split('"').next().unwrap().replace("&amp;", "&");
    assert!(next.contains("error=error"), "{next}");
    let second = get(&app, &next, Some(&cookie)).await.body;
    assert!(second.contains(&s.retried_then_done) && !second.contains(&s.killed));
    let none = get(&big, "/jobs?error=invalid_grant&state=done", Some(&cookie))
        .await
        .body;
    assert!(none.contains("No jobs match."));

    // Bad searches get a clear error.
    let short = get(&big, "/jobs?error=ab", Some(&cookie)).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short.body.contains("at least 3 characters"),
        "{}",
        short.body
    );
    let long = get(
        &big,
        &format!("/jobs?error={}", "x".repeat(201)),
        Some(&cookie),
    )
    .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrations = false)]
async fn without_the_trigram_index_the_search_still_works_and_says_so(pool: PgPool) {
    let app = app(&pool, 50).await;
    let s = seed(&pool).await;
    // As on a server without PostgreSQL's contrib (the migration then skips the index).
    sqlx::query("DROP INDEX calsync.job_attempts_error_trgm_idx")
        .execute(&pool)
        .await
        .unwrap();
    let cookie = login(&app, READONLY).await;
    let hits = get(&app, "/jobs?error=backendError", Some(&cookie)).await;
    assert_eq!(hits.status, StatusCode::OK);
    assert!(hits.body.contains(&s.retried_then_done), "{}", hits.body);
    assert!(
        hits.body
            .contains("Error search is not indexed on this database"),
        "{}",
        hits.body
    );
    assert!(
        !get(&app, "/jobs", Some(&cookie))
            .await
            .body
            .contains("not indexed")
    );
}

#[sqlx::test(migrations = false)]
async fn attempt_errors_are_escaped_everywhere(pool: PgPool) {
    let app = app(&pool, 50).await;
    let u = user(&pool, "x@uni.edu", Some("cal-x")).await;
    let job = queue::enqueue_sync(&pool, u, "t", "test").await.unwrap();
    run_attempt(
        &pool,
        &job,
        1,
        "Killed",
        json!({"Err": "<script>alert(1)</script><img src=x onerror=alert(2)>"}),
        1.0,
    )
    .await;
    let cookie = login(&app, ADMIN).await;
    for page in [
        "/".to_string(),
        format!("/jobs/{job}"),
        "/jobs?error=script".into(),
    ] {
        let r = get(&app, &page, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert!(
            !r.body.contains("<script") && !r.body.contains("<img"),
            "{page}: {}",
            r.body
        );
    }
    assert!(
        get(&app, &format!("/jobs/{job}"), Some(&cookie))
            .await
            .body
            .contains("&lt;script&gt;alert(1)")
    );
}

async fn router_with_page_size(pool: &PgPool, n: i64) -> axum::Router {
    calsync_dashboard::router(
        pool.clone(),
        calsync_dashboard::DashboardConfig {
            page_size: n,
            session_secret: Some("health-tests-secret".into()),
            ..config()
        },
    )
    .unwrap()
}
