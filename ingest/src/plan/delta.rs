//! A delta (an object under `<dataset>/_delta/`): logged, then sent as one
//! chunk message; a delta that cannot be read as one streaming chunk is
//! logged failed. The rules are in [`shared::db::deltas`].

use shared::db::deltas::{self, DeltaState};
use shared::db::protocol::Dataset;
use shared::version_id::{self, VersionSource};
use tracing::{error, info};

use super::register::Planned;
use super::send::send_chunks;
use crate::deps::PlannerDeps;
use crate::error::PlanError;
use crate::formats;
use crate::layout::ChunkFormat;
use crate::s3::event::ObjectEvent;
use crate::s3::messages::ChunkMessage;
use crate::s3::source::ObjectSource;

/// Logs the delta `ev` uploaded and sends its one chunk message; a delta
/// that cannot be read as one streaming chunk is logged failed.
pub(super) async fn plan<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    ds: &Dataset,
    ev: &ObjectEvent,
    etag: &str,
    size: u64,
) -> Result<Planned, PlanError> {
    let id = version_id::derive(&VersionSource {
        event_time: &ev.event_time,
        sequencer: ev.sequencer.as_deref(),
        bucket: &ev.bucket,
        key: &ev.key,
        etag,
    })
    .map_err(|reason| PlanError::Version {
        source_uri: ev.source(),
        reason,
    })?;
    let event_ms = version_id::event_ms(&id).unwrap_or(0);
    let dataset = ds.name().to_string();
    // One chunk, whatever the configured chunk size.
    let config = shared::config::PlannerConfig {
        chunk_bytes: u64::MAX,
        ..deps.config.clone()
    };
    let layout = match size > deltas::MAX_DELTA_BYTES {
        true => Err(PlanError::Delta {
            source_uri: ev.source(),
            reason: format!(
                "a delta is at most {} MiB ({size} bytes here): upload a full batch",
                deltas::MAX_DELTA_BYTES >> 20
            ),
        }),
        false => formats::plan(&deps.source, &config, &ev.bucket, &ev.key, etag, size).await,
    };
    let planned = match layout {
        Ok(l) if l.format == ChunkFormat::Parquet => Err(format!(
            "{}: a delta is JSON Lines, a JSON document or CSV (compressed or not), not Parquet",
            ev.source()
        )),
        Ok(l) if l.ranges.len() != 1 => Err(format!(
            "{}: a delta is read as one chunk; this one plans as {}",
            ev.source(),
            l.ranges.len()
        )),
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
            more: Vec::new(),
            delta: true,
        }),
        Err(e) if e.is_permanent() => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    let json = planned
        .as_ref()
        .map(|m| serde_json::to_string(m).expect("a chunk message serializes"))
        .unwrap_or_default();
    let logged = deltas::log(&deps.redis, ds.keys(), &id, &ev.source(), event_ms, &json).await?;
    match planned {
        Ok(m) => {
            if logged.state == DeltaState::Applying {
                send_chunks(
                    &deps.sqs,
                    &deps.config.chunks_queue_url,
                    std::slice::from_ref(&m),
                )
                .await?;
            }
            info!(%dataset, delta = %id, source = %ev.source(), "planned delta");
            Ok(Planned {
                dataset,
                version: id,
                chunks: 1,
                failed: None,
            })
        }
        Err(why) => {
            deltas::failed(&deps.redis, ds.keys(), &id, &why).await?;
            error!(%dataset, delta = %id, source = %ev.source(), reason = %why, "delta cannot be read; nothing of it applied");
            Ok(Planned {
                dataset,
                version: id,
                chunks: 0,
                failed: Some(why),
            })
        }
    }
}
