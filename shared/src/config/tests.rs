use super::*;
use std::collections::HashMap;

fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let c = from(&[]).unwrap();
    assert!(c.redis.cluster);
    assert_eq!(c.redis.urls, vec!["redis://127.0.0.1:7001"]);
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
fn each_component_reads_exactly_the_variables_declared_for_it() {
    // Every variable set to a bad value: a component fails on the first
    // one it reads, so setting them one at a time tells which it reads.
    for reader in Reader::LAMBDAS {
        for var in ALL {
            let get = |k: &str| (k == var.name).then(|| "\u{1}bad".to_string());
            let read = match reader {
                Reader::Planner => PlannerConfig::from_lookup(|k| {
                    get(k).or_else(|| (k == CHUNKS_QUEUE_URL.name()).then(|| "http://q".into()))
                })
                .err(),
                Reader::Ingest => IngestConfig::from_lookup(get).err(),
                Reader::Serve => ServeConfig::from_lookup(get).err(),
                Reader::Janitor => JanitorConfig::from_lookup(get).err(),
                Reader::Fsctl => unreachable!(),
            };
            // Free-text variables take any value; the others refuse it.
            let free = [
                METRICS_NAMESPACE.name(),
                USER_FIELD.name(),
                ITEMS_FIELD.name(),
                BUCKET.name(),
                OUTPUT_FIELD.name(),
            ];
            let optional = var.default.is_none();
            if var.is_read_by(reader) && !free.contains(&var.name) && !optional {
                assert_eq!(
                    read.map(|e| e.var),
                    Some(var.name),
                    "{} reads {}",
                    reader.name(),
                    var.name
                );
            } else if !var.is_read_by(reader) {
                assert!(
                    read.is_none(),
                    "{} must not read {}: {read:?}",
                    reader.name(),
                    var.name
                );
            }
        }
    }
    assert!(
        PlannerConfig::vars().contains(&CHUNKS_QUEUE_URL.name())
            && !ServeConfig::vars().contains(&CHUNKS_QUEUE_URL.name())
    );
    assert!(
        ServeConfig::vars().contains(&POINTER_TTL_MS.name())
            && !IngestConfig::vars().contains(&POINTER_TTL_MS.name())
    );
    assert!(
        JanitorConfig::vars().contains(&BACKUPS.name())
            && !IngestConfig::vars().contains(&BACKUPS.name())
    );
}

#[test]
fn every_default_is_a_valid_value() {
    assert!(Config::from_lookup(|_| None).is_ok());
    let names: std::collections::HashSet<&str> = ALL.iter().map(|v| v.name).collect();
    assert_eq!(names.len(), ALL.len(), "each variable is declared once");
    assert!(ALL
        .iter()
        .all(|v| v.name.starts_with("FS_") && !v.readers.is_empty() && !v.doc.trim().is_empty()));
}

