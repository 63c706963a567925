//! `fsctl capacity [SAMPLE] --users N`: what to deploy for a nightly refresh
//! of N users, and what it costs. The bytes per user are our encoder's own
//! (the sample read and packed as ingest would store it, or records made
//! from `--items`, `--skus` and `--fields`), turned into Redis memory by the
//! listpack model ([`shared::sizing`]); node types, prices and the measured
//! write rates come from `infra/capacity/` (dated there). The bench holds the
//! predictions against `used_memory` and load times.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shared::sizing::{self, HashLimits, UserSize};

use crate::ctx::{print_json, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// A sample of the batch: a file, or a folder batch's folder, in any
    /// supported format. Without one, records are made from `--items`,
    /// `--skus` and `--fields`.
    sample: Option<PathBuf>,
    /// Users in each refresh.
    #[arg(long)]
    users: u64,
    /// Without a sample: items per user.
    #[arg(long, default_value_t = 20)]
    items: usize,
    /// Without a sample: item ids as SKUs (`B0` and 8 digits), not integers.
    #[arg(long)]
    skus: bool,
    /// Without a sample: fields holding a float per item (a score), by name.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Backup versions kept (default: FS_BACKUPS).
    #[arg(long)]
    backups: Option<u32>,
    /// Replicas per shard.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// How long a refresh may take, loading included (`45m`, `2h`, `600s`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    deadline: Duration,
    /// Single reads per second through the API, for the monthly cost.
    #[arg(long, default_value_t = 100.0)]
    requests_per_s: f64,
    /// Refreshes a day.
    #[arg(long, default_value_t = 1.0)]
    refreshes_per_day: f64,
    /// Users of the sample read at most.
    #[arg(long, default_value_t = 100_000)]
    sample_users: usize,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (sizes, sample) = match &args.sample {
        Some(path) => {
            let s = ingest::sample::read(&ctx.config, path, args.sample_users)
                .await
                .with_context(|| format!("reading the sample {}", path.display()))?;
            if s.users.is_empty() {
                bail!(
                    "the sample {} holds no user that would be stored",
                    path.display()
                );
            }
            let described = SampleFigures::of(&s.users, s.bytes, s.files, &s.format, s.bad);
            (s.users, described)
        }
        None => {
            let (users, text) =
                made_records(&ctx.config, args.items, args.skus, &args.fields, 2000)?;
            let described = SampleFigures::of(&users, text, 0, "made", 0);
            (users, described)
        }
    };
    let input = Input {
        users: args.users,
        backups: args.backups.unwrap_or(ctx.config.retention.backups),
        replicas: args.replicas,
        deadline: args.deadline,
        requests_per_s: args.requests_per_s,
        refreshes_per_day: args.refreshes_per_day,
        users_per_bucket: ctx.config.users_per_bucket,
    };
    let plan = plan(&sizes, &sample, &input, &Tables::bundled()?)?;
    if ctx.json {
        return print_json(&plan);
    }
    print_plan(&plan);
    Ok(())
}

/// "90m", "2h", "600s", "600".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, scale) = match s.char_indices().last() {
        Some((i, 'h')) => (&s[..i], 3600.0),
        Some((i, 'm')) => (&s[..i], 60.0),
        Some((i, 's')) => (&s[..i], 1.0),
        _ => (s, 1.0),
    };
    match n.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!(
            "expected a duration like 45m, 2h or 600s, got {s:?}"
        )),
    }
}

