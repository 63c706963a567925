//! # The version protocol
//!
//! The one module that writes a dataset's live pointer. Its promise: a reader
//! sees the whole old batch or the whole new one, never a mix, never a
//! half-written user.
//!
//! ## Life of a version
//! 1. **register** (planner): the version record is created once, in state
//!    `ingesting`, with its chunk count, bucket count and source. Re-registering
//!    the same version (a repeated event) is a no-op.
//! 2. **write** (ingest): each chunk writes its users under the version's own
//!    data keys ([`crate::keys`]). No reader looks there yet.
//! 3. **complete_chunk** (ingest, after every write of the chunk is
//!    acknowledged): one Lua script marks the chunk done; when that makes every
//!    chunk done it flips the pointer, *if* the version is newer than the live
//!    one. An older version that completes late becomes `superseded` and never
//!    goes live. Marking a chunk twice (at-least-once delivery) counts once.
//! 4. **fail**: a version with a permanent error (malformed batch, object
//!    changed under it) becomes `failed` and can never go live.
//!
//! States: `ingesting` → `live` → `backup` (a newer version went live), or
//! `ingesting` → `superseded` | `failed`.
//!
//! ## Invariants
//! - The pointer names only a version whose chunks were all acknowledged.
//! - The pointer only moves forward in version order (see [`crate::version_id`]).
//! - All of a dataset's metadata shares the `{dataset}` hash tag, so each step
//!   is one atomic script on one node; data keys are never read through
//!   anything but the pointer or an explicitly named complete version.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{AsyncCommands, RedisResult, Script};

use crate::keys::{self, DatasetKeys};
use crate::store::Redis;

/// State of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ingesting,
    Live,
    Backup,
    Superseded,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ingesting => "ingesting",
            State::Live => "live",
            State::Backup => "backup",
            State::Superseded => "superseded",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ingesting" => State::Ingesting,
            "live" => State::Live,
            "backup" => State::Backup,
            "superseded" => State::Superseded,
            "failed" => State::Failed,
            _ => return None,
        })
    }

    /// Whether every chunk of the version was written (so it can be read).
    pub fn is_complete(self) -> bool {
        matches!(self, State::Live | State::Backup | State::Superseded)
    }
}

/// What the planner knows of a new version.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub version: &'a str,
    pub chunks: u32,
    pub buckets: u32,
    pub source: &'a str,
    pub etag: &'a str,
    pub size: u64,
    pub format: &'a str,
}

/// A version's record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub version: String,
    pub state: State,
    pub chunks: u32,
    pub chunks_done: u32,
    pub buckets: u32,
    pub users: u64,
    pub source: String,
    pub etag: String,
    pub size: u64,
    pub format: String,
    pub created_ms: u64,
    pub live_ms: Option<u64>,
    pub reason: Option<String>,
}

/// The live pointer of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub version: String,
    pub buckets: u32,
    pub since_ms: u64,
    pub previous: Option<String>,
}

/// What marking a chunk done led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// More chunks to go.
    Progress { done: u32, total: u32 },
    /// This chunk completed the version and it is now live.
    Flipped,
    /// Complete, but a newer version is live: this one never goes live.
    Superseded,
    /// The version had completed before (a repeated delivery).
    AlreadyComplete,
    /// The version failed earlier; the chunk's work is moot.
    VersionFailed,
    /// No such version (never registered, or cleaned up).
    UnknownVersion,
    /// The chunk index is outside the version's chunk count.
    BadChunk,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Registers a version (idempotent). Returns `true` when it was created now,
/// `false` when it already existed.
pub async fn register(conn: &Redis, keys: &DatasetKeys, v: &NewVersion<'_>) -> RedisResult<bool> {
    let script = Script::new(include_str!("protocol/register.lua"));
    let mut inv = script.key(keys.version(v.version));
    inv.key(keys.versions()).arg(v.version);
    let fields: [(&str, String); 11] = [
        ("state", State::Ingesting.as_str().into()),
        ("chunks", v.chunks.to_string()),
        ("chunks_done", "0".into()),
        ("buckets", v.buckets.to_string()),
        ("users", "0".into()),
        ("source", v.source.into()),
        ("etag", v.etag.into()),
        ("size", v.size.to_string()),
        ("format", v.format.into()),
        ("created_ms", now_ms().to_string()),
        ("version", v.version.into()),
    ];
    for (k, val) in &fields {
        inv.arg(*k).arg(val);
    }
    let mut c = conn.clone();
    let reply: String = inv.invoke_async(&mut c).await?;
    // Datasets are listed for operators; this lives in another slot, so it is
    // a separate (idempotent) write.
    let _: () = c.sadd(keys::datasets(), keys.dataset()).await?;
    Ok(reply == "created")
}

