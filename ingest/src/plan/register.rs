//! A planned batch registered as its version, with its chunk messages
//! sent; a batch that could not be planned registered as a failed version;
//! and a version registered before, whose stored plan is sent again.

use std::time::Instant;

use shared::db::protocol::{BatchFile, ChunkPlan, Dataset, NewVersion, Registered, VersionInfo};
use shared::db::{memory, waiting};
use shared::keys::bucket_count;
use tracing::{error, info, warn};

use super::send::send_chunks;
use crate::deps::PlannerDeps;
use crate::error::PlanError;
use crate::layout::{ChunkFormat, Compression};
use crate::s3::messages::ChunkMessage;
use crate::s3::source::ObjectSource;

/// What planning one object produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub dataset: String,
    pub version: String,
    pub chunks: u32,
    /// Set when the object could not be planned and its version failed.
    pub failed: Option<String>,
}

/// Who a batch is: its version, and what its record names.
pub(super) struct Identity<'a> {
    pub(super) ds: &'a Dataset,
    pub(super) version: &'a str,
    pub(super) source_uri: &'a str,
    pub(super) bucket: &'a str,
    pub(super) key: &'a str,
    pub(super) etag: &'a str,
    pub(super) size: u64,
    /// The folder a folder batch commits, which stops waiting.
    pub(super) committed: Option<&'a str>,
}

/// Registers the version of a planned batch and sends its chunk messages;
/// a batch that could not be planned registers a failed version instead.
pub(super) async fn register_batch<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    id: &Identity<'_>,
    batch: Result<Batch, PlanError>,
    started: Instant,
) -> Result<Planned, PlanError> {
    let (ds, version, source_uri, etag) = (id.ds, id.version, id.source_uri, id.etag);
    let dataset = ds.name().to_string();
    let version_owned = version.to_string();
    let batch = match batch {
        Ok(b) => b,
        Err(
            e @ (PlanError::Layout { .. } | PlanError::Folder { .. } | PlanError::Limit { .. }),
        ) => {
            let why = e.to_string();
            let nv = NewVersion {
                version,
                spans: &[],
                files: &[],
                buckets: 1,
                source: source_uri,
                etag,
                size: id.size,
                format: "unknown",
                est_bytes: 0,
                hold: None,
                expected_records: None,
            };
            ds.register(&nv).await?;
            ds.fail(version, &why).await?;
            if let Some(folder) = id.committed {
                waiting::committed(&deps.redis, ds.keys(), folder, version).await?;
            }
            error!(%dataset, %version, reason = %why, "batch cannot be planned; version failed");
            return Ok(Planned {
                dataset,
                version: version_owned,
                chunks: 0,
                failed: Some(why),
            });
        }
        Err(e) => return Err(e),
    };
    let chunks = batch.spans.len() as u32;
    let buckets = bucket_count(batch.estimated_users, deps.config.users_per_bucket);
    let guard = memory::check(ds, batch.estimated_users, batch.text_bytes).await?;
    let hold = guard.hold.as_deref();
    let format = batch.format.as_str();
    let nv = NewVersion {
        version,
        spans: &batch.spans,
        files: &batch.files,
        buckets,
        source: source_uri,
        etag,
        size: batch.size,
        format,
        est_bytes: guard.estimate,
        hold,
        expected_records: batch.expected_records,
    };
    if let Registered::Existing(_) = ds.register(&nv).await? {
        // Another delivery of the event registered it first: its plan counts.
        let existing = ds
            .version_info(version)
            .await?
            .ok_or_else(|| PlanError::Send(format!("version {version} vanished while planned")))?;
        return replan(deps, ds, existing).await;
    }
    if let Some(folder) = id.committed {
        waiting::committed(&deps.redis, ds.keys(), folder, version).await?;
    }
    if let Some(reason) = hold {
        warn!(%dataset, %version, source = %source_uri, %reason, "version held before ingest: it would not fit in Redis");
        return Ok(Planned {
            dataset,
            version: version_owned,
            chunks,
            failed: None,
        });
    }
    let template = ChunkMessage {
        dataset: dataset.clone(),
        version: version_owned.clone(),
        bucket: id.bucket.to_string(),
        key: id.key.to_string(),
        etag: etag.to_string(),
        size: id.size,
        format: batch.single_format,
        compression: batch.single_compression,
        file: 0,
        chunk: 0,
        chunks,
        start: 0,
        end: 0,
        more: Vec::new(),
        buckets,
        delta: false,
    };
    let messages = template
        .for_plan(&batch.spans, &batch.files)
        .ok_or_else(|| {
            PlanError::Send(format!("version {version}: a planned span names no file"))
        })?;
    send_chunks(&deps.sqs, &deps.config.chunks_queue_url, &messages).await?;
    info!(%dataset, %version, source = %source_uri, chunks, files = batch.files.len().max(1), buckets, size = batch.size, format,
        duration_ms = started.elapsed().as_millis() as u64, "planned version");
    Ok(Planned {
        dataset,
        version: version_owned,
        chunks,
        failed: None,
    })
}

/// What a batch is made of, before it is registered.
pub(super) struct Batch {
    /// What each chunk reads.
    pub(super) spans: Vec<ChunkPlan>,
    /// A folder batch's files (empty for one object).
    pub(super) files: Vec<BatchFile>,
    /// The format label of every file, or `mixed`.
    pub(super) format: String,
    /// One object's format, for its chunk messages.
    pub(super) single_format: ChunkFormat,
    pub(super) single_compression: Compression,
    pub(super) estimated_users: u64,
    pub(super) text_bytes: u64,
    pub(super) size: u64,
    pub(super) expected_records: Option<u64>,
}

/// A version registered before: if it is still ingesting, its stored plan is
/// sent again (chunks already done count once); otherwise nothing is sent.
pub(super) async fn replan<S>(
    deps: &PlannerDeps<S>,
    ds: &Dataset,
    existing: VersionInfo,
) -> Result<Planned, PlanError> {
    let (dataset, version) = (ds.name().to_string(), existing.version.clone());
    if existing.state.is_in_progress() {
        let spans = ds.plan(&version).await?;
        let messages = ChunkMessage::for_version(&dataset, &existing, &spans).ok_or_else(|| {
            PlanError::Send(format!(
                "version {version} has a record its chunks cannot be built from"
            ))
        })?;
        send_chunks(&deps.sqs, &deps.config.chunks_queue_url, &messages).await?;
        info!(%dataset, %version, chunks = messages.len(), "version already planned; re-sent its stored plan");
    } else {
        info!(%dataset, %version, state = existing.state.as_str(), "version already planned");
    }
    Ok(Planned {
        dataset,
        version,
        chunks: existing.chunks,
        failed: existing.reason,
    })
}
