//! Every environment variable, declared once: its name, its default, which
//! components read it, what it means, and how its value is read. The
//! configuration structs, each component's list of variables (what the SAM
//! template must give it) and the README's configuration table all come
//! from this table (tests hold the template and the README to it).

use std::time::Duration;

use super::{LatencyTarget, LogFormat, Secret};

/// A component that reads variables. The operator CLI and the local stack
/// read every variable; a Lambda reads only those declared for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    Planner,
    Ingest,
    Serve,
    Janitor,
    /// The operator CLI, where a variable matters to its commands.
    Fsctl,
}

impl Reader {
    pub const LAMBDAS: [Reader; 4] = [
        Reader::Planner,
        Reader::Ingest,
        Reader::Serve,
        Reader::Janitor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reader::Planner => "planner",
            Reader::Ingest => "ingest",
            Reader::Serve => "serve",
            Reader::Janitor => "janitor",
            Reader::Fsctl => "fsctl",
        }
    }
}

/// One variable, as the table declares it.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    /// The value used when it is unset or blank; `None`: unset means absent.
    pub default: Option<&'static str>,
    pub readers: &'static [Reader],
    /// Set only for running locally; a deployment leaves it out.
    pub local_only: bool,
    /// What it means, in one line (the README's table shows it).
    pub doc: &'static str,
}

impl Var {
    pub fn is_read_by(&self, reader: Reader) -> bool {
        self.readers.contains(&reader)
    }
}

/// A variable and how its value is read: `parse` gets the trimmed value,
/// or the default (`""` when there is none), and says why a value is bad.
pub struct Setting<T> {
    pub var: Var,
    pub parse: fn(&str) -> Result<T, String>,
}

impl<T> Setting<T> {
    /// The variable's name.
    pub const fn name(&self) -> &'static str {
        self.var.name
    }
}

const ALL_READERS: &[Reader] = &[
    Reader::Planner,
    Reader::Ingest,
    Reader::Serve,
    Reader::Janitor,
    Reader::Fsctl,
];
const LAMBDAS: &[Reader] = &Reader::LAMBDAS;

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $id:ident: $ty:ty = $name:literal, default $default:expr, read by $readers:expr, $local:literal, $parse:expr; )+) => {
        $(
            $(#[doc = $doc])+
            pub const $id: Setting<$ty> = Setting {
                var: Var { name: $name, default: $default, readers: $readers, local_only: $local, doc: concat!($($doc),+) },
                parse: $parse,
            };
        )+
        /// Every variable, in the order of the README's table.
        pub const ALL: &[&Var] = &[$(&$id.var),+];
    };
}

use Reader::{Fsctl, Ingest, Janitor, Planner, Serve};

/// Most `FS_INGEST_ROUNDS_MIB`: three rounds of a third each stay far below
/// the 4 GiB a round's 32-bit offsets address.
pub const MAX_ROUNDS_MIB: usize = 4096;

