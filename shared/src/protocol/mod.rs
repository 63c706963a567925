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
//!    acknowledged, by replicas too where configured): one script marks the
//!    chunk done and adds its counts; marking a chunk twice (at-least-once
//!    delivery) counts once. The chunk that makes every chunk done moves the
//!    version to `validating`.
//! 4. **finalize** (the ingest that completed the version, or a redelivery of
//!    its message): one script checks the version (duplicate user ids, the
//!    share of bad records, no users at all), that it is newer than the live
//!    version and than any version rolled back from, and that it has at least
//!    `FS_MIN_USER_FRACTION` of the live version's users; then flips the
//!    pointer. A version failing a check becomes `failed`; one that is not
//!    newer, `superseded`; one that is too small, `held` until promoted.
//! 5. **fail**: a version with a permanent error (malformed batch, object
//!    changed under it) becomes `failed` and can never go live.
//! 6. **rollback / promote** (operator): move the pointer to a retained
//!    backup, or to a held version. A rollback records the version it left as
//!    a floor: versions up to it never go live by themselves again.
//! 7. **retire** (retention, [`crate::retention`]): claims a version for
//!    deletion, so no rollback can pick data that is being deleted.
//!
//! States: `ingesting` → `validating` → `live` → `backup` | `rolled_back`;
//! or → `superseded` | `held` | `failed`; and `deleting` while retention
//! removes a version's data.
//!
//! ## Invariants
//! - The pointer names only a version whose chunks were all acknowledged and
//!   whose data is retained.
//! - Without an operator, the pointer only moves forward in version order (see
//!   [`crate::version_id`]).
//! - All of a dataset's metadata shares the `{dataset}` hash tag, so each step
//!   is one atomic script on one node; data keys are never read through
//!   anything but the pointer or an explicitly named complete version.
//! - Every pointer move is logged in the dataset's log list.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{AsyncCommands, RedisResult, Script};

use crate::config::{BadRecords, Validation};
use crate::keys::{self, DatasetKeys};
use crate::store::Redis;

/// State of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ingesting,
    Validating,
    Live,
    Backup,
    RolledBack,
    Superseded,
    Held,
    Failed,
    Deleting,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ingesting => "ingesting",
            State::Validating => "validating",
            State::Live => "live",
            State::Backup => "backup",
            State::RolledBack => "rolled_back",
            State::Superseded => "superseded",
            State::Held => "held",
            State::Failed => "failed",
            State::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ingesting" => State::Ingesting,
            "validating" => State::Validating,
            "live" => State::Live,
            "backup" => State::Backup,
            "rolled_back" => State::RolledBack,
            "superseded" => State::Superseded,
            "held" => State::Held,
            "failed" => State::Failed,
            "deleting" => State::Deleting,
            _ => return None,
        })
    }

    /// Whether every chunk of the version was written and its data is kept
    /// (so it can be read by explicit version).
    pub fn is_complete(self) -> bool {
        matches!(self, State::Live | State::Backup | State::RolledBack | State::Superseded | State::Held)
    }

    /// Whether the version is still being written.
    pub fn is_in_progress(self) -> bool {
        matches!(self, State::Ingesting | State::Validating)
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
    /// Distinct users (set when the version completes).
    pub users: u64,
    /// Users written by the chunks, duplicates included.
    pub users_written: u64,
    pub bad_records: u64,
    pub duplicates: u64,
    pub source: String,
    pub etag: String,
    pub size: u64,
    pub format: String,
    pub created_ms: u64,
    pub completed_ms: Option<u64>,
    pub live_ms: Option<u64>,
    pub retired_ms: Option<u64>,
    pub reason: Option<String>,
    /// Retention removed the data; the record stays to say why it failed.
    pub data_deleted: bool,
}

/// The live pointer of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub version: String,
    pub buckets: u32,
    pub since_ms: u64,
    pub previous: Option<String>,
    /// Set while the dataset is rolled back: the version it left.
    pub rolled_back_from: Option<String>,
    /// Versions up to this one never go live by themselves (set by rollbacks).
    pub floor: Option<String>,
}

