//! Logging (pretty or JSON via tracing, to stderr) and the Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, LoggingConfig};

/// The default log filter of long-running commands.
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_postgres=warn,hyper=warn";
/// The default log filter of one-shot commands, the demo and the benchmarks, whose
/// output is their own lines: warnings and errors only.
pub const QUIET_FILTER: &str = "warn,sqlx=error";

/// Install the global tracing subscriber, writing to stderr (stdout carries command
/// output such as `status --json`). `RUST_LOG` overrides the default filter; colours
/// only when [`LoggingConfig::color`] says so (a terminal, no `NO_COLOR`).
pub fn init_logging(config: &LoggingConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config.default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let res = match config.format {
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(config.color)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = res;
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "calsync_sync_duration_seconds".into(),
                    ),
                    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
                )
                .and_then(|b| b.install_recorder());
            match handle {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}
