//! Structured logs for the Lambdas: one JSON object a line (CloudWatch Logs
//! Insights reads the fields), or plain text with `FS_LOG_FORMAT=text`.

use crate::config::LogFormat;

/// Initialises logging once per process; `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let json = format == LogFormat::Json;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time();
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}
