//! # The ingest Lambda: one chunk message in, the chunk's users in Redis
//!
//! Reads the chunk's byte range as a stream pinned to the planned ETag,
//! parses each record, and writes users into the version's bucket hashes in
//! pipelined rounds (one HSET per bucket, one pipeline per Redis primary).
//! Only after every write of the chunk is acknowledged does it mark the chunk
//! done, through the version protocol, which flips the pointer when this was
//! the last chunk.
//!
//! - [`delta`]: a delta's chunk, applied to the live version; deltas
//!   replayed onto a version before it goes live.

use std::collections::HashMap;
use std::time::Instant;

use crate::s3::messages::ChunkMessage;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::json;
use shared::config::IngestConfig;
use shared::db::protocol::{ChunkDone, ChunkPlan, Dataset, State, Step, VersionInfo};
use shared::db::store::Redis;
use shared::keys::DatasetKeys;
use shared::metrics::{Metrics, Unit};
use shared::version_id::is_version_id;
use tracing::{debug, error, info, warn};

use crate::deps::IngestDeps;
use crate::error::IngestError;
use crate::formats::{self, Chunk};
use crate::s3::source::ObjectSource;
use crate::write::{RedisSink, Sink, Writer};

pub mod delta;

/// Chunk messages of one invocation processed at once.
const MESSAGE_CONCURRENCY: usize = 4;

/// What ingesting one chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkReport {
    /// The chunk's users were written and the chunk marked done; `step` tells
    /// what that led to (the version's fate when this chunk completed it).
    Done { users: u64, bad: u64, step: Step },
    /// Nothing to do: the version completed, failed or is gone.
    Skipped { state: Option<State> },
    /// The chunk holds bad input: its version (or delta) was failed with this reason.
    VersionFailed { reason: String },
    /// A delta's chunk: what applying it to the live version did.
    Delta(shared::db::deltas::Applied),
}

