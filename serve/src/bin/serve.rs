use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serve::http::{handle, App};
use serve::Reader;
use shared::{config::Config, store::Redis};

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve::init_tracing();
    let config = Config::from_env()?;
    let redis = Redis::connect(&config.redis).await?;
    let app = App { reader: Reader::new(redis, config.pointer_ttl), config };
    run(service_fn(|event: LambdaEvent<_>| handle(&app, event))).await
}
