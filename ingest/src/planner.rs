//! The planner Lambda: S3 ObjectCreated events in, chunk messages out.
//!
//! For each new object it derives the version id from the event (so a repeated
//! event names the same version), decides the layout from the first bytes,
//! cuts the object into record-aligned user-range chunks, registers the
//! version, then sends one message per chunk. Running it twice for one event
//! re-sends the same chunks, which ingest treats as repeats.

use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use lambda_runtime::{Error, LambdaEvent};
use shared::config::PlannerConfig;
use shared::aws::event::{dataset_of, parse_notification, Notification, ObjectEvent, TransformJob};
use shared::aws::folder::{self, Manifest, Marker, Upload};
use shared::db::keys::bucket_count;
use shared::aws::messages::ChunkMessage;
use shared::db::protocol::{BatchFile, Dataset, NewVersion, Registered, Span, VersionInfo};
use shared::db::{memory, rejected, waiting};
use shared::db::store::Redis;
use shared::version_id::{self, VersionSource};
use tracing::{debug, error, info, warn};

use crate::error::PlanError;
use crate::format::{self, ChunkError, ChunkFormat, Compression};
use crate::source::{read_range, Listed, ObjectSource, SourceError};

/// SQS allows at most 10 entries per SendMessageBatch.
const SEND_BATCH: usize = 10;

/// What the planner needs, built once per process.
pub struct PlannerDeps<S> {
    pub config: PlannerConfig,
    pub redis: Redis,
    pub source: S,
    pub sqs: aws_sdk_sqs::Client,
}

/// What planning one object produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub dataset: String,
    pub version: String,
    pub chunks: u32,
    /// Set when the object could not be planned and its version failed.
    pub failed: Option<String>,
}

/// Lambda handler for the events queue.
pub async fn handle<S: ObjectSource>(deps: &PlannerDeps<S>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    for msg in &event.payload.records {
        if let Err(e) = handle_message(deps, msg).await {
            let id = msg.message_id.clone().unwrap_or_default();
            if e.is_permanent() {
                error!(message_id = %id, error = %e, "dropping event that cannot be planned");
            } else {
                warn!(message_id = %id, error = %e, "planning failed; the event will be retried");
                response.add_failure(id);
            }
        }
    }
    Ok(response)
}

async fn handle_message<S: ObjectSource>(deps: &PlannerDeps<S>, msg: &SqsMessage) -> Result<Vec<Planned>, PlanError> {
    let body = msg.body.as_deref().unwrap_or("");
    let events = match parse_notification(body)? {
        Notification::Test => {
            info!("ignoring s3:TestEvent");
            return Ok(Vec::new());
        }
        Notification::Records(r) => r,
        Notification::Transform(job) => return Ok(vec![plan_transform(deps, &job).await?]),
    };
    let mut out = Vec::new();
    for ev in events.iter().filter(|e| e.is_object_created()) {
        out.extend(plan_object(deps, ev).await?);
    }
    Ok(out)
}

/// Plans one upload: an object of its own, or a folder batch's marker,
/// registers its version with its plan and sends its chunk messages; a data
/// file of a folder batch is noted as waiting for its marker (`None`). An
/// event delivered again while its version is still ingesting re-sends the
/// stored plan, never a new one.
/// An upload that cannot be planned at all (no valid dataset, no version id)
/// is recorded as a rejected upload, so `status` and `fsctl upload --wait`
/// can say why at once.
pub async fn plan_object<S: ObjectSource>(deps: &PlannerDeps<S>, ev: &ObjectEvent) -> Result<Option<Planned>, PlanError> {
    let result = plan(deps, ev).await;
    if let Err(e) = &result {
        if e.is_permanent() {
            rejected::record(&deps.redis, &ev.source(), &ev.etag, &e.to_string()).await?;
        }
    }
    result
}

