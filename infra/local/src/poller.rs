//! Polls an SQS queue and invokes a handler the way Lambda's SQS event source
//! mapping does: long-polls batches of up to `batch_size` messages, hides them
//! for `visibility_timeout`, calls the handler with an `SqsEvent`, deletes the
//! messages that did not appear in the returned `batchItemFailures`, and
//! leaves the rest (or all, if the handler errs) to reappear after the
//! visibility timeout, so the queue's redrive policy moves them to the DLQ
//! after `maxReceiveCount` receives.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use lambda_runtime::{Context, Error, LambdaEvent};
use tokio::sync::watch;
use tracing::{debug, warn};

/// How the event source behaves.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    pub batch_size: i32,
    pub visibility_timeout: Duration,
    /// Concurrent pollers, like the mapping's maximum concurrency; 0 leaves
    /// the queue alone (tests then drive the handler themselves).
    pub concurrency: usize,
    /// Long-poll wait per receive.
    pub wait: Duration,
}

impl Default for PollerSettings {
    fn default() -> Self {
        PollerSettings {
            batch_size: 10,
            visibility_timeout: Duration::from_secs(30),
            concurrency: 2,
            wait: Duration::from_secs(1),
        }
    }
}

/// Starts `settings.concurrency` pollers of `queue_url` that call `handler`,
/// until `stop` turns true.
pub fn spawn<H, F>(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    settings: PollerSettings,
    handler: H,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>>
where
    H: Fn(LambdaEvent<SqsEvent>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<SqsBatchResponse, Error>> + Send,
{
    let handler = Arc::new(handler);
    (0..settings.concurrency)
        .map(|_| {
            let (sqs, url, arn, settings, handler, mut stop) = (
                sqs.clone(),
                queue_url.clone(),
                queue_arn.clone(),
                settings.clone(),
                handler.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !*stop.borrow() {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = poll_once(&sqs, &url, &arn, &settings, handler.as_ref()) => {}
                    }
                }
            })
        })
        .collect()
}

async fn poll_once<H, F>(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    arn: &str,
    settings: &PollerSettings,
    handler: &H,
) where
    H: Fn(LambdaEvent<SqsEvent>) -> F,
    F: Future<Output = Result<SqsBatchResponse, Error>>,
{
    let received = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(settings.batch_size.clamp(1, 10))
        .wait_time_seconds(settings.wait.as_secs().clamp(0, 20) as i32)
        .visibility_timeout(settings.visibility_timeout.as_secs().max(1) as i32)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await;
    let messages = match received {
        Ok(out) => out.messages.unwrap_or_default(),
        Err(e) => {
            warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receive failed");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    };
    if messages.is_empty() {
        return;
    }
    let region = arn.split(':').nth(3).unwrap_or("us-east-1").to_string();
    let mut event = SqsEvent::default();
    let mut handles = Vec::new();
    for m in messages {
        let mut r = SqsMessage::default();
        r.message_id = m.message_id.clone();
        r.receipt_handle = m.receipt_handle.clone();
        r.body = m.body;
        r.md5_of_body = m.md5_of_body;
        r.attributes = m
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.as_str().to_string(), v))
            .collect();
        r.event_source = Some("aws:sqs".into());
        r.event_source_arn = Some(arn.to_string());
        r.aws_region = Some(region.clone());
        handles.push((
            m.message_id.unwrap_or_default(),
            m.receipt_handle.unwrap_or_default(),
        ));
        event.records.push(r);
    }
    let failed: Vec<String> = match handler(LambdaEvent::new(event, Context::default())).await {
        Ok(resp) => resp
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
        Err(e) => {
            warn!(queue = %url, error = %e, "handler failed the whole batch");
            return;
        }
    };
    let done: Vec<_> = handles
        .into_iter()
        .filter(|(id, _)| !failed.contains(id))
        .collect();
    debug!(queue = %url, done = done.len(), failed = failed.len(), "batch handled");
    for batch in done.chunks(10) {
        let entries: Vec<_> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, (_, rh))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(rh)
                    .build()
                    .ok()
            })
            .collect();
        if let Err(e) = sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed; messages will be redelivered");
        }
    }
}
