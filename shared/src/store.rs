//! The Redis connection and pipelined writes.
//!
//! [`Redis`] is one multiplexed connection per process, cluster or standalone
//! by configuration, shared by cloning (clones are cheap and share the socket),
//! so a warm Lambda reuses it across invocations. Calls fail within the
//! configured timeout instead of retrying for minutes.
//!
//! A cluster connection that keeps failing (seen after a primary's failover:
//! every call timing out while a fresh connection works) is rebuilt after
//! [`REBUILD_AFTER`] failures in a row, so a warm Lambda heals by itself.
//!
//! An async cluster pipeline must stay within one slot, so [`Redis::write_grouped`]
//! groups commands by slot and sends the groups concurrently; the multiplexed
//! connections pipeline them on the wire per node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{RedisAuth, RedisConfig};
use redis::{IntoConnectionInfo, RedisError, TlsCertificates};

/// How many slot groups are in flight at once during a grouped write.
const WRITE_CONCURRENCY: usize = 64;
/// Failed calls in a row after which a cluster connection is rebuilt.
pub const REBUILD_AFTER: u32 = 5;

/// A Redis connection in cluster or standalone mode.
#[derive(Clone)]
pub enum Redis {
    Cluster(Arc<Healing>),
    Standalone(ConnectionManager),
}

/// A cluster connection that rebuilds itself when it keeps failing.
pub struct Healing {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    failures: AtomicU32,
    rebuild: tokio::sync::Mutex<Instant>,
    timeout: Duration,
}

impl Healing {
    fn current(&self) -> ClusterConnection {
        self.conn.read().expect("connection lock").clone()
    }

    /// Counts a call's outcome; rebuilds the connection after too many
    /// failures in a row (at most once a second).
    async fn observe<T>(&self, result: &RedisResult<T>) {
        let broken = match result {
            Ok(_) => {
                self.failures.store(0, Ordering::Relaxed);
                return;
            }
            Err(e) => e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error(),
        };
        if !broken || self.failures.fetch_add(1, Ordering::Relaxed) + 1 < REBUILD_AFTER {
            return;
        }
        let Ok(mut last) = self.rebuild.try_lock() else { return };
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        *last = Instant::now();
        match tokio::time::timeout(self.timeout * 2, self.client.get_async_connection()).await {
            Ok(Ok(fresh)) => {
                *self.conn.write().expect("connection lock") = fresh;
                self.failures.store(0, Ordering::Relaxed);
                tracing::warn!("rebuilt the Redis cluster connection after repeated failures");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "rebuilding the Redis cluster connection failed"),
            Err(_) => tracing::warn!("rebuilding the Redis cluster connection timed out"),
        }
    }

    async fn route(&self, cmd: Cmd, routing: RoutingInfo) -> RedisResult<Value> {
        let r = self.current().route_command(cmd, routing).await;
        self.observe(&r).await;
        r
    }
}

