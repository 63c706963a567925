//! Configuration from the environment, read once per process.
//!
//! Every variable the Lambdas, the CLI and the local stack read is named here
//! (and nowhere else), with its default, so the SAM template and the README can
//! be checked against one list: [`ALL_VARS`].

use std::time::Duration;

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
];

/// The variables the planner reads.
pub const PLANNER_VARS: &[&str] = &[
    REDIS_URL, REDIS_MODE, REDIS_TIMEOUT_MS, REDIS_AUTH_SECRET_ARN, REDIS_AUTH_TOKEN, REDIS_CA_FILE,
    CHUNKS_QUEUE_URL, CHUNK_BYTES, DEFAULT_DATASET, USER_FIELD, USERS_PER_BUCKET, MAX_RECORD_BYTES, LOG_FORMAT,
    METRICS_NAMESPACE,
];
/// The variables ingest reads.
pub const INGEST_VARS: &[&str] = &[
    REDIS_URL, REDIS_MODE, REDIS_TIMEOUT_MS, REDIS_AUTH_SECRET_ARN, REDIS_AUTH_TOKEN, REDIS_CA_FILE,
    USER_FIELD, ITEMS_FIELD, WRITE_BATCH_USERS, BAD_RECORDS, MAX_BAD_FRACTION, MIN_USER_FRACTION, MAX_RECORD_BYTES,
    MAX_ITEMS, BACKUPS, RETENTION_GRACE_S, ABANDON_AFTER_S, REPLICA_ACKS, REPLICA_ACK_TIMEOUT_MS, LOG_FORMAT,
    METRICS_NAMESPACE,
];
/// The variables serve reads.
pub const SERVE_VARS: &[&str] = &[
    REDIS_URL, REDIS_MODE, REDIS_TIMEOUT_MS, REDIS_AUTH_SECRET_ARN, REDIS_AUTH_TOKEN, REDIS_CA_FILE,
    DEFAULT_DATASET, ITEMS_FIELD, POINTER_TTL_MS, READ_FROM_REPLICAS, RETENTION_GRACE_S, REPLICA_ACKS, LOG_FORMAT,
    METRICS_NAMESPACE,
];
/// The variables the janitor reads.
pub const JANITOR_VARS: &[&str] = &[
    REDIS_URL, REDIS_MODE, REDIS_TIMEOUT_MS, REDIS_AUTH_SECRET_ARN, REDIS_AUTH_TOKEN, REDIS_CA_FILE,
    BACKUPS, RETENTION_GRACE_S, ABANDON_AFTER_S, POINTER_TTL_MS, LOG_FORMAT, METRICS_NAMESPACE,
];
/// Variables for running locally only; deployments leave them out.
pub const LOCAL_ONLY_VARS: &[&str] = &[REDIS_AUTH_TOKEN, REDIS_CA_FILE];

/// A component, for reading only the variables it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Planner,
    Ingest,
    Serve,
    Janitor,
}

impl Component {
    /// Exactly the variables this component reads.
    pub fn vars(self) -> &'static [&'static str] {
        match self {
            Component::Planner => PLANNER_VARS,
            Component::Ingest => INGEST_VARS,
            Component::Serve => SERVE_VARS,
            Component::Janitor => JANITOR_VARS,
        }
    }
}

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
    /// Read from Secrets Manager (see [`crate::aws::resolve_redis_auth`]).
    SecretArn(String),
}

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:7001";
pub const DEFAULT_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_DATASET_NAME: &str = "recommendations";
pub const DEFAULT_USER_FIELD: &str = "userId";
pub const DEFAULT_ITEMS_FIELD: &str = "movieId";
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

/// Field names of batch records.
#[derive(Clone, Debug)]
pub struct Fields {
    pub user: String,
    pub items: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields { user: DEFAULT_USER_FIELD.into(), items: DEFAULT_ITEMS_FIELD.into() }
    }
}

/// Everything any component reads from the environment. Components use the
/// parts they need; [`Config::chunks_queue_url`] is checked by the planner.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis: RedisConfig,
    /// CloudWatch namespace of emitted metrics.
    pub metrics_namespace: String,
    pub chunks_queue_url: Option<String>,
    pub chunk_bytes: u64,
    pub default_dataset: String,
    pub fields: Fields,
    pub users_per_bucket: u32,
    pub pointer_ttl: Duration,
    pub write_batch_users: usize,
    pub bucket: String,
    pub validation: Validation,
    pub retention: Retention,
    pub replication: Replication,
    pub queues: Queues,
}