settings! {
    /// comma-separated node URLs (`rediss://` for TLS)
    REDIS_URL: Vec<String> = "FS_REDIS_URL", default Some("redis://127.0.0.1:7001"), read by ALL_READERS, false, urls;
    /// `cluster` or `standalone`
    REDIS_MODE: bool = "FS_REDIS_MODE", default Some("cluster"), read by ALL_READERS, false, |v| one_of(v, &[("cluster", true), ("standalone", false)]);
    /// connect and response timeout of Redis calls, in milliseconds
    REDIS_TIMEOUT_MS: Duration = "FS_REDIS_TIMEOUT_MS", default Some("2000"), read by ALL_READERS, false, |v| number(v, 1).map(Duration::from_millis);
    /// Secrets Manager secret with the Redis AUTH token (`{"token": …}`), read at cold start
    REDIS_AUTH_SECRET_ARN: Option<String> = "FS_REDIS_AUTH_SECRET_ARN", default None, read by ALL_READERS, false, optional;
    /// the AUTH token itself, for local use
    REDIS_AUTH_TOKEN: Option<Secret> = "FS_REDIS_AUTH_TOKEN", default None, read by ALL_READERS, true, |v| optional(v).map(|t| t.map(Secret::new));
    /// PEM of a private CA for `rediss://` (ElastiCache needs none)
    REDIS_CA_FILE: Option<String> = "FS_REDIS_CA_FILE", default None, read by ALL_READERS, true, optional;
    /// CloudWatch namespace of the metric lines
    METRICS_NAMESPACE: String = "FS_METRICS_NAMESPACE", default Some("FeatureStore"), read by ALL_READERS, false, text;
    /// `json` or `text`
    LOG_FORMAT: LogFormat = "FS_LOG_FORMAT", default Some("json"), read by LAMBDAS, false, |v| one_of(v, &[("json", LogFormat::Json), ("text", LogFormat::Text)]);
    /// queue the chunk messages go to (the planner needs it)
    CHUNKS_QUEUE_URL: Option<String> = "FS_CHUNKS_QUEUE_URL", default None, read by &[Planner, Fsctl], false, optional;
    /// target chunk size, in bytes
    CHUNK_BYTES: u64 = "FS_CHUNK_BYTES", default Some("8388608"), read by &[Planner], false, |v| number(v, 1);
    /// dataset of keys without a folder, and of `/?userId=`
    DEFAULT_DATASET: String = "FS_DEFAULT_DATASET", default Some("recommendations"), read by &[Planner, Serve, Fsctl], false, dataset;
    /// user-id field of batch records
    USER_FIELD: String = "FS_USER_FIELD", default Some("userId"), read by &[Planner, Ingest], false, text;
    /// ranked item-list field of batch records (and its name in `/?userId=` answers)
    ITEMS_FIELD: String = "FS_ITEMS_FIELD", default Some("movieId"), read by &[Ingest, Serve], false, text;
    /// users packed into one Redis hash, on average
    USERS_PER_BUCKET: u32 = "FS_USERS_PER_BUCKET", default Some("64"), read by &[Planner], false, |v| small(v, 1);
    /// users written per pipelined round
    WRITE_BATCH_USERS: usize = "FS_WRITE_BATCH_USERS", default Some("25000"), read by &[Ingest], false, |v| number(v, 1).map(|n| n as usize);
    /// memory one ingest worker holds in rounds of users (the one filling and those being written), in MiB: larger rounds put more users into each HSET on large batches
    INGEST_ROUNDS_MIB: usize = "FS_INGEST_ROUNDS_MIB", default Some("12"), read by &[Ingest], false, |v| number(v, 4).and_then(|n| if n <= MAX_ROUNDS_MIB as u64 { Ok(n as usize) } else { Err(format!("expected at most {MAX_ROUNDS_MIB}")) });
    /// most users one ingest worker writes per second (0: no cap), to leave Redis room for readers while a batch loads
    INGEST_MAX_USERS_PER_S: Option<u64> = "FS_INGEST_MAX_USERS_PER_S", default Some("0"), read by &[Ingest], false, |v| number(v, 0).map(|n| Some(n).filter(|&n| n > 0));
    /// the Redis round trip ingest keeps readers under while it writes, in milliseconds: it slows down past it and speeds up below (`auto`: twice the quietest round trip it measures, at least 1 ms; `off`: write at full speed)
    INGEST_TARGET_LATENCY_MS: Option<LatencyTarget> = "FS_INGEST_TARGET_LATENCY_MS", default Some("auto"), read by &[Ingest], false, latency_target;
    /// how long the live pointer may be cached, in milliseconds (staleness bound after a flip)
    POINTER_TTL_MS: Duration = "FS_POINTER_TTL_MS", default Some("1000"), read by &[Serve, Janitor], false, |v| number(v, 0).map(Duration::from_millis);
    /// bucket for uploads
    BUCKET: String = "FS_BUCKET", default Some("feature-store-batches"), read by &[Fsctl], false, text;
    /// the events queue: the planner sends a folder whose marker came before its files back to it, to look again; `status` and `redrive` read it
    EVENTS_QUEUE_URL: Option<String> = "FS_EVENTS_QUEUE_URL", default None, read by &[Planner, Fsctl], false, optional;
    /// the events queue's dead-letter queue, for `status` and `redrive`
    EVENTS_DLQ_URL: Option<String> = "FS_EVENTS_DLQ_URL", default None, read by &[Fsctl], false, optional;
    /// the chunks queue's dead-letter queue, for `status` and `redrive`
    CHUNKS_DLQ_URL: Option<String> = "FS_CHUNKS_DLQ_URL", default None, read by &[Fsctl], false, optional;
    /// `strict`: one bad record fails the version; `lenient`: skip and count
    BAD_RECORDS: bool = "FS_BAD_RECORDS", default Some("strict"), read by &[Ingest], false, |v| one_of(v, &[("strict", false), ("lenient", true)]);
    /// lenient mode: share of bad records that fails the version
    MAX_BAD_FRACTION: f64 = "FS_MAX_BAD_FRACTION", default Some("0.01"), read by &[Ingest], false, fraction;
    /// hold a version with fewer users than this share of the live one's (0: off)
    MIN_USER_FRACTION: f64 = "FS_MIN_USER_FRACTION", default Some("0.5"), read by &[Ingest], false, fraction;
    /// longest record, in bytes
    MAX_RECORD_BYTES: u64 = "FS_MAX_RECORD_BYTES", default Some("1048576"), read by &[Planner, Ingest], false, |v| number(v, 64);
    /// most bytes a compressed batch file may decompress to; past it the version fails
    MAX_DECOMPRESSED_BYTES: u64 = "FS_MAX_DECOMPRESSED_BYTES", default Some("4294967296"), read by &[Planner, Ingest], false, |v| number(v, 1024);
    /// largest Parquet footer (file metadata) read, in bytes; past it the version fails
    MAX_PARQUET_FOOTER_BYTES: u64 = "FS_MAX_PARQUET_FOOTER_BYTES", default Some("16777216"), read by &[Planner, Ingest], false, |v| number(v, 1024);
    /// largest Parquet row group, in bytes (uncompressed, or as read), held by ingest at once; past it the version fails
    MAX_ROW_GROUP_BYTES: u64 = "FS_MAX_ROW_GROUP_BYTES", default Some("268435456"), read by &[Planner], false, |v| number(v, 1024);
    /// a folder committed by an empty `_SUCCESS` is planned once no data file has landed in it for this many seconds
    FOLDER_SETTLE_S: Duration = "FS_FOLDER_SETTLE_S", default Some("5"), read by &[Planner], false, |v| number(v, 1).map(Duration::from_secs);
    /// a folder's marker waits this many seconds at most for the files it names (or for the folder to settle); then its version fails
    FOLDER_WAIT_MAX_S: Duration = "FS_FOLDER_WAIT_MAX_S", default Some("3600"), read by &[Planner], false, |v| number(v, 1).map(Duration::from_secs);
    /// most data files in one folder batch; past it the version fails
    MAX_FOLDER_FILES: u64 = "FS_MAX_FOLDER_FILES", default Some("10000"), read by &[Planner], false, |v| number(v, 1);
    /// an upload whose event time is more than this many seconds ahead of the clock fails (it would outrank every later upload)
    MAX_EVENT_AHEAD_S: Duration = "FS_MAX_EVENT_AHEAD_S", default Some("300"), read by &[Planner], false, |v| number(v, 0).map(Duration::from_secs);
    /// most items for one user
    MAX_ITEMS: u64 = "FS_MAX_ITEMS", default Some("10000"), read by &[Ingest], false, |v| number(v, 1);
    /// the character joining items in one CSV column (`1;2;3` with `;`)
    CSV_ITEM_SEPARATOR: u8 = "FS_CSV_ITEM_SEPARATOR", default Some("|"), read by &[Ingest], false, separator;
    /// a field holding the record's prediction (an object merged into the record, or the item list itself), as SageMaker Batch Transform writes with `JoinSource=Input`; `none` turns it off
    OUTPUT_FIELD: String = "FS_OUTPUT_FIELD", default Some("SageMakerOutput"), read by &[Ingest], false, |v| Ok(if v == "none" { String::new() } else { v.to_string() });
    /// backup versions kept for rollback
    BACKUPS: u32 = "FS_BACKUPS", default Some("1"), read by &[Janitor, Fsctl], false, |v| small(v, 0);
    /// keep a version this long after it stopped being live, in seconds
    RETENTION_GRACE_S: Duration = "FS_RETENTION_GRACE_S", default Some("30"), read by &[Serve, Janitor, Fsctl], false, |v| number(v, 0).map(Duration::from_secs);
    /// a version still ingesting after this many seconds is abandoned
    ABANDON_AFTER_S: Duration = "FS_ABANDON_AFTER_S", default Some("21600"), read by &[Janitor, Fsctl], false, |v| number(v, 1).map(Duration::from_secs);
    /// replicas that must acknowledge a chunk's writes
    REPLICA_ACKS: u32 = "FS_REPLICA_ACKS", default Some("0"), read by &[Ingest, Serve], false, |v| small(v, 0);
    /// how long to wait for them, in milliseconds
    REPLICA_ACK_TIMEOUT_MS: Duration = "FS_REPLICA_ACK_TIMEOUT_MS", default Some("2000"), read by &[Ingest], false, |v| number(v, 1).map(Duration::from_millis);
    /// read users from replicas (`true` or `false`)
    READ_FROM_REPLICAS: bool = "FS_READ_FROM_REPLICAS", default Some("false"), read by &[Serve], false, |v| one_of(v, &[("true", true), ("1", true), ("false", false), ("0", false)]);
    /// most user ids one batch read may ask for
    BATCH_MAX_USERS: usize = "FS_BATCH_MAX_USERS", default Some("1000"), read by &[Serve], false, |v| number(v, 1).map(|n| n as usize);
    /// answers from a live batch older than this many seconds are stale (0: no limit); `fsctl max-age` sets it per dataset
    MAX_AGE_S: Option<Duration> = "FS_MAX_AGE_S", default Some("0"), read by &[Serve, Fsctl], false, |v| number(v, 0).map(|s| (s > 0).then(|| Duration::from_secs(s)));
    /// largest response body serve sends, in bytes (below Lambda's 6 MB); a batch read past it gets 413
    MAX_RESPONSE_BYTES: usize = "FS_MAX_RESPONSE_BYTES", default Some("4194304"), read by &[Serve], false, response_bytes;
    /// a JWT claim that must equal the path's user id (API with `ApiAuth=JWT`); batch reads are then refused
    USER_CLAIM: Option<String> = "FS_USER_CLAIM", default None, read by &[Serve], false, optional;
    /// `flag` stale answers (`"stale": true`) or `refuse` them (503 `stale_data`)
    STALE_POLICY: bool = "FS_STALE_POLICY", default Some("flag"), read by &[Serve], false, |v| one_of(v, &[("flag", false), ("refuse", true)]);
}

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn optional(v: &str) -> Result<Option<String>, String> {
    Ok(Some(v.to_string()).filter(|v| !v.is_empty()))
}

