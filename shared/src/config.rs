//! Configuration from the environment, read once per process.
//!
//! Every variable the Lambdas, the CLI and the local stack read is named here
//! (and nowhere else), with its default, so the SAM template and the README can
//! be checked against one list: [`ALL_VARS`].
//!
//! Each Lambda has its own configuration ([`PlannerConfig`], [`IngestConfig`],
//! [`ServeConfig`], [`JanitorConfig`]) holding only what it uses; [`Config`]
//! holds everything, for the operator CLI and the local stack, which derive
//! the components' from it. All of them read through the same section
//! readers, which remember the variables they read: a component's list of
//! variables ([`Component::vars`], what the SAM template must give it) is what
//! its reader reads, not a list kept by hand. A bad value fails at start with
//! the variable's name.

use std::time::Duration;

pub use crate::record::Fields;

/// Comma-separated Redis node URLs (`redis://host:port`, `rediss://` for TLS).
pub const REDIS_URL: &str = "FS_REDIS_URL";
/// `cluster` (default, ElastiCache cluster mode) or `standalone`.
pub const REDIS_MODE: &str = "FS_REDIS_MODE";
/// Connect and response timeout for Redis calls, in milliseconds.
pub const REDIS_TIMEOUT_MS: &str = "FS_REDIS_TIMEOUT_MS";
/// URL of the chunks queue the planner sends to.
pub const CHUNKS_QUEUE_URL: &str = "FS_CHUNKS_QUEUE_URL";
/// Target chunk size in bytes.
pub const CHUNK_BYTES: &str = "FS_CHUNK_BYTES";
/// Dataset for object keys without a folder, and for the `/?userId=` API.
pub const DEFAULT_DATASET: &str = "FS_DEFAULT_DATASET";
/// Name of the user-id field in batch records.
pub const USER_FIELD: &str = "FS_USER_FIELD";
/// Name of the ranked item-list field in batch records.
pub const ITEMS_FIELD: &str = "FS_ITEMS_FIELD";
/// Users packed into one Redis hash (the bucket), on average.
pub const USERS_PER_BUCKET: &str = "FS_USERS_PER_BUCKET";
/// How long serve may use a cached live-version pointer, in milliseconds.
pub const POINTER_TTL_MS: &str = "FS_POINTER_TTL_MS";
/// Users written per pipelined round of ingest writes.
pub const WRITE_BATCH_USERS: &str = "FS_WRITE_BATCH_USERS";
/// Log format: `json` (default on Lambda) or `text`.
pub const LOG_FORMAT: &str = "FS_LOG_FORMAT";
/// The batch bucket, for the operator CLI's uploads.
pub const BUCKET: &str = "FS_BUCKET";
/// Events queue and the two dead-letter queues, for the operator CLI.
pub const EVENTS_QUEUE_URL: &str = "FS_EVENTS_QUEUE_URL";
pub const EVENTS_DLQ_URL: &str = "FS_EVENTS_DLQ_URL";
pub const CHUNKS_DLQ_URL: &str = "FS_CHUNKS_DLQ_URL";
/// `strict` (default): one bad record fails the version. `lenient`: bad
/// records are skipped and counted.
pub const BAD_RECORDS: &str = "FS_BAD_RECORDS";
/// In lenient mode, the share of bad records above which the version fails.
pub const MAX_BAD_FRACTION: &str = "FS_MAX_BAD_FRACTION";
/// A version with fewer users than this share of the live version's is held.
pub const MIN_USER_FRACTION: &str = "FS_MIN_USER_FRACTION";
/// The separator of items joined in one CSV column (`1|2|3`): one ASCII character.
pub const CSV_ITEM_SEPARATOR: &str = "FS_CSV_ITEM_SEPARATOR";
/// A field whose object (or array) holds a record's prediction, merged into
/// the record: SageMaker Batch Transform's `JoinSource=Input` output. `none`: off.
pub const OUTPUT_FIELD: &str = "FS_OUTPUT_FIELD";
/// Longest record accepted, in bytes.
pub const MAX_RECORD_BYTES: &str = "FS_MAX_RECORD_BYTES";
/// Most items accepted for one user.
pub const MAX_ITEMS: &str = "FS_MAX_ITEMS";
/// Backup versions kept besides the live one.
pub const BACKUPS: &str = "FS_BACKUPS";
/// A version that stopped being live this recently is kept (readers may still
/// hold its pointer), in seconds.
pub const RETENTION_GRACE_S: &str = "FS_RETENTION_GRACE_S";
/// A version still ingesting after this long is abandoned, in seconds.
pub const ABANDON_AFTER_S: &str = "FS_ABANDON_AFTER_S";
/// Replicas that must acknowledge a chunk's writes before it counts as done.
pub const REPLICA_ACKS: &str = "FS_REPLICA_ACKS";
/// How long to wait for those acknowledgements, in milliseconds.
pub const REPLICA_ACK_TIMEOUT_MS: &str = "FS_REPLICA_ACK_TIMEOUT_MS";
/// Serve reads users from replicas (`true`/`false`).
pub const READ_FROM_REPLICAS: &str = "FS_READ_FROM_REPLICAS";
/// Secrets Manager secret holding the Redis AUTH token (JSON `{"token": …}`
/// or the bare token), read once at cold start.
pub const REDIS_AUTH_SECRET_ARN: &str = "FS_REDIS_AUTH_SECRET_ARN";
/// The Redis AUTH token itself (local use; on AWS use the secret).
pub const REDIS_AUTH_TOKEN: &str = "FS_REDIS_AUTH_TOKEN";
/// PEM file of the CA that signed Redis's certificate, when it is not a
/// public one (local TLS); ElastiCache needs none.
pub const REDIS_CA_FILE: &str = "FS_REDIS_CA_FILE";
/// CloudWatch namespace of the metrics the components emit.
pub const METRICS_NAMESPACE: &str = "FS_METRICS_NAMESPACE";
/// Most users one ingest worker writes per second (0: as fast as Redis
/// takes them), to leave Redis room for readers while a batch loads.
pub const INGEST_MAX_USERS_PER_S: &str = "FS_INGEST_MAX_USERS_PER_S";
/// Most user ids one batch read may ask for.
pub const BATCH_MAX_USERS: &str = "FS_BATCH_MAX_USERS";
/// Answers from a live version whose batch is older than this are stale, in
/// seconds (0: no limit). An operator can set it per dataset (`fsctl max-age`).
pub const MAX_AGE_S: &str = "FS_MAX_AGE_S";
/// What serve does with a stale answer: `flag` it (`"stale": true`, the
/// default) or `refuse` it (503 `stale_data`).
pub const STALE_POLICY: &str = "FS_STALE_POLICY";

