use ingest::deps::IngestDeps;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::IngestConfig;

fn main() -> Result<(), Error> {
    ingest::limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(async {
        let sdk = shared::boot::sdk_config().await;
        let (config, redis) = shared::boot::boot::<IngestConfig>(Some(&sdk)).await?;
        let deps = IngestDeps::on_aws(config, redis, &sdk);
        run(service_fn(|event: LambdaEvent<_>| {
            ingest::load::handle(&deps, event)
        }))
        .await
    })
}
