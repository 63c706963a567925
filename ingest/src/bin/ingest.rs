use ingest::ingest::{handle, IngestDeps};
use ingest::source::S3Source;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::{aws, config::Config, store::Redis};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ingest::init_tracing();
    let config = Config::from_env()?;
    let sdk = aws::sdk_config().await;
    let redis = Redis::connect(&config.redis).await?;
    let deps = IngestDeps { config, redis, source: S3Source::new(aws::s3_client(&sdk)) };
    run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
}
