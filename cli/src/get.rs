//! `fsctl get <dataset> <userId> [--version V]`: one user's record as Redis
//! holds it, from the live version or a given complete one.

use anyhow::{bail, Context, Result};
use serde_json::json;
use shared::db::protocol;
use shared::record::{ItemId, Stored};

use crate::ctx::{print_json, Ctx};
use crate::names;

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
    user: String,
    /// A complete version, a unique prefix of it, or `previous` (default:
    /// the live version).
    #[arg(long)]
    version: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let Args {
        dataset,
        user,
        version,
    } = args;
    let redis = ctx.redis().await?;
    let ds = protocol::Dataset::new(&redis, &dataset)?;
    let (version, buckets) = match version {
        Some(v) => {
            let v = names::resolve(&redis, &dataset, &v).await?;
            let info = ds
                .version_info(&v)
                .await?
                .with_context(|| format!("no version {v}"))?;
            if !info.state.is_complete() {
                bail!(
                    "version {v} is {}; only complete versions can be read",
                    info.state.as_str()
                );
            }
            (v, info.buckets)
        }
        None => {
            let p = ds
                .live()
                .await?
                .with_context(|| format!("dataset {dataset} has no live version"))?;
            (p.version, p.buckets)
        }
    };
    let bytes = ds
        .read_user(&version, buckets, &user)
        .await?
        .with_context(|| format!("user {user} is not in version {version} of {dataset}"))?;
    let s = Stored::decode(&bytes)?;
    let record = json!({
        "dataset": dataset,
        "version": version,
        "userId": if s.user_is_int { user.parse::<i64>().map(serde_json::Value::from).unwrap_or(json!(user)) } else { json!(user) },
        "items": s.items.iter().map(ItemId::to_json).collect::<Vec<_>>(),
        "fields": s.other.map(|o| serde_json::from_str::<serde_json::Value>(o.get())).transpose()?.unwrap_or(json!({})),
    });
    if ctx.json {
        return print_json(&record);
    }
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(())
}
