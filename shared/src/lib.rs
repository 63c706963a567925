//! # shared: what every part of the feature store agrees on
//!
//! The planner, ingest and serve Lambdas, the operator CLI, the local stack and
//! the tests all link this crate, so that a key name, an env var, a message
//! field or a rule of the version protocol is written down exactly once.
//!
//! ## Layout
//! - [`config`]: every environment variable, its default, read once at cold start.
//! - [`version_id`]: deterministic, ordered version ids derived from S3 events.
//! - [`record`]: the stored user record: parse, validate, encode for Redis,
//!   decode for serving. The batch formats live in the ingest crate.
//! - [`keys`]: the Redis key schema, the one place that spells a key.
//! - [`sizing`]: how much Redis memory a version takes, from its stored sizes.
//! - [`db`]: the Redis side: connection and pipelined writes, the version
//!   protocol and its scripts, deltas, retention, the memory guard, rejected
//!   uploads.
//!
//! Imports run one way: `boot` uses `config` and `db`; `db` uses `config`,
//! `keys`, `record` and `version_id`; `sizing` uses `keys` and `version_id`;
//! `config` uses `keys` and `record`, which use nothing else here.
//! - [`boot`]: what every Lambda does at cold start, including reading the
//!   Redis AUTH token from Secrets Manager.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`logging`]: structured logs for the Lambdas.

#[cfg(feature = "aws")]
pub mod boot;
pub mod config;
pub mod db;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod sizing;
pub mod version_id;

/// Milliseconds since the Unix epoch, by this machine's clock: for logs,
/// metrics and what operators read; the version protocol's own times come
/// from the Redis server.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An S3 ETag without its quotes: S3 quotes it in headers and listings, and
/// an event or a manifest may not.
pub fn bare_etag(etag: &str) -> &str {
    etag.trim_matches('"')
}
