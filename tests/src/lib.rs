//! Helpers for the end-to-end tests: a local stack per test (own bucket,
//! queues and dataset names, so tests run in parallel), requests through the
//! serve handler, and direct handler invocation for tests that control
//! delivery order.
//!
//! The services come from `make test` (`infra/local/with-stack.sh`), which
//! sets `FS_REDIS_URL` and `AWS_ENDPOINT_URL`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use ingest::deps::IngestDeps;
use ingest::deps::PlannerDeps;
use ingest::s3::event::{parse_notification, Notification};
use ingest::s3::source::S3Source;
use lambda_runtime::{Context, LambdaEvent};
use local_stack::poller::PollerSettings;
use local_stack::stack::{Stack, StackOptions};
use local_stack::topology::{Names, QueueSettings};
use serde_json::Value;
use shared::config::Config;

pub use local_stack;

mod batches;
mod rounds;
mod sign;
mod wait;

pub use batches::{batch, binary, spans_of, users};
pub use ingest::s3::file::FileSource;
pub use rounds::{chunk_rounds, local_chunk};
pub use sign::{raw_request, Credentials, Signer};
pub use wait::{check, eventually, eventually_every};

/// Puts `body` under `key` in `bucket` as a multipart upload of
/// `part_size`-byte parts (the last one shorter), through `fsctl upload`'s
/// own put, as the aws CLI and boto3 upload anything over 8 MB; returns its
/// ETag (`"…-N"`). The local emulator takes parts from 256 bytes
/// (`S3_UPLOAD_PART_MIN_SIZE`).
pub async fn upload_multipart(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    part_size: usize,
) -> String {
    let file = std::env::temp_dir().join(unique("multipart"));
    std::fs::write(&file, body).expect("write the body");
    let parts = fsctl::upload::Parts {
        from: 0,
        size: part_size,
    };
    let etag = fsctl::upload::put(s3, bucket, key, &file, parts, |_| {})
        .await
        .expect("a multipart upload");
    let _ = std::fs::remove_file(file);
    etag
}

/// Puts every `(key, body)` of `puts` into `bucket`, `at_once` at a time,
/// as a parallel uploader would (the ones of a group land in any order).
pub async fn put_all(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    puts: Vec<(String, Vec<u8>)>,
    at_once: usize,
) {
    let mut puts = puts.into_iter().peekable();
    while puts.peek().is_some() {
        let group: Vec<_> = puts
            .by_ref()
            .take(at_once)
            .map(|(key, body)| {
                let (s3, bucket) = (s3.clone(), bucket.to_string());
                tokio::spawn(async move {
                    s3.put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(body.into())
                        .send()
                        .await
                })
            })
            .collect();
        for put in group {
            put.await.expect("the put task").expect("a put");
        }
    }
}

