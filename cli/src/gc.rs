//! `fsctl gc [dataset] [--deep]`: run retention now (what the janitor does on
//! its schedule); `--deep` also scans every primary for data keys of versions
//! nobody knows.

use anyhow::Result;
use serde_json::json;
use shared::db::protocol::Dataset;
use shared::db::retention;

use crate::ctx::{datasets_or_all, print_json, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// One dataset (default: all).
    dataset: Option<String>,
    /// Also scan every primary for data keys of unknown versions.
    #[arg(long)]
    deep: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let mut out = Vec::new();
    for d in datasets_or_all(&redis, args.dataset).await? {
        let ds = Dataset::new(&redis, &d)?;
        let r = retention::gc(&ds, &ctx.config.retention).await?;
        let orphans = if args.deep {
            retention::sweep_orphans(&redis, ds.keys()).await?
        } else {
            0
        };
        out.push(json!({
            "dataset": d,
            "deleted": r.deleted.iter().map(|(v, s)| json!({"version": v, "state": s.as_str()})).collect::<Vec<_>>(),
            "abandoned": r.abandoned,
            "unlinked_keys": r.unlinked_keys,
            "orphan_keys": orphans,
        }));
    }
    if ctx.json {
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
    Ok(())
}
