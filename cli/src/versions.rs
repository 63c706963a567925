//! `fsctl versions <dataset>`: every version of a dataset, newest first, with
//! its state, users, chunks, age and source (or why it failed or is held).

use anyhow::Result;

use crate::ctx::{ago, print_json, Ctx};
use crate::names::Shortener;
use crate::view;

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let all = view::versions(&redis, &args.dataset).await?;
    let views = view::views(
        &redis,
        &shared::keys::DatasetKeys::new(&args.dataset)?,
        &all,
    )
    .await?;
    if ctx.json {
        return print_json(&views);
    }
    let short = if ctx.full {
        Shortener::full()
    } else {
        Shortener::new(all.iter().map(|v| v.version.as_str()))
    };
    let width = all
        .iter()
        .map(|v| short.short(&v.version).len())
        .max()
        .unwrap_or(0)
        .max(7);
    println!(
        "{:<width$} {:<12} {:>10} {:>9} {:>6}  {:<10} source / reason",
        "version", "state", "users", "chunks", "deltas", "created"
    );
    for v in &views {
        let note = v
            .reason
            .clone()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        println!(
            "{:<width$} {:<12} {:>10} {:>9} {:>6}  {:<10} {}{note}",
            short.short(&v.version),
            v.state,
            v.users,
            format!("{}/{}", v.chunks_done, v.chunks),
            v.deltas,
            ago(v.created_ms),
            v.source
        );
    }
    Ok(())
}
