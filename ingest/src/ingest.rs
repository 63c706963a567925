//! The ingest Lambda: one chunk message in, the chunk's users in Redis.
//!
//! Reads the chunk's byte range as a stream pinned to the planned ETag,
//! parses each record, and writes users into the version's bucket hashes in
//! pipelined rounds (one HSET per bucket, one pipeline per Redis primary).
//! Only after every write of the chunk is acknowledged does it mark the chunk
//! done, through the version protocol, which flips the pointer when this was
//! the last chunk.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use bytes::Bytes;
use futures::StreamExt;
use lambda_runtime::{Error, LambdaEvent};
use redis::cluster_routing::Slot;
use redis::Cmd;
use shared::format::csv::CsvLayout;
use shared::format::parquet::{self as parquet_format, ArrayRef, ParquetLayout};
use shared::format::{ElementCursor, ElementStop, Found, LineCursor};
use shared::config::{BadRecords, IngestConfig};
use shared::db::keys::{bucket_of, DatasetKeys};
use tokio::task::JoinSet;
use serde_json::json;
use shared::aws::messages::ChunkMessage;
use shared::format::ChunkFormat;
use shared::metrics::{Metrics, Unit};
use shared::db::protocol::{self, ChunkDone, Dataset, Span, State, Step, VersionInfo};
use shared::format::record::{Encoder, RecordError};
use shared::db::store::Redis;
use shared::version_id::is_version_id;
use tracing::{error, info, warn};

use crate::error::{At, IngestError};
use crate::source::ObjectSource;

/// Chunk messages of one invocation processed at once.
const MESSAGE_CONCURRENCY: usize = 4;

/// What ingest needs, built once per process.
pub struct IngestDeps<S> {
    pub config: IngestConfig,
    pub redis: Redis,
    pub source: S,
}

/// What ingesting one chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkReport {
    /// The chunk's users were written and the chunk marked done; `step` tells
    /// what that led to (the version's fate when this chunk completed it).
    Done { users: u64, bad: u64, step: Step },
    /// Nothing to do: the version completed, failed or is gone.
    Skipped { state: Option<State> },
    /// The chunk holds bad input: its version was failed with this reason.
    VersionFailed { reason: String },
}

/// Lambda handler for the chunks queue.
pub async fn handle<S: ObjectSource>(deps: &IngestDeps<S>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let results: Vec<(String, Result<ChunkReport, IngestError>)> = futures::stream::iter(event.payload.records)
        .map(|m| async move {
            let id = m.message_id.unwrap_or_default();
            let result = match ChunkMessage::from_json(m.body.as_deref().unwrap_or("")) {
                Ok(chunk) => ingest_chunk(deps, &chunk).await,
                Err(e) => Err(IngestError::Message(e)),
            };
            (id, result)
        })
        .buffer_unordered(MESSAGE_CONCURRENCY)
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for (id, result) in results {
        match result {
            Ok(_) => {}
            Err(e) if e.is_permanent() => error!(message_id = %id, error = %e, "dropping message that cannot be ingested"),
            Err(e) => {
                warn!(message_id = %id, error = %e, "chunk failed; it will be retried");
                response.add_failure(id);
            }
        }
    }
    Ok(response)
}

/// The message's chunk as its version's record and plan have it: an error
/// naming both when they differ (a message from another plan, or forged).
async fn planned_chunk(ds: &Dataset, msg: &ChunkMessage, info: &VersionInfo) -> Result<ChunkMessage, IngestError> {
    let planned = ds.planned_span(&msg.version, msg.chunk).await?;
    let label = shared::format::label(msg.format, msg.compression);
    let object = format!("s3://{}/{}", msg.bucket, msg.key);
    // The object the plan says the span reads: the record's own, or one of
    // a folder batch's files.
    let (planned_object, etag, format) = match (info.files.is_empty(), planned.and_then(|s| info.files.get(s.file as usize))) {
        (true, _) => (info.source.clone(), info.etag.as_str(), info.format.as_str()),
        (false, Some(f)) => {
            let bucket = info.source.strip_prefix("s3://").and_then(|s| s.split_once('/')).map_or("", |(b, _)| b);
            (format!("s3://{bucket}/{}", f.key), f.etag.as_str(), f.format.as_str())
        }
        (false, None) => (String::new(), "", ""),
    };
    let mine = (msg.chunks, Some(msg.span()), msg.buckets, object.as_str(), msg.etag.as_str(), label.as_str());
    let theirs = (info.chunks, planned, info.buckets, planned_object.as_str(), etag, format);
    if mine == theirs {
        // The record's bucket count is the one the pointer will carry.
        return Ok(ChunkMessage { buckets: info.buckets, ..msg.clone() });
    }
    let show = |(chunks, span, buckets, object, etag, format): (u32, Option<Span>, u32, &str, &str, &str)| {
        let span = span.map_or("no such chunk".to_string(), |s| s.to_string());
        format!("{span} of {chunks} chunks, {buckets} buckets, {object} ETag {etag}, {format}")
    };
    Err(IngestError::NotPlanned { version: msg.version.clone(), chunk: msg.chunk, message: show(mine), planned: show(theirs) })
}

