//! The Redis connection and pipelined writes.
//!
//! [`Redis`] is one multiplexed connection per process, cluster or standalone
//! by configuration, shared by cloning (clones are cheap and share the socket),
//! so a warm Lambda reuses it across invocations. Calls fail within the
//! configured timeout instead of retrying for minutes.
//!
//! An async cluster pipeline must stay within one slot, so [`Redis::write_grouped`]
//! groups commands by slot and sends the groups concurrently; the multiplexed
//! connections pipeline them on the wire per node.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisConfig;

/// How many slot groups are in flight at once during a grouped write.
const WRITE_CONCURRENCY: usize = 64;

/// A Redis connection in cluster or standalone mode.
#[derive(Clone)]
pub enum Redis {
    Cluster(ClusterConnection),
    Standalone(ConnectionManager),
}

impl Redis {
    /// Connects to the configured nodes.
    pub async fn connect(cfg: &RedisConfig) -> RedisResult<Self> {
        if cfg.cluster {
            let client = ClusterClientBuilder::new(cfg.urls.clone())
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(3)
                .max_retry_wait(500)
                .build()?;
            Ok(Redis::Cluster(client.get_async_connection().await?))
        } else {
            let url = cfg.urls.first().map(String::as_str).unwrap_or(crate::config::DEFAULT_REDIS_URL);
            let client = redis::Client::open(url)?;
            let conf = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(3);
            Ok(Redis::Standalone(client.get_connection_manager_with_config(conf).await?))
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// Sends `cmds` (each with the key that routes it) as pipelines, one per
    /// slot in cluster mode, concurrently; returns once every reply is in.
    pub async fn write_grouped(&self, cmds: Vec<(String, Cmd)>) -> RedisResult<()> {
        let pipes: Vec<Pipeline> = if self.is_cluster() {
            let mut by_slot: HashMap<Slot, Pipeline> = HashMap::new();
            for (key, cmd) in cmds {
                by_slot.entry(Slot::for_key(key.as_bytes())).or_default().add_command(cmd).ignore();
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

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Cluster(c) => c.req_packed_command(cmd),
            Redis::Standalone(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Redis::Standalone(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Cluster(c) => c.get_db(),
            Redis::Standalone(c) => c.get_db(),
        }
    }
}
