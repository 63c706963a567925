//! # shared: what every part of the feature store agrees on
//!
//! The planner, ingest and serve Lambdas, the operator CLI, the local stack and
//! the tests all link this crate, so that a key name, an env var, a message
//! field or a rule of the version protocol is written down exactly once.
//!
//! ## Layout
//! - [`config`]: every environment variable, its default, read once at cold start.
//! - [`version_id`]: deterministic, ordered version ids derived from S3 events.
//! - [`format`](mod@format): how chunk messages name a chunk's layout and
//!   compression, and the user record (parse, validate, encode for Redis,
//!   decode for serving). The formats themselves live in the ingest crate.
//! - [`db`]: the Redis side: key schema, connection and pipelined writes, the
//!   version protocol and its scripts, retention, the memory guard, rejected
//!   uploads.
//! - [`aws`]: the Redis AUTH token from Secrets Manager (feature `secrets`);
//!   S3 and SQS clients, S3 events and chunk messages (feature `aws`, which
//!   serve does not enable).
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`logging`]: structured logs for the Lambdas.

#[cfg(feature = "secrets")]
pub mod aws;
pub mod config;
pub mod db;
pub mod format;
pub mod logging;
pub mod metrics;
pub mod version_id;