/// Ingests one chunk. Permanent problems with the batch fail the version and
/// return `Ok`; errors worth a retry return `Err`.
pub async fn ingest_chunk<S: ObjectSource>(deps: &IngestDeps<S>, msg: &ChunkMessage) -> Result<ChunkReport, IngestError> {
    let started = Instant::now();
    let ds = Dataset::new(&deps.redis, &msg.dataset).map_err(|_| IngestError::Dataset(msg.dataset.clone()))?;
    if !is_version_id(&msg.version) {
        return Err(IngestError::VersionId(msg.version.clone()));
    }
    let info = match ds.version_info(&msg.version).await? {
        Some(info) if info.state.is_in_progress() => info,
        other => {
            let state = other.map(|i| i.state);
            info!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, state = ?state, "chunk skipped: version not ingesting");
            return Ok(ChunkReport::Skipped { state });
        }
    };
    let msg = &planned_chunk(&ds, msg, &info).await?;
    let replication = deps.config.replication;
    let (users, bad, written) = if info.state == State::Validating {
        // Every chunk is done; this is a redelivery of the one that completed
        // the version but did not get to finalize it.
        (0, 0, HashMap::new())
    } else {
        match write_chunk(deps, ds.keys(), msg).await {
            Ok(counts) => counts,
            Err(e) if e.is_permanent() => {
                let reason = e.to_string();
                ds.fail(&msg.version, &reason).await?;
                // Other chunks still writing clean up after themselves when
                // they find the version failed.
                ds.delete_data(&msg.version, msg.buckets).await?;
                error!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, %reason, "version failed");
                return Ok(ChunkReport::VersionFailed { reason });
            }
            Err(e) => return Err(e),
        }
    };
    if replication.acks > 0 {
        let acked = deps.redis.wait_for_replicas(replication.acks, replication.timeout).await?;
        if acked < replication.acks {
            return Err(IngestError::Replication { chunk: msg.chunk, acked, wanted: replication.acks });
        }
        // WAIT counts acknowledgements on the connection it runs on. After a
        // failover that is a new connection to the promoted replica, which
        // may lack writes the old primary acknowledged and never passed on:
        // so read the chunk's users back from the primaries before it counts.
        let missing = missing_users(&deps.redis, ds.keys(), &msg.version, &written).await?;
        if missing > 0 {
            return Err(IngestError::LostWrites { chunk: msg.chunk, missing });
        }
    }
    let done = ChunkDone { version: &msg.version, chunk: msg.chunk, span: msg.span(), buckets: msg.buckets, users, bad };
    let step = ds.chunk_written(&done, &deps.config.validation).await?;
    match &step {
        Step::Flipped { users } => info!(dataset = %msg.dataset, version = %msg.version, users, "version live"),
        Step::Held(reason) => warn!(dataset = %msg.dataset, version = %msg.version, %reason, "version held"),
        Step::Superseded(reason) => info!(dataset = %msg.dataset, version = %msg.version, %reason, "version superseded"),
        Step::Failed(reason) => error!(dataset = %msg.dataset, version = %msg.version, %reason, "version failed"),
        Step::NotPlanned { planned, chunks } => {
            // The record's plan changed between the check and now: only a
            // forged or corrupted record does that.
            return Err(IngestError::NotPlanned {
                version: msg.version.clone(),
                chunk: msg.chunk,
                message: format!("bytes {}-{}", msg.start, msg.end),
                planned: format!("{planned:?} of {chunks} chunks"),
            });
        }
        Step::Pending { .. } | Step::Settled(_) => {}
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let metrics = Metrics::new(&deps.config.metrics_namespace);
    let props = [("version", json!(msg.version)), ("chunk", json!(msg.chunk))];
    metrics.emit(
        &msg.dataset,
        &[("RecordsIngested", users as f64, Unit::Count), ("BadRecords", bad as f64, Unit::Count), ("ChunkMillis", duration_ms as f64, Unit::Milliseconds)],
        &props,
    );
    if matches!(step, Step::Flipped { .. }) {
        let upload_to_live = shared::version_id::event_ms(&msg.version).map(|t| protocol::now_ms().saturating_sub(t) as f64 / 1000.0);
        metrics.emit(&msg.dataset, &[("Flips", 1.0, Unit::Count), ("UploadToLiveSeconds", upload_to_live.unwrap_or(0.0), Unit::Seconds)], &props);
    }
    info!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, chunks = msg.chunks, users, bad,
        duration_ms, step = ?step, "chunk done");
    Ok(ChunkReport::Done { users, bad, step })
}

