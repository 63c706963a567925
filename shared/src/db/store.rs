// Over 500 lines: the one Redis connection: cluster healing, pipelines grouped per primary, the slot layout, and their tests.
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
//! Bulk writes go through [`Redis::write_grouped`]: in cluster mode one
//! pipeline per primary, grouped by the slot map from `CLUSTER SLOTS` and
//! routed by one of the primary's slots (a pipeline grouped by slot instead
//! would send thousands of one-command pipelines per round).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo,
    SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{RedisAuth, RedisConfig};
use crate::keys::DatasetKeys;
use redis::{IntoConnectionInfo, RedisError, TlsCertificates};

/// Bucket keys per pipelined round in [`Redis::sum_over_buckets`].
const BUCKETS_PER_ROUND: u32 = 2000;
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
    /// Which primary owns each slot, as `CLUSTER SLOTS` last said; dropped
    /// when a grouped write fails, and fetched again on the next one.
    owners: RwLock<Option<SlotOwners>>,
}

/// Slot → index of the primary that owns it.
type SlotOwners = Arc<HashMap<Slot, usize>>;

/// The cluster's layout, as `CLUSTER SLOTS` gives it: the one place it is read.
struct Layout {
    /// Addresses (`host`, `port`) of the primaries that own slots.
    primaries: Vec<(String, u16)>,
    /// Slot → index into `primaries`.
    owners: HashMap<Slot, usize>,
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
            Err(e) => {
                e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
            }
        };
        if !broken || self.failures.fetch_add(1, Ordering::Relaxed) + 1 < REBUILD_AFTER {
            return;
        }
        let Ok(mut last) = self.rebuild.try_lock() else {
            return;
        };
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
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rebuilding the Redis cluster connection failed")
            }
            Err(_) => tracing::warn!("rebuilding the Redis cluster connection timed out"),
        }
    }

    /// The slot owners, from `CLUSTER SLOTS` if not known yet.
    async fn owners(&self) -> RedisResult<SlotOwners> {
        if let Some(o) = self.owners.read().expect("owners lock").clone() {
            return Ok(o);
        }
        let owners = Arc::new(self.layout().await?.owners);
        *self.owners.write().expect("owners lock") = Some(owners.clone());
        Ok(owners)
    }

    /// The layout now, from `CLUSTER SLOTS`.
    async fn layout(&self) -> RedisResult<Layout> {
        let reply = self
            .route(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        parse_cluster_slots(&reply)
    }

    /// One pipeline of `cmds` (keys of any slots a single primary owns) to
    /// the primary owning `slot`; its replies, or the first error among them.
    async fn pipeline_to(&self, slot: Slot, cmds: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        let n = cmds.len();
        let mut p = Pipeline::with_capacity(n);
        for cmd in cmds {
            p.add_command(cmd);
        }
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(slot, SlotAddr::Master));
        let r = self
            .current()
            .route_pipeline(p, 0, n, route)
            .await
            .and_then(|replies| replies.into_iter().map(Value::extract_error).collect());
        self.observe(&r).await;
        r
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
    /// must already be resolved (`shared::boot::resolve_redis_auth`).
    pub async fn connect(cfg: &RedisConfig) -> RedisResult<Self> {
        let (username, token) = match &cfg.auth {
            RedisAuth::None => (None, None),
            RedisAuth::Token(t) => (None, Some(t.expose().to_string())),
            RedisAuth::User { name, password } => {
                (Some(name.clone()), Some(password.expose().to_string()))
            }
            RedisAuth::SecretArn(_) => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "the Redis AUTH token secret was not resolved",
                )))
            }
        };
        let root_cert = match &cfg.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read FS_REDIS_CA_FILE",
                    e.to_string(),
                ))
            })?),
            None => None,
        };
        if cfg.cluster {
            let mut builder = ClusterClientBuilder::new(cfg.urls.clone())
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(3)
                .max_retry_wait(500)
                .tcp_settings(tcp_settings());
            if let Some(t) = &token {
                builder = builder.password(t);
            }
            if let Some(u) = &username {
                builder = builder.username(u);
            }
            if let Some(root) = root_cert {
                builder = builder.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                });
            }
            if cfg.read_from_replicas {
                builder = builder
                    .read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
            }
            let client = builder.build()?;
            let conn = client.get_async_connection().await?;
            Ok(Redis::Cluster(Arc::new(Healing {
                client,
                conn: RwLock::new(conn),
                failures: AtomicU32::new(0),
                rebuild: tokio::sync::Mutex::new(Instant::now() - Duration::from_secs(60)),
                timeout: cfg.timeout,
                owners: RwLock::new(None),
            })))
        } else {
            let url = cfg
                .urls
                .first()
                .ok_or_else(|| {
                    RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no Redis URL configured",
                    ))
                })?
                .as_str();
            let mut info = url.into_connection_info()?;
            info = info.set_tcp_settings(tcp_settings());
            if let Some(t) = &token {
                let mut settings = info.redis_settings().clone().set_password(t);
                if let Some(u) = &username {
                    settings = settings.set_username(u);
                }
                info = info.set_redis_settings(settings);
            }
            let client = match root_cert {
                Some(root) => redis::Client::build_with_tls(
                    info,
                    TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )?,
                None => redis::Client::open(info)?,
            };
            let conf = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(3);
            Ok(Redis::Standalone(
                client.get_connection_manager_with_config(conf).await?,
            ))
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

    /// The slot of `key` for [`Redis::write_grouped`]: see [`slot_of`].
    pub fn slot_of(&self, key: &str) -> Slot {
        slot_of(self.is_cluster(), key.as_bytes())
    }

    /// Sends `cmds` (each with the slot of its key) as pipelines and returns
    /// once every reply is in. In cluster mode there is one pipeline per
    /// primary (by `CLUSTER SLOTS`), each routed by one of its slots; a slot
    /// that moved since fails the write, which drops the slot map so that a
    /// retry groups by the new one.
    pub async fn write_grouped(&self, cmds: Vec<(Slot, Cmd)>) -> RedisResult<()> {
        self.query_grouped(cmds).await.map(drop)
    }

    /// [`Redis::write_grouped`] for commands whose replies matter: returns
    /// them in the order of `cmds`, or the first error among them.
    pub async fn query_grouped(&self, cmds: Vec<(Slot, Cmd)>) -> RedisResult<Vec<Value>> {
        self.query_grouped_counted(cmds)
            .await
            .map(|(replies, _)| replies)
    }

    /// [`Redis::query_grouped`], also telling how many pipelines (round
    /// trips, one per primary holding a key) it sent.
    pub async fn query_grouped_counted(
        &self,
        cmds: Vec<(Slot, Cmd)>,
    ) -> RedisResult<(Vec<Value>, usize)> {
        if cmds.is_empty() {
            // An empty pipeline is an error to a standalone Redis ("empty command").
            return Ok((Vec::new(), 0));
        }
        match self {
            Redis::Cluster(h) => {
                let owners = h.owners().await?;
                let count = cmds.len();
                // Per primary: a slot to route by, and the commands with their places.
                let mut by_node: HashMap<usize, (Slot, Vec<usize>, Vec<Cmd>)> = HashMap::new();
                for (i, (slot, cmd)) in cmds.into_iter().enumerate() {
                    let node = owners.get(&slot).copied().unwrap_or(usize::MAX);
                    let group = by_node
                        .entry(node)
                        .or_insert_with(|| (slot, Vec::new(), Vec::new()));
                    group.1.push(i);
                    group.2.push(cmd);
                }
                let pipelines = by_node.len();
                let sent = by_node
                    .into_values()
                    .map(|(slot, places, cmds)| async move {
                        Ok::<_, RedisError>((places, h.pipeline_to(slot, cmds).await?))
                    });
                let replies = match futures::future::try_join_all(sent).await {
                    Ok(r) => r,
                    Err(e) => {
                        *h.owners.write().expect("owners lock") = None;
                        return Err(e);
                    }
                };
                let mut out = vec![Value::Nil; count];
                for (places, values) in replies {
                    for (i, v) in places.into_iter().zip(values) {
                        out[i] = v;
                    }
                }
                Ok((out, pipelines))
            }
            Redis::Standalone(_) => {
                let mut p = Pipeline::with_capacity(cmds.len());
                for (_, cmd) in cmds {
                    p.add_command(cmd);
                }
                let replies: Vec<Value> = p.query_async(&mut self.clone()).await?;
                Ok((
                    replies
                        .into_iter()
                        .map(Value::extract_error)
                        .collect::<RedisResult<_>>()?,
                    1,
                ))
            }
        }
    }

    /// Runs `command <key>` on every bucket key of `version`, in pipelined
    /// rounds grouped as [`Redis::query_grouped`] groups them; returns the sum
    /// of the integer replies.
    pub async fn sum_over_buckets(
        &self,
        keys: &DatasetKeys,
        version: &str,
        buckets: u32,
        command: &str,
    ) -> RedisResult<u64> {
        self.sum_per_bucket(buckets, |b| {
            let key = keys.bucket(version, b);
            (self.slot_of(&key), redis::cmd(command).arg(key).to_owned())
        })
        .await
    }

    /// Unlinks a version's buckets and their delta times (one `UNLINK` of
    /// both per bucket: they share a slot); returns the keys removed.
    pub async fn unlink_buckets(
        &self,
        keys: &DatasetKeys,
        version: &str,
        buckets: u32,
    ) -> RedisResult<u64> {
        self.sum_per_bucket(buckets, |b| {
            let key = keys.bucket(version, b);
            (
                self.slot_of(&key),
                redis::cmd("UNLINK")
                    .arg(&key)
                    .arg(keys.bucket_times(version, b))
                    .to_owned(),
            )
        })
        .await
    }

    /// Sends `command(b)` for every bucket `b` below `buckets`, in pipelined
    /// rounds grouped as [`Redis::query_grouped`] groups them; returns the
    /// sum of the integer replies.
    async fn sum_per_bucket(
        &self,
        buckets: u32,
        command: impl Fn(u32) -> (Slot, Cmd),
    ) -> RedisResult<u64> {
        let mut total = 0;
        for first in (0..buckets).step_by(BUCKETS_PER_ROUND as usize) {
            let cmds = (first..buckets.min(first + BUCKETS_PER_ROUND))
                .map(&command)
                .collect();
            for reply in self.query_grouped(cmds).await? {
                total += redis::from_redis_value::<u64>(reply)?;
            }
        }
        Ok(total)
    }
}

