//! `fsctl versions <dataset>`: every version of a dataset, newest first, with
//! its state, users, chunks, age and source (or why it failed or is held).

use anyhow::Result;

use crate::ctx::{ago, print_json, Ctx};
use crate::names::Shortener;
use crate::status::{self, VersionView};

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let all = status::versions(&redis, &args.dataset).await?;
    if ctx.json {
        return print_json(&all.iter().map(VersionView::from).collect::<Vec<_>>());
    }
    let short = if ctx.full { Shortener::full() } else { Shortener::new(all.iter().map(|v| v.version.as_str())) };
    let width = all.iter().map(|v| short.short(&v.version).len()).max().unwrap_or(0).max(7);
    println!("{:<width$} {:<12} {:>10} {:>9}  {:<10} source / reason", "version", "state", "users", "chunks", "created");
    for v in &all {
        let note = v.reason.clone().map(|r| format!("  ({r})")).unwrap_or_default();
        println!(
            "{:<width$} {:<12} {:>10} {:>9}  {:<10} {}{note}",
            short.short(&v.version),
            v.state.as_str(),
            v.users,
            format!("{}/{}", v.chunks_done, v.chunks),
            ago(v.created_ms),
            v.source
        );
    }
    Ok(())
}
