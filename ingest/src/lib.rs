//! # ingest: the planner and ingest Lambdas
//!
//! - [`planner`]: on each S3 ObjectCreated event (through the events queue),
//!   registers a version and sends one message per user-range chunk.
//! - [`ingest`]: on each chunk message, reads the chunk's byte range pinned to
//!   the planned ETag, writes its users under the version's keys, and marks
//!   the chunk done through the version protocol (which flips the pointer
//!   after the last chunk).
//! - [`delta`]: deltas, users corrected between full batches: applied to
//!   the live version, and replayed onto a version before it goes live.
//! - [`janitor`]: on a schedule, retention, abandonment and orphan sweeps
//!   for every dataset, and the age of each live batch.
//! - [`format`]: the batch formats, one module each behind one small trait:
//!   how the planner cuts an object into chunks, how ingest reads a chunk.
//! - [`writer`]: a chunk's records into Redis, in pipelined rounds.
//! - [`source`]: where batch bytes come from (S3, or anything else that can
//!   serve byte ranges), behind one small trait.
//! - [`error`]: what can go wrong, and whether a retry can help.
//!
//! Both handlers take a typed `LambdaEvent<SqsEvent>` and answer with partial
//! batch failures, so SQS retries only the messages that failed.

pub mod delta;
pub mod error;
pub mod ingest;
pub mod format;
pub mod janitor;
pub mod planner;
pub mod source;
pub mod writer;

pub use error::{IngestError, PlanError};

/// Keeps glibc's malloc to one arena. Ingest builds a round's commands on
/// one thread and the Redis client frees them on another; with glibc's
/// default of an arena per thread, the freed memory piles up where nothing
/// allocates again. Peak RSS on a 2 GB batch: 193 MiB by default, 86 MiB with
/// one arena. Call first thing in `main`.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
