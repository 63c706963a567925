//! Reading users through the live pointer.
//!
//! A request costs one Redis round trip on the hot path: one `HGET` for a
//! user, or, for a batch, one `HMGET` per bucket the users fall in,
//! pipelined so that each Redis primary gets one round trip. The
//! dataset's pointer (and its own maximum age) is cached in the process for
//! at most `FS_POINTER_TTL_MS` (default 1 s), so after a flip a warm
//! instance may answer from the previous version for up to that long. That
//! version stays complete and readable meanwhile: nothing in the flip
//! touches its keys. A batch reads the pointer once, so all of its users
//! come from one version.
//!
//! The cache holds only datasets that exist: a name is checked against the
//! set of datasets, itself cached, so a caller sending random dataset names
//! costs no Redis call and no memory per name.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::fmt::Write;

use redis::{AsyncCommands, ErrorKind, RedisError, Value};
use shared::db::protocol::{Dataset, Pointer, State};
use shared::db::settings;
use shared::db::store::Redis;
use shared::keys;
use tracing::warn;

use crate::Error;

/// How long a name missing from the cached set of datasets is believed
/// missing before the set is read again.
const MISSING_TTL: Duration = Duration::from_millis(250);

/// The version a request reads, and what its answer says about it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub version: String,
    pub buckets: u32,
    /// When the version went live.
    pub live_ms: Option<u64>,
    /// The dataset's own maximum age: `None` when it has none set (the
    /// deployment's applies), `Some(None)` when set to no limit.
    pub max_age: Option<Option<Duration>>,
    /// Read through the live pointer (not a `version=` the caller named).
    pub through_pointer: bool,
    /// The live pointer came from the cache (no Redis call for it).
    pub cache_hit: bool,
}

/// A dataset's pointer and settings, as last read.
#[derive(Clone)]
struct Entry {
    pointer: Option<Pointer>,
    max_age: Option<Option<Duration>>,
    at: Instant,
}

#[derive(Default)]
struct Cache {
    /// Every dataset, and when the set was read.
    known: Option<(HashSet<String>, Instant)>,
    /// Pointers of datasets in `known`, and only those.
    entries: HashMap<String, Entry>,
}

/// Reads users; one per process, shared by all invocations.
pub struct Reader {
    redis: Redis,
    ttl: Duration,
    cache: Mutex<Cache>,
    /// Redis round trips made, for tests and the bench.
    round_trips: AtomicU64,
}

