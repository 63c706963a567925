//! Serving for ranking services, through the handler the gateway calls (and,
//! for the API contract, over HTTP through the gateway) against the local
//! Redis Cluster: batch reads from one version, freshness and maximum age,
//! projection, the OpenAPI document held to the answers, and the serve path
//! under a flood of unknown dataset names.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{
    batch_generation, generation, request_with_body, unique, Credentials, Harness, Signer,
};
use serde_json::{json, Value};
use shared::db::settings;

async fn post_json(h: &Harness, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = request_with_body(
        &h.stack.app,
        "POST",
        path,
        None,
        body.to_string().as_bytes(),
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_reads_answer_every_id_in_order_from_one_version() {
    let h = Harness::start("batch").await;
    let ds = h.dataset.clone();
    let live = h
        .upload_and_wait("day1.jsonl", generation(1, 300, 5, 1))
        .await;

    // Found, unknown, repeated, string and number ids, in the request's
    // order; a repeat (`3` again) is answered once, in its first place.
    let ids = json!([3, "7", 999_999, 3, "u-404", 300]);
    let (status, v) = post_json(
        &h,
        &format!("/v1/{ds}/users:batchGet"),
        &json!({"userIds": ids}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["dataset"].as_str(),
            v["version"].as_str(),
            v["count"].as_u64(),
            v["found"].as_u64()
        ),
        (
            Some(ds.as_str()),
            Some(live.version.as_str()),
            Some(5),
            Some(3)
        )
    );
    let r = v["results"].as_array().unwrap();
    let statuses: Vec<&str> = r.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["found", "found", "unknown_user", "unknown_user", "found"]
    );
    assert_eq!(
        r.iter().map(|x| x["userId"].clone()).collect::<Vec<_>>(),
        [
            json!(3),
            json!(7),
            json!(999_999),
            json!("u-404"),
            json!(300)
        ]
    );
    assert_eq!(
        r[0]["items"],
        json!([100_030, 100_031, 100_032, 100_033, 100_034])
    );
    let repeated = (0..1000).map(|_| json!(3)).collect::<Vec<_>>();
    let (status, v) = post_json(
        &h,
        &format!("/v1/{ds}/users:batchGet"),
        &json!({"userIds": repeated}),
    )
    .await;
    assert_eq!(
        (status, v["count"].as_u64()),
        (200, Some(1)),
        "a thousand repeats of one id are one answer: {v}"
    );
    assert_eq!(
        (r[4]["count"].as_u64(), r[4]["fields"]["model"].as_str()),
        (Some(5), Some("g1"))
    );
    // The same users through the single-user route.
    for id in [3, 7, 300] {
        let (status, one) = h.get_json(&format!("/v1/{ds}/users/{id}")).await;
        assert_eq!(status, 200);
        let batch = r.iter().find(|x| x["userId"] == json!(id)).unwrap();
        assert_eq!(
            (&one["items"], &one["fields"], &one["count"]),
            (&batch["items"], &batch["fields"], &batch["count"]),
            "{id}"
        );
    }

    // One round trip per primary for a whole batch (the pointer cached).
    let app = serve::http::App::new(
        h.config.serve(),
        serve::Reader::new(h.stack.redis.clone(), Duration::from_secs(60)),
    );
    let body = json!({"userIds": (1..=200).collect::<Vec<u64>>(), "limit": 1}).to_string();
    request_with_body(
        &app,
        "POST",
        &format!("/v1/{ds}/users:batchGet"),
        None,
        body.as_bytes(),
    )
    .await;
    let before = app.client.reader().round_trips();
    let (status, _) = request_with_body(
        &app,
        "POST",
        &format!("/v1/{ds}/users:batchGet"),
        None,
        body.as_bytes(),
    )
    .await;
    let primaries = integration_tests::primary_ports(&h.config.redis.urls.join(","))
        .await
        .len() as u64;
    assert_eq!(
        (status, app.client.reader().round_trips() - before),
        (200, primaries),
        "200 users, {primaries} primaries"
    );

    // An answer past the response cap is refused with 413, naming the cap;
    // one that fits is answered.
    let mut capped = h.config.serve();
    capped.serving.max_response_bytes = 4096;
    let capped = serve::http::App::new(
        capped,
        serve::Reader::new(h.stack.redis.clone(), Duration::from_secs(60)),
    );
    let (status, text) = request_with_body(
        &capped,
        "POST",
        &format!("/v1/{ds}/users:batchGet"),
        None,
        body.as_bytes(),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("response_too_large")),
        "{text}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("4096"),
        "{text}"
    );
    let few = json!({"userIds": [1, 2, 3], "limit": 1}).to_string();
    let (status, text) = request_with_body(
        &capped,
        "POST",
        &format!("/v1/{ds}/users:batchGet"),
        None,
        few.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // Rank and limit cut per-item fields; a rank past a list is that user's status.
    let (_, v) = post_json(
        &h,
        &format!("/v1/{ds}/users:batchGet"),
        &json!({"userIds": [1, 2], "rank": 2}),
    )
    .await;
    assert_eq!(
        (
            v["results"][0]["item"].clone(),
            v["results"][0]["fields"]["scores"].clone()
        ),
        (json!(100_011), json!(0.9))
    );
    let (_, v) = post_json(
        &h,
        &format!("/v1/{ds}/users:batchGet?rank=6"),
        &json!({"userIds": [1]}),
    )
    .await;
    assert_eq!(v["results"][0]["status"], json!("rank_out_of_range"));
    let (_, v) = h.get_json(&format!("/v1/{ds}/users?ids=1,2&limit=2")).await;
    assert_eq!(
        (
            v["results"][1]["items"].clone(),
            v["results"][1]["fields"]["scores"].clone()
        ),
        (json!([100_020, 100_021]), json!([1.0, 0.9]))
    );

    // Projection: only the fields asked for, items included or not.
    let (_, v) = h
        .get_json(&format!("/v1/{ds}/users?ids=5&fields=scores"))
        .await;
    let only = v["results"][0].as_object().unwrap();
    assert_eq!(
        only.keys().cloned().collect::<BTreeSet<_>>(),
        ["fields", "status", "userId"].map(String::from).into()
    );
    assert_eq!(only["fields"], json!({"scores": [1.0, 0.9, 0.8, 0.7, 0.6]}));
    let (_, v) = post_json(
        &h,
        &format!("/v1/{ds}/users:batchGet"),
        &json!({"userIds": [5], "fields": ["items", "model"], "limit": 1}),
    )
    .await;
    assert_eq!(
        (
            v["results"][0]["items"].clone(),
            v["results"][0]["fields"].clone()
        ),
        (json!([100_050]), json!({"model": "g1"}))
    );
    let (_, one) = h.get_json(&format!("/v1/{ds}/users/5?fields=items")).await;
    assert_eq!(
        (one["count"].clone(), one["fields"].clone()),
        (json!(5), json!({}))
    );

    // An older version by name, for batches as for single reads.
    let next = h
        .upload_and_wait("day2.jsonl", generation(1, 300, 5, 2))
        .await;
    let (_, v) = h.get_json(&format!("/v1/{ds}/users?ids=1,2")).await;
    assert_eq!(
        (v["version"].as_str(), v["results"][0]["items"][0].clone()),
        (Some(next.version.as_str()), json!(200_010))
    );
    let (_, v) = h
        .get_json(&format!("/v1/{ds}/users?ids=1,2&version={}", live.version))
        .await;
    assert_eq!(
        (v["version"].as_str(), v["results"][0]["items"][0].clone()),
        (Some(live.version.as_str()), json!(100_010))
    );

    // Bad requests are 400s with the JSON error; a missing dataset a 404.
    let too_many: Vec<u64> = (0..1001).collect();
    for (body, says) in [
        (json!({"userIds": too_many}), "at most 1000 per request"),
        (json!({"userIds": []}), "no user ids"),
        (
            json!({"userIds": [1.5]}),
            "userIds[0] must be a string or a whole number",
        ),
        (json!({"userIds": [1], "rank": 0}), "body:"),
        (json!({"ids": [1]}), "body:"),
    ] {
        let (status, v) = post_json(&h, &format!("/v1/{ds}/users:batchGet"), &body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{body}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
    }
    let (status, text) = request_with_body(
        &h.stack.app,
        "POST",
        &format!("/v1/{ds}/users:batchGet"),
        None,
        b"{not json",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, v) = h
        .get_json(&format!("/v1/{}/users?ids=1", unique("nobody")))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_dataset"))
    );
}

/// Batch reads racing many flips: every answer's users all come from the
/// version it names, never some from the old batch and some from the new.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_read_during_flips_is_all_old_or_all_new() {
    let h = Arc::new(Harness::start("batch-flips").await);
    let ds = h.dataset.clone();
    h.upload_and_wait("g1.jsonl", generation(1, 400, 3, 1))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4u64 {
        let (h, ds, stop) = (h.clone(), ds.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut versions = BTreeSet::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<u64> = (0..100)
                    .map(|i| 1 + (i * 7 + r * 13 + reads) % 400)
                    .collect();
                let (status, v) = post_json(
                    &h,
                    &format!("/v1/{ds}/users:batchGet"),
                    &json!({"userIds": ids, "rank": 1}),
                )
                .await;
                assert_eq!(status, 200, "{v}");
                batch_generation(&v);
                versions.insert(v["version"].as_str().unwrap().to_string());
                reads += 1;
            }
            (reads, versions)
        }));
    }
    for g in 2..=9u64 {
        h.upload_and_wait(&format!("g{g}.jsonl"), generation(1, 400, 3, g))
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = BTreeSet::new();
    let mut reads = 0;
    for r in readers {
        let (n, versions) = r.await.unwrap();
        reads += n;
        seen.extend(versions);
    }
    assert!(
        seen.len() >= 4,
        "the reads met {} versions over 8 flips",
        seen.len()
    );
    assert!(reads >= 40, "{reads} batch reads");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_says_how_fresh_it_is_and_a_maximum_age_flags_or_refuses() {
    let mut o = integration_tests::options("fresh");
    let dataset = unique("default");
    o.config.default_dataset = dataset.clone();
    let h = Harness::start_with(o).await;
    h.stack
        .upload("sample.jsonl", generation(1, 20, 3, 1))
        .await
        .unwrap();
    let live = h
        .stack
        .wait_for_flip(&dataset, None, Duration::from_secs(60))
        .await
        .unwrap();
    let produced = shared::version_id::event_ms(&live.version).unwrap();

    let ds = &dataset;
    let (_, single) = h.get_json(&format!("/v1/{ds}/users/1")).await;
    let (_, batch) = h.get_json(&format!("/v1/{ds}/users?ids=1")).await;
    let (_, legacy) = h.get_json("/?userId=1&rank=1").await;
    for answer in [&single, &batch, &legacy] {
        let f = &answer["freshness"];
        assert_eq!(
            answer["version"].as_str(),
            Some(live.version.as_str()),
            "{answer}"
        );
        assert_eq!(
            f["producedAt"].as_str(),
            Some(shared::version_id::rfc3339_ms(produced).as_str()),
            "{answer}"
        );
        assert_eq!(
            f["liveSince"].as_str(),
            Some(shared::version_id::rfc3339_ms(live.since_ms).as_str()),
            "{answer}"
        );
        assert!(f["ageSeconds"].as_u64().unwrap() < 120, "{answer}");
        assert_eq!(
            (f["stale"].as_bool(), f["maxAgeSeconds"].clone()),
            (Some(false), Value::Null),
            "{answer}"
        );
    }

    // A dataset's own maximum age, set by the operator, flags stale answers.
    settings::set_max_age(
        &h.stack.redis,
        &shared::keys::DatasetKeys::new(ds).unwrap(),
        Some(Some(Duration::from_secs(1))),
    )
    .await
    .unwrap();
    // The batch must be older than the 1 s maximum age just set (whole
    // seconds: 2 s of age).
    let age_ms = shared::now_ms().saturating_sub(produced);
    tokio::time::sleep(Duration::from_millis(2_000u64.saturating_sub(age_ms))).await;
    let (status, v) = h.get_json(&format!("/v1/{ds}/users?ids=1,2")).await;
    assert_eq!(
        (
            status,
            v["freshness"]["stale"].as_bool(),
            v["freshness"]["maxAgeSeconds"].as_u64()
        ),
        (200, Some(true), Some(1)),
        "{v}"
    );
    let (_, v) = h.get_json("/?userId=1&rank=1").await;
    assert_eq!(v["freshness"]["stale"], json!(true));

    // Refused instead, where the deployment says so; a named version is still answered.
    let mut config = h.config.serve();
    config.serving.refuse_stale = true;
    let strict = serve::http::App::new(
        config,
        serve::Reader::new(h.stack.redis.clone(), Duration::ZERO),
    );
    let (status, text) =
        integration_tests::request(&strict, "GET", &format!("/v1/{ds}/users/1"), None).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("stale_data")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("past its maximum age of 1 s"),
        "{v}"
    );
    let (status, _) = integration_tests::request(
        &strict,
        "GET",
        &format!("/v1/{ds}/users/1?version={}", live.version),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // `none` lifts it for the dataset, whatever the deployment's default.
    settings::set_max_age(
        &h.stack.redis,
        &shared::keys::DatasetKeys::new(ds).unwrap(),
        Some(None),
    )
    .await
    .unwrap();
    let (status, _) =
        integration_tests::request(&strict, "GET", &format!("/v1/{ds}/users/1"), None).await;
    assert_eq!(status, 200);
}

/// A flood of made-up dataset names costs no Redis call and no memory per
/// name, and names no metric after them.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_dataset_names_cost_no_redis_calls_memory_or_metrics() {
    let h = Harness::start("flood").await;
    h.upload_and_wait("day.jsonl", generation(1, 10, 2, 1))
        .await;
    let (status, _) = h.get_json(&format!("/v1/{}/users/1", h.dataset)).await;
    assert_eq!(status, 200);
    let reader = h.stack.app.client.reader();
    let before = reader.round_trips();
    let started = std::time::Instant::now();
    let names = 3000;
    for i in 0..names {
        let (status, text) = integration_tests::request(
            &h.stack.app,
            "GET",
            &format!("/v1/{}/users/1", unique(&format!("x{i}"))),
            None,
        )
        .await;
        assert_eq!(status, 404, "{text}");
        assert!(text.contains("unknown_dataset"), "{text}");
    }
    let made = reader.round_trips() - before;
    // One read of the set of datasets per 250 ms at most.
    let allowed = 1 + started.elapsed().as_millis() as u64 / 250;
    assert!(
        made <= allowed,
        "{names} unknown names made {made} Redis calls (allowed {allowed})"
    );
    assert!(
        h.stack.app.client.reader().cached_datasets() <= 1,
        "the cache holds {} datasets",
        h.stack.app.client.reader().cached_datasets()
    );
    // Metrics: by dataset only for a dataset that exists.
    let metrics = shared::metrics::Metrics::new("FeatureStore");
    let app = serve::http::App {
        metrics,
        ..serve::http::App::new(
            h.config.serve(),
            serve::Reader::new(h.stack.redis.clone(), Duration::ZERO),
        )
    };
    for (path, dimension) in [
        (
            format!("/v1/{}/users/1", h.dataset),
            Some(h.dataset.clone()),
        ),
        (format!("/v1/{}/users/1", unique("typo")), None),
    ] {
        let req = serve::api::Request {
            method: "GET".into(),
            path,
            ..Default::default()
        };
        let (_, line) = app.respond_with_metrics(&req).await;
        let line: Value = serde_json::from_str(&line.expect("a metric line")).unwrap();
        assert_eq!(
            line.get("Dataset")
                .and_then(Value::as_str)
                .map(String::from),
            dimension,
            "{line}"
        );
        let dims = &line["_aws"]["CloudWatchMetrics"][0]["Dimensions"];
        assert_eq!(
            dims.as_array().unwrap().len(),
            if dimension.is_some() { 2 } else { 1 },
            "{line}"
        );
    }
}

