// Over 500 lines: every step of the version protocol, one method each, kept together so its invariants read as one (types in types.rs, scripts beside it).
//! # The version protocol
//!
//! The one module that writes a dataset's live pointer. Its promise: a reader
//! sees the whole old batch or the whole new one, never a mix, never a
//! half-written user. Its steps are the methods of [`Dataset`]; each is one
//! script on the dataset's metadata (one hash tag, so one node, atomic).
//!
//! ## Life of a version
//! 1. **register** (planner): the version record is created once, in state
//!    `ingesting`, with its **plan**: chunk spans (byte ranges, or Parquet
//!    row groups, of the batch's one object or of a folder batch's files,
//!    which the record lists; small files packed several to a chunk) and
//!    bucket count. An
//!    event delivered again finds the record and re-sends the *stored* plan,
//!    so a redeploy with another chunk size or bucket density cannot mix two
//!    plans. A version that would not fit in Redis's free memory is
//!    registered `held` before any write ([`crate::db::memory`]).
//! 2. **write** (ingest): each chunk writes its users under the version's own
//!    data keys ([`crate::keys`]), hashed with the record's bucket count. No
//!    reader looks there yet. A chunk message that does not match the stored
//!    plan is refused.
//! 3. **chunk_written** (ingest, after every write of the chunk is
//!    acknowledged, by replicas too where configured): marks the chunk done;
//!    marking it twice (at-least-once delivery) counts once. The chunk that
//!    makes every chunk done counts the version's users and **finalizes**:
//!    checks the version (duplicate user ids, the share of bad records, no
//!    users at all, the record count its manifest promised), that it is newer than the live version and than any
//!    version rolled back from, and that it has at least
//!    `FS_MIN_USER_FRACTION` of the live version's users; then flips the
//!    pointer. A version failing a check becomes `failed`; one that is not
//!    newer, `superseded`; one that is too small, `held` until promoted.
//!    A chunk that finds its version failed or gone after writing deletes the
//!    version's data itself, so no write outlives the version.
//! 4. **fail**: a version with a permanent error (malformed batch, object
//!    changed under it, abandoned) becomes `failed` and can never go live.
//! 5. **rollback / promote** (operator), the only moves that are not forward:
//!    - `rollback` goes back to a retained backup older than the live
//!      version. The version it left becomes `rolled_back` and the **floor**
//!      rises to it: no version up to the floor goes live by itself again.
//!    - `promote` puts a version held by the user-count guard live when it is
//!      newer than the live version and the floor.
//!    - `promote --force` puts any complete, retained version live (held,
//!      backup, rolled back, superseded), also behind a newer live version or
//!      below the floor; a move backwards raises the floor as a rollback
//!      does. The log records whether a move was forced or went backwards.
//! 6. **retire** (retention, [`crate::db::retention`]): claims a version for
//!    deletion, so no rollback can pick data that is being deleted, and never
//!    one that stopped being live less than the grace ago by the server's
//!    clock (a reader may still hold its pointer).
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
//! - Every time the protocol records or compares is the Redis server's
//!   (`TIME` inside the scripts), never a caller's clock.
//! - All of a dataset's metadata shares the `{dataset}` hash tag, so each step
//!   is one atomic script on one node; data keys are never read through
//!   anything but the pointer or an explicitly named complete version.
//! - Every pointer move is logged in the dataset's log list.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, RedisResult, Script};

use crate::config::{BadRecords, Validation};
use crate::db::store::Redis;
use crate::keys::{self, DatasetKeys, KeyError};

mod types;

pub use types::*;

// The scripts, hashed once per process (invocations send EVALSHA and load
// on NOSCRIPT). Each has the helpers of lib.lua before it.
macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(&[include_str!("lib.lua"), include_str!($file)].concat()))
    };
}
static REGISTER: LazyLock<Script> = script!("register.lua");
static COMPLETE_CHUNK: LazyLock<Script> = script!("complete_chunk.lua");
static FINALIZE: LazyLock<Script> = script!("finalize.lua");
static FAIL: LazyLock<Script> = script!("fail.lua");
static MOVE_POINTER: LazyLock<Script> = script!("move_pointer.lua");
static RETIRE: LazyLock<Script> = script!("retire.lua");
static RESUME: LazyLock<Script> = script!("resume.lua");
/// Applies a delta's users to one bucket ([`crate::db::deltas::apply`]).
pub(crate) static DELTAS_APPLY: LazyLock<Script> = script!("deltas_apply.lua");