fn one_of<T: Copy>(v: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == v)
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("`{n}`")).collect();
            format!("expected {}", names.join(" or "))
        })
}

fn latency_target(v: &str) -> Result<Option<LatencyTarget>, String> {
    match v {
        "off" => Ok(None),
        "auto" => Ok(Some(LatencyTarget::Auto)),
        _ => match number(v, 1) {
            Ok(ms) => Ok(Some(LatencyTarget::Fixed(Duration::from_millis(ms)))),
            Err(_) => Err("expected `auto`, `off` or a whole number of milliseconds >= 1".into()),
        },
    }
}

fn number(v: &str, min: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("expected a whole number >= {min}")),
    }
}

/// A [`number`] that must fit a `u32`.
fn small(v: &str, min: u64) -> Result<u32, String> {
    let n = number(v, min)?;
    u32::try_from(n).map_err(|_| format!("expected a whole number from {min} to {}", u32::MAX))
}

/// Lambda refuses a response payload over 6 MB (6,291,456 bytes), the
/// status and headers included: the cap leaves room for them.
fn response_bytes(v: &str) -> Result<usize, String> {
    match number(v, 1024)? {
        n if n <= 6_000_000 => Ok(n as usize),
        _ => Err("expected at most 6000000 (Lambda refuses responses over 6 MB)".to_string()),
    }
}

fn fraction(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("expected a number from 0 to 1".to_string()),
    }
}

fn urls(v: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    match urls
        .iter()
        .all(|u| u.starts_with("redis://") || u.starts_with("rediss://"))
    {
        true => Ok(urls),
        false => Err("expected redis:// or rediss:// URLs".to_string()),
    }
}

fn dataset(v: &str) -> Result<String, String> {
    crate::keys::validate_dataset(v).map_err(|e| e.to_string())?;
    Ok(v.to_string())
}

fn separator(v: &str) -> Result<u8, String> {
    match v.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b',' && *b != b'\n' => Ok(*b),
        _ => {
            Err("expected one ASCII character other than a quote, a comma or a newline".to_string())
        }
    }
}
