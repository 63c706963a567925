//! Errors of the planner and ingest, each knowing whether a retry can help.
//!
//! A *permanent* error (a malformed batch, an object overwritten under us)
//! fails the version so it can never go live, and the message is not retried.
//! A *transient* one (Redis or S3 unreachable, throttling) is reported as a
//! batch item failure, so SQS redelivers that message alone and, after
//! `maxReceiveCount`, parks it in the dead-letter queue for a redrive.

use shared::record::RecordError;

use crate::s3::source::SourceError;

/// Planning a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("message is not an S3 notification: {0}")]
    Notification(#[from] crate::s3::event::EventError),
    #[error("object key {key:?} names dataset {dataset:?}: {reason}")]
    Dataset {
        key: String,
        dataset: String,
        reason: shared::keys::KeyError,
    },
    #[error("object {source_uri}: {reason}")]
    Version {
        source_uri: String,
        reason: shared::version_id::VersionIdError,
    },
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{source_uri}: {reason}")]
    Layout {
        source_uri: String,
        reason: ChunkError,
    },
    /// A folder batch whose marker or files are wrong (a manifest naming a
    /// missing or changed file, an empty folder).
    #[error("{source_uri}: {reason}")]
    Folder { source_uri: String, reason: String },
    /// An upload past one of the limits on what one upload may cost
    /// (`shared::config::UploadLimits`).
    #[error("{source_uri}: {reason}")]
    Limit { source_uri: String, reason: String },
    /// A folder whose marker is in but whose files are still arriving: the
    /// planner looks again in `retry_in` (never a failed version by itself).
    #[error("{source_uri}: {reason}")]
    NotYet {
        source_uri: String,
        reason: String,
        retry_in: std::time::Duration,
    },
    /// A delta that cannot be one (too large, a format that does not stream).
    #[error("{source_uri}: {reason}")]
    Delta { source_uri: String, reason: String },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("sending chunk messages: {0}")]
    Send(String),
}

impl PlanError {
    pub fn is_permanent(&self) -> bool {
        match self {
            PlanError::Notification(_)
            | PlanError::Dataset { .. }
            | PlanError::Version { .. }
            | PlanError::Layout { .. }
            | PlanError::Folder { .. }
            | PlanError::Limit { .. }
            | PlanError::Delta { .. } => true,
            PlanError::Source(e) => e.is_permanent(),
            PlanError::Redis(_) | PlanError::Send(_) | PlanError::NotYet { .. } => false,
        }
    }
}

/// Where a record is in its batch: a byte offset of a text format, or a
/// row of a Parquet row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Byte(u64),
    Row { group: u64, row: u64 },
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Byte(offset) => write!(f, "at byte {offset}"),
            At::Row { group, row } => write!(f, "in row group {group}, row {row}"),
        }
    }
}

/// Ingesting a chunk failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("message is not a chunk message: {0}")]
    Message(#[from] serde_json::Error),
    #[error("chunk message names dataset {0:?}, which is not a valid dataset name")]
    Dataset(String),
    #[error("chunk message names version {0:?}, which is not a version id")]
    VersionId(String),
    #[error("chunk {chunk} of version {version} does not match the version's plan: the message has {message}, the plan has {planned}")]
    NotPlanned {
        version: String,
        chunk: u32,
        message: String,
        planned: String,
    },
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{source_uri} chunk {chunk} {at}: {reason}")]
    Record {
        source_uri: String,
        chunk: u32,
        at: At,
        reason: RecordError,
    },
    #[error("{source_uri} chunk {chunk} at byte {offset}: a record that never ends (its brackets or quotes do not close)")]
    Unterminated {
        source_uri: String,
        chunk: u32,
        offset: u64,
    },
    #[error("{source_uri}: {reason}")]
    Decompress { source_uri: String, reason: String },
    #[error("{source_uri}: {reason}")]
    Header { source_uri: String, reason: String },
    /// A Parquet file whose footer or pages cannot be decoded.
    #[error("{source_uri}: {reason}")]
    Parquet { source_uri: String, reason: String },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("chunk {chunk}: only {acked} of {wanted} replicas acknowledged its writes")]
    Replication { chunk: u32, acked: u32, wanted: u32 },
    #[error("chunk {chunk}: {missing} users were not found on the primaries after a failover; writing it again")]
    LostWrites { chunk: u32, missing: u64 },
}

impl IngestError {
    pub fn is_permanent(&self) -> bool {
        match self {
            IngestError::Message(_)
            | IngestError::Dataset(_)
            | IngestError::VersionId(_)
            | IngestError::NotPlanned { .. }
            | IngestError::Record { .. }
            | IngestError::Unterminated { .. }
            | IngestError::Decompress { .. }
            | IngestError::Header { .. }
            | IngestError::Parquet { .. } => true,
            IngestError::Source(e) => e.is_permanent(),
            IngestError::Redis(_)
            | IngestError::Replication { .. }
            | IngestError::LostWrites { .. } => false,
        }
    }
}

/// Why a batch object cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("the batch is empty")]
    Empty,
    #[error("unknown batch format: expected JSON Lines, a JSON array, a table document, CSV with a header naming the user field, or Parquet (first byte {0:?})")]
    UnknownFormat(char),
    #[error(
        "no records array found: expected a top-level array or a `data` array in a table document"
    )]
    NoRecords,
    #[error("the document ends early at byte {0} (truncated or unbalanced)")]
    Truncated(u64),
    #[error("unexpected content after the document at byte {0}")]
    TrailingContent(u64),
    /// A compressed object's stream cannot be read ([`crate::layout::Compression::corrupt`]).
    #[error("{0}")]
    Compressed(String),
    /// A Parquet file whose footer or schema cannot be read.
    #[error("{0}")]
    Parquet(String),
}
