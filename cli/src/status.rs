//! What `fsctl status` and `fsctl versions` report, gathered from Redis and SQS.

use anyhow::Result;
use redis::AsyncCommands;
use serde::Serialize;
use shared::config::Queues;
use shared::keys::{self, DatasetKeys};
use shared::protocol::{self, LogEntry, State, VersionInfo};
use shared::store::Redis;

/// One version, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub version: String,
    pub state: &'static str,
    pub users: u64,
    pub chunks_done: u32,
    pub chunks: u32,
    pub bad_records: u64,
    pub source: String,
    pub created_ms: u64,
    pub live_ms: Option<u64>,
    pub reason: Option<String>,
    /// Estimated bytes in Redis (the memory guard's figure; 0: unknown).
    pub est_bytes: u64,
}

impl From<&VersionInfo> for VersionView {
    fn from(i: &VersionInfo) -> Self {
        VersionView {
            version: i.version.clone(),
            state: i.state.as_str(),
            users: i.users,
            chunks_done: i.chunks_done,
            chunks: i.chunks,
            bad_records: i.bad_records,
            source: i.source.clone(),
            created_ms: i.created_ms,
            live_ms: i.live_ms,
            reason: i.reason.clone(),
            est_bytes: i.est_bytes,
        }
    }
}

/// A dataset's state.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub dataset: String,
    pub live: Option<VersionView>,
    pub live_since_ms: Option<u64>,
    /// Set while rolled back: the version the dataset left.
    pub rolled_back_from: Option<String>,
    pub backups: Vec<VersionView>,
    pub ingesting: Vec<VersionView>,
    pub held: Vec<VersionView>,
    pub failed: Vec<VersionView>,
    pub superseded: Vec<VersionView>,
    pub log: Vec<LogEntry>,
}

/// Depths of the queues (visible plus in flight).
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueDepths {
    pub events: Option<u64>,
    pub events_dlq: Option<u64>,
    pub chunks: Option<u64>,
    pub chunks_dlq: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub datasets: Vec<DatasetStatus>,
    pub queues: QueueDepths,
    /// Uploads the planner rejected before any dataset held them.
    pub rejected: Vec<shared::rejected::Rejected>,
}

/// Every version of a dataset, newest first.
pub async fn versions(redis: &Redis, dataset: &str) -> Result<Vec<VersionInfo>> {
    let keys = DatasetKeys::new(dataset)?;
    let mut out = Vec::new();
    for v in protocol::versions(redis, &keys).await?.iter().rev() {
        if let Some(i) = protocol::version_info(redis, &keys, v).await? {
            out.push(i);
        }
    }
    Ok(out)
}

/// Every dataset that ever registered a version.
pub async fn datasets(redis: &Redis) -> Result<Vec<String>> {
    let mut d: Vec<String> = redis.clone().smembers(keys::datasets()).await?;
    d.sort();
    Ok(d)
}

/// The status of one dataset.
pub async fn dataset_status(redis: &Redis, dataset: &str) -> Result<DatasetStatus> {
    let keys = DatasetKeys::new(dataset)?;
    let pointer = protocol::live(redis, &keys).await?;
    let all = versions(redis, dataset).await?;
    let pick = |f: &dyn Fn(State) -> bool| all.iter().filter(|i| f(i.state)).map(VersionView::from).collect::<Vec<_>>();
    Ok(DatasetStatus {
        dataset: dataset.to_string(),
        live: all.iter().find(|i| Some(&i.version) == pointer.as_ref().map(|p| &p.version)).map(VersionView::from),
        live_since_ms: pointer.as_ref().map(|p| p.since_ms),
        rolled_back_from: pointer.as_ref().and_then(|p| p.rolled_back_from.clone()),
        backups: pick(&|s| matches!(s, State::Backup | State::RolledBack)),
        ingesting: pick(&|s| s.is_in_progress()),
        held: pick(&|s| s == State::Held),
        failed: pick(&|s| s == State::Failed),
        superseded: pick(&|s| s == State::Superseded),
        log: protocol::log(redis, &keys, 10).await?,
    })
}

/// Depths of the configured queues.
pub async fn queue_depths(sqs: &aws_sdk_sqs::Client, q: &Queues) -> QueueDepths {
    async fn depth(sqs: &aws_sdk_sqs::Client, url: &Option<String>) -> Option<u64> {
        crate::redrive::depth(sqs, url.as_deref()?).await.ok()
    }
    QueueDepths {
        events: depth(sqs, &q.events).await,
        events_dlq: depth(sqs, &q.events_dlq).await,
        chunks: depth(sqs, &q.chunks).await,
        chunks_dlq: depth(sqs, &q.chunks_dlq).await,
    }
}
