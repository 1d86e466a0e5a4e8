//! End-to-end in headless Chromium (Debian's `chromium` + `chromium-driver`): log in,
//! retry a failed job, watch a real worker run it to done; the read-only role sees no
//! actions; a logged-out session cookie stays dead when replayed.

use std::time::Duration;

use calsync_e2e::{browser::*, harness::*};
use calsync_fake_google::FakeGoogle;
use fantoccini::Locator;
use sqlx::PgPool;

async fn failed_job(pool: &PgPool, user: i64) -> String {
    let id = calsync_domain::queue::enqueue_sync(pool, user, "browser", "test")
        .await
        .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, last_result = '{\"Err\": \"Google events.insert failed (retryable): HTTP 503 backendError\"}' WHERE id = $1")
        .bind(&id)
        .execute(pool)
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_logs_in_retries_a_failed_job_and_sees_it_succeed() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 1).await;
    let job = failed_job(&pool, users[0]).await;
    let addr = serve_dashboard(&pool).await;
    let base = format!("http://{addr}");
    let (_driver, c, profile) = browser().await;

    // A wrong token is refused.
    log_in(&c, &base, "not-the-token-at-all").await;
    page_with(&c, "Invalid token").await;
    // The right one lands on the overview.
    log_in(&c, &base, ADMIN).await;
    let src = page_with(&c, "<h1>Overview</h1>").await;
    assert!(src.contains("sync-calendar"), "{src}");
    // The stylesheet is allowed by the content security policy (no inline styles).
    wait_until("stylesheet applied", Duration::from_secs(20), || async {
        c.execute(
            "return getComputedStyle(document.querySelector('header')).backgroundColor",
            vec![],
        )
        .await
        .map(|v| v == serde_json::json!("rgb(29, 42, 68)"))
        .unwrap_or(false)
    })
    .await;

    // Failed jobs → the job → Retry now.
    c.goto(&format!("{base}/jobs?state=failed")).await.unwrap();
    c.find(Locator::Css(&format!("a[href='/jobs/{job}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let src = page_with(&c, "Retry now").await;
    assert!(
        src.contains("HTTP 503 backendError") && src.contains("st-failed"),
        "{src}"
    );
    c.find(Locator::XPath("//button[text()='Retry now']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let src = page_with(&c, "Retried 1 job").await;
    assert!(src.contains("st-pending"), "{src}");

    // A worker picks it up; the page shows it done.
    let mut worker = WorkerProcess::spawn(
        &url,
        &fake,
        "browser",
        &["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"],
    );
    let job_url = format!("{base}/jobs/{job}");
    wait_until("job shown as done", Duration::from_secs(60), || async {
        c.goto(&job_url).await.unwrap();
        c.source()
            .await
            .unwrap()
            .contains("<span class=\"st st-done\">done</span>")
    })
    .await;
    assert_eq!(fake.live_events("e2e-cal-1").len(), 4);
    assert!(worker.terminate(Duration::from_secs(20)).success());
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_login_shows_no_actions() {
    let (_url, pool, _db) = fresh_database(&base_url()).await;
    let fake = FakeGoogle::start().await.unwrap();
    let users = seed_university(&pool, &fake, 1).await;
    let job = failed_job(&pool, users[0]).await;
    let addr = serve_dashboard(&pool).await;
    let base = format!("http://{addr}");
    let (_driver, c, profile) = browser().await;
    log_in(&c, &base, READONLY).await;
    page_with(&c, "read-only").await;
    c.goto(&format!("{base}/jobs/{job}")).await.unwrap();
    let src = c.source().await.unwrap();
    assert!(src.contains("HTTP 503 backendError"));
    assert!(
        !src.contains("Retry now") && !src.contains("Discard"),
        "{src}"
    );
    c.goto(&format!("{base}/users/{}", users[0])).await.unwrap();
    assert!(!c.source().await.unwrap().contains("Sync now"));
    // Logging out ends the session, server-side: a saved copy of the cookie does not
    // log back in.
    let saved = c
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == "calsync_session")
        .expect("session cookie");
    c.find(Locator::XPath("//button[text()='Log out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page_with(&c, "<h1>Log in</h1>").await;
    c.goto(&format!("{base}/jobs")).await.unwrap();
    page_with(&c, "<h1>Log in</h1>").await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/login"));
    c.add_cookie(saved).await.unwrap();
    c.goto(&format!("{base}/jobs")).await.unwrap();
    page_with(&c, "<h1>Log in</h1>").await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/login"));
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}

/// A real nightly run of three students through a real worker: one sync fails once
/// with Google's 503 and succeeds on its retry, one calendar is gone (killed), one
/// succeeds. The overview's SVG charts show exactly that, and the retried job's page
/// shows its two attempts on a timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_charts_and_the_attempt_timeline_after_a_real_nightly_run() {
    let fake = FakeGoogle::start().await.unwrap();
    let (url, pool, _db) = fresh_database(&base_url()).await;
    let users = seed_university(&pool, &fake, 3).await;
    fake.add_fault(
        calsync_fake_google::FaultRule::error(503, "backendError")
            .calendar("e2e-cal-1")
            .times(1),
    );
    fake.add_fault(
        calsync_fake_google::FaultRule::error(404, "notFound")
            .calendar("e2e-cal-2")
            .method("events.list"),
    );
    // Retry at once instead of after the 30 s backoff.
    sqlx::query(
        "UPDATE calsync.queue_settings SET backoff_base_seconds = 0, backoff_cap_seconds = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    let run = calsync_domain::queue::run_nightly_pass(
        &pool,
        chrono::Utc::now(),
        calsync_domain::queue::RunTrigger::Manual,
        "browser",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(run.enqueued, 3);
    let mut worker = WorkerProcess::spawn(
        &url,
        &fake,
        "charts",
        &["--no-cron", "--heartbeat-secs", "1", "--poll-secs", "1"],
    );
    wait_until(
        "the nightly run finished",
        Duration::from_secs(90),
        || async {
            // Run progress is appended per job; nightly_run reads it folded in.
            calsync_domain::queue::nightly_run(&pool, run.id)
                .await
                .unwrap()
                .is_some_and(|r| r.finished_at.is_some())
        },
    )
    .await;
    assert!(worker.terminate(Duration::from_secs(20)).success());
    let retried: String = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE calsync.job_payload(job) ->> 'user_id' = $1",
    )
    .bind(users[0].to_string())
    .fetch_one(&pool)
    .await
    .unwrap();

    let addr = serve_dashboard(&pool).await;
    let base = format!("http://{addr}");
    let (_driver, c, profile) = browser().await;
    c.set_window_size(1300, 2600).await.unwrap();
    log_in(&c, &base, READONLY).await;
    page_with(&c, "<h1>Overview</h1>").await;

    // Per minute: one line per outcome, with the run's numbers, drawn and styled.
    for (series, total) in [("done", "2"), ("retried", "1"), ("failed", "1")] {
        let sel = format!("#chart-minutes polyline[data-series='{series}']");
        assert_eq!(
            js(
                &c,
                &format!("document.querySelector(\"{sel}\").dataset.total")
            )
            .await,
            serde_json::json!(total),
            "{series}"
        );
    }
    assert_eq!(
        js(&c, "getComputedStyle(document.querySelector(\"#chart-minutes polyline[data-series='failed']\")).stroke").await,
        serde_json::json!("rgb(192, 57, 43)"),
        "the stylesheet colours the series under the CSP"
    );
    let width = js(
        &c,
        "document.querySelector('#chart-minutes').getBoundingClientRect().width",
    )
    .await;
    assert!(width.as_f64().unwrap() > 600.0, "{width}");
    assert_eq!(
        js(
            &c,
            "document.querySelector('#chart-minutes title').textContent"
        )
        .await,
        serde_json::json!("Job attempts per minute, last 24 hours")
    );
    // Per hour: this hour's column holds all four attempts.
    assert_eq!(
        js(&c, "[...document.querySelectorAll('#chart-hours rect')].map(r => r.dataset.series + '=' + r.dataset.value).join(' ')").await,
        serde_json::json!("done=2 retried=1 failed=1")
    );
    // The nightly run: 3 due, 2 succeeded, 1 failed.
    assert_eq!(
        js(&c, "[...document.querySelectorAll('#chart-runs rect')].map(r => r.dataset.series + '=' + r.dataset.value).join(' ')").await,
        serde_json::json!("due=3 succeeded=2 failed=1")
    );
    assert_eq!(
        js(
            &c,
            "document.querySelectorAll('#chart-run-durations rect').length"
        )
        .await,
        serde_json::json!(1)
    );
    screenshot(&c, "overview").await;

    // The retried job's page: attempt 1 retried with Google's error, attempt 2 done.
    c.goto(&format!("{base}/jobs/{retried}")).await.unwrap();
    page_with(&c, "Attempts of this job").await;
    assert_eq!(
        js(&c, "[...document.querySelectorAll('#chart-attempts g.span')].map(g => g.dataset.series).join(' ')").await,
        serde_json::json!("retried done")
    );
    let rows = js(&c, "[...document.querySelectorAll('table.attempts tr')].slice(1).map(r => r.cells[0].textContent + ' ' + r.cells[5].textContent + ' ' + r.cells[6].textContent)").await;
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].starts_with("1 retried ") && rows[0].contains("HTTP 503"),
        "{rows:?}"
    );
    assert_eq!(rows[1], "2 done ");
    screenshot(&c, "job-attempts").await;

    // The list: durations, and the job found by its first attempt's error.
    c.goto(&format!("{base}/jobs?error=backendError"))
        .await
        .unwrap();
    let src = page_with(&c, "matching error").await;
    assert!(src.contains(&retried), "{src}");
    assert_eq!(
        js(&c, "document.querySelectorAll('table tr').length").await,
        serde_json::json!(2),
        "only that job"
    );
    screenshot(&c, "jobs-error-search").await;
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}
