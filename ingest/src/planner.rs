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
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use lambda_runtime::{Error, LambdaEvent};
use shared::format::parquet as parquet_format;
use shared::format::{plan_lines, sniff, ChunkError, Compression, DocScanner};
use shared::config::PlannerConfig;
use shared::aws::event::{dataset_of, parse_notification, Notification, ObjectEvent};
use shared::db::keys::bucket_count;
use shared::aws::messages::ChunkMessage;
use shared::format::ChunkFormat;
use shared::db::protocol::{Dataset, NewVersion, Registered, VersionInfo};
use shared::db::{memory, rejected};
use shared::db::store::Redis;
use shared::version_id::{self, VersionSource};
use tracing::{error, info, warn};

use crate::error::PlanError;
use crate::source::ObjectSource;

/// Bytes read from the head of an object to decide its layout and estimate
/// its record size.
const SNIFF_BYTES: u64 = 256 * 1024;
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
    };
    let mut out = Vec::new();
    for ev in events.iter().filter(|e| e.is_object_created()) {
        out.push(plan_object(deps, ev).await?);
    }
    Ok(out)
}

/// Plans one object: registers its version with its plan and sends its chunk
/// messages. An event delivered again while its version is still ingesting
/// re-sends the stored plan, never a new one.
/// An object that cannot be planned at all (no valid dataset, no version id)
/// is recorded as a rejected upload, so `status` and `fsctl upload --wait`
/// can say why at once.
pub async fn plan_object<S: ObjectSource>(deps: &PlannerDeps<S>, ev: &ObjectEvent) -> Result<Planned, PlanError> {
    let result = plan(deps, ev).await;
    if let Err(e) = &result {
        if e.is_permanent() {
            rejected::record(&deps.redis, &ev.source(), &ev.etag, &e.to_string()).await?;
        }
    }
    result
}

async fn plan<S: ObjectSource>(deps: &PlannerDeps<S>, ev: &ObjectEvent) -> Result<Planned, PlanError> {
    let started = Instant::now();
    let source_uri = ev.source();
    let dataset = dataset_of(&ev.key, &deps.config.default_dataset).to_string();
    let ds = Dataset::new(&deps.redis, &dataset).map_err(|reason| PlanError::Dataset { key: ev.key.clone(), dataset: dataset.clone(), reason })?;
    // An event without an ETag or a size (some sources omit them) is
    // completed by a HEAD, so a non-empty object is never taken for empty.
    let (etag, size) = match (ev.etag.is_empty(), ev.size) {
        (false, Some(size)) => (ev.etag.clone(), size),
        _ => deps.source.head(&ev.bucket, &ev.key).await?,
    };
    let version = version_id::derive(&VersionSource {
        event_time: &ev.event_time,
        sequencer: ev.sequencer.as_deref(),
        bucket: &ev.bucket,
        key: &ev.key,
        etag: &etag,
    })
    .map_err(|reason| PlanError::Version { source_uri: source_uri.clone(), reason })?;

    if let Some(existing) = ds.version_info(&version).await? {
        return replan(deps, &ds, existing).await;
    }

    let layout = match plan_layout(&deps.source, &deps.config, ev, &etag, size).await {
        Ok(l) => l,
        Err(PlanError::Layout { source_uri, reason }) => {
            let why = format!("{source_uri}: {reason}");
            let nv = NewVersion { version: &version, ranges: &[], buckets: 1, source: &source_uri, etag: &etag, size, format: "unknown", est_bytes: 0, hold: None };
            ds.register(&nv).await?;
            ds.fail(&version, &why).await?;
            error!(%dataset, %version, reason = %why, "batch cannot be planned; version failed");
            return Ok(Planned { dataset, version, chunks: 0, failed: Some(why) });
        }
        Err(e) => return Err(e),
    };
    let chunks = layout.ranges.len() as u32;
    let buckets = bucket_count(layout.estimated_users, deps.config.users_per_bucket);
    let label = shared::format::label(layout.format, layout.compression);
    let format = label.as_str();
    let guard = memory::check(&ds, layout.estimated_users, layout.text_bytes).await?;
    let hold = guard.hold.as_deref();
    let nv = NewVersion { version: &version, ranges: &layout.ranges, buckets, source: &source_uri, etag: &etag, size, format, est_bytes: guard.estimate, hold };
    if let Registered::Existing(_) = ds.register(&nv).await? {
        // Another delivery of the event registered it first: its plan counts.
        let existing = ds.version_info(&version).await?.ok_or_else(|| PlanError::Send(format!("version {version} vanished while planned")))?;
        return replan(deps, &ds, existing).await;
    }
    if let Some(reason) = hold {
        warn!(%dataset, %version, source = %source_uri, %reason, "version held before ingest: it would not fit in Redis");
        return Ok(Planned { dataset, version, chunks, failed: None });
    }

    let messages = ChunkMessage {
        dataset: dataset.clone(),
        version: version.clone(),
        bucket: ev.bucket.clone(),
        key: ev.key.clone(),
        etag: etag.clone(),
        size,
        format: layout.format,
        compression: layout.compression,
        chunk: 0,
        chunks,
        start: 0,
        end: 0,
        buckets,
    }
    .per_range(&layout.ranges);
    send_chunks(&deps.sqs, &deps.config.chunks_queue_url, &messages).await?;
    info!(%dataset, %version, source = %source_uri, chunks, buckets, size, format,
        duration_ms = started.elapsed().as_millis() as u64, "planned version");
    Ok(Planned { dataset, version, chunks, failed: None })
}