/// Every variable above, for checks against deployment templates and docs.
pub const ALL_VARS: &[&str] = &[
    REDIS_URL,
    REDIS_MODE,
    REDIS_TIMEOUT_MS,
    CHUNKS_QUEUE_URL,
    CHUNK_BYTES,
    DEFAULT_DATASET,
    USER_FIELD,
    ITEMS_FIELD,
    USERS_PER_BUCKET,
    POINTER_TTL_MS,
    WRITE_BATCH_USERS,
    LOG_FORMAT,
    BUCKET,
    EVENTS_QUEUE_URL,
    EVENTS_DLQ_URL,
    CHUNKS_DLQ_URL,
    BAD_RECORDS,
    MAX_BAD_FRACTION,
    MIN_USER_FRACTION,
    MAX_RECORD_BYTES,
    MAX_ITEMS,
    CSV_ITEM_SEPARATOR,
    OUTPUT_FIELD,
    BACKUPS,
    RETENTION_GRACE_S,
    ABANDON_AFTER_S,
    REPLICA_ACKS,
    REPLICA_ACK_TIMEOUT_MS,
    READ_FROM_REPLICAS,
    REDIS_AUTH_SECRET_ARN,
    REDIS_AUTH_TOKEN,
    REDIS_CA_FILE,
    METRICS_NAMESPACE,
    BATCH_MAX_USERS,
    MAX_AGE_S,
    STALE_POLICY,
    INGEST_MAX_USERS_PER_S,
];

/// Variables for running locally only; deployments leave them out.
pub const LOCAL_ONLY_VARS: &[&str] = &[REDIS_AUTH_TOKEN, REDIS_CA_FILE];

/// A secret: never printed, in `Debug` or anywhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the Redis AUTH token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAuth {
    None,
    Token(Secret),
    /// Read from Secrets Manager (see [`crate::boot::resolve_redis_auth`]).
    SecretArn(String),
}

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:7001";
pub const DEFAULT_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_DATASET_NAME: &str = "recommendations";
pub const DEFAULT_USER_FIELD: &str = "userId";
pub const DEFAULT_ITEMS_FIELD: &str = "movieId";
pub const DEFAULT_OUTPUT_FIELD: &str = "SageMakerOutput";
pub const DEFAULT_USERS_PER_BUCKET: u32 = 64;
pub const DEFAULT_POINTER_TTL_MS: u64 = 1000;
pub const DEFAULT_WRITE_BATCH_USERS: usize = 25_000;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_BUCKET: &str = "feature-store-batches";
pub const DEFAULT_MAX_BAD_FRACTION: f64 = 0.01;
pub const DEFAULT_MIN_USER_FRACTION: f64 = 0.5;
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_ITEMS: u64 = 10_000;
pub const DEFAULT_BACKUPS: u64 = 1;
pub const DEFAULT_RETENTION_GRACE_S: u64 = 30;
pub const DEFAULT_ABANDON_AFTER_S: u64 = 6 * 3600;
pub const DEFAULT_BATCH_MAX_USERS: u64 = 1000;