/// `redis-server` arguments that give a Redis a test starts itself the
/// stack's users (`FS_REDIS_ACLFILE`), so the roles connect to it as to the
/// stack's own.
pub fn acl_args() -> Vec<String> {
    match std::env::var("FS_REDIS_ACLFILE") {
        Ok(path) if !path.is_empty() => vec!["--aclfile".into(), path],
        _ => Vec::new(),
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{name}-{:x}{:x}",
        nanos & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Configuration from the environment `make test` sets up.
pub fn config() -> Config {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok()
            && std::env::var(shared::config::REDIS_URL.name()).is_ok(),
        "integration tests need the local stack: run them with `make test`"
    );
    Config::from_env().expect("configuration")
}

/// A running stack for one test.
pub struct Harness {
    pub stack: Stack,
    pub config: Config,
    /// A dataset name of this test's own.
    pub dataset: String,
}

/// Options of a test stack: small chunks, short visibility timeout, pollers on.
pub fn options(name: &str) -> StackOptions {
    let mut config = config();
    config.chunk_bytes = 64 * 1024;
    config.pointer_ttl = Duration::ZERO;
    // Metric lines would drown the test output; their format has unit tests.
    config.metrics_namespace = String::new();
    // Folders settle in a second here, and an empty one fails in 10 s.
    config.folders.settle = Duration::from_secs(1);
    config.folders.max = Duration::from_secs(10);
    let vt = Duration::from_secs(5);
    StackOptions {
        config,
        names: Names::with_prefix(&unique(name)),
        queues: QueueSettings {
            max_receive_count: 3,
            visibility_timeout_s: 5,
        },
        planner: PollerSettings {
            batch_size: 10,
            visibility_timeout: vt,
            concurrency: 1,
            wait: Duration::from_secs(1),
        },
        ingest: PollerSettings {
            batch_size: 1,
            visibility_timeout: vt,
            concurrency: 4,
            wait: Duration::from_secs(1),
        },
        http: None,
        auth: std::sync::Arc::default(),
        redis_users: local_stack::stack::RedisUsers::from_env().expect("the stack's Redis users"),
        faults: Default::default(),
        janitor: Some(Duration::from_millis(250)),
        janitor_datasets: None,
    }
}

impl Harness {
    pub async fn start(name: &str) -> Harness {
        Self::start_with(options(name)).await
    }

    /// Starts a stack; its janitor (if on) looks after this test's dataset
    /// only, so tests with their own retention settings do not meet.
    pub async fn start_with(mut opts: StackOptions) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,ingest=info".into()),
            )
            .with_test_writer()
            .try_init();
        let config = opts.config.clone();
        let dataset = unique("ds");
        opts.janitor_datasets
            .get_or_insert_with(Vec::new)
            .push(dataset.clone());
        let stack = Stack::start(opts).await.expect("local stack starts");
        Harness {
            stack,
            config,
            dataset,
        }
    }

    /// `GET path_and_query` through the serve handler, as API Gateway would call it.
    pub async fn get(&self, path_and_query: &str, accept: Option<&str>) -> (u16, String) {
        request(&self.stack.app, "GET", path_and_query, accept).await
    }

    /// `GET` returning the status and the body parsed as JSON.
    pub async fn get_json(&self, path_and_query: &str) -> (u16, Value) {
        let (status, body) = self.get(path_and_query, None).await;
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path_and_query}: body is not JSON ({e}): {body}"));
        (status, v)
    }

    /// Uploads `body` under `{dataset}/{name}` and waits for the dataset to flip.
    pub async fn upload_and_wait(
        &self,
        name: &str,
        body: Vec<u8>,
    ) -> shared::db::protocol::Pointer {
        let before = self.live().await.map(|p| p.version);
        self.stack
            .upload(&format!("{}/{name}", self.dataset), body)
            .await
            .expect("upload");
        self.stack
            .wait_for_flip(&self.dataset, before.as_deref(), Duration::from_secs(120))
            .await
            .expect("flip")
    }

    /// Uploads `body` under `{dataset}/{name}` and waits until its version
    /// settles (live, held, superseded or failed).
    pub async fn upload_settled(
        &self,
        dataset: &str,
        name: &str,
        body: Vec<u8>,
    ) -> shared::db::protocol::VersionInfo {
        let key = format!("{dataset}/{name}");
        let etag = self.stack.upload(&key, body).await.expect("upload");
        let source = format!("s3://{}/{key}", self.stack.topology.bucket);
        fsctl::upload::wait(
            &self.stack.redis,
            dataset,
            &source,
            &etag,
            Duration::from_secs(120),
            |_, _| {},
        )
        .await
        .expect("version settles")
    }

    /// Uploads `files` (name → body) into the folder batch `dataset/folder/`,
    /// then its marker last, and waits for the folder's version to settle.
    pub async fn upload_folder(
        &self,
        dataset: &str,
        folder: &str,
        files: &[(&str, Vec<u8>)],
        marker: (&str, Vec<u8>),
    ) -> shared::db::protocol::VersionInfo {
        for (name, body) in files {
            self.stack
                .upload(&format!("{dataset}/{folder}/{name}"), body.clone())
                .await
                .expect("upload");
        }
        let etag = self
            .stack
            .upload(&format!("{dataset}/{folder}/{}", marker.0), marker.1)
            .await
            .expect("upload the marker");
        let source = format!("s3://{}/{dataset}/{folder}/", self.stack.topology.bucket);
        fsctl::upload::wait(
            &self.stack.redis,
            dataset,
            &source,
            &etag,
            Duration::from_secs(120),
            |_, _| {},
        )
        .await
        .expect("version settles")
    }

    pub async fn live(&self) -> Option<shared::db::protocol::Pointer> {
        shared::db::protocol::Dataset::of(&self.stack.redis, &self.keys())
            .live()
            .await
            .expect("read pointer")
    }

    /// The protocol's side of this test's dataset.
    /// Every user of `version` of `dataset` with its stored value: the
    /// HGETALL of each of the version's buckets, merged.
    pub async fn contents(&self, dataset: &str, version: &str) -> HashMap<String, Vec<u8>> {
        use redis::AsyncCommands;
        let keys = shared::keys::DatasetKeys::new(dataset).unwrap();
        let info = shared::db::protocol::Dataset::of(&self.stack.redis, &keys)
            .version_info(version)
            .await
            .unwrap()
            .unwrap();
        let mut all = HashMap::new();
        let mut c = self.stack.redis.clone();
        for b in 0..info.buckets {
            let m: HashMap<String, Vec<u8>> = c.hgetall(keys.bucket(version, b)).await.unwrap();
            all.extend(m);
        }
        all
    }

    /// A stack whose queues nobody polls: the test delivers messages itself
    /// (small chunks, so a batch has several).
    pub async fn manual(name: &str) -> Harness {
        let mut o = options(name);
        o.planner.concurrency = 0;
        o.ingest.concurrency = 0;
        o.config.chunk_bytes = 2048;
        Harness::start_with(o).await
    }

    /// The object events in the events queue, by key (the test event
    /// skipped), taken off the queue.
    pub async fn object_events(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for body in self.object_event_bodies().await {
            if let Notification::Records(r) = parse_notification(&body).unwrap() {
                out.insert(r[0].key.clone(), body);
            }
        }
        out
    }

    pub fn ds(&self) -> shared::db::protocol::Dataset {
        shared::db::protocol::Dataset::new(&self.stack.redis, &self.dataset).unwrap()
    }

    pub fn keys(&self) -> shared::keys::DatasetKeys {
        shared::keys::DatasetKeys::new(&self.dataset).unwrap()
    }

    pub fn planner_deps(&self) -> PlannerDeps<S3Source> {
        let mut config = self.config.planner(&self.stack.topology.chunks_url);
        config.events_queue_url = Some(self.stack.topology.events_url.clone());
        PlannerDeps {
            config,
            redis: self.stack.redis.clone(),
            source: S3Source::new(self.stack.s3.clone()),
            sqs: self.stack.sqs.clone(),
        }
    }

    pub fn ingest_deps(&self) -> IngestDeps<S3Source> {
        IngestDeps::new(
            self.config.ingest(),
            self.stack.redis.clone(),
            S3Source::new(self.stack.s3.clone()),
        )
    }

    /// The bodies of the object events in the events queue (the test event
    /// skipped), taken off the queue.
    /// In the order they were received.
    pub async fn object_event_bodies(&self) -> Vec<String> {
        let bodies = self.drain(&self.stack.topology.events_url).await;
        bodies
            .into_iter()
            .filter(|b| matches!(parse_notification(b), Ok(Notification::Records(_))))
            .collect()
    }

    /// The chunk messages in the chunks queue, by version and chunk, taken
    /// off the queue.
    pub async fn chunk_messages(&self) -> Vec<ingest::s3::messages::ChunkMessage> {
        let bodies = self.drain(&self.stack.topology.chunks_url).await;
        let mut msgs: Vec<ingest::s3::messages::ChunkMessage> = bodies
            .iter()
            .map(|b| ingest::s3::messages::ChunkMessage::from_json(b).expect("a chunk message"))
            .collect();
        msgs.sort_by(|a, b| (&a.version, a.chunk).cmp(&(&b.version, b.chunk)));
        msgs
    }

    /// Receives every message currently in `queue_url` (and deletes them).
    pub async fn drain(&self, queue_url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let out = self
                .stack
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            let msgs = out.messages.unwrap_or_default();
            if msgs.is_empty() {
                empty += 1;
                continue;
            }
            for m in msgs {
                bodies.push(m.body.clone().unwrap_or_default());
                self.stack
                    .sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle.unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        bodies
    }
}

