//! `make run`: the whole system on this machine, until Ctrl-C. `local-stack
//! worker` runs only the SQS pollers, as a separate process (tests kill it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use local_stack::auth::{self, GatewayAuth};
use local_stack::poller::PollerSettings;
use local_stack::stack::{Stack, StackOptions};
use local_stack::topology::{Names, QueueSettings};
use shared::config::Config;

/// Runs planner, ingest and serve against the local Redis Cluster and S3/SQS emulator.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:3000")]
    http: SocketAddr,
    /// Prefix of the bucket and queue names.
    #[arg(long, default_value = "feature-store")]
    prefix: String,
    /// Batch loaded at start (the original sample, pandas `orient="table"`).
    #[arg(long, default_value = "infra/local/sample/recommendations.json")]
    sample: PathBuf,
    /// Concurrent ingest workers (like the event source's maximum concurrency).
    #[arg(long, default_value_t = 4)]
    ingest_concurrency: usize,
    /// Chunk messages per ingest invocation.
    #[arg(long, default_value_t = 1)]
    ingest_batch_size: i32,
    /// Visibility timeout of received messages, in seconds.
    #[arg(long, default_value_t = 30)]
    visibility_timeout: u64,
    /// Print the EMF metric lines the Lambdas print (one per request and per
    /// chunk), as CloudWatch would receive them.
    #[arg(long)]
    emf: bool,
    /// Seconds between summary lines of the requests served (0: none).
    #[arg(long, default_value_t = 10)]
    summary_every: u64,
}

#[derive(Subcommand)]
enum Mode {
    /// Only poll the queues (no gateway, no sample), until killed or Ctrl-C.
    Worker {
        /// Leave the events queue alone.
        #[arg(long)]
        no_planner: bool,
    },
    /// Print a token the gateway's `jwt` mode accepts, signed with the key
    /// the local stack generated (FS_JWT_PRIVATE_KEY_FILE).
    Token {
        /// The token's subject (`sub`): with FS_USER_CLAIM=sub, the one user
        /// it may read.
        #[arg(long)]
        sub: String,
        /// How long it is valid, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

/// How often the local janitor runs (every few minutes on AWS; sooner here,
/// so `fsctl status` shows clean-up soon after a flip).
const JANITOR_EVERY: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<()> {
    // Events at `info`; per-request and per-chunk lines are `debug`
    // (`RUST_LOG=debug` shows them).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws=warn,hyper=warn".into()),
        )
        .compact()
        .with_target(false)
        .init();
    let args = Args::parse();
    if let Some(Mode::Token { sub, ttl }) = &args.mode {
        return print_token(sub, Duration::from_secs(*ttl));
    }
    let auth = Arc::new(GatewayAuth::from_env()?);
    let mut config = Config::from_env()?;
    if !args.emf {
        config.metrics_namespace = String::new();
    }
    let vt = Duration::from_secs(args.visibility_timeout);
    let worker = matches!(args.mode, Some(Mode::Worker { .. }));
    let planner_concurrency = match &args.mode {
        Some(Mode::Worker { no_planner: true }) => 0,
        _ => 1,
    };
    let stack = Stack::start(StackOptions {
        config: config.clone(),
        names: Names::with_prefix(&args.prefix),
        queues: QueueSettings {
            max_receive_count: 3,
            visibility_timeout_s: args.visibility_timeout as u32,
        },
        planner: PollerSettings {
            batch_size: 10,
            visibility_timeout: vt,
            concurrency: planner_concurrency,
            wait: Duration::from_secs(1),
        },
        ingest: PollerSettings {
            batch_size: args.ingest_batch_size,
            visibility_timeout: vt,
            concurrency: args.ingest_concurrency,
            wait: Duration::from_secs(1),
        },
        http: (!worker).then_some(args.http),
        auth: auth.clone(),
        redis_users: local_stack::stack::RedisUsers::from_env()?,
        faults: Arc::default(),
        // Workers are extra ingest processes; the main stack runs the janitor.
        janitor: (!worker).then_some(JANITOR_EVERY),
        janitor_datasets: None,
    })
    .await?;
    if worker {
        println!("worker polling {}", stack.topology.chunks_url);
        tokio::signal::ctrl_c().await?;
        stack.shutdown().await;
        return Ok(());
    }
    if let Ok(dir) = std::env::var("FS_LOCAL_RUN_DIR") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(format!("{dir}/env"))?;
        f.write_all(stack.env_lines().as_bytes())?;
    }

