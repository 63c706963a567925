//! Reading users through the live pointer.
//!
//! A request costs one Redis command (`HGET` of the user's bucket) on the hot
//! path: the dataset's pointer is cached in the process for at most
//! `FS_POINTER_TTL_MS` (default 1 s), so after a flip a warm instance may
//! answer from the previous version for up to that long. That version stays
//! complete and readable meanwhile: nothing in the flip touches its keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use shared::db::keys::{self, DatasetKeys};
use shared::db::protocol::{self, Pointer};
use shared::db::store::Redis;
use tracing::warn;

use crate::api::ApiError;

/// A user's stored record and the version it came from.
#[derive(Debug, Clone)]
pub struct Found {
    pub version: String,
    pub bytes: Vec<u8>,
    /// The live pointer came from the cache (no Redis call for it).
    pub cache_hit: bool,
}

/// Reads users; one per process, shared by all invocations.
pub struct Reader {
    redis: Redis,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Option<Pointer>, Instant)>>,
}

impl Reader {
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Reader { redis, ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The dataset's live pointer, from the cache when fresh enough; tells
    /// whether it was a cache hit.
    pub async fn pointer(&self, keys: &DatasetKeys) -> Result<(Option<Pointer>, bool), ApiError> {
        if let Some((p, at)) = self.cache.lock().expect("pointer cache").get(keys.dataset()) {
            if at.elapsed() < self.ttl {
                return Ok((p.clone(), true));
            }
        }
        let p = protocol::live(&self.redis, keys).await.map_err(unavailable)?;
        self.cache.lock().expect("pointer cache").insert(keys.dataset().to_string(), (p.clone(), Instant::now()));
        Ok((p, false))
    }

    /// Finds `user` in the live version of `dataset`, or in `version` when given.
    pub async fn find(&self, dataset: &str, user: &str, version: Option<&str>) -> Result<Found, ApiError> {
        let keys = DatasetKeys::new(dataset).map_err(|e| ApiError::bad_request(format!("dataset: {e}")))?;
        let mut cache_hit = false;
        let (version, buckets) = match version {
            Some(v) => {
                let info = protocol::version_info(&self.redis, &keys, v).await.map_err(unavailable)?;
                match info {
                    Some(i) if i.state.is_complete() => (i.version, i.buckets),
                    _ => return Err(ApiError::not_found("unknown_version", format!("dataset {dataset} has no complete version {v}"))),
                }
            }
            None => match self.pointer(&keys).await? {
                (Some(p), hit) => {
                    cache_hit = hit;
                    (p.version, p.buckets)
                }
                (None, _) => return Err(self.no_live_version(dataset).await),
            },
        };
        let bytes = protocol::read_user(&self.redis, &keys, &version, buckets, user).await.map_err(unavailable)?;
        match bytes {
            Some(bytes) => Ok(Found { version, bytes, cache_hit }),
            None => Err(ApiError::not_found("unknown_user", format!("user {user} is not in dataset {dataset}"))),
        }
    }

    async fn no_live_version(&self, dataset: &str) -> ApiError {
        let known: Result<bool, _> = self.redis.clone().sismember(keys::datasets(), dataset).await;
        match known {
            Ok(true) => ApiError::not_found("no_live_version", format!("dataset {dataset} has no live version yet")),
            Ok(false) => ApiError::not_found("unknown_dataset", format!("unknown dataset {dataset}")),
            Err(e) => unavailable(e),
        }
    }
}

fn unavailable(e: redis::RedisError) -> ApiError {
    warn!(error = %e, "redis call failed");
    ApiError::unavailable()
}
