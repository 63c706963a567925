//! Chunk messages onto the chunks queue.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::{StreamExt, TryStreamExt};

use crate::error::PlanError;
use crate::s3::messages::ChunkMessage;

/// SQS allows at most 10 entries per SendMessageBatch.
const SEND_BATCH: usize = 10;

/// SendMessageBatch calls in flight at once: a plan of thousands of chunks
/// is sent in a tenth of the round trips one after another would take.
const SEND_CONCURRENCY: usize = 8;

/// Sends chunk messages to `queue_url` in batches, several at once,
/// retrying entries SQS refused.
pub async fn send_chunks(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[ChunkMessage],
) -> Result<(), PlanError> {
    let sends: Vec<_> = messages
        .chunks(SEND_BATCH)
        .map(|batch| send_batch(sqs, queue_url, batch))
        .collect();
    futures::stream::iter(sends)
        .buffer_unordered(SEND_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// One SendMessageBatch of at most [`SEND_BATCH`] messages, sending again
/// the entries SQS refused (up to three tries).
async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batch: &[ChunkMessage],
) -> Result<(), PlanError> {
    let mut pending: Vec<&ChunkMessage> = batch.iter().collect();
    for attempt in 0..3 {
        let entries = pending
            .iter()
            .map(|m| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("c{}", m.chunk))
                    .message_body(m.to_json())
                    .build()
                    .map_err(|e| PlanError::Send(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                PlanError::Send(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
            })?;
        let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
        if failed.is_empty() {
            return Ok(());
        }
        if attempt == 2 {
            return Err(PlanError::Send(format!(
                "{} entries kept failing: {failed:?}",
                failed.len()
            )));
        }
        pending.retain(|m| failed.contains(&format!("c{}", m.chunk)));
    }
    Ok(())
}