/// An S3 notification with its record's event time set to `time`: tests
/// order uploads explicitly, as two uploads may share a millisecond.
pub fn at_time(body: &str, time: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["Records"][0]["eventTime"] = serde_json::Value::from(time);
    v.to_string()
}

/// An SQS event holding `bodies`, as Lambda would deliver it.
/// `body` compressed by the system's own `tool` (`gzip` or `zstd`): fixtures
/// come from real writers, not from our code.
pub fn compressed_by(tool: &str, body: &[u8]) -> Vec<u8> {
    piped(tool, &["-c", "-q"], body)
}

/// What `program args…` writes to stdout when fed `input` on stdin; panics
/// (naming the program) if it cannot start or fails.
pub fn piped(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (installed by infra/local/deps.sh): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{program} failed");
    out.stdout
}

/// The JSON Lines batch `jsonl` as CSV written by Python's own `csv` module
/// (a real writer, with its CRLF line ends and RFC 4180 quoting), the item
/// list laid out as `items`: `json` (a JSON array in one column), `joined`
/// (`1|2|3` in one column) or `ranked` (`movieId_1`, `movieId_2`, …). A
/// record without a field leaves its cell empty (a delta's tombstone has no
/// items; only tombstones have `_delete`).
pub fn csv_by_python(jsonl: &[u8], items: &str) -> Vec<u8> {
    const SCRIPT: &str = r#"
import csv, json, sys
mode = sys.argv[1]
rows = [json.loads(line) for line in sys.stdin if line.strip()]
extra = sorted({k for r in rows for k in r} - {"userId", "movieId"})
depth = max(len(r.get("movieId", [])) for r in rows)
w = csv.writer(sys.stdout)
if mode == "ranked":
    w.writerow(["userId"] + [f"movieId_{n}" for n in range(1, depth + 1)] + extra)
else:
    w.writerow(["userId", "movieId"] + extra)
for r in rows:
    items = r.get("movieId", [])
    if mode == "json":
        cells = [json.dumps(items)]
    elif mode == "joined":
        cells = ["|".join(str(i) for i in items)]
    else:
        cells = [str(i) for i in items] + [""] * (depth - len(items))
    w.writerow([r["userId"]] + cells + [json.dumps(r[k]) if k in r else "" for k in extra])
"#;
    piped("python3", &["-c", SCRIPT, items], jsonl)
}

