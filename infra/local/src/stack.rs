//! The whole local system in one process: topology, pollers, gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ingest::deps::IngestDeps;
use ingest::deps::PlannerDeps;
use ingest::s3::source::S3Source;
use serve::http::App;
use serve::Reader;
use shared::config::{Config, RedisAuth};
use shared::db::protocol::{self, Pointer, State, VersionInfo};
use shared::db::store::Redis;
use shared::keys::DatasetKeys;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::GatewayAuth;
use crate::faults::{Faults, FaultySource};
use crate::poller::{self, PollerSettings};
use crate::topology::{self, Names, QueueSettings, Topology};

/// How to run the local system.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub config: Config,
    pub names: Names,
    pub queues: QueueSettings,
    pub planner: PollerSettings,
    pub ingest: PollerSettings,
    /// Where the gateway listens; `None`: no gateway.
    pub http: Option<SocketAddr>,
    /// Who the gateway lets through.
    pub auth: Arc<GatewayAuth>,
    /// The Redis users of the roles: serve connects as the read-only one,
    /// planner, ingest and janitor as the writer (unless the configuration
    /// names its own credentials). `None`: everyone as configured.
    pub redis_users: Option<RedisUsers>,
    /// Reads to fail on purpose (tests).
    pub faults: Arc<Faults>,
    /// How often the janitor runs (the schedule on AWS); `None`: never.
    pub janitor: Option<Duration>,
    /// The datasets the janitor looks after; `None`: every dataset.
    pub janitor_datasets: Option<Vec<String>>,
}

/// The Redis user of each role, as `with-stack.sh` makes them
/// (`FS_LOCAL_REDIS_USERS_FILE`: `{"serve": {"username", "token"}, …}`, the
/// shape of the deployment's secrets).
#[derive(Debug, Clone)]
pub struct RedisUsers {
    pub serve: RedisAuth,
    pub writer: RedisAuth,
    pub operator: RedisAuth,
}

impl RedisUsers {
    /// The users `FS_LOCAL_REDIS_USERS_FILE` holds; `None` when it is unset.
    pub fn from_env() -> Result<Option<RedisUsers>> {
        let Ok(path) = std::env::var("FS_LOCAL_REDIS_USERS_FILE") else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {path}"))?,
        )
        .with_context(|| format!("{path} is not JSON"))?;
        // Each role's entry is what its secret holds on AWS.
        let user = |role: &str| -> Result<RedisAuth> {
            match shared::boot::auth_of_secret(&v[role].to_string()) {
                Ok(auth @ RedisAuth::User { .. }) => Ok(auth),
                _ => anyhow::bail!("{path} has no user for {role}"),
            }
        };
        Ok(Some(RedisUsers {
            serve: user("serve")?,
            writer: user("writer")?,
            operator: user("operator")?,
        }))
    }
}