/// Users of `written` (bucket → user ids) that their bucket does not hold.
async fn missing_users(redis: &Redis, keys: &DatasetKeys, version: &str, written: &HashMap<u32, Vec<String>>) -> Result<u64, IngestError> {
    let checks: Vec<(String, &Vec<String>)> = written.iter().map(|(b, users)| (keys.bucket(version, *b), users)).collect();
    let mut missing = 0;
    for group in checks.chunks(64) {
        let found = futures::future::try_join_all(group.iter().map(|(key, users)| redis.count_fields(key, users))).await?;
        missing += group.iter().zip(found).map(|((_, users), n)| (users.len() as u64).saturating_sub(n)).sum::<u64>();
    }
    Ok(missing)
}

/// Reads, parses and writes the chunk; returns the users written, the bad
/// records skipped (lenient mode), and, when replica acknowledgements are
/// required, which users went to which bucket.
async fn write_chunk<S: ObjectSource>(
    deps: &IngestDeps<S>,
    keys: &DatasetKeys,
    msg: &ChunkMessage,
) -> Result<(u64, u64, HashMap<u32, Vec<String>>), IngestError> {
    let writer = scan_chunk(&deps.config, &deps.source, keys, msg, Sink::Redis(&deps.redis)).await?;
    Ok((writer.users, writer.bad, writer.written))
}

/// The commands ingest sends for the chunk `msg`, round by round, built by
/// the same code but not sent: for comparing ingest with Redis's own mass
/// insertion of exactly the same writes (feature `testing`).
#[cfg(feature = "testing")]
pub async fn chunk_rounds<S: ObjectSource>(config: &IngestConfig, source: &S, msg: &ChunkMessage, cluster: bool) -> Result<Vec<Vec<Cmd>>, IngestError> {
    let keys = DatasetKeys::new(&msg.dataset).map_err(|_| IngestError::Dataset(msg.dataset.clone()))?;
    let writer = scan_chunk(config, source, &keys, msg, Sink::Collect { cluster }).await?;
    Ok(writer.collected.into_iter().map(|round| round.into_iter().map(|(_, cmd)| cmd).collect()).collect())
}

/// Where sealed rounds go.
#[derive(Clone, Copy)]
enum Sink<'r> {
    Redis(&'r Redis),
    /// Kept in [`Writer::collected`], with slots as a cluster would need them or not.
    #[cfg(feature = "testing")]
    Collect { cluster: bool },
}

/// Reads and parses the chunk, sending each round to `sink` as it fills.
async fn scan_chunk<'a, S: ObjectSource>(
    config: &'a IngestConfig,
    source: &S,
    keys: &'a DatasetKeys,
    msg: &'a ChunkMessage,
    sink: Sink<'a>,
) -> Result<Writer<'a>, IngestError> {
    let mut writer = Writer::new(keys, msg, config, sink);
    match fill(&mut writer, config, source, msg).await {
        Ok(()) => Ok(writer),
        Err(e) => {
            // Rounds still in flight stop here: none of them writes after the
            // chunk gave up (and perhaps failed its version).
            writer.in_flight.shutdown().await;
            Err(e)
        }
    }
}

