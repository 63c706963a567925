//! The client library rankers link, against the local Redis Cluster and
//! connected as serve's read-only Redis user: the same answers as the HTTP
//! API, one version per call across flips, a pinned version, freshness
//! refused when asked, and every error with the API's code.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use featurestore::{BatchId, Client, Error, Options, Select, View};
use integration_tests::local_stack::stack::RedisUsers;
use integration_tests::{batch_generation, generation, unique, Harness};
use serde_json::{json, Value};

/// A client as serve's read-only Redis user, with `options`.
async fn client(h: &Harness, options: Options) -> Client {
    let users = RedisUsers::from_env()
        .unwrap()
        .expect("the local stack makes the Redis users");
    let mut cfg = h.config.redis.clone();
    cfg.auth = users.serve;
    Client::connect(&cfg, options).await.expect("connects")
}

fn fresh() -> Options {
    Options {
        pointer_ttl: Duration::ZERO,
        ..Options::default()
    }
}

fn parsed(body: &str) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap();
    // The age is read at the moment of each answer; the rest must match.
    v["freshness"]["ageSeconds"] = Value::Null;
    v
}

fn code(e: Error) -> (u16, &'static str) {
    (e.status, e.code)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_answers_as_the_http_api_does() {
    let h = Harness::start("client").await;
    let ds = h.dataset.clone();
    let first = h
        .upload_and_wait("day1.jsonl", generation(1, 50, 5, 1))
        .await;
    let c = client(&h, fresh()).await;

    // One user, cut and projected, is the HTTP API's answer.
    let view = View::new(Select::of(None, Some(2)).unwrap(), Some(["items", "model"])).unwrap();
    let a = c.get(&ds, "3", &view, None).await.unwrap();
    let (status, http) = h
        .get_json(&format!("/v1/{ds}/users/3?limit=2&fields=items,model"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(parsed(&a.body), parsed(&http.to_string()));
    assert_eq!(parsed(&a.body)["items"], json!([100_030, 100_031]));
    assert_eq!((a.version.as_str(), a.users), (first.version.as_str(), 1));

    // A batch: found, unknown, a repeat dropped, string and number ids.
    let ids = BatchId::dedup(vec![
        BatchId::number(3),
        BatchId::text("7").unwrap(),
        BatchId::number(999_999),
        BatchId::number(3),
        BatchId::text("u-404").unwrap(),
    ]);
    let rank2 = View::new(Select::of(Some(2), None).unwrap(), None::<[&str; 0]>).unwrap();
    let b = c.batch_get(&ds, &ids, &rank2, None).await.unwrap();
    let (status, http) = h
        .get_json(&format!("/v1/{ds}/users?ids=3,7,999999,3,u-404&rank=2"))
        .await;
    assert_eq!(status, 200);
    let mut from_http = parsed(&http.to_string());
    // The query string has no numbers: the API echoes "999999" as given.
    from_http["results"][2]["userId"] = json!(999_999);
    assert_eq!(parsed(&b.body), from_http);
    let statuses: Vec<Value> = parsed(&b.body)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("found"),
            json!("found"),
            json!("unknown_user"),
            json!("unknown_user")
        ]
    );

    // A second batch goes live; the first stays readable by name.
    let second = h
        .upload_and_wait("day2.jsonl", generation(1, 50, 5, 2))
        .await;
    let all = View::default();
    let now = parsed(&c.get(&ds, "3", &all, None).await.unwrap().body);
    let pinned = c.get(&ds, "3", &all, Some(&first.version)).await.unwrap();
    assert_eq!(
        (now["version"].as_str(), now["items"][0].as_u64()),
        (Some(second.version.as_str()), Some(200_030))
    );
    assert_eq!(
        (
            pinned.version.as_str(),
            parsed(&pinned.body)["items"][0].as_u64()
        ),
        (first.version.as_str(), Some(100_030))
    );

    // Every refusal, with the API's status and code.
    let nobody = unique("nobody");
    // Well formed, never uploaded.
    let last = if first.version.ends_with('x') {
        "y"
    } else {
        "x"
    };
    let missing = format!("{}{last}", &first.version[..first.version.len() - 1]);
    for (got, want) in [
        (
            c.get(&nobody, "3", &all, None).await,
            (404, "unknown_dataset"),
        ),
        (c.get(&ds, "404", &all, None).await, (404, "unknown_user")),
        (
            c.get(&ds, "3", &all, Some("not-a-version")).await,
            (400, "invalid_request"),
        ),
        (
            c.get(&ds, "3", &all, Some(&missing)).await,
            (404, "unknown_version"),
        ),
        (c.get(&ds, "", &all, None).await, (400, "invalid_request")),
        (
            c.get(
                &ds,
                "3",
                &View::new(Select::of(Some(9), None).unwrap(), None::<[&str; 0]>).unwrap(),
                None,
            )
            .await,
            (404, "rank_out_of_range"),
        ),
        (
            c.get("no such/name", "3", &all, None).await,
            (400, "invalid_request"),
        ),
    ] {
        assert_eq!(got.map_err(code).err(), Some(want), "{want:?}");
    }
    assert_eq!(
        Select::of(Some(1), Some(2)).map_err(code).err(),
        Some((400, "invalid_request"))
    );
    assert_eq!(
        View::new(Select::All, Some([""])).map_err(code).err(),
        Some((400, "invalid_request"))
    );

    // A maximum age the live batch is past: flagged by default, refused when asked.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let strict = Options {
        max_age: Some(Duration::from_secs(1)),
        ..fresh()
    };
    let flagged = client(&h, strict.clone()).await;
    let a = flagged.get(&ds, "3", &all, None).await.unwrap();
    assert!(a.freshness.is_stale());
    assert_eq!(parsed(&a.body)["freshness"]["stale"], json!(true));
    let refusing = client(
        &h,
        Options {
            refuse_stale: true,
            ..strict
        },
    )
    .await;
    assert_eq!(
        refusing.get(&ds, "3", &all, None).await.map_err(code).err(),
        Some((503, "stale_data"))
    );
    // A pinned version is what the caller asked for: answered, flagged.
    assert!(refusing
        .get(&ds, "3", &all, Some(&second.version))
        .await
        .unwrap()
        .freshness
        .is_stale());
}

