use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serve::http::{handle, App};
use serve::Reader;
use shared::config::{Component, Config};
use shared::{aws, db::store::Redis};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init();
    let mut config = Config::for_component(Component::Serve)?;
    aws::resolve_redis_auth(&mut config.redis, &aws::sdk_config().await).await?;
    let redis = Redis::connect_checked(&config.redis).await?;
    let app = App::new(config.clone(), Reader::new(redis, config.pointer_ttl));
    run(service_fn(|event: LambdaEvent<_>| handle(&app, event))).await
}
