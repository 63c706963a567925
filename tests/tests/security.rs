//! Who may do what, through the real path.
//!
//! The API refuses callers without valid credentials, through the local
//! gateway as API Gateway's authorizers would on AWS: in `iam` mode a
//! request must carry a valid, fresh SigV4 signature; in `jwt` mode a token
//! from the configured issuer, and (with a user claim) reads only its user.
//! A refused request costs no Redis call.
//!
//! Each role reaches Redis as its own ACL user (`infra/redis-users.acl`):
//! serve's user reads and cannot write; no role may run admin commands or
//! touch keys outside the key schema.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use integration_tests::local_stack::auth::{self, GatewayAuth, Jwt};
use integration_tests::{raw_request, Credentials, Harness, Signer};
use serde_json::Value;

async fn call(
    h: &Harness,
    method: &str,
    target: &str,
    body: Option<&str>,
    credentials: &Credentials,
) -> (u16, Value) {
    let addr = h.stack.http_addr.unwrap();
    let raw = raw_request(addr, method, target, None, body, credentials);
    let (status, _, text) = integration_tests::http_with_headers(addr, raw).await;
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {text}"));
    (status, v)
}

async fn stack(name: &str, auth: GatewayAuth, user_claim: Option<&str>) -> Harness {
    let mut o = integration_tests::options(name);
    o.http = Some("127.0.0.1:0".parse().unwrap());
    o.auth = Arc::new(auth);
    o.config.serving.user_claim = user_claim.map(str::to_string);
    let h = Harness::start_with(o).await;
    let mut body = String::new();
    for u in 1..=20 {
        body.push_str(&format!("{{\"userId\": {u}, \"movieId\": [{u}1, {u}2]}}\n"));
    }
    h.upload_and_wait("day.jsonl", body.into_bytes()).await;
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn iam_mode_answers_only_requests_signed_with_the_stacks_credentials() {
    let iam = match GatewayAuth::from_env_with("iam") {
        Ok(GatewayAuth::Iam(iam)) => iam,
        other => panic!("iam mode from the stack's environment: {other:?}"),
    };
    let h = stack("iam", GatewayAuth::Iam(iam.clone()), None).await;
    let ds = h.dataset.clone();
    let user = format!("/v1/{ds}/users/3?limit=1");
    let batch = format!("/v1/{ds}/users:batchGet");
    let good = Signer::stack();

    let (status, v) = call(&h, "GET", &user, None, &Credentials::SigV4(good.clone())).await;
    assert_eq!(
        (status, &v["items"]),
        (200, &serde_json::json!([31])),
        "{v}"
    );
    let (status, v) = call(
        &h,
        "POST",
        &batch,
        Some(r#"{"userIds": [1, 2]}"#),
        &Credentials::SigV4(good.clone()),
    )
    .await;
    assert_eq!((status, v["found"].as_u64()), (200, Some(2)), "{v}");

    let before = h.stack.app.client.reader().round_trips();
    let wrong_secret = Signer {
        secret: "not-the-secret".into(),
        ..good.clone()
    };
    let unknown_key = Signer {
        access_key: "AKIDUNKNOWN".into(),
        ..good.clone()
    };
    let expired = Signer {
        at: SystemTime::now() - Duration::from_secs(10 * 60),
        ..good.clone()
    };
    let other_region = Signer {
        region: "eu-west-1".into(),
        ..good.clone()
    };
    for (what, creds, want, code) in [
        ("unsigned", Credentials::None, 401, "missing_authentication"),
        (
            "a token",
            Credentials::Bearer("x.y.z".into()),
            403,
            "invalid_signature",
        ),
        (
            "a wrong secret",
            Credentials::SigV4(wrong_secret),
            403,
            "invalid_signature",
        ),
        (
            "an unknown key",
            Credentials::SigV4(unknown_key),
            403,
            "invalid_signature",
        ),
        (
            "signed 10 minutes ago",
            Credentials::SigV4(expired),
            403,
            "signature_expired",
        ),
        (
            "another region",
            Credentials::SigV4(other_region),
            403,
            "invalid_signature",
        ),
    ] {
        for (method, target, body) in [
            ("GET", user.as_str(), None),
            ("GET", "/?userId=1&rank=1", None),
            ("POST", batch.as_str(), Some(r#"{"userIds": [1, 2]}"#)),
        ] {
            let (status, v) = call(&h, method, target, body, &creds).await;
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (want, Some(code)),
                "{what}: {method} {target}: {v}"
            );
        }
    }
    // A signature over one request does not carry over to another: the
    // same headers on another user's path, or on another body.
    let addr = h.stack.http_addr.unwrap();
    let signed = raw_request(
        addr,
        "GET",
        &user,
        None,
        None,
        &Credentials::SigV4(good.clone()),
    );
    let moved = signed.replacen("/users/3?", "/users/4?", 1);
    let (status, _, text) = integration_tests::http_with_headers(addr, moved).await;
    assert_eq!(status, 403, "a signature moved to another path: {text}");
    let signed = raw_request(
        addr,
        "POST",
        &batch,
        None,
        Some(r#"{"userIds": [1, 2]}"#),
        &Credentials::SigV4(good.clone()),
    );
    let swapped = signed.replacen(r#"[1, 2]"#, r#"[1, 7]"#, 1);
    let (status, _, text) = integration_tests::http_with_headers(addr, swapped).await;
    assert_eq!(status, 403, "a signature on another body: {text}");
    assert_eq!(
        h.stack.app.client.reader().round_trips(),
        before,
        "refused requests make no Redis call"
    );

    // The README's signed call: curl's own SigV4.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--aws-sigv4",
            &format!("aws:amz:{}:execute-api", iam.region),
            "--user",
            &format!("{}:{}", good.access_key, good.secret),
            &format!("http://{addr}/v1/{ds}/users/5?rank=1"),
        ])
        .output()
        .expect("curl runs");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("curl: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["item"], serde_json::json!(51), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_mode_lets_a_token_read_only_its_own_user() {
    let jwt = match GatewayAuth::from_env_with("jwt") {
        Ok(GatewayAuth::Jwt(jwt)) => jwt,
        other => panic!("jwt mode from the stack's environment: {other:?}"),
    };
    let h = stack("jwt", GatewayAuth::Jwt(jwt.clone()), Some("sub")).await;
    let ds = h.dataset.clone();
    let key = std::fs::read(std::env::var(auth::vars::JWT_PRIVATE_KEY_FILE).unwrap()).unwrap();
    let token = |sub: &str, ttl: u64| {
        auth::mint(
            &key,
            &jwt.issuer,
            &jwt.audience,
            sub,
            Duration::from_secs(ttl),
        )
        .unwrap()
    };
    let user3 = Credentials::Bearer(token("3", 300));

    let (status, v) = call(&h, "GET", &format!("/v1/{ds}/users/3"), None, &user3).await;
    assert_eq!((status, v["userId"].as_u64()), (200, Some(3)), "{v}");

    let before = h.stack.app.client.reader().round_trips();
    // Another user, a batch, through the claim check in serve: 403.
    for (method, target, body) in [
        ("GET", format!("/v1/{ds}/users/4"), None),
        ("GET", "/?userId=4&rank=1".to_string(), None),
        ("GET", format!("/v1/{ds}/users?ids=3"), None),
        (
            "POST",
            format!("/v1/{ds}/users:batchGet"),
            Some(r#"{"userIds": [3]}"#),
        ),
    ] {
        let (status, v) = call(&h, method, &target, body, &user3).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {target}: {v}"
        );
    }
    // No token, a bad one, an expired one, one from another key or for
    // another audience: 401 at the gateway.
    let other_key = {
        let dir = std::env::temp_dir().join(integration_tests::unique("jwt-key"));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("k.pem");
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&pem)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl makes a key");
        std::fs::read(pem).unwrap()
    };
    let foreign = auth::mint(
        &other_key,
        &jwt.issuer,
        &jwt.audience,
        "3",
        Duration::from_secs(300),
    )
    .unwrap();
    let wrong_audience = auth::mint(
        &key,
        &jwt.issuer,
        "someone-else",
        "3",
        Duration::from_secs(300),
    )
    .unwrap();
    let expired = token("3", 0);
    // exp = now: past a second later, as the gateway gives no leeway.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (what, creds, code) in [
        ("no token", Credentials::None, "missing_authentication"),
        (
            "garbage",
            Credentials::Bearer("not-a-token".into()),
            "invalid_token",
        ),
        ("another key", Credentials::Bearer(foreign), "invalid_token"),
        (
            "another audience",
            Credentials::Bearer(wrong_audience),
            "invalid_token",
        ),
        ("expired", Credentials::Bearer(expired), "invalid_token"),
        (
            "a signature",
            Credentials::SigV4(Signer::stack()),
            "missing_authentication",
        ),
    ] {
        let (status, v) = call(&h, "GET", &format!("/v1/{ds}/users/3"), None, &creds).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (401, Some(code)),
            "{what}: {v}"
        );
    }
    assert_eq!(
        h.stack.app.client.reader().round_trips(),
        before,
        "refused requests make no Redis call"
    );
}

#[test]
fn a_mode_without_its_settings_or_an_unknown_mode_is_an_error() {
    assert!(matches!(
        GatewayAuth::from_env_with("none"),
        Ok(GatewayAuth::None)
    ));
    let e = GatewayAuth::from_env_with("oauth").unwrap_err().to_string();
    assert!(e.contains("expected `none`, `iam` or `jwt`"), "{e}");
    let e = match Jwt::new("i", "a", b"not a key") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a bad key is refused"),
    };
    assert!(e.contains("not an EC public key"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_is_its_own_redis_user_and_serve_cannot_write() {
    use integration_tests::local_stack::stack::RedisUsers;
    use shared::db::protocol::Dataset;
    use shared::db::store::Redis;
    let users = RedisUsers::from_env()
        .unwrap()
        .expect("the local stack makes the Redis users");
    // The whole pipeline ran with the writer's and serve's users (the
    // harness gives every test stack those), and serves.
    let mut o = integration_tests::options("users");
    o.http = Some("127.0.0.1:0".parse().unwrap());
    let h = Harness::start_with(o).await;
    let live = h
        .upload_and_wait(
            "day.jsonl",
            b"{\"userId\": 1, \"movieId\": [7, 8]}\n".to_vec(),
        )
        .await;
    let (status, v) = call(
        &h,
        "GET",
        &format!("/v1/{}/users/1", h.dataset),
        None,
        &Credentials::None,
    )
    .await;
    assert_eq!(
        (status, &v["items"]),
        (200, &serde_json::json!([7, 8])),
        "{v}"
    );

    let connect = |auth| {
        let mut cfg = h.config.redis.clone();
        cfg.auth = auth;
        async move {
            Redis::connect_checked(&cfg)
                .await
                .expect("the role's user connects")
        }
    };
    let serve = connect(users.serve.clone()).await;
    let writer = connect(users.writer.clone()).await;
    let keys = h.keys();
    // Serve's user reads through the protocol…
    let p = Dataset::of(&serve, &keys).live().await.unwrap().unwrap();
    assert_eq!(p.version, live.version);
    assert!(Dataset::of(&serve, &keys)
        .read_user(&p.version, p.buckets, "1")
        .await
        .unwrap()
        .is_some());
    // …and is refused every write, script and admin command.
    let live_key = keys.live();
    let refused = |cmd: redis::Cmd, who: Redis, what: &'static str| async move {
        let e = cmd
            .query_async::<redis::Value>(&mut who.clone())
            .await
            .expect_err(what);
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{what}: {e}"
        );
    };
    refused(
        redis::cmd("SET").arg(&live_key).arg("x").clone(),
        serve.clone(),
        "serve SET",
    )
    .await;
    refused(
        redis::cmd("DEL").arg(&live_key).clone(),
        serve.clone(),
        "serve DEL",
    )
    .await;
    refused(
        redis::cmd("EVAL")
            .arg("return 1")
            .arg(1)
            .arg(&live_key)
            .clone(),
        serve.clone(),
        "serve EVAL",
    )
    .await;
    refused(
        redis::cmd("HSET")
            .arg(keys.versions())
            .arg("v")
            .arg("x")
            .clone(),
        serve.clone(),
        "serve HSET",
    )
    .await;
    // The writer writes the key schema's keys, but nothing else, and no admin command.
    refused(
        redis::cmd("SET").arg("elsewhere").arg("x").clone(),
        writer.clone(),
        "writer outside fs:*",
    )
    .await;
    refused(
        redis::cmd("FLUSHALL").clone(),
        writer.clone(),
        "writer FLUSHALL",
    )
    .await;
    refused(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("1")
            .clone(),
        writer.clone(),
        "writer CONFIG",
    )
    .await;
    refused(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("intruder")
            .arg("on")
            .clone(),
        writer.clone(),
        "writer ACL SETUSER",
    )
    .await;
    // Nothing changed.
    assert_eq!(h.live().await.unwrap().version, live.version);
}

/// A stack whose upload limits `set` changes; the dataset's next upload
/// settles as it would under them.
async fn limited(name: &str, set: impl FnOnce(&mut shared::config::UploadLimits)) -> Harness {
    let mut o = integration_tests::options(name);
    set(&mut o.config.limits);
    // The failed versions are looked at after they fail, before retention
    // would delete them.
    o.janitor = None;
    Harness::start_with(o).await
}

fn assert_failed(info: &shared::db::protocol::VersionInfo, limit: &str) {
    assert_eq!(info.state, shared::db::protocol::State::Failed, "{info:?}");
    let reason = info.reason.as_deref().unwrap_or_default();
    assert!(reason.contains(limit), "the reason names {limit}: {reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_past_a_limit_fails_its_version_with_the_limit_as_reason() {
    let jsonl = integration_tests::users(2000, 7);

    // A compressed file that decompresses past the cap (gzip by the system's
    // own tool): the version fails, and nothing goes live.
    let h = limited("limit-gzip", |l| l.max_decompressed_bytes = 64 * 1024).await;
    let gz = integration_tests::compressed_by("gzip", &jsonl);
    assert!(gz.len() < 64 * 1024 && jsonl.len() > 64 * 1024);
    let info = h
        .upload_settled(&h.dataset, "day.jsonl.gz", gz.clone())
        .await;
    assert_failed(&info, "FS_MAX_DECOMPRESSED_BYTES");
    assert!(h.live().await.is_none());
    // Under a cap it fits, the same file goes live.
    let h = limited("limit-gzip-ok", |l| l.max_decompressed_bytes = 16 << 20).await;
    let info = h.upload_settled(&h.dataset, "day.jsonl.gz", gz).await;
    assert_eq!(info.state, shared::db::protocol::State::Live, "{info:?}");

    // A Parquet footer (pyarrow's) past the cap.
    let parquet = integration_tests::parquet_by("pyarrow", &jsonl, &[]);
    let h = limited("limit-footer", |l| l.max_parquet_footer_bytes = 256).await;
    let info = h
        .upload_settled(&h.dataset, "day.parquet", parquet.clone())
        .await;
    assert_failed(&info, "FS_MAX_PARQUET_FOOTER_BYTES");

    // A row group bigger than ingest may hold.
    let h = limited("limit-rowgroup", |l| l.max_row_group_bytes = 8 * 1024).await;
    let info = h.upload_settled(&h.dataset, "day.parquet", parquet).await;
    assert_failed(&info, "FS_MAX_ROW_GROUP_BYTES");
    assert!(info.reason.unwrap().contains("row group 0"));

    // A folder batch of more files than allowed.
    let h = limited("limit-folder", |l| l.max_folder_files = 2).await;
    let parts: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("part-{i}.jsonl"),
                format!("{{\"userId\": {i}, \"movieId\": [1]}}\n").into_bytes(),
            )
        })
        .collect();
    let files: Vec<(&str, Vec<u8>)> = parts.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let info = h
        .upload_folder(&h.dataset, "run-1", &files, ("_SUCCESS", Vec::new()))
        .await;
    assert_failed(&info, "FS_MAX_FOLDER_FILES");

    // An event time an hour ahead of the clock, as a wrong clock upstream
    // would send: planned through the handler, the version fails.
    let mut o = integration_tests::options("limit-future");
    o.planner.concurrency = 0;
    o.ingest.concurrency = 0;
    // Retention would delete the failed version before it is looked at.
    o.janitor = None;
    let h = Harness::start_with(o).await;
    let key = format!("{}/day.jsonl", h.dataset);
    h.stack.upload(&key, jsonl).await.unwrap();
    let events = h.object_events().await;
    let ahead = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let stamp = ahead
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap();
    let body = integration_tests::at_time(&events[&key], &stamp);
    ingest::plan::handle(&h.planner_deps(), integration_tests::sqs_event(&[body]))
        .await
        .unwrap();
    let failed = h.stack.failed_versions(&h.dataset).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_failed(&failed[0], "FS_MAX_EVENT_AHEAD_S");
    assert!(
        h.drain(&h.stack.topology.chunks_url).await.is_empty(),
        "no chunk is sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_no_user_id_at_info_level() {
    use std::sync::Mutex;
    use tracing::instrument::WithSubscriber;

    /// Every line the subscriber writes, kept.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let h = Harness::start("logs").await;
    let secret = "u-4711-private";
    h.upload_and_wait(
        "day.jsonl",
        format!("{{\"userId\": \"{secret}\", \"movieId\": [1, 2]}}\n").into_bytes(),
    )
    .await;
    let app = serve::http::App::new(
        h.config.serve(),
        serve::Reader::new(h.stack.redis.clone(), Duration::from_secs(1)),
    );
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let ds = h.dataset.clone();
    async {
        for (method, target, body) in [
            ("GET", format!("/v1/{ds}/users/{secret}"), String::new()),
            (
                "GET",
                format!("/v1/{ds}/users/{secret}-unknown"),
                String::new(),
            ),
            ("GET", format!("/v1/{ds}/users?ids={secret}"), String::new()),
            (
                "POST",
                format!("/v1/{ds}/users:batchGet"),
                format!("{{\"userIds\": [\"{secret}\", 7]}}"),
            ),
            (
                "GET",
                format!("/v1/{ds}/users/{secret}?rank=0"),
                String::new(),
            ),
        ] {
            let (status, text) =
                integration_tests::request_with_body(&app, method, &target, None, body.as_bytes())
                    .await;
            assert!(status < 500, "{target}: {text}");
        }
    }
    .with_subscriber(subscriber)
    .await;
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logged.contains("4711"),
        "serve's info-level logs name a user: {logged}"
    );
}
