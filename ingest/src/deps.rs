//! What each Lambda of this crate needs, built once per process by its
//! `main` (or by the local stack and the tests, with other sources).

use std::sync::Arc;

use aws_config::SdkConfig;
use shared::config::{IngestConfig, JanitorConfig, PlannerConfig};
use shared::db::store::Redis;

use crate::s3::source::S3Source;
use crate::write::pace::Pacer;

/// The planner's: where chunk messages go, and where batches are read.
pub struct PlannerDeps<S> {
    pub config: PlannerConfig,
    pub redis: Redis,
    pub source: S,
    pub sqs: aws_sdk_sqs::Client,
}

/// Ingest's: where chunks are read from and written to, and the worker's
/// pace by readers' latency.
pub struct IngestDeps<S> {
    pub config: IngestConfig,
    pub redis: Redis,
    pub source: S,
    pub pacer: Arc<Pacer>,
}

impl<S> IngestDeps<S> {
    /// Deps writing through `redis`, whose pacer probes Redis as
    /// `config.redis` reaches it.
    pub fn new(config: IngestConfig, redis: Redis, source: S) -> Self {
        IngestDeps {
            pacer: Pacer::new(&config.redis, config.target_latency),
            config,
            redis,
            source,
        }
    }
}

/// The janitor's: Redis only.
pub struct JanitorDeps {
    pub config: JanitorConfig,
    pub redis: Redis,
}

impl PlannerDeps<S3Source> {
    /// Reading batches from S3 and sending to SQS, as `sdk` configures them.
    pub fn on_aws(config: PlannerConfig, redis: Redis, sdk: &SdkConfig) -> Self {
        PlannerDeps {
            config,
            redis,
            source: S3Source::new(crate::s3::s3_client(sdk)),
            sqs: crate::s3::sqs_client(sdk),
        }
    }
}

impl IngestDeps<S3Source> {
    /// Reading chunks from S3, as `sdk` configures it.
    pub fn on_aws(config: IngestConfig, redis: Redis, sdk: &SdkConfig) -> Self {
        IngestDeps::new(config, redis, S3Source::new(crate::s3::s3_client(sdk)))
    }
}
