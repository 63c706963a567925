//! `fsctl status`: live version, backups, versions ingesting, held or
//! failed, rejected uploads and DLQ depths, gathered from Redis and SQS
//! (also what `fsctl versions` lists).

use crate::ctx::{ago, datasets_or_all, print_json, Ctx};
use crate::names::Shortener;
use anyhow::Result;
use redis::AsyncCommands;
use serde::Serialize;
use shared::config::Queues;
use shared::db::deltas::{self, Delta, DeltaState};
use shared::db::keys::{self, DatasetKeys};
use shared::db::protocol::{self, LogEntry, State, VersionInfo};
use shared::db::store::Redis;

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
    let keys = DatasetKeys::new(dataset)?;
    let mut out = protocol::Dataset::of(redis, &keys).history().await?;
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
    let keys = DatasetKeys::new(dataset)?;
    let pointer = protocol::Dataset::of(redis, &keys).live().await?;
    let all = versions(redis, dataset).await?;
    let views = views(redis, &keys, &all).await?;
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
    let logged = deltas::newer_than(redis, &keys, 0).await?;
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
        waiting: shared::db::waiting::list(redis, &keys).await?,
        log: protocol::Dataset::of(redis, &keys).log(10).await?,
        deltas: DeltaSummary::of(&logged, pointer.as_ref().map(|p| p.since_ms)),
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

/// `fsctl status [dataset]`.
#[derive(clap::Args)]
pub struct Args {
    /// One dataset (default: all).
    dataset: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let mut datasets = Vec::new();
    for d in &datasets_or_all(&redis, args.dataset).await? {
        datasets.push(dataset_status(&redis, d).await?);
    }
    let queues = queue_depths(&ctx.sqs().await, &ctx.config.queues).await;
    let rejected = shared::db::rejected::recent(&redis, 10).await?;
    let st = Status {
        datasets,
        queues,
        rejected,
    };
    if ctx.json {
        return print_json(&st);
    }
    print_status(&st, ctx.config.retention.abandon_after, ctx.full);
    Ok(())
}

/// `source`, and its file count when it is a folder batch.
fn source_of(v: &VersionView) -> String {
    match v.files {
        0 => v.source.clone(),
        n => format!("{} ({n} files, {})", v.source, v.format),
    }
}

fn print_status(st: &Status, abandon_after: std::time::Duration, full: bool) {
    for d in &st.datasets {
        println!("dataset {}", d.dataset);
        let listed = [&d.backups, &d.ingesting, &d.held, &d.failed, &d.superseded];
        let named = d
            .live
            .iter()
            .chain(listed.into_iter().flatten())
            .map(|v| v.version.as_str());
        let named = named
            .chain(d.log.iter().map(|e| e.version.as_str()))
            .chain(d.rolled_back_from.as_deref());
        let short = if full {
            Shortener::full()
        } else {
            Shortener::new(named)
        };
        let s = |v: &str| short.short(v).to_string();
        match &d.live {
            Some(l) => println!(
                "  live       {}  {} users, {} deltas, since {}{}",
                s(&l.version),
                l.users,
                l.deltas,
                d.live_since_ms.map(ago).unwrap_or_default(),
                d.rolled_back_from
                    .as_ref()
                    .map(|f| format!("  (rolled back from {})", s(f)))
                    .unwrap_or_default()
            ),
            None => println!("  live       none"),
        }
        let ds = &d.deltas;
        if ds.applied_since_live > 0 || ds.last.is_some() {
            println!(
                "  deltas     {} applied since live ({} users){}",
                ds.applied_since_live,
                ds.users_since_live,
                ds.last
                    .as_ref()
                    .map(|l| format!(
                        ", last {} {}",
                        l.source,
                        l.applied_ms.map(ago).unwrap_or_default()
                    ))
                    .unwrap_or_default()
            );
        }
        for x in &ds.applying {
            println!(
                "  delta      applying {}  since {}",
                x.source,
                ago(x.created_ms)
            );
        }
        for x in &ds.failed {
            println!(
                "  DELTA FAILED {}  {}: nothing of it applied",
                x.source,
                x.reason.as_deref().unwrap_or("unknown reason")
            );
        }
        for b in &d.backups {
            println!(
                "  {:<10} {}  {} users, {} deltas",
                if b.state == "rolled_back" {
                    "rolled back"
                } else {
                    "backup"
                },
                s(&b.version),
                b.users,
                b.deltas
            );
        }
        for v in &d.ingesting {
            println!(
                "  ingesting  {}  chunks {}/{}, started {}, ~{} MiB  {}",
                s(&v.version),
                v.chunks_done,
                v.chunks,
                ago(v.created_ms),
                v.est_bytes >> 20,
                source_of(v)
            );
        }
        for v in &d.held {
            println!(
                "  HELD       {}  {} users: {}  (fsctl promote {} {})",
                s(&v.version),
                v.users,
                v.reason.as_deref().unwrap_or(""),
                d.dataset,
                s(&v.version)
            );
        }
        for v in &d.failed {
            println!(
                "  failed     {}  {}: {}",
                s(&v.version),
                source_of(v),
                v.reason.as_deref().unwrap_or("unknown reason")
            );
        }
        for w in &d.waiting {
            let overdue =
                shared::now_ms().saturating_sub(w.since_ms) > abandon_after.as_millis() as u64;
            println!(
                "  {}    {}  {} files, {} MiB, first {}: no `_SUCCESS` or `_manifest.json` yet{}",
                if overdue { "WAITING" } else { "waiting" },
                w.folder,
                w.files,
                w.bytes >> 20,
                ago(w.since_ms),
                if overdue {
                    format!(" (over {} s: did the job finish?)", abandon_after.as_secs())
                } else {
                    String::new()
                }
            );
        }
        for v in &d.superseded {
            println!(
                "  superseded {}  {}",
                s(&v.version),
                v.reason.as_deref().unwrap_or("")
            );
        }
        for e in d.log.iter().take(5) {
            println!(
                "  log        {} {} {}{}",
                ago(e.at_ms),
                e.event,
                s(&e.version),
                e.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
    }
    for r in &st.rejected {
        println!(
            "REJECTED upload {} {}: {}",
            r.source,
            ago(r.at_ms),
            r.reason
        );
    }
    let q = &st.queues;
    let n = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    println!(
        "queues: events {}, events DLQ {}, chunks {}, chunks DLQ {}",
        n(q.events),
        n(q.events_dlq),
        n(q.chunks),
        n(q.chunks_dlq)
    );
}
