//! Moving messages from a dead-letter queue back to its source queue.
//!
//! Uses SQS's `StartMessageMoveTask` where the endpoint supports it; otherwise
//! receives, re-sends and deletes, in that order, so a message is never lost
//! (at worst delivered twice, which the pipeline tolerates).
//!
//! A redrive completes a version still ingesting. It re-opens nothing the
//! janitor abandoned (`FS_ABANDON_AFTER_S`): those versions are failed and
//! their data deleted, so their redriven chunks are acknowledged and write
//! nothing. `fsctl redrive` names them, and says to upload the object again.

use anyhow::{Context, Result};
use serde::Serialize;
use shared::db::protocol::{Dataset, State};
use shared::db::retention::ABANDONED;
use shared::db::store::Redis;

use crate::ctx::{print_json, Ctx};
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

/// How a redrive went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    pub from: String,
    pub to: String,
    /// `move-task` (SQS moves them itself) or `copy` (moved here).
    pub method: &'static str,
    /// Messages moved (for a move task: messages in the DLQ when it started).
    pub messages: u64,
}

async fn arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .context("queue has no ARN")
}

/// Moves every message of `dlq_url` back to `source_url`.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    source_url: &str,
) -> Result<Redriven> {
    let waiting = crate::view::depth(sqs, dlq_url).await?;
    let (dlq_arn, source_arn) = (arn(sqs, dlq_url).await?, arn(sqs, source_url).await?);
    let started = sqs
        .start_message_move_task()
        .source_arn(&dlq_arn)
        .destination_arn(&source_arn)
        .send()
        .await;
    if started.is_ok() {
        return Ok(Redriven {
            from: dlq_url.into(),
            to: source_url.into(),
            method: "move-task",
            messages: waiting,
        });
    }
    let mut moved = 0u64;
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let out = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .context("receiving from the dead-letter queue")?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        empty_polls = 0;
        let entries: Vec<SendMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(m.body.clone().unwrap_or_default())
                    .set_message_attributes(m.message_attributes.clone())
                    .build()
                    .context("building a message")
            })
            .collect::<Result<_>>()?;
        let sent = sqs
            .send_message_batch()
            .queue_url(source_url)
            .set_entries(Some(entries))
            .send()
            .await
            .context("re-sending")?;
        for ok in &sent.successful {
            let i: usize = ok.id.trim_start_matches('m').parse().unwrap_or(usize::MAX);
            if let Some(rh) = messages.get(i).and_then(|m| m.receipt_handle.as_deref()) {
                sqs.delete_message()
                    .queue_url(dlq_url)
                    .receipt_handle(rh)
                    .send()
                    .await
                    .context("deleting a moved message")?;
                moved += 1;
            }
        }
    }
    Ok(Redriven {
        from: dlq_url.into(),
        to: source_url.into(),
        method: "copy",
        messages: moved,
    })
}

/// A version the janitor abandoned, whose record is still kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Abandoned {
    pub dataset: String,
    pub version: String,
    /// The object to upload again.
    pub source: String,
}

/// Every abandoned version whose record is kept (the last failed ones of
/// each dataset): a redrive of their chunks completes nothing.
pub async fn abandoned(redis: &Redis) -> Result<Vec<Abandoned>> {
    let mut out = Vec::new();
    for d in crate::view::datasets(redis).await? {
        let ds = Dataset::new(redis, &d)?;
        for info in ds.history().await? {
            if info.state == State::Failed
                && info
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(ABANDONED))
            {
                out.push(Abandoned {
                    dataset: d.clone(),
                    version: info.version,
                    source: info.source,
                });
            }
        }
    }
    Ok(out)
}

/// `fsctl redrive [--queue chunks|events]`.
#[derive(clap::Args)]
pub struct Args {
    /// Only this queue's DLQ.
    #[arg(long, value_parser = ["chunks", "events"])]
    queue: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let sqs = ctx.sqs().await;
    let q = &ctx.config.queues;
    let mut pairs = Vec::new();
    if args.queue.as_deref() != Some("events") {
        pairs.push((
            q.chunks_dlq
                .clone()
                .context("FS_CHUNKS_DLQ_URL is not set")?,
            q.chunks.clone().context("FS_CHUNKS_QUEUE_URL is not set")?,
        ));
    }
    if args.queue.as_deref() != Some("chunks") {
        pairs.push((
            q.events_dlq
                .clone()
                .context("FS_EVENTS_DLQ_URL is not set")?,
            q.events.clone().context("FS_EVENTS_QUEUE_URL is not set")?,
        ));
    }
    let mut moved = Vec::new();
    for (dlq, source) in pairs {
        moved.push(redrive(&sqs, &dlq, &source).await?);
    }
    let abandoned = match args.queue.as_deref() {
        Some("events") => Vec::new(),
        _ => abandoned(&ctx.redis().await?).await?,
    };
    if ctx.json {
        return print_json(&serde_json::json!({"moved": moved, "abandoned": abandoned}));
    }
    for r in moved {
        println!(
            "moved {} message(s) from {} to {} ({})",
            r.messages, r.from, r.to, r.method
        );
    }
    for a in abandoned {
        println!(
            "note: {} {} was abandoned while ingesting: a redrive does not re-open it (its chunks write nothing); upload {} again",
            a.dataset, a.version, a.source
        );
    }
    Ok(())
}
