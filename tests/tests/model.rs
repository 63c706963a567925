//! The version protocol against a model of what it promises: random
//! interleavings of register, chunk writes (repeated and out of order),
//! failures, operator moves, retention (also on stale reads) and the janitor,
//! run against the real Redis Cluster, with the promises checked after every step:
//! - the pointer names only a complete version whose data is all there;
//! - without an operator move, the pointer only moves forward;
//! - a version that failed never goes live;
//! - no version a reader may still hold (live within the grace) is deleted;
//! - no data key remains of a version that is deleted or failed and cleaned;
//! - deltas and forgets (`fsctl forget`, a delta of tombstones), all newer
//!   than every version here, are all in the live version, each user as the
//!   last delta to touch it (by event time, then id) left it, whether they
//!   reached it while it was live or kept, or it replayed them before its
//!   flip or before an operator's move; every other user of its batch is
//!   there as the batch wrote it.
//!
//! `FS_MODEL_CASES` sets the number of cases (default 48).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ingest::s3::messages::ChunkMessage;
use integration_tests::{config, spans_of, unique};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use redis::AsyncCommands;
use shared::config::{Retention, Validation};
use shared::db::deltas;
use shared::db::protocol::{self, ChunkDone, Dataset, Moved, NewVersion, Span, State, Step};
use shared::db::store::Redis;
use shared::keys::bucket_of;

const VERSIONS: usize = 3;
const CHUNKS: u32 = 2;
const BUCKETS: u32 = 3;
/// Retention's grace in the model: short, so retention runs inside a case.
const GRACE: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
enum Op {
    Register(usize),
    WriteChunk(usize, u32),
    Fail(usize),
    Rollback(usize),
    Promote(usize, bool),
    Gc {
        backups: u32,
    },
    /// A retention run that decided on a stale read: deletes this version
    /// if the protocol's own check lets it.
    StaleRetire(usize),
    /// The same for the version that was live before the current one.
    StaleRetirePrevious,
    Janitor,
    Pause,
    /// `fsctl forget` of one of [`FORGETS`].
    Forget(usize),
    /// A delta upload of one of [`DELTAS`], applied as ingest applies it.
    Delta(usize),
}

/// Users the model forgets: some in every version, one only in the large ones.
const FORGETS: [&[&str]; 2] = [&["1"], &["1001", "15"]];

/// Deltas: users with their first item, or a tombstone (`None`); user 5000
/// is in no batch.
const DELTAS: [&[(&str, Option<u64>)]; 2] = [
    &[("2", Some(222)), ("5000", Some(5)), ("1", Some(111))],
    &[("2", Some(333)), ("1001", None), ("1002", Some(12))],
];

fn op() -> impl Strategy<Value = Op> {
    let v = 0..VERSIONS;
    prop_oneof![
        3 => v.clone().prop_map(Op::Register),
        12 => (v.clone(), 0..CHUNKS).prop_map(|(v, c)| Op::WriteChunk(v, c)),
        1 => v.clone().prop_map(Op::Fail),
        1 => v.clone().prop_map(Op::Rollback),
        1 => (v.clone(), any::<bool>()).prop_map(|(v, f)| Op::Promote(v, f)),
        1 => (0..2u32).prop_map(|backups| Op::Gc { backups }),
        1 => v.clone().prop_map(Op::StaleRetire),
        2 => Just(Op::StaleRetirePrevious),
        1 => Just(Op::Janitor),
        1 => Just(Op::Pause),
        1 => (0..FORGETS.len()).prop_map(Op::Forget),
        2 => (0..DELTAS.len()).prop_map(Op::Delta),
    ]
}

/// Version ids in upload order, explicit event times.
fn version_id(i: usize) -> String {
    shared::version_id::derive(&shared::version_id::VersionSource {
        event_time: &format!("2026-12-01T00:00:{:02}Z", i + 1),
        sequencer: None,
        bucket: "b",
        key: "k",
        etag: "e",
    })
    .unwrap()
}

/// Users of a version: small ones trip the user-count guard.
fn users_of(i: usize) -> u64 {
    if i == 1 {
        6
    } else {
        40
    }
}

fn chunk_users(i: usize, chunk: u32) -> Vec<String> {
    let per = users_of(i) / u64::from(CHUNKS);
    (0..per)
        .map(|u| (u64::from(chunk) * 1000 + u).to_string())
        .collect()
}