async fn plan<S: ObjectSource>(deps: &PlannerDeps<S>, ev: &ObjectEvent) -> Result<Option<Planned>, PlanError> {
    let started = Instant::now();
    let upload = folder::classify(&ev.key, &deps.config.default_dataset);
    let dataset = match upload {
        Upload::Ignored => {
            info!(source = %ev.source(), "not a batch file (a name starting with `_` or `.`, or a marker outside a batch folder): ignored");
            return Ok(None);
        }
        Upload::Object { dataset } | Upload::Part { dataset, .. } | Upload::Marker { dataset, .. } | Upload::Delta { dataset } => dataset.to_string(),
    };
    let ds = Dataset::new(&deps.redis, &dataset).map_err(|reason| PlanError::Dataset { key: ev.key.clone(), dataset: dataset.clone(), reason })?;
    // An event without an ETag or a size (some sources omit them) is
    // completed by a HEAD, so a non-empty object is never taken for empty.
    let (etag, size) = match (ev.etag.is_empty(), ev.size) {
        (false, Some(size)) => (ev.etag.clone(), size),
        _ => deps.source.head(&ev.bucket, &ev.key).await?,
    };
    if let Upload::Delta { .. } = upload {
        return crate::delta::plan(deps, &ds, ev, &etag, size).await.map(Some);
    }
    if let Upload::Part { folder, .. } = upload {
        waiting::note(&deps.redis, ds.keys(), folder, &ev.key, size).await?;
        debug!(%dataset, source = %ev.source(), %folder, "part of a folder batch: it goes live with its folder's `_SUCCESS` or `_manifest.json`");
        return Ok(None);
    }
    let version = version_id::derive(&VersionSource {
        event_time: &ev.event_time,
        sequencer: ev.sequencer.as_deref(),
        bucket: &ev.bucket,
        key: &ev.key,
        etag: &etag,
    })
    .map_err(|reason| PlanError::Version { source_uri: ev.source(), reason })?;

    if let Some(existing) = ds.version_info(&version).await? {
        return replan(deps, &ds, existing).await.map(Some);
    }

    let (source_uri, batch) = match upload {
        Upload::Marker { folder, kind, .. } => {
            let batch = plan_folder(deps, ev, &etag, size, folder, kind).await;
            (format!("s3://{}/{folder}", ev.bucket), batch)
        }
        _ => (ev.source(), plan_single(deps, ev, &etag, size).await),
    };
    let committed = match upload {
        Upload::Marker { folder, .. } => Some(folder),
        _ => None,
    };
    let id = Identity { ds: &ds, version: &version, source_uri: &source_uri, bucket: &ev.bucket, key: &ev.key, etag: &etag, size, committed };
    register_batch(deps, &id, batch, started).await.map(Some)
}

/// A SageMaker Batch Transform job that ended: a completed job's `.out`
/// files under its output prefix are one folder batch of the dataset the
/// prefix is in; a failed or stopped job registers a failed version, so it
/// never goes live and shows in `status`.
async fn plan_transform<S: ObjectSource>(deps: &PlannerDeps<S>, job: &TransformJob) -> Result<Planned, PlanError> {
    let started = Instant::now();
    let dataset = dataset_of(&job.prefix, &deps.config.default_dataset).to_string();
    let source_uri = format!("s3://{}/{}", job.bucket, job.prefix);
    let ds = Dataset::new(&deps.redis, &dataset).map_err(|reason| PlanError::Dataset { key: job.prefix.clone(), dataset: dataset.clone(), reason })?;
    // The job's name stands for an ETag: a repeated event names the same version.
    let version = version_id::derive(&VersionSource { event_time: &job.time, sequencer: None, bucket: &job.bucket, key: &job.prefix, etag: &job.name })
        .map_err(|reason| PlanError::Version { source_uri: source_uri.clone(), reason })?;
    if let Some(existing) = ds.version_info(&version).await? {
        return replan(deps, &ds, existing).await;
    }
    let batch = if job.status != "Completed" {
        let why = job.failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default();
        Err(PlanError::Folder { source_uri: source_uri.clone(), reason: format!("SageMaker transform job {} ended {}{why}", job.name, job.status) })
    } else if job.prefix.matches('/').count() < 2 {
        let reason = format!("transform job {}'s S3OutputPath must be a folder inside a dataset folder (s3://bucket/<dataset>/<run>/)", job.name);
        Err(PlanError::Folder { source_uri: source_uri.clone(), reason })
    } else {
        match data_files(deps, &job.bucket, &job.prefix, |key| key.ends_with(".out")).await {
            Ok(outs) if outs.is_empty() => Err(PlanError::Folder { source_uri: source_uri.clone(), reason: format!("transform job {} left no `.out` files there", job.name) }),
            Ok(outs) => plan_files(deps, &job.bucket, &outs, None, &source_uri).await,
            Err(e) => Err(e),
        }
    };
    let id = Identity { ds: &ds, version: &version, source_uri: &source_uri, bucket: &job.bucket, key: &job.prefix, etag: &job.name, size: 0, committed: Some(&job.prefix) };
    register_batch(deps, &id, batch, started).await
}

