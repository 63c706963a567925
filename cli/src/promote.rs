//! `fsctl promote <dataset> <version> [--force]`: put a held version live, or
//! ingest one the memory guard held before any write. Without `--force` the
//! pointer only moves forward (newer than the live version and the rollback
//! floor); `--force` puts any complete, retained version live, and the log
//! records that it was forced.

use anyhow::{Context, Result};
use ingest::s3::messages::ChunkMessage;
use shared::db::protocol::{Dataset, Moved};

use crate::ctx::{print_json, Ctx};
use crate::moves::{move_replaying, report_move};
use crate::names;

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promoted {
    /// The pointer moved (or was refused): see [`Moved`].
    Pointer(Moved),
    /// The version was held before any write; its planned chunks were sent.
    Resumed { chunks: usize },
}

/// Promotes `version` of `ds`. A version the memory guard held is resumed:
/// back to `ingesting`, its stored plan sent to `chunks_queue`, so it goes
/// live by itself when its last chunk is in.
pub async fn promote(
    ds: &Dataset,
    sqs: &aws_sdk_sqs::Client,
    chunks_queue: Option<&str>,
    version: &str,
    force: bool,
) -> Result<Promoted> {
    let info = ds.version_info(version).await?;
    if !info.as_ref().is_some_and(|i| i.unwritten) {
        return Ok(Promoted::Pointer(ds.promote(version, force).await?));
    }
    let queue = chunks_queue.context(
        "FS_CHUNKS_QUEUE_URL is not set: it is needed to ingest a version held before any write",
    )?;
    let Some(plan) = ds.resume(version).await? else {
        return Ok(Promoted::Pointer(ds.promote(version, force).await?));
    };
    let info = ds
        .version_info(version)
        .await?
        .context("the version vanished while resumed")?;
    let messages = ChunkMessage::for_version(ds.name(), &info, &plan)
        .context("the version's record names no S3 object")?;
    ingest::plan::send::send_chunks(sqs, queue, &messages).await?;
    Ok(Promoted::Resumed {
        chunks: messages.len(),
    })
}

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
    /// The version, a unique prefix of it, or `previous`.
    version: String,
    /// Put any complete, kept version live, even behind a newer live
    /// version or below the floor (a move backwards rolls back).
    #[arg(long)]
    force: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let Args {
        dataset,
        version,
        force,
    } = args;
    let redis = ctx.redis().await?;
    let ds = Dataset::new(&redis, &dataset)?;
    let version = names::resolve(&redis, &dataset, &version).await?;
    let promoted = match promote(
        &ds,
        &ctx.sqs().await,
        ctx.config.queues.chunks.as_deref(),
        &version,
        force,
    )
    .await?
    {
        Promoted::Pointer(Moved::Replay) => Promoted::Pointer(
            move_replaying(ctx, &ds, &version, || ds.promote(&version, force)).await?,
        ),
        other => other,
    };
    match promoted {
        Promoted::Pointer(m) => report_move(
            ctx,
            m,
            if force {
                "promoted (forced)"
            } else {
                "promoted"
            },
            &dataset,
            &version,
        ),
        Promoted::Resumed { chunks } => {
            if ctx.json {
                return print_json(
                    &serde_json::json!({"dataset": dataset, "resumed": version, "chunks": chunks}),
                );
            }
            println!("{dataset}: {version} was held before any write; sent its {chunks} chunk(s): it goes live when they are in");
            Ok(())
        }
    }
}