struct Case {
    ds: Dataset,
    ids: Vec<String>,
    validation: Validation,
    /// Versions that ever failed.
    failed: HashSet<String>,
    /// Server time at which each version was last seen live.
    seen_live: HashMap<String, u64>,
    pointer: Option<String>,
    /// The version live before the pointer's current one.
    previous: Option<String>,
    /// Versions registered once: the planner never registers a version
    /// again after retention forgot it (its upload is not seen again).
    registered: HashSet<String>,
    /// Each user a delta or forget touched: the (event time, id) of the last
    /// one to, and the first item it left (`None`: deleted).
    touched: HashMap<String, ((u64, String), Option<u64>)>,
    deltas_sent: usize,
    /// What replays deltas onto a version (forgets need no object source).
    replay: ingest::deps::IngestDeps<integration_tests::FileSource>,
}

impl Case {
    async fn register(&mut self, i: usize) {
        let v = &self.ids[i];
        let ranges: Vec<(u64, u64)> = (0..u64::from(CHUNKS))
            .map(|c| (c * 100, c * 100 + 100))
            .collect();
        let nv = NewVersion {
            version: v,
            spans: &spans_of(&ranges),
            files: &[],
            buckets: BUCKETS,
            source: "s3://b/k",
            etag: "e",
            size: 200,
            format: "json-lines",
            est_bytes: 0,
            hold: None,
            expected_records: None,
        };
        self.ds.register(&nv).await.unwrap();
        self.registered.insert(v.clone());
    }

    async fn step(&mut self, op: &Op) {
        let ds = &self.ds;
        match op {
            Op::Register(i) => self.register(*i).await,
            Op::WriteChunk(i, c) => {
                let v = &self.ids[*i].clone();
                // The planner registers a version before its chunks are sent.
                if !self.registered.contains(v) {
                    self.register(*i).await;
                }
                let ds = &self.ds;
                // As ingest does: only a version in progress is written.
                let Some(info) = ds.version_info(v).await.unwrap() else {
                    return;
                };
                if !info.state.is_in_progress() {
                    return;
                }
                let users = chunk_users(*i, *c);
                let mut conn = ds.redis().clone();
                for u in &users {
                    let _: () = conn
                        .hset(ds.keys().bucket(v, bucket_of(u, BUCKETS)), u, "x")
                        .await
                        .unwrap();
                }
                let done = ChunkDone {
                    version: v,
                    chunk: *c,
                    span: Span::from((u64::from(*c) * 100, u64::from(*c) * 100 + 100)).into(),
                    buckets: BUCKETS,
                    users: users.len() as u64,
                    bad: 0,
                };
                // As ingest does: deltas newer than the version replayed before its flip.
                let mut step = ds.chunk_written(&done, &self.validation).await.unwrap();
                while step == Step::Replay {
                    ingest::load::delta::replay(&self.replay, ds, v, BUCKETS)
                        .await
                        .unwrap();
                    step = ds.finalize(v, BUCKETS, &self.validation).await.unwrap();
                }
            }
            Op::Fail(i) => {
                ds.fail(&self.ids[*i], "model: bad input").await.unwrap();
            }
            // As fsctl does: deltas the target lacks replayed before the move.
            Op::Rollback(i) => {
                while ds.rollback(&self.ids[*i]).await.unwrap() == Moved::Replay {
                    ingest::load::delta::replay(&self.replay, ds, &self.ids[*i], BUCKETS)
                        .await
                        .unwrap();
                }
            }
            Op::Promote(i, force) => {
                while ds.promote(&self.ids[*i], *force).await.unwrap() == Moved::Replay {
                    ingest::load::delta::replay(&self.replay, ds, &self.ids[*i], BUCKETS)
                        .await
                        .unwrap();
                }
            }
            Op::Forget(k) => {
                let users: Vec<String> = FORGETS[*k].iter().map(|u| u.to_string()).collect();
                let done = fsctl::forget::forget(ds, &users).await.unwrap();
                let d = deltas::get(ds.redis(), ds.keys(), &done.id)
                    .await
                    .unwrap()
                    .unwrap();
                self.touch((d.event_ms, d.id), users.iter().map(|u| (u.as_str(), None)));
            }
            Op::Delta(k) => {
                // The file a delta upload would be, logged as the planner
                // logs it, then applied as ingest applies it.
                self.deltas_sent += 1;
                let name = format!("{}-delta-{}.jsonl", ds.name(), self.deltas_sent);
                let body: String = DELTAS[*k]
                    .iter()
                    .map(|(u, item)| match item {
                        Some(i) => format!("{{\"userId\": {u}, \"movieId\": [{i}]}}\n"),
                        None => format!("{{\"userId\": {u}, \"_delete\": true}}\n"),
                    })
                    .collect();
                std::fs::write(std::env::temp_dir().join(&name), &body).unwrap();
                let now = ds.redis().server_ms().await.unwrap();
                let id = shared::version_id::derive(&shared::version_id::VersionSource {
                    event_time: &shared::version_id::rfc3339_ms(now),
                    sequencer: None,
                    bucket: "local",
                    key: &name,
                    etag: "e",
                })
                .unwrap();
                let msg = ChunkMessage {
                    dataset: ds.name().to_string(),
                    version: id.clone(),
                    bucket: "local".into(),
                    key: name.clone(),
                    etag: "e".into(),
                    size: body.len() as u64,
                    format: ingest::layout::ChunkFormat::JsonLines,
                    compression: ingest::layout::Compression::None,
                    file: 0,
                    chunk: 0,
                    chunks: 1,
                    start: 0,
                    end: body.len() as u64,
                    buckets: 0,
                    more: Vec::new(),
                    delta: true,
                };
                deltas::log(
                    ds.redis(),
                    ds.keys(),
                    &id,
                    &format!("s3://local/{name}"),
                    now,
                    &serde_json::to_string(&msg).unwrap(),
                )
                .await
                .unwrap();
                ingest::load::ingest_chunk(&self.replay, &msg)
                    .await
                    .unwrap();
                self.touch((now, id), DELTAS[*k].iter().copied());
            }
            Op::Gc { backups } => {
                let policy = Retention {
                    backups: *backups,
                    grace: GRACE,
                    abandon_after: Duration::from_secs(3600),
                };
                shared::db::retention::gc(ds, &policy).await.unwrap();
            }
            Op::StaleRetire(i) => {
                ds.delete_version(&self.ids[*i], BUCKETS, GRACE)
                    .await
                    .unwrap();
            }
            Op::StaleRetirePrevious => {
                if let Some(v) = &self.previous {
                    ds.delete_version(v, BUCKETS, GRACE).await.unwrap();
                }
            }
            Op::Janitor => {
                let mut config = config();
                // Abandons what is still ingesting after a moment.
                config.retention = Retention {
                    backups: 1,
                    grace: GRACE,
                    abandon_after: Duration::from_millis(150),
                };
                config.metrics_namespace = String::new();
                let deps = ingest::deps::JanitorDeps {
                    config: config.janitor(),
                    redis: ds.redis().clone(),
                };
                ingest::janitor::run_for(&deps, vec![ds.name().to_string()])
                    .await
                    .unwrap();
            }
            // Past retention's grace, so a retired version may be deleted.
            Op::Pause => tokio::time::sleep(GRACE).await,
        }
    }

