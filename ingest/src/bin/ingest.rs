use ingest::ingest::{handle, IngestDeps};
use ingest::source::S3Source;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::aws;
use shared::config::IngestConfig;

fn main() -> Result<(), Error> {
    ingest::limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(async {
        let sdk = aws::sdk_config().await;
        let (config, redis) = aws::boot::boot::<IngestConfig>(Some(&sdk)).await?;
        let deps = IngestDeps { config, redis, source: S3Source::new(aws::s3_client(&sdk)) };
        run(service_fn(|event: LambdaEvent<_>| handle(&deps, event))).await
    })
}
