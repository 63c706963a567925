use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serve::http::{handle, App};
use serve::Reader;
use shared::config::ServeConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, redis) = shared::boot::boot::<ServeConfig>(None).await?;
    let reader = Reader::new(redis, config.pointer_ttl);
    let app = App::new(config, reader);
    run(service_fn(|event: LambdaEvent<_>| handle(&app, event))).await
}