impl Reader {
    /// The dataset `name` as this reader reads it.
    pub fn dataset(&self, name: &str) -> Result<Dataset, shared::keys::KeyError> {
        Dataset::new(&self.redis, name)
    }

    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Reader {
            redis,
            ttl,
            cache: Mutex::new(Cache::default()),
            round_trips: AtomicU64::new(0),
        }
    }

    /// How long a pointer is cached.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Redis round trips this reader has made: a pipeline to one primary
    /// counts once.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.round_trips.fetch_add(n, Ordering::Relaxed);
    }

    /// Datasets whose pointer the cache holds (at most the datasets that exist).
    pub fn cached_datasets(&self) -> usize {
        self.cache.lock().expect("pointer cache").entries.len()
    }

    /// Whether `dataset` exists, as far as the cached set of datasets knows
    /// (no Redis call): for metrics, which must not be keyed by any name a
    /// caller sends.
    pub fn is_known(&self, dataset: &str) -> bool {
        self.cache
            .lock()
            .expect("pointer cache")
            .known
            .as_ref()
            .is_some_and(|(set, _)| set.contains(dataset))
    }

    /// Whether `dataset` exists: from the cached set when it is fresh (or,
    /// for a missing name, read recently), else from Redis.
    async fn exists(&self, dataset: &str) -> Result<bool, Error> {
        {
            let cache = self.cache.lock().expect("pointer cache");
            if let Some((set, at)) = &cache.known {
                let age = at.elapsed();
                let has = set.contains(dataset);
                if (has && age < self.ttl.max(MISSING_TTL)) || (!has && age < MISSING_TTL) {
                    return Ok(has);
                }
            }
        }
        self.count(1);
        let set: HashSet<String> = self
            .redis
            .clone()
            .smembers(keys::datasets())
            .await
            .map_err(unavailable)?;
        let has = set.contains(dataset);
        let mut cache = self.cache.lock().expect("pointer cache");
        cache.entries.retain(|name, _| set.contains(name));
        cache.known = Some((set, Instant::now()));
        Ok(has)
    }

    /// The dataset's pointer and settings, from the cache when fresh enough;
    /// whether it was a cache hit. An unknown dataset is a 404.
    async fn entry(&self, ds: &Dataset) -> Result<(Entry, bool), Error> {
        let dataset = ds.name();
        if let Some(e) = self
            .cache
            .lock()
            .expect("pointer cache")
            .entries
            .get(dataset)
        {
            if e.at.elapsed() < self.ttl {
                return Ok((e.clone(), true));
            }
        }
        if !self.exists(dataset).await? {
            return Err(Error::not_found(
                "unknown_dataset",
                format!("unknown dataset {dataset}"),
            ));
        }
        self.count(2);
        let (pointer, max_age) =
            tokio::try_join!(ds.live(), settings::max_age(ds.redis(), ds.keys()))
                .map_err(unavailable)?;
        let entry = Entry {
            pointer,
            max_age,
            at: Instant::now(),
        };
        let mut cache = self.cache.lock().expect("pointer cache");
        // Only datasets in the set are kept, so the map is bounded by it.
        if cache
            .known
            .as_ref()
            .is_some_and(|(set, _)| set.contains(dataset))
        {
            cache.entries.insert(dataset.to_string(), entry.clone());
        }
        Ok((entry, false))
    }

    /// The version to read `dataset` from: the live one, or `version` when
    /// given (which must be complete).
    pub async fn resolve(&self, ds: &Dataset, version: Option<&str>) -> Result<Resolved, Error> {
        let dataset = ds.name();
        let (entry, cache_hit) = self.entry(ds).await?;
        match version {
            Some(v) => {
                self.count(1);
                let info = ds.version_info(v).await.map_err(unavailable)?;
                // Callers read the live version and the retained backups;
                // held, rolled-back and superseded ones are for operators.
                match info {
                    Some(i) if matches!(i.state, State::Live | State::Backup) => Ok(Resolved {
                        version: i.version,
                        buckets: i.buckets,
                        live_ms: i.live_ms,
                        max_age: entry.max_age,
                        through_pointer: false,
                        cache_hit,
                    }),
                    _ => Err(Error::not_found(
                        "unknown_version",
                        format!("dataset {dataset} has no live or backup version {v}"),
                    )),
                }
            }
            None => match entry.pointer {
                Some(p) => Ok(Resolved {
                    version: p.version,
                    buckets: p.buckets,
                    live_ms: Some(p.since_ms).filter(|&ms| ms > 0),
                    max_age: entry.max_age,
                    through_pointer: true,
                    cache_hit,
                }),
                None => Err(Error::not_found(
                    "no_live_version",
                    format!("dataset {dataset} has no live version yet"),
                )),
            },
        }
    }

    /// One user's stored record in the resolved version.
    pub async fn read_one(
        &self,
        ds: &Dataset,
        at: &Resolved,
        user: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.count(1);
        ds.read_user(&at.version, at.buckets, user)
            .await
            .map_err(unavailable)
    }

    /// The stored records of `users` in the resolved version (a repeated
    /// id is read once): one `HMGET` per bucket, one pipeline per Redis
    /// primary.
    pub async fn read_many(
        &self,
        ds: &Dataset,
        at: &Resolved,
        users: &[&str],
    ) -> Result<Records, Error> {
        let keys = ds.keys();
        // Sorted by bucket, each bucket's users are one run and a repeated
        // id sits next to itself: no map, and one allocation per command.
        let mut asked: Vec<(u32, &str, usize)> = users
            .iter()
            .enumerate()
            .map(|(i, &u)| (keys::bucket_of(u, at.buckets), u, i))
            .collect();
        asked.sort_unstable();
        let prefix = keys.bucket_prefix(&at.version);
        let mut key = String::with_capacity(prefix.len() + 10);
        let mut index = vec![0; users.len()];
        let (mut cmds, mut distinct) = (Vec::new(), 0);
        for run in asked.chunk_by(|a, b| a.0 == b.0) {
            key.clear();
            let _ = write!(key, "{prefix}{}", run[0].0);
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(&key);
            for (n, &(_, user, place)) in run.iter().enumerate() {
                if n == 0 || run[n - 1].1 != user {
                    cmd.arg(user);
                    distinct += 1;
                }
                index[place] = distinct - 1;
            }
            cmds.push((self.redis.slot_of(&key), cmd));
        }
        let (replies, pipelines) = self
            .redis
            .query_grouped_counted(cmds)
            .await
            .map_err(unavailable)?;
        self.count(pipelines as u64);
        // The fields of each reply, in the order they were asked for.
        let mut values = Vec::with_capacity(distinct);
        for reply in replies {
            let Value::Array(fields) = reply else {
                return Err(unavailable(unexpected(&reply)));
            };
            for v in fields {
                values.push(match v {
                    Value::BulkString(bytes) => Some(bytes),
                    Value::Nil => None,
                    other => return Err(unavailable(unexpected(&other))),
                });
            }
        }
        if values.len() != distinct {
            return Err(unavailable(RedisError::from((
                ErrorKind::Parse,
                "HMGET answered a different number of fields",
            ))));
        }
        Ok(Records { values, index })
    }
}

fn unexpected(v: &Value) -> RedisError {
    RedisError::from((ErrorKind::Parse, "unexpected HMGET reply", format!("{v:?}")))
}

/// What a batch read found: the stored record of each requested user, if
/// the version holds it.
pub struct Records {
    /// One per distinct user.
    values: Vec<Option<Vec<u8>>>,
    /// For each requested user, its place in `values`.
    index: Vec<usize>,
}

impl Records {
    /// Bytes of every record found, as stored.
    pub fn stored_bytes(&self) -> usize {
        self.values.iter().flatten().map(Vec::len).sum()
    }

    /// The stored record of the `i`th requested user.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.values[self.index[i]].as_deref()
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    warn!(error = %e, "redis call failed");
    Error::unavailable()
}
