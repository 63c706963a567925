//! # local-stack: the AWS wiring, played on one machine
//!
//! Runs the same planner, ingest and serve handlers as the Lambdas, against a
//! real Redis Cluster and an S3/SQS emulator:
//! - [`topology`]: creates the bucket, the events and chunks queues with their
//!   dead-letter queues and redrive policies, and the bucket's ObjectCreated →
//!   events-queue notification: the same topology as the AWS deployment.
//! - [`poller`]: polls a queue the way Lambda's SQS event source does (batch
//!   size, visibility timeout, partial batch failures, concurrency).
//! - [`auth`]: the API authorization modes the gateway enforces (none, IAM, JWT).
//! - [`gateway`]: an HTTP server that hands requests to serve as API Gateway
//!   HTTP API (payload 2.0) events.
//! - [`stack`]: starts all of it in-process and stops it on request.
//! - [`faults`]: failing chosen reads, for tests of the failure paths.
//! - [`console`]: what `make run` prints: events, and a periodic summary of
//!   the requests the gateway answered.

pub mod auth;
pub mod console;
pub mod faults;
pub mod gateway;
pub mod poller;
pub mod stack;
pub mod topology;