/// A version registered before: if it is still ingesting, its stored plan is
/// sent again (chunks already done count once); otherwise nothing is sent.
async fn replan<S>(deps: &PlannerDeps<S>, ds: &Dataset, existing: VersionInfo) -> Result<Planned, PlanError> {
    let (dataset, version) = (ds.name().to_string(), existing.version.clone());
    if existing.state.is_in_progress() {
        let ranges = ds.plan(&version).await?;
        let messages = ChunkMessage::for_version(&dataset, &existing, &ranges)
            .ok_or_else(|| PlanError::Send(format!("version {version} has a record its chunks cannot be built from")))?;
        send_chunks(&deps.sqs, &deps.config.chunks_queue_url, &messages).await?;
        info!(%dataset, %version, chunks = messages.len(), "version already planned; re-sent its stored plan");
    } else {
        info!(%dataset, %version, state = existing.state.as_str(), "version already planned");
    }
    Ok(Planned { dataset, version, chunks: existing.chunks, failed: existing.reason })
}

/// How an object is cut into chunks.
pub struct Layout {
    pub format: ChunkFormat,
    pub compression: Compression,
    /// Record-aligned byte ranges, one per chunk (a compressed object's one
    /// range is in decompressed bytes).
    pub ranges: Vec<(u64, u64)>,
    /// Records in the object: counted in a document, estimated in JSON Lines.
    pub estimated_users: u64,
    /// Bytes of text: the object's size, or an estimate of it decompressed.
    pub text_bytes: u64,
}

