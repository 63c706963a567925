use ingest::planner::{handle, PlannerDeps};
use ingest::source::S3Source;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::aws;
use shared::config::PlannerConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws::sdk_config().await;
    let (config, redis) = aws::boot::boot::<PlannerConfig>(Some(&sdk)).await?;
    let deps = PlannerDeps { config, redis, source: S3Source::new(aws::s3_client(&sdk)), sqs: aws::sqs_client(&sdk) };
    run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
}
