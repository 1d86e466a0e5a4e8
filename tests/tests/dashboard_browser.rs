//! End-to-end in headless Chromium (Debian's `chromium` + `chromium-driver`): log in,
//! retry a failed job, watch a real worker run it to done; the read-only role sees no
//! actions; a logged-out session cookie stays dead when replayed.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use calsync_dashboard::DashboardConfig;
use calsync_e2e::harness::*;
use calsync_fake_google::FakeGoogle;
use fantoccini::{Client, ClientBuilder, Locator};
use sqlx::PgPool;

const ADMIN: &str = "browser-admin-token-42";
const READONLY: &str = "browser-readonly-token-42";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str, fallbacks: &[&str]) -> String {
    for p in fallbacks {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok();
    let p = out
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        !p.is_empty(),
        "{name} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run does"
    );
    p
}

async fn browser() -> (Driver, Client, std::path::PathBuf) {
    let chromium = which("chromium", &["/usr/bin/chromium"]);
    let chromedriver = which("chromedriver", &["/usr/bin/chromedriver"]);
    let port = free_port();
    let driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = std::env::temp_dir().join(format!("calsync-chromium-{:016x}", random_u64()));
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut last_err = String::new();
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return (driver, c, profile),
            Err(e) => {
                last_err = e.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("could not start a headless Chromium session: {last_err}");
}

async fn serve_dashboard(pool: &PgPool) -> SocketAddr {
    let app = calsync_dashboard::router(
        pool.clone(),
        DashboardConfig {
            admin_token: Some(ADMIN.into()),
            readonly_token: Some(READONLY.into()),
            session_secret: None,
            page_size: 50,
            secure_cookies: false,
            ..Default::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Served with peer addresses, as `calsync dashboard` does (login throttling is per
    // client).
    tokio::spawn(calsync_dashboard::serve_listener(
        app,
        listener,
        std::future::pending(),
    ));
    addr
}

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

/// Wait until the current page contains `needle` (clicks return before the next page
/// has necessarily loaded), then return its source.
async fn page_with(c: &Client, needle: &str) -> String {
    wait_until(
        &format!("page containing {needle:?}"),
        Duration::from_secs(20),
        || async {
            c.source()
                .await
                .map(|s| s.contains(needle))
                .unwrap_or(false)
        },
    )
    .await;
    c.source().await.unwrap()
}

async fn log_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
