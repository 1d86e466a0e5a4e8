//! The `calsync` binary: parse the command line, set up logging, run a command.

use calsync_worker::{cli::Command, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = calsync_worker::cli::Cli::parse();
    let filter = match cli.command {
        Command::Demo(_) | Command::Bench(_) => telemetry::QUIET_FILTER,
        _ => telemetry::DEFAULT_FILTER,
    };
    telemetry::init_logging(cli.log_format, filter);
    match calsync_worker::commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
