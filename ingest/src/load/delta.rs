//! Deltas in ingest: applying one to the live version, and replaying the
//! deltas newer than a version onto it before it goes live. The rules are
//! in [`shared::db::deltas`].
//!
//! A delta is read whole into memory before any of it is applied, so in
//! strict mode a bad record applies nothing; it is one chunk of a streaming
//! format (JSON Lines, a JSON document, CSV, compressed or not).

use shared::config::IngestConfig;
use shared::db::deltas::DeltaUser;
use shared::db::deltas::{self, Applied, DeltaState};
use shared::db::protocol::Dataset;
use shared::version_id;
use tracing::{error, info, warn};

use crate::deps::IngestDeps;
use crate::error::IngestError;
use crate::s3::messages::ChunkMessage;
use crate::s3::source::ObjectSource;
use crate::write::DeltaBuffer;

/// What applying a delta did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (to the live version if there is one newer than it).
    Applied(Applied),
    /// Nothing to do: the delta is gone, or was applied or failed before.
    Skipped,
    /// The delta cannot be read: recorded failed, nothing of it applied.
    Failed { reason: String },
}

/// The users of the delta `msg` reads: ids and stored values (`None`: delete
/// the user), and the bad records skipped in lenient mode. A bad record in
/// strict mode is an error, and nothing is returned.
pub(crate) async fn read<S: ObjectSource>(
    config: &IngestConfig,
    source: &S,
    msg: &ChunkMessage,
) -> Result<(Vec<DeltaUser>, u64), IngestError> {
    let writer = super::read_chunk(config, source, msg, DeltaBuffer::default()).await?;
    let bad = writer.bad;
    Ok((writer.into_sink().users, bad))
}

/// Applies the delta `msg` to the live version, if the live version's batch
/// is older than it; a bad delta is recorded failed and applies nothing.
pub(crate) async fn apply<S: ObjectSource>(
    deps: &IngestDeps<S>,
    ds: &Dataset,
    msg: &ChunkMessage,
) -> Result<Outcome, IngestError> {
    let keys = ds.keys();
    let Some(delta) = deltas::get(&deps.redis, keys, &msg.version).await? else {
        return Ok(Outcome::Skipped);
    };
    if delta.state != DeltaState::Applying {
        return Ok(Outcome::Skipped);
    }
    let (users, bad) = match read(&deps.config, &deps.source, msg).await {
        Ok(read) => read,
        Err(e) if e.is_permanent() => {
            let reason = e.to_string();
            deltas::failed(&deps.redis, keys, &delta.id, &reason).await?;
            error!(dataset = %msg.dataset, delta = %delta.id, %reason, "delta failed; nothing of it applied");
            return Ok(Outcome::Failed { reason });
        }
        Err(e) => return Err(e),
    };
    // Read after the delta was logged: a version that goes live later
    // replays it (see shared::db::deltas).
    let live = ds.live().await?;
    let mut applied = Applied {
        bad,
        ..Applied::default()
    };
    match live {
        Some(p) if version_id::event_ms(&p.version).is_none_or(|t| t < delta.event_ms) => {
            let a = deltas::apply(
                &deps.redis,
                keys,
                &p.version,
                p.buckets,
                (&delta.id, delta.event_ms),
                &users,
            )
            .await?;
            // The version has it: going live again (a rollback to it) needs no replay of it.
            deltas::replayed(&deps.redis, keys, &p.version, &delta.id).await?;
            (applied.upserts, applied.deletes) = (a.upserts, a.deletes);
            info!(dataset = %msg.dataset, delta = %delta.id, version = %p.version, upserts = a.upserts, deletes = a.deletes, bad, "delta applied");
        }
        Some(p) => {
            warn!(dataset = %msg.dataset, delta = %delta.id, version = %p.version, "delta older than the live version's batch: taken as included in it")
        }
        None => {
            info!(dataset = %msg.dataset, delta = %delta.id, "no live version: the delta waits for the first one")
        }
    }
    deltas::applied(&deps.redis, keys, &delta.id, applied).await?;
    Ok(Outcome::Applied(applied))
}

/// Replays onto `version` (of `buckets` buckets, its chunks all in) every
/// logged delta newer than its batch, oldest first, and records each as
/// replayed. A delta that cannot be read (it failed itself) is recorded as
/// replayed with nothing applied; one that fails for a reason a retry can
/// help is an error, and the version does not go live until a retry.
pub async fn replay<S: ObjectSource>(
    deps: &IngestDeps<S>,
    ds: &Dataset,
    version: &str,
    buckets: u32,
) -> Result<u64, IngestError> {
    let keys = ds.keys();
    let since = version_id::event_ms(version).unwrap_or(0);
    let mut users = 0;
    for delta in deltas::newer_than(&deps.redis, keys, since).await? {
        if !delta.forget.is_empty() {
            let tombstones: Vec<DeltaUser> =
                delta.forget.iter().map(|u| (u.clone(), None)).collect();
            let a = deltas::apply(
                &deps.redis,
                keys,
                version,
                buckets,
                (&delta.id, delta.event_ms),
                &tombstones,
            )
            .await?;
            users += a.deletes;
        } else if delta.state != DeltaState::Failed {
            if let Ok(msg) = serde_json::from_str::<ChunkMessage>(&delta.message) {
                match read(&deps.config, &deps.source, &msg).await {
                    Ok((found, _)) => {
                        let a = deltas::apply(
                            &deps.redis,
                            keys,
                            version,
                            buckets,
                            (&delta.id, delta.event_ms),
                            &found,
                        )
                        .await?;
                        users += a.upserts + a.deletes;
                    }
                    Err(e) if e.is_permanent() => {
                        warn!(dataset = %ds.name(), delta = %delta.id, %version, error = %e, "delta not replayed: it cannot be read")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        deltas::replayed(&deps.redis, keys, version, &delta.id).await?;
    }
    Ok(users)
}
