//! Chunk messages onto the chunks queue.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::error::PlanError;
use crate::s3::messages::ChunkMessage;

/// SQS allows at most 10 entries per SendMessageBatch.
const SEND_BATCH: usize = 10;

/// Sends chunk messages to `queue_url` in batches, retrying entries SQS
/// refused.
pub async fn send_chunks(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[ChunkMessage],
) -> Result<(), PlanError> {
    for batch in messages.chunks(SEND_BATCH) {
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
                break;
            }
            if attempt == 2 {
                return Err(PlanError::Send(format!(
                    "{} entries kept failing: {failed:?}",
                    failed.len()
                )));
            }
            pending.retain(|m| failed.contains(&format!("c{}", m.chunk)));
        }
    }
    Ok(())
}
