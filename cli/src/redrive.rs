//! Moving messages from a dead-letter queue back to its source queue.
//!
//! Uses SQS's `StartMessageMoveTask` where the endpoint supports it; otherwise
//! receives, re-sends and deletes, in that order, so a message is never lost
//! (at worst delivered twice, which the pipeline tolerates).

use anyhow::{Context, Result};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};

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

/// Visible plus in-flight messages of a queue.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .with_context(|| format!("reading attributes of {url}"))?;
    let a = out.attributes.unwrap_or_default();
    let n = |k: &QueueAttributeName| a.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(n(&QueueAttributeName::ApproximateNumberOfMessages) + n(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}

async fn arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    let out = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    out.attributes.and_then(|mut a| a.remove(&QueueAttributeName::QueueArn)).context("queue has no ARN")
}

/// Moves every message of `dlq_url` back to `source_url`.
pub async fn redrive(sqs: &aws_sdk_sqs::Client, dlq_url: &str, source_url: &str) -> Result<Redriven> {
    let waiting = depth(sqs, dlq_url).await?;
    let (dlq_arn, source_arn) = (arn(sqs, dlq_url).await?, arn(sqs, source_url).await?);
    let started = sqs.start_message_move_task().source_arn(&dlq_arn).destination_arn(&source_arn).send().await;
    if started.is_ok() {
        return Ok(Redriven { from: dlq_url.into(), to: source_url.into(), method: "move-task", messages: waiting });
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
        let sent = sqs.send_message_batch().queue_url(source_url).set_entries(Some(entries)).send().await.context("re-sending")?;
        for ok in &sent.successful {
            let i: usize = ok.id.trim_start_matches('m').parse().unwrap_or(usize::MAX);
            if let Some(rh) = messages.get(i).and_then(|m| m.receipt_handle.as_deref()) {
                sqs.delete_message().queue_url(dlq_url).receipt_handle(rh).send().await.context("deleting a moved message")?;
                moved += 1;
            }
        }
    }
    Ok(Redriven { from: dlq_url.into(), to: source_url.into(), method: "copy", messages: moved })
}