impl Config {
    /// Reads the process environment (every variable: the operator CLI).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads only the variables `component` uses; others keep their defaults.
    pub fn for_component(component: Component) -> Result<Self, ConfigError> {
        let vars = component.vars();
        Self::from_lookup(|k| if vars.contains(&k) { std::env::var(k).ok() } else { None })
    }

    /// Reads configuration through `get`, so tests can pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = |var: &'static str, default: &str| -> String {
            get(var).filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_string())
        };
        let redis_mode = text(REDIS_MODE, "cluster");
        let cluster = match redis_mode.as_str() {
            "cluster" => true,
            "standalone" => false,
            _ => return Err(invalid(REDIS_MODE, &redis_mode, "expected `cluster` or `standalone`")),
        };
        let urls: Vec<String> = text(REDIS_URL, DEFAULT_REDIS_URL)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(invalid(REDIS_URL, &redact_url(u), "expected redis:// or rediss:// URLs"));
            }
        }
        let default_dataset = text(DEFAULT_DATASET, DEFAULT_DATASET_NAME);
        crate::db::keys::validate_dataset(&default_dataset)
            .map_err(|e| invalid(DEFAULT_DATASET, &default_dataset, &e.to_string()))?;
        let fields = Fields { user: text(USER_FIELD, DEFAULT_USER_FIELD), items: text(ITEMS_FIELD, DEFAULT_ITEMS_FIELD) };
        if fields.user == fields.items {
            return Err(invalid(ITEMS_FIELD, &fields.items, "must differ from the user field"));
        }
        let bad_records = match text(BAD_RECORDS, "strict").as_str() {
            "strict" => BadRecords::Strict,
            "lenient" => BadRecords::Lenient { max_fraction: fraction(&get, MAX_BAD_FRACTION, DEFAULT_MAX_BAD_FRACTION)? },
            other => return Err(invalid(BAD_RECORDS, other, "expected `strict` or `lenient`")),
        };
        let read_from_replicas = match text(READ_FROM_REPLICAS, "false").as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => return Err(invalid(READ_FROM_REPLICAS, other, "expected `true` or `false`")),
        };
        let url = |var: &str| get(var).filter(|v| !v.trim().is_empty());
        let config = Config {
            redis: RedisConfig {
                urls,
                cluster,
                timeout: Duration::from_millis(number(&get, REDIS_TIMEOUT_MS, DEFAULT_REDIS_TIMEOUT_MS, 1)?),
                read_from_replicas,
                auth: match (url(REDIS_AUTH_TOKEN), url(REDIS_AUTH_SECRET_ARN)) {
                    (Some(t), _) => RedisAuth::Token(Secret::new(t)),
                    (None, Some(arn)) => RedisAuth::SecretArn(arn),
                    (None, None) => RedisAuth::None,
                },
                ca_file: url(REDIS_CA_FILE),
            },
            metrics_namespace: text(METRICS_NAMESPACE, "FeatureStore"),
            validation: Validation {
                bad_records,
                min_user_fraction: fraction(&get, MIN_USER_FRACTION, DEFAULT_MIN_USER_FRACTION)?,
                max_record_bytes: number(&get, MAX_RECORD_BYTES, DEFAULT_MAX_RECORD_BYTES, 64)?,
                max_items: number(&get, MAX_ITEMS, DEFAULT_MAX_ITEMS, 1)?,
            },
            retention: Retention {
                backups: small(&get, BACKUPS, DEFAULT_BACKUPS, 0)?,
                grace: Duration::from_secs(number(&get, RETENTION_GRACE_S, DEFAULT_RETENTION_GRACE_S, 0)?),
                abandon_after: Duration::from_secs(number(&get, ABANDON_AFTER_S, DEFAULT_ABANDON_AFTER_S, 1)?),
            },
            replication: Replication {
                acks: small(&get, REPLICA_ACKS, 0, 0)?,
                timeout: Duration::from_millis(number(&get, REPLICA_ACK_TIMEOUT_MS, 2000, 1)?),
            },
            queues: Queues {
                events: url(EVENTS_QUEUE_URL),
                events_dlq: url(EVENTS_DLQ_URL),
                chunks: url(CHUNKS_QUEUE_URL),
                chunks_dlq: url(CHUNKS_DLQ_URL),
            },
            chunks_queue_url: get(CHUNKS_QUEUE_URL).filter(|v| !v.is_empty()),
            chunk_bytes: number(&get, CHUNK_BYTES, DEFAULT_CHUNK_BYTES, 1)?,
            default_dataset,
            fields,
            users_per_bucket: small(&get, USERS_PER_BUCKET, DEFAULT_USERS_PER_BUCKET as u64, 1)?,
            pointer_ttl: Duration::from_millis(number(&get, POINTER_TTL_MS, DEFAULT_POINTER_TTL_MS, 0)?),
            write_batch_users: number(&get, WRITE_BATCH_USERS, DEFAULT_WRITE_BATCH_USERS as u64, 1)? as usize,
            bucket: text(BUCKET, DEFAULT_BUCKET),
        };
        config.check()?;
        Ok(config)
    }

    /// Rules between variables, checked at start so a deployment that breaks
    /// one fails at once with the variables named.
    fn check(&self) -> Result<(), ConfigError> {
        if self.chunk_bytes < self.validation.max_record_bytes {
            return Err(invalid(
                CHUNK_BYTES,
                &self.chunk_bytes.to_string(),
                &format!("must be at least {MAX_RECORD_BYTES} ({}), or a record could be longer than a chunk", self.validation.max_record_bytes),
            ));
        }
        if self.retention.grace <= self.pointer_ttl {
            return Err(invalid(
                RETENTION_GRACE_S,
                &self.retention.grace.as_secs().to_string(),
                &format!(
                    "must exceed {POINTER_TTL_MS} ({} ms): a reader may use a cached pointer that long, so its version must outlive it",
                    self.pointer_ttl.as_millis()
                ),
            ));
        }
        if self.redis.read_from_replicas && self.replication.acks == 0 {
            return Err(invalid(
                READ_FROM_REPLICAS,
                "true",
                &format!("needs {REPLICA_ACKS} >= 1: without it a version can go live before its writes reach the replicas readers use"),
            ));
        }
        Ok(())
    }

    /// The chunks queue URL, required by the planner.
    pub fn require_chunks_queue(&self) -> Result<&str, ConfigError> {
        self.chunks_queue_url
            .as_deref()
            .ok_or_else(|| invalid(CHUNKS_QUEUE_URL, "", "must be set to the chunks queue URL"))
    }
}