/// What marking a chunk done led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// More chunks to go.
    Progress { done: u32, total: u32 },
    /// Every chunk is done: the caller runs [`finalize`].
    Ready,
    /// The version had settled before (a repeated delivery, or it failed).
    Settled(State),
    /// No such version (never registered, or cleaned up).
    UnknownVersion,
    /// The chunk index is outside the version's chunk count.
    BadChunk,
}

/// What [`finalize`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalized {
    Flipped,
    Held(String),
    Superseded(String),
    Failed(String),
    /// The version was not validating (already settled by another delivery).
    NotValidating(Option<State>),
}

/// An entry of a dataset's log.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct LogEntry {
    pub event: String,
    pub version: String,
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub users: Option<u64>,
    pub at_ms: u64,
}

// The scripts, hashed once per process (invocations send EVALSHA and load
// on NOSCRIPT).
static REGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("register.lua")));
static COMPLETE_CHUNK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("complete_chunk.lua")));
static FINALIZE: LazyLock<Script> = LazyLock::new(|| Script::new(&[include_str!("newer.lua"), include_str!("finalize.lua")].concat()));
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("fail.lua")));
static MOVE_POINTER: LazyLock<Script> = LazyLock::new(|| Script::new(&[include_str!("newer.lua"), include_str!("move_pointer.lua")].concat()));
static RETIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("retire.lua")));

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Registers a version (idempotent). Returns `true` when it was created now,
/// `false` when it already existed.
pub async fn register(conn: &Redis, keys: &DatasetKeys, v: &NewVersion<'_>) -> RedisResult<bool> {
    let script = &*REGISTER;
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

/// Marks chunk `chunk` of `version` done after its `users` were written
/// (and `bad` records skipped).
pub async fn complete_chunk(conn: &Redis, keys: &DatasetKeys, version: &str, chunk: u32, users: u64, bad: u64) -> RedisResult<ChunkOutcome> {
    let script = &*COMPLETE_CHUNK;
    let (outcome, done, total): (String, u32, u32) = script
        .key(keys.version(version))
        .key(keys.chunks_done(version))
        .arg(chunk)
        .arg(users)
        .arg(bad)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(match outcome.as_str() {
        "progress" => ChunkOutcome::Progress { done, total },
        "ready" => ChunkOutcome::Ready,
        "bad-chunk" => ChunkOutcome::BadChunk,
        "unknown" => ChunkOutcome::UnknownVersion,
        other => State::parse(other).map(ChunkOutcome::Settled).unwrap_or(ChunkOutcome::UnknownVersion),
    })
}

/// Settles a version whose chunks are all done: validates it against
/// `validation`, given the `distinct` users found in its buckets, and flips
/// the live pointer if it passes.
pub async fn finalize(conn: &Redis, keys: &DatasetKeys, version: &str, distinct: u64, validation: &Validation) -> RedisResult<Finalized> {
    let script = &*FINALIZE;
    let (strict, max_bad) = match validation.bad_records {
        BadRecords::Strict => ("1", 0.0),
        BadRecords::Lenient { max_fraction } => ("0", max_fraction),
    };
    let (outcome, reason): (String, String) = script
        .key(keys.version(version))
        .key(keys.live())
        .key(keys.log())
        .arg(version)
        .arg(distinct)
        .arg(now_ms())
        .arg(keys.version(""))
        .arg(strict)
        .arg(max_bad)
        .arg(validation.min_user_fraction)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(match outcome.as_str() {
        "flipped" => Finalized::Flipped,
        "held" => Finalized::Held(reason),
        "superseded" => Finalized::Superseded(reason),
        "failed" => Finalized::Failed(reason),
        other => Finalized::NotValidating(State::parse(other)),
    })
}

/// Marks a version that is still ingesting as failed with `reason`. Returns
/// the state it is in afterwards (a completed version stays as it was).
pub async fn fail(conn: &Redis, keys: &DatasetKeys, version: &str, reason: &str) -> RedisResult<Option<State>> {
    let script = &*FAIL;
    let state: String = script
        .key(keys.version(version))
        .key(keys.log())
        .arg(reason)
        .arg(now_ms())
        .arg(version)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(State::parse(&state))
}

/// Result of an operator move of the pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// The pointer moved; holds the version it left (if any).
    Moved { left: Option<String> },
    /// The target is live already.
    AlreadyLive,
    /// Not allowed, with the reason.
    Refused(String),
    UnknownVersion,
}

