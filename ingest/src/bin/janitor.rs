use ingest::deps::JanitorDeps;
use ingest::janitor::handle;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::JanitorConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, redis) = shared::boot::boot::<JanitorConfig>(None).await?;
    let deps = JanitorDeps { config, redis };
    run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
}
