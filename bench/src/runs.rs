//! The measurements themselves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use ingest::deps::IngestDeps;
use ingest::formats::plan_lines;
use ingest::layout::{ChunkFormat, Compression};
use ingest::load::ingest_chunk;
use ingest::s3::messages::ChunkMessage;
use integration_tests::FileSource;
use lambda_runtime::{Context as LambdaContext, LambdaEvent};
use redis::AsyncCommands;
use serde_json::json;
use serve::http::App;
use serve::Reader;
use shared::config::{Config, RedisConfig};
use shared::db::protocol::{self, NewVersion};
use shared::db::store::Redis;
use shared::keys::{bucket_count, DatasetKeys};

/// A generated batch on disk.
#[derive(Clone)]
pub struct Batch {
    pub dir: PathBuf,
    pub name: String,
    pub users: u64,
    pub bytes: u64,
}

impl Batch {
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// Writes a JSON Lines batch of `users` × `items`.
pub fn make_batch(dir: &Path, users: u64, items: usize) -> Result<Batch> {
    make_batch_as(dir, users, items, fsctl::generate::Layout::Jsonl)
}

/// Writes a batch of `users` × `items` in `layout` (kept between runs).
pub fn make_batch_as(
    dir: &Path,
    users: u64,
    items: usize,
    layout: fsctl::generate::Layout,
) -> Result<Batch> {
    std::fs::create_dir_all(dir)?;
    let ext = if layout == fsctl::generate::Layout::Jsonl {
        "jsonl"
    } else {
        "json"
    };
    let name = format!("batch-{users}x{items}.{ext}");
    let path = dir.join(&name);
    if !path.exists() {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        fsctl::generate::generate(
            &fsctl::generate::Options {
                users,
                items,
                layout,
                ..Default::default()
            },
            &mut f,
        )?;
        f.flush()?;
    }
    Ok(Batch {
        dir: dir.to_path_buf(),
        name,
        users,
        bytes: std::fs::metadata(&path)?.len(),
    })
}

/// `batch` rewritten by a real tool into `name` beside it (kept between
/// runs): `program args…` reads the batch on stdin and writes the new file
/// on stdout.
pub fn converted(batch: &Batch, name: &str, program: &str, args: &[&str]) -> Result<Batch> {
    let path = batch.dir.join(name);
    if !path.exists() {
        let partial = batch.dir.join(format!("{name}.partial"));
        let status = Command::new(program)
            .args(args)
            .stdin(std::fs::File::open(batch.path())?)
            .stdout(std::fs::File::create(&partial)?)
            .status()
            .with_context(|| format!("running {program}"))?;
        if !status.success() {
            bail!("{program} {args:?} failed on {}", batch.name);
        }
        std::fs::rename(&partial, &path)?;
    }
    Ok(Batch {
        dir: batch.dir.clone(),
        name: name.to_string(),
        users: batch.users,
        bytes: std::fs::metadata(&path)?.len(),
    })
}

/// A pandas script: `argv[1]` users × 20 items with a float score per item,
/// as `DataFrame.to_json(orient="records", lines=True)` writes them (scores
/// to 10 significant digits), on stdout; items are integers, or SKU strings
/// (`B0` + 8 digits) when `argv[2]` is `skus`. Seeded: the same file each run.
pub const PANDAS_SCORED: &str = r#"
import sys, numpy as np, pandas as pd
n, skus = int(sys.argv[1]), sys.argv[2] == "skus"
rng = np.random.default_rng(7)
step = 200_000
for first in range(0, n, step):
    m = min(step, n - first)
    items = rng.integers(1, 100_000_000, size=(m, 20))
    scores = -np.sort(-rng.random((m, 20)), axis=1)
    df = pd.DataFrame({"userId": np.arange(first + 1, first + m + 1)})
    df["movieId"] = [[f"B0{x:08d}" for x in row] for row in items.tolist()] if skus else items.tolist()
    df["score"] = scores.tolist()
    df.to_json(sys.stdout, orient="records", lines=True)
    sys.stdout.write("\n")
"#;

/// The batch [`PANDAS_SCORED`] writes for `users` (kept between runs).
pub fn scored_batch(dir: &Path, users: u64, skus: bool) -> Result<Batch> {
    let kind = if skus { "skus" } else { "ints" };
    let name = format!("batch-{users}x20-{kind}-scores.jsonl");
    let path = dir.join(&name);
    if !path.exists() {
        std::fs::create_dir_all(dir)?;
        let partial = dir.join(format!("{name}.partial"));
        let status = Command::new(venv_python())
            .args(["-c", PANDAS_SCORED, &users.to_string(), kind])
            .stdout(std::fs::File::create(&partial)?)
            .status()
            .context("running pandas")?;
        if !status.success() {
            bail!("pandas failed writing {name}");
        }
        std::fs::rename(&partial, &path)?;
    }
    Ok(Batch {
        dir: dir.to_path_buf(),
        name,
        users,
        bytes: std::fs::metadata(&path)?.len(),
    })
}

/// The mean stored value of `batch`'s records, in bytes, with their other
/// fields as JSON text and as ingest stores them (numbers packed).
pub fn value_bytes(batch: &Batch, fields: &shared::record::Fields) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(batch.path())?;
    let mut encoder = shared::record::Encoder::new(fields, 1000);
    let (mut json, mut packed, mut n) = (0usize, 0usize, 0usize);
    let mut buf = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        buf.clear();
        encoder.encode(line, &mut buf)?;
        json += buf.len();
        shared::record::compact(&mut buf, 0);
        packed += buf.len();
        n += 1;
    }
    let n = n.max(1) as f64;
    Ok((json as f64 / n, packed as f64 / n))
}

/// The project venv's Python, which has pyarrow.
pub fn venv_python() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_string()
}