/// The JSON Lines batch `jsonl` as Parquet written by `writer` (`pyarrow`,
/// `pandas` or `polars`, from the project's venv) with `args` (see
/// `tests/writers/parquet.py`: compression, row-group size, …).
pub fn parquet_by(writer: &str, jsonl: &[u8], args: &[&str]) -> Vec<u8> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/writers/parquet.py");
    let mut all = vec![script, writer];
    all.extend_from_slice(args);
    piped(python, &all, jsonl)
}

pub fn sqs_event(bodies: &[String]) -> LambdaEvent<SqsEvent> {
    let mut event = SqsEvent::default();
    for (i, b) in bodies.iter().enumerate() {
        let mut m = SqsMessage::default();
        m.message_id = Some(format!("m{i}"));
        m.body = Some(b.clone());
        m.event_source = Some("aws:sqs".into());
        event.records.push(m);
    }
    LambdaEvent::new(event, Context::default())
}

/// One request through the serve handler, with the event the gateway builds.
pub async fn request(
    app: &serve::http::App,
    method: &str,
    path_and_query: &str,
    accept: Option<&str>,
) -> (u16, String) {
    request_with_body(app, method, path_and_query, accept, b"").await
}

/// [`request`] with a body.
pub async fn request_with_body(
    app: &serve::http::App,
    method: &str,
    path_and_query: &str,
    accept: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    use axum::http::{HeaderMap, HeaderValue, Method, Uri};
    let uri: Uri = path_and_query.parse().expect("uri");
    let mut headers = HeaderMap::new();
    if let Some(a) = accept {
        headers.insert("accept", HeaderValue::from_str(a).unwrap());
    }
    let event = local_stack::gateway::event_for(
        &Method::from_bytes(method.as_bytes()).unwrap(),
        &uri,
        &headers,
        body,
    );
    let out = serve::handle(app, LambdaEvent::new(event, Context::default()))
        .await
        .expect("serve handler never errs");
    let status = out["statusCode"].as_u64().unwrap() as u16;
    (status, out["body"].as_str().unwrap_or("").to_string())
}