/// `n` records made as a batch would carry them, stored as ingest stores
/// them: integer ids, `items` items (integers or SKUs), a float per item for
/// each of `fields` (ten digits, as pandas writes them); with the bytes of
/// their JSON Lines text.
fn made_records(
    config: &shared::config::Config,
    items: usize,
    skus: bool,
    fields: &[String],
    n: u64,
) -> Result<(Vec<UserSize>, u64)> {
    let mut encoder = shared::record::Encoder::new(&config.fields, items.max(1));
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = Vec::new();
    let mut text_bytes = 0;
    for user in 1..=n {
        let list: Vec<String> = (0..items)
            .map(|_| match skus {
                true => format!("\"B0{:08}\"", next() % 100_000_000),
                false => (next() % 100_000_000).to_string(),
            })
            .collect();
        let mut text = format!(
            "{{\"{}\":{user},\"{}\":[{}]",
            config.fields.user,
            config.fields.items,
            list.join(",")
        );
        for f in fields {
            let scores: Vec<String> = (0..items)
                .map(|_| {
                    let mut s = format!("0.{:010}", next() % 10_000_000_000);
                    while s.ends_with('0') && !s.ends_with(".0") {
                        s.pop();
                    }
                    s
                })
                .collect();
            text.push_str(&format!(",\"{f}\":[{}]", scores.join(",")));
        }
        text.push('}');
        text_bytes += text.len() as u64 + 1;
        buf.clear();
        let id = encoder.encode(&text, &mut buf)?.into_owned();
        shared::record::compact(&mut buf, 0);
        out.push(UserSize {
            id,
            value_len: buf.len() as u64,
        });
    }
    Ok((out, text_bytes))
}

/// What the sample was.
#[derive(Debug, Clone, Serialize)]
pub struct SampleFigures {
    pub users: u64,
    pub files: usize,
    pub format: String,
    pub bad_records: u64,
    /// Mean stored value, in bytes, and mean user id.
    pub value_bytes: f64,
    pub id_bytes: f64,
    /// Batch bytes per user (the files', or the JSON Lines text's when made).
    pub batch_bytes_per_user: f64,
}

impl SampleFigures {
    pub fn of(users: &[UserSize], bytes: u64, files: usize, format: &str, bad: u64) -> Self {
        let n = users.len().max(1) as f64;
        SampleFigures {
            users: users.len() as u64,
            files,
            format: format.to_string(),
            bad_records: bad,
            value_bytes: users.iter().map(|u| u.value_len as f64).sum::<f64>() / n,
            id_bytes: users.iter().map(|u| u.id.len() as f64).sum::<f64>() / n,
            batch_bytes_per_user: bytes as f64 / n,
        }
    }
}

/// What is planned for.
#[derive(Debug, Clone)]
pub struct Input {
    pub users: u64,
    pub backups: u32,
    pub replicas: u32,
    pub deadline: Duration,
    pub requests_per_s: f64,
    pub refreshes_per_day: f64,
    pub users_per_bucket: u32,
}

/// One ElastiCache node type.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct NodeType {
    pub node_type: String,
    pub memory_gib: f64,
    pub vcpus: u32,
    pub usd_per_hour: f64,
}

/// The tables in `infra/capacity/`.
#[derive(Debug, Clone)]
pub struct Tables {
    pub nodes: Vec<NodeType>,
    pub rates: std::collections::HashMap<String, f64>,
}

impl Tables {
    /// The tables built into fsctl.
    pub fn bundled() -> Result<Self> {
        Self::parse(
            include_str!("../../infra/capacity/node-types.csv"),
            include_str!("../../infra/capacity/rates.csv"),
        )
    }

    pub fn parse(nodes: &str, rates: &str) -> Result<Self> {
        let reader = |text: &'static str| {
            csv::ReaderBuilder::new()
                .comment(Some(b'#'))
                .from_reader(text.as_bytes())
        };
        let nodes = reader(leak(nodes))
            .deserialize()
            .collect::<Result<Vec<NodeType>, _>>()
            .context("infra/capacity/node-types.csv")?;
        #[derive(serde::Deserialize)]
        struct Rate {
            name: String,
            value: f64,
        }
        let rates = reader(leak(rates))
            .deserialize::<Rate>()
            .map(|r| r.map(|r| (r.name, r.value)))
            .collect::<Result<_, _>>()
            .context("infra/capacity/rates.csv")?;
        Ok(Tables { nodes, rates })
    }

    fn rate(&self, name: &str) -> Result<f64> {
        self.rates
            .get(name)
            .copied()
            .with_context(|| format!("infra/capacity/rates.csv has no {name}"))
    }
}

