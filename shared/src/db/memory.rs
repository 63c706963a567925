//! The memory guard: a version that would not fit in Redis is held before
//! its first write.
//!
//! Redis out of memory in the middle of an ingest is the worst way to fail:
//! with `noeviction` (the template's policy) writes are refused half-way; with
//! an evicting policy, live users vanish. So before registering a version the
//! planner estimates its bytes (its users × the bytes per user of the live
//! version, sampled with `MEMORY USAGE`, or the batch's size × a format ratio
//! when nothing is live), and compares them with the room left: on each
//! primary `maxmemory − used_memory` (data spreads evenly over primaries, so
//! the fullest one decides), less what versions still ingesting have yet to
//! write. A version that does not fit is registered `held`, with a reason
//! naming the figures; `fsctl promote` ingests it once room was made.

use redis::RedisResult;

use crate::db::protocol::{Dataset, Pointer, State};
use crate::db::store::Redis;
use crate::keys;

/// Redis bytes per byte of batch file, when no live version tells better
/// (JSON Lines measured at 0.5; kept above for safety).
pub const BYTES_PER_FILE_BYTE: f64 = 0.75;
/// Share of the room a version may take; the rest is headroom for Redis's
/// own buffers and for estimates that run short.
pub const FILL: f64 = 0.9;
/// Buckets of the live version sampled for its bytes per user.
const SAMPLE_BUCKETS: u32 = 16;

/// Memory as the primaries report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub primaries: u64,
    /// `maxmemory` of the fullest primary (bytes).
    pub maxmemory: u64,
    /// Free bytes on the fullest primary.
    pub min_free: u64,
}

/// The room on the primaries, or `None` when a primary has no `maxmemory`
/// (unlimited: nothing to guard).
pub async fn room(redis: &Redis) -> RedisResult<Option<Room>> {
    let replies = redis
        .on_each_primary(redis::cmd("INFO").arg("memory"))
        .await?;
    let mut room = Room {
        primaries: 0,
        maxmemory: 0,
        min_free: u64::MAX,
    };
    for reply in replies {
        let text: String = redis::from_redis_value(reply)?;
        let field = |name: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        let (Some(max), Some(used)) = (field("maxmemory"), field("used_memory")) else {
            return Ok(None);
        };
        if max == 0 {
            return Ok(None);
        }
        let free = max.saturating_sub(used);
        if free < room.min_free {
            room.min_free = free;
            room.maxmemory = max;
        }
        room.primaries += 1;
    }
    Ok((room.primaries > 0).then_some(room))
}

/// Bytes per user of the live version, from a sample of its buckets.
pub async fn live_bytes_per_user(ds: &Dataset, live: &Pointer) -> RedisResult<Option<f64>> {
    let n = live.buckets.min(SAMPLE_BUCKETS);
    let step = (live.buckets / n.max(1)).max(1);
    let (mut bytes, mut users) = (0u64, 0u64);
    let mut c = ds.redis().clone();
    for i in 0..n {
        let key = ds.keys().bucket(&live.version, i * step);
        let (usage, len): (Option<u64>, u64) = redis::pipe()
            .cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .cmd("HLEN")
            .arg(&key)
            .query_async(&mut c)
            .await?;
        bytes += usage.unwrap_or(0);
        users += len;
    }
    Ok((users > 0).then(|| bytes as f64 / users as f64))
}

/// Bytes that versions still ingesting (in every dataset) have yet to write,
/// by their planned estimates.
pub async fn pending_bytes(redis: &Redis) -> RedisResult<u64> {
    let names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::datasets())
        .query_async(&mut redis.clone())
        .await?;
    let mut pending = 0u64;
    for name in names {
        let Ok(ds) = Dataset::new(redis, &name) else {
            continue;
        };
        for info in ds.history().await? {
            if info.state == State::Ingesting && info.chunks > 0 {
                let left = u64::from(info.chunks.saturating_sub(info.chunks_done));
                pending += info.est_bytes * left / u64::from(info.chunks);
            }
        }
    }
    Ok(pending)
}

/// What the guard decided for a new version.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Estimated bytes of the version in Redis.
    pub estimate: u64,
    /// Why it must be held, when it does not fit.
    pub hold: Option<String>,
}

/// Estimates a new version of `ds` with about `users` users from a `size`
/// byte file, and checks it against the room left.
pub async fn check(ds: &Dataset, users: u64, size: u64) -> RedisResult<Verdict> {
    let per_user = match ds.live().await? {
        Some(live) => live_bytes_per_user(ds, &live).await?,
        None => None,
    };
    let estimate = match per_user {
        Some(b) => (b * users as f64) as u64,
        None => (size as f64 * BYTES_PER_FILE_BYTE) as u64,
    };
    let Some(room) = room(ds.redis()).await? else {
        return Ok(Verdict {
            estimate,
            hold: None,
        });
    };
    let pending = pending_bytes(ds.redis()).await?;
    let available = ((room.min_free * room.primaries) as f64 * FILL) as u64;
    let hold = (estimate.saturating_add(pending) > available).then(|| {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        let basis = match per_user {
            Some(b) => format!("{users} users × {b:.0} B, the live version's bytes per user"),
            None => format!("{size} file bytes × {BYTES_PER_FILE_BYTE}"),
        };
        format!(
            "needs about {} in Redis ({basis}) but {} are free ({} free on the fullest of {} primaries with maxmemory {}, {} still to be written by versions ingesting, {:.0}% fill): free memory (fsctl gc, fewer FS_BACKUPS, larger nodes), then fsctl promote",
            mib(estimate),
            mib(available.saturating_sub(pending)),
            mib(room.min_free),
            room.primaries,
            mib(room.maxmemory),
            mib(pending),
            FILL * 100.0
        )
    });
    Ok(Verdict { estimate, hold })
}