/// A variable was set to something that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {var}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// How to reach Redis. Its `Debug` output hides any password in the URLs.
#[derive(Clone)]
pub struct RedisConfig {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub timeout: Duration,
    /// Route reads to replicas (cluster mode).
    pub read_from_replicas: bool,
    pub auth: RedisAuth,
    /// PEM of a private CA to trust, for `rediss://` URLs.
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("cluster", &self.cluster)
            .field("timeout", &self.timeout)
            .field("read_from_replicas", &self.read_from_replicas)
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `url` with the password of its user part (`redis://user:pw@host`)
/// replaced by `***`: what any log or error may show of a Redis URL.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// What ingest does with a bad record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BadRecords {
    /// One bad record fails the version.
    Strict,
    /// Bad records are skipped and counted; the version fails past a share.
    Lenient { max_fraction: f64 },
}

/// Rules a version must pass before it goes live.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    pub bad_records: BadRecords,
    /// Hold a version with fewer users than this share of the live one's (0: off).
    pub min_user_fraction: f64,
    pub max_record_bytes: u64,
    pub max_items: u64,
}

/// What retention keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub backups: u32,
    pub grace: Duration,
    pub abandon_after: Duration,
}

/// Durability of writes before a chunk counts as done.
/// How serve answers: batch size and freshness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serving {
    /// Most user ids one batch read may ask for.
    pub batch_max_users: usize,
    /// The default maximum age of a live batch (a dataset may set its own).
    pub max_age: Option<Duration>,
    /// Answer 503 `stale_data` instead of flagging a stale answer.
    pub refuse_stale: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    pub acks: u32,
    pub timeout: Duration,
}

/// Queues the operator CLI works on.
#[derive(Clone, Debug, Default)]
pub struct Queues {
    pub events: Option<String>,
    pub events_dlq: Option<String>,
    pub chunks: Option<String>,
    pub chunks_dlq: Option<String>,
}

/// Log lines as JSON objects (CloudWatch Logs Insights reads the fields) or text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything any component reads from the environment: the operator CLI's
/// and the local stack's configuration, from which they derive each
/// component's ([`Config::planner`], …).
#[derive(Clone, Debug)]
pub struct Config {
    pub redis: RedisConfig,
    /// CloudWatch namespace of emitted metrics.
    pub metrics_namespace: String,
    pub log_format: LogFormat,
    pub chunk_bytes: u64,
    pub default_dataset: String,
    pub fields: Fields,
    pub users_per_bucket: u32,
    pub pointer_ttl: Duration,
    pub serving: Serving,
    pub write_batch_users: usize,
    pub max_users_per_s: Option<u64>,
    pub bucket: String,
    pub validation: Validation,
    pub retention: Retention,
    pub replication: Replication,
    pub queues: Queues,
}

/// The planner's configuration.
#[derive(Clone, Debug)]
pub struct PlannerConfig {
    pub redis: RedisConfig,
    pub metrics_namespace: String,
    pub log_format: LogFormat,
    /// Where the chunk messages go (required).
    pub chunks_queue_url: String,
    /// Target chunk size (at least [`MAX_RECORD_BYTES`], checked at start).
    pub chunk_bytes: u64,
    pub default_dataset: String,
    /// Tells a JSON Lines record from a table document when sniffing.
    pub user_field: String,
    pub users_per_bucket: u32,
}

/// Ingest's configuration.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub redis: RedisConfig,
    pub metrics_namespace: String,
    pub log_format: LogFormat,
    pub fields: Fields,
    pub write_batch_users: usize,
    /// Most users one worker writes per second, if capped.
    pub max_users_per_s: Option<u64>,
    pub validation: Validation,
    pub replication: Replication,
}

/// Serve's configuration.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// With `read_from_replicas` only when writes wait for replica acks (checked).
    pub redis: RedisConfig,
    pub metrics_namespace: String,
    pub log_format: LogFormat,
    pub default_dataset: String,
    /// Name of the item list in `/?userId=` answers.
    pub items_field: String,
    /// How long the live pointer may be cached (below the retention grace, checked).
    pub pointer_ttl: Duration,
    pub serving: Serving,
}

/// The janitor's configuration.
#[derive(Clone, Debug)]
pub struct JanitorConfig {
    pub redis: RedisConfig,
    pub metrics_namespace: String,
    pub log_format: LogFormat,
    /// Its grace exceeds serve's pointer cache TTL (checked).
    pub retention: Retention,
}

