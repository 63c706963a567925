//! `fsctl rollback <dataset> [--to V]`: point a dataset back at a retained
//! backup (default: the newest). The version left becomes `rolled_back` and
//! the floor rises to it, so no late chunk can undo the rollback.

use anyhow::{Context, Result};
use shared::db::protocol::{Dataset, State};

use crate::ctx::{report_move, Ctx};
use crate::status;

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
    /// Target version (default: the newest retained backup).
    #[arg(long)]
    to: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let ds = Dataset::new(&redis, &args.dataset)?;
    let target = match args.to {
        Some(t) => t,
        None => {
            let live = ds.live().await?.map(|p| p.version);
            status::versions(&redis, &args.dataset)
                .await?
                .into_iter()
                .find(|v| matches!(v.state, State::Backup | State::RolledBack) && Some(&v.version) != live.as_ref())
                .map(|v| v.version)
                .context("no retained backup version to roll back to")?
        }
    };
    report_move(ctx, ds.rollback(&target).await?, "rolled back", &args.dataset, &target)
}
