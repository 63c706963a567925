//! What every command gets: the configuration, the output mode, and the few
//! helpers they share (connecting to Redis, printing JSON, ages).

use anyhow::Result;
use shared::config::Config;
use shared::db::protocol;
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
        None => crate::status::datasets(redis).await?,
    })
}

/// Moves the pointer to `target` with `step` (a rollback or a promote); when
/// the move asks for the deltas newer than `target` first, replays them onto
/// it (reading them from S3) and moves again.
pub async fn move_replaying<F, Fut>(
    ctx: &Ctx,
    ds: &protocol::Dataset,
    target: &str,
    step: F,
) -> Result<protocol::Moved>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<protocol::Moved>>,
{
    loop {
        match step().await? {
            protocol::Moved::Replay => {
                let info = ds
                    .version_info(target)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("version {target} vanished"))?;
                let s3 = ingest::s3::s3_client(&shared::boot::sdk_config().await);
                let deps = ingest::deps::IngestDeps {
                    config: ctx.config.ingest(),
                    redis: ds.redis().clone(),
                    source: ingest::s3::source::S3Source::new(s3),
                };
                let users = ingest::load::delta::replay(&deps, ds, target, info.buckets).await?;
                if !ctx.json {
                    println!(
                        "{}: replayed deltas newer than {target} onto it first ({users} users)",
                        ds.name()
                    );
                }
            }
            moved => return Ok(moved),
        }
    }
}

/// Prints what a pointer move (rollback, promote) did; a refused move is an error.
pub fn report_move(
    ctx: &Ctx,
    m: protocol::Moved,
    verb: &str,
    dataset: &str,
    target: &str,
) -> Result<()> {
    use protocol::Moved;
    match m {
        Moved::Moved { left } => {
            if ctx.json {
                return print_json(
                    &serde_json::json!({"dataset": dataset, "live": target, "left": left}),
                );
            }
            println!(
                "{dataset}: {verb} to {target} (was {})",
                left.unwrap_or_else(|| "nothing".into())
            );
            Ok(())
        }
        Moved::AlreadyLive => {
            if ctx.json {
                return print_json(
                    &serde_json::json!({"dataset": dataset, "live": target, "left": null}),
                );
            }
            println!("{dataset}: {target} is already live");
            Ok(())
        }
        Moved::Refused(why) => anyhow::bail!("{dataset}: cannot move to {target}: {why}"),
        Moved::UnknownVersion => anyhow::bail!("{dataset}: no version {target}"),
        Moved::Replay => anyhow::bail!(
            "{dataset}: {target} lacks deltas newer than it; they must be replayed onto it first"
        ),
    }
}
