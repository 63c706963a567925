//! Faults: a poison chunk, a killed worker, a killed Redis primary, a slot
//! moved under a slot map, an object overwritten during ingest, and readers hammering the
//! API across flips.
//! Each runs through the real local stack.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{
    binary, check, eventually, eventually_every, primary_ports, sqs_event, unique, users, Harness,
};
use local_stack::topology::Names;
use redis::AsyncCommands;
use serde_json::Value;
use shared::db::protocol::{self, State};

/// A batch whose items encode the batch number `k`: user `u` gets
/// `k * 1_000_000 + u * 10 + r` at rank `r`.
fn marked(k: u64, n: u64) -> Vec<u8> {
    (1..=n)
        .map(|u| {
            let items: Vec<String> = (0..5)
                .map(|r| (k * 1_000_000 + u * 10 + r).to_string())
                .collect();
            format!("{{\"userId\": {u}, \"movieId\": [{}]}}\n", items.join(","))
        })
        .collect::<String>()
        .into_bytes()
}

/// Every user of a version, read straight from its buckets.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_chunk_goes_to_the_dlq_and_a_redrive_completes_the_version() {
    let mut o = integration_tests::options("poison");
    o.config.chunk_bytes = 4096;
    o.queues.visibility_timeout_s = 1;
    o.ingest.visibility_timeout = Duration::from_secs(1);
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let good = h.upload_settled(&ds, "good.jsonl", users(300, 1)).await;
    assert_eq!(good.state, State::Live);

    // Chunk 1 of the next batch fails on every read.
    let key = format!("{ds}/next.jsonl");
    h.stack.faults.poison(&key, 4096 - 1);
    h.stack.upload(&key, users(300, 2)).await.unwrap();
    let sqs = h.stack.sqs.clone();
    let dlq = h.stack.topology.chunks_dlq_url.clone();
    eventually(
        "the poison chunk to reach the DLQ",
        Duration::from_secs(60),
        || async {
            let depth = fsctl::view::depth(&sqs, &dlq).await.unwrap();
            check(depth >= 1, depth)
        },
    )
    .await;
    let versions = fsctl::view::versions(&h.stack.redis, &ds).await.unwrap();
    let stuck = versions
        .iter()
        .find(|v| v.source.ends_with("next.jsonl"))
        .unwrap();
    assert_eq!(stuck.state, State::Ingesting);
    assert_eq!(
        stuck.chunks_done,
        stuck.chunks - 1,
        "every other chunk is done"
    );
    assert_eq!(
        h.live().await.unwrap().version,
        good.version,
        "the live version keeps serving"
    );
    let (status, _) = h.get_json(&format!("/v1/{ds}/users/300")).await;
    assert_eq!(status, 200);

    // The cause is removed; the operator redrives; the version completes.
    h.stack.faults.heal();
    let moved = fsctl::redrive::redrive(&h.stack.sqs, &dlq, &h.stack.topology.chunks_url)
        .await
        .unwrap();
    assert_eq!((moved.method, moved.messages), ("copy", 1));
    let p = h
        .stack
        .wait_for_flip(&ds, Some(&good.version), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(p.version, stuck.version);
    assert_eq!(fsctl::view::depth(&h.stack.sqs, &dlq).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_overwritten_during_ingest_fails_its_old_version_and_the_new_one_goes_live() {
    let mut o = integration_tests::options("overwrite");
    o.planner.concurrency = 0;
    o.ingest.concurrency = 0;
    o.config.chunk_bytes = 4096;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let key = format!("{ds}/nightly.jsonl");
    let (planner, ingest) = (h.planner_deps(), h.ingest_deps());

    h.stack.upload(&key, marked(1, 300)).await.unwrap();
    ingest::plan::handle(&planner, sqs_event(&h.object_event_bodies().await))
        .await
        .unwrap();
    let chunks = h.chunk_messages().await;
    assert!(chunks.len() >= 4);
    let old = chunks[0].version.clone();
    let half = chunks.len() / 2;
    for c in &chunks[..half] {
        ingest::load::ingest_chunk(&ingest, c).await.unwrap();
    }
    // Overwritten mid-ingest: the remaining chunks' pinned reads fail.
    h.stack.upload(&key, marked(2, 300)).await.unwrap();
    let mut failed = None;
    for c in &chunks[half..] {
        if let ingest::load::ChunkReport::VersionFailed { reason } =
            ingest::load::ingest_chunk(&ingest, c).await.unwrap()
        {
            failed.get_or_insert(reason);
        }
    }
    let reason = failed.expect("the old version fails");
    assert!(reason.contains("changed since it was planned"), "{reason}");
    let info = h.ds().version_info(&old).await.unwrap().unwrap();
    assert_eq!(info.state, State::Failed);
    assert!(h.live().await.is_none(), "never live with mixed data");

    ingest::plan::handle(&planner, sqs_event(&h.object_event_bodies().await))
        .await
        .unwrap();
    for c in h.chunk_messages().await {
        ingest::load::ingest_chunk(&ingest, &c).await.unwrap();
    }
    let live = h.live().await.unwrap();
    assert_ne!(live.version, old);
    for u in [1, 150, 300] {
        let (status, body) = h.get_json(&format!("/v1/{ds}/users/{u}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["items"][0].as_u64().unwrap() / 1_000_000,
            2,
            "user {u} is served from the new upload"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_across_ten_flips_see_whole_versions_moving_forward() {
    let mut o = integration_tests::options("readers");
    o.config.pointer_ttl = Duration::from_millis(1000);
    o.config.chunk_bytes = 16 * 1024;
    let h = Arc::new(Harness::start_with(o).await);
    let ds = h.dataset.clone();
    const USERS: u64 = 500;
    let mut version_batch: HashMap<String, u64> = HashMap::new();
    let first = h
        .upload_settled(&ds, "batch1.jsonl", marked(1, USERS))
        .await;
    version_batch.insert(first.version.clone(), 1);

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4u64)
        .map(|r| {
            let (h, ds, done, reads) = (h.clone(), ds.clone(), done.clone(), reads.clone());
            tokio::spawn(async move {
                let mut seen: Vec<(String, u64)> = Vec::new();
                let mut last = String::new();
                let mut u = r * 97;
                while !done.load(Ordering::Relaxed) && seen.len() < 200_000 {
                    u = u % USERS + 1;
                    let (status, body) = h.get_json(&format!("/v1/{ds}/users/{u}")).await;
                    assert_eq!(status, 200, "user {u} is in every batch: {body}");
                    let version = body["version"].as_str().unwrap().to_string();
                    let items: Vec<u64> = body["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_u64().unwrap())
                        .collect();
                    let k = items[0] / 1_000_000;
                    let want: Vec<u64> = (0..5).map(|r| k * 1_000_000 + u * 10 + r).collect();
                    assert_eq!(items, want, "a complete record of one batch");
                    assert!(
                        version >= last,
                        "versions never go backwards: {version} after {last}"
                    );
                    last = version.clone();
                    seen.push((version, k));
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    for k in 2..=11 {
        let info = h
            .upload_settled(&ds, &format!("batch{k}.jsonl"), marked(k, USERS))
            .await;
        assert_eq!(info.state, State::Live);
        version_batch.insert(info.version, k);
        // Longer than the pointer cache, so readers see every version.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut checked = 0;
    let mut versions_seen = std::collections::HashSet::new();
    for r in readers {
        for (version, k) in r.await.unwrap() {
            assert_eq!(
                version_batch.get(&version),
                Some(&k),
                "the record matches the version it claims"
            );
            versions_seen.insert(version);
            checked += 1;
        }
    }
    println!(
        "checked {checked} reads across 10 flips; {} versions seen",
        versions_seen.len()
    );
    assert!(checked > 1000, "only {checked} reads");
    assert!(
        versions_seen.len() >= 5,
        "readers saw {} versions",
        versions_seen.len()
    );
    assert_eq!(reads.load(Ordering::Relaxed), checked);
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(prefix: &str) -> Worker {
    let child = Command::new(binary("local-stack"))
        .args([
            "--prefix",
            prefix,
            "--visibility-timeout",
            "3",
            "--ingest-concurrency",
            "1",
            "worker",
            "--no-planner",
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start a worker process (built by `make test`)");
    Worker(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_chunk_ends_like_an_undisturbed_run() {
    let prefix = unique("killed");
    let mut o = integration_tests::options("killed");
    o.names = Names::with_prefix(&prefix);
    o.ingest.concurrency = 0;
    // Many small chunks: the worker is stopped long before the last.
    o.config.chunk_bytes = 64 * 1024;
    o.queues.visibility_timeout_s = 3;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let body = users(40_000, 5);

    let mut first = worker(&prefix);
    let key = format!("{ds}/big.jsonl");
    h.stack.upload(&key, body.clone()).await.unwrap();
    let keys = h.keys();
    let redis = h.stack.redis.clone();
    // Killed while it holds a chunk it has not finished: two chunks are done,
    // not all, and a chunk message is received but not yet deleted. The
    // worker is frozen (SIGSTOP) as soon as two are done, so what is checked
    // is what gets killed; caught between two chunks, it runs on a moment.
    let (sqs, chunks_url) = (h.stack.sqs.clone(), h.stack.topology.chunks_url.clone());
    let pid = first.0.id().to_string();
    let signal = |s: &str| {
        assert!(
            Command::new("kill")
                .args([s, pid.as_str()])
                .status()
                .unwrap()
                .success(),
            "kill {s}"
        )
    };
    let progress = || async {
        let versions = protocol::Dataset::of(&redis, &keys)
            .versions()
            .await
            .unwrap();
        let v = versions.first()?;
        protocol::Dataset::of(&redis, &keys)
            .version_info(v)
            .await
            .unwrap()
            .map(|i| (i.chunks_done, i.chunks))
    };
    // Polled every 3 ms: a chunk of 64 KiB is in a worker's hands briefly.
    let what = "a chunk in the worker's hands after two are done";
    eventually_every(
        Duration::from_millis(3),
        what,
        Duration::from_secs(60),
        || async {
            let seen = progress().await;
            if seen.is_none_or(|(done, _)| done < 2) {
                return Err(seen);
            }
            signal("-STOP");
            let (done, total) = progress().await.unwrap();
            assert!(
                done < total,
                "the worker finished all {total} chunks before it could be stopped"
            );
            if in_flight(&sqs, &chunks_url).await >= 1 {
                return Ok(());
            }
            signal("-CONT");
            Err(seen)
        },
    )
    .await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let version = protocol::Dataset::of(&redis, &keys)
        .versions()
        .await
        .unwrap()[0]
        .clone();
    let info = protocol::Dataset::of(&redis, &keys)
        .version_info(&version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.state,
        State::Ingesting,
        "killed before the version completed"
    );

    let _second = worker(&prefix);
    let p = h
        .stack
        .wait_for_flip(&ds, None, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(p.version, version);

    // The same batch, undisturbed, in another dataset of the same stack.
    let reference = unique("reference");
    let undisturbed = h.upload_settled(&reference, "big.jsonl", body).await;
    assert_eq!(undisturbed.state, State::Live);
    let (a, b) = (
        h.contents(&ds, &version).await,
        h.contents(&reference, &undisturbed.version).await,
    );
    assert_eq!(a.len(), 40_000);
    assert!(a == b, "the killed run's users equal the undisturbed run's");
    let killed = protocol::Dataset::of(&redis, &keys)
        .version_info(&version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (killed.users, killed.chunks_done),
        (undisturbed.users, undisturbed.chunks)
    );
}

/// Messages of a queue received by a consumer and not yet deleted.
async fn in_flight(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let attr = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(attr.clone())
        .send()
        .await
        .unwrap();
    out.attributes
        .and_then(|a| a.get(&attr).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The pid of the Redis node on `port`.
async fn pid_of(port: u16) -> u32 {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_killed_mid_ingest_loses_no_user() {
    let url = std::env::var("FS_TEST_HA1_REDIS_URL")
        .expect("FS_TEST_HA1_REDIS_URL is set by `make test`");
    let run_dir =
        std::env::var("FS_LOCAL_RUN_DIR").expect("FS_LOCAL_RUN_DIR is set by `make test`");
    let mut o = integration_tests::options("primary");
    o.config.redis.urls = url.split(',').map(str::to_string).collect();
    o.config.redis.timeout = Duration::from_millis(1000);
    o.config.replication = shared::config::Replication {
        acks: 1,
        timeout: Duration::from_millis(1000),
    };
    o.config.chunk_bytes = 64 * 1024;
    o.ingest.concurrency = 2;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    // Replicas attach before the test relies on them.
    let acked = h
        .stack
        .redis
        .wait_for_replicas(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(acked, 1);

    h.stack
        .upload(&format!("{ds}/big.jsonl"), users(30_000, 9))
        .await
        .unwrap();
    let (redis, keys) = (h.stack.redis.clone(), h.keys());
    eventually("three chunks done", Duration::from_secs(60), || async {
        let history = protocol::Dataset::of(&redis, &keys)
            .history()
            .await
            .unwrap();
        let done = history.first().map(|i| i.chunks_done);
        check(done.is_some_and(|d| d >= 3), done)
    })
    .await;
    let primaries = primary_ports(&url).await;
    let victim = primaries[1];
    let pid = pid_of(victim).await;
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let survivors: Vec<u16> = primaries.iter().copied().filter(|p| *p != victim).collect();
    let seed = format!("redis://127.0.0.1:{}", survivors[0]);
    eventually(
        "a replica to be promoted",
        Duration::from_secs(30),
        || async {
            let now = primary_ports(&seed).await;
            check(now.len() == 3 && !now.contains(&victim), now)
        },
    )
    .await;
    // The failed node comes back as a replica, as a replaced node would.
    let node_dir = format!("{run_dir}/ha1/{victim}");
    let status = Command::new("redis-server")
        .args([
            "--port",
            &victim.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
        ])
        .args(integration_tests::acl_args())
        .args([
            "--cluster-config-file",
            &format!("{node_dir}/nodes.conf"),
            "--cluster-node-timeout",
            "2000",
        ])
        .args([
            "--dir",
            &node_dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--daemonize",
            "yes",
        ])
        .args([
            "--pidfile",
            &format!("{node_dir}/redis.pid"),
            "--logfile",
            &format!("{node_dir}/redis.log"),
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let p = h
        .stack
        .wait_for_flip(&ds, None, Duration::from_secs(180))
        .await
        .unwrap();
    let all = h.contents(&ds, &p.version).await;
    assert_eq!(
        all.len(),
        30_000,
        "every user is present after the failover"
    );
    let info = h.ds().version_info(&p.version).await.unwrap().unwrap();
    assert_eq!(info.users, 30_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_reads_right_after_each_flip_miss_nothing() {
    let url = std::env::var("FS_TEST_HA2_REDIS_URL")
        .expect("FS_TEST_HA2_REDIS_URL is set by `make test`");
    let mut o = integration_tests::options("replicas");
    o.config.redis.urls = url.split(',').map(str::to_string).collect();
    o.config.redis.read_from_replicas = true;
    o.config.replication = shared::config::Replication {
        acks: 1,
        timeout: Duration::from_millis(2000),
    };
    o.config.chunk_bytes = 32 * 1024;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    const USERS: u64 = 2000;
    let mut reads = 0;
    for k in 1..=5 {
        let info = h
            .upload_settled(&ds, &format!("b{k}.jsonl"), marked(k, USERS))
            .await;
        assert_eq!(info.state, State::Live);
        for u in 1..=USERS {
            let (status, body): (u16, Value) = h.get_json(&format!("/v1/{ds}/users/{u}")).await;
            assert_eq!(
                status, 200,
                "batch {k} user {u} read from a replica right after the flip: {body}"
            );
            assert_eq!(body["items"][0].as_u64().unwrap() / 1_000_000, k);
            reads += 1;
        }
    }
    println!("{reads} replica reads after 5 flips, none missing");
}

/// A cluster of three primaries of this test's own, started by the
/// project's script and stopped when dropped (even when the test panics).
struct PrivateCluster {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
}

impl PrivateCluster {
    fn start(name: &str) -> Self {
        // Beside the shared stack's ports (7101..) and the outage test's (7190..).
        let base = 7400 + (std::process::id() % 50) as u16 * 3;
        let ports: Vec<u16> = (base..base + 3).collect();
        let dir = std::env::temp_dir().join(unique(name));
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/local/redis-cluster.sh"
        );
        let status = Command::new(script)
            .arg("start")
            .arg(&dir)
            .arg("0")
            .args(ports.iter().map(u16::to_string))
            .status()
            .unwrap();
        assert!(status.success(), "starting a private cluster on {ports:?}");
        PrivateCluster { dir, ports }
    }

    /// `redis-cli -p <port> <args>`'s output.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The id and port of the primary that owns `slot`, as `port` sees it.
    fn owner(&self, port: u16, slot: u16) -> (String, u16) {
        let nodes = self.cli(port, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let owns = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&slot)
                }
                None => r.parse::<u16>().ok() == Some(slot),
            });
            if f[2].contains("master") && owns {
                let node_port = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                return (f[0].to_string(), node_port);
            }
        }
        panic!("no owner of slot {slot} in {nodes}");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/local/redis-cluster.sh"
        );
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_moved_after_the_slot_map_was_read_costs_at_most_one_failed_grouped_write() {
    let cluster = PrivateCluster::start("reshard");
    let mut config = integration_tests::config();
    config.redis.urls = cluster
        .ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    config.redis.auth = shared::config::RedisAuth::None;
    let redis = shared::db::store::Redis::connect_checked(&config.redis)
        .await
        .unwrap();
    assert!(redis.is_cluster());
    // A first grouped write reads the slot map.
    let warm = || {
        let mut c = redis::cmd("SET");
        c.arg("warm").arg("1");
        vec![(redis.slot_of("warm"), c)]
    };
    redis.write_grouped(warm()).await.unwrap();

    // Then the slot of this test's keys moves to another primary (resharding,
    // as `redis-cli --cluster reshard` does it; the slot is still empty).
    let keys: Vec<String> = (0..200).map(|i| format!("{{moved}}:{i}")).collect();
    let slot: u16 = cluster
        .cli(cluster.ports[0], &["cluster", "keyslot", "{moved}"])
        .parse()
        .unwrap();
    let (from_id, from) = cluster.owner(cluster.ports[0], slot);
    let to = *cluster.ports.iter().find(|&&p| p != from).unwrap();
    let to_id = cluster.cli(to, &["cluster", "myid"]);
    let slot_arg = slot.to_string();
    assert_eq!(
        cluster.cli(
            to,
            &["cluster", "setslot", &slot_arg, "importing", &from_id]
        ),
        "OK"
    );
    assert_eq!(
        cluster.cli(
            from,
            &["cluster", "setslot", &slot_arg, "migrating", &to_id]
        ),
        "OK"
    );
    for &p in [to, from]
        .iter()
        .chain(cluster.ports.iter().filter(|&&p| p != to && p != from))
    {
        assert_eq!(
            cluster.cli(p, &["cluster", "setslot", &slot_arg, "node", &to_id]),
            "OK"
        );
    }
    eventually(
        "every node to agree on the slot's new owner",
        Duration::from_secs(10),
        || async {
            let owners: Vec<u16> = cluster
                .ports
                .iter()
                .map(|&p| cluster.owner(p, slot).1)
                .collect();
            check(owners.iter().all(|&o| o == to), owners)
        },
    )
    .await;

    // Keys of every primary, the moved slot's among them, as a round of
    // ingest's writes would be.
    let all: Vec<String> = keys
        .iter()
        .cloned()
        .chain((0..200).map(|i| format!("spread:{i}")))
        .collect();
    let cmds = || {
        all.iter()
            .map(|k| {
                let mut c = redis::cmd("HSET");
                c.arg(k).arg("f").arg("v");
                (redis.slot_of(k), c)
            })
            .collect::<Vec<_>>()
    };
    // The map read before the move sends the moved slot's keys to their old
    // owner: the write fails with the redirect, or the client follows it.
    // Either way the retry (a chunk's, by SQS) lands everything.
    let first = redis.write_grouped(cmds()).await;
    if let Err(e) = &first {
        assert!(e.to_string().to_lowercase().contains("moved"), "{e}");
    }
    redis.write_grouped(cmds()).await.unwrap();
    for k in &all {
        let v: Option<String> = redis.clone().hget(k, "f").await.unwrap();
        assert_eq!(v.as_deref(), Some("v"), "{k}");
    }
    eprintln!("first write after the move: {first:?}");
    assert_eq!(
        cluster.cli(to, &["cluster", "countkeysinslot", &slot_arg]),
        "200",
        "the keys are on the slot's new owner"
    );
}