fn lookup(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn each_component_checks_its_own_rules_at_start() {
    let e = PlannerConfig::from_lookup(lookup(&[])).unwrap_err();
    assert_eq!(e.var, CHUNKS_QUEUE_URL.name());
    let q = (CHUNKS_QUEUE_URL.name(), "http://q");
    assert_eq!(
        PlannerConfig::from_lookup(lookup(&[q]))
            .unwrap()
            .chunks_queue_url,
        "http://q"
    );
    assert_eq!(
        PlannerConfig::from_lookup(lookup(&[q, (CHUNK_BYTES.name(), "1000")]))
            .unwrap_err()
            .var,
        CHUNK_BYTES.name()
    );
    let short_grace = [
        (RETENTION_GRACE_S.name(), "1"),
        (POINTER_TTL_MS.name(), "1000"),
    ];
    assert_eq!(
        ServeConfig::from_lookup(lookup(&short_grace))
            .unwrap_err()
            .var,
        RETENTION_GRACE_S.name()
    );
    assert_eq!(
        JanitorConfig::from_lookup(lookup(&short_grace))
            .unwrap_err()
            .var,
        RETENTION_GRACE_S.name()
    );
    assert_eq!(
        ServeConfig::from_lookup(lookup(&[(READ_FROM_REPLICAS.name(), "true")]))
            .unwrap_err()
            .var,
        READ_FROM_REPLICAS.name()
    );
    assert!(
        ServeConfig::from_lookup(lookup(&[
            (READ_FROM_REPLICAS.name(), "true"),
            (REPLICA_ACKS.name(), "1")
        ]))
        .unwrap()
        .redis
        .read_from_replicas
    );
    assert_eq!(
        IngestConfig::from_lookup(lookup(&[(LOG_FORMAT.name(), "xml")]))
            .unwrap_err()
            .var,
        LOG_FORMAT.name()
    );
    // The full configuration derives the same parts.
    let full = from(&[
        (ITEMS_FIELD.name(), "items"),
        (POINTER_TTL_MS.name(), "250"),
    ])
    .unwrap();
    let serve = full.serve();
    assert_eq!(
        (serve.items_field.as_str(), serve.pointer_ttl),
        ("items", Duration::from_millis(250))
    );
    assert_eq!(full.planner("http://q").chunks_queue_url, "http://q");
}

#[test]
fn the_auth_token_never_shows_in_debug_output() {
    let c = from(&[(REDIS_AUTH_TOKEN.name(), "s3cr3t-t0ken")]).unwrap();
    assert_eq!(c.redis.auth, RedisAuth::Token(Secret::new("s3cr3t-t0ken")));
    assert!(!format!("{c:?}").contains("s3cr3t"));
    let c = from(&[(
        REDIS_AUTH_SECRET_ARN.name(),
        "arn:aws:secretsmanager:eu-west-1:1:secret:x",
    )])
    .unwrap();
    assert!(matches!(c.redis.auth, RedisAuth::SecretArn(_)));
}

#[test]
fn lenient_mode_reads_its_threshold() {
    let c = from(&[
        (BAD_RECORDS.name(), "lenient"),
        (MAX_BAD_FRACTION.name(), "0.1"),
    ])
    .unwrap();
    assert_eq!(
        c.validation.bad_records,
        BadRecords::Lenient { max_fraction: 0.1 }
    );
    assert_eq!(
        from(&[(BAD_RECORDS.name(), "loose")]).unwrap_err().var,
        BAD_RECORDS.name()
    );
    assert_eq!(
        from(&[(MIN_USER_FRACTION.name(), "1.5")]).unwrap_err().var,
        MIN_USER_FRACTION.name()
    );
}

#[test]
fn bad_values_name_the_variable() {
    let e = from(&[(CHUNK_BYTES.name(), "lots")]).unwrap_err();
    assert_eq!(e.var, CHUNK_BYTES.name());
    assert!(e.to_string().contains("FS_CHUNK_BYTES"));
    assert_eq!(
        from(&[(REDIS_MODE.name(), "sentinel")]).unwrap_err().var,
        REDIS_MODE.name()
    );
    assert_eq!(
        from(&[(REDIS_URL.name(), "http://x")]).unwrap_err().var,
        REDIS_URL.name()
    );
    assert_eq!(
        from(&[(DEFAULT_DATASET.name(), "a{b}")]).unwrap_err().var,
        DEFAULT_DATASET.name()
    );
}

#[test]
fn rules_between_variables_are_checked_at_start() {
    assert_eq!(
        from(&[(CHUNK_BYTES.name(), "1000")]).unwrap_err().var,
        CHUNK_BYTES.name()
    );
    assert!(from(&[
        (CHUNK_BYTES.name(), "1000"),
        (MAX_RECORD_BYTES.name(), "1000")
    ])
    .is_ok());
    assert_eq!(
        from(&[
            (RETENTION_GRACE_S.name(), "1"),
            (POINTER_TTL_MS.name(), "1000")
        ])
        .unwrap_err()
        .var,
        RETENTION_GRACE_S.name()
    );
    assert!(from(&[
        (RETENTION_GRACE_S.name(), "2"),
        (POINTER_TTL_MS.name(), "1000")
    ])
    .is_ok());
    assert_eq!(
        from(&[(READ_FROM_REPLICAS.name(), "true")])
            .unwrap_err()
            .var,
        READ_FROM_REPLICAS.name()
    );
    assert!(from(&[
        (READ_FROM_REPLICAS.name(), "true"),
        (REPLICA_ACKS.name(), "1")
    ])
    .is_ok());
}

#[test]
fn numbers_too_large_for_their_use_are_errors_not_truncated() {
    for var in [BACKUPS.name(), REPLICA_ACKS.name(), USERS_PER_BUCKET.name()] {
        let e = from(&[(var, "4294967296")]).unwrap_err();
        assert_eq!(e.var, var);
    }
    assert_eq!(
        from(&[(USERS_PER_BUCKET.name(), "4294967295")])
            .unwrap()
            .users_per_bucket,
        u32::MAX
    );
}

#[test]
fn a_password_in_the_redis_url_never_shows() {
    let c = from(&[(
        REDIS_URL.name(),
        "rediss://default:hunter2-pw@cache.example:6379/0",
    )])
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
    assert_eq!(redact_url("redis://u:p@h:1"), "redis://u:***@h:1");
    assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    let e = from(&[(REDIS_URL.name(), "http://u:hunter2@h")]).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn node_lists_are_split_on_commas() {
    let c = from(&[
        (REDIS_URL.name(), "redis://a:1, redis://b:2"),
        (REDIS_MODE.name(), "standalone"),
    ])
    .unwrap();
    assert_eq!(c.redis.urls, vec!["redis://a:1", "redis://b:2"]);
    assert!(!c.redis.cluster);
}

#[test]
fn the_response_cap_stays_below_lambdas_limit() {
    assert_eq!(from(&[]).unwrap().serving.max_response_bytes, 4 << 20);
    assert_eq!(
        from(&[("FS_MAX_RESPONSE_BYTES", "6000000")])
            .unwrap()
            .serving
            .max_response_bytes,
        6_000_000
    );
    let e = from(&[("FS_MAX_RESPONSE_BYTES", "6291456")]).unwrap_err();
    assert!(e.to_string().contains("6 MB"), "{e}");
    assert_eq!(from(&[]).unwrap().serving.user_claim, None);
    assert_eq!(
        from(&[("FS_USER_CLAIM", "sub")])
            .unwrap()
            .serving
            .user_claim,
        Some("sub".to_string())
    );
}

#[test]
fn upload_limits_have_defaults_and_read_their_variables() {
    let l = from(&[]).unwrap().limits;
    assert_eq!(
        (
            l.max_decompressed_bytes,
            l.max_parquet_footer_bytes,
            l.max_row_group_bytes
        ),
        (4 << 30, 16 << 20, 256 << 20)
    );
    assert_eq!(
        (l.max_folder_files, l.max_event_ahead),
        (10_000, Duration::from_secs(300))
    );
    let l = from(&[("FS_MAX_FOLDER_FILES", "5"), ("FS_MAX_EVENT_AHEAD_S", "0")])
        .unwrap()
        .limits;
    assert_eq!((l.max_folder_files, l.max_event_ahead), (5, Duration::ZERO));
    assert!(from(&[("FS_MAX_DECOMPRESSED_BYTES", "10")]).is_err());
}
