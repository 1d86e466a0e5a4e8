//! The `calsync` binary: parse the command line, set up logging, run a command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = calsync_worker::cli::Cli::parse();
    calsync_worker::telemetry::init_logging(cli.log_format);
    match calsync_worker::commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
