//! `fsctl max-age <dataset> [<seconds> | none | default]`: how old a
//! dataset's live batch may be before serve's answers say `"stale": true`
//! (or, with `FS_STALE_POLICY=refuse`, are refused). Without a value, shows
//! it. Serve sees a change within its pointer cache's TTL.

use std::time::Duration;

use anyhow::{bail, Result};
use shared::db::settings;
use shared::keys::DatasetKeys;

use crate::ctx::{print_json, Ctx};

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
    /// Seconds; `none` for no limit whatever `FS_MAX_AGE_S` says; `default`
    /// to follow `FS_MAX_AGE_S` again.
    value: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let keys = DatasetKeys::new(&args.dataset)?;
    let redis = ctx.redis().await?;
    if let Some(value) = &args.value {
        let setting = match value.as_str() {
            "default" => None,
            "none" | "0" => Some(None),
            s => match s.parse::<u64>() {
                Ok(n) => Some(Some(Duration::from_secs(n))),
                Err(_) => bail!("expected a number of seconds, `none` or `default`, got {s:?}"),
            },
        };
        settings::set_max_age(&redis, &keys, setting).await?;
    }
    let own = settings::max_age(&redis, &keys).await?;
    let default = ctx.config.serving.max_age;
    let effective = own.unwrap_or(default);
    if ctx.json {
        return print_json(&serde_json::json!({
            "dataset": args.dataset,
            "maxAgeSeconds": effective.map(|d| d.as_secs()),
            "source": if own.is_some() { "dataset" } else { "FS_MAX_AGE_S" },
        }));
    }
    let shown = effective.map_or("no limit".to_string(), |d| format!("{} s", d.as_secs()));
    let source = if own.is_some() {
        "set for the dataset"
    } else {
        "from FS_MAX_AGE_S"
    };
    println!("{}: maximum age {shown} ({source})", args.dataset);
    Ok(())
}
