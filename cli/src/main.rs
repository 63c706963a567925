//! `fsctl`: operate the feature store. Human output by default, `--json` for
//! scripts. Each command lives in its own module of the `fsctl` library.

use clap::{Parser, Subcommand};
use fsctl::ctx::Ctx;
use fsctl::{
    capacity, forget, gc, generate, get, max_age, promote, redrive, rollback, status, upload,
    versions,
};
use serde_json::json;
use shared::config::Config;

/// Operate the feature store: batches, versions, queues.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// Print version ids in full (lists show the shortest prefix that tells
    /// them apart; every command takes such a prefix, `live` or `previous`).
    #[arg(long, global = true)]
    full: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live version, backups, versions ingesting, held or failed, rejected
    /// uploads and DLQ depths.
    Status(status::Args),
    /// Every version of a dataset, newest first.
    Versions(versions::Args),
    /// One user's record, from the live version or a given one.
    Get(get::Args),
    /// Put a batch into the bucket; with --wait, follow it until it settles.
    Upload(upload::Args),
    /// Move dead-lettered messages back to their queues (chunks, then events).
    Redrive(redrive::Args),
    /// Point a dataset back at a retained backup version.
    Rollback(rollback::Args),
    /// Put a version held by the user-count guard live (newer than the live
    /// version and the rollback floor); a version held before any write (the
    /// memory guard) is ingested now instead.
    Promote(promote::Args),
    /// Remove users from every version kept and every version still loading
    /// (a batch produced later may bring them back).
    Forget(forget::Args),
    /// Run retention now: delete versions nobody needs any more.
    Gc(gc::Args),
    /// Show or set how old a dataset's live batch may be before answers are stale.
    MaxAge(max_age::Args),
    /// Write a synthetic batch.
    Generate(generate::Args),
    /// What to deploy for a refresh of N users, from a sample of the batch:
    /// memory, node type and shards, ingest concurrency, refresh time, cost.
    Capacity(capacity::Args),
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        config: Config::from_env()?,
        json: cli.json,
        full: cli.full,
    };
    match cli.command {
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Versions(a) => versions::run(&ctx, a).await,
        Command::Get(a) => get::run(&ctx, a).await,
        Command::Upload(a) => upload::run(&ctx, a).await,
        Command::Redrive(a) => redrive::run(&ctx, a).await,
        Command::Rollback(a) => rollback::run(&ctx, a).await,
        Command::Promote(a) => promote::run(&ctx, a).await,
        Command::Forget(a) => forget::run(&ctx, a).await,
        Command::Gc(a) => gc::run(&ctx, a).await,
        Command::MaxAge(a) => max_age::run(&ctx, a).await,
        Command::Generate(a) => generate::run(a),
        Command::Capacity(a) => capacity::run(&ctx, a).await,
    }
}
