use ingest::janitor::{handle, JanitorDeps};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::{Component, Config};
use shared::{aws, db::store::Redis};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init();
    let mut config = Config::for_component(Component::Janitor)?;
    aws::resolve_redis_auth(&mut config.redis, &aws::sdk_config().await).await?;
    let deps = JanitorDeps { redis: Redis::connect_checked(&config.redis).await?, config };
    run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
}
