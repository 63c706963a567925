//! `fsctl rollback <dataset> [--to V]`: point a dataset back at a retained
//! backup (default: the newest, `previous`). The version left becomes `rolled_back` and
//! the floor rises to it, so no late chunk can undo the rollback.

use anyhow::Result;
use shared::db::protocol::Dataset;

use crate::ctx::Ctx;
use crate::moves::{move_replaying, report_move};
use crate::names;

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
    /// Target version, or a unique prefix of it (default: `previous`, the
    /// newest retained backup).
    #[arg(long)]
    to: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let ds = Dataset::new(&redis, &args.dataset)?;
    let target = names::resolve(
        &redis,
        &args.dataset,
        args.to.as_deref().unwrap_or("previous"),
    )
    .await?;
    let moved = move_replaying(ctx, &ds, &target, || ds.rollback(&target)).await?;
    report_move(ctx, moved, "rolled back", &args.dataset, &target)
}
