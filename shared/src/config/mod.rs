// Over 500 lines: the configuration structs, their one reader and the rules between variables belong together (the table of variables is vars.rs).
//! # Configuration from the environment, read once per process
//!
//! Every variable is declared once, in [`vars`]: name, default, which
//! components read it, a one-line meaning and how its value is read. From
//! that table come the configuration structs (read by one function,
//! [`Config::read`]), each component's list of variables
//! ([`Component::vars`], what the SAM template must give it) and the
//! README's configuration table (tests hold both to it).
//!
//! Each Lambda has its own configuration ([`PlannerConfig`], [`IngestConfig`],
//! [`ServeConfig`], [`JanitorConfig`]) holding only what it uses: the part of
//! a [`Config`] read from the variables declared for it (the others keep
//! their defaults). The operator CLI and the local stack read every
//! variable into a [`Config`]. A bad value fails at start with the
//! variable's name.

use std::time::Duration;

pub use crate::record::Fields;

pub mod vars;

pub use vars::*;

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
    /// The `default` user's password.
    Token(Secret),
    /// A Redis ACL user (ElastiCache RBAC).
    User {
        name: String,
        password: Secret,
    },
    /// Read from Secrets Manager (see `boot::resolve_redis_auth`).
    SecretArn(String),
}

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
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
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
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
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

/// What one upload may cost: bounds on what a batch file makes the planner
/// and ingest read, hold and decompress, and on its event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLimits {
    pub max_decompressed_bytes: u64,
    pub max_parquet_footer_bytes: u64,
    pub max_row_group_bytes: u64,
    pub max_folder_files: u64,
    pub max_event_ahead: Duration,
}

/// What retention keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub backups: u32,
    pub grace: Duration,
    pub abandon_after: Duration,
}

/// Durability of writes before a chunk counts as done.
/// How serve answers: batch size, response size, freshness, and who may
/// read which user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    /// Most user ids one batch read may ask for.
    pub batch_max_users: usize,
    /// The default maximum age of a live batch (a dataset may set its own).
    pub max_age: Option<Duration>,
    /// Answer 503 `stale_data` instead of flagging a stale answer.
    pub refuse_stale: bool,
    /// Largest response body, in bytes; a batch read past it gets 413.
    pub max_response_bytes: usize,
    /// A verified JWT claim that must equal the path's user id.
    pub user_claim: Option<String>,
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

/// The Redis round trip ingest paces itself by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyTarget {
    /// Twice the quietest round trip measured, at least 1 ms.
    Auto,
    Fixed(Duration),
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
    pub rounds_mib: usize,
    pub max_users_per_s: Option<u64>,
    pub target_latency: Option<LatencyTarget>,
    pub bucket: String,
    pub validation: Validation,
    pub limits: UploadLimits,
    pub folders: FolderWait,
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
    pub limits: UploadLimits,
    /// Where a folder whose files are still arriving is sent back to, to be
    /// looked at again; without it such a folder fails at once.
    pub events_queue_url: Option<String>,
    pub folders: FolderWait,
}

/// How long a folder batch's marker waits for its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderWait {
    /// Quiet time after the last data file before an empty `_SUCCESS` plans.
    pub settle: Duration,
    /// Longest wait, from the marker's event time, before the version fails.
    pub max: Duration,
}

/// Ingest's configuration.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub redis: RedisConfig,
    pub metrics_namespace: String,
    pub log_format: LogFormat,
    pub fields: Fields,
    pub write_batch_users: usize,
    /// Memory for one worker's rounds (filling and in flight), in MiB.
    pub rounds_mib: usize,
    /// Most users one worker writes per second, if capped.
    pub max_users_per_s: Option<u64>,
    /// The round trip readers should see while a worker writes; `None`:
    /// no pacing by latency.
    pub target_latency: Option<LatencyTarget>,
    pub validation: Validation,
    pub limits: UploadLimits,
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

/// A Lambda's configuration: the part of a [`Config`] its variables make.
pub trait Component: Sized {
    /// Whose variables it reads.
    const READER: Reader;

    /// Its part of `config` (read with [`Self::READER`]'s variables).
    fn project(config: Config) -> Result<Self, ConfigError>;

    /// How to reach Redis (its AUTH token is resolved in place at cold start).
    fn redis_mut(&mut self) -> &mut RedisConfig;

    fn log_format(&self) -> LogFormat;