/// One HTTP/1.1 request over a plain socket; returns the status and body.
pub async fn http(addr: std::net::SocketAddr, raw_request: String) -> (u16, String) {
    let (status, _, body) = http_with_headers(addr, raw_request).await;
    (status, body)
}

/// [`http`], with the answer's headers too (names lower-cased).
pub async fn http_with_headers(
    addr: std::net::SocketAddr,
    raw_request: String,
) -> (u16, Vec<(String, String)>, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(raw_request.as_bytes()).expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read");
        let text = String::from_utf8_lossy(&out).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    })
    .await
    .expect("http task")
}

/// `GET target` over HTTP with `Connection: close`.
pub async fn http_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Ports of a cluster's primaries, from `CLUSTER NODES` on its first seed.
pub async fn primary_ports(seed_urls: &str) -> Vec<u16> {
    let seed = seed_urls.split(',').next().unwrap_or(seed_urls);
    let client = redis::Client::open(seed).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .expect("cluster nodes");
    nodes
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.contains("master") && !f.contains("fail"))
        })
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Sum over primaries of `DBSIZE` and `used_memory`.
pub async fn keys_and_memory(seed_url: &str) -> (u64, u64) {
    let (mut keys, mut memory) = (0, 0);
    for port in primary_ports(seed_url).await {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let n: u64 = redis::cmd("DBSIZE")
            .query_async(&mut c)
            .await
            .expect("dbsize");
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c)
            .await
            .expect("info");
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        keys += n;
        memory += used;
    }
    (keys, memory)
}

/// `n` users (ids `first..first+n`), each with `items` items that encode
/// `generation` (`generation * 100_000 + user * 10 + rank`) and one score per item.
pub fn generation(first: u64, n: u64, items: u64, generation: u64) -> Vec<u8> {
    let mut out = String::new();
    for u in first..first + n {
        let movies: Vec<u64> = (0..items)
            .map(|r| generation * 100_000 + u * 10 + r)
            .collect();
        let scores: Vec<f64> = (0..items).map(|r| 1.0 - r as f64 / 10.0).collect();
        out.push_str(&serde_json::json!({"userId": u, "movieId": movies, "scores": scores, "model": format!("g{generation}")}).to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// The one generation (see [`generation`]) every result of a batch answer
/// read at rank 1 comes from, checked against its `model` field; panics on
/// an answer that mixes batches.
pub fn batch_generation(v: &Value) -> u64 {
    let generations: std::collections::BTreeSet<u64> = v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {v}"))
        .iter()
        .map(|x| x["item"].as_u64().unwrap() / 100_000)
        .collect();
    assert_eq!(
        generations.len(),
        1,
        "one answer mixes batches {generations:?}: {v}"
    );
    let g = *generations.first().unwrap();
    assert_eq!(
        v["results"][0]["fields"]["model"].as_str(),
        Some(format!("g{g}").as_str()),
        "{v}"
    );
    g
}