/// Who a batch is: its version, and what its record names.
struct Identity<'a> {
    ds: &'a Dataset,
    version: &'a str,
    source_uri: &'a str,
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    size: u64,
    /// The folder a folder batch commits, which stops waiting.
    committed: Option<&'a str>,
}

/// Registers the version of a planned batch and sends its chunk messages;
/// a batch that could not be planned registers a failed version instead.
async fn register_batch<S: ObjectSource>(deps: &PlannerDeps<S>, id: &Identity<'_>, batch: Result<Batch, PlanError>, started: Instant) -> Result<Planned, PlanError> {
    let (ds, version, source_uri, etag) = (id.ds, id.version, id.source_uri, id.etag);
    let dataset = ds.name().to_string();
    let version_owned = version.to_string();
    let batch = match batch {
        Ok(b) => b,
        Err(e @ (PlanError::Layout { .. } | PlanError::Folder { .. })) => {
            let why = e.to_string();
            let nv = NewVersion { version, spans: &[], files: &[], buckets: 1, source: source_uri, etag, size: id.size, format: "unknown", est_bytes: 0, hold: None, expected_records: None };
            ds.register(&nv).await?;
            ds.fail(version, &why).await?;
            if let Some(folder) = id.committed {
                waiting::committed(&deps.redis, ds.keys(), folder).await?;
            }
            error!(%dataset, %version, reason = %why, "batch cannot be planned; version failed");
            return Ok(Planned { dataset, version: version_owned, chunks: 0, failed: Some(why) });
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
        let existing = ds.version_info(version).await?.ok_or_else(|| PlanError::Send(format!("version {version} vanished while planned")))?;
        return replan(deps, ds, existing).await;
    }
    if let Some(folder) = id.committed {
        waiting::committed(&deps.redis, ds.keys(), folder).await?;
    }
    if let Some(reason) = hold {
        warn!(%dataset, %version, source = %source_uri, %reason, "version held before ingest: it would not fit in Redis");
        return Ok(Planned { dataset, version: version_owned, chunks, failed: None });
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
        buckets,
        delta: false,
    };
    let messages = template.for_plan(&batch.spans, &batch.files).ok_or_else(|| PlanError::Send(format!("version {version}: a planned span names no file")))?;
    send_chunks(&deps.sqs, &deps.config.chunks_queue_url, &messages).await?;
    info!(%dataset, %version, source = %source_uri, chunks, files = batch.files.len().max(1), buckets, size = batch.size, format,
        duration_ms = started.elapsed().as_millis() as u64, "planned version");
    Ok(Planned { dataset, version: version_owned, chunks, failed: None })
}

/// What a batch is made of, before it is registered.
struct Batch {
    spans: Vec<Span>,
    /// A folder batch's files (empty for one object).
    files: Vec<BatchFile>,
    /// The format label of every file, or `mixed`.
    format: String,
    /// One object's format, for its chunk messages.
    single_format: ChunkFormat,
    single_compression: Compression,
    estimated_users: u64,
    text_bytes: u64,
    size: u64,
    expected_records: Option<u64>,
}

/// A batch of one object.
async fn plan_single<S: ObjectSource>(deps: &PlannerDeps<S>, ev: &ObjectEvent, etag: &str, size: u64) -> Result<Batch, PlanError> {
    let layout = format::plan(&deps.source, &deps.config, &ev.bucket, &ev.key, etag, size).await?;
    Ok(Batch {
        spans: layout.ranges.iter().map(|&r| Span::from(r)).collect(),
        files: Vec::new(),
        format: shared::format::label(layout.format, layout.compression),
        single_format: layout.format,
        single_compression: layout.compression,
        estimated_users: layout.estimated_users,
        text_bytes: layout.text_bytes,
        size,
        expected_records: None,
    })
}

/// A folder batch committed by the marker `ev`: its files (from the marker,
/// or the folder's listing), each planned like an object of its own, the
/// chunks of all of them in one plan.
async fn plan_folder<S: ObjectSource>(deps: &PlannerDeps<S>, ev: &ObjectEvent, etag: &str, size: u64, folder: &str, kind: Marker) -> Result<Batch, PlanError> {
    let marker_uri = ev.source();
    let fail = |reason: String| PlanError::Folder { source_uri: marker_uri.clone(), reason };
    if size > folder::MAX_MARKER_BYTES {
        return Err(fail(format!("the marker is {size} bytes, more than the {} read", folder::MAX_MARKER_BYTES)));
    }
    let body = if size == 0 { Vec::new() } else { read_range(&deps.source, &ev.bucket, &ev.key, etag, 0, size).await?.into() };
    let (files, manifest) = match kind {
        Marker::Manifest => {
            let manifest = Manifest::parse(&body).map_err(fail)?;
            let mut files = Vec::with_capacity(manifest.files.len());
            for f in &manifest.files {
                let key = folder::key_in(folder, &f.key);
                let Listed { key, etag: actual_etag, size: actual_size } = named_file(deps, &ev.bucket, key, "the manifest", &marker_uri).await?;
                if let Some(want) = f.size.filter(|&s| s != actual_size) {
                    return Err(fail(format!("the manifest says s3://{}/{key} has {want} bytes; it has {actual_size}", ev.bucket)));
                }
                if let Some(want) = f.etag.as_deref().filter(|e| e.trim_matches('"') != actual_etag.trim_matches('"')) {
                    return Err(fail(format!("the manifest says s3://{}/{key} has ETag {want}; it has {actual_etag} (changed since the manifest was written)", ev.bucket)));
                }
                files.push(Listed { key, etag: actual_etag, size: actual_size });
            }
            (files, Some(manifest))
        }
        Marker::Success => match folder::success_files(folder, &body) {
            Some(named) => {
                let mut files = Vec::with_capacity(named.len());
                for key in named {
                    files.push(named_file(deps, &ev.bucket, key, "`_SUCCESS`", &marker_uri).await?);
                }
                (files, None)
            }
            None => (data_files(deps, &ev.bucket, folder, |_| true).await?, None),
        },
    };
    if files.is_empty() {
        return Err(fail(format!("the folder s3://{}/{folder} holds no data files", ev.bucket)));
    }
    plan_files(deps, &ev.bucket, &files, manifest.as_ref(), &marker_uri).await
}

/// The data files below `folder` (never a hidden name) that `wanted` keeps.
async fn data_files<S: ObjectSource>(deps: &PlannerDeps<S>, bucket: &str, folder: &str, wanted: impl Fn(&str) -> bool) -> Result<Vec<Listed>, PlanError> {
    let all = deps.source.list(bucket, folder).await?;
    Ok(all.into_iter().filter(|o| folder::is_data(folder, &o.key) && wanted(&o.key)).collect())
}

/// The file `key` that a marker (`who`, at `marker_uri`) names, with its ETag
/// and size; a missing one fails the batch.
async fn named_file<S: ObjectSource>(deps: &PlannerDeps<S>, bucket: &str, key: String, who: &str, marker_uri: &str) -> Result<Listed, PlanError> {
    match deps.source.head(bucket, &key).await {
        Ok((etag, size)) => Ok(Listed { key, etag, size }),
        Err(SourceError::Missing { .. }) => {
            Err(PlanError::Folder { source_uri: marker_uri.to_string(), reason: format!("{who} names s3://{bucket}/{key}, which does not exist") })
        }
        Err(e) => Err(e.into()),
    }
}

/// The files of a folder batch, each planned as it would be alone, their
/// chunks in one plan (checked against `manifest`'s format and rows, when
/// there is one; `marker_uri` names the marker in errors).
async fn plan_files<S: ObjectSource>(deps: &PlannerDeps<S>, bucket: &str, files: &[Listed], manifest: Option<&Manifest>, marker_uri: &str) -> Result<Batch, PlanError> {
    let mut batch = Batch {
        spans: Vec::new(),
        files: Vec::with_capacity(files.len()),
        format: String::new(),
        single_format: ChunkFormat::JsonLines,
        single_compression: Compression::None,
        estimated_users: 0,
        text_bytes: 0,
        size: 0,
        expected_records: manifest.and_then(|m| m.rows),
    };
    for f in files {
        let layout = match format::plan(&deps.source, &deps.config, bucket, &f.key, &f.etag, f.size).await {
            // An empty part (a Spark task with no rows, an empty input's
            // `.out`) holds nobody: the batch is its other files.
            Err(PlanError::Layout { reason: ChunkError::Empty, .. }) => continue,
            other => other?,
        };
        let i = batch.files.len();
        let label = shared::format::label(layout.format, layout.compression);
        if let Some(want) = manifest.and_then(|m| m.format.as_deref()) {
            if label != want && layout.format.as_str() != want {
                let reason = format!("the manifest says the files are {want}; s3://{bucket}/{} is {label}", f.key);
                return Err(PlanError::Folder { source_uri: marker_uri.to_string(), reason });
            }
        }
        batch.spans.extend(layout.ranges.iter().map(|&r| Span::of(i as u32, r)));
        batch.estimated_users += layout.estimated_users;
        batch.text_bytes += layout.text_bytes;
        batch.size += f.size;
        batch.format = match batch.format.as_str() {
            "" => label.clone(),
            same if same == label => label.clone(),
            _ => "mixed".to_string(),
        };
        batch.files.push(BatchFile { key: f.key.clone(), etag: f.etag.clone(), size: f.size, format: label });
    }
    if batch.files.is_empty() {
        let reason = format!("every one of the {} files is empty", files.len());
        return Err(PlanError::Folder { source_uri: marker_uri.to_string(), reason });
    }
    Ok(batch)
}

/// A version registered before: if it is still ingesting, its stored plan is
/// sent again (chunks already done count once); otherwise nothing is sent.
async fn replan<S>(deps: &PlannerDeps<S>, ds: &Dataset, existing: VersionInfo) -> Result<Planned, PlanError> {
    let (dataset, version) = (ds.name().to_string(), existing.version.clone());
    if existing.state.is_in_progress() {
        let spans = ds.plan(&version).await?;
        let messages = ChunkMessage::for_version(&dataset, &existing, &spans)
            .ok_or_else(|| PlanError::Send(format!("version {version} has a record its chunks cannot be built from")))?;
        send_chunks(&deps.sqs, &deps.config.chunks_queue_url, &messages).await?;
        info!(%dataset, %version, chunks = messages.len(), "version already planned; re-sent its stored plan");
    } else {
        info!(%dataset, %version, state = existing.state.as_str(), "version already planned");
    }
    Ok(Planned { dataset, version, chunks: existing.chunks, failed: existing.reason })
}

/// Sends chunk messages to `queue_url` in batches, retrying entries SQS
/// refused.
pub async fn send_chunks(sqs: &aws_sdk_sqs::Client, queue_url: &str, messages: &[ChunkMessage]) -> Result<(), PlanError> {
    for batch in messages.chunks(SEND_BATCH) {
        let mut pending: Vec<&ChunkMessage> = batch.iter().collect();
        for attempt in 0..3 {
            let entries = pending
                .iter()
                .map(|m| {
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("c{}", m.chunk))
                        .message_body(m.to_json())
                        .build()
                        .map_err(|e| PlanError::Send(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| PlanError::Send(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
            let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
            if failed.is_empty() {
                break;
            }
            if attempt == 2 {
                return Err(PlanError::Send(format!("{} entries kept failing: {failed:?}", failed.len())));
            }
            pending.retain(|m| failed.contains(&format!("c{}", m.chunk)));
        }
    }
    Ok(())
}
