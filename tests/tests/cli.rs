//! The operator CLI, run as a binary against the local stack, and the
//! retention paths it drives (abandoned versions, orphaned keys).

use std::process::Command;
use std::time::Duration;

use fsctl::generate::{self, Options};
use integration_tests::{binary, eventually, unique, Harness};
use redis::AsyncCommands;
use serde_json::Value;
use shared::db::protocol::{self, State};

fn fsctl(h: &Harness, args: &[&str]) -> (bool, Value, String) {
    fsctl_with(h, args, &[])
}

/// [`fsctl`] with more environment variables set. It connects as the
/// operator's Redis user, as on AWS.
fn fsctl_with(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let t = &h.stack.topology;
    let users = local_stack::stack::RedisUsers::from_env().unwrap();
    let urls = match users.map(|u| u.operator) {
        Some(shared::config::RedisAuth::User { name, password }) => h
            .config
            .redis
            .urls
            .iter()
            .map(|u| u.replacen("://", &format!("://{name}:{}@", password.expose()), 1))
            .collect::<Vec<_>>()
            .join(","),
        _ => h.config.redis.urls.join(","),
    };
    let out = Command::new(binary("fsctl"))
        .args(args)
        .env(shared::config::REDIS_URL.name(), urls)
        .env(shared::config::BUCKET.name(), &t.bucket)
        .env(shared::config::EVENTS_QUEUE_URL.name(), &t.events_url)
        .env(shared::config::EVENTS_DLQ_URL.name(), &t.events_dlq_url)
        .env(shared::config::CHUNKS_QUEUE_URL.name(), &t.chunks_url)
        .env(shared::config::CHUNKS_DLQ_URL.name(), &t.chunks_dlq_url)
        .envs(env.iter().copied())
        .output()
        .expect("run fsctl (built by `make test`)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        stdout + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn fsctl_operates_the_store_end_to_end() {
    let h = Harness::start("cli").await;
    let ds = h.dataset.clone();
    for cmd in [
        "status", "versions", "get", "upload", "redrive", "rollback", "promote", "forget", "gc",
        "generate",
    ] {
        let (ok, _, out) = fsctl(&h, &[cmd, "--help"]);
        assert!(ok && out.contains("Usage"), "{cmd} --help: {out}");
    }
    let dir = std::env::temp_dir().join(unique("cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("day1.jsonl"), dir.join("day2.json"));
    let (ok, _, out) = fsctl(
        &h,
        &[
            "generate",
            "--users",
            "500",
            "--items",
            "4",
            "--scores",
            "--out",
            a.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let (ok, _, out) = fsctl(
        &h,
        &[
            "generate",
            "--users",
            "500",
            "--format",
            "table",
            "--seed",
            "7",
            "--out",
            b.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");

    let (ok, first, out) = fsctl(
        &h,
        &[
            "--json",
            "upload",
            a.to_str().unwrap(),
            "--dataset",
            &ds,
            "--wait",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        (first["state"].as_str(), first["users"].as_u64()),
        (Some("live"), Some(500)),
        "{first}"
    );
    let (ok, second, out) = fsctl(
        &h,
        &[
            "--json",
            "upload",
            b.to_str().unwrap(),
            "--dataset",
            &ds,
            "--wait",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(second["state"], "live");

    let (ok, status, out) = fsctl(&h, &["--json", "status", &ds]);
    assert!(ok, "{out}");
    let d = &status["datasets"][0];
    assert_eq!(d["live"]["version"], second["version"]);
    assert_eq!(d["live"]["users"], 500);
    assert_eq!(d["backups"][0]["version"], first["version"]);
    assert_eq!(status["queues"]["chunks_dlq"], 0);
    let (ok, _, human) = fsctl(&h, &["status", &ds]);
    assert!(
        ok && human.contains("live") && human.contains("chunks DLQ 0"),
        "{human}"
    );

    let (ok, versions, _) = fsctl(&h, &["--json", "versions", &ds]);
    assert!(ok);
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let (ok, user, out) = fsctl(
        &h,
        &[
            "--json",
            "get",
            &ds,
            "7",
            "--version",
            first["version"].as_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(user["items"].as_array().unwrap().len(), 4);
    assert_eq!(user["fields"]["scores"].as_array().unwrap().len(), 4);

    // Lists print versions short; commands take any unique prefix, `live`
    // or `previous`; a prefix of two versions is refused, naming both.
    let (v1, v2) = (
        first["version"].as_str().unwrap(),
        second["version"].as_str().unwrap(),
    );
    let short = fsctl::names::SHORT_LEN;
    for args in [&["versions", ds.as_str()][..], &["status", ds.as_str()]] {
        let (ok, _, human) = fsctl(&h, args);
        assert!(
            ok && human.contains(&v1[..short])
                && human.contains(&v2[..short])
                && !human.contains(v1)
                && !human.contains(v2),
            "{args:?}: {human}"
        );
        let (ok, _, human) = fsctl(&h, &[&["--full"][..], args].concat());
        assert!(
            ok && human.contains(v1) && human.contains(v2),
            "--full {args:?}: {human}"
        );
    }
    for (name, expected) in [
        ("previous", v1),
        ("live", v2),
        (&v1[..short], v1),
        (&v2[..short], v2),
    ] {
        let (ok, user, out) = fsctl(&h, &["--json", "get", &ds, "7", "--version", name]);
        assert!(ok, "{name}: {out}");
        assert_eq!(user["version"].as_str(), Some(expected), "{name}");
    }
    let common = v1
        .bytes()
        .zip(v2.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let (ok, _, out) = fsctl(&h, &["get", &ds, "7", "--version", &v1[..common]]);
    assert!(
        !ok && out.contains("starts 2 versions")
            && out.contains(&v1[..short])
            && out.contains(&v2[..short]),
        "{out}"
    );

    let (ok, moved, out) = fsctl(&h, &["--json", "rollback", &ds]);
    assert!(ok, "{out}");
    assert_eq!(moved["live"], first["version"]);
    let (ok, status, _) = fsctl(&h, &["--json", "status", &ds]);
    assert!(ok);
    assert_eq!(status["datasets"][0]["rolled_back_from"], second["version"]);
    let (ok, user, out) = fsctl(&h, &["--json", "get", &ds, "7", "--version", "live"]);
    assert!(ok && user["version"] == first["version"], "{out}");
    let (ok, _, out) = fsctl(&h, &["promote", &ds, &v1[..short]]);
    assert!(ok && out.contains("already live"), "{out}");
    let (ok, _, out) = fsctl(&h, &["--json", "promote", &ds, "nope"]);
    assert!(!ok && out.contains("error"), "{out}");

    // Forgetting a user reaches the live version and the one rolled back from.
    let (ok, forgot, out) = fsctl(&h, &["--json", "forget", &ds, "7"]);
    assert!(ok, "{out}");
    assert_eq!(
        forgot["versions"].as_array().map(Vec::len),
        Some(2),
        "{forgot}"
    );
    for v in [v1, v2] {
        let (ok, _, out) = fsctl(&h, &["get", &ds, "7", "--version", v]);
        assert!(!ok && out.contains("not in version"), "{v}: {out}");
    }
    let (ok, _, human) = fsctl(&h, &["status", &ds]);
    assert!(
        ok && human.contains("deltas     1 applied since live"),
        "{human}"
    );
    let (ok, versions, out) = fsctl(&h, &["--json", "versions", &ds]);
    assert!(ok, "{out}");
    assert!(
        versions
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["deltas"] == 1),
        "the forget is in both: {versions}"
    );

    let (ok, redriven, out) = fsctl(&h, &["--json", "redrive"]);
    assert!(ok, "{out}");
    assert_eq!(redriven["moved"].as_array().unwrap().len(), 2);
    assert!(redriven["abandoned"].is_array(), "{redriven}");
    let (ok, gc, out) = fsctl(&h, &["--json", "gc", &ds, "--deep"]);
    assert!(ok, "{out}");
    assert_eq!(gc[0]["orphan_keys"], 0);
}

/// Every layout `fsctl generate` writes goes live through `fsctl upload`,
/// files and folders, and a folder without its marker shows as waiting.
#[tokio::test(flavor = "multi_thread")]
async fn fsctl_generates_every_format_and_uploads_folders_marker_last() {
    let h = Harness::start("cli-formats").await;
    let dir = std::env::temp_dir().join(unique("formats"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        ("a.parquet", &["--format", "parquet", "--scores"], "parquet"),
        (
            "b.csv.gz",
            &["--format", "csv", "--compress", "gzip", "--string-ids"],
            "csv+gzip",
        ),
        ("c.jsonl.zst", &["--compress", "zstd"], "json-lines+zstd"),
        ("spark", &["--format", "parquet", "--files", "3"], "parquet"),
        (
            "manifest",
            &["--format", "csv", "--files", "2", "--marker", "manifest"],
            "csv",
        ),
        (
            "sagemaker",
            &["--format", "sagemaker", "--files", "2", "--scores"],
            "json-lines",
        ),
    ];
    for (name, args, format) in cases {
        let ds = unique("fmt");
        let path = dir.join(name);
        let mut all = vec![
            "generate",
            "--users",
            "300",
            "--items",
            "4",
            "--out",
            path.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let (ok, _, out) = fsctl(&h, &all);
        assert!(ok, "{name}: {out}");
        let (ok, up, out) = fsctl(
            &h,
            &[
                "--json",
                "upload",
                path.to_str().unwrap(),
                "--dataset",
                &ds,
                "--wait",
            ],
        );
        assert!(ok, "{name}: {out}");
        assert_eq!(
            (up["state"].as_str(), up["users"].as_u64()),
            (Some("live"), Some(300)),
            "{name}: {up}"
        );
        let keys = shared::keys::DatasetKeys::new(&ds).unwrap();
        let info = protocol::Dataset::of(&h.stack.redis, &keys)
            .version_info(up["version"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.format, *format, "{name}");
        let (ok, user, out) = fsctl(
            &h,
            &[
                "--json",
                "get",
                &ds,
                if args.contains(&"--string-ids") {
                    "u300"
                } else {
                    "300"
                },
            ],
        );
        assert!(ok, "{name}: {out}");
        assert_eq!(
            user["items"].as_array().map(Vec::len),
            Some(4),
            "{name}: {user}"
        );
    }
    // Parts without a marker wait, and `status` says so.
    let ds = unique("fmt");
    for i in 0..2 {
        h.stack
            .upload(
                &format!("{ds}/run/part-{i}.jsonl"),
                format!("{{\"userId\": {i}, \"movieId\": [1]}}\n").into_bytes(),
            )
            .await
            .unwrap();
    }
    let human = eventually(
        "status to show the two waiting files",
        Duration::from_secs(30),
        || async {
            let (ok, _, human) = fsctl(&h, &["status", &ds]);
            assert!(ok, "{human}");
            if human.contains("2 files") {
                Ok(human)
            } else {
                Err(human)
            }
        },
    )
    .await;
    assert!(
        human.contains(&format!("waiting    {ds}/run/  2 files"))
            && human.contains("no `_SUCCESS` or `_manifest.json` yet"),
        "{human}"
    );
    assert!(!human.contains("did the job finish?"), "{human}");
    // Past `FS_ABANDON_AFTER_S` the line is in capitals and asks why: the
    // status below runs with it at 1 s, so the folder must have waited longer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, _, human) = fsctl_with(
        &h,
        &["status", &ds],
        &[(shared::config::ABANDON_AFTER_S.name(), "1")],
    );
    assert!(ok, "{human}");
    assert!(
        human.contains(&format!("WAITING    {ds}/run/  2 files"))
            && human.contains("(over 1 s: did the job finish?)"),
        "{human}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_uploads_go_in_parts() {
    let h = Harness::start("multipart").await;
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique("multipart")));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    generate::generate(
        &Options {
            users: 150_000,
            items: 20,
            ..Options::default()
        },
        &mut f,
    )
    .unwrap();
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size > fsctl::upload::PART_SIZE as u64,
        "{size} bytes make two parts"
    );
    let mut seen = Vec::new();
    let key = format!("{}/big.jsonl", h.dataset);
    let etag = fsctl::upload::put(
        &h.stack.s3,
        &h.stack.topology.bucket,
        &key,
        &path,
        fsctl::upload::Parts {
            from: 1024 * 1024,
            size: fsctl::upload::PART_SIZE,
        },
        |s| seen.push(s),
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 2, "one progress report per part");
    assert_eq!(*seen.last().unwrap(), size);
    assert!(etag.contains("-2"), "a multipart ETag: {etag}");
    let source = format!("s3://{}/{key}", h.stack.topology.bucket);
    let info = fsctl::upload::wait(
        &h.stack.redis,
        &h.dataset,
        &source,
        &etag,
        Duration::from_secs(120),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((info.state, info.users), (State::Live, 150_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_stuck_ingesting_are_abandoned_and_orphaned_keys_swept() {
    let mut o = integration_tests::options("abandon");
    o.ingest.concurrency = 0;
    // This test runs retention itself.
    o.janitor = None;
    o.config.retention.abandon_after = Duration::from_secs(1);
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let mut body = Vec::new();
    generate::generate(
        &Options {
            users: 100,
            ..Options::default()
        },
        &mut body,
    )
    .unwrap();
    h.stack
        .upload(&format!("{ds}/stuck.jsonl"), body)
        .await
        .unwrap();
    // Planned, but no worker ever takes its chunks.
    let keys = h.keys();
    let version = eventually(
        "the stuck upload's version",
        Duration::from_secs(30),
        || async {
            let versions = h.ds().versions().await.unwrap();
            versions.first().cloned().ok_or(versions)
        },
    )
    .await;
    // A chunk that outlived its version left a key behind.
    let mut c = h.stack.redis.clone();
    let orphan = keys.bucket(
        "20200101T000000000Z-00000000000000000000000000000000-00000000",
        0,
    );
    let _: () = c.hset(&orphan, "1", "{}").await.unwrap();
    // The retention below abandons after 1 s (by the server's clock).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = shared::db::retention::gc(&h.ds(), &h.config.retention)
        .await
        .unwrap();
    assert_eq!(report.abandoned, vec![version.clone()]);
    let info = protocol::Dataset::of(&h.stack.redis, &keys)
        .version_info(&version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.state, State::Failed);
    assert!(info.reason.unwrap().starts_with("abandoned"));
    assert!(info.data_deleted);
    assert_eq!(
        shared::db::retention::sweep_orphans(&h.stack.redis, &keys)
            .await
            .unwrap(),
        1
    );
    let exists: bool = c.exists(&orphan).await.unwrap();
    assert!(!exists);
}

/// `fsctl capacity` on a sample: the same users as JSON Lines and as a
/// pyarrow Parquet folder size alike (each read by its own format, stored by
/// the same encoder), more users cost more, and a missing sample is a clear
/// error. Needs no running store.
#[test]
fn fsctl_capacity_sizes_a_sample_as_ingest_would_store_it() {
    let dir = std::env::temp_dir().join(unique("capacity"));
    std::fs::create_dir_all(dir.join("folder")).unwrap();
    let generated = integration_tests::batch(&Options {
        users: 2000,
        items: 20,
        layout: generate::Layout::Jsonl,
        scores: true,
        ..Options::default()
    });
    // Python's own spelling of the scores, as a Parquet writer would give them.
    let script = "import json, sys\nfor line in sys.stdin: print(json.dumps(json.loads(line), separators=(',', ':')))";
    let jsonl = integration_tests::piped("python3", &["-c", script], &generated);
    std::fs::write(dir.join("batch.jsonl"), &jsonl).unwrap();
    let (first, second) = jsonl.split_at(jsonl.len() / 2);
    let cut = first.len() + second.iter().position(|&b| b == b'\n').unwrap() + 1;
    for (i, part) in [&jsonl[..cut], &jsonl[cut..]].iter().enumerate() {
        let parquet = integration_tests::parquet_by("pyarrow", part, &[]);
        std::fs::write(dir.join(format!("folder/part-{i}.parquet")), parquet).unwrap();
    }
    std::fs::write(dir.join("folder/_SUCCESS"), b"").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(binary("fsctl"))
            .arg("--json")
            .arg("capacity")
            .args(args)
            .output()
            .expect("run fsctl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            v,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let (ok, text, err) = run(&[&path("batch.jsonl"), "--users", "10000000"]);
    assert!(ok, "{err}");
    let (ok, parquet, err) = run(&[&path("folder"), "--users", "10000000"]);
    assert!(ok, "{err}");
    assert_eq!(
        (&text["sample"]["users"], &parquet["sample"]["users"]),
        (&Value::from(2000), &Value::from(2000))
    );
    assert_eq!(parquet["sample"]["files"], 2);
    assert_eq!(parquet["sample"]["format"], "parquet");
    let per_user = |v: &Value| v["memory"]["bytes_per_user"].as_f64().unwrap();
    let (a, b) = (per_user(&text), per_user(&parquet));
    assert!(
        (a - b).abs() / a < 0.01,
        "JSON Lines {a} B, Parquet {b} B per user"
    );
    // A sample of part of a file: its batch bytes per user are those of the
    // chunks read, as the whole file's are.
    let whole = text["sample"]["batch_bytes_per_user"].as_f64().unwrap();
    assert!(
        (whole - jsonl.len() as f64 / 2000.0).abs() < 0.01,
        "{whole}"
    );
    let out = Command::new(binary("fsctl"))
        .envs([
            ("FS_CHUNK_BYTES", "65536"),
            ("FS_MAX_RECORD_BYTES", "65536"),
        ])
        .args([
            "--json",
            "capacity",
            &path("batch.jsonl"),
            "--users",
            "1000",
        ])
        .args(["--sample-users", "100"])
        .output()
        .unwrap();
    let part: Value = serde_json::from_slice(&out.stdout).unwrap();
    let read = part["sample"]["users"].as_u64().unwrap();
    assert!((100..2000).contains(&read), "{part}");
    let share = part["sample"]["batch_bytes_per_user"].as_f64().unwrap() / whole;
    assert!((0.9..1.1).contains(&share), "{share}: {part}");
    // Ten times the users: ten times the memory, and no cheaper.
    let (ok, larger, err) = run(&[&path("batch.jsonl"), "--users", "100000000"]);
    assert!(ok, "{err}");
    let data = |v: &Value| v["memory"]["data_bytes"].as_f64().unwrap();
    let ratio = data(&larger) / data(&text);
    assert!((9.0..11.0).contains(&ratio), "{ratio}");
    assert!(larger["monthly_usd"]["total"].as_f64() >= text["monthly_usd"]["total"].as_f64());
    let held = larger["cache"]["usable_bytes_per_shard"].as_f64().unwrap()
        * larger["cache"]["shards"].as_f64().unwrap();
    assert!(held >= data(&larger));
    // Without a sample, records made from the shape given.
    let (ok, plain, err) = run(&["--users", "1000000", "--items", "20"]);
    assert!(ok, "{err}");
    let (ok, scored, err) = run(&["--users", "1000000", "--items", "20", "--fields", "score"]);
    assert!(ok, "{err}");
    assert!(per_user(&scored) > per_user(&plain) + 50.0);
    let (ok, out, _) = run(&[&path("missing.jsonl"), "--users", "10"]);
    assert!(!ok);
    assert!(
        out["error"]
            .as_str()
            .unwrap_or("")
            .contains("missing.jsonl"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