/// One dataset's side of the protocol: every step that changes a version's
/// state or the pointer goes through here.
#[derive(Clone)]
pub struct Dataset {
    redis: Redis,
    keys: DatasetKeys,
}

impl Dataset {
    /// The dataset `name` (which must be a valid dataset name) on `redis`.
    pub fn new(redis: &Redis, name: &str) -> Result<Self, KeyError> {
        Ok(Dataset {
            redis: redis.clone(),
            keys: DatasetKeys::new(name)?,
        })
    }

    /// The dataset whose keys are `keys`, on `redis`.
    pub fn of(redis: &Redis, keys: &DatasetKeys) -> Self {
        Dataset {
            redis: redis.clone(),
            keys: keys.clone(),
        }
    }

    pub fn name(&self) -> &str {
        self.keys.dataset()
    }

    pub fn keys(&self) -> &DatasetKeys {
        &self.keys
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Registers a version with its plan (idempotent: a version already
    /// registered keeps the record and plan it has).
    pub async fn register(&self, v: &NewVersion<'_>) -> RedisResult<Registered> {
        let keys = &self.keys;
        let mut inv = REGISTER.key(keys.version(v.version));
        inv.key(keys.versions())
            .key(keys.plan(v.version))
            .arg(v.version);
        let state = if v.hold.is_some() {
            State::Held
        } else {
            State::Ingesting
        };
        let mut fields: Vec<(&str, String)> = vec![
            ("state", state.as_str().into()),
            ("chunks", v.spans.len().to_string()),
            ("chunks_done", "0".into()),
            ("buckets", v.buckets.to_string()),
            ("users", "0".into()),
            ("source", v.source.into()),
            ("etag", v.etag.into()),
            ("size", v.size.to_string()),
            ("format", v.format.into()),
            ("est_bytes", v.est_bytes.to_string()),
            ("version", v.version.into()),
        ];
        if let Some(n) = v.expected_records {
            fields.push(("expected_records", n.to_string()));
        }
        if !v.files.is_empty() {
            fields.push((
                "files",
                serde_json::to_string(v.files).expect("files serialise"),
            ));
        }
        inv.arg(fields.len() * 2 + if v.hold.is_some() { 4 } else { 0 });
        for (k, val) in &fields {
            inv.arg(*k).arg(val);
        }
        if let Some(reason) = v.hold {
            inv.arg("reason").arg(reason).arg("unwritten").arg(1);
        }
        for (i, span) in v.spans.iter().enumerate() {
            inv.arg(i).arg(span.text());
        }
        let mut c = self.redis.clone();
        let reply: String = inv.invoke_async(&mut c).await?;
        // Datasets are listed for operators and the janitor; this lives in
        // another slot, so it is a separate (idempotent) write.
        let _: () = c.sadd(keys::datasets(), keys.dataset()).await?;
        Ok(if reply == "created" {
            Registered::Created
        } else {
            Registered::Existing(State::parse(&reply))
        })
    }

    /// The stored plan of `version`: what its chunks read, in order.
    pub async fn plan(&self, version: &str) -> RedisResult<Vec<ChunkPlan>> {
        let m: HashMap<u32, String> = self.redis.clone().hgetall(self.keys.plan(version)).await?;
        let mut spans: Vec<(u32, ChunkPlan)> = m
            .iter()
            .filter_map(|(i, r)| Some((*i, ChunkPlan::parse(r)?)))
            .collect();
        spans.sort_unstable_by_key(|(i, _)| *i);
        Ok(spans.into_iter().map(|(_, r)| r).collect())
    }

    /// What chunk `chunk` of `version` is planned to read, if it has a plan.
    pub async fn planned_span(&self, version: &str, chunk: u32) -> RedisResult<Option<ChunkPlan>> {
        let r: Option<String> = self
            .redis
            .clone()
            .hget(self.keys.plan(version), chunk)
            .await?;
        Ok(r.as_deref().and_then(ChunkPlan::parse))
    }

    /// Marks a chunk done after its writes were acknowledged. The chunk that
    /// completes the version counts its users and settles it (flip, hold,
    /// supersede or fail). A chunk that finds its version failed or gone
    /// deletes the version's data, since its own writes may have landed after
    /// anyone else cleaned up.
    pub async fn chunk_written(
        &self,
        done: &ChunkDone<'_>,
        validation: &Validation,
    ) -> RedisResult<Step> {
        let keys = &self.keys;
        let (outcome, a, b): (String, u32, String) = COMPLETE_CHUNK
            .key(keys.version(done.version))
            .key(keys.chunks_done(done.version))
            .key(keys.plan(done.version))
            .arg(done.chunk)
            .arg(done.span.text())
            .arg(done.users)
            .arg(done.bad)
            .invoke_async(&mut self.redis.clone())
            .await?;
        let step = match outcome.as_str() {
            "progress" => {
                return Ok(Step::Pending {
                    done: a,
                    total: b.parse().unwrap_or(0),
                })
            }
            "not-planned" => {
                return Ok(Step::NotPlanned {
                    planned: ChunkPlan::parse(&b),
                    chunks: a,
                })
            }
            "ready" => {
                self.finalize(done.version, done.buckets, validation)
                    .await?
            }
            "unknown" => Step::Settled(None),
            other => Step::Settled(State::parse(other)),
        };
        if matches!(step, Step::Settled(None | Some(State::Failed))) && done.users > 0 {
            self.delete_data(done.version, done.buckets).await?;
        }
        Ok(step)
    }

    /// Settles a version whose chunks are all done: counts the distinct users
    /// in its buckets (once), validates it against `validation`, and flips
    /// the live pointer if it passes and every delta newer than it was
    /// replayed onto it ([`Step::Replay`] if not).
    pub async fn finalize(
        &self,
        version: &str,
        buckets: u32,
        validation: &Validation,
    ) -> RedisResult<Step> {
        // Counted once (the script keeps the first count): after a replay,
        // the buckets hold the deltas' users too.
        let counted: Option<u64> = self
            .redis
            .clone()
            .hget(self.keys.version(version), "counted_users")
            .await?;
        let distinct = match counted {
            Some(n) => n,
            None => {
                self.redis
                    .sum_over_buckets(&self.keys, version, buckets, "HLEN")
                    .await?
            }
        };
        let (strict, max_bad) = match validation.bad_records {
            BadRecords::Strict => ("1", 0.0),
            BadRecords::Lenient { max_fraction } => ("0", max_fraction),
        };
        let keys = &self.keys;
        let (outcome, reason): (String, String) = FINALIZE
            .key(keys.version(version))
            .key(keys.live())
            .key(keys.log())
            .key(keys.deltas())
            .key(keys.replayed(version))
            .arg(version)
            .arg(distinct)
            .arg(keys.version(""))
            .arg(strict)
            .arg(max_bad)
            .arg(validation.min_user_fraction)
            .arg(crate::version_id::event_ms(version).unwrap_or(0))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match outcome.as_str() {
            "flipped" => Step::Flipped { users: distinct },
            "replay" => Step::Replay,
            "held" => Step::Held(reason),
            "superseded" => Step::Superseded(reason),
            "failed" => Step::Failed(reason),
            other => Step::Settled(State::parse(other)),
        })
    }

    /// Marks a version that is still ingesting as failed with `reason`.
    /// Returns the state it is in afterwards (a completed version stays as it
    /// was).
    pub async fn fail(&self, version: &str, reason: &str) -> RedisResult<Option<State>> {
        self.fail_if_older(version, reason, Duration::ZERO).await
    }

    /// [`Dataset::fail`], only if the version was registered at least `age`
    /// ago by the server's clock (abandonment); `None` if it is younger.
    pub async fn fail_if_older(
        &self,
        version: &str,
        reason: &str,
        age: Duration,
    ) -> RedisResult<Option<State>> {
        let state: String = FAIL
            .key(self.keys.version(version))
            .key(self.keys.log())
            .arg(reason)
            .arg(version)
            .arg(age.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(State::parse(&state))
    }

    /// Unlinks every data key of `version` (it has `buckets` buckets).
    pub async fn delete_data(&self, version: &str, buckets: u32) -> RedisResult<()> {
        self.redis
            .unlink_buckets(&self.keys, version, buckets)
            .await
            .map(drop)
    }

    async fn move_pointer(&self, kind: &str, target: &str, force: bool) -> RedisResult<Moved> {
        let keys = &self.keys;
        let (outcome, detail): (String, String) = MOVE_POINTER
            .key(keys.version(target))
            .key(keys.live())
            .key(keys.log())
            .key(keys.deltas())
            .key(keys.replayed(target))
            .arg(kind)
            .arg(target)
            .arg(keys.version(""))
            .arg(if force { "1" } else { "0" })
            .arg(crate::version_id::event_ms(target).unwrap_or(0))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match outcome.as_str() {
            "rolled_back" | "promoted" => Moved::Moved {
                left: Some(detail).filter(|d| !d.is_empty()),
            },
            "noop" => Moved::AlreadyLive,
            "replay" => Moved::Replay,
            "unknown" => Moved::UnknownVersion,
            _ => Moved::Refused(detail),
        })
    }

    /// Points the dataset back at a retained backup older than the live
    /// version. The version it leaves becomes `rolled_back`, and no version up
    /// to it goes live by itself.
    pub async fn rollback(&self, target: &str) -> RedisResult<Moved> {
        self.move_pointer("rollback", target, false).await
    }

    /// Flips the dataset to a version held by the user-count guard; with
    /// `force`, to any complete, retained version, wherever it stands.
    pub async fn promote(&self, target: &str, force: bool) -> RedisResult<Moved> {
        self.move_pointer("promote", target, force).await
    }

    /// Puts a version held before any write (the memory guard) back to
    /// `ingesting`; returns its plan, whose chunks the caller sends, or
    /// `None` when it is not such a version.
    pub async fn resume(&self, version: &str) -> RedisResult<Option<Vec<ChunkPlan>>> {
        let resumed: bool = RESUME
            .key(self.keys.version(version))
            .key(self.keys.log())
            .arg(version)
            .invoke_async(&mut self.redis.clone())
            .await?;
        if resumed {
            Ok(Some(self.plan(version).await?))
        } else {
            Ok(None)
        }
    }

    /// Claims `version` for deletion if its state is one of `deletable`, it
    /// is not live, and it stopped being live at least `grace` ago by the
    /// server's clock; returns the state it had, or `None` when it must be
    /// kept.
    pub async fn retire(
        &self,
        version: &str,
        grace: Duration,
        deletable: &[State],
    ) -> RedisResult<Option<State>> {
        let mut inv = RETIRE.key(self.keys.version(version));
        inv.key(self.keys.live())
            .arg(version)
            .arg(grace.as_millis() as u64);
        for s in deletable {
            inv.arg(s.as_str());
        }
        let state: String = inv.invoke_async(&mut self.redis.clone()).await?;
        Ok(State::parse(&state))
    }

    /// Deletes one version's data if [`Dataset::retire`] lets it: not live,
    /// in a deletable state, and out of the grace by the server's clock,
    /// whatever the caller read before. A failed version keeps its record
    /// (marked `data_deleted`, so `status` can say why it failed); any other
    /// is forgotten. Returns the state it had, or `None` when it was kept.
    pub async fn delete_version(
        &self,
        version: &str,
        buckets: u32,
        grace: Duration,
    ) -> RedisResult<Option<State>> {
        const DELETABLE: [State; 4] = [
            State::Backup,
            State::RolledBack,
            State::Superseded,
            State::Failed,
        ];
        let Some(was) = self.retire(version, grace, &DELETABLE).await? else {
            return Ok(None);
        };
        self.delete_data(version, buckets).await?;
        if was == State::Failed {
            let keys = &self.keys;
            redis::pipe()
                .hset(keys.version(version), "state", State::Failed.as_str())
                .hset(keys.version(version), "data_deleted", 1)
                .hdel(keys.version(version), "deleting_from")
                .del(keys.chunks_done(version))
                .del(keys.replayed(version))
                .exec_async(&mut self.redis.clone())
                .await?;
        } else {
            self.forget(version).await?;
        }
        Ok(Some(was))
    }

    /// Deletes a version's record entirely (its data must be gone).
    pub async fn forget(&self, version: &str) -> RedisResult<()> {
        let keys = &self.keys;
        redis::pipe()
            .del(keys.version(version))
            .del(keys.chunks_done(version))
            .del(keys.plan(version))
            .del(keys.replayed(version))
            .zrem(keys.versions(), version)
            .exec_async(&mut self.redis.clone())
            .await
    }

    /// The live pointer; `None` when the dataset has no live version.
    pub async fn live(&self) -> RedisResult<Option<Pointer>> {
        let m: HashMap<String, String> = self.redis.clone().hgetall(self.keys.live()).await?;
        Ok(pointer_from(&m))
    }

    /// One version's record.
    pub async fn version_info(&self, version: &str) -> RedisResult<Option<VersionInfo>> {
        let m: HashMap<String, String> = self
            .redis
            .clone()
            .hgetall(self.keys.version(version))
            .await?;
        Ok(version_from(version, &m))
    }

    /// Every registered version's id, oldest first.
    pub async fn versions(&self) -> RedisResult<Vec<String>> {
        self.redis.clone().zrange(self.keys.versions(), 0, -1).await
    }

    /// Every registered version's record, oldest first (one pipeline; a
    /// version whose record vanished meanwhile is left out).
    pub async fn history(&self) -> RedisResult<Vec<VersionInfo>> {
        let ids = self.versions().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for v in &ids {
            pipe.hgetall(self.keys.version(v));
        }
        // Every key shares the dataset's hash tag: one slot, one pipeline.
        let records: Vec<HashMap<String, String>> =
            pipe.query_async(&mut self.redis.clone()).await?;
        Ok(ids
            .iter()
            .zip(&records)
            .filter_map(|(v, m)| version_from(v, m))
            .collect())
    }

    /// The dataset's most recent log entries, newest first.
    pub async fn log(&self, count: isize) -> RedisResult<Vec<LogEntry>> {
        let raw: Vec<String> = self
            .redis
            .clone()
            .lrange(self.keys.log(), 0, count - 1)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// A user's stored record in `version` (which has `buckets` buckets).
    pub async fn read_user(
        &self,
        version: &str,
        buckets: u32,
        user: &str,
    ) -> RedisResult<Option<Vec<u8>>> {
        self.redis
            .clone()
            .hget(
                self.keys.bucket(version, keys::bucket_of(user, buckets)),
                user,
            )
            .await
    }
}

/// The fields of a live pointer hash.
fn pointer_from(m: &HashMap<String, String>) -> Option<Pointer> {
    Some(Pointer {
        version: m.get("version").filter(|v| !v.is_empty())?.clone(),
        buckets: m.get("buckets")?.parse().ok()?,
        since_ms: m.get("since_ms").and_then(|s| s.parse().ok()).unwrap_or(0),
        previous: m.get("previous").filter(|p| !p.is_empty()).cloned(),
        rolled_back_from: m.get("rolled_back_from").filter(|p| !p.is_empty()).cloned(),
        floor: m.get("floor").filter(|p| !p.is_empty()).cloned(),
    })
}

/// The fields of a version's record hash; `None` when it has none.
fn version_from(version: &str, m: &HashMap<String, String>) -> Option<VersionInfo> {
    if m.is_empty() {
        return None;
    }
    let num = |k: &str| m.get(k).and_then(|s| s.parse::<u64>().ok());
    let text = |k: &str| m.get(k).cloned().unwrap_or_default();
    Some(VersionInfo {
        version: version.to_string(),
        state: m
            .get("state")
            .and_then(|s| State::parse(s))
            .unwrap_or(State::Failed),
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
        files: m
            .get("files")
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default(),
        est_bytes: num("est_bytes").unwrap_or(0),
        unwritten: m.get("unwritten").is_some_and(|u| u == "1"),
        created_ms: num("created_ms").unwrap_or(0),
        written_ms: num("written_ms"),
        completed_ms: num("completed_ms"),
        live_ms: num("live_ms"),
        retired_ms: num("retired_ms"),
        reason: m.get("reason").filter(|r| !r.is_empty()).cloned(),
        data_deleted: m.contains_key("data_deleted"),
        counted_users: num("counted_users"),
    })
}

#[cfg(test)]
mod tests;