    let started = Instant::now();
    let sample = std::fs::read(&args.sample)
        .with_context(|| format!("reading {}", args.sample.display()))?;
    let key = format!("{}/sample.json", config.default_dataset);
    let dataset = config.default_dataset.clone();
    let before =
        shared::db::protocol::Dataset::of(&stack.redis, &shared::keys::DatasetKeys::new(&dataset)?)
            .live()
            .await?
            .map(|p| p.version);
    stack.upload(&key, sample).await?;
    let live = stack
        .wait_for_flip(&dataset, before.as_deref(), Duration::from_secs(60))
        .await?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let http = stack.http_addr.unwrap_or(args.http);
    let (mode, curl) = match auth.as_ref() {
        GatewayAuth::None => (
            "none: every request is answered (FS_API_AUTH=iam or jwt to require credentials)".to_string(),
            "curl".to_string(),
        ),
        GatewayAuth::Iam(iam) => (
            format!("iam: requests must be signed with AWS SigV4 for execute-api in {}, with the stack's credentials (source .run/run/env)", iam.region),
            format!("curl --aws-sigv4 'aws:amz:{}:execute-api' --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\"", iam.region),
        ),
        GatewayAuth::Jwt(jwt) => (
            format!("jwt: requests need a bearer token from issuer {} for audience {} (TOKEN=$(cargo run -q -p local-stack -- token --sub 1))", jwt.issuer, jwt.audience),
            "curl -H \"Authorization: Bearer $TOKEN\"".to_string(),
        ),
    };
    // curl's own SigV4 signs a URL as AWS does only when its query is in
    // sorted order and its path and query hold no character that needs
    // encoding (`:`, `,`); the AWS SDKs sign any URL.
    let (legacy, batch) = match auth.as_ref() {
        GatewayAuth::Iam(_) => (
            "?rank=1&userId=1".to_string(),
            format!("'http://{http}/v1/{dataset}/users?ids=1%2C2%2C3&rank=1'   (POST …/users:batchGet: sign with an AWS SDK)"),
        ),
        _ => (
            "?userId=1&rank=1".to_string(),
            format!("-X POST 'http://{http}/v1/{dataset}/users:batchGet' -d '{{\"userIds\": [1, 2, 3], \"rank\": 1}}'"),
        ),
    };
    println!(
        "\nfeature store running: sample batch live as version {} of dataset {dataset} ({} ms)\n\
         API authorization: {mode}\n\n\
         try:\n  {curl} 'http://{http}/{legacy}'\n  {curl} -H 'Accept: text/plain' 'http://{http}/{legacy}'\n  {curl} 'http://{http}/v1/{dataset}/users/1?limit=3'\n  {curl} {batch}\n  {curl} 'http://{http}/openapi.json'\n\n\
         upload another batch from another shell (it goes live when every chunk is in):\n  \
         source .run/run/env\n  \
         cargo run -q -p fsctl -- generate --users 200000 --items 20 --out /tmp/batch.jsonl\n  \
         cargo run -q -p fsctl -- upload /tmp/batch.jsonl --dataset {dataset} --wait\n  \
         aws s3 cp /tmp/batch.jsonl s3://{bucket}/{dataset}/batch.jsonl --endpoint-url {endpoint}\n  \
         cargo run -q -p fsctl -- status\n\n\
         Requests are summed up every {summary} s; `--emf` shows the metric lines, RUST_LOG=debug a line per request.\n\
         Ctrl-C stops everything.",
        live.version,
        started.elapsed().as_millis(),
        bucket = stack.topology.bucket,
        summary = args.summary_every,
    );
    let (stop_summary, stopped) = tokio::sync::watch::channel(false);
    if args.summary_every > 0 {
        tokio::spawn(local_stack::console::summary(
            stack.traffic.clone(),
            Duration::from_secs(args.summary_every),
            stopped,
        ));
    }
    tokio::signal::ctrl_c().await?;
    let _ = stop_summary.send(true);
    println!("stopping…");
    stack.shutdown().await;
    Ok(())
}

/// `local-stack token`: a token for the gateway's `jwt` mode.
fn print_token(sub: &str, ttl: Duration) -> Result<()> {
    let var = |name: &str| {
        std::env::var(name).with_context(|| format!("{name} is not set (source .run/run/env)"))
    };
    let path = var(auth::vars::JWT_PRIVATE_KEY_FILE)?;
    let pem = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let token = auth::mint(
        &pem,
        &var(auth::vars::JWT_ISSUER)?,
        &var(auth::vars::JWT_AUDIENCE)?,
        sub,
        ttl,
    )?;
    println!("{token}");
    Ok(())
}
