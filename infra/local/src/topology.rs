//! The bucket, queues, dead-letter queues and notification of one deployment.

use anyhow::{Context as _, Result};
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

/// Names of one deployment's resources.
#[derive(Debug, Clone)]
pub struct Names {
    pub bucket: String,
    pub events_queue: String,
    pub chunks_queue: String,
}

impl Names {
    /// Resource names with a common prefix (tests use one prefix each).
    pub fn with_prefix(prefix: &str) -> Self {
        Names {
            bucket: format!("{prefix}-batches"),
            events_queue: format!("{prefix}-events"),
            chunks_queue: format!("{prefix}-chunks"),
        }
    }
}

/// Settings of the queues.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// Receives before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// Default visibility timeout of the queues, in seconds.
    pub visibility_timeout_s: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_receive_count: 3,
            visibility_timeout_s: 30,
        }
    }
}

/// URLs and ARNs of the created resources.
#[derive(Debug, Clone)]
pub struct Topology {
    pub bucket: String,
    pub events_url: String,
    pub events_arn: String,
    pub events_dlq_url: String,
    pub chunks_url: String,
    pub chunks_arn: String,
    pub chunks_dlq_url: String,
}

/// Creates (or finds) every resource; safe to run again.
pub async fn create(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    names: &Names,
    settings: QueueSettings,
) -> Result<Topology> {
    let (events_url, events_arn, events_dlq_url) =
        queue_with_dlq(sqs, &names.events_queue, settings).await?;
    let (chunks_url, chunks_arn, chunks_dlq_url) =
        queue_with_dlq(sqs, &names.chunks_queue, settings).await?;

    if s3.head_bucket().bucket(&names.bucket).send().await.is_err() {
        s3.create_bucket()
            .bucket(&names.bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {}", names.bucket))?;
    }
    let notification = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .id("batches-to-events-queue")
                .queue_arn(&events_arn)
                .events(Event::from("s3:ObjectCreated:*"))
                .build()
                .context("building the queue notification")?,
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(&names.bucket)
        .notification_configuration(notification)
        .send()
        .await
        .with_context(|| format!("configuring notifications of {}", names.bucket))?;
    Ok(Topology {
        bucket: names.bucket.clone(),
        events_url,
        events_arn,
        events_dlq_url,
        chunks_url,
        chunks_arn,
        chunks_dlq_url,
    })
}

async fn queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    settings: QueueSettings,
) -> Result<(String, String, String)> {
    let dlq_name = format!("{name}-dlq");
    let dlq_url = sqs
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            (14 * 24 * 3600).to_string(),
        )
        .send()
        .await
        .with_context(|| format!("creating queue {dlq_name}"))?
        .queue_url
        .context("queue URL")?;
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count }).to_string();
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            settings.visibility_timeout_s.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .with_context(|| format!("creating queue {name}"))?
        .queue_url
        .context("queue URL")?;
    let arn = queue_arn(sqs, &url).await?;
    Ok((url, arn, dlq_url))
}

/// The ARN of a queue.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading attributes of {url}"))?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .with_context(|| format!("{url} has no QueueArn"))
}
