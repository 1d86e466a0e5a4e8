//! Serves the fake Google Calendar API, OAuth token endpoint and `/_fake/` control API.
//!
//! `fake-google --listen 127.0.0.1:8085 [--refresh-token RT]... [--access-token TOKEN]... [--token-lifetime-secs 3600]`
//!
//! Prints `fake-google listening on http://ADDR/` to stdout once it accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use calsync_fake_google::FakeGoogle;
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
    let fake = FakeGoogle::start_on(args.listen).await?;
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
