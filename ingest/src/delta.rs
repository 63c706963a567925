//! Deltas on the S3 side: planning one (in the planner), applying it to the
//! live version (in ingest), and replaying the deltas newer than a version
//! onto it before it goes live. The rules are in [`shared::db::deltas`].
//!
//! A delta is read whole into memory before any of it is applied, so in
//! strict mode a bad record applies nothing; it is one chunk of a streaming
//! format (JSON Lines, a JSON document, CSV, compressed or not).

use shared::aws::event::ObjectEvent;
use shared::aws::messages::ChunkMessage;
use shared::config::IngestConfig;
use shared::db::deltas::{self, Applied, DeltaState};
use shared::db::keys::DatasetKeys;
use shared::db::protocol::Dataset;
use shared::format::ChunkFormat;
use shared::version_id::{self, VersionSource};
use tracing::{error, info, warn};

use crate::error::{IngestError, PlanError};
use crate::format::{self, Chunk};
use crate::ingest::{ChunkReport, IngestDeps};
use crate::planner::{send_chunks, Planned, PlannerDeps};
use crate::source::ObjectSource;
use crate::writer::{Sink, Writer};

/// Logs the delta `ev` uploaded and sends its one chunk message; a delta
/// that cannot be read as one streaming chunk is logged failed.
pub(crate) async fn plan<S: ObjectSource>(deps: &PlannerDeps<S>, ds: &Dataset, ev: &ObjectEvent, etag: &str, size: u64) -> Result<Planned, PlanError> {
    let id = version_id::derive(&VersionSource { event_time: &ev.event_time, sequencer: ev.sequencer.as_deref(), bucket: &ev.bucket, key: &ev.key, etag })
        .map_err(|reason| PlanError::Version { source_uri: ev.source(), reason })?;
    let event_ms = version_id::event_ms(&id).unwrap_or(0);
    let dataset = ds.name().to_string();
    // One chunk, whatever the configured chunk size.
    let config = shared::config::PlannerConfig { chunk_bytes: u64::MAX, ..deps.config.clone() };
    let layout = match size > deltas::MAX_DELTA_BYTES {
        true => Err(PlanError::Delta { source_uri: ev.source(), reason: format!("a delta is at most {} MiB ({size} bytes here): upload a full batch", deltas::MAX_DELTA_BYTES >> 20) }),
        false => format::plan(&deps.source, &config, &ev.bucket, &ev.key, etag, size).await,
    };
    let planned = match layout {
        Ok(l) if l.format == ChunkFormat::Parquet => Err(format!("{}: a delta is JSON Lines, a JSON document or CSV (compressed or not), not Parquet", ev.source())),
        Ok(l) if l.ranges.len() != 1 => Err(format!("{}: a delta is read as one chunk; this one plans as {}", ev.source(), l.ranges.len())),
        Ok(l) => Ok(ChunkMessage {
            dataset: dataset.clone(),
            version: id.clone(),
            bucket: ev.bucket.clone(),
            key: ev.key.clone(),
            etag: etag.to_string(),
            size,
            format: l.format,
            compression: l.compression,
            file: 0,
            chunk: 0,
            chunks: 1,
            start: l.ranges[0].0,
            end: l.ranges[0].1,
            buckets: 0,
            delta: true,
        }),
        Err(e) if e.is_permanent() => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    let json = planned.as_ref().map(|m| serde_json::to_string(m).expect("a chunk message serializes")).unwrap_or_default();
    let logged = deltas::log(&deps.redis, ds.keys(), &id, &ev.source(), event_ms, &json).await?;
    match planned {
        Ok(m) => {
            if logged.state == DeltaState::Applying {
                send_chunks(&deps.sqs, &deps.config.chunks_queue_url, std::slice::from_ref(&m)).await?;
            }
            info!(%dataset, delta = %id, source = %ev.source(), "planned delta");
            Ok(Planned { dataset, version: id, chunks: 1, failed: None })
        }
        Err(why) => {
            deltas::failed(&deps.redis, ds.keys(), &id, &why).await?;
            error!(%dataset, delta = %id, source = %ev.source(), reason = %why, "delta cannot be read; nothing of it applied");
            Ok(Planned { dataset, version: id, chunks: 0, failed: Some(why) })
        }
    }
}

/// The users of the delta `msg` reads: ids and stored values (`None`: delete
/// the user), and the bad records skipped in lenient mode. A bad record in
/// strict mode is an error, and nothing is returned.
pub(crate) async fn read<S: ObjectSource>(config: &IngestConfig, source: &S, keys: &DatasetKeys, msg: &ChunkMessage) -> Result<(Vec<(String, Option<Vec<u8>>)>, u64), IngestError> {
    let mut writer = Writer::new(keys, msg, config, Sink::Gather);
    format::read(&Chunk { source, msg, config }, &mut writer).await?;
    writer.seal();
    Ok((std::mem::take(&mut writer.gathered), writer.bad))
}

/// Applies the delta `msg` to the live version, if the live version's batch
/// is older than it; a bad delta is recorded failed and applies nothing.
pub(crate) async fn apply<S: ObjectSource>(deps: &IngestDeps<S>, ds: &Dataset, msg: &ChunkMessage) -> Result<ChunkReport, IngestError> {
    let keys = ds.keys();
    let Some(delta) = deltas::get(&deps.redis, keys, &msg.version).await? else {
        return Ok(ChunkReport::Skipped { state: None });
    };
    if delta.state != DeltaState::Applying {
        return Ok(ChunkReport::Skipped { state: None });
    }
    let (users, bad) = match read(&deps.config, &deps.source, keys, msg).await {
        Ok(read) => read,
        Err(e) if e.is_permanent() => {
            let reason = e.to_string();
            deltas::failed(&deps.redis, keys, &delta.id, &reason).await?;
            error!(dataset = %msg.dataset, delta = %delta.id, %reason, "delta failed; nothing of it applied");
            return Ok(ChunkReport::VersionFailed { reason });
        }
        Err(e) => return Err(e),
    };
    // Read after the delta was logged: a version that goes live later
    // replays it (see shared::db::deltas).
    let live = ds.live().await?;
    let mut applied = Applied { bad, ..Applied::default() };
    match live {
        Some(p) if version_id::event_ms(&p.version).is_none_or(|t| t < delta.event_ms) => {
            let a = deltas::apply(&deps.redis, keys, &p.version, p.buckets, (&delta.id, delta.event_ms), &users).await?;
            // The version has it: going live again (a rollback to it) needs no replay of it.
            deltas::replayed(&deps.redis, keys, &p.version, &delta.id).await?;
            (applied.upserts, applied.deletes) = (a.upserts, a.deletes);
            info!(dataset = %msg.dataset, delta = %delta.id, version = %p.version, upserts = a.upserts, deletes = a.deletes, bad, "delta applied");
        }
        Some(p) => warn!(dataset = %msg.dataset, delta = %delta.id, version = %p.version, "delta older than the live version's batch: taken as included in it"),
        None => info!(dataset = %msg.dataset, delta = %delta.id, "no live version: the delta waits for the first one"),
    }
    deltas::applied(&deps.redis, keys, &delta.id, applied).await?;
    Ok(ChunkReport::Delta(applied))
}

/// Replays onto `version` (of `buckets` buckets, its chunks all in) every
/// logged delta newer than its batch, oldest first, and records each as
/// replayed. A delta that cannot be read (it failed itself) is recorded as
/// replayed with nothing applied; one that fails for a reason a retry can
/// help is an error, and the version does not go live until a retry.
pub async fn replay<S: ObjectSource>(deps: &IngestDeps<S>, ds: &Dataset, version: &str, buckets: u32) -> Result<u64, IngestError> {
    let keys = ds.keys();
    let since = version_id::event_ms(version).unwrap_or(0);
    let mut users = 0;
    for delta in deltas::newer_than(&deps.redis, keys, since).await? {
        if !delta.forget.is_empty() {
            let tombstones: Vec<(String, Option<Vec<u8>>)> = delta.forget.iter().map(|u| (u.clone(), None)).collect();
            let a = deltas::apply(&deps.redis, keys, version, buckets, (&delta.id, delta.event_ms), &tombstones).await?;
            users += a.deletes;
        } else if delta.state != DeltaState::Failed {
            if let Ok(msg) = serde_json::from_str::<ChunkMessage>(&delta.message) {
                match read(&deps.config, &deps.source, keys, &msg).await {
                    Ok((found, _)) => {
                        let a = deltas::apply(&deps.redis, keys, version, buckets, (&delta.id, delta.event_ms), &found).await?;
                        users += a.upserts + a.deletes;
                    }
                    Err(e) if e.is_permanent() => warn!(dataset = %ds.name(), delta = %delta.id, %version, error = %e, "delta not replayed: it cannot be read"),
                    Err(e) => return Err(e),
                }
            }
        }
        deltas::replayed(&deps.redis, keys, version, &delta.id).await?;
    }
    Ok(users)
}
