//! Operator moves of the live pointer (`rollback`, `promote`): a move that
//! needs the deltas newer than its target replays them onto it first, and
//! what a move did is reported the same way for both.

use anyhow::Result;
use shared::db::protocol;

use crate::ctx::{print_json, Ctx};

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
                let deps = ingest::deps::IngestDeps::new(
                    ctx.config.ingest(),
                    ds.redis().clone(),
                    ingest::s3::source::S3Source::new(s3),
                );
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