/// A configuration read from the environment at start.
pub trait Component: Sized {
    /// Reads it through `env`'s section readers.
    fn read(env: &Env<'_>) -> Result<Self, ConfigError>;

    /// How to reach Redis (its AUTH token is resolved in place at cold start).
    fn redis_mut(&mut self) -> &mut RedisConfig;

    fn log_format(&self) -> LogFormat;

    /// Reads the process environment.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through `get`, so tests can pass a map.
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::new(&get, false))
    }

    /// Exactly the variables this configuration reads, in reading order.
    fn vars() -> Vec<&'static str> {
        let nothing = |_: &str| None;
        let env = Env::new(&nothing, true);
        // Defaults pass every check; a probe never fails on a missing value.
        let _ = Self::read(&env);
        env.asked.into_inner()
    }
}

impl Component for Config {
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let redis = env.redis_for_reads()?;
        let config = Config {
            metrics_namespace: env.metrics_namespace(),
            log_format: env.log_format()?,
            chunk_bytes: env.chunk_bytes()?,
            default_dataset: env.default_dataset()?,
            fields: env.fields()?,
            users_per_bucket: env.users_per_bucket()?,
            pointer_ttl: env.pointer_ttl()?,
            serving: env.serving()?,
            write_batch_users: env.write_batch_users()?,
            max_users_per_s: env.max_users_per_s()?,
            bucket: env.text(BUCKET, DEFAULT_BUCKET),
            validation: env.validation()?,
            retention: env.retention()?,
            replication: env.replication()?,
            queues: Queues {
                events: env.value(EVENTS_QUEUE_URL),
                events_dlq: env.value(EVENTS_DLQ_URL),
                chunks: env.value(CHUNKS_QUEUE_URL),
                chunks_dlq: env.value(CHUNKS_DLQ_URL),
            },
            redis,
        };
        check_chunk_holds_a_record(config.chunk_bytes, config.validation.max_record_bytes)?;
        check_grace_outlives_pointer(config.retention.grace, config.pointer_ttl)?;
        check_replica_reads(&config.redis, config.replication.acks)?;
        Ok(config)
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for PlannerConfig {
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let config = PlannerConfig {
            redis: env.redis()?,
            metrics_namespace: env.metrics_namespace(),
            log_format: env.log_format()?,
            chunks_queue_url: env.required(CHUNKS_QUEUE_URL, "must be set to the chunks queue URL")?,
            chunk_bytes: env.chunk_bytes()?,
            default_dataset: env.default_dataset()?,
            user_field: env.text(USER_FIELD, DEFAULT_USER_FIELD),
            users_per_bucket: env.users_per_bucket()?,
        };
        check_chunk_holds_a_record(config.chunk_bytes, env.max_record_bytes()?)?;
        Ok(config)
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for IngestConfig {
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(IngestConfig {
            redis: env.redis()?,
            metrics_namespace: env.metrics_namespace(),
            log_format: env.log_format()?,
            fields: env.fields()?,
            write_batch_users: env.write_batch_users()?,
            max_users_per_s: env.max_users_per_s()?,
            validation: env.validation()?,
            replication: env.replication()?,
        })
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for ServeConfig {
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let config = ServeConfig {
            redis: env.redis_for_reads()?,
            metrics_namespace: env.metrics_namespace(),
            log_format: env.log_format()?,
            default_dataset: env.default_dataset()?,
            items_field: env.text(ITEMS_FIELD, DEFAULT_ITEMS_FIELD),
            pointer_ttl: env.pointer_ttl()?,
            serving: env.serving()?,
        };
        check_grace_outlives_pointer(env.grace()?, config.pointer_ttl)?;
        check_replica_reads(&config.redis, env.replica_acks()?)?;
        Ok(config)
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for JanitorConfig {
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let config = JanitorConfig {
            redis: env.redis()?,
            metrics_namespace: env.metrics_namespace(),
            log_format: env.log_format()?,
            retention: env.retention()?,
        };
        check_grace_outlives_pointer(config.retention.grace, env.pointer_ttl()?)?;
        Ok(config)
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Config {
    /// Reads the process environment: every variable (the operator CLI).
    pub fn from_env() -> Result<Self, ConfigError> {
        <Config as Component>::from_env()
    }

    /// Reads through `get`, so tests can pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        <Config as Component>::from_lookup(get)
    }

    /// How writers reach Redis: primaries only, whatever readers do.
    fn primaries(&self) -> RedisConfig {
        RedisConfig { read_from_replicas: false, ..self.redis.clone() }
    }

    /// The planner's part, sending chunks to `chunks_queue_url`.
    pub fn planner(&self, chunks_queue_url: &str) -> PlannerConfig {
        PlannerConfig {
            redis: self.primaries(),
            metrics_namespace: self.metrics_namespace.clone(),
            log_format: self.log_format,
            chunks_queue_url: chunks_queue_url.to_string(),
            chunk_bytes: self.chunk_bytes,
            default_dataset: self.default_dataset.clone(),
            user_field: self.fields.user.clone(),
            users_per_bucket: self.users_per_bucket,
        }
    }

    /// Ingest's part.
    pub fn ingest(&self) -> IngestConfig {
        IngestConfig {
            redis: self.primaries(),
            metrics_namespace: self.metrics_namespace.clone(),
            log_format: self.log_format,
            fields: self.fields.clone(),
            write_batch_users: self.write_batch_users,
            max_users_per_s: self.max_users_per_s,
            validation: self.validation,
            replication: self.replication,
        }
    }

    /// Serve's part.
    pub fn serve(&self) -> ServeConfig {
        ServeConfig {
            redis: self.redis.clone(),
            metrics_namespace: self.metrics_namespace.clone(),
            log_format: self.log_format,
            default_dataset: self.default_dataset.clone(),
            items_field: self.fields.items.clone(),
            pointer_ttl: self.pointer_ttl,
            serving: self.serving,
        }
    }

    /// The janitor's part.
    pub fn janitor(&self) -> JanitorConfig {
        JanitorConfig {
            redis: self.primaries(),
            metrics_namespace: self.metrics_namespace.clone(),
            log_format: self.log_format,
            retention: self.retention,
        }
    }
}

/// The environment as a configuration reads it: one reader per setting or
/// section, each remembering the variables it read.
pub struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    /// Listing variables ([`Component::vars`]): required ones may be missing.
    probe: bool,
    asked: std::cell::RefCell<Vec<&'static str>>,
}

impl<'a> Env<'a> {
    fn new(get: &'a dyn Fn(&str) -> Option<String>, probe: bool) -> Self {
        Env { get, probe, asked: Default::default() }
    }

    /// The variable's value; `None` when unset or blank.
    fn value(&self, var: &'static str) -> Option<String> {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&var) {
            asked.push(var);
        }
        (self.get)(var).filter(|v| !v.trim().is_empty())
    }

    fn text(&self, var: &'static str, default: &str) -> String {
        self.value(var).unwrap_or_else(|| default.to_string())
    }

    fn required(&self, var: &'static str, reason: &str) -> Result<String, ConfigError> {
        match self.value(var) {
            Some(v) => Ok(v),
            None if self.probe => Ok(String::new()),
            None => Err(invalid(var, "", reason)),
        }
    }

    fn number(&self, var: &'static str, default: u64, min: u64) -> Result<u64, ConfigError> {
        match self.value(var) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(invalid(var, &v, &format!("expected a whole number >= {min}"))),
            },
        }
    }