    /// Records what a delta left of its users, where it is later than what
    /// touched them before.
    fn touch<'a>(
        &mut self,
        at: (u64, String),
        users: impl Iterator<Item = (&'a str, Option<u64>)>,
    ) {
        for (u, item) in users {
            match self.touched.get(u) {
                Some((last, _)) if *last > at => {}
                _ => {
                    self.touched.insert(u.to_string(), (at.clone(), item));
                }
            }
        }
    }

    /// Checks every promise after `op` (an operator move may move the
    /// pointer back).
    async fn check(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let ds = &self.ds;
        let now = ds.redis().server_ms().await.unwrap();
        let pointer = ds.live().await.unwrap();
        let infos: HashMap<String, protocol::VersionInfo> = {
            let mut m = HashMap::new();
            for v in &self.ids {
                if let Some(i) = ds.version_info(v).await.unwrap() {
                    m.insert(v.clone(), i);
                }
            }
            m
        };
        for (v, info) in &infos {
            if info.state == State::Failed {
                self.failed.insert(v.clone());
            }
        }
        if let Some(p) = &pointer {
            let info = infos.get(&p.version);
            prop_assert!(
                info.is_some_and(|i| i.state == State::Live && i.chunks_done == i.chunks),
                "pointer names {} in {:?}",
                p.version,
                info.map(|i| i.state)
            );
            let stored = ds
                .redis()
                .sum_over_buckets(ds.keys(), &p.version, BUCKETS, "HLEN")
                .await
                .unwrap();
            let i = self.ids.iter().position(|v| *v == p.version).unwrap();
            let all: HashSet<String> = (0..CHUNKS).flat_map(|c| chunk_users(i, c)).collect();
            prop_assert_eq!(
                info.unwrap().users,
                all.len() as u64,
                "users counted before any delta"
            );
            // What the batch wrote, then what the deltas left.
            let mut expected: HashMap<String, Option<u64>> =
                all.iter().map(|u| (u.clone(), None)).collect();
            for (u, (_, item)) in &self.touched {
                match item {
                    Some(first) => expected.insert(u.clone(), Some(*first)),
                    None => expected.remove(u),
                };
            }
            prop_assert_eq!(
                stored,
                expected.len() as u64,
                "the live version {} holds its batch's users and the deltas' as they left them",
                &p.version
            );
            let mut conn = ds.redis().clone();
            for u in self.touched.keys() {
                let value: Option<Vec<u8>> = conn
                    .hget(ds.keys().bucket(&p.version, bucket_of(u, BUCKETS)), u)
                    .await
                    .unwrap();
                let first = value.as_deref().map(|v| match v {
                    b"x" => None,
                    v => shared::record::Stored::decode(v)
                        .ok()
                        .and_then(|s| s.items.first().cloned()),
                });
                let want = expected
                    .get(u)
                    .map(|i| i.map(|n| shared::record::ItemId::Int(n as i64)));
                prop_assert_eq!(first, want, "user {} in live version {}", u, &p.version);
            }
            prop_assert!(
                !self.failed.contains(&p.version),
                "failed version {} is live",
                p.version
            );
            let operator = matches!(op, Op::Rollback(_) | Op::Promote(..));
            if let Some(before) = &self.pointer {
                prop_assert!(
                    operator || p.version >= *before,
                    "pointer moved back from {before} to {} after {op:?}",
                    p.version
                );
            }
            self.seen_live.insert(p.version.clone(), now);
        }
        let now_live = pointer.map(|p| p.version);
        if now_live != self.pointer && self.pointer.is_some() {
            self.previous = self.pointer.take();
        }
        self.pointer = now_live;
        for v in &self.ids {
            let info = infos.get(v);
            let keys = ds
                .redis()
                .sum_over_buckets(ds.keys(), v, BUCKETS, "EXISTS")
                .await
                .unwrap();
            // Held by a reader within the grace: still whole.
            if self
                .seen_live
                .get(v)
                .is_some_and(|&t| now.saturating_sub(t) < GRACE.as_millis() as u64)
            {
                prop_assert!(
                    info.is_some_and(|i| i.state.is_complete()),
                    "{v} was live {} ms ago and is {:?}",
                    now - self.seen_live[v],
                    info.map(|i| i.state)
                );
                prop_assert!(
                    keys > 0,
                    "{v} was live within the grace and its data is gone"
                );
            }
            let deleted = info.is_none_or(|i| i.data_deleted);
            if deleted {
                prop_assert_eq!(keys, 0, "{} is deleted but {} of its keys remain", v, keys);
            }
        }
        Ok(())
    }
}