/// The CSV reader wants text that outlives it; the tables are small and read once.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// ElastiCache's default `reserved-memory-percent`.
pub const RESERVED_MEMORY: f64 = 0.25;
/// Redis's per-node connection limit (`maxclients` on ElastiCache).
pub const MAX_CONNECTIONS: u64 = 65_000;
/// Connections per primary besides ingest's: serve's reserved concurrency,
/// the planner's maximum, the janitor, an operator.
const OTHER_CONNECTIONS: u64 = 200 + 5 + 1 + 1;
const HOURS_A_MONTH: f64 = 730.0;

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub sample: SampleFigures,
    pub users: u64,
    pub memory: Memory,
    pub cache: Cache,
    pub ingest: Ingest,
    pub monthly_usd: Monthly,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// `used_memory` per user of one version, as the model predicts it.
    pub bytes_per_user: f64,
    pub version_bytes: f64,
    /// Versions in memory at the flip: live, backups, and the one loading.
    pub versions_held: u32,
    pub data_bytes: f64,
    /// Share of buckets that would be hashtables (values over the listpack limit).
    pub hashtable_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cache {
    pub node_type: String,
    pub shards: u32,
    pub replicas_per_shard: u32,
    pub nodes: u32,
    /// Usable bytes per shard: its memory less the reserved 25% and a 10%
    /// headroom.
    pub usable_bytes_per_shard: f64,
    /// Share of the usable memory the data takes.
    pub fill: f64,
    /// Why this many shards: memory or write rate.
    pub bound_by: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    pub workers: u32,
    pub users_per_s_per_worker: f64,
    pub users_per_s_per_shard: f64,
    pub refresh_seconds: f64,
    pub deadline_seconds: f64,
    pub connections_per_primary: u64,
    pub connection_limit: u64,
    /// `FS_INGEST_ROUNDS_MIB` for rounds of two users a bucket (never
    /// below the default; at most 4096).
    pub rounds_mib: u64,
}

/// `FS_INGEST_ROUNDS_MIB` that lets a round hold
/// [`ingest::write::ROUND_USERS_PER_BUCKET`] users for each of `buckets`,
/// with users like `sizes` (their values, ids and round entries), for the
/// round filling and those being written.
pub fn rounds_mib(sizes: &[UserSize], buckets: u32) -> u64 {
    use ingest::write::{Round, ROUNDS_IN_FLIGHT, ROUND_USERS_PER_BUCKET};
    let per_user = sizes
        .iter()
        .map(|u| (u.value_len + u.id.len() as u64 + Round::ENTRY_BYTES as u64) as f64)
        .sum::<f64>()
        / sizes.len().max(1) as f64;
    let round = per_user * (ROUND_USERS_PER_BUCKET as f64) * f64::from(buckets);
    let mib = (round * (1 + ROUNDS_IN_FLIGHT) as f64 / f64::from(1u32 << 20)).ceil() as u64;
    let setting = &shared::config::INGEST_ROUNDS_MIB;
    let default = setting
        .var
        .default
        .and_then(|d| (setting.parse)(d).ok())
        .unwrap_or(0) as u64;
    mib.clamp(default, shared::config::MAX_ROUNDS_MIB as u64)
}

#[derive(Debug, Clone, Serialize)]
pub struct Monthly {
    pub cache: f64,
    pub lambda: f64,
    pub api: f64,
    pub sqs: f64,
    pub s3: f64,
    pub total: f64,
}

