//! Where a [`super::Writer`]'s full rounds go: Redis (a chunk of a batch),
//! or a buffer (a delta, applied only once all of it is read).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::db::deltas::DeltaUser;
use shared::db::store::Redis;
use shared::keys::DatasetKeys;
use tokio::task::JoinSet;

use super::pace::Pacer;
use super::round::{Round, Sealed};
use crate::error::IngestError;

/// Takes a writer's full rounds.
pub trait Sink: Send {
    /// Takes a full round, leaving it empty.
    fn take(&mut self, round: &mut Round);

    /// Sends what was taken; may wait for room (rounds in flight, a rate cap).
    fn send(&mut self) -> impl Future<Output = Result<(), IngestError>> + Send {
        async { Ok(()) }
    }

    /// Waits for everything sent.
    fn finish(&mut self) -> impl Future<Output = Result<(), IngestError>> + Send {
        async { Ok(()) }
    }

    /// Stops what is still in flight: nothing writes after the chunk gave up.
    fn stop(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Most bytes of one pipeline to Redis (keys, ids and values of whole
/// buckets): a round goes out in pieces of this size, one after another, so
/// that a reply never waits behind more than a piece's work, however large
/// rounds grow (`FS_REDIS_TIMEOUT_MS` bounds a piece, not a round). At about
/// 100 MB/s of HSETs a node, a piece is a few milliseconds; its commands
/// are built as it goes, so a round in flight holds one piece besides itself.
pub const PIPELINE_MAX_BYTES: usize = 2 << 20;

/// Rounds of one chunk written at once while the next is parsed. With two,
/// Redis has the next round queued when it finishes one, instead of waiting
/// while the parser catches up. A worker holds these and the round filling
/// (`FS_INGEST_ROUNDS_MIB` is shared among them).
pub const ROUNDS_IN_FLIGHT: usize = 2;

/// Writes rounds into a version's buckets: one HSET per bucket, pipelined
/// per primary in pieces of [`PIPELINE_MAX_BYTES`], up to
/// [`ROUNDS_IN_FLIGHT`] rounds at once.
pub struct RedisSink<'a> {
    redis: &'a Redis,
    keys: &'a DatasetKeys,
    version: &'a str,
    /// Most users sent per second (`FS_INGEST_MAX_USERS_PER_S`), if capped.
    max_users_per_s: Option<u64>,
    /// The worker's pace by readers' latency, admitting each piece.
    pacer: Option<Arc<Pacer>>,
    /// Rounds taken, not sent yet.
    sealed: Vec<Sealed>,
    /// Users in rounds already sent, and when the first was: for the cap.
    sent_users: u64,
    started: Instant,
    /// Dropping the set aborts what is in flight.
    in_flight: JoinSet<redis::RedisResult<()>>,
    /// Users by bucket, kept only when writes must be checked after a
    /// failover (replica acknowledgements on).
    written: Option<HashMap<u32, Vec<String>>>,
}

impl<'a> RedisSink<'a> {
    /// A sink writing `version` of the dataset `keys` names; `track`: keep
    /// which users went to which bucket ([`RedisSink::written`]).
    pub fn new(
        redis: &'a Redis,
        keys: &'a DatasetKeys,
        version: &'a str,
        max_users_per_s: Option<u64>,
        track: bool,
    ) -> Self {
        RedisSink {
            redis,
            keys,
            version,
            max_users_per_s,
            pacer: None,
            sealed: Vec::new(),
            sent_users: 0,
            started: Instant::now(),
            in_flight: JoinSet::new(),
            written: track.then(HashMap::new),
        }
    }

    /// Each piece waits for `pacer` to admit its users.
    pub fn paced(mut self, pacer: Arc<Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Users by bucket, when tracked.
    pub fn written(self) -> HashMap<u32, Vec<String>> {
        self.written.unwrap_or_default()
    }

    /// Waits for the oldest round in flight; its error, if it failed.
    async fn wait_one(&mut self) -> Result<(), IngestError> {
        if let Some(done) = self.in_flight.join_next().await {
            done.map_err(|e| {
                IngestError::Redis(redis::RedisError::from(std::io::Error::other(
                    e.to_string(),
                )))
            })??;
        }
        Ok(())
    }
}

impl Sink for RedisSink<'_> {
    fn take(&mut self, round: &mut Round) {
        if let Some(written) = &mut self.written {
            for (bucket, id, _) in round.users() {
                written
                    .entry(bucket)
                    .or_default()
                    .push(String::from_utf8_lossy(id).into_owned());
            }
        }
        self.sealed.push(round.seal(
            self.keys,
            self.version,
            self.redis.is_cluster(),
            PIPELINE_MAX_BYTES,
        ));
    }

    /// Sends the rounds taken, each first waiting for the oldest in flight
    /// when [`ROUNDS_IN_FLIGHT`] are, and, under a cap, until the users sent
    /// before it are within the rate.
    async fn send(&mut self) -> Result<(), IngestError> {
        for pieces in std::mem::take(&mut self.sealed) {
            let users = pieces.len() as u64;
            if let Some(cap) = self.max_users_per_s {
                let due = Duration::from_secs_f64(self.sent_users as f64 / cap as f64);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            self.sent_users += users;
            while self.in_flight.len() >= ROUNDS_IN_FLIGHT {
                self.wait_one().await?;
            }
            let redis = self.redis.clone();
            let pacer = self.pacer.clone();
            self.in_flight.spawn(async move {
                for piece in pieces {
                    if let Some(p) = &pacer {
                        p.admit(piece.users).await;
                    }
                    redis.write_grouped(piece.cmds).await?;
                }
                Ok(())
            });
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), IngestError> {
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    async fn stop(&mut self) {
        self.in_flight.shutdown().await;
    }
}

/// A delta's users, kept until all of them are read: id, and stored value
/// or `None` for a tombstone.
#[derive(Default)]
pub struct DeltaBuffer {
    pub users: Vec<DeltaUser>,
}

impl Sink for DeltaBuffer {
    fn take(&mut self, round: &mut Round) {
        for (_, id, value) in round.users() {
            // A tombstone is a user with an empty value: no stored value is empty.
            self.users.push((
                String::from_utf8_lossy(id).into_owned(),
                (!value.is_empty()).then(|| value.to_vec()),
            ));
        }
        round.clear();
    }
}
