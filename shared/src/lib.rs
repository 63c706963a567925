//! # shared: what every part of the feature store agrees on
//!
//! The planner, ingest and serve Lambdas, the operator CLI, the local stack and
//! the tests all link this crate, so that a key name, an env var, a message
//! field or a rule of the version protocol is written down exactly once.
//!
//! ## Layout
//! - [`config`]: every environment variable, its default, read once at cold start.
//! - [`keys`]: the Redis key schema, dataset and user-id rules, user → bucket hashing.
//! - [`version_id`]: deterministic, ordered version ids derived from S3 events.
//! - [`event`]: S3 notifications as they arrive through SQS (AWS and emulator shapes).
//! - [`messages`]: the chunk message the planner sends and ingest consumes.
//! - [`record`]: parsing one user record, validating it, encoding it for Redis.
//! - [`chunk`]: splitting a batch object into record-aligned user-range chunks.
//! - [`store`]: the Redis connection (cluster or standalone) and pipelined writes.
//! - [`protocol`]: the version protocol: register, complete, finalize and flip, rollback, promote.
//! - [`memory`]: the memory guard: a version that would not fit is held before any write.
//! - [`retention`]: deleting versions nobody needs any more.
//! - [`rejected`]: uploads the planner rejected before any dataset held them.
//! - [`aws`]: S3 and SQS clients configured for AWS or an S3/SQS emulator; the Redis AUTH token.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`logging`]: structured logs for the Lambdas.

pub mod aws;
pub mod chunk;
pub mod config;
pub mod event;
pub mod keys;
pub mod logging;
pub mod memory;
pub mod messages;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod rejected;
pub mod retention;
pub mod store;
pub mod version_id;
