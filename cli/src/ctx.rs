//! What every command gets: the configuration, the output mode, and the few
//! helpers they share (connecting to Redis, printing JSON, ages).

use anyhow::Result;
use shared::config::Config;
use shared::db::store::Redis;

/// A command's context.
pub struct Ctx {
    pub config: Config,
    /// `--json`: machine-readable output.
    pub json: bool,
    /// `--full`: version ids in full in human output.
    pub full: bool,
}

impl Ctx {
    /// Connects to Redis, reading the AUTH token from Secrets Manager if configured.
    pub async fn redis(&self) -> Result<Redis> {
        let mut redis = self.config.redis.clone();
        shared::boot::resolve_redis_auth(&mut redis, &shared::boot::sdk_config().await).await?;
        Ok(Redis::connect_checked(&redis).await?)
    }

    /// An SQS client for the configured endpoint.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        ingest::s3::sqs_client(&shared::boot::sdk_config().await)
    }
}

/// Prints `v` as pretty JSON.
pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// "12s ago", "3m ago", "2h5m ago", "4d ago".
pub fn ago(ms: u64) -> String {
    let s = shared::now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h{}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d ago", s / 86400),
    }
}

/// One dataset, or every dataset when none is given.
pub async fn datasets_or_all(redis: &Redis, dataset: Option<String>) -> Result<Vec<String>> {
    Ok(match dataset {
        Some(d) => vec![d],
        None => crate::view::datasets(redis).await?,
    })
}