/// A pyarrow script: the JSON Lines on stdin as Parquet (Snappy) on stdout,
/// in row groups of `argv[1]` rows, or cut into `argv[2]` files in the
/// folder `argv[3]` (with a `_SUCCESS`) when given.
pub const PYARROW_WRITER: &str = r#"
import sys, os, pyarrow.json as pj, pyarrow.parquet as pq
t = pj.read_json(sys.stdin.buffer, read_options=pj.ReadOptions(block_size=64 << 20))
rows = int(sys.argv[1])
if len(sys.argv) > 2:
    n, out = int(sys.argv[2]), sys.argv[3]
    os.makedirs(out, exist_ok=True)
    step = -(-t.num_rows // n)
    for i in range(n):
        pq.write_table(t.slice(i * step, step), os.path.join(out, f"part-{i:05d}-c000.snappy.parquet"), compression="snappy", row_group_size=rows)
    open(os.path.join(out, "_SUCCESS"), "w").close()
else:
    pq.write_table(t, sys.stdout.buffer, compression="snappy", row_group_size=rows)
"#;

/// A pyarrow script: a Parquet file of `argv[1]` users × 20 random items
/// (so it barely compresses), in row groups of about `argv[2]` MiB of
/// decoded data, written group by group to `argv[3]`.
pub const PYARROW_LARGE: &str = r#"
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
users, mib, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
per_row = 8 + 20 * 8 + 4
rows = max(1, (mib << 20) // per_row)
rng = np.random.default_rng(7)
schema = pa.schema([("userId", pa.int64()), ("movieId", pa.list_(pa.int64()))])
with pq.ParquetWriter(out, schema, compression="snappy", use_dictionary=False) as w:
    for start in range(0, users, rows):
        n = min(rows, users - start)
        items = pa.array(rng.integers(1, 1 << 40, size=n * 20), type=pa.int64())
        lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n * 20 + 1, 20, dtype=np.int32)), items)
        w.write_table(pa.table({"userId": pa.array(np.arange(start + 1, start + n + 1)), "movieId": lists}, schema=schema), row_group_size=rows)
"#;

/// A configuration pointing at one Redis.
pub fn config(base: &Config, urls: &str, cluster: bool) -> Config {
    let mut c = base.clone();
    c.redis = RedisConfig {
        urls: urls.split(',').map(str::to_string).collect(),
        cluster,
        ..base.redis.clone()
    };
    c.metrics_namespace = String::new();
    // Loads run at full speed unless a measure paces them itself.
    c.target_latency = None;
    c
}

/// Cuts `batch` into chunks with the planner's own code.
pub async fn plan(
    batch: &Batch,
    cfg: &Config,
) -> Result<(Vec<(u64, u64)>, ChunkFormat, Compression)> {
    let mut planner = cfg.planner("");
    let source = FileSource::new(&batch.dir);
    let mut layout =
        ingest::formats::plan(&source, &planner, "local", &batch.name, "", batch.bytes).await?;
    // Chunks as the planner sizes them for a large batch.
    if let Some(bytes) = ingest::plan::dense_chunk_bytes_for(
        &planner,
        layout.estimated_users,
        layout.text_bytes,
        layout.ranges.len(),
    ) {
        planner.chunk_bytes = bytes;
        layout =
            ingest::formats::plan(&source, &planner, "local", &batch.name, "", batch.bytes).await?;
    }
    Ok((layout.ranges, layout.format, layout.compression))
}

/// The median of `runs`, which it sorts.
pub fn median(runs: &mut [Duration]) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// Peak resident memory of this process, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The chunk messages the planner would send for `batch` (dataset `bench`).
fn chunk_messages(
    batch: &Batch,
    version: &str,
    ranges: &[(u64, u64)],
    (format, compression): (ChunkFormat, Compression),
    buckets: u32,
) -> Vec<ChunkMessage> {
    ChunkMessage {
        dataset: "bench".into(),
        version: version.to_string(),
        bucket: "local".into(),
        key: batch.name.clone(),
        etag: String::new(),
        size: batch.bytes,
        format,
        compression,
        file: 0,
        chunk: 0,
        chunks: 0,
        start: 0,
        end: 0,
        buckets,
        more: Vec::new(),
        delta: false,
    }
    .per_range(ranges)
}

