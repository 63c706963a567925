//! The read model the commands share: each dataset's versions as operators
//! see them (live, backups, ingesting, held, failed), its deltas, folders
//! waiting for a marker, rejected uploads and queue depths, gathered from
//! Redis and SQS. `status` prints it; `versions`, `forget`, `redrive` and
//! version names read from it.

use anyhow::Result;
use redis::AsyncCommands;
use serde::Serialize;
use shared::config::Queues;
use shared::db::deltas::{self, Delta, DeltaState};
use shared::db::protocol::{self, LogEntry, State, VersionInfo};
use shared::db::store::Redis;
use shared::keys::{self, DatasetKeys};

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
    pub format: String,
    /// Files of a folder batch (0: a batch of one object).
    pub files: usize,
    /// Logged deltas it has: applied while it was live, or replayed onto it.
    pub deltas: u64,
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
            format: i.format.clone(),
            files: i.files.len(),
            deltas: 0,
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
    /// Folder batches whose files arrived and whose marker has not.
    pub waiting: Vec<shared::db::waiting::Waiting>,
    pub log: Vec<LogEntry>,
    pub deltas: DeltaSummary,
}

/// The dataset's deltas, as operators see them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeltaSummary {
    /// Deltas applied since the live version went live, and the users they
    /// upserted or deleted.
    pub applied_since_live: u64,
    pub users_since_live: u64,
    /// The newest delta applied.
    pub last: Option<Delta>,
    /// Deltas still being applied.
    pub applying: Vec<Delta>,
    /// Deltas that applied nothing, with the reason (newest first).
    pub failed: Vec<Delta>,
}

impl DeltaSummary {
    fn of(all: &[Delta], live_since_ms: Option<u64>) -> Self {
        let since = live_since_ms.unwrap_or(0);
        let applied: Vec<&Delta> = all
            .iter()
            .filter(|d| d.state == DeltaState::Applied)
            .collect();
        let recent: Vec<&&Delta> = applied
            .iter()
            .filter(|d| d.applied_ms.unwrap_or(0) >= since)
            .collect();
        DeltaSummary {
            applied_since_live: recent.len() as u64,
            users_since_live: recent.iter().map(|d| d.upserts + d.deletes).sum(),
            last: applied
                .iter()
                .max_by_key(|d| d.applied_ms)
                .map(|d| (*d).clone()),
            applying: all
                .iter()
                .filter(|d| d.state == DeltaState::Applying)
                .cloned()
                .collect(),
            failed: all
                .iter()
                .rev()
                .filter(|d| d.state == DeltaState::Failed)
                .take(5)
                .cloned()
                .collect(),
        }
    }
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
    pub rejected: Vec<shared::db::rejected::Rejected>,
}

/// Every version of a dataset, newest first.
pub async fn versions(redis: &Redis, dataset: &str) -> Result<Vec<VersionInfo>> {
    let mut out = protocol::Dataset::new(redis, dataset)?.history().await?;
    out.reverse();
    Ok(out)
}

/// `all` as operators see them, each with the deltas it has.
pub async fn views(
    redis: &Redis,
    keys: &DatasetKeys,
    all: &[VersionInfo],
) -> Result<Vec<VersionView>> {
    let mut out = Vec::with_capacity(all.len());
    for i in all {
        out.push(VersionView {
            deltas: deltas::count_in(redis, keys, &i.version).await?,
            ..VersionView::from(i)
        });
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
    let ds = protocol::Dataset::new(redis, dataset)?;
    let keys = ds.keys();
    let pointer = ds.live().await?;
    let all = versions(redis, dataset).await?;
    let views = views(redis, keys, &all).await?;
    let view = |i: &VersionInfo| {
        views
            .iter()
            .find(|v| v.version == i.version)
            .cloned()
            .expect("a view per version")
    };
    let pick = |f: &dyn Fn(State) -> bool| {
        all.iter()
            .filter(|i| f(i.state))
            .map(view)
            .collect::<Vec<_>>()
    };
    let logged = deltas::newer_than(redis, keys, 0).await?;
    Ok(DatasetStatus {
        dataset: dataset.to_string(),
        live: all
            .iter()
            .find(|i| Some(&i.version) == pointer.as_ref().map(|p| &p.version))
            .map(view),
        live_since_ms: pointer.as_ref().map(|p| p.since_ms),
        rolled_back_from: pointer.as_ref().and_then(|p| p.rolled_back_from.clone()),
        backups: pick(&|s| matches!(s, State::Backup | State::RolledBack)),
        ingesting: pick(&|s| s.is_in_progress()),
        held: pick(&|s| s == State::Held),
        failed: pick(&|s| s == State::Failed),
        superseded: pick(&|s| s == State::Superseded),
        waiting: shared::db::waiting::list(redis, keys).await?,
        log: ds.log(10).await?,
        deltas: DeltaSummary::of(&logged, pointer.as_ref().map(|p| p.since_ms)),
    })
}

/// Depths of the configured queues.
pub async fn queue_depths(sqs: &aws_sdk_sqs::Client, q: &Queues) -> QueueDepths {
    async fn depth_of(sqs: &aws_sdk_sqs::Client, url: &Option<String>) -> Option<u64> {
        depth(sqs, url.as_deref()?).await.ok()
    }
    QueueDepths {
        events: depth_of(sqs, &q.events).await,
        events_dlq: depth_of(sqs, &q.events_dlq).await,
        chunks: depth_of(sqs, &q.chunks).await,
        chunks_dlq: depth_of(sqs, &q.chunks_dlq).await,
    }
}

/// Visible plus in-flight messages of a queue.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64> {
    use anyhow::Context;
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .with_context(|| format!("reading attributes of {url}"))?;
    let a = out.attributes.unwrap_or_default();
    let n = |k: &QueueAttributeName| a.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(n(&QueueAttributeName::ApproximateNumberOfMessages)
        + n(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
