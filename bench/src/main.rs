//! `make bench`: one table of figures, each beside its reference.

mod allocs;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bench::report::{Report, Row};
use bench::runs;
use clap::Parser;
use shared::config::Config;

/// Measures ingest, serving and memory against Redis's own tools.
#[derive(Parser)]
struct Args {
    /// Smaller batches: a smoke run in about two minutes.
    #[arg(long)]
    quick: bool,
    /// Only these measures (comma-separated): ingest, memory, serve (batch
    /// reads with it; batch: those alone), deltas (replay at flip), cluster, formats (Parquet and gzip against JSON Lines), scale (1M
    /// and 10M users), pipeline (freshness, the large batch and a folder
    /// batch through the emulator, HTTP), folders (planning 100 and 2,500
    /// part files), rss. The original sample's rows
    /// come with ingest and serve. scale100m (1M, 10M and 100M users into the
    /// cluster; 13 GB of batch, about 14 GB of Redis) runs only when named,
    /// and a run with it writes `scale100m.json` and `.md` instead of `latest.*`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the JSON and Markdown results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Internal: measure one component's peak memory on a batch file, in a
    /// process of its own (`plan` or `ingest`).
    #[arg(long, hide = true, requires = "file")]
    child: Option<String>,
    #[arg(long, hide = true)]
    file: Option<PathBuf>,
    /// Internal: the users in `--file`, when known.
    #[arg(long, hide = true)]
    users: Option<u64>,
    /// Concurrent ingest workers for the standalone ingest measure (as
    /// concurrent Lambdas would be).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// Runs one component on `file` in a child process (`--users` its users,
/// when known); returns the `key=value` lines it printed.
fn child_run(
    component: &str,
    file: &std::path::Path,
    users: Option<u64>,
    workers: usize,
    rounds_mib: Option<usize>,
) -> Result<std::collections::HashMap<String, String>> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if let Some(mib) = rounds_mib {
        cmd.env(shared::config::INGEST_ROUNDS_MIB.name(), mib.to_string());
    }
    cmd.args([
        "--child",
        component,
        "--workers",
        &workers.to_string(),
        "--file",
    ])
    .arg(file);
    if let Some(n) = users {
        cmd.args(["--users", &n.to_string()]);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "{component} run failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Runs one component on `file` in a child process; returns its peak RSS.
fn child_peak_rss(component: &str, file: &std::path::Path) -> Result<u64> {
    child_run(component, file, None, 2, None)?
        .get("peak_rss_bytes")
        .and_then(|v| v.parse().ok())
        .context("no peak RSS reported")
}

/// `FS_INGEST_ROUNDS_MIB` as the template gives the ingest Lambda: loads
/// at scale are measured with the memory a deployment gives its rounds.
fn deployed_rounds_mib() -> Result<usize> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let template = std::fs::read_to_string(path)?;
    let name = format!("{}:", shared::config::INGEST_ROUNDS_MIB.name());
    template
        .lines()
        .find_map(|l| l.trim().strip_prefix(name.as_str()))
        .and_then(|v| v.trim().trim_matches('"').parse().ok())
        .with_context(|| format!("{name} in {path}"))
}

/// Turns each of ours and `redis-cli --pipe` take at the larger size of the
/// scale measure.
const SCALE_TURNS: usize = 3;

/// Turns each of ours and the reference take in the standalone ingest measure.
const INGEST_TURNS: usize = 5;

fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .context("port of the Redis URL")
}

