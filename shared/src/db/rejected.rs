//! Uploads the planner rejected outright: an object whose key names no valid
//! dataset, or whose event carries no usable time, belongs to no dataset and
//! gets no version, so without this list it would vanish with a log line and
//! `fsctl upload --wait` would wait until its timeout.

use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};

use crate::db::store::Redis;
use crate::keys;

/// Rejected uploads kept, newest first.
pub const KEEP: isize = 100;

/// One rejected upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// `s3://bucket/key`.
    pub source: String,
    /// The object's ETag as the event gave it, without quotes (may be empty).
    pub etag: String,
    pub reason: String,
    pub at_ms: u64,
}

/// Records that the upload of `source` (with `etag`) was rejected.
pub async fn record(conn: &Redis, source: &str, etag: &str, reason: &str) -> RedisResult<()> {
    let entry = Rejected {
        source: source.into(),
        etag: crate::bare_etag(etag).into(),
        reason: reason.into(),
        at_ms: crate::now_ms(),
    };
    let json = serde_json::to_string(&entry).expect("rejection serialises");
    redis::pipe()
        .lpush(keys::rejected(), json)
        .ltrim(keys::rejected(), 0, KEEP - 1)
        .exec_async(&mut conn.clone())
        .await
}

/// The most recent rejected uploads, newest first.
pub async fn recent(conn: &Redis, count: isize) -> RedisResult<Vec<Rejected>> {
    let raw: Vec<String> = conn.clone().lrange(keys::rejected(), 0, count - 1).await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

/// The rejection of `source` with `etag`, if the planner rejected it.
pub async fn find(conn: &Redis, source: &str, etag: &str) -> RedisResult<Option<Rejected>> {
    let etag = crate::bare_etag(etag);
    Ok(recent(conn, KEEP)
        .await?
        .into_iter()
        .find(|r| r.source == source && (r.etag.is_empty() || r.etag == etag)))
}