impl Redis {
    /// Connects to the configured nodes. With `rediss://` URLs the connection
    /// is TLS (and fails if the server offers none); an AUTH token, if any,
    /// must already be resolved ([`crate::aws::resolve_redis_auth`]).
    pub async fn connect(cfg: &RedisConfig) -> RedisResult<Self> {
        let token = match &cfg.auth {
            RedisAuth::None => None,
            RedisAuth::Token(t) => Some(t.expose().to_string()),
            RedisAuth::SecretArn(_) => {
                return Err(RedisError::from((redis::ErrorKind::InvalidClientConfig, "the Redis AUTH token secret was not resolved")))
            }
        };
        let root_cert = match &cfg.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| RedisError::from((redis::ErrorKind::InvalidClientConfig, "cannot read FS_REDIS_CA_FILE", e.to_string())))?),
            None => None,
        };
        if cfg.cluster {
            let mut builder = ClusterClientBuilder::new(cfg.urls.clone())
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(3)
                .max_retry_wait(500);
            if let Some(t) = &token {
                builder = builder.password(t);
            }
            if let Some(root) = root_cert {
                builder = builder.certs(TlsCertificates { client_tls: None, root_cert: Some(root) });
            }
            if cfg.read_from_replicas {
                builder = builder.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
            }
            let client = builder.build()?;
            let conn = client.get_async_connection().await?;
            Ok(Redis::Cluster(Arc::new(Healing {
                client,
                conn: RwLock::new(conn),
                failures: AtomicU32::new(0),
                rebuild: tokio::sync::Mutex::new(Instant::now() - Duration::from_secs(60)),
                timeout: cfg.timeout,
            })))
        } else {
            let url = cfg.urls.first().map(String::as_str).unwrap_or(crate::config::DEFAULT_REDIS_URL);
            let mut info = url.into_connection_info()?;
            if let Some(t) = &token {
                let settings = info.redis_settings().clone().set_password(t);
                info = info.set_redis_settings(settings);
            }
            let client = match root_cert {
                Some(root) => redis::Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(root) })?,
                None => redis::Client::open(info)?,
            };
            let conf = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(3);
            Ok(Redis::Standalone(client.get_connection_manager_with_config(conf).await?))
        }
    }

    /// [`Redis::connect`], then a `PING`, so a component fails at start (not
    /// on its first request) when Redis is unreachable, refuses the AUTH
    /// token, or does not speak TLS where TLS is configured.
    pub async fn connect_checked(cfg: &RedisConfig) -> RedisResult<Self> {
        let r = Self::connect(cfg).await?;
        let _: String = redis::cmd("PING").query_async(&mut r.clone()).await?;
        Ok(r)
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// The slot of `key` for [`Redis::write_grouped`]; in standalone mode,
    /// where slots do not matter, the same one for every key.
    pub fn slot_of(&self, key: &str) -> Slot {
        const ANY: Slot = match Slot::new(0) {
            Some(s) => s,
            None => panic!("slot 0 exists"),
        };
        if self.is_cluster() { Slot::for_key(key) } else { ANY }
    }

    /// Sends `cmds` (each with the slot of its key) as pipelines, one per
    /// slot in cluster mode, concurrently; returns once every reply is in.
    pub async fn write_grouped(&self, cmds: Vec<(Slot, Cmd)>) -> RedisResult<()> {
        let pipes: Vec<Pipeline> = if self.is_cluster() {
            let mut by_slot: HashMap<Slot, Pipeline> = HashMap::new();
            for (slot, cmd) in cmds {
                by_slot.entry(slot).or_default().add_command(cmd).ignore();
            }
            by_slot.into_values().collect()
        } else {
            let mut p = Pipeline::with_capacity(cmds.len());
            for (_, cmd) in cmds {
                p.add_command(cmd).ignore();
            }
            vec![p]
        };
        futures::stream::iter(pipes)
            .map(|p| {
                let mut conn = self.clone();
                async move { p.exec_async(&mut conn).await }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

impl Redis {
    /// Waits until `acks` replicas of every primary have every write this
    /// connection sent, or `timeout`; returns the fewest acknowledgements seen.
    /// `WAIT` blocks the connection it runs on, and must run on the one that
    /// wrote, so callers use it once per chunk, after the chunk's writes.
    pub async fn wait_for_replicas(&self, acks: u32, timeout: std::time::Duration) -> RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(acks).arg(timeout.as_millis() as u64);
        match self {
            Redis::Cluster(h) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::Aggregate(AggregateOp::Min))));
                let v = h.route(cmd, routing).await?;
                Ok(redis::from_redis_value(v)?)
            }
            Redis::Standalone(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// How many of `fields` exist in the hash `key`, read on its primary.
    pub async fn count_fields(&self, key: &str, fields: &[String]) -> RedisResult<u64> {
        // A script, so it runs on the primary and costs one round trip.
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "local n = 0 for i = 1, #ARGV do n = n + redis.call('HEXISTS', KEYS[1], ARGV[i]) end return n",
            )
        });
        let mut inv = SCRIPT.key(key);
        for f in fields {
            inv.arg(f);
        }
        inv.invoke_async(&mut self.clone()).await
    }

    /// Addresses (`host`, `port`) of the primaries; one entry in standalone mode.
    pub async fn primaries(&self) -> RedisResult<Vec<(String, u16)>> {
        match self {
            Redis::Cluster(h) => {
                let v = h.route(redis::cmd("CLUSTER").arg("NODES").to_owned(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)).await?;
                let text: String = redis::from_redis_value(v)?;
                Ok(parse_primaries(&text))
            }
            Redis::Standalone(_) => Ok(vec![(String::new(), 0)]),
        }
    }

    /// Every key matching `pattern`, by `SCAN` on each primary (never `KEYS`).
    pub async fn scan_match(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut out = Vec::new();
        for (host, port) in self.primaries().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = match self {
                    Redis::Cluster(h) => {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port });
                        redis::from_redis_value(h.route(cmd, routing).await?)?
                    }
                    Redis::Standalone(c) => cmd.query_async(&mut c.clone()).await?,
                };
                out.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Primaries from `CLUSTER NODES` output: `id host:port@bus flags …`.
fn parse_primaries(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                return None;
            }
            let hostport = addr.split('@').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Cluster(h) => Box::pin(async move {
                let r = h.current().req_packed_command(cmd).await;
                h.observe(&r).await;
                r
            }),
            Redis::Standalone(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Cluster(h) => Box::pin(async move {
                let r = h.current().req_packed_commands(cmd, offset, count).await;
                h.observe(&r).await;
                r
            }),
            Redis::Standalone(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Cluster(h) => h.current().get_db(),
            Redis::Standalone(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let text = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:7004@17004 slave a1 0 0 1 connected\n\
                    c3 127.0.0.1:7002@17002 master,fail - 0 0 2 connected\n\
                    d4 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383\n";
        assert_eq!(super::parse_primaries(text), vec![("127.0.0.1".to_string(), 7001), ("127.0.0.1".to_string(), 7003)]);
    }
}
