//! Files of folder batches whose commit marker has not landed yet.
//!
//! A data file in a folder batch creates no version by itself; without this
//! list, a folder whose job died before writing `_SUCCESS` would be
//! invisible. The planner notes each such file (idempotently: a repeated
//! event notes it again, under its key) and forgets a folder's files when
//! its marker is planned; `status` shows the folders still waiting. A
//! folder's own field (ending in `/`, which no file key does) says what its
//! marker is doing: `settling` (the marker is in, its files are still
//! arriving: the planner looks again later) or `committed` with the version
//! it made, so a file that lands after its folder was planned is told apart
//! from a new wait (a *late* file).

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
    /// The marker is in and the planner waits for the files to settle: why.
    pub settling: Option<String>,
}

/// What a folder's own field (`committed <ms> <version>` or
/// `settling <ms> <reason>`) says.
fn folder_state(value: &str) -> Option<FolderState> {
    let mut parts = value.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("committed"), _, version) => Some(FolderState::Committed {
            version: version.map(str::to_string),
        }),
        (Some("settling"), since, reason) => Some(FolderState::Settling {
            since_ms: since.and_then(|s| s.parse().ok()).unwrap_or(0),
            reason: reason.unwrap_or_default().to_string(),
        }),
        _ => None,
    }
}

/// The state `folder`'s own field records, if any.
async fn state_of(
    conn: &Redis,
    keys: &DatasetKeys,
    folder: &str,
) -> RedisResult<Option<FolderState>> {
    let value: Option<String> = conn.clone().hget(keys.waiting(), folder).await?;
    Ok(value.as_deref().and_then(folder_state))
}

/// A folder's marker, as the planner last left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderState {
    /// Since `since_ms`, for `reason`.
    Settling { since_ms: u64, reason: String },
    /// Planned, as `version` (unknown for folders committed before versions were kept).
    Committed { version: Option<String> },
}

/// Notes the data file `key` (in `folder`) of `size` bytes; if its folder
/// was planned already, notes nothing and says as what version.
pub async fn note(
    conn: &Redis,
    keys: &DatasetKeys,
    folder: &str,
    key: &str,
    size: u64,
) -> RedisResult<Option<FolderState>> {
    let state = state_of(conn, keys, folder).await?;
    if let Some(FolderState::Committed { .. }) = state {
        return Ok(state);
    }
    let value = format!("{size} {} {folder}", crate::now_ms());
    let _: bool = conn.clone().hset_nx(keys.waiting(), key, value).await?;
    // Listed for `status` before any version of the dataset exists.
    let _: () = conn
        .clone()
        .sadd(crate::keys::datasets(), keys.dataset())
        .await?;
    Ok(state)
}

/// Notes that `folder`'s marker is in and waits for its files, for `reason`.
pub async fn settling(
    conn: &Redis,
    keys: &DatasetKeys,
    folder: &str,
    reason: &str,
) -> RedisResult<()> {
    let state = state_of(conn, keys, folder).await?;
    if let Some(FolderState::Committed { .. }) = state {
        return Ok(());
    }
    let value = format!("settling {} {reason}", crate::now_ms());
    let _: () = conn.clone().hset(keys.waiting(), folder, value).await?;
    let _: () = conn
        .clone()
        .sadd(crate::keys::datasets(), keys.dataset())
        .await?;
    Ok(())
}

/// Forgets every file noted in `folder` (its marker was planned, as `version`).
pub async fn committed(
    conn: &Redis,
    keys: &DatasetKeys,
    folder: &str,
    version: &str,
) -> RedisResult<()> {
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
            format!("committed {} {version}", crate::now_ms()),
        )
        .await?;
    Ok(())
}

/// The folders of `keys`'s dataset still waiting, oldest first.
pub async fn list(conn: &Redis, keys: &DatasetKeys) -> RedisResult<Vec<Waiting>> {
    let all: BTreeMap<String, String> = conn.clone().hgetall(keys.waiting()).await?;
    let mut folders: BTreeMap<String, Waiting> = BTreeMap::new();
    let waiting = |folder: &str, since: u64| Waiting {
        folder: folder.to_string(),
        files: 0,
        bytes: 0,
        since_ms: since,
        settling: None,
    };
    for (key, value) in &all {
        if key.ends_with('/') {
            if let Some(FolderState::Settling {
                since_ms: since,
                reason,
            }) = folder_state(value)
            {
                let w = folders
                    .entry(key.to_string())
                    .or_insert_with(|| waiting(key, since));
                w.settling = Some(reason);
                w.since_ms = w.since_ms.min(since);
            }
            continue;
        }
        let mut parts = value.splitn(3, ' ');
        let (Some(size), Some(since), Some(folder)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (size, since) = (size.parse().unwrap_or(0), since.parse().unwrap_or(0));
        let w = folders
            .entry(folder.to_string())
            .or_insert_with(|| waiting(folder, since));
        w.files += 1;
        w.bytes += size;
        w.since_ms = w.since_ms.min(since);
    }
    let mut out: Vec<Waiting> = folders.into_values().collect();
    out.sort_by_key(|w| w.since_ms);
    Ok(out)
}
