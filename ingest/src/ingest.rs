//! The ingest Lambda: one chunk message in, the chunk's users in Redis.
//!
//! Reads the chunk's byte range as a stream pinned to the planned ETag,
//! parses each record, and writes users into the version's bucket hashes in
//! pipelined rounds grouped by slot. Only after every write of the chunk is
//! acknowledged does it mark the chunk done, through the version protocol,
//! which flips the pointer when this was the last chunk.

use std::collections::HashMap;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use lambda_runtime::{Error, LambdaEvent};
use redis::Cmd;
use shared::chunk::{for_each_element, LineCursor};
use shared::config::Config;
use shared::keys::{bucket_of, DatasetKeys};
use shared::messages::{ChunkFormat, ChunkMessage};
use shared::protocol::{self, ChunkOutcome, State};
use shared::record::Record;
use shared::store::Redis;
use tracing::{error, info, warn};

use crate::error::IngestError;
use crate::source::ObjectSource;

/// Chunk messages of one invocation processed at once.
const MESSAGE_CONCURRENCY: usize = 4;

/// What ingest needs, built once per process.
pub struct IngestDeps<S> {
    pub config: Config,
    pub redis: Redis,
    pub source: S,
}

/// What ingesting one chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkReport {
    /// The chunk's users were written and the chunk marked done.
    Done { users: u64, outcome: ChunkOutcome },
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

/// Ingests one chunk. Permanent problems with the batch fail the version and
/// return `Ok`; errors worth a retry return `Err`.
pub async fn ingest_chunk<S: ObjectSource>(deps: &IngestDeps<S>, msg: &ChunkMessage) -> Result<ChunkReport, IngestError> {
    let started = Instant::now();
    let keys = DatasetKeys::new(&msg.dataset).map_err(|_| IngestError::Dataset(msg.dataset.clone()))?;
    let state = protocol::version_info(&deps.redis, &keys, &msg.version).await?.map(|v| v.state);
    if state != Some(State::Ingesting) {
        info!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, state = ?state, "chunk skipped: version not ingesting");
        return Ok(ChunkReport::Skipped { state });
    }
    let users = match write_chunk(deps, &keys, msg).await {
        Ok(users) => users,
        Err(e) if e.is_permanent() => {
            let reason = e.to_string();
            protocol::fail(&deps.redis, &keys, &msg.version, &reason).await?;
            error!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, %reason, "version failed");
            return Ok(ChunkReport::VersionFailed { reason });
        }
        Err(e) => return Err(e),
    };
    let outcome = protocol::complete_chunk(&deps.redis, &keys, &msg.version, msg.chunk, users).await?;
    let duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        ChunkOutcome::Flipped => info!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, users, duration_ms, "version live"),
        _ => info!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, chunks = msg.chunks, users, duration_ms, outcome = ?outcome, "chunk done"),
    }
    Ok(ChunkReport::Done { users, outcome })
}

/// Reads, parses and writes the chunk; returns the number of users written.
async fn write_chunk<S: ObjectSource>(deps: &IngestDeps<S>, keys: &DatasetKeys, msg: &ChunkMessage) -> Result<u64, IngestError> {
    let mut writer = Writer::new(keys, msg, &deps.config);
    match msg.format {
        ChunkFormat::JsonLines => {
            let mut cursor = LineCursor::new(msg.start, msg.end);
            let mut stream = deps.source.read(&msg.bucket, &msg.key, &msg.etag, cursor.fetch_from(), None).await?;
            while let Some(bytes) = stream.next().await {
                cursor.push(&bytes?, |offset, line| writer.add_bytes(offset, line))?;
                if writer.should_flush() {
                    writer.flush(&deps.redis).await?;
                }
                if cursor.is_done() {
                    break;
                }
            }
            cursor.finish(|offset, line| writer.add_bytes(offset, line))?;
        }
        ChunkFormat::JsonElements => {
            let mut stream = deps.source.read(&msg.bucket, &msg.key, &msg.etag, msg.start, Some(msg.end)).await?;
            let mut buf = Vec::with_capacity((msg.end - msg.start) as usize);
            while let Some(bytes) = stream.next().await {
                buf.extend_from_slice(&bytes?);
            }
            for_each_element(&buf, msg.start, |offset, text| writer.add(offset, text))
                .map_err(|offset| writer.json_error(offset))??;
        }
    }
    writer.flush(&deps.redis).await?;
    Ok(writer.users)
}

/// Collects users into per-bucket HSET commands and writes them in rounds.
struct Writer<'a> {
    keys: &'a DatasetKeys,
    msg: &'a ChunkMessage,
    config: &'a Config,
    pending: HashMap<u32, Cmd>,
    pending_users: usize,
    users: u64,
    scratch: Vec<u8>,
}

impl<'a> Writer<'a> {
    fn new(keys: &'a DatasetKeys, msg: &'a ChunkMessage, config: &'a Config) -> Self {
        Writer { keys, msg, config, pending: HashMap::new(), pending_users: 0, users: 0, scratch: Vec::with_capacity(256) }
    }

    fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.msg.bucket, self.msg.key)
    }

    fn json_error(&self, offset: u64) -> IngestError {
        IngestError::Json { source_uri: self.source_uri(), chunk: self.msg.chunk, offset }
    }

    fn add_bytes(&mut self, offset: u64, line: &[u8]) -> Result<(), IngestError> {
        let text = std::str::from_utf8(line)
            .map_err(|_| IngestError::Utf8 { source_uri: self.source_uri(), chunk: self.msg.chunk, offset })?;
        self.add(offset, text)
    }

    fn add(&mut self, offset: u64, text: &str) -> Result<(), IngestError> {
        let record = Record::parse(text, &self.config.fields)
            .map_err(|reason| IngestError::Record { source_uri: self.source_uri(), chunk: self.msg.chunk, offset, reason })?;
        let bucket = bucket_of(&record.user_id, self.msg.buckets);
        self.scratch.clear();
        record.encode_into(&mut self.scratch);
        let (keys, version) = (self.keys, &self.msg.version);
        let cmd = self.pending.entry(bucket).or_insert_with(|| {
            let mut c = redis::cmd("HSET");
            c.arg(keys.bucket(version, bucket));
            c
        });
        cmd.arg(record.user_id.as_ref()).arg(&self.scratch[..]);
        self.pending_users += 1;
        self.users += 1;
        Ok(())
    }

    fn should_flush(&self) -> bool {
        self.pending_users >= self.config.write_batch_users
    }

    async fn flush(&mut self, redis: &Redis) -> Result<(), IngestError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let cmds: Vec<(String, Cmd)> = self
            .pending
            .drain()
            .map(|(bucket, cmd)| (self.keys.bucket(&self.msg.version, bucket), cmd))
            .collect();
        self.pending_users = 0;
        redis.write_grouped(cmds).await?;
        Ok(())
    }
}
