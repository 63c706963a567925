//! # Deltas: users corrected between full batches
//!
//! An object under `<dataset>/_delta/` holds users to upsert and tombstones
//! (`{"userId": 5, "_delete": true}`) to delete. It makes no version: its
//! users are written straight into the live version's buckets, each bucket's
//! users by one script that also keeps, per user, the event time of the
//! delta that last wrote it (in the bucket's companion hash,
//! [`DatasetKeys::bucket_times`]). So:
//! - a reader sees a user's old record or its new one, never a mix;
//! - a delta writes a user only if no newer delta did: the same delta applied
//!   twice leaves the same state, and an older delta delivered late changes
//!   none of the users a newer one wrote;
//! - a delta is applied to a version only if it is newer than the version's
//!   batch: an older one is taken as included in the batch;
//! - a version still ingesting when a newer delta arrives gets it replayed
//!   after its chunks are in and before it goes live: every delta is
//!   recorded in the dataset's delta log (ordered by event time) before it is
//!   applied, and the flip refuses a version with a newer logged delta it has
//!   not replayed ([`crate::db::protocol`]). Either the delta is logged before
//!   the flip, and the version replays it, or it reads the live pointer after
//!   the flip, and applies itself to the new version.
//!
//! A delta is one chunk (it is small; a bad record fails all of it in strict
//! mode, so nothing of it is applied). The log keeps a delta while a version
//! that predates it is retained or ingesting; [`trim`] drops the rest.

use redis::{AsyncCommands, RedisResult};
use std::collections::HashMap;

use crate::db::protocol;
use crate::db::store::Redis;
use crate::keys::{bucket_of, DatasetKeys};

/// A delta's user: its id, and its stored value or `None` for a tombstone.
pub type DeltaUser = (String, Option<Vec<u8>>);

/// Where a delta is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaState {
    /// Logged; being applied (or its worker died: a redelivery applies it).
    Applying,
    Applied,
    /// A bad record (strict mode) or an unreadable object: nothing applied.
    Failed,
}

impl DeltaState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaState::Applying => "applying",
            DeltaState::Applied => "applied",
            DeltaState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "applying" => DeltaState::Applying,
            "applied" => DeltaState::Applied,
            "failed" => DeltaState::Failed,
            _ => return None,
        })
    }
}

/// A delta's record in the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delta {
    /// Derived from the upload like a version id, so it sorts by event time.
    pub id: String,
    pub source: String,
    /// The upload's event time: what orders deltas and versions.
    pub event_ms: u64,
    pub state: DeltaState,
    /// The chunk message that reads it (JSON), kept for replays; empty for
    /// a forget.
    #[serde(skip)]
    pub message: String,
    /// A forget's users (`fsctl forget`): tombstones kept in the record
    /// itself, with no object to read.
    pub forget: Vec<String>,
    /// Users upserted and deleted where it was applied to the live version.
    pub upserts: u64,
    pub deletes: u64,
    /// Bad records skipped (lenient mode).
    pub bad: u64,
    pub reason: Option<String>,
    pub created_ms: u64,
    pub applied_ms: Option<u64>,
}

/// The largest delta: it is read whole into memory before it is applied.
pub const MAX_DELTA_BYTES: u64 = 256 << 20;

/// Logs a delta (its state only once: a delta delivered again keeps how far
/// it got) and returns its record as it now is. One transaction, so no
/// reader sees a record without its message.
pub async fn log(
    redis: &Redis,
    keys: &DatasetKeys,
    id: &str,
    source: &str,
    event_ms: u64,
    message: &str,
) -> RedisResult<Delta> {
    let record = keys.delta(id);
    let fields = [
        ("source", source),
        ("event_ms", &event_ms.to_string()),
        ("message", message),
    ];
    let _: () = redis::pipe()
        .atomic()
        .hset_nx(&record, "state", DeltaState::Applying.as_str())
        .ignore()
        .hset_nx(&record, "created_ms", crate::now_ms())
        .ignore()
        .hset_multiple(&record, &fields)
        .ignore()
        .zadd(keys.deltas(), id, event_ms)
        .ignore()
        .query_async(&mut redis.clone())
        .await?;
    get(redis, keys, id).await?.ok_or_else(vanished)
}

/// Logs a forget of `users` at the server's time `event_ms` (a delta of
/// tombstones whose users the record holds) and returns its record.
pub async fn log_forget(
    redis: &Redis,
    keys: &DatasetKeys,
    id: &str,
    event_ms: u64,
    users: &[String],
) -> RedisResult<Delta> {
    let fields = [
        ("state", DeltaState::Applying.as_str().to_string()),
        ("source", format!("fsctl forget ({} users)", users.len())),
        ("event_ms", event_ms.to_string()),
        ("forget", serde_json::to_string(users).unwrap_or_default()),
        ("created_ms", event_ms.to_string()),
    ];
    let _: () = redis::pipe()
        .atomic()
        .hset_multiple(keys.delta(id), &fields)
        .ignore()
        .zadd(keys.deltas(), id, event_ms)
        .ignore()
        .query_async(&mut redis.clone())
        .await?;
    get(redis, keys, id).await?.ok_or_else(vanished)
}

/// A record gone right after it was written (trimmed by a janitor that saw
/// it older than every kept version): a retry logs it again.
fn vanished() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "the delta's record vanished as it was logged",
    ))
}

