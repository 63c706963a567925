//! Files of folder batches whose commit marker has not landed yet.
//!
//! A data file in a folder batch creates no version by itself; without this
//! list, a folder whose job died before writing `_SUCCESS` would be
//! invisible. The planner notes each such file (idempotently: a repeated
//! event notes it again, under its key) and forgets a folder's files when
//! its marker is planned; `status` shows the folders still waiting. A
//! committed folder is remembered (a field ending in `/`, which no file key
//! does), so a file event delivered after its folder was planned is not
//! taken for a new wait.

use std::collections::BTreeMap;

use redis::{AsyncCommands, RedisResult};

use crate::db::store::Redis;
use crate::keys::DatasetKeys;

/// A folder batch waiting for its marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// `dataset/folder/`.
    pub folder: String,
    pub files: u64,
    pub bytes: u64,
    /// When its first file was noted (this machine's clock).
    pub since_ms: u64,
}

/// Notes the data file `key` (in `folder`) of `size` bytes.
pub async fn note(
    conn: &Redis,
    keys: &DatasetKeys,
    folder: &str,
    key: &str,
    size: u64,
) -> RedisResult<()> {
    let committed: bool = conn.clone().hexists(keys.waiting(), folder).await?;
    if committed {
        return Ok(());
    }
    let value = format!("{size} {} {folder}", crate::now_ms());
    let _: bool = conn.clone().hset_nx(keys.waiting(), key, value).await?;
    // Listed for `status` before any version of the dataset exists.
    let _: () = conn
        .clone()
        .sadd(crate::keys::datasets(), keys.dataset())
        .await?;
    Ok(())
}

/// Forgets every file noted in `folder` (its marker was planned).
pub async fn committed(conn: &Redis, keys: &DatasetKeys, folder: &str) -> RedisResult<()> {
    let all: BTreeMap<String, String> = conn.clone().hgetall(keys.waiting()).await?;
    let mine: Vec<&String> = all
        .keys()
        .filter(|k| k.starts_with(folder) && !k.ends_with('/'))
        .collect();
    if !mine.is_empty() {
        let _: u64 = conn.clone().hdel(keys.waiting(), mine).await?;
    }
    let _: () = conn
        .clone()
        .hset(
            keys.waiting(),
            folder,
            format!("committed {}", crate::now_ms()),
        )
        .await?;
    Ok(())
}

/// The folders of `keys`'s dataset still waiting, oldest first.
pub async fn list(conn: &Redis, keys: &DatasetKeys) -> RedisResult<Vec<Waiting>> {
    let all: BTreeMap<String, String> = conn.clone().hgetall(keys.waiting()).await?;
    let mut folders: BTreeMap<String, Waiting> = BTreeMap::new();
    for (key, value) in &all {
        if key.ends_with('/') {
            continue;
        }
        let mut parts = value.splitn(3, ' ');
        let (Some(size), Some(since), Some(folder)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (size, since) = (size.parse().unwrap_or(0), since.parse().unwrap_or(0));
        let w = folders.entry(folder.to_string()).or_insert(Waiting {
            folder: folder.to_string(),
            files: 0,
            bytes: 0,
            since_ms: since,
        });
        w.files += 1;
        w.bytes += size;
        w.since_ms = w.since_ms.min(since);
    }
    let mut out: Vec<Waiting> = folders.into_values().collect();
    out.sort_by_key(|w| w.since_ms);
    Ok(out)
}