/// One HTTP/1.1 request through the gateway, signed with the stack's
/// credentials: status, headers (lower-cased names) and body.
async fn over_http(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    accept: Option<&str>,
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    over_http_as(addr, method, target, accept, body, &signed()).await
}

/// [`over_http`] with other credentials.
async fn over_http_as(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    accept: Option<&str>,
    body: Option<&str>,
    credentials: &Credentials,
) -> (u16, Vec<(String, String)>, String) {
    let raw = integration_tests::raw_request(addr, method, target, accept, body, credentials);
    integration_tests::http_with_headers(addr, raw).await
}

/// The stack's credentials, signing now.
fn signed() -> Credentials {
    Credentials::SigV4(Signer::stack())
}

/// A request of the contract test: operation, status, method, target, accept, body.
type Case = (
    &'static str,
    u16,
    &'static str,
    String,
    Option<&'static str>,
    Option<String>,
);

/// The OpenAPI document against the running stack, over HTTP through the
/// gateway (in `iam` mode, as deployed by default): the document is valid
/// OpenAPI 3.1 (by openapi-spec-validator), every operation and status it
/// lists is exercised, and each answer validates against the document's
/// schema for it (by the `jsonschema` crate).
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_holds_for_every_route_and_status() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../serve/openapi.json");
    let out = std::process::Command::new(python)
        .args(["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('ok')", doc_path])
        .output()
        .expect("run openapi-spec-validator (installed by infra/local/deps.sh)");
    assert!(
        out.status.success(),
        "the OpenAPI document is not valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut o = integration_tests::options("contract");
    let dataset = unique("default");
    o.config.default_dataset = dataset.clone();
    o.config.serving.refuse_stale = true;
    // Small enough for a 50-user batch to pass it, large enough for the rest.
    o.config.serving.max_response_bytes = 2048;
    o.http = Some("127.0.0.1:0".parse().unwrap());
    o.auth = std::sync::Arc::new(
        integration_tests::local_stack::auth::GatewayAuth::from_env_with("iam").unwrap(),
    );
    let h = Harness::start_with(o).await;
    h.stack
        .upload("day.jsonl", generation(1, 50, 4, 1))
        .await
        .unwrap();
    let live = h
        .stack
        .wait_for_flip(&dataset, None, Duration::from_secs(60))
        .await
        .unwrap();
    let addr = h.stack.http_addr.unwrap();
    let doc: Value =
        serde_json::from_str(&over_http(addr, "GET", "/openapi.json", None, None).await.2)
            .expect("the gateway serves the document");
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(serve::api::OPENAPI).unwrap()
    );

    let ds = &dataset;
    let batch = format!("/v1/{ds}/users:batchGet");
    let v = &live.version;
    let mut cases: Vec<Case> = vec![
        ("get /", 200, "GET", "/?userId=1&rank=2".into(), None, None),
        ("get /", 200, "GET", "/?userId=1&rank=2".into(), Some("text/plain"), None),
        ("get /", 400, "GET", "/?userId=1&rank=0".into(), None, None),
        ("get /", 404, "GET", "/?userId=999&rank=1".into(), None, None),
        ("get /", 404, "GET", "/?userId=1&rank=9".into(), None, None),
        ("get /", 405, "POST", "/?userId=1&rank=1".into(), None, Some("{}".into())),
        ("get /v1/{dataset}/users/{userId}", 200, "GET", format!("/v1/{ds}/users/2"), None, None),
        ("get /v1/{dataset}/users/{userId}", 200, "GET", format!("/v1/{ds}/users/2?rank=1&fields=scores&version={v}"), None, None),
        ("get /v1/{dataset}/users/{userId}", 200, "GET", format!("/v1/{ds}/users/2?limit=2"), None, None),
        ("get /v1/{dataset}/users/{userId}", 400, "GET", format!("/v1/{ds}/users/2?rank=1&limit=2"), None, None),
        ("get /v1/{dataset}/users/{userId}", 404, "GET", format!("/v1/{ds}/users/404"), None, None),
        ("get /v1/{dataset}/users/{userId}", 404, "GET", format!("/v1/{}/users/1", unique("none")), None, None),
        ("get /v1/{dataset}/users/{userId}", 405, "DELETE", format!("/v1/{ds}/users/2"), None, None),
        ("get /v1/{dataset}/users", 200, "GET", format!("/v1/{ds}/users?ids=1,2,404&limit=1"), None, None),
        ("get /v1/{dataset}/users", 400, "GET", format!("/v1/{ds}/users?ids="), None, None),
        ("get /v1/{dataset}/users", 404, "GET", format!("/v1/{}/users?ids=1", unique("none")), None, None),
        ("get /v1/{dataset}/users", 405, "PUT", format!("/v1/{ds}/users?ids=1"), None, Some("{}".into())),
        ("post /v1/{dataset}/users:batchGet", 200, "POST", batch.clone(), None, Some(json!({"userIds": [1, "2", 404], "rank": 4}).to_string())),
        ("post /v1/{dataset}/users:batchGet", 200, "POST", format!("{batch}?fields=items"), None, Some(json!({"userIds": [3], "limit": 9}).to_string())),
        ("post /v1/{dataset}/users:batchGet", 400, "POST", batch.clone(), None, Some("[1, 2]".into())),
        ("post /v1/{dataset}/users:batchGet", 404, "POST", format!("/v1/{}/users:batchGet", unique("none")), None, Some(json!({"userIds": [1]}).to_string())),
        ("post /v1/{dataset}/users:batchGet", 404, "POST", batch.clone(), None, Some(json!({"userIds": [1], "version": "20200101T000000000Z-00000000000000000000000000000000-00000000"}).to_string())),
        ("post /v1/{dataset}/users:batchGet", 405, "GET", batch.clone(), None, None),
        ("get /openapi.json", 200, "GET", "/openapi.json".into(), None, None),
        ("get /openapi.json", 405, "POST", "/openapi.json".into(), None, Some("{}".into())),
        ("get /v1/{dataset}/users", 413, "GET", format!("/v1/{ds}/users?ids={}", (1..=50).map(|i| i.to_string()).collect::<Vec<_>>().join(",")), None, None),
        ("post /v1/{dataset}/users:batchGet", 413, "POST", batch.clone(), None, Some(json!({"userIds": (1..=50).collect::<Vec<u32>>()}).to_string())),
    ];
    // Unsigned (401) and wrongly signed (403) requests to every operation.
    let operations: Vec<(&str, &str, String, Option<String>)> = vec![
        ("get /", "GET", "/?userId=1&rank=1".into(), None),
        (
            "get /v1/{dataset}/users/{userId}",
            "GET",
            format!("/v1/{ds}/users/2"),
            None,
        ),
        (
            "get /v1/{dataset}/users",
            "GET",
            format!("/v1/{ds}/users?ids=1"),
            None,
        ),
        (
            "post /v1/{dataset}/users:batchGet",
            "POST",
            batch.clone(),
            Some(json!({"userIds": [1]}).to_string()),
        ),
        ("get /openapi.json", "GET", "/openapi.json".into(), None),
    ];
    let forged = Credentials::SigV4(Signer {
        secret: "forged".into(),
        ..Signer::stack()
    });
    let mut refusals: Vec<(Case, Credentials)> = Vec::new();
    for (op, method, target, body) in operations {
        refusals.push((
            (op, 401, method, target.clone(), None, body.clone()),
            Credentials::None,
        ));
        refusals.push(((op, 403, method, target, None, body), forged.clone()));
    }
    let stale: Vec<Case> = vec![
        ("get /", 503, "GET", "/?userId=1&rank=1".into(), None, None),
        (
            "get /v1/{dataset}/users/{userId}",
            503,
            "GET",
            format!("/v1/{ds}/users/1"),
            None,
            None,
        ),
        (
            "get /v1/{dataset}/users",
            503,
            "GET",
            format!("/v1/{ds}/users?ids=1"),
            None,
            None,
        ),
        (
            "post /v1/{dataset}/users:batchGet",
            503,
            "POST",
            batch.clone(),
            None,
            Some(json!({"userIds": [1]}).to_string()),
        ),
    ];
    let mut exercised = BTreeSet::new();
    let resolve = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{r} does not resolve"))
                .clone(),
            None => v.clone(),
        }
    };
    for round in 0..2 {
        if round == 1 {
            // Past the dataset's maximum age, the deployment refuses reads.
            settings::set_max_age(
                &h.stack.redis,
                &shared::keys::DatasetKeys::new(ds).unwrap(),
                Some(Some(Duration::from_secs(1))),
            )
            .await
            .unwrap();
            let produced = shared::version_id::event_ms(&live.version).unwrap();
            // Older than the 1 s maximum age just set (whole seconds: 2 s).
            let age_ms = shared::now_ms().saturating_sub(produced);
            tokio::time::sleep(Duration::from_millis(2_000u64.saturating_sub(age_ms))).await;
            cases = stale.clone();
        }
        let requests: Vec<(Case, Credentials)> = cases
            .iter()
            .map(|c| (c.clone(), signed()))
            .chain(if round == 0 {
                refusals.clone()
            } else {
                Vec::new()
            })
            .collect();
        for ((op, want, method, target, accept, body), credentials) in &requests {
            let (status, headers, text) =
                over_http_as(addr, method, target, *accept, body.as_deref(), credentials).await;
            assert_eq!(status, *want, "{method} {target}: {text}");
            let (op_method, op_path) = op.split_once(' ').unwrap();
            let answer = resolve(&doc["paths"][op_path][op_method]["responses"][want.to_string()]);
            assert!(answer.is_object(), "{op} lists no {want}");
            let content_type = headers
                .iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.split(';').next().unwrap().to_string())
                .unwrap();
            let schema = answer["content"][&content_type]["schema"].clone();
            assert!(
                schema.is_object(),
                "{op} {want} has no schema for {content_type}"
            );
            let instance = if content_type == "application/json" {
                serde_json::from_str(&text).unwrap()
            } else {
                Value::String(text.clone())
            };
            let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"], "allOf": [schema]});
            let validator =
                jsonschema::validator_for(&root).expect("the document's schemas compile");
            let errors: Vec<String> = validator
                .iter_errors(&instance)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {target} → {status} does not match the document: {errors:?}\n{text}"
            );
            let required = answer["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, h)| h["required"] == json!(true));
            for (header, _) in required {
                assert!(
                    headers.iter().any(|(k, _)| *k == header.to_lowercase()),
                    "{method} {target} → {status} lacks the {header} header"
                );
            }
            exercised.insert(format!("{op} {want}"));
        }
    }
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                listed.insert(format!("{method} {path} {status}"));
            }
        }
    }
    assert_eq!(
        exercised, listed,
        "every status the document lists is exercised, and no other"
    );
}