/// A running local system.
pub struct Stack {
    pub topology: Topology,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub redis: Redis,
    pub app: Arc<App>,
    pub http_addr: Option<SocketAddr>,
    /// What the gateway answered, for the console's summary.
    pub traffic: Arc<crate::console::Traffic>,
    pub faults: Arc<Faults>,
    /// Ingest's pace by readers' latency.
    pub pacer: Arc<ingest::write::pace::Pacer>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Creates the topology and starts pollers (and the gateway).
    pub async fn start(opts: StackOptions) -> Result<Stack> {
        let sdk = shared::boot::sdk_config().await;
        let mut opts = opts;
        shared::boot::resolve_redis_auth(&mut opts.config.redis, &sdk).await?;
        let s3 = ingest::s3::s3_client(&sdk);
        let sqs = ingest::s3::sqs_client(&sdk);
        let topology = topology::create(&s3, &sqs, &opts.names, opts.queues).await?;
        // Writers always talk to primaries; serve may read from replicas.
        let mut primaries = opts.config.redis.clone();
        primaries.read_from_replicas = false;
        let redis = Redis::connect_checked(&primaries)
            .await
            .context("connecting to Redis")?;
        // Each role as its own Redis user, where the configuration names none.
        let users = opts
            .redis_users
            .clone()
            .filter(|_| opts.config.redis.auth == RedisAuth::None);
        let (writer, serve_redis) = match users {
            Some(users) => {
                let mut w = primaries.clone();
                w.auth = users.writer;
                let mut s = opts.config.redis.clone();
                s.auth = users.serve;
                (
                    Redis::connect_checked(&w)
                        .await
                        .context("connecting to Redis as the writer")?,
                    Redis::connect_checked(&s)
                        .await
                        .context("connecting to Redis as serve")?,
                )
            }
            None if opts.config.redis.read_from_replicas => (
                redis.clone(),
                Redis::connect_checked(&opts.config.redis)
                    .await
                    .context("connecting to Redis replicas")?,
            ),
            None => (redis.clone(), redis.clone()),
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let mut planner_config = opts.config.planner(&topology.chunks_url);
        planner_config.events_queue_url = Some(topology.events_url.clone());
        let planner = Arc::new(PlannerDeps {
            config: planner_config,
            redis: writer.clone(),
            source: S3Source::new(s3.clone()),
            sqs: sqs.clone(),
        });
        tasks.extend(poller::spawn(
            sqs.clone(),
            topology.events_url.clone(),
            topology.events_arn.clone(),
            opts.planner.clone(),
            move |e| {
                let d = planner.clone();
                async move { ingest::plan::handle(&d, e).await }
            },
            stop_rx.clone(),
        ));
        // Ingest's latency probe reaches Redis as the writer, as ingest does.
        let mut ingest_config = opts.config.ingest();
        if let Some(u) = opts
            .redis_users
            .as_ref()
            .filter(|_| opts.config.redis.auth == RedisAuth::None)
        {
            ingest_config.redis.auth = u.writer.clone();
        }
        let ingest = Arc::new(IngestDeps::new(
            ingest_config,
            writer.clone(),
            FaultySource::new(S3Source::new(s3.clone()), opts.faults.clone()),
        ));
        let pacer = ingest.pacer.clone();
        tasks.extend(poller::spawn(
            sqs.clone(),
            topology.chunks_url.clone(),
            topology.chunks_arn.clone(),
            opts.ingest.clone(),
            move |e| {
                let d = ingest.clone();
                async move { ingest::load::handle(&d, e).await }
            },
            stop_rx.clone(),
        ));

        if let Some(every) = opts.janitor {
            let deps = ingest::deps::JanitorDeps {
                config: opts.config.janitor(),
                redis: writer.clone(),
            };
            let only = opts.janitor_datasets.clone();
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let run = match &only {
                        Some(names) => ingest::janitor::run_for(&deps, names.clone()).await,
                        None => ingest::janitor::run_once(&deps).await,
                    };
                    if let Err(e) = run {
                        tracing::warn!(error = %e, "janitor run failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop_rx.changed() => return,
                    }
                }
            }));
        }

        let app = Arc::new(App::new(
            opts.config.serve(),
            Reader::new(serve_redis, opts.config.pointer_ttl),
        ));
        let mut http_addr = None;
        let traffic = Arc::new(crate::console::Traffic::default());
        if let Some(addr) = opts.http {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            http_addr = Some(listener.local_addr()?);
            let (app, traffic, stop_rx) = (app.clone(), traffic.clone(), stop_rx.clone());
            let auth = opts.auth.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::gateway::serve(listener, app, auth, traffic, stop_rx).await {
                    tracing::error!(error = %e, "gateway stopped");
                }
            }));
        }
        Ok(Stack {
            topology,
            s3,
            sqs,
            redis,
            app,
            http_addr,
            traffic,
            stop,
            tasks,
            faults: opts.faults,
            pacer,
        })
    }

    /// Puts `body` into the batch bucket under `key`; returns its ETag.
    pub async fn upload(&self, key: &str, body: Vec<u8>) -> Result<String> {
        let out = self
            .s3
            .put_object()
            .bucket(&self.topology.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("uploading s3://{}/{key}", self.topology.bucket))?;
        Ok(out.e_tag.unwrap_or_default())
    }

    /// Waits until `dataset`'s live pointer differs from `previous`, up to
    /// `timeout`; fails early if a version of the dataset fails meanwhile.
    /// Redis errors (a failover, say) are retried until the deadline.
    pub async fn wait_for_flip(
        &self,
        dataset: &str,
        previous: Option<&str>,
        timeout: Duration,
    ) -> Result<Pointer> {
        let keys = DatasetKeys::new(dataset)?;
        let deadline = Instant::now() + timeout;
        let mut failed_before: Option<Vec<String>> = None;
        loop {
            let step: Result<Option<Pointer>> = async {
                let failed: Vec<String> = self
                    .failed_versions(dataset)
                    .await?
                    .into_iter()
                    .map(|v| v.version)
                    .collect();
                let before = failed_before.get_or_insert_with(|| failed.clone());
                if let Some(p) = protocol::Dataset::of(&self.redis, &keys).live().await? {
                    if Some(p.version.as_str()) != previous {
                        return Ok(Some(p));
                    }
                }
                if let Some(v) = failed.iter().find(|v| !before.contains(v)) {
                    let info = protocol::Dataset::of(&self.redis, &keys)
                        .version_info(v)
                        .await?;
                    anyhow::bail!(
                        "version {v} of {dataset} failed: {}",
                        info.and_then(|i| i.reason).unwrap_or_default()
                    );
                }
                Ok(None)
            }
            .await;
            match step {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) if e.downcast_ref::<redis::RedisError>().is_some() => {
                    tracing::debug!(error = %e, "retrying")
                }
                Err(e) => return Err(e),
            }
            if Instant::now() > deadline {
                anyhow::bail!("dataset {dataset} did not flip within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Versions of `dataset` in state `failed`.
    pub async fn failed_versions(&self, dataset: &str) -> Result<Vec<VersionInfo>> {
        let history = protocol::Dataset::new(&self.redis, dataset)?
            .history()
            .await?;
        Ok(history
            .into_iter()
            .filter(|info| info.state == State::Failed)
            .collect())
    }

    /// Lines for a shell that point the operator CLI at this stack's queues.
    pub fn env_lines(&self) -> String {
        let t = &self.topology;
        format!(
            "export {}={} {}={}\nexport {}={} {}={}\n",
            shared::config::EVENTS_QUEUE_URL.name(),
            t.events_url,
            shared::config::EVENTS_DLQ_URL.name(),
            t.events_dlq_url,
            shared::config::CHUNKS_QUEUE_URL.name(),
            t.chunks_url,
            shared::config::CHUNKS_DLQ_URL.name(),
            t.chunks_dlq_url
        )
    }

    /// Stops pollers and gateway and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(25), t).await;
        }
    }
}

/// A stack dropped without [`Stack::shutdown`] (a test that ended, or
/// panicked) stops its pollers, janitor and gateway at once.
impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