/// One delta's record, if the log holds it.
pub async fn get(redis: &Redis, keys: &DatasetKeys, id: &str) -> RedisResult<Option<Delta>> {
    let h: HashMap<String, String> = redis.clone().hgetall(keys.delta(id)).await?;
    let Some(state) = h.get("state").and_then(|s| DeltaState::parse(s)) else {
        return Ok(None);
    };
    let n = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok());
    Ok(Some(Delta {
        id: id.to_string(),
        source: h.get("source").cloned().unwrap_or_default(),
        event_ms: n("event_ms").unwrap_or(0),
        state,
        message: h.get("message").cloned().unwrap_or_default(),
        forget: h
            .get("forget")
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default(),
        upserts: n("upserts").unwrap_or(0),
        deletes: n("deletes").unwrap_or(0),
        bad: n("bad").unwrap_or(0),
        reason: h.get("reason").cloned(),
        created_ms: n("created_ms").unwrap_or(0),
        applied_ms: n("applied_ms"),
    }))
}

/// What applying a delta did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub upserts: u64,
    pub deletes: u64,
    pub bad: u64,
}

/// Records that a delta was applied.
pub async fn applied(redis: &Redis, keys: &DatasetKeys, id: &str, a: Applied) -> RedisResult<()> {
    let fields = [
        ("state", DeltaState::Applied.as_str().to_string()),
        ("upserts", a.upserts.to_string()),
        ("deletes", a.deletes.to_string()),
        ("bad", a.bad.to_string()),
        ("applied_ms", crate::now_ms().to_string()),
    ];
    redis.clone().hset_multiple(keys.delta(id), &fields).await
}

/// Records that a delta failed and applied nothing.
pub async fn failed(redis: &Redis, keys: &DatasetKeys, id: &str, reason: &str) -> RedisResult<()> {
    redis
        .clone()
        .hset_multiple(
            keys.delta(id),
            &[("state", DeltaState::Failed.as_str()), ("reason", reason)],
        )
        .await
}

/// Logged deltas with an event time after `after_ms`, oldest first.
pub async fn newer_than(
    redis: &Redis,
    keys: &DatasetKeys,
    after_ms: u64,
) -> RedisResult<Vec<Delta>> {
    let ids: Vec<String> = redis
        .clone()
        .zrangebyscore(keys.deltas(), format!("({after_ms}"), "+inf")
        .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(d) = get(redis, keys, &id).await? {
            out.push(d);
        }
    }
    Ok(out)
}

/// How many logged deltas `version` has (applied while it was live, or
/// replayed onto it).
pub async fn count_in(redis: &Redis, keys: &DatasetKeys, version: &str) -> RedisResult<u64> {
    redis.clone().scard(keys.replayed(version)).await
}

/// Records that `delta` was replayed onto `version` (which may then go live).
pub async fn replayed(
    redis: &Redis,
    keys: &DatasetKeys,
    version: &str,
    delta: &str,
) -> RedisResult<()> {
    redis.clone().sadd(keys.replayed(version), delta).await
}

/// Drops from the log the deltas no version can need any more: those older
/// than every version whose data is kept or still being written (a version
/// replays only deltas newer than itself). Returns how many it dropped.
pub async fn trim_unneeded(redis: &Redis, keys: &DatasetKeys) -> RedisResult<u64> {
    let mut oldest: Option<u64> = None;
    for info in protocol::Dataset::of(redis, keys).history().await? {
        if info.state != protocol::State::Failed && !info.data_deleted {
            let t = crate::version_id::event_ms(&info.version).unwrap_or(0);
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
    }
    match oldest {
        Some(t) => trim(redis, keys, t).await,
        None => Ok(0),
    }
}

/// Drops from the log the deltas older than `oldest_ms`. Returns how many.
pub async fn trim(redis: &Redis, keys: &DatasetKeys, oldest_ms: u64) -> RedisResult<u64> {
    let ids: Vec<String> = redis
        .clone()
        .zrangebyscore(keys.deltas(), "-inf", format!("({oldest_ms}"))
        .await?;
    for id in &ids {
        let _: () = redis::pipe()
            .del(keys.delta(id))
            .ignore()
            .zrem(keys.deltas(), id)
            .ignore()
            .query_async(&mut redis.clone())
            .await?;
    }
    Ok(ids.len() as u64)
}

/// Writes the users of the delta `id` (id, stored value or `None` to
/// delete) into `version` (of `buckets` buckets) as of `event_ms`: each user
/// only if no later delta (by event time, then id) wrote it. One script per
/// bucket, the buckets' scripts concurrently. Returns the users upserted and
/// deleted.
pub async fn apply(
    redis: &Redis,
    keys: &DatasetKeys,
    version: &str,
    buckets: u32,
    (id, event_ms): (&str, u64),
    users: &[DeltaUser],
) -> RedisResult<Applied> {
    let mut by_bucket: HashMap<u32, Vec<&DeltaUser>> = HashMap::new();
    for u in users {
        by_bucket
            .entry(bucket_of(&u.0, buckets))
            .or_default()
            .push(u);
    }
    let calls = by_bucket.into_iter().map(|(b, group)| {
        let mut invocation = protocol::DELTAS_APPLY.prepare_invoke();
        invocation
            .key(keys.bucket(version, b))
            .key(keys.bucket_times(version, b))
            .arg(event_ms)
            .arg(id);
        for (id, value) in &group {
            invocation.arg(id).arg(value.as_deref().unwrap_or_default());
        }
        let mut conn = redis.clone();
        async move { invocation.invoke_async::<(u64, u64)>(&mut conn).await }
    });
    let mut total = Applied::default();
    for (upserts, deletes) in futures::future::try_join_all(calls).await? {
        total.upserts += upserts;
        total.deletes += deletes;
    }
    Ok(total)
}