/// Worker and shard write rates for users of `batch_bytes` bytes of batch
/// text each (reading and parsing the text is most of a worker's time):
/// measured at two sizes, a straight line in time per user between them.
pub fn rates_for(tables: &Tables, batch_bytes: f64) -> Result<(f64, f64)> {
    let (small_rate, small_bytes) = (
        tables.rate("worker_users_per_s")?,
        tables.rate("worker_batch_bytes")?,
    );
    let (large_rate, large_bytes) = (
        tables.rate("worker_users_per_s_large")?,
        tables.rate("worker_batch_bytes_large")?,
    );
    let (t_small, t_large) = (1.0 / small_rate, 1.0 / large_rate);
    let slope = (t_large - t_small) / (large_bytes - small_bytes);
    let t = (t_small + slope * (batch_bytes - small_bytes)).max(t_small * 0.5);
    // A primary slows with value size as a worker does.
    let shard = tables.rate("shard_users_per_s")? * t_small / t;
    Ok((1.0 / t, shard))
}

/// Plans for `input` with users like `sizes`.
pub fn plan(
    sizes: &[UserSize],
    sample: &SampleFigures,
    input: &Input,
    tables: &Tables,
) -> Result<Plan> {
    let version = sizing::version_bytes(
        sizes,
        input.users,
        input.users_per_bucket,
        "recommendations",
        true,
        HashLimits::default(),
    );
    let held = 2 + input.backups;
    let data = version.bytes * f64::from(held);
    let (per_worker, per_shard) = rates_for(tables, sample.batch_bytes_per_user)?;
    let deadline = input.deadline.as_secs_f64();
    let users = input.users as f64;
    // Shards for the write rate the deadline needs.
    let rate_shards = (users / deadline / per_shard).ceil().max(1.0) as u32;
    let mut best: Option<(f64, Cache)> = None;
    for node in &tables.nodes {
        let usable = node.memory_gib
            * f64::from(1u32 << 30)
            * (1.0 - RESERVED_MEMORY)
            * shared::db::memory::FILL;
        let mem_shards = (data / usable).ceil().max(1.0) as u32;
        let shards = mem_shards.max(rate_shards);
        let nodes = shards * (1 + input.replicas);
        // A burstable node runs out of CPU credits under a nightly write
        // burst spread over many of them: one shard of it at most.
        if nodes > 500 || (node.node_type.starts_with("cache.t") && shards > 1) {
            continue;
        }
        let cost = f64::from(nodes) * node.usd_per_hour * HOURS_A_MONTH;
        let cache = Cache {
            node_type: node.node_type.clone(),
            shards,
            replicas_per_shard: input.replicas,
            nodes,
            usable_bytes_per_shard: usable,
            fill: data / (usable * f64::from(shards)),
            bound_by: if mem_shards >= rate_shards {
                "memory"
            } else {
                "write rate"
            },
        };
        if best
            .as_ref()
            .is_none_or(|(c, b)| cost < *c || (cost == *c && shards < b.shards))
        {
            best = Some((cost, cache));
        }
    }
    let Some((cache_usd, cache)) = best else {
        bail!("no node type holds {data:.0} bytes in at most 500 nodes");
    };
    let shards = f64::from(cache.shards);
    let workers = (users / deadline / per_worker).ceil().max(1.0);
    let rate = (workers * per_worker).min(shards * per_shard);
    let refresh = users / rate;
    // Lambda: ingest's worker-seconds, serve's requests; SQS, the API, S3.
    let secs_a_month = HOURS_A_MONTH * 3600.0;
    let refreshes = input.refreshes_per_day * HOURS_A_MONTH / 24.0;
    let batch_bytes = sample.batch_bytes_per_user * users;
    let chunks = (batch_bytes / (8.0 * 1024.0 * 1024.0)).ceil().max(1.0);
    let gb_s = tables.rate("lambda_gb_second_usd")?;
    let lambda_req = tables.rate("lambda_request_usd")?;
    let ingest_usd = refreshes
        * (users / per_worker * tables.rate("ingest_memory_gb")? * gb_s + chunks * lambda_req);
    let requests = input.requests_per_s * secs_a_month;
    let serve_usd = requests
        * (tables.rate("serve_ms_per_request")? / 1000.0 * tables.rate("serve_memory_gb")? * gb_s
            + lambda_req);
    let api = requests * tables.rate("api_request_usd")?;
    let sqs = refreshes * chunks * 3.0 * tables.rate("sqs_request_usd")?;
    let s3 = batch_bytes / 1e9 * tables.rate("s3_gb_month_usd")?
        + refreshes * chunks * tables.rate("s3_get_usd")?;
    let lambda = ingest_usd + serve_usd;
    Ok(Plan {
        sample: sample.clone(),
        users: input.users,
        memory: Memory {
            bytes_per_user: version.per_user(),
            version_bytes: version.bytes,
            versions_held: held,
            data_bytes: data,
            hashtable_share: version.hashtable_share,
        },
        ingest: Ingest {
            workers: workers as u32,
            users_per_s_per_worker: per_worker,
            users_per_s_per_shard: per_shard,
            refresh_seconds: refresh,
            deadline_seconds: deadline,
            connections_per_primary: workers as u64 + OTHER_CONNECTIONS,
            connection_limit: MAX_CONNECTIONS,
            rounds_mib: rounds_mib(sizes, version.buckets),
        },
        monthly_usd: Monthly {
            cache: cache_usd,
            lambda,
            api,
            sqs,
            s3,
            total: cache_usd + lambda + api + sqs + s3,
        },
        cache,
    })
}