/// Ingests `batch` as a new version of dataset `bench` with `workers`
/// concurrent ingest workers (each with its own connection, like Lambdas);
/// returns the time from the first chunk to the flip.
pub async fn ingest(cfg: &Config, batch: &Batch, workers: usize) -> Result<Duration> {
    let keys = DatasetKeys::new("bench")?;
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let version = shared::version_id::derive(&shared::version_id::VersionSource {
        event_time: &now,
        sequencer: None,
        bucket: "local",
        key: &batch.name,
        etag: &format!("{workers}"),
    })?;
    let (ranges, format, compression) = plan(batch, cfg).await?;
    let label = ingest::layout::label(format, compression);
    let buckets = bucket_count(batch.users, cfg.users_per_bucket);
    let setup = Redis::connect_checked(&cfg.redis).await?;
    // As the planner would name it: the chunk messages read `local/<name>`.
    let source = format!("s3://local/{}", batch.name);
    let spans: Vec<protocol::ChunkPlan> = ranges
        .iter()
        .map(|&r| protocol::Span::from(r).into())
        .collect();
    protocol::Dataset::new(&setup, keys.dataset())?
        .register(&NewVersion {
            version: &version,
            spans: &spans,
            files: &[],
            buckets,
            source: &source,
            etag: "",
            size: batch.bytes,
            format: &label,
            est_bytes: 0,
            hold: None,
            expected_records: None,
        })
        .await?;
    let messages = Arc::new(chunk_messages(
        batch,
        &version,
        &ranges,
        (format, compression),
        buckets,
    ));
    let mut deps = Vec::new();
    for _ in 0..workers {
        deps.push(Arc::new(IngestDeps::new(
            cfg.ingest(),
            Redis::connect_checked(&cfg.redis).await?,
            FileSource::new(&batch.dir),
        )));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = deps
        .into_iter()
        .map(|d| {
            let (next, messages) = (next.clone(), messages.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = messages.get(i) else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    ingest_chunk(&d, m).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let took = started.elapsed();
    let live = protocol::Dataset::of(&setup, &keys)
        .live()
        .await?
        .context("no live version")?;
    if live.version != version {
        bail!("the benchmark version did not go live");
    }
    Ok(took)
}

/// Replays a delta of `delta_users` users (spread over the version's ids)
/// onto the live `bench` version of `batch`, as a version replays the
/// deltas newer than it before its flip: the replay's time and the users it
/// wrote, against the flip's own count of the version's users (an HLEN of
/// every bucket).
pub async fn replay_cost(
    cfg: &Config,
    batch: &Batch,
    delta_users: u64,
) -> Result<(Duration, u64, Duration)> {
    let keys = DatasetKeys::new("bench")?;
    let redis = Redis::connect_checked(&cfg.redis).await?;
    let live = protocol::Dataset::of(&redis, &keys)
        .live()
        .await?
        .context("the bench dataset is live")?;
    let name = format!("delta-{delta_users}.jsonl");
    let stride = (batch.users / delta_users).max(1);
    let body: String = (0..delta_users)
        .map(|i| {
            format!(
                "{{\"userId\": {}, \"movieId\": [{}, 7]}}\n",
                i * stride + 1,
                900_000 + i
            )
        })
        .collect();
    std::fs::write(batch.dir.join(&name), &body)?;
    // Logged as the planner would log it, an hour after the version's batch.
    let event_ms = shared::version_id::event_ms(&live.version).context("version time")? + 3_600_000;
    let id = shared::version_id::derive(&shared::version_id::VersionSource {
        event_time: &shared::version_id::rfc3339_ms(event_ms),
        sequencer: None,
        bucket: "local",
        key: &name,
        etag: "",
    })?;
    let msg = ChunkMessage {
        dataset: "bench".into(),
        version: id.clone(),
        bucket: "local".into(),
        key: name.clone(),
        etag: String::new(),
        size: body.len() as u64,
        format: ChunkFormat::JsonLines,
        compression: Compression::None,
        file: 0,
        chunk: 0,
        chunks: 1,
        start: 0,
        end: body.len() as u64,
        buckets: 0,
        more: Vec::new(),
        delta: true,
    };
    shared::db::deltas::log(
        &redis,
        &keys,
        &id,
        &format!("s3://local/{name}"),
        event_ms,
        &serde_json::to_string(&msg)?,
    )
    .await?;
    let deps = IngestDeps::new(cfg.ingest(), redis.clone(), FileSource::new(&batch.dir));
    let ds = protocol::Dataset::new(&redis, "bench")?;
    let started = Instant::now();
    let users = ingest::load::delta::replay(&deps, &ds, &live.version, live.buckets).await?;
    let replay = started.elapsed();
    let started = Instant::now();
    redis
        .sum_over_buckets(&keys, &live.version, live.buckets, "HLEN")
        .await?;
    let count = started.elapsed();
    shared::db::deltas::trim(&redis, &keys, u64::MAX).await?;
    Ok((replay, users, count))
}

/// The writes ingest makes for `batch` into a standalone Redis, as a RESP
/// stream for `redis-cli --pipe`: the same commands, byte for byte, built
/// chunk by chunk and round by round by ingest's own code, but not sent.
pub async fn resp_of_ingest(cfg: &Config, batch: &Batch, version: &str) -> Result<PathBuf> {
    let (ranges, format, compression) = plan(batch, cfg).await?;
    let buckets = bucket_count(batch.users, cfg.users_per_bucket);
    let source = FileSource::new(&batch.dir);
    let ingest_cfg = cfg.ingest();
    let out_path = batch.dir.join(format!("{}.resp", batch.name));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&out_path)?);
    for msg in chunk_messages(batch, version, &ranges, (format, compression), buckets) {
        for round in integration_tests::chunk_rounds(&ingest_cfg, &source, &msg, false).await? {
            for cmd in round {
                out.write_all(&cmd.get_packed_command())?;
            }
        }
    }
    out.flush()?;
    Ok(out_path)
}

/// Time of `redis-cli --pipe < file` against `port`.
pub fn redis_cli_pipe(port: u16, file: &Path) -> Result<Duration> {
    let input = std::fs::File::open(file)?;
    let started = Instant::now();
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--pipe"])
        .stdin(input)
        .stdout(Stdio::piped())
        .output()?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("errors: 0") {
        bail!("redis-cli --pipe failed: {text}");
    }
    Ok(took)
}

/// A plain connection for administration, with room for slow commands.
async fn admin(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let cfg =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120)));
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?)
}

/// `used_memory` of a standalone Redis.
pub async fn used_memory(url: &str) -> Result<u64> {
    let mut c = admin(url).await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory")
}

/// Redis's own account of the commands since `CONFIG RESETSTAT`: each
/// command's calls and microseconds per call, busiest first.
pub async fn command_stats(url: &str) -> Result<Vec<(String, u64, f64)>> {
    let mut c = admin(url).await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    let mut out: Vec<(String, u64, f64)> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            };
            Some((
                name.to_string(),
                field("calls")?.parse().ok()?,
                field("usec_per_call")?.parse().ok()?,
            ))
        })
        .collect();
    out.sort_by(|a, b| (b.1 as f64 * b.2).total_cmp(&(a.1 as f64 * a.2)));
    Ok(out)
}

/// Resets Redis's command statistics.
pub async fn reset_stats(url: &str) -> Result<()> {
    let mut c = admin(url).await?;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await?;
    Ok(())
}