async fn move_pointer(conn: &Redis, keys: &DatasetKeys, kind: &str, target: &str) -> RedisResult<Moved> {
    let script = &*MOVE_POINTER;
    let (outcome, detail): (String, String) = script
        .key(keys.version(target))
        .key(keys.live())
        .key(keys.log())
        .arg(kind)
        .arg(target)
        .arg(now_ms())
        .arg(keys.version(""))
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(match outcome.as_str() {
        "rolled_back" | "promoted" => Moved::Moved { left: Some(detail).filter(|d| !d.is_empty()) },
        "noop" => Moved::AlreadyLive,
        "unknown" => Moved::UnknownVersion,
        _ => Moved::Refused(detail),
    })
}

/// Points the dataset back at a retained backup version. The version it
/// leaves becomes `rolled_back`, and no version up to it goes live by itself.
pub async fn rollback(conn: &Redis, keys: &DatasetKeys, target: &str) -> RedisResult<Moved> {
    move_pointer(conn, keys, "rollback", target).await
}

/// Flips the dataset to a version held by the user-count guard.
pub async fn promote(conn: &Redis, keys: &DatasetKeys, target: &str) -> RedisResult<Moved> {
    move_pointer(conn, keys, "promote", target).await
}

/// Claims `version` for deletion if its state is one of `deletable` and it is
/// not live; returns the state it had, or `None` when it must be kept.
pub async fn retire(conn: &Redis, keys: &DatasetKeys, version: &str, deletable: &[State]) -> RedisResult<Option<State>> {
    let script = &*RETIRE;
    let mut inv = script.key(keys.version(version));
    inv.key(keys.live()).arg(version);
    for s in deletable {
        inv.arg(s.as_str());
    }
    let state: String = inv.invoke_async(&mut conn.clone()).await?;
    Ok(State::parse(&state))
}

/// The dataset's most recent log entries, newest first.
pub async fn log(conn: &Redis, keys: &DatasetKeys, count: isize) -> RedisResult<Vec<LogEntry>> {
    let raw: Vec<String> = conn.clone().lrange(keys.log(), 0, count - 1).await?;
    Ok(raw.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
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
        rolled_back_from: m.get("rolled_back_from").filter(|p| !p.is_empty()).cloned(),
        floor: m.get("floor").filter(|p| !p.is_empty()).cloned(),
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
        users_written: num("users_written").unwrap_or(0),
        bad_records: num("bad_records").unwrap_or(0),
        duplicates: num("duplicates").unwrap_or(0),
        source: text("source"),
        etag: text("etag"),
        size: num("size").unwrap_or(0),
        format: text("format"),
        created_ms: num("created_ms").unwrap_or(0),
        completed_ms: num("completed_ms"),
        live_ms: num("live_ms"),
        retired_ms: num("retired_ms"),
        reason: m.get("reason").filter(|r| !r.is_empty()).cloned(),
        data_deleted: m.contains_key("data_deleted"),
    }))
}

/// A user's stored record in `version` (which has `buckets` buckets).
pub async fn read_user(conn: &Redis, keys: &DatasetKeys, version: &str, buckets: u32, user: &str) -> RedisResult<Option<Vec<u8>>> {
    conn.clone().hget(keys.bucket(version, keys::bucket_of(user, buckets)), user).await
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
        for s in [State::Ingesting, State::Validating, State::Live, State::Backup, State::RolledBack, State::Superseded, State::Held, State::Failed, State::Deleting] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert!(State::Backup.is_complete());
        assert!(!State::Ingesting.is_complete());
        assert!(!State::Failed.is_complete());
        assert!(!State::Deleting.is_complete());
        assert!(State::Held.is_complete());
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