/// Sniffs the object's format and cuts it into chunks of about
/// `config.chunk_bytes` (a JSON document by one streaming scan). A
/// compressed object is one chunk; its head is decompressed to sniff it.
pub async fn plan_layout<S: ObjectSource>(source: &S, config: &PlannerConfig, ev: &ObjectEvent, etag: &str, size: u64) -> Result<Layout, PlanError> {
    let layout_err = |reason| PlanError::Layout { source_uri: ev.source(), reason };
    if size == 0 {
        return Err(layout_err(ChunkError::Empty));
    }
    let raw = read_all(source, ev, etag, 0, Some(SNIFF_BYTES.min(size))).await?;
    if raw.starts_with(parquet_format::MAGIC) {
        return plan_parquet(source, config, ev, etag, size).await;
    }
    let compression = Compression::detect(&raw);
    let whole = raw.len() as u64 >= size;
    let head = match compression {
        Compression::None => raw,
        c => c.head(&raw, whole).await.map_err(|reason| layout_err(ChunkError::Compressed(reason)))?,
    };
    // Text bytes per object byte, from the head (1 when not compressed).
    let text_bytes = if whole { head.len() as u64 } else { (size as f64 * head.len() as f64 / SNIFF_BYTES.min(size) as f64) as u64 };
    let format = sniff(&head, &config.user_field).map_err(layout_err)?;
    let target = config.chunk_bytes;
    match format {
        ChunkFormat::JsonLines | ChunkFormat::Csv => {
            let lines = head.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
            let estimated_users = if whole { lines } else { text_bytes * lines / head.len().max(1) as u64 };
            let ranges = if compression.is_none() { plan_lines(size, target) } else { vec![(0, u64::MAX)] };
            Ok(Layout { format, compression, ranges, estimated_users, text_bytes })
        }
        ChunkFormat::Parquet => Err(layout_err(ChunkError::Parquet(format!(
            "a {}-compressed Parquet file cannot be read by row group: upload the Parquet file itself (its pages are compressed already)",
            compression.as_str()
        )))),
        ChunkFormat::JsonElements => {
            // A compressed document is scanned decompressed, as one chunk.
            let target = if compression.is_none() { target } else { u64::MAX };
            let mut scanner = DocScanner::new(target);
            let stream = source.read(&ev.bucket, &ev.key, etag, 0, None).await?;
            let mut text = compression.decoder(crate::source::reader(stream));
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = text.read(&mut buf).await.map_err(|e| match crate::source::source_error(e) {
                    Ok(source) => PlanError::Source(source),
                    Err(e) => layout_err(ChunkError::Compressed(compression.corrupt(&e))),
                })?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                scanner.feed(&buf[..n]);
            }
            let plan = scanner.finish().map_err(layout_err)?;
            if plan.elements == 0 {
                return Err(layout_err(ChunkError::Empty));
            }
            Ok(Layout { format, compression, ranges: plan.chunks, estimated_users: plan.elements, text_bytes: total })
        }
    }
}

/// A Parquet file, planned from its footer alone: one chunk per row group,
/// or per run of small ones near the chunk target. Its columns are checked
/// by ingest, which knows the field names.
async fn plan_parquet<S: ObjectSource>(source: &S, config: &PlannerConfig, ev: &ObjectEvent, etag: &str, size: u64) -> Result<Layout, PlanError> {
    let source_uri = ev.source();
    let meta = crate::parquet::footer(source, &ev.bucket, &ev.key, etag, size).await.map_err(|e| e.into_plan(&source_uri))?;
    parquet_format::arrow_metadata(meta.clone())
        .map_err(|reason| PlanError::Layout { source_uri: source_uri.clone(), reason: ChunkError::Parquet(reason) })?;
    let (rows, text_bytes) = parquet_format::rows_and_bytes(&meta);
    if rows == 0 {
        return Err(PlanError::Layout { source_uri, reason: ChunkError::Empty });
    }
    let ranges = parquet_format::plan(&meta, config.chunk_bytes);
    Ok(Layout { format: ChunkFormat::Parquet, compression: Compression::None, ranges, estimated_users: rows, text_bytes })
}

async fn read_all<S: ObjectSource>(source: &S, ev: &ObjectEvent, etag: &str, from: u64, to: Option<u64>) -> Result<Vec<u8>, PlanError> {
    let mut stream = source.read(&ev.bucket, &ev.key, etag, from, to).await?;
    let mut out = Vec::new();
    while let Some(bytes) = stream.next().await {
        out.extend_from_slice(&bytes?);
    }
    Ok(out)
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
