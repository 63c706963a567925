use ingest::planner::{handle, PlannerDeps};
use ingest::source::S3Source;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::{Component, Config};
use shared::{aws, db::store::Redis};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init();
    let mut config = Config::for_component(Component::Planner)?;
    let chunks_queue_url = config.require_chunks_queue()?.to_string();
    let sdk = aws::sdk_config().await;
    aws::resolve_redis_auth(&mut config.redis, &sdk).await?;
    let redis = Redis::connect_checked(&config.redis).await?;
    let deps = PlannerDeps { config, redis, source: S3Source::new(aws::s3_client(&sdk)), sqs: aws::sqs_client(&sdk), chunks_queue_url };
    run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
}