#[global_allocator]
static ALLOCATOR: allocs::Counting = allocs::Counting;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.child.as_deref() == Some("ingest") {
        // As the ingest Lambda's main does.
        ingest::limit_malloc_arenas();
    }
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let base = Config::from_env()?;
    if let (Some(component), Some(file)) = (&args.child, &args.file) {
        let standalone = std::env::var("FS_TEST_STANDALONE_REDIS_URL")?;
        let dir = file.parent().context("file has a folder")?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?
            .to_string();
        let bytes = std::fs::metadata(file)?.len();
        let batch = runs::Batch {
            dir: dir.to_path_buf(),
            name,
            users: args.users.unwrap_or(bytes / 130),
            bytes,
        };
        match component.as_str() {
            "plan" => {
                runs::plan(&batch, &base).await?;
            }
            "ingest-cluster" => {
                // Into the 3-primary cluster, which the caller flushes.
                let cluster = std::env::var(shared::config::REDIS_URL.name())?;
                let clustered = runs::config(&base, &cluster, true);
                let took = runs::ingest(&clustered, &batch, args.workers).await?;
                println!("ingest_ms={}", took.as_millis());
                println!("flip_ms={}", runs::flip_time(&clustered).await?.as_millis());
            }
            "load" => {
                // One more version beside what is there, as the environment
                // paces it; then the superseded ones go once past serve's
                // pointer cache, so no read meets a deleted version.
                let mut cfg = runs::config(&base, &standalone, false);
                cfg.target_latency = base.target_latency;
                let took = runs::ingest(&cfg, &batch, args.workers).await?;
                let r = shared::db::store::Redis::connect_checked(&cfg.redis).await?;
                let ds = shared::db::protocol::Dataset::new(&r, "bench")?;
                let retention = shared::config::Retention {
                    backups: 0,
                    grace: Duration::from_secs(3),
                    ..cfg.retention
                };
                shared::db::retention::gc(&ds, &retention).await?;
                println!("ingest_ms={}", took.as_millis());
            }
            _ => {
                runs::flushall(&standalone).await?;
                let took = runs::ingest(
                    &runs::config(&base, &standalone, false),
                    &batch,
                    args.workers,
                )
                .await?;
                println!("ingest_ms={}", took.as_millis());
                runs::flushall(&standalone).await?;
            }
        }
        println!("peak_rss_bytes={}", runs::peak_rss_bytes().unwrap_or(0));
        return Ok(());
    }
    let standalone =
        std::env::var("FS_TEST_STANDALONE_REDIS_URL").context("run through `make bench`")?;
    let cluster =
        std::env::var(shared::config::REDIS_URL.name()).context("run through `make bench`")?;
    let port = port_of(&standalone)?;
    let (users, requests) = if args.quick {
        (100_000, 20_000)
    } else {
        (1_000_000, 200_000)
    };
    let dir = std::env::temp_dir().join("feature-store-bench");
    let batch = runs::make_batch(&dir, users, 20)?;
    let mb = batch.bytes as f64 / 1e6;
    let single = runs::config(&base, &standalone, false);
    let mut rows = Vec::new();
    let per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let sample = runs::make_batch(&dir, users / 10, 20)?;

    // 1. Ingest into one Redis, against redis-cli --pipe of the same writes.
    // The two take turns, five times each, and each side's median counts:
    // on a shared machine one pair alone can be off by a tenth either way.
    if wants("ingest") {
        runs::flushall(&standalone).await?;
        let one = runs::ingest(&single, &batch, 1).await?;
        let resp = runs::resp_of_ingest(
            &single,
            &batch,
            "20261129T000000000Z-00000000000000000000000000000000-00000000",
        )
        .await?;
        let (mut ours_runs, mut pipe_runs) = (Vec::new(), Vec::new());
        for _ in 0..INGEST_TURNS {
            runs::flushall(&standalone).await?;
            ours_runs.push(runs::ingest(&single, &batch, args.workers).await?);
            runs::flushall(&standalone).await?;
            pipe_runs.push(runs::redis_cli_pipe(port, &resp)?);
        }
        let (ours, pipe) = (runs::median(&mut ours_runs), runs::median(&mut pipe_runs));
        let spread = |runs: &[Duration]| {
            let (lo, hi) = (runs[0], runs[runs.len() - 1]);
            format!(
                "{:.0}k–{:.0}k",
                per_s(users, hi) / 1e3,
                per_s(users, lo) / 1e3
            )
        };
        rows.push(Row::new(
            &format!(
                "ingest, standalone Redis ({users} users × 20 items, {mb:.0} MB), {} workers, median of {INGEST_TURNS} turns",
                args.workers
            ),
            format!(
                "{:.0} users/s, {:.1} MB/s (runs {}; 1 worker: {:.0} users/s)",
                per_s(users, ours),
                mb / ours.as_secs_f64(),
                spread(&ours_runs),
                per_s(users, one)
            ),
            format!("redis-cli --pipe: {:.0} users/s (runs {})", per_s(users, pipe), spread(&pipe_runs)),
            Some(pipe.as_secs_f64() / ours.as_secs_f64()),
            "≥ 0.8×",
        ));

        // 7. The original sample's approach: a round trip per user.
        runs::flushall(&standalone).await?;
        let one_by_one = runs::load_original_layout(&standalone, &sample, false).await?;
        let orig_load = runs::load_original_layout(&standalone, &batch, true).await?;
        rows.push(Row::new(
            "ingest vs the original sample (HSET round trip per user)",
            format!("{:.0} users/s", per_s(users, ours)),
            format!(
                "{:.0} users/s ({:.0} pipelined)",
                per_s(sample.users, one_by_one),
                per_s(users, orig_load)
            ),
            Some(per_s(users, ours) / per_s(sample.users, one_by_one)),
            "speedup",
        ));
    }

    // 4. Memory per user, against the raw bytes and the original layout, for
    // the data real batches carry: integer items; items with a float score
    // each (as pandas writes them); SKU strings with scores.
    if wants("memory") {
        let shapes = [
            ("20 integer items", batch.clone()),
            (
                "20 integer items + 20 scores (pandas)",
                runs::scored_batch(&dir, users, false)?,
            ),
            (
                "20 SKUs + 20 scores (pandas)",
                runs::scored_batch(&dir, users, true)?,
            ),
        ];
        for (shape, data) in &shapes {
            let (ours, capacity_rows) = capacity_check(&base, &standalone, data, shape).await?;
            let ours_bytes = ours as f64 / users as f64;
            runs::flushall(&standalone).await?;
            let empty = runs::used_memory(&standalone).await?;
            runs::load_original_layout(&standalone, data, true).await?;
            let orig_bytes = (runs::used_memory(&standalone).await? - empty) as f64 / users as f64;
            let (json, packed) = runs::value_bytes(data, &single.fields)?;
            rows.push(Row::new(
                &format!("memory per user (used_memory), {shape}"),
                format!(
                    "{ours_bytes:.0} B (raw JSON Lines {:.0} B; stored value {packed:.0} B, {json:.0} B before its numbers and item ids were packed)",
                    data.bytes as f64 / users as f64
                ),
                format!("one hash per user: {orig_bytes:.0} B"),
                Some(ours_bytes / orig_bytes),
                "≤ 0.5× (lower is better)",
            ));
            rows.extend(capacity_rows);
        }
    }

    // 3. Serving, in-process at 50 callers, against redis-benchmark GET.
    let mut handler_rps = None;
    if wants("serve") || wants("batch") {
        runs::flushall(&standalone).await?;
        runs::ingest(&single, &batch, 1).await?;
        let mut serving = single.clone();
        serving.pointer_ttl = Duration::from_millis(1000);
        if wants("serve") {
            let (rps, p50, p99, cmds) =
                runs::serve(&serving, &standalone, users, requests, 50).await?;
            handler_rps = Some(rps);
            let bench_rps = runs::redis_benchmark_get(port, requests, 50)?;
            rows.push(Row::new(
                "serve, in-process handler, 50 callers",
                format!(
                    "{rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                ),
                format!("redis-benchmark GET -c 50: {bench_rps:.0} req/s"),
                Some(rps / bench_rps),
                "≥ 0.8×",
            ));
            let (client_rps, client_p50, client_p99) =
                runs::client_get(&serving, users, requests, 50).await?;
            rows.push(Row::new(
                "client library get (Rust, in-process), 50 callers",
                format!(
                    "{client_rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                    client_p50.as_secs_f64() * 1e3,
                    client_p99.as_secs_f64() * 1e3
                ),
                format!("redis-benchmark GET -c 50: {bench_rps:.0} req/s"),
                Some(client_rps / bench_rps),
                "≥ 0.8×",
            ));
            // Heap allocations per request, process-wide (the Redis
            // client's tasks included), one caller.
            let n = 20_000;
            let (r, handler_allocs) =
                allocs::counted(runs::serve(&serving, &standalone, users, n, 1)).await;
            r?;
            let (r, client_allocs) = allocs::counted(runs::client_get(&serving, users, n, 1)).await;
            r?;
            rows.push(Row::new(
                "heap allocations per request: serve handler (API Gateway event in and out); client library get",
                format!(
                    "{:.1}; {:.1}",
                    handler_allocs as f64 / n as f64,
                    client_allocs as f64 / n as f64
                ),
                "the client library's get".into(),
                Some(handler_allocs as f64 / client_allocs as f64),
                "what the HTTP shapes add",
            ));
            rows.push(Row::new(
                "Redis commands per request",
                format!("{cmds:.3}"),
                "1 (one HGET)".into(),
                Some(cmds),
                "≤ 1.05",
            ));
            // Serving while a full-speed ingest loads the same Redis, against
            // the idle p99 above: batches of the same size ingested back to back,
            // each version dropped a few seconds after the next is live.
            // Full speed, the fixed cap, and paced by readers' latency.
            let cases = [
                ("full speed".to_string(), None, None),
                (
                    "FS_INGEST_MAX_USERS_PER_S=100000".to_string(),
                    Some(100_000u64),
                    None,
                ),
                (
                    "paced, FS_INGEST_TARGET_LATENCY_MS=auto".to_string(),
                    None,
                    Some(shared::config::LatencyTarget::Auto),
                ),
            ];
            let mut full_speed_rate = None;
            for (label, cap, target) in cases {
                // Ingest in processes of its own, as its Lambdas are: a batch
                // after another until serving's measure ends.
                let loading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
                let loader = {
                    let (file, flag, workers) =
                        (batch.dir.join(&batch.name), loading.clone(), args.workers);
                    let users = batch.users;
                    tokio::task::spawn_blocking(move || {
                        let mut loads = 0u32;
                        let started = std::time::Instant::now();
                        while flag.load(std::sync::atomic::Ordering::Relaxed) {
                            let out = std::process::Command::new(std::env::current_exe()?)
                                .env(
                                    shared::config::INGEST_MAX_USERS_PER_S.name(),
                                    cap.unwrap_or(0).to_string(),
                                )
                                .env(
                                    shared::config::INGEST_TARGET_LATENCY_MS.name(),
                                    if target.is_some() { "auto" } else { "off" },
                                )
                                .args([
                                    "--child",
                                    "load",
                                    "--workers",
                                    &workers.to_string(),
                                    "--users",
                                    &users.to_string(),
                                    "--file",
                                ])
                                .arg(&file)
                                .output()?;
                            anyhow::ensure!(
                                out.status.success(),
                                "load failed: {}",
                                String::from_utf8_lossy(&out.stderr)
                            );
                            loads += 1;
                        }
                        anyhow::Ok((loads, started.elapsed()))
                    })
                };
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (busy_rps, _, busy_p99, _) =
                    runs::serve(&serving, &standalone, users, requests, 50).await?;
                loading.store(false, std::sync::atomic::Ordering::Relaxed);
                let (loads, took) = loader.await??;
                let rate = f64::from(loads) * users as f64 / took.as_secs_f64();
                let p99_ratio = busy_p99.as_secs_f64() / p99.as_secs_f64();
                let paced = target.is_some();
                rows.push(Row::new(
                    &format!("serve while ingest loads the same Redis ({} workers, {label}), 50 callers", args.workers),
                    format!("{busy_rps:.0} req/s, p99 {:.2} ms; ingest {rate:.0} users/s ({loads} loads)", busy_p99.as_secs_f64() * 1e3),
                    format!("idle: {rps:.0} req/s, p99 {:.2} ms", p99.as_secs_f64() * 1e3),
                    Some(p99_ratio),
                    if paced { "p99 ≤ 2× idle" } else { "p99 against idle (no target)" },
                ));
                match (paced, full_speed_rate) {
                    (false, None) => full_speed_rate = Some(rate),
                    (true, Some(full)) => rows.push(Row::new(
                        &format!("a load's time, paced by latency ({} workers)", args.workers),
                        format!("{:.2} s a load ({rate:.0} users/s)", users as f64 / rate),
                        format!(
                            "full speed: {:.2} s a load ({full:.0} users/s)",
                            users as f64 / full
                        ),
                        Some(full / rate),
                        "≤ 1.5×",
                    )),
                    _ => {}
                }
            }

            // Serving while the pointer flips between two complete versions,
            // and while retention deletes a superseded one (UNLINK rounds).
            let r = shared::db::store::Redis::connect_checked(&single.redis).await?;
            let ds = shared::db::protocol::Dataset::new(&r, "bench")?;
            runs::ingest(&single, &batch, 1).await?;
            let older = ds.live().await?.context("a live version")?.version;
            runs::ingest(&single, &batch, 1).await?;
            let newer = ds.live().await?.context("a live version")?.version;
            let flips = 20;
            let (_, flip_p99, flip_reads, ()) = runs::serve_during(&serving, users, 50, async {
                for _ in 0..flips {
                    ds.rollback(&older).await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ds.promote(&newer, true).await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            })
            .await?;
            rows.push(Row::new(
                &format!("serve during flips ({} flips between two {users}-user versions in 2 s), 50 callers", flips * 2),
                format!("p99 {:.2} ms ({flip_reads} reads)", flip_p99.as_secs_f64() * 1e3),
                format!("idle: p99 {:.2} ms", p99.as_secs_f64() * 1e3),
                Some(flip_p99.as_secs_f64() / p99.as_secs_f64()),
                "p99 against idle",
            ));
            let (_, gc_p99, gc_reads, report) = runs::serve_during(&serving, users, 50, async {
                let retention = shared::config::Retention {
                    backups: 0,
                    grace: Duration::ZERO,
                    ..single.retention
                };
                Ok(shared::db::retention::gc(&ds, &retention).await?)
            })
            .await?;
            rows.push(Row::new(
                &format!("serve while retention deletes a {users}-user version, 50 callers"),
                format!(
                    "p99 {:.2} ms ({gc_reads} reads; {report:?})",
                    gc_p99.as_secs_f64() * 1e3
                ),
                format!("idle: p99 {:.2} ms", p99.as_secs_f64() * 1e3),
                Some(gc_p99.as_secs_f64() / p99.as_secs_f64()),
                "p99 against idle",
            ));
        }

        // Batch reads of 1 to 500 users: throughput at 50 callers (against
        // redis-benchmark sending the same HMGETs pipelined), latency at one
        // caller (against one caller's single-user reads).
        let buckets = runs::copy_buckets_for_reference(&standalone).await?;
        if wants("batch") {
            let py = runs::python_client(&standalone, users, buckets, 20_000)?;
            rows.push(Row::new(
                "Python client get (one user, rank 1), one caller",
                format!(
                    "p50 {:.3} ms, p99 {:.3} ms",
                    py.get_p50 * 1e3,
                    py.get_p99 * 1e3
                ),
                format!(
                    "redis-py HGET of one record: p50 {:.3} ms, p99 {:.3} ms",
                    py.hget_p50 * 1e3,
                    py.hget_p99 * 1e3
                ),
                Some(py.get_p99 / py.hget_p99),
                "p99 ≤ 1.5×",
            ));
            rows.push(Row::new(
                "Python client batch_get of 100 users, one caller",
                format!(
                    "{:.0} users/s, p99 {:.2} ms",
                    py.batch_users_per_s,
                    py.batch_p99 * 1e3
                ),
                format!(
                    "redis-py (hiredis) pipelining 100 HMGETs: {:.0} users/s, p99 {:.2} ms",
                    py.pipeline_users_per_s,
                    py.pipeline_p99 * 1e3
                ),
                Some(py.batch_users_per_s / py.pipeline_users_per_s),
                "≥ 1.0×",
            ));
        }
        let hmget = runs::redis_benchmark_hmget(port, buckets, requests * 20, 50, 100)?;
        let hmget_alone = runs::redis_benchmark_hmget(port, buckets, 100 * 2000, 1, 100)?;
        let (_, _, alone_p99, _) =
            runs::serve(&serving, &standalone, users, requests / 20, 1).await?;
        for size in [1usize, 10, 100, 500] {
            let n = (requests / size * 2).clamp(200, requests);
            let b = runs::batch_get(&serving, users, size, n, 50).await?;
            // One caller: enough requests that the p99 is not a handful of them.
            let one = runs::batch_get(&serving, users, size, (n / 10).max(2000), 1).await?;
            let (reference, ratio, target) = match size {
                100 => (
                    format!(
                        "redis-benchmark HMGET -P 100 -c 50: {:.0} users/s; -P 100 -c 1: p50 {:.2} ms, p99 {:.2} ms a pipeline",
                        hmget.rps,
                        hmget_alone.p50.as_secs_f64() * 1e3,
                        hmget_alone.p99.as_secs_f64() * 1e3
                    ),
                    Some(b.users_per_s / hmget.rps),
                    format!("≥ 0.8× users/s; one caller's p99 {:.1}× the single-user p99 of {:.2} ms (≤ 3×)", one.p99.as_secs_f64() / alone_p99.as_secs_f64(), alone_p99.as_secs_f64() * 1e3),
                ),
                _ => (
                    format!("one caller's single-user p99 {:.2} ms", alone_p99.as_secs_f64() * 1e3),
                    Some(one.p99.as_secs_f64() / alone_p99.as_secs_f64()),
                    "one caller's p99 against it".to_string(),
                ),
            };
            rows.push(Row::new(
                &format!("batch get of {size} users, in-process handler: 50 callers; one caller"),
                format!(
                    "{:.0} req/s, {:.0} users/s, {:.2} round trips/request; one caller: p50 {:.2} ms, p99 {:.2} ms",
                    b.rps,
                    b.users_per_s,
                    b.round_trips,
                    one.p50.as_secs_f64() * 1e3,
                    one.p99.as_secs_f64() * 1e3
                ),
                reference,
                ratio,
                &target,
            ));
        }
        if let (true, Some(rps)) = (wants("serve"), handler_rps) {
            runs::flushall(&standalone).await?;
            runs::load_original_layout(&standalone, &sample, true).await?;
            let reconnect =
                runs::reconnect_per_get(&standalone, sample.users, requests / 20).await?;
            rows.push(Row::new(
                "serve vs the original sample (connection per GET)",
                format!("{rps:.0} req/s"),
                format!("{reconnect:.0} req/s"),
                Some(rps / reconnect),
                "speedup",
            ));
        }
    }

    // Replaying deltas onto a version before its flip, against the flip's
    // own count of the version's users.
    if wants("deltas") {
        runs::flushall(&standalone).await?;
        runs::ingest(&single, &batch, args.workers).await?;
        for delta_users in [1_000u64, 10_000] {
            let (replay, written, count) = runs::replay_cost(&single, &batch, delta_users).await?;
            rows.push(Row::new(
                &format!(
                    "replay at flip: a delta of {delta_users} users onto a {users}-user version"
                ),
                format!(
                    "{:.1} ms ({:.2} ms per 1,000 users; {written} written)",
                    replay.as_secs_f64() * 1e3,
                    replay.as_secs_f64() * 1e6 / delta_users as f64
                ),
                format!(
                    "the flip's count of the version's users: {:.1} ms",
                    count.as_secs_f64() * 1e3
                ),
                Some(replay.as_secs_f64() / count.as_secs_f64()),
                "(proportional to the delta, not the version)",
            ));
        }
    }

    // 2. Ingest into the 3-primary cluster at 1, 2 and 4 workers.
    if wants("cluster") {
        let clustered = runs::config(&base, &cluster, true);
        let mut first = None;
        for workers in [1, 2, 4] {
            let took = runs::ingest(&clustered, &batch, workers).await?;
            let rate = per_s(users, took);
            let base_rate = *first.get_or_insert(rate);
            rows.push(Row::new(
                &format!("ingest, 3-primary cluster, {workers} worker(s)"),
                format!("{rate:.0} users/s"),
                "1 worker".into(),
                Some(rate / base_rate),
                "scaling",
            ));
            let r = shared::db::store::Redis::connect_checked(&clustered.redis).await?;
            let ds = shared::db::protocol::Dataset::new(&r, "bench")?;
            let mut retention = clustered.retention;
            retention.backups = 0;
            retention.grace = Duration::ZERO;
            shared::db::retention::gc(&ds, &retention).await?;
        }
    }

    // Batch reads on the 3-primary cluster: Redis round trips per request.
    if wants("cluster") {
        let mut clustered = runs::config(&base, &cluster, true);
        clustered.pointer_ttl = Duration::from_millis(1000);
        let b = runs::batch_get(&clustered, users, 100, 500, 10).await?;
        rows.push(Row::new(
            "batch get of 100 users, 3-primary cluster: Redis round trips per request",
            format!(
                "{:.2} ({:.0} req/s, p99 {:.2} ms)",
                b.round_trips,
                b.rps,
                b.p99.as_secs_f64() * 1e3
            ),
            "the primaries: 3".into(),
            Some(b.round_trips / 3.0),
            "≤ 1 (one pipeline per primary)",
        ));
    }

    // 8. Formats: the same users as Parquet (written by pyarrow, Snappy) and
    // as gzipped JSON Lines, against JSON Lines; turns as in 1.
    let rows_per_group = (users / 8).max(1).to_string();
    if wants("formats") {
        let python = runs::venv_python();
        let parquet = runs::converted(
            &batch,
            &format!("{}.parquet", batch.name),
            &python,
            &["-c", runs::PYARROW_WRITER, &rows_per_group],
        )?;
        let gz = runs::converted(&batch, &format!("{}.gz", batch.name), "gzip", &["-c"])?;
        let (mut jsonl_runs, mut parquet_runs) = (Vec::new(), Vec::new());
        for _ in 0..INGEST_TURNS {
            runs::flushall(&standalone).await?;
            jsonl_runs.push(runs::ingest(&single, &batch, args.workers).await?);
            runs::flushall(&standalone).await?;
            parquet_runs.push(runs::ingest(&single, &parquet, args.workers).await?);
        }
        let (jsonl, pq) = (
            runs::median(&mut jsonl_runs),
            runs::median(&mut parquet_runs),
        );
        rows.push(Row::new(
            &format!("ingest Parquet (pyarrow, Snappy, {rows_per_group}-row groups, {:.0} MB), {} workers, median of {INGEST_TURNS}", parquet.bytes as f64 / 1e6, args.workers),
            format!("{:.0} users/s", per_s(users, pq)),
            format!("JSON Lines of the same users: {:.0} users/s", per_s(users, jsonl)),
            Some(jsonl.as_secs_f64() / pq.as_secs_f64()),
            "≥ 1.0×",
        ));
        let (mut plain_runs, mut gz_runs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            runs::flushall(&standalone).await?;
            plain_runs.push(runs::ingest(&single, &batch, 1).await?);
            runs::flushall(&standalone).await?;
            gz_runs.push(runs::ingest(&single, &gz, 1).await?);
        }
        let (plain, gzt) = (runs::median(&mut plain_runs), runs::median(&mut gz_runs));
        rows.push(Row::new(
            &format!(
                "ingest gzipped JSON Lines ({:.0} MB, one chunk), 1 worker, median of 3",
                gz.bytes as f64 / 1e6
            ),
            format!("{:.0} users/s", per_s(users, gzt)),
            format!(
                "plain JSON Lines, 1 worker: {:.0} users/s",
                per_s(users, plain)
            ),
            Some(plain.as_secs_f64() / gzt.as_secs_f64()),
            "(decompression's share: 1 − ratio)",
        ));
        runs::flushall(&standalone).await?;
    }

    // 9. Scale: standalone ingest at 1M and at 10M users (a tenth of each in --quick).
    if wants("scale") {
        // As the template's ingest Lambda: rounds of two users a bucket at 10M.
        let single = Config {
            rounds_mib: deployed_rounds_mib()?,
            ..single.clone()
        };
        let small_users = if args.quick { 100_000 } else { 1_000_000 };
        let small = runs::make_batch(&dir, small_users, 20)?;
        let large = runs::make_batch(&dir, small_users * 10, 20)?;
        runs::flushall(&standalone).await?;
        runs::reset_stats(&standalone).await?;
        let small_t = runs::ingest(&single, &small, args.workers).await?;
        let small_stats = runs::command_stats(&standalone).await?;
        // redis-cli --pipe of the same writes at each size: whether Redis
        // itself slows as the keyspace grows.
        let version = "20261129T000000000Z-00000000000000000000000000000000-00000000";
        runs::flushall(&standalone).await?;
        let resp = runs::resp_of_ingest(&single, &small, version).await?;
        let small_pipe = runs::redis_cli_pipe(port, &resp)?;
        runs::flushall(&standalone).await?;
        let empty = runs::used_memory(&standalone).await?;
        runs::reset_stats(&standalone).await?;
        let large_t = runs::ingest(&single, &large, args.workers).await?;
        let large_stats = runs::command_stats(&standalone).await?;
        let used = runs::used_memory(&standalone).await? - empty;
        runs::flushall(&standalone).await?;
        let resp = runs::resp_of_ingest(&single, &large, version).await?;
        // At the larger size the two take turns, as in the ingest measure.
        let (mut ours_runs, mut pipe_runs) = (vec![large_t], Vec::new());
        for turn in 0..SCALE_TURNS {
            runs::flushall(&standalone).await?;
            pipe_runs.push(runs::redis_cli_pipe(port, &resp)?);
            if turn + 1 < SCALE_TURNS {
                runs::flushall(&standalone).await?;
                ours_runs.push(runs::ingest(&single, &large, args.workers).await?);
            }
        }
        runs::flushall(&standalone).await?;
        std::fs::remove_file(&resp)?;
        let (large_ours, large_pipe) = (runs::median(&mut ours_runs), runs::median(&mut pipe_runs));
        rows.push(Row::new(
            &format!(
                "ingest at scale against redis-cli --pipe of the same writes, {} users, median of {SCALE_TURNS} turns",
                large.users
            ),
            format!(
                "{:.0} users/s ({} users: {:.0})",
                per_s(large.users, large_ours),
                small.users,
                per_s(small.users, small_t)
            ),
            format!(
                "redis-cli --pipe: {:.0} users/s ({} users: {:.0}; {:.2}× from the smaller)",
                per_s(large.users, large_pipe),
                small.users,
                per_s(small.users, small_pipe),
                small_pipe.as_secs_f64() * large.users as f64
                    / (large_pipe.as_secs_f64() * small.users as f64)
            ),
            Some(large_pipe.as_secs_f64() / large_ours.as_secs_f64()),
            "≥ 0.9×",
        ));
        // fsctl capacity against the scored shapes at the larger size too
        // (the memory measure holds it against all three at the smaller).
        for (shape, skus) in [
            ("20 integer items + 20 scores (pandas)", false),
            ("20 SKUs + 20 scores (pandas)", true),
        ] {
            let data = runs::scored_batch(&dir, large.users, skus)?;
            rows.extend(capacity_check(&base, &standalone, &data, shape).await?.1);
        }
        // Where Redis spent its time at each size: calls per user and
        // microseconds per call of its busiest commands.
        let shape = |stats: &[(String, u64, f64)], users: u64| {
            stats
                .iter()
                .take(3)
                .map(|(name, calls, usec)| {
                    format!(
                        "{name} {:.3}/user × {usec:.2} µs",
                        *calls as f64 / users as f64
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(Row::new(
            &format!(
                "Redis's time per user at {} users against {} (INFO commandstats)",
                large.users, small.users
            ),
            shape(&large_stats, large.users),
            shape(&small_stats, small.users),
            None,
            "(where the time goes)",
        ));
        runs::flushall(&standalone).await?;
        // fsctl capacity's memory at this size, from a sample of the batch.
        rows.push(
            capacity_memory_row(&base, &large, "20 integer items", used)
                .await?
                .0,
        );
        rows.push(Row::new(
            &format!(
                "ingest at scale, standalone, {} workers: {} users ({:.2} GB)",
                args.workers,
                large.users,
                large.bytes as f64 / 1e9
            ),
            format!(
                "{:.0} users/s ({:.1} s)",
                per_s(large.users, large_t),
                large_t.as_secs_f64()
            ),
            format!(
                "{} users: {:.0} users/s",
                small.users,
                per_s(small.users, small_t)
            ),
            Some(per_s(large.users, large_t) / per_s(small.users, small_t)),
            "≈ 1 (linear cost)",
        ));
    }

    // The scale run: only when asked for by name.
    if args.only.iter().any(|o| o == "scale100m") {
        rows.extend(scale_run(&args, &base, &cluster, &dir).await?);
    }

    // Planning a folder batch grows with its file count, not its square:
    // the planner's time and S3 calls for 100 and 2,500 part files.
    if wants("folders") {
        let sizes = [100u64, 2500];
        let figures = runs::folder_planning(&base, &sizes).await?;
        let (small, large) = (&figures[0], &figures[1]);
        for f in &figures {
            rows.push(Row::new(
                &format!("planning a folder of {} part files (list, read each file's head, register, send its chunks), through the emulator", f.files),
                format!(
                    "{:.0} ms ({:.2} ms/file), {} S3 calls ({:.2}/file), {} chunk messages",
                    f.took.as_secs_f64() * 1e3,
                    f.ms_per_file(),
                    f.s3_calls,
                    f.s3_calls_per_file(),
                    f.chunks
                ),
                format!(
                    "the emulator's S3 alone for the listing and {} reads: {:.0} ms",
                    f.files,
                    f.s3_alone.as_secs_f64() * 1e3
                ),
                Some(f.s3_alone.as_secs_f64() / f.took.as_secs_f64()),
                "→ 1 (all of it S3's time)",
            ));
        }
        rows.push(Row::new(
            "folder planning per file, 2,500 files against 100",
            format!(
                "{:.2} ms/file, {:.2} S3 calls/file",
                large.ms_per_file(),
                large.s3_calls_per_file()
            ),
            format!(
                "{:.2} ms/file, {:.2} S3 calls/file",
                small.ms_per_file(),
                small.s3_calls_per_file()
            ),
            Some(small.ms_per_file() / large.ms_per_file()),
            "≈ 1 or more (linear: not the square of the file count)",
        ));
    }

    // 5. Freshness: a 1,000-user batch from upload to live, through the emulator.
    if wants("freshness") || wants("pipeline") {
        let folder = batch.dir.join(format!("{}.spark", batch.name));
        if !folder.join("_SUCCESS").exists() {
            let python = runs::venv_python();
            runs::converted(
                &batch,
                &format!("{}.spark.done", batch.name),
                &python,
                &[
                    "-c",
                    runs::PYARROW_WRITER,
                    &rows_per_group,
                    "16",
                    folder.to_str().context("path")?,
                ],
            )?;
        }
        let f = runs::pipeline(
            &runs::config(&base, &cluster, true),
            &batch,
            Some(&folder),
            if args.quick { 3 } else { 5 },
        )
        .await?;
        rows.push(Row::new(
            "upload to live, 1,000 users, through the S3/SQS emulator",
            format!("{:.0} ms", f.fresh.as_secs_f64() * 1e3),
            format!(
                "one PUT + one SQS round trip: {:.0} ms",
                f.hops.as_secs_f64() * 1e3
            ),
            Some(f.hops.as_secs_f64() / f.fresh.as_secs_f64()),
            "(the pipeline's 4 hops and 2 pollers)",
        ));
        for (size, took) in &f.deltas {
            rows.push(Row::new(
                &format!("upload to visible, a delta of {size} users onto the live version, through the S3/SQS emulator"),
                format!("{:.0} ms", took.as_secs_f64() * 1e3),
                format!("one PUT + one SQS round trip: {:.0} ms", f.hops.as_secs_f64() * 1e3),
                Some(took.as_secs_f64() / f.hops.as_secs_f64()),
                "≤ 2× (lower is better)",
            ));
        }
        let moto = f.large_put + f.large_gets;
        rows.push(Row::new(
            &format!("upload to live, {users} users ({mb:.0} MB), through the S3/SQS emulator, 2 ingest pollers, cluster"),
            format!("{:.2} s ({:.0} users/s)", f.large.as_secs_f64(), per_s(users, f.large)),
            format!("the emulator's PUT {:.2} s + chunk GETs {:.2} s", f.large_put.as_secs_f64(), f.large_gets.as_secs_f64()),
            Some(moto.as_secs_f64() / f.large.as_secs_f64()),
            "the emulator's share (lower is better)",
        ));
        if let Some((took, files)) = f.folder {
            // An empty _SUCCESS (Spark's) plans once the folder has been
            // quiet this long: the wait is the setting's, not the work's.
            let settle = base.folders.settle;
            let work = took.saturating_sub(settle);
            rows.push(Row::new(
                &format!("upload to live, the same users as {files} Parquet part files + an empty _SUCCESS, through the emulator, cluster"),
                format!(
                    "{:.2} s, of which {:.0} s the wait for the folder to settle (FS_FOLDER_SETTLE_S): {:.2} s of work ({:.0} users/s)",
                    took.as_secs_f64(),
                    settle.as_secs_f64(),
                    work.as_secs_f64(),
                    per_s(users, work)
                ),
                format!("one JSON Lines file: {:.2} s", f.large.as_secs_f64()),
                Some(f.large.as_secs_f64() / work.as_secs_f64()),
                "(higher is faster)",
            ));
        }
        match (f.wrk, f.wrk_fresh) {
            (Some(w), fresh) => {
                rows.push(Row::new(
                    "serve through the local HTTP gateway (wrk, 50 kept-alive connections)",
                    format!(
                        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} of {} dropped",
                        w.rps,
                        w.p50.as_secs_f64() * 1e3,
                        w.p99.as_secs_f64() * 1e3,
                        w.dropped,
                        w.requests
                    ),
                    handler_rps.map_or("in-process handler: not run".into(), |r| {
                        format!("in-process handler: {r:.0} req/s")
                    }),
                    handler_rps.map(|r| w.rps / r),
                    "(HTTP, the gateway and wrk share the 2 cores)",
                ));
                if let Some(c) = fresh {
                    rows.push(Row::new(
                        "the same, a new connection per request (wrk, Connection: close)",
                        format!(
                            "{:.0} req/s, p99 {:.2} ms, {} of {} dropped",
                            c.rps,
                            c.p99.as_secs_f64() * 1e3,
                            c.dropped,
                            c.requests
                        ),
                        format!("kept-alive: {:.0} req/s", w.rps),
                        Some(c.rps / w.rps),
                        "dropped must be 0",
                    ));
                }
            }
            (None, _) => println!("wrk is not installed: the HTTP gateway row is left out"),
        }
    }

    // 6. Bounded memory: planner and ingest on a large JSON document.
    if wants("rss") {
        let big_users = if args.quick { 1_500_000 } else { 15_500_000 };
        let big = runs::make_batch_as(&dir, big_users, 20, fsctl::generate::Layout::Array)?;
        let plan_rss = child_peak_rss("plan", &big.path())?;
        let ingest_rss = child_peak_rss("ingest", &big.path())?;
        runs::flushall(&standalone).await?;
        // With the rounds' memory the template gives the ingest Lambda.
        let deployed = deployed_rounds_mib()?;
        let deployed_rss = child_run("ingest", &big.path(), None, 2, Some(deployed))?
            .get("peak_rss_bytes")
            .and_then(|v| v.parse::<u64>().ok())
            .context("no peak RSS reported")?;
        runs::flushall(&standalone).await?;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        rows.push(Row::new(
            &format!(
                "peak memory (RSS) on a {:.2} GB batch, 2 ingest workers",
                big.bytes as f64 / 1e9
            ),
            format!(
                "planner {:.0} MiB, ingest {:.0} MiB ({:.0} MiB with the template's FS_INGEST_ROUNDS_MIB={deployed})",
                mib(plan_rss),
                mib(ingest_rss),
                mib(deployed_rss)
            ),
            "limit 128 MiB".into(),
            Some(mib(plan_rss.max(ingest_rss)) / 128.0),
            "< 1 (lower is better)",
        ));

        // The same bound for the formats read whole: a Parquet file of
        // 128 MiB row groups (bounded by a row group), and the document gzipped.
        let pq_users = if args.quick { 1_200_000 } else { 12_000_000 };
        let pq_name = format!("random-{pq_users}x20.parquet");
        let pq_path = dir.join(&pq_name);
        if !pq_path.exists() {
            let status = std::process::Command::new(runs::venv_python())
                .args(["-c", runs::PYARROW_LARGE, &pq_users.to_string(), "128"])
                .arg(&pq_path)
                .status()?;
            anyhow::ensure!(status.success(), "pyarrow could not write {pq_name}");
        }
        let pq_bytes = std::fs::metadata(&pq_path)?.len();
        let pq_rss = child_peak_rss("ingest", &pq_path)?;
        let gz = runs::converted(&big, &format!("{}.gz", big.name), "gzip", &["-1", "-c"])?;
        let gz_rss = child_peak_rss("ingest", &gz.path())?;
        runs::flushall(&standalone).await?;
        rows.push(Row::new(
            &format!(
                "ingest peak memory (RSS): {:.2} GB Parquet in 128 MiB row groups; the {:.2} GB document gzipped ({:.2} GB)",
                pq_bytes as f64 / 1e9,
                big.bytes as f64 / 1e9,
                gz.bytes as f64 / 1e9
            ),
            format!("Parquet {:.0} MiB, gzip {:.0} MiB", mib(pq_rss), mib(gz_rss)),
            "the row group: 128 MiB".into(),
            Some(mib(pq_rss) / 128.0),
            "bounded by the row group, not the file",
        ));
    }

    let report = Report {
        machine: machine(),
        date: String::from_utf8_lossy(
            &std::process::Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d %H:%M UTC")
                .output()?
                .stdout,
        )
        .trim()
        .to_string(),
        mode: if args.quick {
            "quick".into()
        } else {
            "full".into()
        },
        rows,
    };
    println!("\n{}", report.markdown());
    // The scale run has results of its own: it is not part of a full run.
    let stem = if args.only.iter().any(|o| o == "scale100m") {
        "scale100m"
    } else {
        "latest"
    };
    report.write(&args.out, stem)?;
    println!(
        "written to {0}/{stem}.json and {0}/{stem}.md",
        args.out.display()
    );
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let redis = String::from_utf8_lossy(
        &std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .split_whitespace()
    .nth(2)
    .unwrap_or("")
    .to_string();
    format!(
        "{cores} cores, {cpu}, Redis {}",
        redis.trim_start_matches("v=")
    )
}

/// Loads `data` into the flushed standalone Redis with one worker and sets
/// fsctl capacity's predictions for it, from a sample, against what the
/// load measured: its `used_memory` and its time. Returns the memory.
async fn capacity_check(
    base: &Config,
    standalone: &str,
    data: &runs::Batch,
    shape: &str,
) -> Result<(u64, Vec<Row>)> {
    runs::flushall(standalone).await?;
    let empty = runs::used_memory(standalone).await?;
    let load = runs::ingest(&runs::config(base, standalone, false), data, 1).await?;
    let used = runs::used_memory(standalone).await? - empty;
    runs::flushall(standalone).await?;
    let (memory, sample) = capacity_memory_row(base, data, shape, used).await?;
    let figures = fsctl::capacity::SampleFigures::of(
        &sample.users,
        sample.bytes,
        sample.files,
        &sample.format,
        sample.bad,
    );
    let tables = fsctl::capacity::Tables::bundled()?;
    let (per_worker, _) = fsctl::capacity::rates_for(&tables, figures.batch_bytes_per_user)?;
    let users = data.users as f64;
    let time = Row::new(
        &format!(
            "fsctl capacity's load time, {shape}, {} users, 1 worker, standalone",
            data.users
        ),
        format!(
            "predicted {:.1} s ({per_worker:.0} users/s)",
            users / per_worker
        ),
        format!(
            "measured {:.1} s ({:.0} users/s)",
            load.as_secs_f64(),
            users / load.as_secs_f64()
        ),
        Some(users / per_worker / load.as_secs_f64()),
        "≈ 1 (rates in infra/capacity/rates.csv)",
    );
    Ok((used, vec![memory, time]))
}

/// fsctl capacity's prediction of `data`'s `used_memory` (standalone Redis)
/// from a 100,000-user sample of it, against `measured`; with the sample.
async fn capacity_memory_row(
    base: &Config,
    data: &runs::Batch,
    shape: &str,
    measured: u64,
) -> Result<(Row, ingest::sample::Sample)> {
    let sample = ingest::sample::read(base, &data.path(), 100_000).await?;
    let predicted = shared::sizing::version_bytes(
        &sample.users,
        data.users,
        base.users_per_bucket,
        "bench",
        false,
        shared::sizing::HashLimits::default(),
    );
    let row = Row::new(
        &format!(
            "fsctl capacity's memory, {shape}, {} users, from a 100,000-user sample",
            data.users
        ),
        format!("predicted {:.1} MB", predicted.bytes / 1e6),
        format!("measured used_memory: {:.1} MB", measured as f64 / 1e6),
        Some(predicted.bytes / measured as f64),
        "0.9–1.1×",
    );
    Ok((row, sample))
}

/// What one load of the scale run measured.
struct Load {
    users: u64,
    bytes: u64,
    took: Duration,
    flip: Duration,
    rss: u64,
    /// `FS_INGEST_ROUNDS_MIB` of the load.
    rounds_mib: u64,
    /// `used_memory` over the primaries, against the flushed cluster.
    used: u64,
    hsets_per_user: f64,
    /// Redis's mean time per HSET, over the primaries.
    usec_per_hset: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.users as f64 / self.took.as_secs_f64()
    }
}

/// One load of `batch` as a new version of `bench` into the cluster, by the
/// ingest handlers in a process of their own (for its peak RSS), with
/// `FS_INGEST_ROUNDS_MIB` as `fsctl capacity` sets it for the batch.
async fn load(
    args: &Args,
    base: &Config,
    cluster: &str,
    batch: &runs::Batch,
    empty: u64,
) -> Result<Load> {
    let sample = ingest::sample::read(base, &batch.path(), 20_000).await?;
    let buckets = shared::keys::bucket_count(batch.users, base.users_per_bucket);
    let rounds_mib = fsctl::capacity::rounds_mib(&sample.users, buckets);
    for url in cluster.split(',') {
        runs::reset_stats(url).await?;
    }
    let out = child_run(
        "ingest-cluster",
        &batch.path(),
        Some(batch.users),
        args.workers,
        Some(rounds_mib as usize),
    )?;
    let num = |k: &str| -> Result<u64> {
        out.get(k)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the ingest run reported no {k}"))
    };
    let (mut hsets, mut usec) = (0, 0.0);
    for url in cluster.split(',') {
        for (_, calls, per_call) in runs::command_stats(url)
            .await?
            .iter()
            .filter(|(name, ..)| name == "hset")
        {
            hsets += calls;
            usec += *calls as f64 * per_call;
        }
    }
    Ok(Load {
        users: batch.users,
        bytes: batch.bytes,
        took: Duration::from_millis(num("ingest_ms")?),
        flip: Duration::from_millis(num("flip_ms")?),
        rss: num("peak_rss_bytes")?,
        rounds_mib,
        used: runs::used_memory_nodes(cluster)
            .await?
            .saturating_sub(empty),
        hsets_per_user: hsets as f64 / batch.users as f64,
        usec_per_hset: usec / hsets.max(1) as f64,
    })
}

/// The scale run (`--only scale100m`, never part of a full run): 1M, 10M
/// and 100M users × 20 items (a hundredth of each with `--quick`), each
/// loaded through the ingest handlers into the flushed 3-primary cluster,
/// with the version's memory, the ingest process's peak RSS, the flip's own
/// time and serve's latency against it; then the largest once more as a
/// nightly refresh, with its first load live, so that two versions are in
/// Redis through the flip. The generated batches stay in the temp folder
/// for the next run (the largest is 13 GB).
async fn scale_run(
    args: &Args,
    base: &Config,
    cluster: &str,
    dir: &std::path::Path,
) -> Result<Vec<Row>> {
    let sizes: [u64; 3] = if args.quick {
        [10_000, 100_000, 1_000_000]
    } else {
        [1_000_000, 10_000_000, 100_000_000]
    };
    let first_node = cluster.split(',').next().context("a cluster node")?;
    let clustered = runs::config(base, cluster, true);
    let requests = if args.quick { 20_000 } else { 200_000 };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut loads = Vec::new();
    let mut serves = Vec::new();
    for &n in &sizes {
        let started = std::time::Instant::now();
        let batch = runs::make_batch(dir, n, 20)?;
        println!(
            "scale run: {n} users ({:.2} GB) ready in {:.0} s",
            batch.bytes as f64 / 1e9,
            started.elapsed().as_secs_f64()
        );
        runs::flush_nodes(cluster).await?;
        let empty = runs::used_memory_nodes(cluster).await?;
        let first = load(args, base, cluster, &batch, empty).await?;
        println!(
            "scale run: {n} users loaded in {:.1} s",
            first.took.as_secs_f64()
        );
        serves.push(runs::serve(&clustered, first_node, n, requests, 50).await?);
        if n == sizes[2] {
            // The nightly refresh: the same users again as a newer version.
            let again = load(args, base, cluster, &batch, empty).await?;
            println!(
                "scale run: {n} users refreshed in {:.1} s",
                again.took.as_secs_f64()
            );
            loads.push(first);
            loads.push(again);
        } else {
            loads.push(first);
        }
    }
    runs::flush_nodes(cluster).await?;
    let mut rows = Vec::new();
    let one = &loads[0];
    for l in &loads[..3] {
        rows.push(Row::new(
            &format!(
                "scale run: {} users × 20 items ({:.2} GB) into the 3-primary cluster, {} workers",
                l.users,
                l.bytes as f64 / 1e9,
                args.workers
            ),
            format!(
                "{:.0} users/s ({:.1} s), {:.3} HSETs/user × {:.2} µs; used_memory {:.0} B/user ({:.2} GB); ingest peak RSS {:.0} MiB (FS_INGEST_ROUNDS_MIB={} from fsctl capacity); flip {:.0} ms",
                l.rate(),
                l.took.as_secs_f64(),
                l.hsets_per_user,
                l.usec_per_hset,
                l.used as f64 / l.users as f64,
                l.used as f64 / 1e9,
                mib(l.rss),
                l.rounds_mib,
                l.flip.as_secs_f64() * 1e3
            ),
            format!("{} users: {:.0} users/s", one.users, one.rate()),
            Some(l.rate() / one.rate()),
            "≥ 0.8× at the largest",
        ));
    }
    let (big, again) = (&loads[2], &loads[3]);
    rows.push(Row::new(
        &format!(
            "scale run: the {}-user batch again as a refresh (the first live: two versions in Redis)",
            big.users
        ),
        format!(
            "{:.0} users/s ({:.1} s); used_memory with both {:.2} GB; ingest peak RSS {:.0} MiB; flip {:.0} ms",
            again.rate(),
            again.took.as_secs_f64(),
            again.used as f64 / 1e9,
            mib(again.rss),
            again.flip.as_secs_f64() * 1e3
        ),
        format!("into the empty cluster: {:.0} users/s", big.rate()),
        Some(again.rate() / big.rate()),
        "≈ 1",
    ));
    let (_, p50_one, p99_one, _) = serves[0];
    for (l, (rps, p50, p99, _)) in loads[..3].iter().zip(&serves) {
        rows.push(Row::new(
            &format!(
                "scale run: serve against the live {}-user version, cluster, 50 callers",
                l.users
            ),
            format!(
                "{rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ),
            format!(
                "{} users: p50 {:.2} ms, p99 {:.2} ms",
                one.users,
                p50_one.as_secs_f64() * 1e3,
                p99_one.as_secs_f64() * 1e3
            ),
            Some(p99.as_secs_f64() / p99_one.as_secs_f64()),
            "p99 ≈ 1 (lower is better)",
        ));
    }
    Ok(rows)
}
