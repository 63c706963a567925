use ingest::ingest::{handle, IngestDeps};
use ingest::source::S3Source;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::{Component, Config};
use shared::{aws, db::store::Redis};

fn main() -> Result<(), Error> {
    ingest::limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(run_ingest())
}

async fn run_ingest() -> Result<(), Error> {
    shared::logging::init();
    let mut config = Config::for_component(Component::Ingest)?;
    let sdk = aws::sdk_config().await;
    aws::resolve_redis_auth(&mut config.redis, &sdk).await?;
    let redis = Redis::connect_checked(&config.redis).await?;
    let deps = IngestDeps { config, redis, source: S3Source::new(aws::s3_client(&sdk)) };
    run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
}
