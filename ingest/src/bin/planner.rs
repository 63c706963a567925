use ingest::deps::PlannerDeps;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::PlannerConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = shared::boot::sdk_config().await;
    let (config, redis) = shared::boot::boot::<PlannerConfig>(Some(&sdk)).await?;
    let deps = PlannerDeps::on_aws(config, redis, &sdk);
    run(service_fn(|event: LambdaEvent<_>| {
        ingest::plan::handle(&deps, event)
    }))
    .await
}