fn number(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64, min: u64) -> Result<u64, ConfigError> {
    match get(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(invalid(var, &v, &format!("expected a whole number >= {min}"))),
        },
    }
}

/// [`number`] that must fit a `u32`.
fn small(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64, min: u64) -> Result<u32, ConfigError> {
    let n = number(get, var, default, min)?;
    u32::try_from(n).map_err(|_| invalid(var, &n.to_string(), &format!("expected a whole number from {min} to {}", u32::MAX)))
}

fn fraction(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: f64) -> Result<f64, ConfigError> {
    match get(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => Err(invalid(var, &v, "expected a number from 0 to 1")),
        },
    }
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
        assert!(c.require_chunks_queue().is_err());
        assert_eq!(c.validation.bad_records, BadRecords::Strict);
        assert_eq!(c.validation.min_user_fraction, 0.5);
        assert_eq!(c.retention.backups, 1);
        assert_eq!(c.replication.acks, 0);
        assert!(!c.redis.read_from_replicas);
    }

    #[test]
    fn components_read_only_their_own_variables() {
        for c in [Component::Planner, Component::Ingest, Component::Serve, Component::Janitor] {
            let vars = c.vars();
            assert!(vars.iter().all(|v| !v.is_empty() && ALL_VARS.contains(v)), "{c:?}");
            let mut sorted = vars.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), vars.len(), "{c:?} lists a variable twice");
        }
        assert!(PLANNER_VARS.contains(&CHUNKS_QUEUE_URL) && !SERVE_VARS.contains(&CHUNKS_QUEUE_URL));
        assert!(SERVE_VARS.contains(&POINTER_TTL_MS) && !INGEST_VARS.contains(&POINTER_TTL_MS));
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