/// Streams the chunk's records into `writer` and waits for every write.
async fn fill<S: ObjectSource>(writer: &mut Writer<'_>, config: &IngestConfig, source: &S, msg: &ChunkMessage) -> Result<(), IngestError> {
    let max_line = config.validation.max_record_bytes as usize;
    match msg.format {
        ChunkFormat::JsonLines | ChunkFormat::Csv => {
            let csv = match msg.format {
                ChunkFormat::Csv => Some(csv_layout(config, source, msg).await?),
                _ => None,
            };
            let csv = csv.as_ref();
            let mut cursor = LineCursor::new(msg.start, msg.end, max_line);
            let mut stream = text(source, msg, cursor.fetch_from(), None).await?;
            while let Some(bytes) = stream.next().await {
                cursor.push(&bytes?, |offset, line| writer.add_line(offset, line, csv))?;
                writer.send().await?;
                if cursor.is_done() {
                    break;
                }
            }
            cursor.finish(|offset, line| writer.add_line(offset, line, csv))?;
        }
        ChunkFormat::Parquet => {
            let source_uri = writer.source_uri();
            let meta = crate::parquet::footer(source, &msg.bucket, &msg.key, &msg.etag, msg.size).await.map_err(|e| e.into_ingest(&source_uri))?;
            let arrow = parquet_format::arrow_metadata(meta).map_err(|reason| IngestError::Parquet { source_uri: source_uri.clone(), reason })?;
            let layout = ParquetLayout::from_schema(arrow.schema(), &config.fields).map_err(|reason| IngestError::Header { source_uri: source_uri.clone(), reason })?;
            let groups = arrow.metadata().num_row_groups() as u64;
            if msg.end > groups {
                let reason = format!("chunk {} names row groups {}..{}, and the file has {groups}", msg.chunk, msg.start, msg.end);
                return Err(IngestError::Parquet { source_uri, reason });
            }
            for group in msg.start..msg.end {
                let rows = crate::parquet::row_group(source, msg, &arrow, group as usize).await.map_err(|e| e.into_ingest(&source_uri))?;
                let mut number = 0u64;
                for batch in rows {
                    let corrupt = |e: String| IngestError::Parquet { source_uri: source_uri.clone(), reason: format!("row group {group}: {e}") };
                    let batch = batch.map_err(|e| corrupt(e.to_string()))?;
                    let columns = layout.prepare(&batch).map_err(corrupt)?;
                    for row in 0..batch.num_rows() {
                        writer.add_row(&layout, &columns, row, group, number)?;
                        number += 1;
                    }
                    writer.send().await?;
                }
            }
        }
        ChunkFormat::JsonElements => {
            let mut cursor = ElementCursor::new(msg.start, max_line);
            let mut stream = text(source, msg, msg.start, Some(msg.end)).await?;
            while let Some(bytes) = stream.next().await {
                cursor.push(&bytes?, |offset, element| writer.add_found(offset, element)).map_err(|stop| writer.stopped(stop))?;
                writer.send().await?;
            }
            cursor.finish(|offset, element| writer.add_found(offset, element)).map_err(|stop| writer.stopped(stop))?;
        }
    }
    writer.seal();
    writer.send().await?;
    writer.finish().await
}

/// The column layout of a CSV batch, from its header: the object's first line.
async fn csv_layout<S: ObjectSource>(config: &IngestConfig, source: &S, msg: &ChunkMessage) -> Result<CsvLayout, IngestError> {
    let max = config.validation.max_record_bytes;
    let mut stream = text(source, msg, 0, Some(max + 1)).await?;
    let mut head = Vec::new();
    while let Some(bytes) = stream.next().await {
        head.extend_from_slice(&bytes?);
        if memchr::memchr(b'\n', &head).is_some() {
            break;
        }
    }
    let source_uri = format!("s3://{}/{}", msg.bucket, msg.key);
    let Some(end) = memchr::memchr(b'\n', &head) else {
        return Err(IngestError::Header { source_uri, reason: format!("the CSV header is not one line of at most {max} bytes") });
    };
    let line = &head[..end];
    CsvLayout::from_header(line.strip_suffix(b"\r").unwrap_or(line), &config.fields).map_err(|reason| IngestError::Header { source_uri, reason })
}