fn print_plan(p: &Plan) {
    let gib = |b: f64| b / f64::from(1u32 << 30);
    let s = &p.sample;
    println!(
        "sample: {} users ({} files, {}), stored value {:.0} B, id {:.1} B{}",
        s.users,
        s.files,
        s.format,
        s.value_bytes,
        s.id_bytes,
        if s.bad_records > 0 {
            format!(", {} bad records", s.bad_records)
        } else {
            String::new()
        }
    );
    let m = &p.memory;
    println!(
        "memory: {:.0} B per user in Redis; one version of {} users {:.2} GiB; {} held at the flip (live, {} backup(s), loading): {:.2} GiB",
        m.bytes_per_user,
        p.users,
        gib(m.version_bytes),
        m.versions_held,
        m.versions_held - 2,
        gib(m.data_bytes)
    );
    if m.hashtable_share > 0.0 {
        println!(
            "  {:.0}% of buckets hold a value over hash-max-listpack-value and are hashtables: smaller values would cost less",
            m.hashtable_share * 100.0
        );
    }
    let c = &p.cache;
    println!(
        "cache: {} × {} shard(s) with {} replica(s) each = {} nodes; {:.2} GiB usable per shard (25% reserved, 10% headroom), {:.0}% full; shards set by {}",
        c.node_type,
        c.shards,
        c.replicas_per_shard,
        c.nodes,
        gib(c.usable_bytes_per_shard),
        c.fill * 100.0,
        c.bound_by
    );
    let i = &p.ingest;
    println!(
        "ingest: IngestMaxConcurrency {} ({:.0} users/s a worker, {:.0} a shard): refresh in {:.0} s of a {:.0} s deadline; {} connections per primary of {}",
        i.workers,
        i.users_per_s_per_worker,
        i.users_per_s_per_shard,
        i.refresh_seconds,
        i.deadline_seconds,
        i.connections_per_primary,
        i.connection_limit
    );
    println!(
        "ingest memory: FS_INGEST_ROUNDS_MIB={} for rounds of two users a bucket (the Lambda's MemorySize above it by the formats' own needs)",
        i.rounds_mib
    );
    let d = &p.monthly_usd;
    println!(
        "monthly: ${:.0} (cache ${:.0}, Lambda ${:.0}, API ${:.0}, SQS ${:.2}, S3 ${:.2}); prices in infra/capacity/",
        d.total, d.cache, d.lambda, d.api, d.sqs, d.s3
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(value: u64) -> Vec<UserSize> {
        (1..=500)
            .map(|i| UserSize {
                id: i.to_string(),
                value_len: value,
            })
            .collect()
    }

    fn input(users: u64) -> Input {
        Input {
            users,
            backups: 1,
            replicas: 1,
            deadline: Duration::from_secs(3600),
            requests_per_s: 100.0,
            refreshes_per_day: 1.0,
            users_per_bucket: 64,
        }
    }

    #[test]
    fn the_bundled_tables_parse_and_every_rate_is_measured() {
        let t = Tables::bundled().unwrap();
        assert!(t.nodes.len() >= 8);
        for name in [
            "worker_users_per_s",
            "worker_batch_bytes",
            "worker_users_per_s_large",
            "worker_batch_bytes_large",
            "shard_users_per_s",
        ] {
            assert!(t.rate(name).unwrap() > 0.0, "{name}");
        }
    }

    #[test]
    fn more_users_need_more_memory_shards_and_money() {
        let t = Tables::bundled().unwrap();
        let s = sizes(50);
        let figures = SampleFigures::of(&s, 500 * 130, 1, "json-lines", 0);
        let plans: Vec<Plan> = [1_000_000, 100_000_000, 1_000_000_000]
            .iter()
            .map(|&n| plan(&s, &figures, &input(n), &t).unwrap())
            .collect();
        for w in plans.windows(2) {
            assert!(w[1].memory.data_bytes > w[0].memory.data_bytes * 5.0);
            assert!(w[1].monthly_usd.total > w[0].monthly_usd.total);
            let cap = |p: &Plan| p.cache.usable_bytes_per_shard * f64::from(p.cache.shards);
            assert!(cap(&w[1]) >= w[1].memory.data_bytes);
        }
        // Three versions of about 70 bytes a user.
        let per_user = plans[0].memory.bytes_per_user;
        assert!((55.0..90.0).contains(&per_user), "{per_user}");
        assert_eq!(plans[0].memory.versions_held, 3);
        // Rounds of two users a bucket: 1M users fit the default; 100M
        // users of 50 + 2.8 bytes and a 16-byte entry need 3 rounds of
        // 2 × 1,562,500 users.
        let rounds: Vec<u64> = plans.iter().map(|p| p.ingest.rounds_mib).collect();
        assert_eq!(rounds[0], 12);
        let want = (3.0 * 2.0 * 1_562_500.0 * (50.0 + 2.784 + 16.0) / 1048576.0_f64).ceil();
        assert!((rounds[1] as f64 - want).abs() <= 2.0, "{rounds:?} {want}");
        assert_eq!(rounds[2], shared::config::MAX_ROUNDS_MIB as u64, "capped");
    }

    #[test]
    fn a_short_deadline_adds_workers_and_then_shards() {
        let t = Tables::bundled().unwrap();
        let s = sizes(50);
        let figures = SampleFigures::of(&s, 500 * 130, 1, "json-lines", 0);
        let relaxed = plan(&s, &figures, &input(100_000_000), &t).unwrap();
        let tight = plan(
            &s,
            &figures,
            &Input {
                deadline: Duration::from_secs(10),
                ..input(100_000_000)
            },
            &t,
        )
        .unwrap();
        assert!(tight.ingest.workers > relaxed.ingest.workers);
        assert!(tight.cache.shards >= relaxed.cache.shards);
        assert!(tight.ingest.refresh_seconds < relaxed.ingest.refresh_seconds);
        // Enough primaries to take the writes in time, whatever set the count.
        let rate = f64::from(tight.cache.shards) * tight.ingest.users_per_s_per_shard;
        assert!(rate * 10.0 >= 1e8, "{rate} users/s");
        assert!(tight.ingest.refresh_seconds <= 10.0 + 1e-9);
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("45m"), Ok(Duration::from_secs(2700)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