#[test]
fn the_protocol_keeps_its_promises_under_random_interleavings() {
    let _ = config();
    let cases = std::env::var("FS_MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = rt
        .block_on(Redis::connect_checked(&config().redis))
        .unwrap();
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let mut validation = config().validation;
    validation.min_user_fraction = 0.5;
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            rt.block_on(async {
                let ds = Dataset::new(&redis, &unique("model")).unwrap();
                let mut case = Case {
                    ds,
                    ids: (0..VERSIONS).map(version_id).collect(),
                    validation,
                    failed: HashSet::new(),
                    seen_live: HashMap::new(),
                    pointer: None,
                    previous: None,
                    registered: HashSet::new(),
                    touched: HashMap::new(),
                    deltas_sent: 0,
                    replay: ingest::deps::IngestDeps::new(
                        config().ingest(),
                        redis.clone(),
                        integration_tests::FileSource::new(std::env::temp_dir()),
                    ),
                };
                for op in &ops {
                    case.step(op).await;
                    case.check(op).await?;
                }
                // Clean up what the case left, past the grace.
                for n in 1..=case.deltas_sent {
                    let _ = std::fs::remove_file(
                        std::env::temp_dir().join(format!("{}-delta-{n}.jsonl", case.ds.name())),
                    );
                }
                // Past retention's grace: every version no longer live may go.
                tokio::time::sleep(GRACE).await;
                let policy = Retention {
                    backups: 0,
                    grace: GRACE,
                    abandon_after: Duration::ZERO,
                };
                shared::db::retention::gc(&case.ds, &policy).await.unwrap();
                Ok(())
            })
        })
        .unwrap();
}