/// Text of a chunk, as it streams in.
type TextStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, IngestError>> + Send>>;

/// Bytes `[from, to)` (`to = None`: to the end) of the chunk's text: ranged
/// reads of the object itself, or, for a compressed object, its whole
/// stream decompressed, with the bytes outside the range dropped.
async fn text<S: ObjectSource>(source: &S, msg: &ChunkMessage, from: u64, to: Option<u64>) -> Result<TextStream, IngestError> {
    use futures::TryStreamExt;
    if msg.compression.is_none() {
        return Ok(Box::pin(source.read(&msg.bucket, &msg.key, &msg.etag, from, to).await?.map_err(IngestError::from)));
    }
    let raw = source.read(&msg.bucket, &msg.key, &msg.etag, 0, None).await?;
    let decoder = msg.compression.decoder(crate::source::reader(raw));
    let (compression, source_uri, to) = (msg.compression, format!("s3://{}/{}", msg.bucket, msg.key), to.unwrap_or(u64::MAX));
    let state = (decoder, 0u64, vec![0u8; TEXT_READ]);
    Ok(Box::pin(futures::stream::try_unfold(state, move |(mut decoder, mut at, mut buf)| {
        let source_uri = source_uri.clone();
        async move {
            use tokio::io::AsyncReadExt;
            loop {
                if at >= to {
                    return Ok(None);
                }
                let n = decoder.read(&mut buf).await.map_err(|e| match crate::source::source_error(e) {
                    Ok(source) => IngestError::Source(source),
                    Err(e) => IngestError::Decompress { source_uri: source_uri.clone(), reason: compression.corrupt(&e) },
                })?;
                if n == 0 {
                    return Ok(None);
                }
                let (start, end) = (at, at + n as u64);
                at = end;
                if end <= from {
                    continue;
                }
                let piece = Bytes::copy_from_slice(&buf[(from.saturating_sub(start)) as usize..(end.min(to) - start) as usize]);
                return Ok(Some((piece, (decoder, at, buf))));
            }
        }
    })))
}

/// Decompressed bytes read at once from a compressed object.
const TEXT_READ: usize = 1 << 20;

/// A round is sent once it holds this many bytes, however few users: it
/// bounds memory when records are large.
const ROUND_MAX_BYTES: usize = 16 << 20;

/// Rounds of one chunk written at once while the next is parsed. With two,
/// Redis has the next round queued when it finishes one, instead of waiting
/// while the parser catches up.
const ROUNDS_IN_FLIGHT: usize = 2;

/// Bad records logged per chunk in lenient mode (the rest are only counted).
const BAD_LOGGED: u64 = 5;

/// Collects users into rounds, seals each round into per-bucket HSET
/// commands when it is full, and sends sealed rounds to its sink.
struct Writer<'a> {
    keys: &'a DatasetKeys,
    msg: &'a ChunkMessage,
    config: &'a IngestConfig,
    sink: Sink<'a>,
    encoder: Encoder,
    round: Round,
    /// Full rounds, as commands with their keys' slots, not sent yet.
    sealed: Vec<Vec<(Slot, Cmd)>>,
    /// Rounds a [`Sink::Collect`] writer kept.
    #[cfg(feature = "testing")]
    collected: Vec<Vec<(Slot, Cmd)>>,
    /// A CSV or Parquet row as its JSON record, reused from row to row.
    scratch: Vec<u8>,
    /// A Parquet row's user id, reused from row to row.
    scratch_id: String,
    /// `"<output field>"`, searched for in each text record.
    output_needle: Option<Vec<u8>>,
    users: u64,
    bad: u64,
    seen: SeenUsers,
    /// Users by bucket, kept only to verify durability (replica acks on).
    written: HashMap<u32, Vec<String>>,
    /// Earlier rounds' writes, still in flight while the next round is
    /// parsed (at most [`ROUNDS_IN_FLIGHT`]). Dropping the set aborts them.
    in_flight: JoinSet<redis::RedisResult<()>>,
}