    /// Reads the process environment.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through `get`, so tests can pass a map.
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::project(Config::read(&Env {
            get: &get,
            reader: Some(Self::READER),
        })?)
    }

    /// The variables it reads, in the table's order.
    fn vars() -> Vec<&'static str> {
        ALL.iter()
            .filter(|v| v.is_read_by(Self::READER))
            .map(|v| v.name)
            .collect()
    }
}

impl Component for PlannerConfig {
    const READER: Reader = Reader::Planner;

    fn project(config: Config) -> Result<Self, ConfigError> {
        let queue = config.queues.chunks.clone().ok_or_else(|| {
            invalid(
                CHUNKS_QUEUE_URL.name(),
                "",
                "must be set to the chunks queue URL",
            )
        })?;
        Ok(config.planner(&queue))
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for IngestConfig {
    const READER: Reader = Reader::Ingest;

    fn project(config: Config) -> Result<Self, ConfigError> {
        Ok(config.ingest())
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for ServeConfig {
    const READER: Reader = Reader::Serve;

    fn project(config: Config) -> Result<Self, ConfigError> {
        Ok(config.serve())
    }

    fn redis_mut(&mut self) -> &mut RedisConfig {
        &mut self.redis
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl Component for JanitorConfig {
    const READER: Reader = Reader::Janitor;

    fn project(config: Config) -> Result<Self, ConfigError> {
        Ok(config.janitor())
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
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads every variable through `get`, so tests can pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env {
            get: &get,
            reader: None,
        })
    }

    /// The one reading of the environment: every setting through `env`,
    /// then the rules between variables that `env`'s reader reads.
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let redis = RedisConfig {
            urls: env.get(&REDIS_URL)?,
            cluster: env.get(&REDIS_MODE)?,
            timeout: env.get(&REDIS_TIMEOUT_MS)?,
            read_from_replicas: env.get(&READ_FROM_REPLICAS)?,
            auth: match (
                env.get(&REDIS_AUTH_TOKEN)?,
                env.get(&REDIS_AUTH_SECRET_ARN)?,
            ) {
                (Some(token), _) => RedisAuth::Token(token),
                (None, Some(arn)) => RedisAuth::SecretArn(arn),
                (None, None) => RedisAuth::None,
            },
            ca_file: env.get(&REDIS_CA_FILE)?,
        };
        let max_fraction = env.get(&MAX_BAD_FRACTION)?;
        let config = Config {
            redis,
            metrics_namespace: env.get(&METRICS_NAMESPACE)?,
            log_format: env.get(&LOG_FORMAT)?,
            chunk_bytes: env.get(&CHUNK_BYTES)?,
            default_dataset: env.get(&DEFAULT_DATASET)?,
            fields: Fields {
                user: env.get(&USER_FIELD)?,
                items: env.get(&ITEMS_FIELD)?,
                csv_item_separator: env.get(&CSV_ITEM_SEPARATOR)?,
                output: env.get(&OUTPUT_FIELD)?,
            },
            users_per_bucket: env.get(&USERS_PER_BUCKET)?,
            pointer_ttl: env.get(&POINTER_TTL_MS)?,
            serving: Serving {
                batch_max_users: env.get(&BATCH_MAX_USERS)?,
                max_age: env.get(&MAX_AGE_S)?,
                refuse_stale: env.get(&STALE_POLICY)?,
                max_response_bytes: env.get(&MAX_RESPONSE_BYTES)?,
                user_claim: env.get(&USER_CLAIM)?,
            },
            write_batch_users: env.get(&WRITE_BATCH_USERS)?,
            rounds_mib: env.get(&INGEST_ROUNDS_MIB)?,
            max_users_per_s: env.get(&INGEST_MAX_USERS_PER_S)?,
            target_latency: env.get(&INGEST_TARGET_LATENCY_MS)?,
            bucket: env.get(&BUCKET)?,
            validation: Validation {
                bad_records: if env.get(&BAD_RECORDS)? {
                    BadRecords::Lenient { max_fraction }
                } else {
                    BadRecords::Strict
                },
                min_user_fraction: env.get(&MIN_USER_FRACTION)?,
                max_record_bytes: env.get(&MAX_RECORD_BYTES)?,
                max_items: env.get(&MAX_ITEMS)?,
            },
            limits: UploadLimits {
                max_decompressed_bytes: env.get(&MAX_DECOMPRESSED_BYTES)?,
                max_parquet_footer_bytes: env.get(&MAX_PARQUET_FOOTER_BYTES)?,
                max_row_group_bytes: env.get(&MAX_ROW_GROUP_BYTES)?,
                max_folder_files: env.get(&MAX_FOLDER_FILES)?,
                max_event_ahead: env.get(&MAX_EVENT_AHEAD_S)?,
            },
            folders: FolderWait {
                settle: env.get(&FOLDER_SETTLE_S)?,
                max: env.get(&FOLDER_WAIT_MAX_S)?,
            },
            retention: Retention {
                backups: env.get(&BACKUPS)?,
                grace: env.get(&RETENTION_GRACE_S)?,
                abandon_after: env.get(&ABANDON_AFTER_S)?,
            },
            replication: Replication {
                acks: env.get(&REPLICA_ACKS)?,
                timeout: env.get(&REPLICA_ACK_TIMEOUT_MS)?,
            },
            queues: Queues {
                events: env.get(&EVENTS_QUEUE_URL)?,
                events_dlq: env.get(&EVENTS_DLQ_URL)?,
                chunks: env.get(&CHUNKS_QUEUE_URL)?,
                chunks_dlq: env.get(&CHUNKS_DLQ_URL)?,
            },
        };
        if env.reads(&USER_FIELD.var)
            && env.reads(&ITEMS_FIELD.var)
            && config.fields.user == config.fields.items
        {
            return Err(invalid(
                ITEMS_FIELD.name(),
                &config.fields.items,
                "must differ from the user field",
            ));
        }
        if env.reads(&CHUNK_BYTES.var) {
            check_chunk_holds_a_record(config.chunk_bytes, config.validation.max_record_bytes)?;
        }
        if env.reads(&POINTER_TTL_MS.var) && env.reads(&RETENTION_GRACE_S.var) {
            check_grace_outlives_pointer(config.retention.grace, config.pointer_ttl)?;
        }
        if env.reads(&READ_FROM_REPLICAS.var) {
            check_replica_reads(&config.redis, config.replication.acks)?;
        }
        Ok(config)
    }

    /// How writers reach Redis: primaries only, whatever readers do.
    fn primaries(&self) -> RedisConfig {
        RedisConfig {
            read_from_replicas: false,
            ..self.redis.clone()
        }
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
            limits: self.limits,
            events_queue_url: self.queues.events.clone(),
            folders: self.folders,
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
            rounds_mib: self.rounds_mib,
            max_users_per_s: self.max_users_per_s,
            target_latency: self.target_latency,
            validation: self.validation,
            limits: self.limits,
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
            serving: self.serving.clone(),
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

/// The environment as one reader sees it: a variable not declared for the
/// reader is not looked up, and keeps its default.
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    /// `None`: every variable (the operator CLI, the local stack).
    reader: Option<Reader>,
}

impl Env<'_> {
    fn reads(&self, var: &Var) -> bool {
        self.reader.is_none_or(|r| var.is_read_by(r))
    }

    /// The setting's value: the variable's, trimmed, when it is read and
    /// set to something other than blanks; its default otherwise.
    fn get<T>(&self, setting: &Setting<T>) -> Result<T, ConfigError> {
        let var = &setting.var;
        let value = if self.reads(var) {
            (self.get)(var.name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        } else {
            None
        };
        match value {
            Some(v) => (setting.parse)(&v).map_err(|reason| invalid(var.name, &v, &reason)),
            None => (setting.parse)(var.default.unwrap_or(""))
                .map_err(|reason| invalid(var.name, "(default)", &reason)),
        }
    }
}

/// A record longer than a chunk could never be read whole.
fn check_chunk_holds_a_record(chunk_bytes: u64, max_record_bytes: u64) -> Result<(), ConfigError> {
    if chunk_bytes < max_record_bytes {
        return Err(invalid(
            CHUNK_BYTES.name(),
            &chunk_bytes.to_string(),
            &format!("must be at least {} ({max_record_bytes}), or a record could be longer than a chunk", MAX_RECORD_BYTES.name()),
        ));
    }
    Ok(())
}

/// A reader may use a cached pointer for the TTL: its version must outlive it.
fn check_grace_outlives_pointer(grace: Duration, pointer_ttl: Duration) -> Result<(), ConfigError> {
    if grace <= pointer_ttl {
        return Err(invalid(
            RETENTION_GRACE_S.name(),
            &grace.as_secs().to_string(),
            &format!(
                "must exceed {} ({} ms): a reader may use a cached pointer that long, so its version must outlive it",
                POINTER_TTL_MS.name(),
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
            READ_FROM_REPLICAS.name(),
            "true",
            &format!("needs {} >= 1: without it a version can go live before its writes reach the replicas readers use", REPLICA_ACKS.name()),
        ));
    }
    Ok(())
}

/// A bad value of `var`; a password in it (a Redis URL's) is not shown.
fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        var,
        value: redact_url(value),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