pub async fn flushall(url: &str) -> Result<()> {
    let mut c = admin(url).await?;
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// FLUSHALL on each node of `urls` (comma-separated, a cluster's primaries).
pub async fn flush_nodes(urls: &str) -> Result<()> {
    for url in urls.split(',') {
        flushall(url).await?;
    }
    Ok(())
}

/// `used_memory` summed over the nodes of `urls` (comma-separated).
pub async fn used_memory_nodes(urls: &str) -> Result<u64> {
    let mut sum = 0;
    for url in urls.split(',') {
        sum += used_memory(url).await?;
    }
    Ok(sum)
}

/// The live `bench` version's own flip time, from its record (the server's
/// clock): from its last chunk written to live, that is the count of its
/// users, the checks and the pointer's move.
pub async fn flip_time(cfg: &Config) -> Result<Duration> {
    let redis = Redis::connect_checked(&cfg.redis).await?;
    let keys = DatasetKeys::new("bench")?;
    let live = protocol::Dataset::of(&redis, &keys)
        .live()
        .await?
        .context("the bench dataset is live")?;
    let info = protocol::Dataset::new(&redis, "bench")?
        .version_info(&live.version)
        .await?
        .context("the live version's record")?;
    let (written, live) = info
        .written_ms
        .zip(info.live_ms)
        .context("the record's written and live times")?;
    Ok(Duration::from_millis(live.saturating_sub(written)))
}

/// The original sample's layout: one hash per user, rank → item, written
/// pipelined (1000 users per round trip) so only the layout differs.
pub async fn load_original_layout(url: &str, batch: &Batch, pipelined: bool) -> Result<Duration> {
    let mut c = admin(url).await?;
    let text = std::fs::read_to_string(batch.path())?;
    let started = Instant::now();
    let mut pipe = redis::pipe();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("user:{}", v["userId"]));
        // Rank → item, and rank → score as `s<rank>` when the batch has scores.
        let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        for (rank, item) in v["movieId"].as_array().context("items")?.iter().enumerate() {
            cmd.arg(rank + 1).arg(text(item));
        }
        if let Some(scores) = v["score"].as_array() {
            for (rank, score) in scores.iter().enumerate() {
                cmd.arg(format!("s{}", rank + 1)).arg(text(score));
            }
        }
        if pipelined {
            pipe.add_command(cmd).ignore();
            n += 1;
            if n == 1000 {
                pipe.exec_async(&mut c).await?;
                pipe = redis::pipe();
                n = 0;
            }
        } else {
            let _: () = cmd.query_async(&mut c).await?;
        }
    }
    if n > 0 {
        pipe.exec_async(&mut c).await?;
    }
    Ok(started.elapsed())
}

/// Serve throughput and latency at `callers` concurrent callers, through the
/// Lambda handler in-process; returns (requests/s, p50, p99, Redis commands
/// per request).
pub async fn serve(
    cfg: &Config,
    url: &str,
    users: u64,
    requests: usize,
    callers: usize,
) -> Result<(f64, Duration, Duration, f64)> {
    let redis = Redis::connect_checked(&cfg.redis).await?;
    let app = Arc::new(App::new(cfg.serve(), Reader::new(redis, cfg.pointer_ttl)));
    let mut admin = admin(url).await?;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await?;
    let (lat, took) = drive(&app, requests, callers, move |i| {
        let user = (i as u64 * 7919) % users + 1;
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": format!("/v1/bench/users/{user}"), "rawQueryString": "rank=1",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {"http": {"method": "GET", "path": format!("/v1/bench/users/{user}"), "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"}, "stage": "$default", "timeEpoch": 0}
        })
    })
    .await?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await?;
    let calls: u64 = stats
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_info")
                && !l.starts_with("cmdstat_config")
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    Ok((
        requests as f64 / took.as_secs_f64(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        calls as f64 / requests as f64,
    ))
}

