//! The pipeline end to end, against the real Redis Cluster and S3/SQS
//! emulator: upload → events queue → planner → chunks queue → ingest → flip →
//! serve.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;

use fsctl::generate::{Layout, Options};
use integration_tests::{at_time, batch, check, eventually, request, sqs_event, unique, Harness};
use redis::AsyncCommands;
use serde_json::{json, Value};
use shared::db::protocol::{self, State};

/// The records of a generated batch, by canonical user id.
fn expected(opts: &Options) -> HashMap<String, Value> {
    let jsonl = batch(&Options {
        layout: Layout::Jsonl,
        ..opts.clone()
    });
    std::str::from_utf8(&jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let id = match &v["userId"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, v)
        })
        .collect()
}

async fn assert_served(h: &Harness, opts: &Options, version: &str) {
    for (id, record) in expected(opts) {
        let (status, body) = h.get_json(&format!("/v1/{}/users/{}", h.dataset, id)).await;
        assert_eq!(status, 200, "user {id}: {body}");
        assert_eq!(body["version"], version);
        assert_eq!(body["items"], record["movieId"], "user {id}");
        assert_eq!(body["userId"], record["userId"]);
        if opts.scores {
            assert_eq!(body["fields"]["scores"], record["scores"], "user {id}");
        }
    }
}

async fn format_goes_live(name: &str, opts: Options) {
    let mut o = integration_tests::options(name);
    o.config.chunk_bytes = 4096;
    // Several write rounds per chunk: reading pauses and resumes mid-chunk.
    o.config.write_batch_users = 7;
    let h = Harness::start_with(o).await;
    let pointer = h.upload_and_wait("batch.json", batch(&opts)).await;
    let info = h
        .ds()
        .version_info(&pointer.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.state, State::Live);
    assert_eq!(info.users, opts.users);
    assert!(
        info.chunks > 3,
        "expected several chunks, got {}",
        info.chunks
    );
    assert_served(&h, &opts, &pointer.version).await;
}

