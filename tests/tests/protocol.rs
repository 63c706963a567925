//! The version protocol's holes, each closed and held closed: plans that
//! cannot mix, moves an operator may and may not make, retention's grace by
//! the server's clock, and no write outliving a failed or deleted version.
//! Against the real Redis Cluster (and, for the planner, the S3/SQS emulator).

use std::collections::HashMap;
use std::time::Duration;

use fsctl::generate::Options;
use ingest::s3::messages::ChunkMessage;
use integration_tests::{batch, config, eventually, spans_of, sqs_event, unique, users, Harness};
use redis::AsyncCommands;
use shared::config::Validation;
use shared::db::protocol::{ChunkDone, Dataset, LogEntry, Moved, NewVersion, Span, State, Step};
use shared::db::store::Redis;
use shared::keys::bucket_of;
use shared::version_id::{self, VersionSource};

async fn redis() -> Redis {
    Redis::connect_checked(&config().redis)
        .await
        .expect("redis")
}

/// A version id for an upload at `second` past a fixed minute: explicit
/// event times, so versions order without waiting for the clock.
fn version_at(second: u32) -> String {
    version_id::derive(&VersionSource {
        event_time: &format!("2026-12-01T00:00:{second:02}Z"),
        sequencer: None,
        bucket: "b",
        key: "k",
        etag: "e",
    })
    .unwrap()
}

fn validation() -> Validation {
    config().validation
}

const BUCKETS: u32 = 4;

/// Registers `version` with `chunks` chunks, writes `users` users (ids
/// `0..users`) and completes every chunk; the last step.
async fn put_version(ds: &Dataset, version: &str, users: u64, chunks: u32) -> Step {
    let ranges: Vec<(u64, u64)> = (0..u64::from(chunks))
        .map(|i| (i * 10, i * 10 + 10))
        .collect();
    let nv = NewVersion {
        version,
        spans: &spans_of(&ranges),
        files: &[],
        buckets: BUCKETS,
        source: "s3://b/k",
        etag: "e",
        size: 10,
        format: "json-lines",
        est_bytes: 0,
        hold: None,
        expected_records: None,
    };
    ds.register(&nv).await.unwrap();
    write_users(ds, version, 0..users).await;
    let mut last = None;
    for (i, r) in ranges.iter().enumerate() {
        let n = if i == 0 { users } else { 0 };
        let done = ChunkDone {
            version,
            chunk: i as u32,
            span: Span::from(*r).into(),
            buckets: BUCKETS,
            users: n,
            bad: 0,
        };
        last = Some(ds.chunk_written(&done, &validation()).await.unwrap());
    }
    last.unwrap()
}

async fn write_users(ds: &Dataset, version: &str, users: std::ops::Range<u64>) {
    let mut c = ds.redis().clone();
    for u in users {
        let id = u.to_string();
        let _: () = c
            .hset(ds.keys().bucket(version, bucket_of(&id, BUCKETS)), &id, "x")
            .await
            .unwrap();
    }
}

/// Data keys of `version` that exist.
async fn data_keys(ds: &Dataset, version: &str) -> u64 {
    ds.redis()
        .sum_over_buckets(ds.keys(), version, BUCKETS, "EXISTS")
        .await
        .unwrap()
}

