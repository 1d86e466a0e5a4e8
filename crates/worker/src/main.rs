//! The `calsync` binary: parse the command line, set up logging, run a command, and
//! print its error once.

use calsync_worker::{
    cli::Cli,
    config::{LogFormat, LoggingConfig},
    telemetry,
};
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logging = cli.logging();
    telemetry::init_logging(&logging);
    match calsync_worker::commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            report(&logging, &e);
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error, once: a JSON log line for log shippers, else a plain line on stderr.
fn report(logging: &LoggingConfig, e: &anyhow::Error) {
    let error = calsync_worker::commands::describe_error(e);
    match logging.format {
        LogFormat::Json => tracing::error!(error, "calsync failed"),
        LogFormat::Pretty => eprintln!("error: {error}"),
    }
}