/// One round of users, packed: each user's stored value and id sit in one
/// buffer, so adding a user allocates nothing; the per-bucket commands are
/// built once, when the round is sent.
#[derive(Default)]
struct Round {
    bytes: Vec<u8>,
    /// (bucket, start of the value in `bytes`, value length, id length);
    /// the id follows the value.
    users: Vec<(u32, usize, usize, usize)>,
}

impl Round {
    /// Records a user whose value was appended to `bytes` from `start` on.
    fn push(&mut self, bucket: u32, start: usize, id: &str) {
        let value_len = self.bytes.len() - start;
        self.bytes.extend_from_slice(id.as_bytes());
        self.users.push((bucket, start, value_len, id.len()));
    }

    /// One HSET per bucket (with its key's slot); empties the round.
    fn commands(&mut self, keys: &DatasetKeys, version: &str, cluster: bool) -> Vec<(Slot, Cmd)> {
        self.users.sort_unstable_by_key(|u| u.0);
        let mut cmds = Vec::new();
        // Each key is the version's prefix and the bucket number.
        let mut key = keys.bucket_prefix(version).into_bytes();
        let prefix = key.len();
        let mut number = itoa::Buffer::new();
        for group in self.users.chunk_by(|a, b| a.0 == b.0) {
            key.truncate(prefix);
            key.extend_from_slice(number.format(group[0].0).as_bytes());
            let data: usize = group.iter().map(|u| u.2 + u.3).sum();
            let mut cmd = Cmd::with_capacity(2 + 2 * group.len(), 4 + key.len() + data);
            cmd.arg("HSET").arg(&key[..]);
            for &(_, start, value_len, id_len) in group {
                let mid = start + value_len;
                cmd.arg(&self.bytes[mid..mid + id_len]).arg(&self.bytes[start..mid]);
            }
            cmds.push((shared::db::store::slot_of(cluster, &key), cmd));
        }
        self.bytes.clear();
        self.users.clear();
        cmds
    }
}

/// Users a chunk remembers to catch a duplicate where it is (about 16 MiB
/// of integer ids). A chunk of more (a compressed file is one chunk) checks
/// the rest against these only: a duplicate among them is still caught when
/// the version completes, where stored users are counted against written ones.
const SEEN_MAX: usize = 1 << 20;

/// The user ids of a chunk so far (up to [`SEEN_MAX`]), to catch a user
/// written twice. Integer ids, the common case, are kept as numbers; others
/// as strings.
struct SeenUsers {
    numbers: HashSet<u64, foldhash::fast::RandomState>,
    strings: HashSet<Box<str>, foldhash::fast::RandomState>,
}

impl SeenUsers {
    fn with_capacity(n: usize) -> Self {
        SeenUsers { numbers: HashSet::with_capacity_and_hasher(n, Default::default()), strings: HashSet::default() }
    }

    /// Whether `id` (canonical) is new; records it.
    fn insert(&mut self, id: &str) -> bool {
        // Only the one decimal spelling of a number maps to it: "007" stays a string.
        // Up to 19 digits always fit a u64.
        let canonical_number = !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
        let full = self.numbers.len() + self.strings.len() >= SEEN_MAX;
        match canonical_number.then(|| id.parse::<u64>()) {
            Some(Ok(n)) if full => !self.numbers.contains(&n),
            Some(Ok(n)) => self.numbers.insert(n),
            _ if full => !self.strings.contains(id),
            _ => !self.strings.contains(id) && self.strings.insert(id.into()),
        }
    }
}

impl<'a> Writer<'a> {
    fn new(keys: &'a DatasetKeys, msg: &'a ChunkMessage, config: &'a IngestConfig, sink: Sink<'a>) -> Self {
        Writer {
            keys,
            msg,
            config,
            sink,
            encoder: Encoder::new(&config.fields, config.validation.max_items as usize),
            round: Round::default(),
            sealed: Vec::new(),
            #[cfg(feature = "testing")]
            collected: Vec::new(),
            scratch: Vec::new(),
            scratch_id: String::new(),
            output_needle: Some(&config.fields.output).filter(|f| !f.is_empty()).map(|f| format!("\"{f}\"").into_bytes()),
            users: 0,
            bad: 0,
            // Records are rarely under 100 bytes: this seldom needs to grow.
            seen: SeenUsers::with_capacity((msg.end.saturating_sub(msg.start) / 100).min(SEEN_MAX as u64) as usize),
            written: HashMap::new(),
            in_flight: JoinSet::new(),
        }
    }

    fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.msg.bucket, self.msg.key)
    }

    /// A bad record: fails the chunk in strict mode, is counted in lenient mode.
    fn bad(&mut self, at: At, reason: RecordError) -> Result<(), IngestError> {
        let err = IngestError::Record { source_uri: self.source_uri(), chunk: self.msg.chunk, at, reason };
        match self.config.validation.bad_records {
            BadRecords::Strict => Err(err),
            BadRecords::Lenient { .. } => {
                self.bad += 1;
                if self.bad <= BAD_LOGGED {
                    warn!(dataset = %self.msg.dataset, version = %self.msg.version, error = %err, "bad record skipped");
                }
                Ok(())
            }
        }
    }

    /// A record a cursor found.
    fn add_found(&mut self, offset: u64, found: Found<'_>) -> Result<(), IngestError> {
        match found {
            Found::TooLong => self.bad(At::Byte(offset), RecordError::TooLarge(self.config.validation.max_record_bytes)),
            Found::Record(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => self.add(At::Byte(offset), text),
                Err(_) => self.bad(At::Byte(offset), RecordError::NotUtf8),
            },
        }
    }

    /// A line of JSON Lines, or of CSV under the header `csv` (the header
    /// itself, the object's first line, is skipped).
    fn add_line(&mut self, offset: u64, found: Found<'_>, csv: Option<&CsvLayout>) -> Result<(), IngestError> {
        let (Some(layout), Found::Record(row)) = (csv, &found) else { return self.add_found(offset, found) };
        if offset == 0 {
            return Ok(());
        }
        let mut json = std::mem::take(&mut self.scratch);
        json.clear();
        let result = match layout.to_json(row, &self.config.fields, &mut json) {
            Ok(()) => self.add_found(offset, Found::Record(&json)),
            Err(reason) => self.bad(At::Byte(offset), RecordError::Csv(reason)),
        };
        self.scratch = json;
        result
    }

    /// Row `row` of prepared Parquet `columns`, the `number`th row of row
    /// group `group`.
    fn add_row(&mut self, layout: &ParquetLayout, columns: &[ArrayRef], row: usize, group: u64, number: u64) -> Result<(), IngestError> {
        let at = At::Row { group, row: number };
        if layout.direct {
            let start = self.round.bytes.len();
            let mut id = std::mem::take(&mut self.scratch_id);
            id.clear();
            let result = match layout.encode(columns, row, self.config.validation.max_items as usize, &mut self.round.bytes, &mut id) {
                Ok(()) => self.accept(at, start, &id),
                Err(reason) => {
                    self.round.bytes.truncate(start);
                    self.bad(at, reason)
                }
            };
            self.scratch_id = id;
            return result;
        }
        let mut json = std::mem::take(&mut self.scratch);
        json.clear();
        let result = match layout.to_json(columns, row, &mut json) {
            // Written by to_json from UTF-8 strings and ASCII.
            Ok(()) => match std::str::from_utf8(&json) {
                Ok(text) => self.add(at, text),
                Err(_) => self.bad(at, RecordError::NotUtf8),
            },
            Err(reason) => self.bad(at, RecordError::Parquet(reason)),
        };
        self.scratch = json;
        result
    }

    /// The error a scan of JSON elements stopped with.
    fn stopped(&self, stop: ElementStop<IngestError>) -> IngestError {
        match stop {
            ElementStop::Unterminated(offset) => IngestError::Unterminated { source_uri: self.source_uri(), chunk: self.msg.chunk, offset },
            ElementStop::Handler(e) => e,
        }
    }

    fn add(&mut self, at: At, text: &str) -> Result<(), IngestError> {
        match self.unwrap_output(text) {
            None => self.add_record(at, text),
            Some(Ok(merged)) => self.add_record(at, &merged),
            Some(Err(reason)) => self.bad(at, reason),
        }
    }

    /// The record with its nested prediction ([`shared::config::OUTPUT_FIELD`])
    /// merged in: an object's members join the record, an array is its item
    /// list. `None` when the record has no such field (the common case,
    /// told by one substring search) or is not a JSON object.
    fn unwrap_output(&self, text: &str) -> Option<Result<String, RecordError>> {
        let needle = self.output_needle.as_deref()?;
        memchr::memmem::find(text.as_bytes(), needle)?;
        let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        let fields = &self.config.fields;
        match record.remove(&fields.output)? {
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    record.entry(k).or_insert(v);
                }
            }
            items @ serde_json::Value::Array(_) if !record.contains_key(&fields.items) => {
                record.insert(fields.items.clone(), items);
            }
            _ => return Some(Err(RecordError::BadItems(format!("{} (inside `{}`)", fields.items, fields.output)))),
        }
        Some(Ok(serde_json::Value::Object(record).to_string()))
    }

    fn add_record(&mut self, at: At, text: &str) -> Result<(), IngestError> {
        let start = self.round.bytes.len();
        let user = match self.encoder.encode(text, &mut self.round.bytes) {
            Ok(user) => user,
            Err(reason) => return self.bad(at, reason),
        };
        self.accept(at, start, &user)
    }

    /// Takes the user `user` whose stored value was appended to the round
    /// from `start` on, unless it was seen before in the chunk.
    fn accept(&mut self, at: At, start: usize, user: &str) -> Result<(), IngestError> {
        if !self.seen.insert(user) {
            self.round.bytes.truncate(start);
            return self.bad(at, RecordError::DuplicateUser(user.to_string()));
        }
        let bucket = bucket_of(user, self.msg.buckets);
        self.round.push(bucket, start, user);
        if self.config.replication.acks > 0 {
            self.written.entry(bucket).or_default().push(user.to_string());
        }
        self.users += 1;
        if self.round_is_full() {
            self.seal();
        }
        Ok(())
    }

    /// Whether the round is full: enough users, or enough bytes however few
    /// users (which bounds memory when records are large).
    fn round_is_full(&self) -> bool {
        self.round.users.len() >= self.config.write_batch_users || self.round.bytes.len() >= ROUND_MAX_BYTES
    }

    /// Turns the round into commands, ready to send.
    fn seal(&mut self) {
        if self.round.users.is_empty() {
            return;
        }
        let cluster = match self.sink {
            Sink::Redis(redis) => redis.is_cluster(),
            #[cfg(feature = "testing")]
            Sink::Collect { cluster } => cluster,
        };
        let cmds = self.round.commands(self.keys, &self.msg.version, cluster);
        self.sealed.push(cmds);
    }

    /// Sends the sealed rounds, first waiting for the oldest in flight when
    /// [`ROUNDS_IN_FLIGHT`] are.
    async fn send(&mut self) -> Result<(), IngestError> {
        for cmds in std::mem::take(&mut self.sealed) {
            match self.sink {
                Sink::Redis(redis) => {
                    while self.in_flight.len() >= ROUNDS_IN_FLIGHT {
                        self.wait_one().await?;
                    }
                    let redis = redis.clone();
                    self.in_flight.spawn(async move { redis.write_grouped(cmds).await });
                }
                #[cfg(feature = "testing")]
                Sink::Collect { .. } => self.collected.push(cmds),
            }
        }
        Ok(())
    }

    /// Waits for every write in flight.
    async fn finish(&mut self) -> Result<(), IngestError> {
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    /// Waits for the next round in flight to finish; its error, if it failed.
    async fn wait_one(&mut self) -> Result<(), IngestError> {
        if let Some(done) = self.in_flight.join_next().await {
            done.map_err(|e| IngestError::Redis(redis::RedisError::from(std::io::Error::other(e.to_string()))))??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_users_stop_growing_at_their_cap_and_still_catch_what_they_hold() {
        let mut seen = SeenUsers::with_capacity(16);
        for n in 0..SEEN_MAX as u64 + 10 {
            assert!(seen.insert(&n.to_string()), "{n} is new");
        }
        assert_eq!(seen.numbers.len(), SEEN_MAX, "full sets take no more");
        assert!(!seen.insert("5"), "a user it holds is still a duplicate");
        assert!(seen.insert(&(SEEN_MAX as u64 + 5).to_string()), "past the cap, left to the version's count");
    }
}