/// Lambda handler for the chunks queue.
pub async fn handle<S: ObjectSource>(
    deps: &IngestDeps<S>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let results: Vec<(String, Result<ChunkReport, IngestError>)> =
        futures::stream::iter(event.payload.records)
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
            Err(e) if e.is_permanent() => {
                error!(message_id = %id, error = %e, "dropping message that cannot be ingested")
            }
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
async fn planned_chunk(
    ds: &Dataset,
    msg: &ChunkMessage,
    info: &VersionInfo,
) -> Result<ChunkMessage, IngestError> {
    let planned = ds.planned_span(&msg.version, msg.chunk).await?;
    let label = crate::layout::label(msg.format, msg.compression);
    let object = format!("s3://{}/{}", msg.bucket, msg.key);
    // The object the plan says the span reads: the record's own, or one of
    // a folder batch's files.
    let (planned_object, etag, format) = match (
        info.files.is_empty(),
        planned
            .as_ref()
            .and_then(|p| p.spans().first())
            .and_then(|s| info.files.get(s.file as usize)),
    ) {
        (true, _) => (
            info.source.clone(),
            info.etag.as_str(),
            info.format.as_str(),
        ),
        (false, Some(f)) => {
            let bucket = info
                .source
                .strip_prefix("s3://")
                .and_then(|s| s.split_once('/'))
                .map_or("", |(b, _)| b);
            (
                format!("s3://{bucket}/{}", f.key),
                f.etag.as_str(),
                f.format.as_str(),
            )
        }
        (false, None) => (String::new(), "", ""),
    };
    let mine = (
        msg.chunks,
        Some(msg.plan()),
        msg.buckets,
        object.as_str(),
        msg.etag.as_str(),
        label.as_str(),
    );
    let theirs = (
        info.chunks,
        planned,
        info.buckets,
        planned_object.as_str(),
        etag,
        format,
    );
    if mine == theirs {
        // The record's bucket count is the one the pointer will carry.
        return Ok(ChunkMessage {
            buckets: info.buckets,
            ..msg.clone()
        });
    }
    let show = |(chunks, span, buckets, object, etag, format): (
        u32,
        Option<ChunkPlan>,
        u32,
        &str,
        &str,
        &str,
    )| {
        let span = span.map_or("no such chunk".to_string(), |s| s.to_string());
        format!("{span} of {chunks} chunks, {buckets} buckets, {object} ETag {etag}, {format}")
    };
    Err(IngestError::NotPlanned {
        version: msg.version.clone(),
        chunk: msg.chunk,
        message: show(mine),
        planned: show(theirs),
    })
}

/// Ingests one chunk. Permanent problems with the batch fail the version and
/// return `Ok`; errors worth a retry return `Err`.
pub async fn ingest_chunk<S: ObjectSource>(
    deps: &IngestDeps<S>,
    msg: &ChunkMessage,
) -> Result<ChunkReport, IngestError> {
    let started = Instant::now();
    let ds = Dataset::new(&deps.redis, &msg.dataset)
        .map_err(|_| IngestError::Dataset(msg.dataset.clone()))?;
    if !is_version_id(&msg.version) {
        return Err(IngestError::VersionId(msg.version.clone()));
    }
    if msg.delta {
        return Ok(match delta::apply(deps, &ds, msg).await? {
            delta::Outcome::Applied(applied) => ChunkReport::Delta(applied),
            delta::Outcome::Skipped => ChunkReport::Skipped { state: None },
            delta::Outcome::Failed { reason } => ChunkReport::VersionFailed { reason },
        });
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
        match write_parts(deps, ds.keys(), msg, &info).await {
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
        let acked = deps
            .redis
            .wait_for_replicas(replication.acks, replication.timeout)
            .await?;
        if acked < replication.acks {
            return Err(IngestError::Replication {
                chunk: msg.chunk,
                acked,
                wanted: replication.acks,
            });
        }
        // WAIT counts acknowledgements on the connection it runs on. After a
        // failover that is a new connection to the promoted replica, which
        // may lack writes the old primary acknowledged and never passed on:
        // so read the chunk's users back from the primaries before it counts.
        let missing = missing_users(&deps.redis, ds.keys(), &msg.version, &written).await?;
        if missing > 0 {
            return Err(IngestError::LostWrites {
                chunk: msg.chunk,
                missing,
            });
        }
    }
    let done = ChunkDone {
        version: &msg.version,
        chunk: msg.chunk,
        span: msg.plan(),
        buckets: msg.buckets,
        users,
        bad,
    };
    let mut step = ds.chunk_written(&done, &deps.config.validation).await?;
    // Deltas newer than the version, replayed before it may go live; again
    // if more arrive meanwhile.
    while step == Step::Replay {
        let users = delta::replay(deps, &ds, &msg.version, msg.buckets).await?;
        info!(dataset = %msg.dataset, version = %msg.version, users, "deltas replayed before going live");
        step = ds
            .finalize(&msg.version, msg.buckets, &deps.config.validation)
            .await?;
    }
    match &step {
        Step::Flipped { users } => {
            info!(dataset = %msg.dataset, version = %msg.version, users, "version live")
        }
        Step::Held(reason) => {
            warn!(dataset = %msg.dataset, version = %msg.version, %reason, "version held")
        }
        Step::Superseded(reason) => {
            info!(dataset = %msg.dataset, version = %msg.version, %reason, "version superseded")
        }
        Step::Failed(reason) => {
            error!(dataset = %msg.dataset, version = %msg.version, %reason, "version failed")
        }
        Step::NotPlanned { planned, chunks } => {
            // The record's plan changed between the check and now: only a
            // forged or corrupted record does that.
            return Err(IngestError::NotPlanned {
                version: msg.version.clone(),
                chunk: msg.chunk,
                message: msg.plan().to_string(),
                planned: format!(
                    "{} of {chunks} chunks",
                    planned
                        .as_ref()
                        .map_or("none".to_string(), |p| p.to_string())
                ),
            });
        }
        Step::Pending { .. } | Step::Settled(_) | Step::Replay => {}
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let metrics = Metrics::new(&deps.config.metrics_namespace);
    let props = [("version", json!(msg.version)), ("chunk", json!(msg.chunk))];
    let mut values = vec![
        ("RecordsIngested", users as f64, Unit::Count),
        ("BadRecords", bad as f64, Unit::Count),
        ("ChunkMillis", duration_ms as f64, Unit::Milliseconds),
    ];
    // The pace readers' latency holds the worker to, as it stands at the
    // chunk's end (none while unpaced).
    let pace = deps.pacer.report();
    if let Some(rate) = pace.rate {
        values.push(("PacedUsersPerSecond", rate, Unit::CountPerSecond));
        info!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, users_per_s = rate as u64, target_ms = pace.target.map(|t| t.as_secs_f64() * 1e3), probe_ms = pace.last_rtt.map(|t| t.as_secs_f64() * 1e3), "ingest paced by readers' latency");
    }
    if let Some(rtt) = pace.last_rtt {
        values.push(("ProbeMillis", rtt.as_secs_f64() * 1e3, Unit::Milliseconds));
    }
    metrics.emit(&msg.dataset, &values, &props);
    if matches!(step, Step::Flipped { .. }) {
        let upload_to_live = shared::version_id::event_ms(&msg.version)
            .map(|t| shared::now_ms().saturating_sub(t) as f64 / 1000.0);
        metrics.emit(
            &msg.dataset,
            &[
                ("Flips", 1.0, Unit::Count),
                (
                    "UploadToLiveSeconds",
                    upload_to_live.unwrap_or(0.0),
                    Unit::Seconds,
                ),
            ],
            &props,
        );
    }
    debug!(dataset = %msg.dataset, version = %msg.version, chunk = msg.chunk, chunks = msg.chunks, users, bad,
        duration_ms, step = ?step, "chunk done");
    Ok(ChunkReport::Done { users, bad, step })
}

/// Users of `written` (bucket → user ids) that their bucket does not hold.
async fn missing_users(
    redis: &Redis,
    keys: &DatasetKeys,
    version: &str,
    written: &HashMap<u32, Vec<String>>,
) -> Result<u64, IngestError> {
    let checks: Vec<(String, &Vec<String>)> = written
        .iter()
        .map(|(b, users)| (keys.bucket(version, *b), users))
        .collect();
    let mut missing = 0;
    for group in checks.chunks(64) {
        let found = futures::future::try_join_all(
            group
                .iter()
                .map(|(key, users)| redis.count_fields(key, users)),
        )
        .await?;
        missing += group
            .iter()
            .zip(found)
            .map(|((_, users), n)| (users.len() as u64).saturating_sub(n))
            .sum::<u64>();
    }
    Ok(missing)
}

/// Reads, parses and writes each span of the chunk in turn (one, or the
/// small files packed into it); returns the sums of what [`write_chunk`]
/// returns for each.
async fn write_parts<S: ObjectSource>(
    deps: &IngestDeps<S>,
    keys: &DatasetKeys,
    msg: &ChunkMessage,
    info: &VersionInfo,
) -> Result<(u64, u64, HashMap<u32, Vec<String>>), IngestError> {
    if msg.more.is_empty() {
        return write_chunk(deps, keys, msg).await;
    }
    // The plan was checked: every span names one of the record's files.
    let parts = msg
        .parts(&info.files)
        .ok_or_else(|| IngestError::NotPlanned {
            version: msg.version.clone(),
            chunk: msg.chunk,
            message: msg.plan().to_string(),
            planned: format!("{} files", info.files.len()),
        })?;
    let (mut users, mut bad, mut written) = (0, 0, HashMap::<u32, Vec<String>>::new());
    for part in &parts {
        let (u, b, w) = write_chunk(deps, keys, part).await?;
        users += u;
        bad += b;
        for (bucket, ids) in w {
            written.entry(bucket).or_default().extend(ids);
        }
    }
    Ok((users, bad, written))
}

/// Reads, parses and writes the chunk; returns the users written, the bad
/// records skipped (lenient mode), and, when replica acknowledgements are
/// required, which users went to which bucket.
async fn write_chunk<S: ObjectSource>(
    deps: &IngestDeps<S>,
    keys: &DatasetKeys,
    msg: &ChunkMessage,
) -> Result<(u64, u64, HashMap<u32, Vec<String>>), IngestError> {
    let config = &deps.config;
    let sink = RedisSink::new(
        &deps.redis,
        keys,
        &msg.version,
        config.max_users_per_s,
        config.replication.acks > 0,
    )
    .paced(deps.pacer.clone());
    let writer = read_chunk(config, &deps.source, msg, sink).await?;
    let (users, bad) = (writer.users, writer.bad);
    Ok((users, bad, writer.into_sink().written()))
}

/// Reads and parses the chunk `msg`, handing each round to `sink` as it
/// fills, and waits for the sink to finish; on an error, stops what the
/// sink still has in flight.
pub async fn read_chunk<'a, S: ObjectSource, K: Sink>(
    config: &'a IngestConfig,
    source: &S,
    msg: &'a ChunkMessage,
    sink: K,
) -> Result<Writer<'a, K>, IngestError> {
    let mut writer = Writer::new(msg, config, sink);
    let filled = async {
        formats::read(
            &Chunk {
                source,
                msg,
                config,
            },
            &mut writer,
        )
        .await?;
        writer.seal();
        writer.send().await?;
        writer.finish().await
    }
    .await;
    match filled {
        Ok(()) => Ok(writer),
        Err(e) => {
            writer.stop().await;
            Err(e)
        }
    }
}
