//! # ingest: the planner, ingest and janitor Lambdas
//!
//! ## Layout
//! - [`plan`]: the planner. On each S3 ObjectCreated event (through the
//!   events queue) it registers a version and sends one message per
//!   user-range chunk: an object, a folder batch, a SageMaker job's output,
//!   or a delta.
//! - [`load`]: ingest. On each chunk message it reads the chunk's byte range
//!   pinned to the planned ETag, writes its users under the version's keys,
//!   and marks the chunk done through the version protocol (which flips the
//!   pointer after the last chunk); a delta's chunk is applied to the live
//!   version instead.
//! - [`janitor`]: on a schedule, retention, abandonment and orphan sweeps
//!   for every dataset, and the age of each live batch.
//! - [`formats`]: the batch formats, one module each behind one small trait:
//!   how the planner cuts an object into chunks, how ingest reads a chunk.
//! - [`write`]: a chunk's records into rounds, and where rounds go (a
//!   [`write::Sink`]: Redis, or a delta's buffer).
//! - [`layout`]: how a chunk message names a chunk's format and compression.
//! - [`s3`]: S3 events, folder batches, chunk messages, and byte ranges of
//!   objects behind one small trait.
//! - [`sample`]: a batch on local disk sized as ingest would store it
//!   (`fsctl capacity`).
//! - [`deps`]: what each Lambda needs, built once per process.
//! - [`error`]: what can go wrong, and whether a retry can help.
//!
//! Imports run one way: `plan`, `load` and `sample` use `formats`, which uses `write`,
//! which uses `error`, `layout` and `s3`. The handlers take a typed
//! `LambdaEvent<SqsEvent>` and answer with partial batch failures, so SQS
//! retries only the messages that failed.

pub mod deps;
pub mod error;
pub mod formats;
pub mod janitor;
pub mod layout;
pub mod load;
pub mod plan;
pub mod s3;
pub mod sample;
pub mod write;

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
