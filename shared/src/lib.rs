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
//! - [`db`]: the Redis side: key schema, connection and pipelined writes, the
//!   version protocol and its scripts, retention, the memory guard, rejected
//!   uploads.
//! - [`boot`]: what every Lambda does at cold start, including reading the
//!   Redis AUTH token from Secrets Manager.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`logging`]: structured logs for the Lambdas.

pub mod boot;
pub mod config;
pub mod db;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod version_id;
