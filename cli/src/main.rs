//! `fsctl`: operate the feature store. Human output by default, `--json` for scripts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fsctl::generate::{self, Layout, Options};
use fsctl::{redrive, status, upload};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use shared::config::Config;
use shared::keys::DatasetKeys;
use shared::protocol::{self, Moved, State};
use shared::record::Stored;
use shared::retention;
use shared::store::Redis;

/// Operate the feature store: batches, versions, queues.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live version, backups, versions ingesting, held or failed, and DLQ depths.
    Status {
        /// One dataset (default: all).
        dataset: Option<String>,
    },
    /// Every version of a dataset, newest first.
    Versions { dataset: String },
    /// One user's record, from the live version or a given one.
    Get {
        dataset: String,
        user: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// Put a batch into the bucket; with --wait, follow it until it settles.
    Upload {
        file: PathBuf,
        /// Dataset (the key's first folder); default FS_DEFAULT_DATASET.
        #[arg(long)]
        dataset: Option<String>,
        /// Bucket; default FS_BUCKET.
        #[arg(long)]
        bucket: Option<String>,
        /// Wait for the version to go live (or fail, or be held).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Move dead-lettered messages back to their queues (chunks, then events).
    Redrive {
        /// Only this queue's DLQ.
        #[arg(long, value_parser = ["chunks", "events"])]
        queue: Option<String>,
    },
    /// Point a dataset back at a retained backup version.
    Rollback {
        dataset: String,
        /// Target version (default: the newest retained backup).
        #[arg(long)]
        to: Option<String>,
    },
    /// Put a version held by the user-count guard live (newer than the live
    /// version and the rollback floor); a version held before any write (the
    /// memory guard) is ingested now instead.
    Promote {
        dataset: String,
        version: String,
        /// Put any complete, kept version live, even behind a newer live
        /// version or below the floor (a move backwards rolls back).
        #[arg(long)]
        force: bool,
    },
    /// Run retention now: delete versions nobody needs any more.
    Gc {
        /// One dataset (default: all).
        dataset: Option<String>,
        /// Also scan every primary for data keys of unknown versions.
        #[arg(long)]
        deep: bool,
    },
    /// Write a synthetic batch.
    Generate {
        /// Number of users.
        #[arg(long, default_value_t = 1000)]
        users: u64,
        /// Items per user.
        #[arg(long, default_value_t = 10)]
        items: usize,
        #[arg(long, value_enum, default_value_t = Layout::Jsonl)]
        format: Layout,
        /// String user and item ids (`"u1"`, `"i42"`) instead of integers.
        #[arg(long)]
        string_ids: bool,
        /// Add a `scores` field aligned with the items.
        #[arg(long)]
        scores: bool,
        /// Size of the item catalogue.
        #[arg(long, default_value_t = 50_000)]
        catalog: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    if let Err(e) = run(cli).await {
        if json {
            println!("{}", json!({ "error": format!("{e:#}") }));
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}

/// Connects to Redis, reading the AUTH token from Secrets Manager if configured.
async fn connect(config: &Config) -> Result<Redis> {
    let mut redis = config.redis.clone();
    shared::aws::resolve_redis_auth(&mut redis, &shared::aws::sdk_config().await).await?;
    Ok(Redis::connect_checked(&redis).await?)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn ago(ms: u64) -> String {
    let now = protocol::now_ms();
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h{}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d ago", s / 86400),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = Config::from_env()?;
    let json = cli.json;
    match cli.command {
        Command::Generate { users, items, format, string_ids, scores, catalog, seed, out } => {
            let opts = Options { users, items, layout: format, string_ids, scores, catalog, seed, first_user: 1 };
            let mut w: Box<dyn Write> = match out {
                Some(p) => Box::new(BufWriter::new(File::create(&p).with_context(|| format!("creating {}", p.display()))?)),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            generate::generate(&opts, &mut w)?;
            w.flush()?;
        }
        Command::Status { dataset } => {
            let redis = connect(&config).await?;
            let names = match dataset {
                Some(d) => vec![d],
                None => status::datasets(&redis).await?,
            };
            let mut datasets = Vec::new();
            for d in &names {
                datasets.push(status::dataset_status(&redis, d).await?);
            }
            let sdk = shared::aws::sdk_config().await;
            let queues = status::queue_depths(&shared::aws::sqs_client(&sdk), &config.queues).await;
            let rejected = shared::rejected::recent(&redis, 10).await?;
            let st = status::Status { datasets, queues, rejected };
            if json {
                return print_json(&st);
            }
            print_status(&st);
        }
        Command::Versions { dataset } => {
            let redis = connect(&config).await?;
            let all = status::versions(&redis, &dataset).await?;
            if json {
                return print_json(&all.iter().map(status::VersionView::from).collect::<Vec<_>>());
            }
            println!("{:<62} {:<12} {:>10} {:>9}  {:<10} source / reason", "version", "state", "users", "chunks", "created");
            for v in &all {
                let note = v.reason.clone().map(|r| format!("  ({r})")).unwrap_or_default();
                println!(
                    "{:<62} {:<12} {:>10} {:>9}  {:<10} {}{note}",
                    v.version,
                    v.state.as_str(),
                    v.users,
                    format!("{}/{}", v.chunks_done, v.chunks),
                    ago(v.created_ms),
                    v.source
                );
            }
        }
        Command::Get { dataset, user, version } => {
            let redis = connect(&config).await?;
            let keys = DatasetKeys::new(&dataset)?;
            let (version, buckets) = match version {
                Some(v) => {
                    let info = protocol::version_info(&redis, &keys, &v).await?.with_context(|| format!("no version {v}"))?;
                    if !info.state.is_complete() {
                        bail!("version {v} is {}; only complete versions can be read", info.state.as_str());
                    }
                    (v, info.buckets)
                }
                None => {
                    let p = protocol::live(&redis, &keys).await?.with_context(|| format!("dataset {dataset} has no live version"))?;
                    (p.version, p.buckets)
                }
            };
            let bytes = protocol::read_user(&redis, &keys, &version, buckets, &user)
                .await?
                .with_context(|| format!("user {user} is not in version {version} of {dataset}"))?;
            let s = Stored::decode(&bytes)?;
            let record = json!({
                "dataset": dataset,
                "version": version,
                "userId": if s.user_is_int { user.parse::<i64>().map(serde_json::Value::from).unwrap_or(json!(user)) } else { json!(user) },
                "items": s.items.iter().map(shared::record::ItemId::to_json).collect::<Vec<_>>(),
                "fields": s.other.map(|o| serde_json::from_str::<serde_json::Value>(o.get())).transpose()?.unwrap_or(json!({})),
            });
            if json {
                return print_json(&record);
            }
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
        Command::Upload { file, dataset, bucket, wait, timeout } => upload_cmd(&config, file, dataset, bucket, wait, timeout, json).await?,
        Command::Redrive { queue } => {
            let sdk = shared::aws::sdk_config().await;
            let sqs = shared::aws::sqs_client(&sdk);
            let q = &config.queues;
            let mut pairs = Vec::new();
            if queue.as_deref() != Some("events") {
                pairs.push((
                    q.chunks_dlq.clone().context("FS_CHUNKS_DLQ_URL is not set")?,
                    q.chunks.clone().context("FS_CHUNKS_QUEUE_URL is not set")?,
                ));
            }
            if queue.as_deref() != Some("chunks") {
                pairs.push((
                    q.events_dlq.clone().context("FS_EVENTS_DLQ_URL is not set")?,
                    q.events.clone().context("FS_EVENTS_QUEUE_URL is not set")?,
                ));
            }
            let mut done = Vec::new();
            for (dlq, source) in pairs {
                done.push(redrive::redrive(&sqs, &dlq, &source).await?);
            }
            if json {
                return print_json(&done);
            }
            for r in done {
                println!("moved {} message(s) from {} to {} ({})", r.messages, r.from, r.to, r.method);
            }
        }
        Command::Rollback { dataset, to } => {
            let redis = connect(&config).await?;
            let keys = DatasetKeys::new(&dataset)?;
            let target = match to {
                Some(t) => t,
                None => {
                    let live = protocol::live(&redis, &keys).await?.map(|p| p.version);
                    status::versions(&redis, &dataset)
                        .await?
                        .into_iter()
                        .find(|v| matches!(v.state, State::Backup | State::RolledBack) && Some(&v.version) != live.as_ref())
                        .map(|v| v.version)
                        .context("no retained backup version to roll back to")?
                }
            };
            let ds = protocol::Dataset::new(&redis, keys.dataset())?;
            report_move(ds.rollback(&target).await?, "rolled back", &dataset, &target, json)?;
        }
        Command::Promote { dataset, version, force } => {
            let redis = connect(&config).await?;
            let ds = protocol::Dataset::new(&redis, &dataset)?;
            let sqs = shared::aws::sqs_client(&shared::aws::sdk_config().await);
            match fsctl::promote::promote(&ds, &sqs, config.queues.chunks.as_deref(), &version, force).await? {
                fsctl::promote::Promoted::Pointer(m) => {
                    let verb = if force { "promoted (forced)" } else { "promoted" };
                    report_move(m, verb, &dataset, &version, json)?;
                }
                fsctl::promote::Promoted::Resumed { chunks } => {
                    if json {
                        return print_json(&json!({"dataset": dataset, "resumed": version, "chunks": chunks}));
                    }
                    println!("{dataset}: {version} was held before any write; sent its {chunks} chunk(s): it goes live when they are in");
                }
            }
        }
        Command::Gc { dataset, deep } => {
            let redis = connect(&config).await?;
            let names = match dataset {
                Some(d) => vec![d],
                None => status::datasets(&redis).await?,
            };
            let mut out = Vec::new();
            for d in names {
                let ds = protocol::Dataset::new(&redis, &d)?;
                let r = retention::gc(&ds, &config.retention).await?;
                let orphans = if deep { retention::sweep_orphans(&redis, ds.keys()).await? } else { 0 };
                out.push(json!({
                    "dataset": d,
                    "deleted": r.deleted.iter().map(|(v, s)| json!({"version": v, "state": s.as_str()})).collect::<Vec<_>>(),
                    "abandoned": r.abandoned,
                    "unlinked_keys": r.unlinked_keys,
                    "orphan_keys": orphans,
                }));
            }
            if json {
                return print_json(&out);
            }
            for d in out {
                println!(
                    "{}: deleted {} version(s), {} key(s); abandoned {}; orphan keys {}",
                    d["dataset"].as_str().unwrap_or(""),
                    d["deleted"].as_array().map_or(0, |a| a.len()),
                    d["unlinked_keys"],
                    d["abandoned"].as_array().map_or(0, |a| a.len()),
                    d["orphan_keys"]
                );
            }
        }
    }
    Ok(())
}

fn report_move(m: Moved, verb: &str, dataset: &str, target: &str, json: bool) -> Result<()> {
    match m {
        Moved::Moved { left } => {
            if json {
                return print_json(&json!({"dataset": dataset, "live": target, "left": left}));
            }
            println!("{dataset}: {verb} to {target} (was {})", left.unwrap_or_else(|| "nothing".into()));
            Ok(())
        }
        Moved::AlreadyLive => {
            if json {
                return print_json(&json!({"dataset": dataset, "live": target, "left": null}));
            }
            println!("{dataset}: {target} is already live");
            Ok(())
        }
        Moved::Refused(why) => bail!("{dataset}: cannot move to {target}: {why}"),
        Moved::UnknownVersion => bail!("{dataset}: no version {target}"),
    }
}

fn print_status(st: &status::Status) {
    for d in &st.datasets {
        println!("dataset {}", d.dataset);
        match &d.live {
            Some(l) => println!(
                "  live       {}  {} users, since {}{}",
                l.version,
                l.users,
                d.live_since_ms.map(ago).unwrap_or_default(),
                d.rolled_back_from.as_ref().map(|f| format!("  (rolled back from {f})")).unwrap_or_default()
            ),
            None => println!("  live       none"),
        }
        for b in &d.backups {
            println!("  {:<10} {}  {} users", if b.state == "rolled_back" { "rolled back" } else { "backup" }, b.version, b.users);
        }
        for v in &d.ingesting {
            println!(
                "  ingesting  {}  chunks {}/{}, started {}, ~{} MiB  {}",
                v.version,
                v.chunks_done,
                v.chunks,
                ago(v.created_ms),
                v.est_bytes >> 20,
                v.source
            );
        }
        for v in &d.held {
            println!("  HELD       {}  {} users: {}  (fsctl promote {} {})", v.version, v.users, v.reason.as_deref().unwrap_or(""), d.dataset, v.version);
        }
        for v in &d.failed {
            println!("  failed     {}  {}: {}", v.version, v.source, v.reason.as_deref().unwrap_or("unknown reason"));
        }
        for v in &d.superseded {
            println!("  superseded {}  {}", v.version, v.reason.as_deref().unwrap_or(""));
        }
        for e in d.log.iter().take(5) {
            println!("  log        {} {} {}{}", ago(e.at_ms), e.event, e.version, e.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default());
        }
    }
    for r in &st.rejected {
        println!("REJECTED upload {} {}: {}", r.source, ago(r.at_ms), r.reason);
    }
    let q = &st.queues;
    let n = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    println!("queues: events {}, events DLQ {}, chunks {}, chunks DLQ {}", n(q.events), n(q.events_dlq), n(q.chunks), n(q.chunks_dlq));
}

async fn upload_cmd(config: &Config, file: PathBuf, dataset: Option<String>, bucket: Option<String>, wait: bool, timeout: u64, json: bool) -> Result<()> {
    let dataset = dataset.unwrap_or_else(|| config.default_dataset.clone());
    shared::keys::validate_dataset(&dataset)?;
    let bucket = bucket.unwrap_or_else(|| config.bucket.clone());
    let name = file.file_name().and_then(|n| n.to_str()).context("file has no name")?;
    let key = format!("{dataset}/{name}");
    let size = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
    let sdk = shared::aws::sdk_config().await;
    let started = Instant::now();
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(size) };
    bar.set_style(ProgressStyle::with_template("upload  {bar:40} {bytes}/{total_bytes} {bytes_per_sec}").expect("template"));
    let etag = upload::put(&shared::aws::s3_client(&sdk), &bucket, &key, &file, upload::MULTIPART_FROM, |sent| bar.set_position(sent)).await?;
    bar.finish_and_clear();
    let source = format!("s3://{bucket}/{key}");
    if !json {
        println!("uploaded {} ({size} bytes) to {source} in {} ms", file.display(), started.elapsed().as_millis());
    }
    if !wait {
        if json {
            print_json(&json!({"source": source, "etag": etag}))?;
        }
        return Ok(());
    }
    let redis = connect(config).await?;
    let chunks = if json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    chunks.set_style(ProgressStyle::with_template("ingest  {bar:40} {pos}/{len} chunks {elapsed}").expect("template"));
    let info = upload::wait(&redis, &dataset, &source, &etag, Duration::from_secs(timeout), |done, total| {
        chunks.set_length(u64::from(total));
        chunks.set_position(u64::from(done));
    })
    .await;
    chunks.finish_and_clear();
    let info = info?;
    if info.state == State::Failed && !json {
        bail!("version {} failed: {}", info.version, info.reason.unwrap_or_default());
    }
    if json {
        return print_json(&json!({
            "source": source, "version": info.version, "state": info.state.as_str(), "users": info.users,
            "reason": info.reason, "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    match info.state {
        State::Held => println!("version {} is HELD: {} (fsctl promote {dataset} {})", info.version, info.reason.unwrap_or_default(), info.version),
        _ => println!(
            "version {} is {} with {} users, {} ms after upload{}",
            info.version,
            info.state.as_str(),
            info.users,
            started.elapsed().as_millis(),
            info.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    }
    Ok(())
}