/// Batch reads through the library racing flips: every answer's users all
/// come from the version it names.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_batch_read_during_flips_is_all_old_or_all_new() {
    let h = Arc::new(Harness::start("client-flips").await);
    let ds = h.dataset.clone();
    h.upload_and_wait("g1.jsonl", generation(1, 400, 3, 1))
        .await;
    let c = Arc::new(
        client(
            &h,
            Options {
                pointer_ttl: Duration::from_millis(20),
                ..Options::default()
            },
        )
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4u64 {
        let (c, ds, stop) = (c.clone(), ds.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut versions = BTreeSet::new();
            let mut reads = 0u64;
            let view = View::new(Select::of(Some(1), None).unwrap(), None::<[&str; 0]>).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<BatchId> = (0..100)
                    .map(|i| BatchId::number(1 + ((i * 7 + r * 13 + reads) % 400) as i64))
                    .collect();
                let a = c.batch_get(&ds, &ids, &view, None).await.unwrap();
                let v: Value = serde_json::from_str(&a.body).unwrap();
                batch_generation(&v);
                assert_eq!(v["version"].as_str(), Some(a.version.as_str()));
                versions.insert(a.version);
                reads += 1;
            }
            (reads, versions)
        }));
    }
    for g in 2..=7u64 {
        h.upload_and_wait(&format!("g{g}.jsonl"), generation(1, 400, 3, g))
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut seen, mut reads) = (BTreeSet::new(), 0);
    for r in readers {
        let (n, versions) = r.await.unwrap();
        reads += n;
        seen.extend(versions);
    }
    assert!(
        seen.len() >= 3,
        "the reads met {} versions over 6 flips",
        seen.len()
    );
    assert!(reads >= 40, "{reads} batch reads");
}

/// The Python package (built into a fresh venv by `make test`), its pytest
/// suite run against a dataset this harness loads, and flipped while the
/// suite's last test reads.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_package_passes_its_tests_against_the_stack() {
    let python = std::env::var("FS_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/../target/python-venv/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: `make python-venv` builds the wheel and installs it there"
    );
    let users = RedisUsers::from_env()
        .unwrap()
        .expect("the local stack makes the Redis users");
    let shared::config::RedisAuth::User { name, password } = users.serve else {
        panic!("serve's Redis user has a name")
    };
    let h = Harness::start("python").await;
    let first = h
        .upload_and_wait("g1.jsonl", generation(1, 400, 3, 1))
        .await;
    let live = h
        .upload_and_wait("g2.jsonl", generation(1, 400, 3, 2))
        .await;
    let signals = std::env::temp_dir().join(unique("pytest-signals"));
    std::fs::create_dir_all(&signals).unwrap();
    let mut pytest = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{}/../python/tests", env!("CARGO_MANIFEST_DIR")))
        .env("FS_TEST_REDIS_URL", h.config.redis.urls.join(","))
        .env("FS_TEST_REDIS_USER", name)
        .env("FS_TEST_REDIS_PASSWORD", password.expose())
        .env("FS_TEST_DATASET", &h.dataset)
        .env("FS_TEST_FIRST_VERSION", &first.version)
        .env("FS_TEST_LIVE_VERSION", &live.version)
        .env("FS_TEST_SIGNAL_DIR", &signals)
        .kill_on_drop(true)
        .spawn()
        .expect("pytest starts");
    // Flips, from when the suite's flip test asks until the suite ends.
    let mut generation_no = 3u64;
    let status = loop {
        if let Some(status) = pytest.try_wait().unwrap() {
            break status;
        }
        if signals.join("start-flips").exists() && generation_no < 40 {
            h.upload_and_wait(
                &format!("g{generation_no}.jsonl"),
                generation(1, 400, 3, generation_no),
            )
            .await;
            generation_no += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = std::fs::remove_dir_all(&signals);
    assert!(status.success(), "pytest failed: {status}");
    assert!(
        generation_no > 5,
        "the suite ended after {} flips",
        generation_no - 3
    );
}