/// Marks chunk `chunk` of `version` done after its `users` were written, and
/// flips the live pointer if that completed the version.
pub async fn complete_chunk(conn: &Redis, keys: &DatasetKeys, version: &str, chunk: u32, users: u64) -> RedisResult<ChunkOutcome> {
    let script = Script::new(include_str!("protocol/complete_chunk.lua"));
    let prefix = keys.version("");
    let (outcome, done, total): (String, u32, u32) = script
        .key(keys.version(version))
        .key(keys.chunks_done(version))
        .key(keys.live())
        .arg(version)
        .arg(chunk)
        .arg(users)
        .arg(now_ms())
        .arg(prefix)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(match outcome.as_str() {
        "progress" => ChunkOutcome::Progress { done, total },
        "flipped" => ChunkOutcome::Flipped,
        "superseded" => ChunkOutcome::Superseded,
        "already" => ChunkOutcome::AlreadyComplete,
        "failed" => ChunkOutcome::VersionFailed,
        "bad-chunk" => ChunkOutcome::BadChunk,
        _ => ChunkOutcome::UnknownVersion,
    })
}

/// Marks a version that is still ingesting as failed with `reason`. Returns
/// the state it is in afterwards (a completed version stays as it was).
pub async fn fail(conn: &Redis, keys: &DatasetKeys, version: &str, reason: &str) -> RedisResult<Option<State>> {
    let script = Script::new(include_str!("protocol/fail.lua"));
    let state: String =
        script.key(keys.version(version)).arg(reason).arg(now_ms()).invoke_async(&mut conn.clone()).await?;
    Ok(State::parse(&state))
}

/// Reads the live pointer; `None` when the dataset has no live version.
pub async fn live(conn: &Redis, keys: &DatasetKeys) -> RedisResult<Option<Pointer>> {
    let m: HashMap<String, String> = conn.clone().hgetall(keys.live()).await?;
    Ok(pointer_from(&m))
}

/// Parses the fields of a live pointer hash.
pub fn pointer_from(m: &HashMap<String, String>) -> Option<Pointer> {
    Some(Pointer {
        version: m.get("version").filter(|v| !v.is_empty())?.clone(),
        buckets: m.get("buckets")?.parse().ok()?,
        since_ms: m.get("since_ms").and_then(|s| s.parse().ok()).unwrap_or(0),
        previous: m.get("previous").filter(|p| !p.is_empty()).cloned(),
    })
}

/// Reads one version's record.
pub async fn version_info(conn: &Redis, keys: &DatasetKeys, version: &str) -> RedisResult<Option<VersionInfo>> {
    let m: HashMap<String, String> = conn.clone().hgetall(keys.version(version)).await?;
    if m.is_empty() {
        return Ok(None);
    }
    let num = |k: &str| m.get(k).and_then(|s| s.parse::<u64>().ok());
    let text = |k: &str| m.get(k).cloned().unwrap_or_default();
    Ok(Some(VersionInfo {
        version: version.to_string(),
        state: m.get("state").and_then(|s| State::parse(s)).unwrap_or(State::Failed),
        chunks: num("chunks").unwrap_or(0) as u32,
        chunks_done: num("chunks_done").unwrap_or(0) as u32,
        buckets: num("buckets").unwrap_or(1) as u32,
        users: num("users").unwrap_or(0),
        source: text("source"),
        etag: text("etag"),
        size: num("size").unwrap_or(0),
        format: text("format"),
        created_ms: num("created_ms").unwrap_or(0),
        live_ms: num("live_ms"),
        reason: m.get("reason").cloned(),
    }))
}

/// Every registered version of a dataset, oldest first.
pub async fn versions(conn: &Redis, keys: &DatasetKeys) -> RedisResult<Vec<String>> {
    conn.clone().zrange(keys.versions(), 0, -1).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [State::Ingesting, State::Live, State::Backup, State::Superseded, State::Failed] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert!(State::Backup.is_complete());
        assert!(!State::Ingesting.is_complete());
        assert!(!State::Failed.is_complete());
    }

    #[test]
    fn pointer_needs_version_and_buckets() {
        let mut m = HashMap::new();
        assert_eq!(pointer_from(&m), None);
        m.insert("version".to_string(), "v1".to_string());
        assert_eq!(pointer_from(&m), None);
        m.insert("buckets".to_string(), "3".to_string());
        m.insert("previous".to_string(), String::new());
        let p = pointer_from(&m).unwrap();
        assert_eq!((p.version.as_str(), p.buckets, p.previous), ("v1", 3, None));
    }
}