/// The slot of `key` for [`Redis::write_grouped`] on a cluster; against a
/// standalone Redis, where slots do not matter, the same one for every key.
pub fn slot_of(cluster: bool, key: &[u8]) -> Slot {
    const ANY: Slot = match Slot::new(0) {
        Some(s) => s,
        None => panic!("slot 0 exists"),
    };
    if cluster {
        Slot::for_key(key)
    } else {
        ANY
    }
}

/// TCP options for every Redis connection: `TCP_NODELAY`, so the tail of a
/// pipeline or a lone request is not held back waiting for the
/// acknowledgement of what went before it (Nagle's algorithm, which the
/// client leaves on by default).
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The layout in a `CLUSTER SLOTS` reply: each entry is `[first, last,
/// [host, port, ..], replicas..]`.
fn parse_cluster_slots(reply: &Value) -> RedisResult<Layout> {
    let bad = || RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut primaries: Vec<(String, u16)> = Vec::new();
    let mut owners = HashMap::with_capacity(16384);
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        let address = (host, u16::try_from(*port).map_err(|_| bad())?);
        let node = match primaries.iter().position(|p| *p == address) {
            Some(i) => i,
            None => {
                primaries.push(address);
                primaries.len() - 1
            }
        };
        for n in *first..=*last {
            let slot = u16::try_from(n).ok().and_then(Slot::new).ok_or_else(bad)?;
            owners.insert(slot, node);
        }
    }
    Ok(Layout { primaries, owners })
}