/// Single-user reads through the serve handler in-process at `callers`
/// callers while `during` runs (after a warm-up of 200 ms): the p50 and p99
/// of the reads that started while it ran, and how many there were.
pub async fn serve_during<T>(
    cfg: &Config,
    users: u64,
    callers: usize,
    during: impl std::future::Future<Output = Result<T>>,
) -> Result<(Duration, Duration, usize, T)> {
    let redis = Redis::connect_checked(&cfg.redis).await?;
    let app = Arc::new(App::new(cfg.serve(), Reader::new(redis, cfg.pointer_ttl)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (app, stop, next) = (app.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let user = (i as u64 * 7919) % users + 1;
                    let req = serve::api::Request {
                        method: "GET".into(),
                        path: format!("/v1/bench/users/{user}"),
                        query: vec![("rank".into(), "1".into())],
                        ..Default::default()
                    };
                    let t = Instant::now();
                    let out = app.respond_with_metrics(&req).await.0;
                    lat.push((t, t.elapsed()));
                    assert_eq!(out.status, 200, "{}", out.body);
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let result = during.await;
    let ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(
            t.await?
                .into_iter()
                .filter(|(at, _)| *at >= started && *at < ended)
                .map(|(_, l)| l),
        );
    }
    let result = result?;
    anyhow::ensure!(!lat.is_empty(), "no read started while it ran");
    lat.sort();
    Ok((
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.len(),
        result,
    ))
}

/// `requests` events (`event(i)` the `i`th) through the serve handler
/// in-process at `callers` concurrent callers, each answer a 200: the
/// latencies, sorted, and the time it all took.
async fn drive(
    app: &Arc<App>,
    requests: usize,
    callers: usize,
    event: impl Fn(usize) -> serde_json::Value + Clone + Send + 'static,
) -> Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (app, next, event) = (app.clone(), next.clone(), event.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return lat;
                    }
                    let e = event(i);
                    let t = Instant::now();
                    let out = serve::handle(&app, LambdaEvent::new(e, LambdaContext::default()))
                        .await
                        .expect("handler");
                    lat.push(t.elapsed());
                    assert_eq!(out["statusCode"], 200, "{out}");
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let took = started.elapsed();
    lat.sort();
    Ok((lat, took))
}

/// The `p` quantile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// What batch reads of one size did.
pub struct BatchFigures {
    pub rps: f64,
    pub users_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Redis round trips per request (a pipeline to one node counts once).
    pub round_trips: f64,
}

/// `requests` batch reads (`POST /v1/bench/users:batchGet`) of `size`
/// random users each, through the Lambda handler in-process at `callers`
/// concurrent callers, the pointer cached as deployed.
pub async fn batch_get(
    cfg: &Config,
    users: u64,
    size: usize,
    requests: usize,
    callers: usize,
) -> Result<BatchFigures> {
    let redis = Redis::connect_checked(&cfg.redis).await?;
    let app = Arc::new(App::new(cfg.serve(), Reader::new(redis, cfg.pointer_ttl)));
    let event = move |i: usize| {
        // A cheap spread of ids over every user, different per request.
        let ids: Vec<u64> = (0..size as u64)
            .map(|k| (i as u64 * 1_000_003 + k * 7919 + k * k) % users + 1)
            .collect();
        let body = json!({"userIds": ids, "rank": 1}).to_string();
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/v1/bench/users:batchGet", "rawQueryString": "",
            "headers": {"content-type": "application/json"}, "isBase64Encoded": false, "body": body,
            "requestContext": {"http": {"method": "POST", "path": "/v1/bench/users:batchGet", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"}, "stage": "$default", "timeEpoch": 0}
        })
    };
    // Warm: the pointer and the set of datasets cached.
    serve::handle(
        &app,
        LambdaEvent::new(event(usize::MAX / 2), LambdaContext::default()),
    )
    .await
    .expect("handler");
    let trips_before = app.client.reader().round_trips();
    let (lat, took) = drive(&app, requests, callers, event).await?;
    Ok(BatchFigures {
        rps: requests as f64 / took.as_secs_f64(),
        users_per_s: (requests * size) as f64 / took.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        round_trips: (app.client.reader().round_trips() - trips_before) as f64 / requests as f64,
    })
}

/// Copies every bucket of the live bench version under a name
/// redis-benchmark can draw at random (`ref:` and the bucket number in 12
/// digits, as its `__rand_int__` writes them), with its middle user's field
/// renamed `u`. `HMGET ref:__rand_int__ u` then finds a real record in a
/// bucket of real size and encoding, as each HMGET of a batch read does.
const COPY_BUCKETS: &str = r"
local prefix, n = ARGV[1], tonumber(ARGV[2])
for b = 0, n - 1 do
  local kv = redis.call('HGETALL', prefix .. b)
  if #kv > 0 then
    kv[math.floor(#kv / 4) * 2 + 1] = 'u'
    redis.call('HSET', string.format('ref:%012d', b), unpack(kv))
  end
end
return n
";

/// What `redis-benchmark` measured: requests/s and, with pipelining, each
/// pipeline's latency.
pub struct BenchFigures {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Copies the live bench version's buckets for [`redis_benchmark_hmget`]
/// (see [`COPY_BUCKETS`]) and checks that the copies hold what it reads.
pub async fn copy_buckets_for_reference(url: &str) -> Result<u32> {
    let redis = Redis::connect_checked(&RedisConfig {
        urls: vec![url.to_string()],
        cluster: false,
        ..Config::from_lookup(|_| None)?.redis
    })
    .await?;
    let keys = DatasetKeys::new("bench")?;
    let live = protocol::Dataset::of(&redis, &keys)
        .live()
        .await?
        .context("the bench dataset is live")?;
    let mut admin = admin(url).await?;
    let _: u64 = redis::Script::new(COPY_BUCKETS)
        .arg(keys.bucket_prefix(&live.version))
        .arg(live.buckets)
        .invoke_async(&mut admin)
        .await?;
    // The reference must read records, not miss: an HMGET of a missing key
    // is cheaper than any real read.
    for b in [0, live.buckets / 2, live.buckets - 1] {
        let found: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(format!("ref:{b:012}"))
            .arg("u")
            .query_async(&mut admin)
            .await?;
        anyhow::ensure!(
            found.first().is_some_and(Option::is_some),
            "the reference bucket ref:{b:012} holds no user u"
        );
    }
    Ok(live.buckets)
}

/// `redis-benchmark` sending `HMGET <random bucket> <a user in it>`
/// `pipeline` deep at `clients` clients over the copies
/// [`copy_buckets_for_reference`] made of `buckets` buckets: the commands a
/// batch read sends, without the handler around them.
pub fn redis_benchmark_hmget(
    port: u16,
    buckets: u32,
    requests: usize,
    clients: usize,
    pipeline: usize,
) -> Result<BenchFigures> {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-n",
            &requests.to_string(),
            "-c",
            &clients.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args([
            "-r",
            &buckets.to_string(),
            "-q",
            "--csv",
            "HMGET",
            "ref:__rand_int__",
            "u",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = text
        .lines()
        .rfind(|l| l.starts_with("\"HMGET"))
        .with_context(|| format!("redis-benchmark said: {text}"))?;
    let cells: Vec<f64> = line
        .split("\",\"")
        .skip(1)
        .map(|v| v.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .context("redis-benchmark's figures")?;
    anyhow::ensure!(cells.len() >= 6, "redis-benchmark said: {line}");
    let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
    Ok(BenchFigures {
        rps: cells[0],
        p50: ms(cells[3]),
        p99: ms(cells[5]),
    })
}

/// `redis-benchmark -t get` requests/s at `clients` clients.
pub fn redis_benchmark_get(port: u16, requests: usize, clients: usize) -> Result<f64> {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "get",
            "-n",
            &requests.to_string(),
            "-c",
            &clients.to_string(),
            "-q",
            "--csv",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "GET","123456.79",...
    let line = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .with_context(|| format!("redis-benchmark said: {text}"))?;
    line.split(',')
        .nth(1)
        .map(|v| v.trim_matches('"').parse::<f64>())
        .context("no rps")?
        .context("rps")
}

/// The client library's `get` (rank 1, JSON answer) at `callers` callers
/// in-process, without the HTTP shapes: requests per second, p50, p99.
pub async fn client_get(
    cfg: &Config,
    users: u64,
    requests: usize,
    callers: usize,
) -> Result<(f64, Duration, Duration)> {
    let client = Arc::new(
        featurestore::Client::connect(&cfg.redis, serve::http::options(&cfg.serve())).await?,
    );
    let view = featurestore::View {
        select: featurestore::Select::Rank(std::num::NonZeroU32::MIN),
        fields: None,
    };
    client.get("bench", "1", &view, None).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, next, view) = (client.clone(), next.clone(), view.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut id = String::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return anyhow::Ok(lat);
                    }
                    id.clear();
                    std::fmt::Write::write_fmt(
                        &mut id,
                        format_args!("{}", (i as u64 * 7919) % users + 1),
                    )?;
                    let t = Instant::now();
                    client.get("bench", &id, &view, None).await?;
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let took = started.elapsed();
    lat.sort();
    Ok((
        requests as f64 / took.as_secs_f64(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
    ))
}

/// The Python client's figures against redis-py's (bench/python_client.py).
#[derive(serde::Deserialize)]
pub struct PythonFigures {
    pub get_p50: f64,
    pub get_p99: f64,
    pub hget_p50: f64,
    pub hget_p99: f64,
    pub batch_users_per_s: f64,
    pub pipeline_users_per_s: f64,
    pub batch_p99: f64,
    pub pipeline_p99: f64,
}

/// Runs bench/python_client.py in the bench venv (made by `make bench`).
pub fn python_client(url: &str, users: u64, buckets: u32, reads: usize) -> Result<PythonFigures> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = format!("{root}/target/bench-venv/bin/python");
    anyhow::ensure!(
        Path::new(&python).exists(),
        "{python} is missing: `make bench` makes it"
    );
    let out = Command::new(&python)
        .arg(format!("{root}/bench/python_client.py"))
        .args([
            url,
            &users.to_string(),
            &buckets.to_string(),
            &reads.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The original sample's serving: a new connection per request.
pub async fn reconnect_per_get(url: &str, users: u64, requests: usize) -> Result<f64> {
    let client = redis::Client::open(url)?;
    let started = Instant::now();
    for i in 0..requests {
        let mut c = client.get_multiplexed_async_connection().await?;
        let user = (i as u64 * 7919) % users + 1;
        let _: Option<String> = c.hget(format!("user:{user}"), 1).await?;
    }
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

/// What the whole local pipeline measured: see [`pipeline`].
pub struct PipelineFigures {
    /// Upload to live of a 1,000-user batch.
    pub fresh: Duration,
    /// Upload to visible of a delta of 1 and of 1,000 users onto a live
    /// version: (users, median time).
    pub deltas: Vec<(u64, Duration)>,
    /// One PUT to the emulator plus one SQS send/receive round trip.
    pub hops: Duration,
    /// Upload to live of the large batch, its PUT, and the time the
    /// emulator takes to serve the ranged GETs its chunks make.
    pub large: Duration,
    pub large_put: Duration,
    pub large_gets: Duration,
    /// Upload to live of the same users as a folder of Parquet part files
    /// (the files' PUTs included), and how many files.
    pub folder: Option<(Duration, usize)>,
    /// `wrk` through the local HTTP gateway, if wrk is installed.
    pub wrk: Option<Wrk>,
    /// The same with a new connection per request.
    pub wrk_fresh: Option<Wrk>,
}

/// One `wrk` run.
pub struct Wrk {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub requests: u64,
    /// Requests that got no answer (wrk's socket errors: a connection closed,
    /// reset or timed out), which must be none.
    pub dropped: u64,
}

/// The whole local pipeline (S3 emulator → events queue → planner → chunks
/// queue → ingest → flip, then the HTTP gateway): upload-to-live of a
/// 1,000-user batch against one PUT plus one SQS round trip; upload-to-live
/// of `large` with the emulator's own share; then `wrk` against the gateway.
pub async fn pipeline(
    base: &Config,
    large: &Batch,
    folder: Option<&Path>,
    wrk_seconds: u32,
) -> Result<PipelineFigures> {
    use local_stack::poller::PollerSettings;
    use local_stack::stack::{Stack, StackOptions};
    use local_stack::topology::{Names, QueueSettings};
    let mut config = base.clone();
    config.metrics_namespace = String::new();
    let stack = Stack::start(StackOptions {
        config,
        names: Names::with_prefix(&format!("bench-{}", std::process::id())),
        queues: QueueSettings::default(),
        planner: PollerSettings {
            batch_size: 10,
            visibility_timeout: Duration::from_secs(30),
            concurrency: 2,
            wait: Duration::from_secs(1),
        },
        ingest: PollerSettings {
            batch_size: 1,
            visibility_timeout: Duration::from_secs(120),
            concurrency: 2,
            wait: Duration::from_secs(1),
        },
        http: Some("127.0.0.1:0".parse()?),
        auth: std::sync::Arc::default(),
        redis_users: None,
        faults: Default::default(),
        janitor: None,
        janitor_datasets: None,
    })
    .await?;
    // Dataset names of this run's own: a Redis kept from an earlier run
    // must not answer for them.
    let run = format!("r{}", std::process::id());
    let live = |dataset: String| {
        let redis = stack.redis.clone();
        async move {
            let keys = DatasetKeys::new(&dataset)?;
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut polls = 0u32;
            while Instant::now() < deadline {
                if protocol::Dataset::of(&redis, &keys).live().await?.is_some() {
                    return Ok(());
                }
                // Now and then, whether a version settled without going
                // live: a failed batch ends the run with its reason rather
                // than a timeout.
                polls += 1;
                if polls.is_multiple_of(20) {
                    for v in protocol::Dataset::of(&redis, &keys).history().await? {
                        if !v.state.is_in_progress() && v.state != protocol::State::Live {
                            bail!(
                                "{dataset} version {} is {}: {}",
                                v.version,
                                v.state.as_str(),
                                v.reason.unwrap_or_default()
                            );
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            bail!("{dataset} did not go live")
        }
    };
    let mut body = Vec::new();
    fsctl::generate::generate(
        &fsctl::generate::Options {
            users: 1000,
            items: 20,
            ..Default::default()
        },
        &mut body,
    )?;
    // Reference: the two hops no pipeline can avoid. Each figure is the
    // median of three, after one round of each to warm the connections.
    let mut hops = Vec::new();
    let mut fresh = Vec::new();
    for round in 0..4 {
        let started = Instant::now();
        stack
            .upload(&format!("{run}-reference{round}/probe.jsonl"), body.clone())
            .await?;
        stack
            .sqs
            .send_message()
            .queue_url(&stack.topology.chunks_dlq_url)
            .message_body("probe")
            .send()
            .await?;
        loop {
            let got = stack
                .sqs
                .receive_message()
                .queue_url(&stack.topology.chunks_dlq_url)
                .wait_time_seconds(1)
                .send()
                .await?;
            if let Some(m) = got.messages.unwrap_or_default().first() {
                stack
                    .sqs
                    .delete_message()
                    .queue_url(&stack.topology.chunks_dlq_url)
                    .set_receipt_handle(m.receipt_handle.clone())
                    .send()
                    .await?;
                break;
            }
        }
        hops.push(started.elapsed());
        // Let the probe's own version settle before timing a real one.
        live(format!("{run}-reference{round}")).await?;
        let started = Instant::now();
        stack
            .upload(&format!("{run}-fresh{round}/batch.jsonl"), body.clone())
            .await?;
        live(format!("{run}-fresh{round}")).await?;
        fresh.push(started.elapsed());
    }
    // The first of each warmed up.
    let (hops, fresh) = (median(&mut hops[1..]), median(&mut fresh[1..]));

    // Deltas onto the last of those versions: upload to applied.
    let target = format!("{run}-fresh3");
    let keys = DatasetKeys::new(&target)?;
    let mut deltas = Vec::new();
    for size in [1u64, 1000] {
        let body: String = (1..=size)
            .map(|u| format!("{{\"userId\": {u}, \"movieId\": [{}, 7]}}\n", u + 500_000))
            .collect();
        let mut times = Vec::new();
        for round in 0..4 {
            let key = format!("{target}/_delta/{size}-{round}.jsonl");
            let source = format!("s3://{}/{key}", stack.topology.bucket);
            let started = Instant::now();
            stack.upload(&key, body.clone().into_bytes()).await?;
            let deadline = started + Duration::from_secs(60);
            loop {
                let logged = shared::db::deltas::newer_than(&stack.redis, &keys, 0).await?;
                match logged
                    .iter()
                    .find(|d| d.source == source)
                    .map(|d| (d.state, d.reason.clone()))
                {
                    Some((shared::db::deltas::DeltaState::Applied, _)) => break,
                    Some((shared::db::deltas::DeltaState::Failed, why)) => {
                        bail!("delta {key} failed: {}", why.unwrap_or_default())
                    }
                    _ if Instant::now() > deadline => bail!("delta {key} was not applied"),
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
            times.push(started.elapsed());
        }
        deltas.push((size, median(&mut times[1..])));
    }

    // The large batch, end to end.
    let bytes = std::fs::read(large.path())?;
    let started = Instant::now();
    let large_key = format!("{run}-large/batch.jsonl");
    stack.upload(&large_key, bytes).await?;
    let large_put = started.elapsed();
    live(format!("{run}-large")).await?;
    let large_time = started.elapsed();
    // The emulator's share of the reads: the same ranged GETs, as many at once.
    let ranges = plan_lines(large.bytes, base.chunk_bytes);
    let started = Instant::now();
    futures::stream::iter(ranges)
        .map(|(start, end)| {
            let (s3, bucket, key) = (
                stack.s3.clone(),
                stack.topology.bucket.clone(),
                large_key.clone(),
            );
            async move {
                let got = s3
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .range(format!("bytes={start}-{}", end - 1))
                    .send()
                    .await?;
                got.body
                    .collect()
                    .await
                    .map(|b| b.into_bytes().len())
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(2)
        .try_collect::<Vec<usize>>()
        .await?;
    let large_gets = started.elapsed();

    // The same users as a Spark-style folder: its part files, then `_SUCCESS`.
    let folder = match folder {
        Some(dir) => {
            let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            parts.sort_by_key(|p| p.file_name().map(|n| n == "_SUCCESS"));
            let started = Instant::now();
            for part in &parts {
                let name = part
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("part name")?;
                stack
                    .upload(&format!("{run}-folder/run-1/{name}"), std::fs::read(part)?)
                    .await?;
            }
            live(format!("{run}-folder")).await?;
            Some((started.elapsed(), parts.len() - 1))
        }
        None => None,
    };

    let (wrk, wrk_fresh) = match stack.http_addr {
        Some(addr) if wrk_seconds > 0 => (
            run_wrk(
                addr,
                &format!("{run}-large"),
                large.users,
                wrk_seconds,
                false,
            )?,
            run_wrk(
                addr,
                &format!("{run}-large"),
                large.users,
                wrk_seconds.div_ceil(2),
                true,
            )?,
        ),
        _ => (None, None),
    };
    stack.shutdown().await;
    Ok(PipelineFigures {
        fresh,
        deltas,
        hops,
        large: large_time,
        large_put,
        large_gets,
        folder,
        wrk,
        wrk_fresh,
    })
}

/// `wrk` at 50 connections against the gateway, each request for a random
/// user of `users`, on kept-alive connections or (`fresh`) a new one per
/// request; `None` if wrk is not installed.
fn run_wrk(
    addr: std::net::SocketAddr,
    dataset: &str,
    users: u64,
    seconds: u32,
    fresh: bool,
) -> Result<Option<Wrk>> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Ok(None);
    }
    let script = std::env::temp_dir().join("feature-store-bench-wrk.lua");
    std::fs::write(
        &script,
        format!("request = function() return wrk.format(\"GET\", \"/v1/{dataset}/users/\" .. math.random(1, {users}) .. \"?rank=1\") end\n"),
    )?;
    let mut wrk = Command::new("wrk");
    wrk.args(["-t2", "-c50", &format!("-d{seconds}s"), "--latency"]);
    if fresh {
        wrk.args(["-H", "Connection: close"]);
    }
    let out = wrk
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw error answers: {text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk said: {text}"))?;
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(|v| wrk_duration(v.trim()))
            .with_context(|| format!("no {p} in: {text}"))
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .with_context(|| format!("wrk said: {text}"))?;
    // `Socket errors: connect 0, read 3, write 0, timeout 0`, printed only when there are some.
    let dropped = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |l| {
            l.split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        });
    Ok(Some(Wrk {
        rps,
        p50: pct("50%")?,
        p99: pct("99%")?,
        requests,
        dropped,
    }))
}

/// A wrk latency such as `512.00us`, `1.23ms` or `2.00s`.
fn wrk_duration(v: &str) -> Option<Duration> {
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    Some(Duration::from_secs_f64(n.parse::<f64>().ok()? * scale))
}

/// What planning one folder cost.
#[derive(Debug, Clone, Copy)]
pub struct FolderPlanning {
    pub files: u64,
    /// The planner's whole time for the marker.
    pub took: Duration,
    pub s3_calls: usize,
    /// Chunk messages it sent (small files packed several to a chunk).
    pub chunks: u32,
    /// The emulator alone answering as many S3 calls: the folder's listing,
    /// then a read of each file, as many at once as the planner reads.
    pub s3_alone: Duration,
}

impl FolderPlanning {
    pub fn ms_per_file(&self) -> f64 {
        self.took.as_secs_f64() * 1e3 / self.files as f64
    }

    pub fn s3_calls_per_file(&self) -> f64 {
        self.s3_calls as f64 / self.files as f64
    }
}

/// S3 calls a planner made, by kind.
#[derive(Debug, Default)]
pub struct S3Calls {
    pub reads: AtomicUsize,
    pub heads: AtomicUsize,
    pub lists: AtomicUsize,
}

impl S3Calls {
    pub fn total(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
            + self.heads.load(Ordering::Relaxed)
            + self.lists.load(Ordering::Relaxed)
    }
}

/// An object source that counts the calls made of it.
pub struct Counting<S> {
    pub inner: S,
    pub calls: Arc<S3Calls>,
}

impl<S: ingest::s3::source::ObjectSource> ingest::s3::source::ObjectSource for Counting<S> {
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<ingest::s3::source::ByteStream, ingest::s3::source::SourceError> {
        self.calls.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(bucket, key, etag, from, to).await
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(String, u64), ingest::s3::source::SourceError> {
        self.calls.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.head(bucket, key).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ingest::s3::source::Listed>, ingest::s3::source::SourceError> {
        self.calls.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(bucket, prefix).await
    }
}

/// Planning a folder batch of `n` one-user JSON Lines part files, for each
/// `n` of `sizes`: the planner's time for the marker (listing, every file
/// planned, the version registered, its chunk messages sent) and the S3
/// calls it made, against the local S3/SQS emulator.
pub async fn folder_planning(base: &Config, sizes: &[u64]) -> Result<Vec<FolderPlanning>> {
    use local_stack::stack::{Stack, StackOptions};
    use local_stack::topology::{Names, QueueSettings};
    let mut config = base.clone();
    config.metrics_namespace = String::new();
    let stack = Stack::start(StackOptions {
        config: config.clone(),
        names: Names::with_prefix(&format!("bench-folders-{}", std::process::id())),
        queues: QueueSettings::default(),
        // The marker is planned here, by hand; no poller takes it.
        planner: local_stack::poller::PollerSettings {
            concurrency: 0,
            ..Default::default()
        },
        ingest: local_stack::poller::PollerSettings {
            concurrency: 0,
            ..Default::default()
        },
        http: None,
        auth: Arc::default(),
        redis_users: None,
        faults: Default::default(),
        janitor: None,
        janitor_datasets: None,
    })
    .await?;
    let bucket = stack.topology.bucket.clone();
    let mut out = Vec::new();
    for &n in sizes {
        let folder = format!("folders{}/run-{n}/", std::process::id());
        let parts = (0..n)
            .map(|i| {
                let body = format!("{{\"userId\": {i}, \"movieId\": [1, 2]}}\n");
                (format!("{folder}part-{i:05}.jsonl"), body.into_bytes())
            })
            .collect();
        integration_tests::put_all(&stack.s3, &bucket, parts, 32).await;
        let marker = format!("{folder}_SUCCESS");
        let etag = stack.upload(&marker, Vec::new()).await?;
        // Past the settle window, so the marker plans at once.
        let mut planner = config.planner(&stack.topology.chunks_url);
        planner.folders.settle = Duration::from_secs(1);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let calls = Arc::new(S3Calls::default());
        let deps = ingest::deps::PlannerDeps {
            config: planner,
            redis: stack.redis.clone(),
            source: Counting {
                inner: ingest::s3::source::S3Source::new(stack.s3.clone()),
                calls: calls.clone(),
            },
            sqs: stack.sqs.clone(),
        };
        let now = time::OffsetDateTime::now_utc().format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))?;
        let ev = ingest::s3::event::ObjectEvent {
            event_name: "ObjectCreated:Put".into(),
            event_time: now,
            bucket: bucket.clone(),
            key: marker,
            size: Some(0),
            etag,
            sequencer: None,
        };
        let started = Instant::now();
        let planned = ingest::plan::plan_object(&deps, &ev).await?;
        let took = started.elapsed();
        let planned = planned.context("the folder is planned")?;
        let packed = n.div_ceil(ingest::plan::folder::PACK_MAX_FILES as u64);
        if planned.failed.is_some() || u64::from(planned.chunks) != packed {
            bail!("folder of {n} files planned as {planned:?}");
        }
        // The emulator's S3 alone: the same listing and reads, through the
        // same client, as many at once as the planner reads files.
        let source = ingest::s3::source::S3Source::new(stack.s3.clone());
        let started = Instant::now();
        let listed = ingest::s3::source::ObjectSource::list(&source, &bucket, &folder).await?;
        let reads: Vec<_> = listed
            .iter()
            .filter(|f| f.key.ends_with(".jsonl"))
            .map(|f| ingest::s3::source::read_range(&source, &bucket, &f.key, &f.etag, 0, f.size))
            .collect();
        let read: Vec<_> = futures::stream::iter(reads)
            .buffered(ingest::plan::folder::PLAN_CONCURRENCY)
            .collect()
            .await;
        let s3_alone = started.elapsed();
        if read.len() as u64 != n || read.iter().any(|r| r.is_err()) {
            bail!("the reference read {} of {n} files", read.len());
        }
        out.push(FolderPlanning {
            files: n,
            took,
            s3_calls: calls.total(),
            chunks: planned.chunks,
            s3_alone,
        });
    }
    stack.shutdown().await;
    Ok(out)
}
