use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fsctl::generate::{self, Layout, Options};
use fsctl::upload;
use shared::config::Config;
use shared::store::Redis;

/// Operate the feature store: generate and upload batches.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Put a batch into the bucket; with --wait, follow it until it is live.
    Upload {
        file: PathBuf,
        /// Dataset (the key's first folder); default FS_DEFAULT_DATASET.
        #[arg(long)]
        dataset: Option<String>,
        /// Bucket; default FS_BUCKET.
        #[arg(long)]
        bucket: Option<String>,
        /// Wait for the version to go live (or fail).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config::from_env()?;
    match Cli::parse().command {
        Command::Generate { users, items, format, string_ids, scores, catalog, seed, out } => {
            let opts = Options { users, items, layout: format, string_ids, scores, catalog, seed, first_user: 1 };
            let mut w: Box<dyn Write> = match out {
                Some(p) => Box::new(BufWriter::new(File::create(&p).with_context(|| format!("creating {}", p.display()))?)),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            generate::generate(&opts, &mut w)?;
            w.flush()?;
        }
        Command::Upload { file, dataset, bucket, wait, timeout } => {
            let dataset = dataset.unwrap_or_else(|| config.default_dataset.clone());
            shared::keys::validate_dataset(&dataset)?;
            let bucket = bucket.unwrap_or_else(|| config.bucket.clone());
            let name = file.file_name().and_then(|n| n.to_str()).context("file has no name")?;
            let key = format!("{dataset}/{name}");
            let sdk = shared::aws::sdk_config().await;
            let started = Instant::now();
            let etag = upload::put(&shared::aws::s3_client(&sdk), &bucket, &key, &file).await?;
            let source = format!("s3://{bucket}/{key}");
            println!("uploaded {} to {source} in {} ms", file.display(), started.elapsed().as_millis());
            if wait {
                let redis = Redis::connect(&config.redis).await?;
                let mut last = (u32::MAX, 0);
                let info = upload::wait(&redis, &dataset, &source, &etag, Duration::from_secs(timeout), |done, total| {
                    if (done, total) != last {
                        println!("  chunks {done}/{total}");
                        last = (done, total);
                    }
                })
                .await?;
                println!(
                    "version {} is {} with {} users, {} ms after upload",
                    info.version,
                    info.state.as_str(),
                    info.users,
                    started.elapsed().as_millis()
                );
            }
        }
    }
    Ok(())
}