/// A batch compressed by a real tool goes live as one chunk, every user served.
async fn compressed_goes_live(name: &str, body: Vec<u8>, file: &str, opts: &Options, label: &str) {
    let mut o = integration_tests::options(name);
    o.config.write_batch_users = 7;
    let h = Harness::start_with(o).await;
    let pointer = h.upload_and_wait(file, body).await;
    let info = h
        .ds()
        .version_info(&pointer.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.state, info.users, info.chunks),
        (State::Live, opts.users, 1),
        "{:?}",
        info.reason
    );
    assert_eq!(info.format, label);
    assert_served(&h, opts, &pointer.version).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_and_zstd_batches_go_live_whole() {
    let lines = Options {
        users: 500,
        items: 6,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    compressed_goes_live(
        "gzip",
        integration_tests::compressed_by("gzip", &batch(&lines)),
        "batch.jsonl.gz",
        &lines,
        "json-lines+gzip",
    )
    .await;
    // A pandas table document inside zstd: scanned decompressed.
    let table = Options {
        users: 300,
        items: 4,
        layout: Layout::Table,
        string_ids: true,
        ..Options::default()
    };
    compressed_goes_live(
        "zstd",
        integration_tests::compressed_by("zstd", &batch(&table)),
        "batch.json.zst",
        &table,
        "json-elements+zstd",
    )
    .await;
    // Two gzip members one after the other (`cat a.gz b.gz`) are one stream.
    let text = batch(&lines);
    let half = text
        .iter()
        .take(text.len() / 2)
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let mut members = integration_tests::compressed_by("gzip", &text[..half]);
    members.extend(integration_tests::compressed_by("gzip", &text[half..]));
    compressed_goes_live(
        "gzip-members",
        members,
        "batch.jsonl.gz",
        &lines,
        "json-lines+gzip",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_from_pythons_writer_goes_live_in_every_item_layout() {
    let ints = Options {
        users: 400,
        items: 6,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    let strings = Options {
        users: 300,
        items: 5,
        layout: Layout::Jsonl,
        string_ids: true,
        scores: true,
        ..Options::default()
    };
    for (opts, items) in [(&ints, "json"), (&strings, "joined"), (&ints, "ranked")] {
        let mut o = integration_tests::options(&format!("csv-{items}"));
        o.config.chunk_bytes = 4096;
        o.config.write_batch_users = 7;
        let h = Harness::start_with(o).await;
        let body = integration_tests::csv_by_python(&batch(opts), items);
        let pointer = h.upload_and_wait("batch.csv", body).await;
        let info = h
            .ds()
            .version_info(&pointer.version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.state, info.users, info.format.as_str()),
            (State::Live, opts.users, "csv"),
            "{items}: {:?}",
            info.reason
        );
        assert!(
            info.chunks > 3,
            "{items}: several chunks, each finding the header: {}",
            info.chunks
        );
        assert_served(&h, opts, &pointer.version).await;
    }
    // Gzipped CSV: one chunk, the header read through the decompressor.
    let h = Harness::start("csv-gzip").await;
    let body = integration_tests::compressed_by(
        "gzip",
        &integration_tests::csv_by_python(&batch(&ints), "joined"),
    );
    let pointer = h.upload_and_wait("batch.csv.gz", body).await;
    let info = h
        .ds()
        .version_info(&pointer.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.state, info.users, info.format.as_str()),
        (State::Live, ints.users, "csv+gzip"),
        "{:?}",
        info.reason
    );
    assert_served(&h, &ints, &pointer.version).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_from_pyarrow_pandas_and_polars_goes_live_row_group_by_row_group() {
    let ints = Options {
        users: 500,
        items: 6,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    let strings = Options {
        users: 300,
        items: 5,
        layout: Layout::Jsonl,
        string_ids: true,
        scores: true,
        ..Options::default()
    };
    let cases: [(&str, &Options, &[&str], u32); 6] = [
        // Small row groups, each its own chunk (the target is smaller than one).
        ("pyarrow", &ints, &["--row-group-rows", "60"], 9),
        // As Spark writes: legacy list naming and an INT96 timestamp, kept as a string.
        ("pyarrow", &ints, &["--spark", "--row-group-rows", "250"], 2),
        (
            "pyarrow",
            &strings,
            &["--compression", "zstd", "--no-dictionary", "--float32"],
            1,
        ),
        (
            "pandas",
            &ints,
            &["--compression", "gzip", "--row-group-rows", "200"],
            3,
        ),
        ("pandas", &strings, &["--categorical-ids"], 1),
        (
            "polars",
            &ints,
            &["--compression", "zstd", "--row-group-rows", "100"],
            5,
        ),
    ];
    for (n, (writer, opts, args, chunks)) in cases.into_iter().enumerate() {
        let mut o = integration_tests::options(&format!("parquet-{writer}"));
        o.config.chunk_bytes = 1024;
        o.config.write_batch_users = 7;
        let h = Harness::start_with(o).await;
        let body = integration_tests::parquet_by(writer, &batch(opts), args);
        let pointer = h.upload_and_wait("batch.parquet", body).await;
        let info = h
            .ds()
            .version_info(&pointer.version)
            .await
            .unwrap()
            .unwrap();
        let case = format!("case {n}: {writer} {args:?}");
        assert_eq!(
            (info.state, info.users, info.format.as_str()),
            (State::Live, opts.users, "parquet"),
            "{case}: {:?}",
            info.reason
        );
        assert_eq!(info.chunks, chunks, "{case}: a chunk per row group");
        assert_served(&h, opts, &pointer.version).await;
        if args.contains(&"--spark") {
            let (_, body) = h.get_json(&format!("/v1/{}/users/1", h.dataset)).await;
            assert_eq!(
                body["fields"]["produced_at"], "2026-12-02T03:26:13",
                "{case}: {body}"
            );
        }
    }
}

/// The same users in every format write the same bytes to Redis: the record
/// encoder is the one reference, whatever the batch was read from.
#[tokio::test(flavor = "multi_thread")]
async fn every_format_writes_the_same_redis_values_for_the_same_users() {
    let h = Harness::start("same-bytes").await;
    let ints = Options {
        users: 400,
        items: 7,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    let strings = Options {
        string_ids: true,
        seed: 3,
        ..ints.clone()
    };
    for opts in [ints, strings] {
        // Text formats keep a number as written (`0.4920`); the generator pads
        // scores, Python and Parquet do not. Start from Python's spelling.
        let script = "import json, sys\nfor line in sys.stdin: print(json.dumps(json.loads(line), separators=(',', ':')))";
        let jsonl = integration_tests::piped("python3", &["-c", script], &batch(&opts));
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("batch.jsonl", jsonl.clone()),
            (
                "batch.json",
                [
                    b"[",
                    &jsonl
                        .trim_ascii_end()
                        .split(|&b| b == b'\n')
                        .collect::<Vec<_>>()
                        .join(&b",\n"[..])[..],
                    b"]",
                ]
                .concat(),
            ),
            (
                "batch.csv",
                integration_tests::csv_by_python(&jsonl, "joined"),
            ),
            (
                "batch.jsonl.gz",
                integration_tests::compressed_by("gzip", &jsonl),
            ),
            (
                "batch.jsonl.zst",
                integration_tests::compressed_by("zstd", &jsonl),
            ),
            (
                "pyarrow.parquet",
                integration_tests::parquet_by("pyarrow", &jsonl, &["--row-group-rows", "100"]),
            ),
            (
                "pandas.parquet",
                integration_tests::parquet_by("pandas", &jsonl, &[]),
            ),
            (
                "polars.parquet",
                integration_tests::parquet_by("polars", &jsonl, &["--compression", "zstd"]),
            ),
        ];
        let mut reference: Option<HashMap<String, Vec<u8>>> = None;
        for (name, body) in bodies {
            let dataset = unique("same");
            let info = h.upload_settled(&dataset, name, body).await;
            assert_eq!(info.state, State::Live, "{name}: {:?}", info.reason);
            let values = h.contents(&dataset, &info.version).await;
            assert_eq!(values.len() as u64, opts.users, "{name}");
            match &reference {
                None => reference = Some(values),
                Some(r) => {
                    let differ: Vec<&String> = r
                        .keys()
                        .filter(|u| values.get(*u) != r.get(*u))
                        .take(3)
                        .collect();
                    assert!(differ.is_empty(), "{name} (string ids: {}) stores other bytes than JSON Lines for users {differ:?}", opts.string_ids);
                }
            }
        }
    }
}

/// `jsonl`'s lines dealt into `n` parts, in order.
fn split_lines(jsonl: &[u8], n: usize) -> Vec<Vec<u8>> {
    let lines: Vec<&[u8]> = jsonl.split_inclusive(|&b| b == b'\n').collect();
    lines
        .chunks(lines.len().div_ceil(n))
        .map(|c| c.concat())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spark_style_folder_goes_live_once_with_its_success_marker() {
    let opts = Options {
        users: 1200,
        items: 6,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    let mut o = integration_tests::options("folder");
    o.config.chunk_bytes = 2048;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let mut files: Vec<(String, Vec<u8>)> = split_lines(&batch(&opts), 4)
        .iter()
        .enumerate()
        .map(|(i, part)| {
            (
                format!("part-{i:05}-c000.snappy.parquet"),
                integration_tests::parquet_by("pyarrow", part, &["--row-group-rows", "100"]),
            )
        })
        .collect();
    // A task that wrote no rows leaves an empty part: it holds nobody.
    let empty =
        integration_tests::parquet_by("pyarrow", &split_lines(&batch(&opts), 4)[0][..0], &[]);
    files.push(("part-00004-c000.snappy.parquet".into(), empty));
    // What Spark leaves beside its data: never read.
    files.push((
        "_temporary/0/_temporary/attempt_0/part-00000.parquet".into(),
        b"not data".to_vec(),
    ));
    files.push((
        ".part-00000-c000.snappy.parquet.crc".into(),
        b"crc".to_vec(),
    ));
    for (name, body) in &files {
        h.stack
            .upload(&format!("{ds}/run-1/{name}"), body.clone())
            .await
            .unwrap();
    }
    // The data files alone make no version; they wait for the marker.
    let waiting = eventually(
        "the five data files to wait",
        Duration::from_secs(30),
        || async {
            let waiting = shared::db::waiting::list(&h.stack.redis, &h.keys())
                .await
                .unwrap();
            if waiting.first().is_some_and(|w| w.files >= 5) {
                Ok(waiting)
            } else {
                Err(waiting)
            }
        },
    )
    .await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        (waiting[0].folder.as_str(), waiting[0].files),
        (format!("{ds}/run-1/").as_str(), 5)
    );
    assert_eq!(
        waiting[0].bytes,
        files[..5].iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert!(
        h.ds().versions().await.unwrap().is_empty(),
        "no version before the marker"
    );

    let info = h
        .upload_folder(&ds, "run-1", &[], ("_SUCCESS", Vec::new()))
        .await;
    assert_eq!(
        (info.state, info.users, info.format.as_str()),
        (State::Live, opts.users, "parquet"),
        "{:?}",
        info.reason
    );
    assert_eq!(info.files.len(), 4, "{:?}", info.files);
    assert!(
        info.chunks >= 12,
        "a chunk per row group across the files: {}",
        info.chunks
    );
    assert_eq!(
        h.ds().versions().await.unwrap().len(),
        1,
        "one version for the folder"
    );
    assert!(
        shared::db::waiting::list(&h.stack.redis, &h.keys())
            .await
            .unwrap()
            .is_empty(),
        "the folder no longer waits"
    );
    assert_served(&h, &opts, &info.version).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_commits_a_folder_of_mixed_formats_and_an_s3a_success_names_its_files() {
    let opts = Options {
        users: 900,
        items: 5,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    let parts = split_lines(&batch(&opts), 3);
    let h = Harness::start("manifest").await;
    let ds = h.dataset.clone();
    let files = [
        (
            "a.jsonl.gz",
            integration_tests::compressed_by("gzip", &parts[0]),
        ),
        ("b.csv", integration_tests::csv_by_python(&parts[1], "json")),
        (
            "c.parquet",
            integration_tests::parquet_by("polars", &parts[2], &[]),
        ),
    ];
    let mut etags = Vec::new();
    for (name, body) in &files {
        etags.push(
            h.stack
                .upload(&format!("{ds}/m/{name}"), body.clone())
                .await
                .unwrap(),
        );
    }
    let listed: Vec<Value> = files
        .iter()
        .zip(&etags)
        .map(|((name, body), etag)| json!({"key": name, "size": body.len(), "etag": etag}))
        .collect();
    let manifest = json!({"files": listed, "rows": opts.users})
        .to_string()
        .into_bytes();
    let info = h
        .upload_folder(&ds, "m", &[], ("_manifest.json", manifest))
        .await;
    assert_eq!(
        (info.state, info.users, info.format.as_str()),
        (State::Live, opts.users, "mixed"),
        "{:?}",
        info.reason
    );
    let formats: Vec<&str> = info.files.iter().map(|f| f.format.as_str()).collect();
    assert_eq!(formats, ["json-lines+gzip", "csv", "parquet"]);
    assert_served(&h, &opts, &info.version).await;

    // Hadoop's S3A committer lists what it wrote; a stray file beside it is not part of the batch.
    let newer = Options {
        seed: 2,
        ..opts.clone()
    };
    let parts = split_lines(&batch(&newer), 2);
    let named: Vec<(&str, Vec<u8>)> = vec![
        ("part-0.jsonl", parts[0].clone()),
        ("part-1.jsonl", parts[1].clone()),
    ];
    h.stack
        .upload(
            &format!("{ds}/s3a/stray.jsonl"),
            b"{\"userId\": 1, \"movieId\": [1]}\n".to_vec(),
        )
        .await
        .unwrap();
    let success = json!({
        "name": "org.apache.hadoop.fs.s3a.commit.files.SuccessData/1",
        "timestamp": 1764633600000u64,
        "committer": "magic",
        "filenames": [format!("/{ds}/s3a/part-0.jsonl"), format!("/{ds}/s3a/part-1.jsonl")],
    });
    let info = h
        .upload_folder(
            &ds,
            "s3a",
            &named,
            ("_SUCCESS", success.to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        (info.state, info.users, info.files.len()),
        (State::Live, newer.users, 2),
        "{:?}",
        info.reason
    );
    assert_served(&h, &newer, &info.version).await;
}

/// The AWS-documented shape of a transform job's state change, pointed at
/// `s3://bucket/prefix`.
fn transform_event(fixture: &str, bucket: &str, prefix: &str, job: &str, time: &str) -> String {
    let mut ev: Value = serde_json::from_str(fixture).unwrap();
    ev["time"] = json!(time);
    ev["detail"]["TransformJobName"] = json!(job);
    ev["detail"]["TransformOutput"]["S3OutputPath"] = json!(format!("s3://{bucket}/{prefix}"));
    ev.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sagemaker_transform_job_that_completes_goes_live_and_one_that_fails_never_does() {
    const COMPLETED: &str =
        include_str!("../../ingest/tests/fixtures/sagemaker-transform-completed.json");
    const FAILED: &str =
        include_str!("../../ingest/tests/fixtures/sagemaker-transform-failed.json");
    let opts = Options {
        users: 600,
        items: 5,
        layout: Layout::Jsonl,
        scores: true,
        ..Options::default()
    };
    let h = Harness::start("sagemaker").await;
    let ds = h.dataset.clone();
    // `JoinSource=Input`: each output line is the input record with the
    // prediction under `SageMakerOutput`; one `.out` per input object.
    let script = "import json, sys\nfor line in sys.stdin:\n r = json.loads(line)\n print(json.dumps({'userId': r.pop('userId'), 'SageMakerOutput': r}))";
    for (i, part) in split_lines(&batch(&opts), 3).iter().enumerate() {
        let out = integration_tests::piped("python3", &["-c", script], part);
        h.stack
            .upload(&format!("{ds}/2026-12-02/input-{i}.jsonl.out"), out)
            .await
            .unwrap();
    }
    h.stack
        .upload(
            &format!("{ds}/2026-12-02/input-0.jsonl.out.log"),
            b"not output".to_vec(),
        )
        .await
        .unwrap();
    let bucket = h.stack.topology.bucket.clone();
    let event = transform_event(
        COMPLETED,
        &bucket,
        &format!("{ds}/2026-12-02"),
        "recs-nightly-1",
        "2026-12-02T03:26:13Z",
    );
    h.stack
        .sqs
        .send_message()
        .queue_url(&h.stack.topology.events_url)
        .message_body(event.clone())
        .send()
        .await
        .unwrap();
    let source = format!("s3://{bucket}/{ds}/2026-12-02/");
    let info = fsctl::upload::wait(
        &h.stack.redis,
        &ds,
        &source,
        "recs-nightly-1",
        Duration::from_secs(60),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (info.state, info.users, info.files.len()),
        (State::Live, opts.users, 3),
        "{:?}",
        info.reason
    );
    assert_served(&h, &opts, &info.version).await;
    // The same event again (EventBridge delivers at least once): no new version.
    h.stack
        .sqs
        .send_message()
        .queue_url(&h.stack.topology.events_url)
        .message_body(event)
        .send()
        .await
        .unwrap();

    let event = transform_event(
        FAILED,
        &bucket,
        &format!("{ds}/2026-12-03"),
        "recs-nightly-2",
        "2026-12-03T03:30:00Z",
    );
    h.stack
        .sqs
        .send_message()
        .queue_url(&h.stack.topology.events_url)
        .message_body(event)
        .send()
        .await
        .unwrap();
    let source = format!("s3://{bucket}/{ds}/2026-12-03/");
    let failed = fsctl::upload::wait(
        &h.stack.redis,
        &ds,
        &source,
        "recs-nightly-2",
        Duration::from_secs(60),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(failed.state, State::Failed);
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains("recs-nightly-2 ended Failed: ClientError"),
        "{reason}"
    );
    assert_eq!(
        h.live().await.unwrap().version,
        info.version,
        "the failed job leaves the live version"
    );
    assert_eq!(
        h.ds().versions().await.unwrap().len(),
        2,
        "one version per job, the repeat included"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_goes_live_and_is_served_with_extra_fields() {
    format_goes_live(
        "jsonl",
        Options {
            users: 300,
            items: 8,
            layout: Layout::Jsonl,
            scores: true,
            ..Options::default()
        },
    )
    .await;
}

/// Scores as pandas writes them (ten digits) and SKU item ids are stored as
/// numbers, and served byte for byte as the batch wrote them.
#[tokio::test(flavor = "multi_thread")]
async fn scores_and_skus_from_pandas_are_stored_small_and_served_as_written() {
    let h = Harness::start("scored").await;
    const SCRIPT: &str = r#"
import sys, numpy as np, pandas as pd
rng = np.random.default_rng(11)
n = 300
df = pd.DataFrame({"userId": np.arange(1, n + 1)})
df["movieId"] = [[f"B0{x:08d}" for x in row] for row in rng.integers(1, 100_000_000, size=(n, 20)).tolist()]
df["score"] = (-np.sort(-rng.random((n, 20)), axis=1)).tolist()
df["model"] = "v7"
df.to_json(sys.stdout, orient="records", lines=True)
"#;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    let jsonl = integration_tests::piped(python, &["-c", SCRIPT], b"");
    let dataset = unique("scored");
    let info = h
        .upload_settled(&dataset, "batch.jsonl", jsonl.clone())
        .await;
    assert_eq!(info.state, State::Live, "{:?}", info.reason);
    // Stored with its items and scores as numbers.
    let values = h.contents(&dataset, &info.version).await;
    let packed = values
        .values()
        .filter(|v| v.get(1).is_some_and(|f| f & 0b1100 == 0b1100))
        .count();
    assert_eq!(packed, 300, "values with numbered items and binary fields");
    for line in String::from_utf8(jsonl).unwrap().lines() {
        let written: HashMap<&str, &serde_json::value::RawValue> =
            serde_json::from_str(line).unwrap();
        let user = written["userId"].get();
        let (status, body) = h.get(&format!("/v1/{dataset}/users/{user}"), None).await;
        assert_eq!(status, 200, "{body}");
        let served: HashMap<&str, &serde_json::value::RawValue> =
            serde_json::from_str(&body).unwrap();
        let fields: HashMap<&str, &serde_json::value::RawValue> =
            serde_json::from_str(served["fields"].get()).unwrap();
        assert_eq!(
            served["items"].get(),
            written["movieId"].get(),
            "user {user}"
        );
        assert_eq!(fields["score"].get(), written["score"].get(), "user {user}");
        assert_eq!(fields["model"].get(), written["model"].get(), "user {user}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn table_document_goes_live_and_is_served() {
    format_goes_live(
        "table",
        Options {
            users: 300,
            items: 8,
            layout: Layout::Table,
            ..Options::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_array_with_string_ids_goes_live_and_is_served() {
    format_goes_live(
        "array",
        Options {
            users: 300,
            items: 8,
            layout: Layout::Array,
            string_ids: true,
            ..Options::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn original_sample_answers_the_original_sentence_over_http() {
    let mut o = integration_tests::options("sample");
    let dataset = unique("default");
    o.config.default_dataset = dataset.clone();
    o.http = Some("127.0.0.1:0".parse().unwrap());
    let h = Harness::start_with(o).await;
    // A key without a folder belongs to the default dataset.
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/local/sample/recommendations.json"
    ))
    .unwrap();
    h.stack
        .upload("recommendations.json", sample)
        .await
        .unwrap();
    let live = h
        .stack
        .wait_for_flip(&dataset, None, Duration::from_secs(60))
        .await
        .unwrap();

    let addr = h.stack.http_addr.unwrap();
    let text = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /?userId=1&rank=1 HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nThe number 1 recommended movie for user 1 is 2012"),
        "{text}"
    );

    let (status, mut body) = h.get_json("/?userId=1&rank=1").await;
    assert_eq!(status, 200);
    let freshness = body
        .as_object_mut()
        .unwrap()
        .remove("freshness")
        .expect("the answer says how fresh it is");
    assert_eq!(freshness["stale"], json!(false));
    assert_eq!(
        body,
        json!({"userId": 1, "rank": 1, "movieId": 2012, "version": live.version})
    );
    let (status, body) = h.get_json("/?userId=2&rank=3").await;
    assert_eq!((status, body["movieId"].clone()), (200, json!(2959)));
}

#[tokio::test(flavor = "multi_thread")]
async fn second_upload_goes_live_while_the_first_stays_readable_by_version() {
    let h = Harness::start("second").await;
    let first = Options {
        users: 200,
        items: 5,
        seed: 1,
        ..Options::default()
    };
    let second = Options {
        users: 200,
        items: 5,
        seed: 2,
        ..Options::default()
    };
    let v1 = h.upload_and_wait("day1.jsonl", batch(&first)).await;
    assert_served(&h, &first, &v1.version).await;
    let v2 = h.upload_and_wait("day2.jsonl", batch(&second)).await;
    assert!(v2.version > v1.version);
    assert_eq!(v2.previous.as_deref(), Some(v1.version.as_str()));
    assert_served(&h, &second, &v2.version).await;

    let old = expected(&first);
    let (status, body) = h
        .get_json(&format!("/v1/{}/users/7?version={}", h.dataset, v1.version))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], v1.version);
    assert_eq!(body["items"], old["7"]["movieId"]);
    let info = h.ds().version_info(&v1.version).await.unwrap().unwrap();
    assert_eq!(info.state, State::Backup);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_version_completing_after_a_newer_one_never_goes_live() {
    let h = Harness::manual("order").await;
    let old = Options {
        users: 150,
        items: 5,
        seed: 10,
        ..Options::default()
    };
    let new = Options {
        users: 150,
        items: 5,
        seed: 11,
        ..Options::default()
    };
    let (old_key, new_key) = (
        format!("{}/old.jsonl", h.dataset),
        format!("{}/new.jsonl", h.dataset),
    );
    h.stack.upload(&old_key, batch(&old)).await.unwrap();
    h.stack.upload(&new_key, batch(&new)).await.unwrap();

    // Event times given explicitly: the two uploads may share a millisecond.
    let events = h.object_events().await;
    let (old_event, new_event) = (
        at_time(&events[&old_key], "2026-12-01T00:00:00.000Z"),
        at_time(&events[&new_key], "2026-12-01T00:00:01.000Z"),
    );
    let resp = ingest::plan::handle(&h.planner_deps(), sqs_event(&[old_event, new_event]))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let chunks = h.drain(&h.stack.topology.chunks_url).await;
    let msgs: Vec<ingest::s3::messages::ChunkMessage> = chunks
        .iter()
        .map(|b| ingest::s3::messages::ChunkMessage::from_json(b).unwrap())
        .collect();
    let new_version = msgs
        .iter()
        .find(|m| m.key == new_key)
        .unwrap()
        .version
        .clone();
    let old_version = msgs
        .iter()
        .find(|m| m.key == old_key)
        .unwrap()
        .version
        .clone();
    assert!(new_version > old_version);

    // The newer batch completes first…
    let deps = h.ingest_deps();
    for m in msgs.iter().filter(|m| m.key == new_key) {
        ingest::load::ingest_chunk(&deps, m).await.unwrap();
    }
    assert_eq!(h.live().await.unwrap().version, new_version);
    // …then the older one: it completes but must not go live.
    let mut last = None;
    for m in msgs.iter().filter(|m| m.key == old_key) {
        last = Some(ingest::load::ingest_chunk(&deps, m).await.unwrap());
    }
    match last {
        Some(ingest::load::ChunkReport::Done {
            step: protocol::Step::Superseded(reason),
            ..
        }) => {
            assert!(reason.contains(&new_version), "{reason}")
        }
        other => panic!("the older version's last chunk should supersede it, got {other:?}"),
    }
    assert_eq!(h.live().await.unwrap().version, new_version);
    let info = h.ds().version_info(&old_version).await.unwrap().unwrap();
    assert_eq!((info.state, info.users), (State::Superseded, 150));
    assert_served(&h, &new, &new_version).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_delivered_twice_reaches_the_same_state() {
    let h = Harness::manual("twice").await;
    let opts = Options {
        users: 250,
        items: 6,
        layout: Layout::Table,
        ..Options::default()
    };
    let key = format!("{}/batch.json", h.dataset);
    h.stack.upload(&key, batch(&opts)).await.unwrap();
    let event = h.object_events().await.remove(&key).unwrap();

    // The S3 event arrives twice: the same version is planned, chunks sent twice.
    let planner = h.planner_deps();
    for _ in 0..2 {
        let resp = ingest::plan::handle(&planner, sqs_event(std::slice::from_ref(&event)))
            .await
            .unwrap();
        assert!(resp.batch_item_failures.is_empty());
    }
    let chunks = h.drain(&h.stack.topology.chunks_url).await;
    let versions: std::collections::HashSet<_> = chunks
        .iter()
        .map(|b| {
            ingest::s3::messages::ChunkMessage::from_json(b)
                .unwrap()
                .version
        })
        .collect();
    assert_eq!(versions.len(), 1, "one event names one version");
    let version = versions.into_iter().next().unwrap();
    let info = h.ds().version_info(&version).await.unwrap().unwrap();
    assert_eq!(chunks.len() as u32, 2 * info.chunks);

    // Every chunk message is delivered twice too, interleaved.
    let deps = h.ingest_deps();
    for pair in chunks.chunks(3) {
        let resp = ingest::load::handle(&deps, sqs_event(pair)).await.unwrap();
        assert!(resp.batch_item_failures.is_empty());
    }
    for body in &chunks {
        ingest::load::handle(&deps, sqs_event(std::slice::from_ref(body)))
            .await
            .unwrap();
    }
    let info = h.ds().version_info(&version).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.users, info.chunks_done),
        (State::Live, 250, info.chunks)
    );
    assert_eq!(h.live().await.unwrap().version, version);
    assert_served(&h, &opts, &version).await;

    // A third delivery of the event after the flip plans nothing new.
    ingest::plan::handle(&planner, sqs_event(&[event]))
        .await
        .unwrap();
    assert!(h.drain(&h.stack.topology.chunks_url).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200k_user_batch_in_many_chunks_by_four_workers_goes_live_complete() {
    let mut o = integration_tests::options("large");
    o.config.chunk_bytes = 2 * 1024 * 1024;
    o.ingest.concurrency = 4;
    let info = goes_live_whole(o, 200_000).await;
    assert!(info.chunks >= 8, "only {} chunks", info.chunks);
}

/// A round larger than one pipeline (`ingest::write::PIPELINE_MAX_BYTES`)
/// goes to Redis in pieces, one after another: one chunk of 150,000 users,
/// written as a single round of about 11 MB (six pieces), is stored whole.
/// (That each piece stays under the bound is the round's unit test.)
#[tokio::test(flavor = "multi_thread")]
async fn a_round_larger_than_a_pipeline_is_written_in_pieces_and_stored_whole() {
    let mut o = integration_tests::options("pieces");
    o.config.chunk_bytes = 64 << 20;
    o.config.write_batch_users = 150_000;
    o.config.rounds_mib = 48;
    let info = goes_live_whole(o, 150_000).await;
    assert_eq!(info.chunks, 1);
}

/// A worker's rounds share `FS_INGEST_ROUNDS_MIB` (the round filling and
/// those being written), however many users a round could take: at 4 MiB,
/// a one-chunk batch of 60,000 users, whose round could hold them all, is
/// written in rounds of a third of that, each but the last full, and goes
/// live whole.
#[tokio::test(flavor = "multi_thread")]
async fn rounds_hold_no_more_than_their_share_of_memory_and_the_batch_goes_live_whole() {
    let mut o = integration_tests::options("roundmem");
    o.config.chunk_bytes = 64 << 20;
    o.config.write_batch_users = 1_000_000;
    o.config.rounds_mib = 4;
    let config = o.config.ingest();
    let max = ingest::write::round_max_bytes(&config);
    assert_eq!(max, (4 << 20) / 3);
    let opts = Options {
        users: 60_000,
        items: 20,
        ..Options::default()
    };
    let body = batch(&opts);
    let dir = std::env::temp_dir().join(unique("roundmem"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("batch.jsonl"), &body).unwrap();
    let source = integration_tests::FileSource::new(&dir);
    let msg = integration_tests::local_chunk(
        "roundmem",
        "20261206T000000000Z-00000000000000000000000000000000-00000000",
        "batch.jsonl",
        body.len() as u64,
        shared::keys::bucket_count(opts.users, 64),
    );
    let rounds = integration_tests::chunk_rounds(&config, &source, &msg, true)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // What a round held: its users' ids and values, and an entry each.
    let held: Vec<usize> = rounds
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| {
                    let args: Vec<_> = c.args_iter().collect();
                    let data: usize = args[2..]
                        .iter()
                        .map(|a| match a {
                            redis::Arg::Simple(b) => b.len(),
                            _ => 0,
                        })
                        .sum();
                    data + (args.len() - 2) / 2 * ingest::write::Round::ENTRY_BYTES
                })
                .sum()
        })
        .collect();
    let (last, full) = held.split_last().unwrap();
    assert!(full.len() >= 2, "rounds holding {held:?} bytes");
    assert!(
        full.iter().all(|&h| (max..max + 1024).contains(&h)) && *last <= max,
        "rounds holding {held:?} bytes, {max} at most"
    );
    let info = goes_live_whole(o, opts.users).await;
    assert_eq!(info.chunks, 1);
}

/// `users` × 20 items uploaded under `o` go live with every user stored;
/// the live version's record.
async fn goes_live_whole(
    o: integration_tests::local_stack::stack::StackOptions,
    users: u64,
) -> protocol::VersionInfo {
    let h = Harness::start_with(o).await;
    let opts = Options {
        users,
        items: 20,
        ..Options::default()
    };
    let pointer = h.upload_and_wait("big.jsonl", batch(&opts)).await;
    let info = h
        .ds()
        .version_info(&pointer.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.users, users);
    assert_every_user_stored(&h, &opts, &pointer).await;
    info
}

/// Every user of `opts`, read back from the live version's buckets and
/// decoded, in the bucket its id hashes to; and a sample through the API.
async fn assert_every_user_stored(h: &Harness, opts: &Options, pointer: &protocol::Pointer) {
    // Every user, read back from the version's buckets and decoded.
    let want = expected(opts);
    let mut seen = 0usize;
    let mut conn = h.stack.redis.clone();
    for b in 0..pointer.buckets {
        let bucket: HashMap<String, Vec<u8>> = conn
            .hgetall(h.keys().bucket(&pointer.version, b))
            .await
            .unwrap();
        for (user, bytes) in bucket {
            let stored = shared::record::Stored::decode(&bytes).unwrap();
            let items = Value::from(
                stored
                    .items
                    .iter()
                    .map(shared::record::ItemId::to_json)
                    .collect::<Vec<_>>(),
            );
            assert_eq!(items, want[&user]["movieId"], "user {user}");
            assert_eq!(shared::keys::bucket_of(&user, pointer.buckets), b);
            seen += 1;
        }
    }
    assert_eq!(seen as u64, opts.users);
    // And a sample through the API.
    for id in (1..=opts.users).step_by(997) {
        let (status, body) = h
            .get_json(&format!("/v1/{}/users/{id}?rank=20", h.dataset))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["item"], want[&id.to_string()]["movieId"][19]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_with_spaces_and_plus_signs_are_decoded() {
    let h = Harness::start("keys").await;
    let opts = Options {
        users: 20,
        items: 3,
        ..Options::default()
    };
    let key = format!("{}/nightly batch+1 é.jsonl", h.dataset);
    h.stack.upload(&key, batch(&opts)).await.unwrap();
    let p = h
        .stack
        .wait_for_flip(&h.dataset, None, Duration::from_secs(60))
        .await
        .unwrap();
    let info = h.ds().version_info(&p.version).await.unwrap().unwrap();
    assert_eq!(
        info.source,
        format!("s3://{}/{key}", h.stack.topology.bucket)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_and_missing_things_get_json_4xx_and_a_bad_batch_never_goes_live() {
    let h = Harness::start("errors").await;
    let ds = h.dataset.clone();
    let (status, body) = h.get_json(&format!("/v1/{ds}/users/1")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_dataset"))
    );

    // A malformed first batch: the version fails, nothing goes live.
    h.stack
        .upload(
            &format!("{ds}/bad.jsonl"),
            b"{\"userId\": 1, \"movieId\": [1]}\n{\"userId\": 2, \"movieId\": [2\n".to_vec(),
        )
        .await
        .unwrap();
    let err = h
        .stack
        .wait_for_flip(&ds, None, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    // The janitor may be deleting its data right now (the record reads
    // `deleting` meanwhile, then `failed` again).
    let failed = eventually(
        "the bad version to read failed",
        Duration::from_secs(30),
        || async {
            let failed = h.stack.failed_versions(&ds).await.unwrap();
            if failed.is_empty() {
                Err("no failed version")
            } else {
                Ok(failed)
            }
        },
    )
    .await;
    assert!(
        failed[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("bad.jsonl chunk 0 at byte 30"),
        "{:?}",
        failed[0].reason
    );
    // Serve re-reads the set of datasets for a name it lacks at most every 250 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = h.get_json(&format!("/v1/{ds}/users/1")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_live_version"))
    );

    // A good batch, then garbage on top of it: the good one keeps serving.
    let opts = Options {
        users: 10,
        items: 3,
        ..Options::default()
    };
    let good = h.upload_and_wait("good.jsonl", batch(&opts)).await;
    h.stack
        .upload(
            &format!("{ds}/garbage.bin"),
            vec![0x1f, 0x8b, 0x08, 0x00, 0x01],
        )
        .await
        .unwrap();
    eventually(
        "the garbage batch to fail",
        Duration::from_secs(30),
        || async {
            let failed = h.stack.failed_versions(&ds).await.unwrap().len();
            check(failed >= 2, failed)
        },
    )
    .await;
    assert_eq!(h.live().await.unwrap().version, good.version);

    let cases = [
        (format!("/v1/{ds}/users/1?rank=4"), 404, "rank_out_of_range"),
        (format!("/v1/{ds}/users/999"), 404, "unknown_user"),
        (format!("/v1/{ds}/users/1?rank=0"), 400, "invalid_request"),
        (
            format!("/v1/{ds}/users/1?rank=1&rank=2"),
            400,
            "invalid_request",
        ),
        (format!("/v1/{ds}/users/1?limit=x"), 400, "invalid_request"),
        (
            format!("/v1/{ds}/users/1?version=nope"),
            400,
            "invalid_request",
        ),
        (
            format!(
                "/v1/{ds}/users/1?version={}",
                "2".repeat(shared::version_id::VERSION_ID_LEN)
            ),
            404,
            "unknown_version",
        ),
        (
            "/v1/no-such-dataset/users/1".to_string(),
            404,
            "unknown_dataset",
        ),
        (
            "/v1/bad%7Bname%7D/users/1".to_string(),
            400,
            "invalid_request",
        ),
        ("/?rank=1".to_string(), 400, "invalid_request"),
        ("/nothing/here".to_string(), 404, "no_route"),
    ];
    for (path, want_status, want_code) in cases {
        let (status, body) = h.get_json(&path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap_or("")),
            (want_status, want_code),
            "{path}: {body}"
        );
    }
    let (status, body) = request(&h.stack.app, "POST", "/?userId=1&rank=1", None).await;
    assert_eq!(status, 405, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_gateway_http_and_rest_events_get_answers_in_their_own_shape() {
    let mut o = integration_tests::options("apigw");
    let dataset = unique("recs");
    o.config.default_dataset = dataset.clone();
    let h = Harness::start_with(o).await;
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/local/sample/recommendations.json"
    ))
    .unwrap();
    h.stack
        .upload(&format!("{dataset}/sample.json"), sample)
        .await
        .unwrap();
    let live = h
        .stack
        .wait_for_flip(&dataset, None, Duration::from_secs(60))
        .await
        .unwrap();

    // HTTP API payload 2.0 on a named stage, as API Gateway documents it.
    let mut v2: Value =
        serde_json::from_str(include_str!("../fixtures/apigw-http-v2.json")).unwrap();
    let path = format!("/prod/v1/{dataset}/users/1");
    v2["rawPath"] = json!(path);
    v2["requestContext"]["http"]["path"] = json!(path);
    let out = serve::handle(
        &h.stack.app,
        lambda_runtime::LambdaEvent::new(v2, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    assert_eq!(out["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["items"], json!([2012, 553]));
    assert_eq!(body["version"], live.version);

    // REST API payload 1.0, the original sample's call with Accept: text/plain.
    let v1: Value = serde_json::from_str(include_str!("../fixtures/apigw-rest-v1.json")).unwrap();
    let out = serve::handle(
        &h.stack.app,
        lambda_runtime::LambdaEvent::new(v1, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    assert_eq!(
        out["body"],
        "The number 1 recommended movie for user 1 is 2012"
    );
    assert!(out.get("multiValueHeaders").is_some(), "REST shape: {out}");

    // A batch read in both shapes: the body as text (2.0) and in base64 (1.0).
    let body = json!({"userIds": [1, 2, 99], "rank": 1}).to_string();
    let mut v2: Value =
        serde_json::from_str(include_str!("../fixtures/apigw-http-v2.json")).unwrap();
    let path = format!("/prod/v1/{dataset}/users:batchGet");
    v2["rawPath"] = json!(path);
    v2["rawQueryString"] = json!("");
    v2["requestContext"]["http"]["path"] = json!(path);
    v2["requestContext"]["http"]["method"] = json!("POST");
    v2["body"] = json!(body);
    v2["isBase64Encoded"] = json!(false);
    let mut v1: Value =
        serde_json::from_str(include_str!("../fixtures/apigw-rest-v1.json")).unwrap();
    v1["httpMethod"] = json!("POST");
    v1["path"] = json!(format!("/v1/{dataset}/users:batchGet"));
    v1["queryStringParameters"] = json!({});
    v1["multiValueQueryStringParameters"] = json!({});
    v1["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&body));
    v1["isBase64Encoded"] = json!(true);
    for event in [v2, v1] {
        let out = serve::handle(
            &h.stack.app,
            lambda_runtime::LambdaEvent::new(event, Default::default()),
        )
        .await
        .unwrap();
        assert_eq!(out["statusCode"], 200, "{out}");
        let answer: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
        let statuses: Vec<&str> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            (
                statuses,
                answer["results"][0]["item"].clone(),
                answer["version"].as_str()
            ),
            (
                vec!["found", "found", "unknown_user"],
                json!(2012),
                Some(live.version.as_str())
            )
        );
    }
}

/// Options for a stack on the standalone Redis, with small chunks.
fn standalone_options(name: &str) -> integration_tests::local_stack::stack::StackOptions {
    let Ok(url) = std::env::var("FS_TEST_STANDALONE_REDIS_URL") else {
        panic!("FS_TEST_STANDALONE_REDIS_URL is set by `make test`");
    };
    let mut o = integration_tests::options(name);
    o.config.redis.cluster = false;
    o.config.redis.urls = vec![url];
    o.config.chunk_bytes = 4096;
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_redis_works_by_configuration() {
    let o = standalone_options("standalone");
    let h = Harness::start_with(o).await;
    assert!(!h.stack.redis.is_cluster());
    let opts = Options {
        users: 300,
        items: 5,
        ..Options::default()
    };
    let p = h.upload_and_wait("batch.jsonl", batch(&opts)).await;
    assert_served(&h, &opts, &p.version).await;
}

/// `chunk_rounds` (what the benchmark replays through `redis-cli --pipe`)
/// builds the very writes ingest sends: replayed under another dataset name,
/// every bucket holds the same fields and values as the live version, and
/// every round but a chunk's last holds exactly `write_batch_users` users,
/// or two per bucket of the version when that is more.
#[tokio::test(flavor = "multi_thread")]
async fn planned_rounds_are_the_writes_ingest_makes() {
    let mut o = standalone_options("rounds");
    o.config.write_batch_users = 7;
    let (config, chunk_bytes) = (o.config.ingest(), o.config.chunk_bytes);
    let h = Harness::start_with(o).await;
    let body = batch(&Options {
        users: 300,
        items: 5,
        scores: true,
        ..Options::default()
    });
    let live = h.upload_and_wait("batch.jsonl", body.clone()).await;
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();

    let dir = std::env::temp_dir().join(unique("rounds"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("batch.jsonl"), &body).unwrap();
    let source = integration_tests::FileSource::new(&dir);
    let replay = unique("replay");
    let ranges = ingest::formats::plan_lines(body.len() as u64, chunk_bytes);
    assert_eq!(ranges.len() as u32, info.chunks);
    let mut pipe = redis::pipe();
    let template = integration_tests::local_chunk(
        &replay,
        &live.version,
        "batch.jsonl",
        body.len() as u64,
        info.buckets,
    );
    for (i, msg) in template.per_range(&ranges).into_iter().enumerate() {
        let rounds = integration_tests::chunk_rounds(&config, &source, &msg, false)
            .await
            .unwrap();
        let users: Vec<usize> = rounds
            .iter()
            .map(|r| r.iter().map(|c| (c.args_iter().count() - 2) / 2).sum())
            .collect();
        let round = 7.max(ingest::write::ROUND_USERS_PER_BUCKET * info.buckets as usize);
        let (last, full) = users.split_last().unwrap();
        assert!(
            full.iter().all(|&n| n == round) && (1..=round).contains(last),
            "chunk {i}: users per round {users:?}, rounds of {round}"
        );
        for cmd in rounds.into_iter().flatten() {
            pipe.add_command(cmd).ignore();
        }
    }
    let mut conn = h.stack.redis.clone();
    pipe.exec_async(&mut conn).await.unwrap();

    let replayed = shared::keys::DatasetKeys::new(&replay).unwrap();
    let mut fields = 0;
    for b in 0..info.buckets {
        let ingested: HashMap<String, Vec<u8>> = conn
            .hgetall(h.keys().bucket(&live.version, b))
            .await
            .unwrap();
        let built: HashMap<String, Vec<u8>> = conn
            .hgetall(replayed.bucket(&live.version, b))
            .await
            .unwrap();
        assert_eq!(ingested, built, "bucket {b}");
        fields += built.len();
    }
    assert_eq!(fields as u64, info.users);
    h.stack
        .redis
        .sum_over_buckets(&replayed, &live.version, info.buckets, "UNLINK")
        .await
        .unwrap();
}

/// Ingest paces itself by readers' latency: while a neighbour keeps Redis
/// busy (a Lua loop of some milliseconds on every primary, over and over),
/// a worker whose target is 2 ms slows down and still writes every user;
/// one whose target is far above what Redis shows never slows down.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_slows_down_when_readers_would_wait_and_loses_nothing() {
    use shared::config::LatencyTarget;
    for (target_ms, paced) in [(2, true), (60_000, false)] {
        let mut o = integration_tests::options("paced");
        o.config.target_latency = Some(LatencyTarget::Fixed(Duration::from_millis(target_ms)));
        o.config.write_batch_users = 100;
        let h = Harness::start_with(o).await;
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let neighbour = {
            let (redis, busy) = (h.stack.redis.clone(), busy.clone());
            tokio::spawn(async move {
                let script = redis::cmd("EVAL")
                    .arg("local i = 0 while i < 400000 do i = i + 1 end return i")
                    .arg(0)
                    .clone();
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    redis.on_each_primary(&script).await.unwrap();
                }
            })
        };
        let opts = Options {
            users: 5000,
            items: 3,
            ..Options::default()
        };
        let live = h.upload_and_wait("paced.jsonl", batch(&opts)).await;
        busy.store(false, std::sync::atomic::Ordering::Relaxed);
        neighbour.await.unwrap();
        let pace = h.stack.pacer.report();
        assert_eq!(
            (pace.drops > 0, pace.rate.is_some()),
            (paced, paced),
            "target {target_ms} ms: {pace:?}"
        );
        assert_eq!(pace.target, Some(Duration::from_millis(target_ms)));
        assert!(pace.last_rtt.is_some(), "the probe measured: {pace:?}");
        assert_served(&h, &opts, &live.version).await;
    }
}

/// `FS_INGEST_MAX_USERS_PER_S` holds each worker to its rate: 1,000 users in
/// rounds of 100 at 2,000 users/s cannot be written in under 0.45 s (the
/// last round waits until the 900 before it are due).
#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_rate_cap_spreads_a_chunk_over_time() {
    let mut o = integration_tests::options("rate");
    o.config.max_users_per_s = Some(2000);
    o.config.write_batch_users = 100;
    o.config.chunk_bytes = 1 << 20;
    let h = Harness::start_with(o).await;
    let opts = Options {
        users: 1000,
        items: 3,
        ..Options::default()
    };
    let live = h.upload_and_wait("capped.jsonl", batch(&opts)).await;
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();
    assert_eq!((info.chunks, info.users), (1, 1000));
    let took = info.live_ms.unwrap() - info.created_ms;
    assert!(
        took >= 450,
        "1000 users at 2000/s went live {took} ms after planning"
    );
    // The record's times, all the server's: written after the capped
    // writes, then counted, then live.
    let written = info
        .written_ms
        .expect("the record says when its chunks were in");
    assert!(written - info.created_ms >= 450, "{info:?}");
    assert!(written <= info.completed_ms.unwrap(), "{info:?}");
    assert!(
        info.completed_ms.unwrap() <= info.live_ms.unwrap(),
        "{info:?}"
    );
    assert_served(&h, &opts, &live.version).await;
}