    /// [`Self::number`] that must fit a `u32`.
    fn small(&self, var: &'static str, default: u64, min: u64) -> Result<u32, ConfigError> {
        let n = self.number(var, default, min)?;
        u32::try_from(n).map_err(|_| invalid(var, &n.to_string(), &format!("expected a whole number from {min} to {}", u32::MAX)))
    }

    fn fraction(&self, var: &'static str, default: f64) -> Result<f64, ConfigError> {
        match self.value(var) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
                _ => Err(invalid(var, &v, "expected a number from 0 to 1")),
            },
        }
    }

    fn redis(&self) -> Result<RedisConfig, ConfigError> {
        let mode = self.text(REDIS_MODE, "cluster");
        let cluster = match mode.as_str() {
            "cluster" => true,
            "standalone" => false,
            _ => return Err(invalid(REDIS_MODE, &mode, "expected `cluster` or `standalone`")),
        };
        let urls: Vec<String> =
            self.text(REDIS_URL, DEFAULT_REDIS_URL).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(invalid(REDIS_URL, &redact_url(u), "expected redis:// or rediss:// URLs"));
            }
        }
        Ok(RedisConfig {
            urls,
            cluster,
            timeout: Duration::from_millis(self.number(REDIS_TIMEOUT_MS, DEFAULT_REDIS_TIMEOUT_MS, 1)?),
            // Writers always use primaries; readers opt in (`redis_for_reads`).
            read_from_replicas: false,
            auth: match (self.value(REDIS_AUTH_TOKEN), self.value(REDIS_AUTH_SECRET_ARN)) {
                (Some(t), _) => RedisAuth::Token(Secret::new(t)),
                (None, Some(arn)) => RedisAuth::SecretArn(arn),
                (None, None) => RedisAuth::None,
            },
            ca_file: self.value(REDIS_CA_FILE),
        })
    }

    /// [`Self::redis`] for a reader, which may read users from replicas.
    fn redis_for_reads(&self) -> Result<RedisConfig, ConfigError> {
        let mut redis = self.redis()?;
        redis.read_from_replicas = match self.text(READ_FROM_REPLICAS, "false").as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => return Err(invalid(READ_FROM_REPLICAS, other, "expected `true` or `false`")),
        };
        Ok(redis)
    }

    fn metrics_namespace(&self) -> String {
        self.text(METRICS_NAMESPACE, "FeatureStore")
    }

    fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.text(LOG_FORMAT, "json").as_str() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(invalid(LOG_FORMAT, other, "expected `json` or `text`")),
        }
    }

    fn default_dataset(&self) -> Result<String, ConfigError> {
        let name = self.text(DEFAULT_DATASET, DEFAULT_DATASET_NAME);
        crate::db::keys::validate_dataset(&name).map_err(|e| invalid(DEFAULT_DATASET, &name, &e.to_string()))?;
        Ok(name)
    }

    fn fields(&self) -> Result<Fields, ConfigError> {
        let separator = self.text(CSV_ITEM_SEPARATOR, "|");
        let csv_item_separator = match separator.as_bytes() {
            [b] if b.is_ascii() && *b != b'"' && *b != b',' && *b != b'\n' => *b,
            _ => return Err(invalid(CSV_ITEM_SEPARATOR, &separator, "expected one ASCII character other than a quote, a comma or a newline")),
        };
        let fields = Fields {
            user: self.text(USER_FIELD, DEFAULT_USER_FIELD),
            items: self.text(ITEMS_FIELD, DEFAULT_ITEMS_FIELD),
            csv_item_separator,
            output: Some(self.text(OUTPUT_FIELD, DEFAULT_OUTPUT_FIELD)).filter(|f| f != "none").unwrap_or_default(),
        };
        if fields.user == fields.items {
            return Err(invalid(ITEMS_FIELD, &fields.items, "must differ from the user field"));
        }
        Ok(fields)
    }

    fn chunk_bytes(&self) -> Result<u64, ConfigError> {
        self.number(CHUNK_BYTES, DEFAULT_CHUNK_BYTES, 1)
    }

    fn users_per_bucket(&self) -> Result<u32, ConfigError> {
        self.small(USERS_PER_BUCKET, DEFAULT_USERS_PER_BUCKET as u64, 1)
    }

    fn pointer_ttl(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.number(POINTER_TTL_MS, DEFAULT_POINTER_TTL_MS, 0)?))
    }

    fn serving(&self) -> Result<Serving, ConfigError> {
        let policy = self.text(STALE_POLICY, "flag");
        let refuse_stale = match policy.as_str() {
            "flag" => false,
            "refuse" => true,
            other => return Err(invalid(STALE_POLICY, other, "expected `flag` or `refuse`")),
        };
        let max_age_s = self.number(MAX_AGE_S, 0, 0)?;
        Ok(Serving {
            batch_max_users: self.number(BATCH_MAX_USERS, DEFAULT_BATCH_MAX_USERS, 1)? as usize,
            max_age: (max_age_s > 0).then(|| Duration::from_secs(max_age_s)),
            refuse_stale,
        })
    }

    fn max_users_per_s(&self) -> Result<Option<u64>, ConfigError> {
        Ok(Some(self.number(INGEST_MAX_USERS_PER_S, 0, 0)?).filter(|&n| n > 0))
    }

    fn write_batch_users(&self) -> Result<usize, ConfigError> {
        Ok(self.number(WRITE_BATCH_USERS, DEFAULT_WRITE_BATCH_USERS as u64, 1)? as usize)
    }

    fn max_record_bytes(&self) -> Result<u64, ConfigError> {
        self.number(MAX_RECORD_BYTES, DEFAULT_MAX_RECORD_BYTES, 64)
    }

    fn validation(&self) -> Result<Validation, ConfigError> {
        let mode = self.text(BAD_RECORDS, "strict");
        // Read (and checked) in either mode, so a deployment's list of variables does not depend on it.
        let max_fraction = self.fraction(MAX_BAD_FRACTION, DEFAULT_MAX_BAD_FRACTION)?;
        let bad_records = match mode.as_str() {
            "strict" => BadRecords::Strict,
            "lenient" => BadRecords::Lenient { max_fraction },
            other => return Err(invalid(BAD_RECORDS, other, "expected `strict` or `lenient`")),
        };
        Ok(Validation {
            bad_records,
            min_user_fraction: self.fraction(MIN_USER_FRACTION, DEFAULT_MIN_USER_FRACTION)?,
            max_record_bytes: self.max_record_bytes()?,
            max_items: self.number(MAX_ITEMS, DEFAULT_MAX_ITEMS, 1)?,
        })
    }

    fn grace(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.number(RETENTION_GRACE_S, DEFAULT_RETENTION_GRACE_S, 0)?))
    }

    fn retention(&self) -> Result<Retention, ConfigError> {
        Ok(Retention {
            backups: self.small(BACKUPS, DEFAULT_BACKUPS, 0)?,
            grace: self.grace()?,
            abandon_after: Duration::from_secs(self.number(ABANDON_AFTER_S, DEFAULT_ABANDON_AFTER_S, 1)?),
        })
    }

    fn replica_acks(&self) -> Result<u32, ConfigError> {
        self.small(REPLICA_ACKS, 0, 0)
    }

    fn replication(&self) -> Result<Replication, ConfigError> {
        Ok(Replication { acks: self.replica_acks()?, timeout: Duration::from_millis(self.number(REPLICA_ACK_TIMEOUT_MS, 2000, 1)?) })
    }
}

