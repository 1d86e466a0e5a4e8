//! Headless Chromium for the dashboard's browser tests (Debian's `chromium` +
//! `chromium-driver`, installed by `scripts/ensure-deps.sh --browser`): a WebDriver
//! session, logging in, waiting for a page, evaluating JavaScript, screenshots in
//! `target/e2e-screenshots/`, and the dashboard served in process.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use calsync_dashboard::DashboardConfig;
use fantoccini::{Client, ClientBuilder, Locator};
use sqlx::PgPool;

use crate::harness::{free_port, random_u64, wait_until};

/// The admin token of the browser tests' dashboards.
pub const ADMIN: &str = "browser-admin-token-42";
/// The read-only token of the browser tests' dashboards.
pub const READONLY: &str = "browser-readonly-token-42";

/// The chromedriver process; killed on drop.
pub struct Driver(Child);

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
        "{name} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver); scripts/ensure-deps.sh --browser does"
    );
    p
}

/// Start chromedriver and a headless Chromium session: the driver guard, the client,
/// and the profile directory (remove it when done).
pub async fn browser() -> (Driver, Client, std::path::PathBuf) {
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

/// Serve the dashboard in this process (no "Check against Google": no preview).
pub async fn serve_dashboard(pool: &PgPool) -> SocketAddr {
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

/// Wait until the current page contains `needle` (clicks return before the next page
/// has necessarily loaded), then return its source.
pub async fn page_with(c: &Client, needle: &str) -> String {
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

/// Log in with `token` on the login form.
pub async fn log_in(c: &Client, base: &str, token: &str) {
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

/// Where screenshots go: `target/e2e-screenshots/` (or under `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("e2e-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Save a screenshot of the window as `<name>.png` in [`screenshot_dir`].
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
}

/// Evaluate a JavaScript expression in the page.
pub async fn js(c: &Client, expr: &str) -> serde_json::Value {
    c.execute(&format!("return {expr};"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}