impl Redis {
    /// Milliseconds since the Unix epoch by the Redis server's clock: the
    /// clock the version protocol's times come from.
    pub async fn server_ms(&self) -> RedisResult<u64> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.clone()).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Waits until `acks` replicas of every primary have every write this
    /// connection sent, or `timeout`; returns the fewest acknowledgements seen.
    /// `WAIT` blocks the connection it runs on, and must run on the one that
    /// wrote, so callers use it once per chunk, after the chunk's writes.
    pub async fn wait_for_replicas(
        &self,
        acks: u32,
        timeout: std::time::Duration,
    ) -> RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(acks).arg(timeout.as_millis() as u64);
        match self {
            Redis::Cluster(h) => {
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::Aggregate(AggregateOp::Min)),
                ));
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

    /// Addresses (`host`, `port`) of the primaries that own slots; one entry
    /// in standalone mode.
    pub async fn primaries(&self) -> RedisResult<Vec<(String, u16)>> {
        match self {
            Redis::Cluster(h) => Ok(h.layout().await?.primaries),
            Redis::Standalone(_) => Ok(vec![(String::new(), 0)]),
        }
    }

    /// `cmd` on each primary (the one node in standalone mode), replies in
    /// the order of [`Redis::primaries`].
    pub async fn on_each_primary(&self, cmd: &Cmd) -> RedisResult<Vec<Value>> {
        let mut out = Vec::new();
        for (host, port) in self.primaries().await? {
            out.push(match self {
                Redis::Cluster(h) => {
                    h.route(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                    )
                    .await?
                }
                Redis::Standalone(c) => cmd.query_async(&mut c.clone()).await?,
            });
        }
        Ok(out)
    }

    /// Every key matching `pattern`, by `SCAN` on each primary (never `KEYS`).
    pub async fn scan_match(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut out = Vec::new();
        for (host, port) in self.primaries().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<String>) = match self {
                    Redis::Cluster(h) => {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
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

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
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
    use super::*;

    #[test]
    fn cluster_slots_map_every_slot_to_its_primary() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, primary: Value| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                primary,
                node("10.0.0.9", 7009),
            ])
        };
        let reply = Value::Array(vec![
            range(0, 5460, node("10.0.0.1", 7001)),
            range(5461, 10922, node("10.0.0.2", 7002)),
            range(10923, 16383, node("10.0.0.1", 7001)),
        ]);
        let layout = parse_cluster_slots(&reply).unwrap();
        assert_eq!(
            layout.primaries,
            vec![
                ("10.0.0.1".to_string(), 7001),
                ("10.0.0.2".to_string(), 7002)
            ]
        );
        let owners = layout.owners;
        assert_eq!(owners.len(), 16384);
        let of = |n: u16| owners[&Slot::new(n).unwrap()];
        assert_eq!((of(0), of(5461), of(16383)), (0, 1, 0));
        assert!(
            parse_cluster_slots(&Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_err()
        );
        assert!(parse_cluster_slots(&Value::Array(vec![range(0, 16384, node("h", 1))])).is_err());
    }
}