async fn newest_log(ds: &Dataset) -> LogEntry {
    shared::db::protocol::Dataset::of(ds.redis(), ds.keys())
        .log(1)
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_and_rollback_move_only_where_the_rules_allow() {
    let r = redis().await;
    let ds = Dataset::new(&r, &unique("moves")).unwrap();
    let (v1, v2, v3) = (version_at(1), version_at(2), version_at(3));
    assert_eq!(
        put_version(&ds, &v1, 100, 1).await,
        Step::Flipped { users: 100 }
    );
    // Too small next to the live version: held.
    assert!(matches!(put_version(&ds, &v2, 10, 2).await, Step::Held(_)));
    assert_eq!(
        put_version(&ds, &v3, 100, 1).await,
        Step::Flipped { users: 100 }
    );

    // A held version behind a newer live one does not go live without --force.
    match ds.promote(&v2, false).await.unwrap() {
        Moved::Refused(why) => assert!(why.contains(&v3) && why.contains("--force"), "{why}"),
        other => panic!("promoting behind a newer live version: {other:?}"),
    }
    assert_eq!(ds.live().await.unwrap().unwrap().version, v3);
    // Forced, it goes live, and the move backwards rolls back like a rollback.
    assert_eq!(
        ds.promote(&v2, true).await.unwrap(),
        Moved::Moved {
            left: Some(v3.clone())
        }
    );
    let p = ds.live().await.unwrap().unwrap();
    assert_eq!(
        (p.version.as_str(), p.floor.as_deref()),
        (v2.as_str(), Some(v3.as_str()))
    );
    assert_eq!(
        ds.version_info(&v3).await.unwrap().unwrap().state,
        State::RolledBack
    );
    let log = newest_log(&ds).await;
    assert_eq!(
        (log.event.as_str(), log.forced, log.backwards),
        ("promote", Some(true), Some(true))
    );

    // A rollback goes back only: to v1 yes, forward to v3 no.
    match ds.rollback(&v3).await.unwrap() {
        Moved::Refused(why) => assert!(why.contains("newer"), "{why}"),
        other => panic!("rolling forward: {other:?}"),
    }
    assert_eq!(
        ds.rollback(&v1).await.unwrap(),
        Moved::Moved {
            left: Some(v2.clone())
        }
    );
    // v3 is not held: promoting it needs --force, and it is below the floor anyway.
    assert!(matches!(
        ds.promote(&v3, false).await.unwrap(),
        Moved::Refused(_)
    ));
    assert_eq!(ds.live().await.unwrap().unwrap().version, v1);

    // A version still ingesting can never be the target, forced or not.
    let v4 = version_at(4);
    let nv = NewVersion {
        version: &v4,
        spans: &spans_of(&[(0, 10)]),
        files: &[],
        buckets: BUCKETS,
        source: "s3://b/k",
        etag: "e",
        size: 10,
        format: "json-lines",
        est_bytes: 0,
        hold: None,
        expected_records: None,
    };
    ds.register(&nv).await.unwrap();
    assert!(matches!(
        ds.promote(&v4, true).await.unwrap(),
        Moved::Refused(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn retire_keeps_a_version_within_the_grace_by_the_servers_clock() {
    let r = redis().await;
    let ds = Dataset::new(&r, &unique("grace")).unwrap();
    let (v1, v2) = (version_at(1), version_at(2));
    put_version(&ds, &v1, 50, 1).await;
    put_version(&ds, &v2, 50, 1).await;
    assert_eq!(
        ds.version_info(&v1).await.unwrap().unwrap().state,
        State::Backup
    );
    // v1 stopped being live a moment ago: whatever the caller decided from
    // its own reading (or clock), the script refuses within the grace.
    let deletable = [
        State::Backup,
        State::RolledBack,
        State::Superseded,
        State::Failed,
    ];
    assert_eq!(
        ds.retire(&v1, Duration::from_secs(30), &deletable)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ds.version_info(&v1).await.unwrap().unwrap().state,
        State::Backup
    );
    // A rollback to it puts it live; the version it left is within the grace too.
    assert!(matches!(
        ds.rollback(&v1).await.unwrap(),
        Moved::Moved { .. }
    ));
    assert_eq!(
        ds.retire(&v2, Duration::from_secs(30), &deletable)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ds.retire(&v1, Duration::ZERO, &deletable).await.unwrap(),
        None,
        "the live version is never retired"
    );
    // Past the grace (20 ms below, by the server's clock), it may go.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        ds.retire(&v2, Duration::from_millis(20), &deletable)
            .await
            .unwrap(),
        Some(State::RolledBack)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_that_finds_its_version_failed_or_gone_leaves_no_keys() {
    let r = redis().await;
    let ds = Dataset::new(&r, &unique("late")).unwrap();
    let v = version_at(1);
    let ranges = [(0, 10), (10, 20)];
    let nv = NewVersion {
        version: &v,
        spans: &spans_of(&ranges),
        files: &[],
        buckets: BUCKETS,
        source: "s3://b/k",
        etag: "e",
        size: 20,
        format: "json-lines",
        est_bytes: 0,
        hold: None,
        expected_records: None,
    };
    ds.register(&nv).await.unwrap();
    // Chunk 1 fails the version (and cleans up what was there) while chunk 0
    // is still writing; chunk 0's writes land after that.
    ds.fail(&v, "bad record").await.unwrap();
    ds.delete_data(&v, BUCKETS).await.unwrap();
    write_users(&ds, &v, 0..40).await;
    assert!(data_keys(&ds, &v).await > 0);
    let done = ChunkDone {
        version: &v,
        chunk: 0,
        span: Span::from((0, 10)).into(),
        buckets: BUCKETS,
        users: 40,
        bad: 0,
    };
    assert_eq!(
        ds.chunk_written(&done, &validation()).await.unwrap(),
        Step::Settled(Some(State::Failed))
    );
    assert_eq!(
        data_keys(&ds, &v).await,
        0,
        "the late chunk removed its own writes"
    );

    // The same when the version was deleted altogether meanwhile.
    let w = version_at(2);
    let nv = NewVersion { version: &w, ..nv };
    ds.register(&nv).await.unwrap();
    write_users(&ds, &w, 0..40).await;
    ds.forget(&w).await.unwrap();
    let done = ChunkDone {
        version: &w,
        ..done
    };
    assert_eq!(
        ds.chunk_written(&done, &validation()).await.unwrap(),
        Step::Settled(None)
    );
    assert_eq!(data_keys(&ds, &w).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_settled_version_answers_with_its_state_before_any_range_check() {
    let r = redis().await;
    let ds = Dataset::new(&r, &unique("order")).unwrap();
    let v = version_at(1);
    put_version(&ds, &v, 10, 1).await;
    // Chunk 7 of a one-chunk version: the version is live, which is what a
    // repeated delivery needs to hear, not "bad chunk".
    let done = ChunkDone {
        version: &v,
        chunk: 7,
        span: Span::from((0, 1)).into(),
        buckets: BUCKETS,
        users: 0,
        bad: 0,
    };
    assert_eq!(
        ds.chunk_written(&done, &validation()).await.unwrap(),
        Step::Settled(Some(State::Live))
    );
    // While ingesting, a chunk outside the plan, or with another range, is refused with the plan's range.
    let w = version_at(2);
    let nv = NewVersion {
        version: &w,
        spans: &spans_of(&[(0, 10)]),
        files: &[],
        buckets: BUCKETS,
        source: "s3://b/k",
        etag: "e",
        size: 10,
        format: "json-lines",
        est_bytes: 0,
        hold: None,
        expected_records: None,
    };
    ds.register(&nv).await.unwrap();
    let done = ChunkDone {
        version: &w,
        chunk: 0,
        span: Span::from((0, 9)).into(),
        ..done
    };
    assert_eq!(
        ds.chunk_written(&done, &validation()).await.unwrap(),
        Step::NotPlanned {
            planned: Some(Span::from((0, 10)).into()),
            chunks: 1
        }
    );
    assert_eq!(ds.version_info(&w).await.unwrap().unwrap().chunks_done, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replanned_event_resends_the_stored_plan_whatever_the_configuration_is_now() {
    let mut o = integration_tests::options("replan");
    o.planner.concurrency = 0;
    o.ingest.concurrency = 0;
    o.config.chunk_bytes = 4096;
    let h = Harness::start_with(o).await;
    h.stack
        .upload(
            &format!("{}/day.jsonl", h.dataset),
            users(400, Options::default().seed),
        )
        .await
        .unwrap();
    let event = h.object_event_bodies().await.remove(0);
    let resp = ingest::plan::handle(&h.planner_deps(), sqs_event(std::slice::from_ref(&event)))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let first = h.chunk_messages().await;
    assert!(first.len() > 3);

    // A redeploy changes the chunk size and the bucket density, then the
    // event arrives again while the version is still ingesting.
    let mut redeployed = h.planner_deps();
    redeployed.config.chunk_bytes = 1500;
    redeployed.config.users_per_bucket = 3;
    ingest::plan::handle(&redeployed, sqs_event(&[event]))
        .await
        .unwrap();
    let again = h.chunk_messages().await;
    assert_eq!(again, first, "the stored plan is sent again, not a new one");

    // A message of another plan (as the redeployed planner would have cut
    // it) is refused, naming both plans, and writes nothing.
    let deps = h.ingest_deps();
    let foreign = ChunkMessage {
        end: first[0].end - 100,
        buckets: first[0].buckets * 7,
        ..first[0].clone()
    };
    let err = ingest::load::ingest_chunk(&deps, &foreign)
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    let text = err.to_string();
    assert!(
        text.contains(&format!("bytes {}-{}", foreign.start, foreign.end))
            && text.contains(&format!("bytes {}-{}", first[0].start, first[0].end)),
        "{text}"
    );
    let version = first[0].version.clone();
    assert_eq!(
        h.ds()
            .version_info(&version)
            .await
            .unwrap()
            .unwrap()
            .users_written,
        0
    );

    // The planned chunks complete the version, every user findable.
    let mut last = None;
    for m in &first {
        last = Some(ingest::load::ingest_chunk(&deps, m).await.unwrap());
    }
    assert!(
        matches!(
            last,
            Some(ingest::load::ChunkReport::Done {
                step: Step::Flipped { users: 400 },
                ..
            })
        ),
        "{last:?}"
    );
    for user in [1, 200, 400] {
        let (status, _) = h.get_json(&format!("/v1/{}/users/{user}", h.dataset)).await;
        assert_eq!(status, 200, "user {user}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strict_failure_mid_chunk_leaves_no_keys_behind() {
    let mut o = integration_tests::options("abort");
    o.planner.concurrency = 0;
    o.ingest.concurrency = 0;
    o.janitor = None;
    o.config.chunk_bytes = 1 << 20;
    // Many small rounds, so some are in flight when the bad record is found.
    o.config.write_batch_users = 20;
    let h = Harness::start_with(o).await;
    let mut body = users(3000, Options::default().seed);
    body.extend_from_slice(b"{\"userId\": \"broken\n");
    h.stack
        .upload(&format!("{}/bad.jsonl", h.dataset), body)
        .await
        .unwrap();
    let event = h.object_event_bodies().await.remove(0);
    ingest::plan::handle(&h.planner_deps(), sqs_event(&[event]))
        .await
        .unwrap();
    let msgs = h.chunk_messages().await;
    assert_eq!(msgs.len(), 1);
    let report = ingest::load::ingest_chunk(&h.ingest_deps(), &msgs[0])
        .await
        .unwrap();
    assert!(
        matches!(report, ingest::load::ChunkReport::VersionFailed { .. }),
        "{report:?}"
    );
    let ds = h.ds();
    let info = ds.version_info(&msgs[0].version).await.unwrap().unwrap();
    assert_eq!(info.state, State::Failed);
    // No retention has run; the failed chunk left nothing, now or a little
    // later (300 ms: longer than a write round still in flight would take).
    for _ in 0..2 {
        let n = ds
            .redis()
            .sum_over_buckets(ds.keys(), &info.version, info.buckets, "EXISTS")
            .await
            .unwrap();
        assert_eq!(n, 0, "keys of the failed version");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_chunk_messages_and_events_fail_fast_with_a_reason() {
    let mut o = integration_tests::options("reject");
    o.ingest.concurrency = 0;
    let h = Harness::start_with(o).await;
    // A chunk message whose version is not a version id.
    let m = ChunkMessage {
        dataset: h.dataset.clone(),
        version: "../../etc".into(),
        bucket: "b".into(),
        key: "k".into(),
        etag: "e".into(),
        size: 0,
        format: ingest::layout::ChunkFormat::JsonLines,
        compression: Default::default(),
        file: 0,
        chunk: 0,
        chunks: 1,
        start: 0,
        end: 1,
        buckets: 1,
        more: Vec::new(),
        delta: false,
    };
    let err = ingest::load::ingest_chunk(&h.ingest_deps(), &m)
        .await
        .unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("not a version id"),
        "{err}"
    );

    // An upload into a folder that is no dataset name: rejected, visibly, at once.
    let key = "not{a}dataset/day.jsonl";
    let etag = h
        .stack
        .upload(key, users(10, Options::default().seed))
        .await
        .unwrap();
    let source = format!("s3://{}/{key}", h.stack.topology.bucket);
    // It fails with the planner's reason, not by running out of time.
    let err = fsctl::upload::wait(
        &h.stack.redis,
        "not{a}dataset",
        &source,
        &etag,
        Duration::from_secs(60),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("rejected") && err.to_string().contains("dataset"),
        "{err}"
    );
    let rejected = shared::db::rejected::recent(&h.stack.redis, 100)
        .await
        .unwrap();
    assert!(rejected.iter().any(|r| r.source == source));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_without_a_size_is_completed_by_a_head() {
    let mut o = integration_tests::options("nosize");
    o.planner.concurrency = 0;
    let h = Harness::start_with(o).await;
    h.stack
        .upload(
            &format!("{}/day.jsonl", h.dataset),
            users(50, Options::default().seed),
        )
        .await
        .unwrap();
    let mut event: serde_json::Value =
        serde_json::from_str(&h.object_event_bodies().await.remove(0)).unwrap();
    event["Records"][0]["s3"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("size");
    ingest::plan::handle(&h.planner_deps(), sqs_event(&[event.to_string()]))
        .await
        .unwrap();
    let live = h
        .stack
        .wait_for_flip(&h.dataset, None, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        h.ds()
            .version_info(&live.version)
            .await
            .unwrap()
            .unwrap()
            .users,
        50
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_janitor_abandons_a_stuck_version_and_its_dead_lettered_chunk_says_why() {
    let mut o = integration_tests::options("janitor");
    o.ingest.concurrency = 0;
    o.config.retention.abandon_after = Duration::from_millis(300);
    let h = Harness::start_with(o).await;
    h.stack
        .upload(
            &format!("{}/day.jsonl", h.dataset),
            users(50, Options::default().seed),
        )
        .await
        .unwrap();
    let msgs: Vec<ChunkMessage> = eventually(
        "the version's chunk messages",
        Duration::from_secs(30),
        || async {
            let m = h.chunk_messages().await;
            if m.is_empty() {
                Err("none yet")
            } else {
                Ok(m)
            }
        },
    )
    .await;
    let ds = h.ds();
    let info = eventually(
        "the janitor to abandon the version",
        Duration::from_secs(30),
        || async {
            let info = ds.version_info(&msgs[0].version).await.unwrap().unwrap();
            if info.state == State::Failed {
                Ok(info)
            } else {
                Err(info.state)
            }
        },
    )
    .await;
    let reason = info.reason.unwrap();
    assert!(
        reason.starts_with("abandoned") && reason.contains("upload the object again"),
        "{reason}"
    );
    // Redriven later, its chunk re-opens nothing.
    let report = ingest::load::ingest_chunk(&h.ingest_deps(), &msgs[0])
        .await
        .unwrap();
    assert_eq!(
        report,
        ingest::load::ChunkReport::Skipped {
            state: Some(State::Failed)
        }
    );
    let keys: HashMap<String, String> = h
        .stack
        .redis
        .clone()
        .hgetall(ds.keys().version(&info.version))
        .await
        .unwrap();
    assert_eq!(keys.get("state").map(String::as_str), Some("failed"));
    // `fsctl redrive` names it and what to upload again.
    let abandoned = fsctl::redrive::abandoned(&h.stack.redis).await.unwrap();
    let mine: Vec<_> = abandoned
        .iter()
        .filter(|a| a.dataset == h.dataset)
        .collect();
    assert_eq!(mine.len(), 1, "{abandoned:?}");
    assert_eq!(
        (mine[0].version.as_str(), mine[0].source.as_str()),
        (info.version.as_str(), info.source.as_str())
    );
}

/// A Redis of this test's own, on a free port, with `maxmemory` set.
struct SmallRedis {
    port: u16,
    dir: std::path::PathBuf,
}

impl SmallRedis {
    fn start(maxmemory: &str) -> SmallRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique("small-redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .args(integration_tests::acl_args())
            .args([
                "--maxmemory",
                maxmemory,
                "--maxmemory-policy",
                "noeviction",
                "--hash-max-listpack-value",
                "256",
            ])
            .arg("--dir")
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "redis-server starts");
        SmallRedis { port, dir }
    }
}

impl Drop for SmallRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_would_not_fit_in_redis_is_held_before_any_write() {
    let small = SmallRedis::start("3mb");
    let mut o = integration_tests::options("memory");
    o.config.redis.urls = vec![format!("redis://127.0.0.1:{}", small.port)];
    o.config.redis.cluster = false;
    let h = Harness::start_with(o).await;
    // About 4 MB of JSON Lines: more than the 3 MB Redis has in all.
    let body = batch(&Options {
        users: 20_000,
        items: 20,
        ..Options::default()
    });
    let info = h.upload_settled(&h.dataset, "big.jsonl", body).await;
    assert_eq!(info.state, State::Held);
    assert!(info.unwritten);
    let reason = info.reason.clone().unwrap();
    assert!(
        reason.contains("MiB") && reason.contains("maxmemory") && reason.contains("free"),
        "{reason}"
    );
    assert!(info.est_bytes > 0);
    let data = h
        .stack
        .redis
        .scan_match(&format!("{}*", h.ds().keys().data_prefix()))
        .await
        .unwrap();
    assert!(data.is_empty(), "no user was written: {} keys", data.len());
    // Nothing to promote onto the pointer: a plain promote resumes it instead.
    assert!(matches!(
        h.ds().promote(&info.version, true).await.unwrap(),
        Moved::Refused(_)
    ));

    // Room made, the operator promotes it: it is ingested and goes live.
    let mut c = h.stack.redis.clone();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("64mb")
        .query_async(&mut c)
        .await
        .unwrap();
    let promoted = fsctl::promote::promote(
        &h.ds(),
        &h.stack.sqs,
        Some(&h.stack.topology.chunks_url),
        &info.version,
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(promoted, fsctl::promote::Promoted::Resumed { chunks } if chunks as u32 == info.chunks),
        "{promoted:?}"
    );
    let live = h
        .stack
        .wait_for_flip(&h.dataset, None, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(live.version, info.version);
    assert_eq!(
        h.ds()
            .version_info(&info.version)
            .await
            .unwrap()
            .unwrap()
            .users,
        20_000
    );
}
