//! Serves the fake Google Calendar API, OAuth token endpoint and `/_fake/` control API.
//!
//! `fake-google --listen 127.0.0.1:8085 [--refresh-token RT]... [--access-token TOKEN]... [--token-lifetime-secs 3600]
//!  [--test-service-account [--domain-wide-delegation]] [--quota-per-project N] [--quota-per-user N]
//!  [--quota-window-ms 60000] [--quota-status 403]`
//!
//! Prints `fake-google listening on http://ADDR/` to stdout once it accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use calsync_fake_google::{FakeGoogle, QuotaConfig};
use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "fake-google",
    about = "Fake Google Calendar API v3 + OAuth token endpoint"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "FAKE_GOOGLE_LISTEN", default_value = "127.0.0.1:8085")]
    listen: SocketAddr,
    /// Refresh tokens to accept from the start (repeatable).
    #[arg(long = "refresh-token")]
    refresh_tokens: Vec<String>,
    /// Access tokens to accept from the start, valid for a day (repeatable).
    #[arg(long = "access-token")]
    access_tokens: Vec<String>,
    /// Lifetime of access tokens issued by /token.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// Register the committed, test-only service account (calsync_fake_google::test_keys).
    #[arg(long)]
    test_service_account: bool,
    /// Allow the test service account to impersonate users (`sub`).
    #[arg(long, requires = "test_service_account")]
    domain_wide_delegation: bool,
    /// Calendar API requests allowed per window for the project (Google: 10000/min).
    #[arg(long)]
    quota_per_project: Option<u32>,
    /// Calendar API requests allowed per window per user (Google: 600/min).
    #[arg(long)]
    quota_per_user: Option<u32>,
    /// Quota window in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    quota_window_ms: u64,
    /// Status of rate-limit answers: 403 or 429.
    #[arg(long, default_value_t = 403)]
    quota_status: u16,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let quota = QuotaConfig {
        per_project: args.quota_per_project,
        per_user: args.quota_per_user,
        window_ms: args.quota_window_ms,
        status: args.quota_status,
    };
    if let Err(error) = quota.validate() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, error));
    }
    let fake = FakeGoogle::start_on(args.listen).await?;
    fake.set_quota(quota);
    if args.test_service_account {
        let email = fake.register_test_service_account();
        fake.set_domain_wide_delegation(&email, args.domain_wide_delegation);
        tracing::info!(%email, "test service account registered");
    }
    fake.set_token_lifetime(Duration::from_secs(args.token_lifetime_secs));
    for rt in &args.refresh_tokens {
        fake.add_refresh_token(rt);
    }
    for token in &args.access_tokens {
        fake.add_access_token(token, Duration::from_secs(86_400));
    }
    println!("fake-google listening on {}", fake.root_url());
    tracing::info!(addr = %fake.addr(), "fake-google started");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