/// A record longer than a chunk could never be read whole.
fn check_chunk_holds_a_record(chunk_bytes: u64, max_record_bytes: u64) -> Result<(), ConfigError> {
    if chunk_bytes < max_record_bytes {
        return Err(invalid(
            CHUNK_BYTES,
            &chunk_bytes.to_string(),
            &format!("must be at least {MAX_RECORD_BYTES} ({max_record_bytes}), or a record could be longer than a chunk"),
        ));
    }
    Ok(())
}

/// A reader may use a cached pointer for the TTL: its version must outlive it.
fn check_grace_outlives_pointer(grace: Duration, pointer_ttl: Duration) -> Result<(), ConfigError> {
    if grace <= pointer_ttl {
        return Err(invalid(
            RETENTION_GRACE_S,
            &grace.as_secs().to_string(),
            &format!(
                "must exceed {POINTER_TTL_MS} ({} ms): a reader may use a cached pointer that long, so its version must outlive it",
                pointer_ttl.as_millis()
            ),
        ));
    }
    Ok(())
}

/// Replica reads are safe only when writes wait for replicas.
fn check_replica_reads(redis: &RedisConfig, acks: u32) -> Result<(), ConfigError> {
    if redis.read_from_replicas && acks == 0 {
        return Err(invalid(
            READ_FROM_REPLICAS,
            "true",
            &format!("needs {REPLICA_ACKS} >= 1: without it a version can go live before its writes reach the replicas readers use"),
        ));
    }
    Ok(())
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError { var, value: value.to_string(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = from(&[]).unwrap();
        assert!(c.redis.cluster);
        assert_eq!(c.redis.urls, vec![DEFAULT_REDIS_URL]);
        assert_eq!(c.chunk_bytes, 8 * 1024 * 1024);
        assert_eq!(c.fields.user, "userId");
        assert_eq!(c.fields.items, "movieId");
        assert_eq!(c.default_dataset, "recommendations");
        assert_eq!(c.queues.chunks, None);
        assert_eq!(c.validation.bad_records, BadRecords::Strict);
        assert_eq!(c.validation.min_user_fraction, 0.5);
        assert_eq!(c.retention.backups, 1);
        assert_eq!(c.replication.acks, 0);
        assert!(!c.redis.read_from_replicas);
    }

    #[test]
    fn components_read_only_their_own_variables() {
        let all: Vec<&str> = ALL_VARS.to_vec();
        for (name, vars) in [
            ("planner", PlannerConfig::vars()),
            ("ingest", IngestConfig::vars()),
            ("serve", ServeConfig::vars()),
            ("janitor", JanitorConfig::vars()),
        ] {
            assert!(vars.iter().all(|v| all.contains(v)), "{name}: {vars:?}");
            assert!(vars.contains(&REDIS_URL) && vars.contains(&LOG_FORMAT), "{name}: {vars:?}");
        }
        let mut every = Config::vars();
        every.sort();
        let mut listed = all.clone();
        listed.sort();
        assert_eq!(every, listed, "ALL_VARS is what the full configuration reads");
        assert!(PlannerConfig::vars().contains(&CHUNKS_QUEUE_URL) && !ServeConfig::vars().contains(&CHUNKS_QUEUE_URL));
        assert!(ServeConfig::vars().contains(&POINTER_TTL_MS) && !IngestConfig::vars().contains(&POINTER_TTL_MS));
        assert!(JanitorConfig::vars().contains(&BACKUPS) && !IngestConfig::vars().contains(&BACKUPS));
    }

    fn lookup(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn each_component_checks_its_own_rules_at_start() {
        let e = PlannerConfig::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(e.var, CHUNKS_QUEUE_URL);
        let q = (CHUNKS_QUEUE_URL, "http://q");
        assert_eq!(PlannerConfig::from_lookup(lookup(&[q])).unwrap().chunks_queue_url, "http://q");
        assert_eq!(PlannerConfig::from_lookup(lookup(&[q, (CHUNK_BYTES, "1000")])).unwrap_err().var, CHUNK_BYTES);
        let short_grace = [(RETENTION_GRACE_S, "1"), (POINTER_TTL_MS, "1000")];
        assert_eq!(ServeConfig::from_lookup(lookup(&short_grace)).unwrap_err().var, RETENTION_GRACE_S);
        assert_eq!(JanitorConfig::from_lookup(lookup(&short_grace)).unwrap_err().var, RETENTION_GRACE_S);
        assert_eq!(ServeConfig::from_lookup(lookup(&[(READ_FROM_REPLICAS, "true")])).unwrap_err().var, READ_FROM_REPLICAS);
        assert!(ServeConfig::from_lookup(lookup(&[(READ_FROM_REPLICAS, "true"), (REPLICA_ACKS, "1")])).unwrap().redis.read_from_replicas);
        assert_eq!(IngestConfig::from_lookup(lookup(&[(LOG_FORMAT, "xml")])).unwrap_err().var, LOG_FORMAT);
        // The full configuration derives the same parts.
        let full = from(&[(ITEMS_FIELD, "items"), (POINTER_TTL_MS, "250")]).unwrap();
        let serve = full.serve();
        assert_eq!((serve.items_field.as_str(), serve.pointer_ttl), ("items", Duration::from_millis(250)));
        assert_eq!(full.planner("http://q").chunks_queue_url, "http://q");
    }

    #[test]
    fn the_auth_token_never_shows_in_debug_output() {
        let c = from(&[(REDIS_AUTH_TOKEN, "s3cr3t-t0ken")]).unwrap();
        assert_eq!(c.redis.auth, RedisAuth::Token(Secret::new("s3cr3t-t0ken")));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let c = from(&[(REDIS_AUTH_SECRET_ARN, "arn:aws:secretsmanager:eu-west-1:1:secret:x")]).unwrap();
        assert!(matches!(c.redis.auth, RedisAuth::SecretArn(_)));
    }

    #[test]
    fn lenient_mode_reads_its_threshold() {
        let c = from(&[(BAD_RECORDS, "lenient"), (MAX_BAD_FRACTION, "0.1")]).unwrap();
        assert_eq!(c.validation.bad_records, BadRecords::Lenient { max_fraction: 0.1 });
        assert_eq!(from(&[(BAD_RECORDS, "loose")]).unwrap_err().var, BAD_RECORDS);
        assert_eq!(from(&[(MIN_USER_FRACTION, "1.5")]).unwrap_err().var, MIN_USER_FRACTION);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[(CHUNK_BYTES, "lots")]).unwrap_err();
        assert_eq!(e.var, CHUNK_BYTES);
        assert!(e.to_string().contains("FS_CHUNK_BYTES"));
        assert_eq!(from(&[(REDIS_MODE, "sentinel")]).unwrap_err().var, REDIS_MODE);
        assert_eq!(from(&[(REDIS_URL, "http://x")]).unwrap_err().var, REDIS_URL);
        assert_eq!(from(&[(DEFAULT_DATASET, "a{b}")]).unwrap_err().var, DEFAULT_DATASET);
    }

    #[test]
    fn rules_between_variables_are_checked_at_start() {
        assert_eq!(from(&[(CHUNK_BYTES, "1000")]).unwrap_err().var, CHUNK_BYTES);
        assert!(from(&[(CHUNK_BYTES, "1000"), (MAX_RECORD_BYTES, "1000")]).is_ok());
        assert_eq!(from(&[(RETENTION_GRACE_S, "1"), (POINTER_TTL_MS, "1000")]).unwrap_err().var, RETENTION_GRACE_S);
        assert!(from(&[(RETENTION_GRACE_S, "2"), (POINTER_TTL_MS, "1000")]).is_ok());
        assert_eq!(from(&[(READ_FROM_REPLICAS, "true")]).unwrap_err().var, READ_FROM_REPLICAS);
        assert!(from(&[(READ_FROM_REPLICAS, "true"), (REPLICA_ACKS, "1")]).is_ok());
    }

    #[test]
    fn numbers_too_large_for_their_use_are_errors_not_truncated() {
        for var in [BACKUPS, REPLICA_ACKS, USERS_PER_BUCKET] {
            let e = from(&[(var, "4294967296")]).unwrap_err();
            assert_eq!(e.var, var);
        }
        assert_eq!(from(&[(USERS_PER_BUCKET, "4294967295")]).unwrap().users_per_bucket, u32::MAX);
    }

    #[test]
    fn a_password_in_the_redis_url_never_shows() {
        let c = from(&[(REDIS_URL, "rediss://default:hunter2-pw@cache.example:6379/0")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        assert_eq!(redact_url("redis://u:p@h:1"), "redis://u:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let e = from(&[(REDIS_URL, "http://u:hunter2@h")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn node_lists_are_split_on_commas() {
        let c = from(&[(REDIS_URL, "redis://a:1, redis://b:2"), (REDIS_MODE, "standalone")]).unwrap();
        assert_eq!(c.redis.urls, vec!["redis://a:1", "redis://b:2"]);
        assert!(!c.redis.cluster);
    }
}
