//! Operations and failure: bad input never goes live, retention, guarded
//! flips, rollback, and Redis outages at serve time; all through the real
//! local stack.

use std::time::Duration;

use futures::future::join_all;
use integration_tests::{
    check, eventually, http, http_get, keys_and_memory, unique, users, Harness,
};
use serde_json::Value;
use shared::config::BadRecords;
use shared::db::protocol::{self, Moved, State};
use shared::keys::DatasetKeys;

#[derive(Debug, Clone, Copy)]
enum Want {
    /// Goes live, with this many bad records skipped.
    Live(u64),
    /// Fails, with a reason containing this.
    Failed(&'static str),
}

fn corpus() -> Vec<(String, Vec<u8>, Want, Want)> {
    use Want::*;
    let table: &[(&str, Want, Want)] = &[
        (
            "truncated-last-line.jsonl",
            Failed("not a JSON object"),
            Live(1),
        ),
        (
            "truncated-table.json",
            Failed("ends early"),
            Failed("ends early"),
        ),
        (
            "truncated-array.json",
            Failed("ends early"),
            Failed("ends early"),
        ),
        (
            "userid-boolean.jsonl",
            Failed("must be an integer or a string"),
            Live(1),
        ),
        (
            "userid-null.jsonl",
            Failed("must be an integer or a string"),
            Live(1),
        ),
        (
            "userid-float.jsonl",
            Failed("must be an integer or a string"),
            Live(1),
        ),
        (
            "userid-missing.jsonl",
            Failed("missing user id field"),
            Live(1),
        ),
        ("userid-empty.jsonl", Failed("must not be empty"), Live(1)),
        (
            "userid-too-long.jsonl",
            Failed("longer than 256 bytes"),
            Live(1),
        ),
        (
            "userid-control-character.jsonl",
            Failed("control character"),
            Live(1),
        ),
        (
            "items-missing.jsonl",
            Failed("missing item list field"),
            Live(1),
        ),
        (
            "items-not-array.jsonl",
            Failed("must be an array of integers or strings"),
            Live(1),
        ),
        (
            "items-null.jsonl",
            Failed("must be an array of integers or strings"),
            Live(1),
        ),
        (
            "item-float.jsonl",
            Failed("must be an array of integers or strings"),
            Live(1),
        ),
        (
            "item-object.jsonl",
            Failed("must be an array of integers or strings"),
            Live(1),
        ),
        (
            "duplicate-userid-same-chunk.jsonl",
            Failed("appears more than once"),
            Live(1),
        ),
        (
            "duplicate-userid-int-and-string.jsonl",
            Failed("appears more than once"),
            Live(1),
        ),
        (
            "duplicate-userid-across-chunks.jsonl",
            Failed("appear more than once"),
            Live(1),
        ),
        (
            "empty.jsonl",
            Failed("the batch is empty"),
            Failed("the batch is empty"),
        ),
        (
            "whitespace-only.jsonl",
            Failed("the batch is empty"),
            Failed("the batch is empty"),
        ),
        ("bom.jsonl", Live(0), Live(0)),
        ("crlf.jsonl", Live(0), Live(0)),
        ("invalid-utf8.jsonl", Failed("not valid UTF-8"), Live(1)),
        ("gzip.jsonl.gz", Live(0), Live(0)),
        (
            "gzip-cut-short.jsonl.gz",
            Failed("gzip stream is corrupt or cut short"),
            Failed("gzip stream is corrupt or cut short"),
        ),
        (
            "gzip-bad-crc.jsonl.gz",
            Failed("gzip stream is corrupt or cut short"),
            Failed("gzip stream is corrupt or cut short"),
        ),
        (
            "zstd-not-a-frame.jsonl.zst",
            Failed("zstd stream is corrupt or cut short"),
            Failed("zstd stream is corrupt or cut short"),
        ),
        (
            "csv-without-user-column.csv",
            Failed("unknown batch format"),
            Failed("unknown batch format"),
        ),
        (
            "csv-without-items-column.csv",
            Failed("no `movieId` column"),
            Failed("no `movieId` column"),
        ),
        (
            "csv-ragged-row.csv",
            Failed("the row has 2 fields, the header has 3"),
            Live(1),
        ),
        (
            "csv-quoted-newline.csv",
            Failed("does not end on its line"),
            Live(2),
        ),
        (
            "top-level-scalar.json",
            Failed("unknown batch format"),
            Failed("unknown batch format"),
        ),
        (
            "deep-nesting.jsonl",
            Failed("nested deeper than 32"),
            Live(1),
        ),
        ("ids-with-braces-colons-spaces.jsonl", Live(0), Live(0)),
        (
            "array-with-scalar.json",
            Failed("not a JSON object"),
            Live(1),
        ),
        (
            "array-with-malformed-element.json",
            Failed("not a JSON object"),
            Live(1),
        ),
        (
            "table-without-data.json",
            Failed("no records array"),
            Failed("no records array"),
        ),
        (
            "table-with-empty-data.json",
            Failed("the batch is empty"),
            Failed("the batch is empty"),
        ),
        (
            "table-with-bad-record.json",
            Failed("missing item list field"),
            Live(1),
        ),
        (
            "trailing-garbage.json",
            Failed("unexpected content after"),
            Failed("unexpected content after"),
        ),
        ("line-not-json.jsonl", Failed("not a JSON object"), Live(1)),
        (
            "every-record-bad.jsonl",
            Failed("missing user id field"),
            Failed("records are bad"),
        ),
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bad");
    let files = table.iter().map(|(f, s, l)| {
        (
            f.to_string(),
            std::fs::read(format!("{dir}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}")),
            *s,
            *l,
        )
    });
    files.chain(parquet_corpus()).collect()
}

/// Malformed Parquet files, written by pyarrow from JSON Lines here (a
/// Parquet fixture is binary; the writer is the real one either way).
fn parquet_corpus() -> Vec<(String, Vec<u8>, Want, Want)> {
    use Want::*;
    let rows = |extra: &str| -> Vec<u8> {
        let good: String = (0..200)
            .map(|i| format!("{{\"userId\": {}, \"movieId\": [1, 2, 3]}}\n", 1000 + i))
            .collect();
        format!("{good}{extra}").into_bytes()
    };
    let pyarrow = |jsonl: Vec<u8>| integration_tests::parquet_by("pyarrow", &jsonl, &[]);
    let good = pyarrow(rows(""));
    let truncated = good[..good.len() * 2 / 3].to_vec();
    // Garbage over the footer's metadata, the magic bytes left in place.
    let mut corrupt = good.clone();
    let meta_len = u32::from_le_bytes(
        corrupt[corrupt.len() - 8..corrupt.len() - 4]
            .try_into()
            .unwrap(),
    ) as usize;
    let meta_start = corrupt.len() - 8 - meta_len;
    corrupt[meta_start..meta_start + meta_len / 2].fill(0xFF);
    let all = |f: &dyn Fn(u64) -> String| -> Vec<u8> {
        (0..200)
            .map(|i| f(1000 + i) + "\n")
            .collect::<String>()
            .into_bytes()
    };
    vec![
        (
            "parquet-truncated.parquet".into(),
            truncated,
            Failed("footer cannot be read"),
            Failed("footer cannot be read"),
        ),
        (
            "parquet-corrupt-footer.parquet".into(),
            corrupt,
            Failed("footer cannot be read"),
            Failed("footer cannot be read"),
        ),
        (
            "parquet-without-user-column.parquet".into(),
            pyarrow(all(&|_| r#"{"movieId": [1]}"#.into())),
            Failed("no `userId` column"),
            Failed("no `userId` column"),
        ),
        (
            "parquet-without-items-column.parquet".into(),
            pyarrow(all(&|u| format!(r#"{{"userId": {u}, "other": [1]}}"#))),
            Failed("no `movieId` column"),
            Failed("no `movieId` column"),
        ),
        (
            "parquet-userid-float.parquet".into(),
            pyarrow(all(&|u| format!(r#"{{"userId": {u}.5, "movieId": [1]}}"#))),
            Failed("a user id must be an integer or a string"),
            Failed("a user id must be an integer or a string"),
        ),
        (
            "parquet-items-string.parquet".into(),
            pyarrow(all(&|u| format!(r#"{{"userId": {u}, "movieId": "1|2"}}"#))),
            Failed("the items must be a list"),
            Failed("the items must be a list"),
        ),
        (
            "parquet-userid-null.parquet".into(),
            pyarrow(rows("{\"userId\": null, \"movieId\": [4]}\n")),
            Failed("the user id is null"),
            Live(1),
        ),
        (
            "parquet-item-null.parquet".into(),
            pyarrow(rows("{\"userId\": 5001, \"movieId\": [4, null]}\n")),
            Failed("the item list holds a null"),
            Live(1),
        ),
        (
            "parquet-duplicate-userid.parquet".into(),
            pyarrow(rows("{\"userId\": 1000, \"movieId\": [4]}\n")),
            Failed("appears more than once"),
            Live(1),
        ),
    ]
}

/// Three more malformed batches, too large to keep as files: made here.
fn large_corpus() -> Vec<(String, Vec<u8>, Want, Want)> {
    let mut out = Vec::new();
    let good: String = (0..200)
        .map(|i| format!("{{\"userId\": {}, \"movieId\": [1, 2, 3]}}\n", 1000 + i))
        .collect();
    let ten_mb = format!(
        "{good}{{\"userId\": 5001, \"movieId\": [1], \"blob\": \"{}\"}}\n",
        "x".repeat(10 * 1024 * 1024)
    );
    out.push((
        "ten-megabyte-line.jsonl".into(),
        ten_mb.into_bytes(),
        Want::Failed("longer than 1048576 bytes"),
        Want::Live(1),
    ));
    // The same in a JSON document, with a good element after it.
    let elements: Vec<String> = (0..200)
        .map(|i| format!("{{\"userId\": {}, \"movieId\": [1, 2, 3]}}", 1000 + i))
        .collect();
    let big = format!(
        "{{\"userId\": 5001, \"movieId\": [1], \"blob\": \"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let doc = format!(
        "[{},\n{big},\n{{\"userId\": 5002, \"movieId\": [4]}}]\n",
        elements.join(",\n")
    );
    out.push((
        "ten-megabyte-element.json".into(),
        doc.into_bytes(),
        Want::Failed("longer than 1048576 bytes"),
        Want::Live(1),
    ));
    let items: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let many = format!(
        "{good}{{\"userId\": 5001, \"movieId\": [{}]}}\n",
        items.join(",")
    );
    out.push((
        "hundred-thousand-items.jsonl".into(),
        many.into_bytes(),
        Want::Failed("100000 items, more than the 10000 allowed"),
        Want::Live(1),
    ));
    // A gzip stream cut short past the planner's head: ingest finds it.
    let varied: String = (0..100_000u64)
        .map(|i| {
            format!(
                "{{\"userId\": {}, \"movieId\": [{}, {}]}}\n",
                1000 + i,
                i.wrapping_mul(2654435761) % 1_000_003,
                i * 7919 % 999_983
            )
        })
        .collect();
    let gz = integration_tests::compressed_by("gzip", varied.as_bytes());
    assert!(
        gz.len() > 512 * 1024,
        "{} bytes: more than the planner reads",
        gz.len()
    );
    let cut = gz[..gz.len() * 9 / 10].to_vec();
    out.push((
        "long-gzip-cut-short.jsonl.gz".into(),
        cut,
        Want::Failed("gzip stream is corrupt or cut short"),
        Want::Failed("gzip stream is corrupt or cut short"),
    ));
    out
}

async fn check_corpus(lenient: bool, cases: Vec<(String, Vec<u8>, Want, Want)>, chunk_bytes: u64) {
    let mut o = integration_tests::options(if lenient { "lenient" } else { "strict" });
    o.config.chunk_bytes = chunk_bytes;
    if lenient {
        o.config.validation.bad_records = BadRecords::Lenient { max_fraction: 0.01 };
    }
    let h = Harness::start_with(o).await;
    let small = chunk_bytes < 8192;
    let results = join_all(cases.into_iter().map(|(file, body, strict, lenient_want)| {
        let h = &h;
        async move {
            let want = if lenient { lenient_want } else { strict };
            let dataset = unique("bad");
            // A good batch is live first; it must survive whatever follows.
            let good = h
                .upload_settled(&dataset, "good.jsonl", users(200, 7))
                .await;
            assert_eq!(good.state, State::Live, "{file}: the good batch goes live");
            let info = h.upload_settled(&dataset, &file, body).await;
            let keys = DatasetKeys::new(&dataset).unwrap();
            let live = protocol::Dataset::of(&h.stack.redis, &keys)
                .live()
                .await
                .unwrap()
                .unwrap();
            match want {
                Want::Live(bad) => {
                    assert_eq!(info.state, State::Live, "{file}: {:?}", info.reason);
                    assert_eq!(live.version, info.version);
                    assert_eq!(
                        info.bad_records + info.duplicates,
                        bad,
                        "{file}: bad records counted"
                    );
                }
                Want::Failed(why) => {
                    assert_eq!(info.state, State::Failed, "{file}");
                    let reason = info.reason.clone().unwrap_or_default();
                    assert!(
                        reason.contains(why),
                        "{file}: reason {reason:?} should mention {why:?}"
                    );
                    assert!(
                        reason.contains(&file)
                            || reason.contains("user ids appear")
                            || reason.contains("records are bad"),
                        "{file}: reason names the file: {reason}"
                    );
                    if reason.contains(" chunk ") {
                        assert!(
                            reason.contains("at byte") || reason.contains("in row group"),
                            "{file}: reason gives the offset or row: {reason}"
                        );
                    }
                    assert_eq!(
                        live.version, good.version,
                        "{file}: the live version is untouched"
                    );
                }
            }
            (file, info.state)
        }
    }))
    .await;
    if !lenient && small {
        // BOM, CRLF, ids with braces, colons and spaces, and gzip are fine.
        let ok = results.iter().filter(|(_, s)| *s == State::Live).count();
        assert_eq!(ok, 4);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_batches_never_go_live_in_strict_mode() {
    let cases = corpus();
    assert!(cases.len() + large_corpus().len() >= 30);
    check_corpus(false, cases, 4096).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lenient_mode_skips_and_counts_bad_records_up_to_a_threshold() {
    check_corpus(true, corpus(), 4096).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_folder_batches_never_go_live_and_name_the_file() {
    let h = Harness::start("badfolder").await;
    let part = |seed: u64, from: u64| -> Vec<u8> {
        (from..from + 100)
            .map(|u| format!("{{\"userId\": {u}, \"movieId\": [{seed}, {u}]}}\n"))
            .collect::<String>()
            .into_bytes()
    };
    // (case, files, marker name, marker body from the files' ETags, reason, file the reason names)
    type Marker = Box<dyn Fn(&[String]) -> Vec<u8>>;
    let manifest = |f: fn(&[String]) -> serde_json::Value| -> Marker {
        Box::new(move |etags| f(etags).to_string().into_bytes())
    };
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<(&str, Vec<u8>)>, &str, Marker, &str, &str)> = vec![
        (
            "missing",
            vec![("a.jsonl", part(1, 0))],
            "_manifest.json",
            manifest(|_| serde_json::json!({"files": [{"key": "a.jsonl"}, {"key": "gone.jsonl"}]})),
            "not in the bucket yet",
            "gone.jsonl",
        ),
        (
            "etag",
            vec![("a.jsonl", part(1, 0))],
            "_manifest.json",
            manifest(|_| serde_json::json!({"files": [{"key": "a.jsonl", "etag": "\"0123\""}]})),
            "has ETag \"0123\"",
            "a.jsonl",
        ),
        (
            "size",
            vec![("a.jsonl", part(1, 0))],
            "_manifest.json",
            manifest(|_| serde_json::json!({"files": [{"key": "a.jsonl", "size": 3}]})),
            "has 3 bytes",
            "a.jsonl",
        ),
        (
            "rows",
            vec![("a.jsonl", part(1, 0)), ("b.jsonl", part(1, 100))],
            "_manifest.json",
            manifest(
                |e| serde_json::json!({"files": [{"key": "a.jsonl", "etag": e[0]}, {"key": "b.jsonl", "etag": e[1]}], "rows": 250}),
            ),
            "the manifest says 250 rows; the files hold 200 records",
            "",
        ),
        (
            "not-json",
            vec![("a.jsonl", part(1, 0))],
            "_manifest.json",
            Box::new(|_| b"files: a.jsonl".to_vec()),
            "the manifest is not valid",
            "_manifest.json",
        ),
        (
            "empty",
            vec![("_logs/x.txt", b"log".to_vec())],
            "_SUCCESS",
            Box::new(|_| Vec::new()),
            "holds no data files",
            "_SUCCESS",
        ),
        (
            "all-empty",
            vec![("a.jsonl", Vec::new()), ("b.jsonl", b"\n".to_vec())],
            "_SUCCESS",
            Box::new(|_| Vec::new()),
            "every one of the 2 files is empty",
            "_SUCCESS",
        ),
        (
            "duplicates",
            vec![("a.jsonl", part(1, 0)), ("b.jsonl", part(2, 50))],
            "_SUCCESS",
            Box::new(|_| Vec::new()),
            "50 user ids appear more than once",
            "",
        ),
        (
            "bad-file",
            vec![
                ("a.jsonl", part(1, 0)),
                ("b.parquet", b"PAR1 not really".to_vec()),
            ],
            "_SUCCESS",
            Box::new(|_| Vec::new()),
            "footer cannot be read",
            "b.parquet",
        ),
    ];
    for (case, files, marker, body, why, names) in cases {
        let ds = unique("badfolder");
        let good = h.upload_settled(&ds, "good.jsonl", users(200, 7)).await;
        assert_eq!(good.state, State::Live);
        let mut etags = Vec::new();
        for (name, bytes) in &files {
            etags.push(
                h.stack
                    .upload(&format!("{ds}/run/{name}"), bytes.clone())
                    .await
                    .unwrap(),
            );
        }
        let info = h
            .upload_folder(&ds, "run", &[], (marker, body(&etags)))
            .await;
        assert_eq!(info.state, State::Failed, "{case}: {:?}", info.reason);
        let reason = info.reason.unwrap_or_default();
        assert!(
            reason.contains(why),
            "{case}: {reason:?} should say {why:?}"
        );
        assert!(
            reason.contains(names),
            "{case}: {reason:?} should name {names:?}"
        );
        let live = protocol::Dataset::of(&h.stack.redis, &DatasetKeys::new(&ds).unwrap())
            .live()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            live.version, good.version,
            "{case}: the live version is untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_megabyte_record_and_a_hundred_thousand_items_are_bad_records() {
    check_corpus(false, large_corpus(), 1024 * 1024).await;
    check_corpus(true, large_corpus(), 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_with_schema_characters_are_served_exactly() {
    let h = Harness::start("oddids").await;
    let ds = h.dataset.clone();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/bad/ids-with-braces-colons-spaces.jsonl"
    ))
    .unwrap();
    assert_eq!(
        h.upload_settled(&ds, "ids.jsonl", body).await.state,
        State::Live
    );
    for (id, item) in [
        ("%7Ba%7D", 1),
        ("b:c", 2),
        ("d%20e", 3),
        ("%7D%7B", 4),
        ("fs:%7Bx%7D:live", 5),
    ] {
        let (status, body) = h.get_json(&format!("/v1/{ds}/users/{id}")).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["items"], serde_json::json!([item]), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_json_4xx_never_5xx() {
    let mut o = integration_tests::options("requests");
    o.http = Some("127.0.0.1:0".parse().unwrap());
    let default = unique("default");
    o.config.default_dataset = default.clone();
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    h.upload_settled(&ds, "b.jsonl", users(50, 1)).await;
    h.upload_settled(&default, "b.jsonl", users(50, 1)).await;
    let addr = h.stack.http_addr.unwrap();
    let long_id = "u".repeat(10 * 1024);
    let big_query = format!("userId=1&rank=1&pad={}", "p".repeat(5000));
    let gets: Vec<(String, u16)> = vec![
        ("/?rank=1".into(), 400),
        ("/?userId=1".into(), 400),
        ("/?userId=1&userId=2&rank=1".into(), 400),
        ("/?userId=1&rank=1&rank=2".into(), 400),
        ("/?userId=1&rank=0".into(), 400),
        ("/?userId=1&rank=-1".into(), 400),
        ("/?userId=1&rank=1.5".into(), 400),
        ("/?userId=1&rank=1e9".into(), 400),
        ("/?userId=1&rank=abc".into(), 400),
        ("/?userId=1&rank=".into(), 400),
        ("/?userId=1&rank=99999999999".into(), 400),
        ("/?userId=1&rank=%00".into(), 400),
        ("/?userId=&rank=1".into(), 400),
        ("/?userId=a%0Ab&rank=1".into(), 400),
        (format!("/?userId={long_id}&rank=1"), 400),
        (format!("/?{big_query}"), 400),
        ("/?userId=user%20one&rank=1".into(), 404),
        ("/?userId=%E2%9C%93%F0%9F%98%80&rank=1".into(), 404),
        ("/?userId=%7B%7D&rank=1".into(), 404),
        ("/?userId=*&rank=1".into(), 404),
        ("/?userId=1&rank=1000".into(), 404),
        ("/v1/../../etc/passwd".into(), 404),
        ("/v1/%2e%2e/users/1".into(), 404),
        ("/v1/no-such-dataset/users/1".into(), 404),
        (format!("/v1/{ds}/users/"), 400),
        (format!("/v1/{ds}/users/1?rank=0"), 400),
        (format!("/v1/{ds}/users/1?limit=0"), 400),
        (format!("/v1/{ds}/users/1?limit=-3"), 400),
        (format!("/v1/{ds}/users/1?rank=1&limit=2"), 400),
        (format!("/v1/{ds}/users/1?version=abc"), 400),
        (format!("/v1/{ds}/users/a%00b"), 400),
        (format!("/v1/{ds}/users/%FF"), 400),
        ("/v1/bad%7Bname/users/1".into(), 400),
        (format!("/v1/{ds}/users/1?rank=99"), 404),
        (format!("/v1/{ds}/users/424242"), 404),
        ("/nothing/here".into(), 404),
    ];
    let mut checked = 0;
    for (target, want) in &gets {
        let (status, body) = http_get(addr, target).await;
        assert_eq!(
            status,
            *want,
            "GET {}: {body}",
            &target[..target.len().min(80)]
        );
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("GET {target}: not JSON: {body}"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{target}: {v}"
        );
        checked += 1;
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (status, body) = http(addr, format!("{method} /?userId=1&rank=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(status, 405, "{method}: {body}");
        assert!(serde_json::from_str::<Value>(&body).is_ok());
        checked += 1;
    }
    assert!(checked >= 30, "{checked} malformed requests checked");
    // And the well-formed call still works.
    let (status, _) = http_get(addr, "/?userId=1&rank=1").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_returns_keys_and_memory_to_what_the_kept_versions_need() {
    let url = std::env::var("FS_TEST_ISO_REDIS_URL")
        .expect("FS_TEST_ISO_REDIS_URL is set by `make test`");
    let mut o = integration_tests::options("retention");
    o.config.redis.urls = url.split(',').map(str::to_string).collect();
    o.config.retention.grace = Duration::ZERO;
    o.config.retention.backups = 1;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let mut baseline = None;
    let mut versions = Vec::new();
    for n in 1..=5u64 {
        let info = h
            .upload_settled(&ds, &format!("day{n}.jsonl"), users(3000, n))
            .await;
        assert_eq!(info.state, State::Live);
        versions.push(info.version.clone());
        // Retention runs right after the flip, in the ingest that flipped:
        // wait for it to forget the versions it deletes (after their keys).
        let keep = versions[versions.len().saturating_sub(2)..].to_vec();
        eventually(
            &format!("retention after batch {n}"),
            Duration::from_secs(30),
            || async {
                let versions = h.ds().versions().await.unwrap();
                check(versions == keep, versions)
            },
        )
        .await;
        let (keys, memory) = keys_and_memory(&url).await;
        println!("after batch {n}: {keys} keys, {memory} bytes used");
        if n == 2 {
            baseline = Some((keys, memory));
        }
        if n > 2 {
            let (k0, m0) = baseline.unwrap();
            assert_eq!(
                keys, k0,
                "after batch {n} the key count is back to live + 1 backup"
            );
            assert!(
                (memory as f64) < m0 as f64 * 1.15,
                "after batch {n}: {memory} bytes vs {m0} with the same versions kept"
            );
        }
    }
    // The backup is still readable, the one before it is gone.
    let (status, _) = h
        .get_json(&format!("/v1/{ds}/users/5?version={}", versions[3]))
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .get_json(&format!("/v1/{ds}/users/5?version={}", versions[2]))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_much_smaller_batch_is_held_until_promoted() {
    let h = Harness::start("guard").await;
    let ds = h.dataset.clone();
    let full = h.upload_settled(&ds, "full.jsonl", users(1000, 1)).await;
    assert_eq!(full.state, State::Live);
    let small = h
        .upload_settled(&ds, "truncated.jsonl", users(300, 2))
        .await;
    assert_eq!(small.state, State::Held);
    let reason = small.reason.clone().unwrap();
    assert!(
        reason.contains("300 users is below 50% of the 1000 users"),
        "{reason}"
    );
    assert_eq!(h.live().await.unwrap().version, full.version);
    let (status, _) = h.get_json(&format!("/v1/{ds}/users/900")).await;
    assert_eq!(status, 200, "the full batch keeps serving");

    let status = fsctl::view::dataset_status(&h.stack.redis, &ds)
        .await
        .unwrap();
    assert_eq!(status.held.len(), 1);
    assert_eq!(status.held[0].reason.as_deref(), Some(reason.as_str()));
    // A held version is for operators: API callers cannot name it.
    let (status, body) = h
        .get_json(&format!("/v1/{ds}/users/1?version={}", small.version))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_version")),
        "{body}"
    );

    assert!(matches!(
        h.ds().promote(&small.version, false).await.unwrap(),
        Moved::Moved { .. }
    ));
    assert_eq!(h.live().await.unwrap().version, small.version);
    let (status, _) = h.get_json(&format!("/v1/{ds}/users/900")).await;
    assert_eq!(status, 404, "user 900 is not in the promoted batch");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_points_back_and_the_version_it_left_stays_down() {
    let mut o = integration_tests::options("rollback");
    o.ingest.concurrency = 0;
    o.planner.concurrency = 0;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let planner = h.planner_deps();
    let ingest = h.ingest_deps();
    // Two versions, delivered by hand so a chunk of the second can come late.
    let mut chunks_of = Vec::new();
    for (n, seed) in [(1, 11u64), (2, 12)] {
        h.stack
            .upload(&format!("{ds}/day{n}.jsonl"), users(500, seed))
            .await
            .unwrap();
        let events = h.object_event_bodies().await;
        ingest::plan::handle(&planner, integration_tests::sqs_event(&events))
            .await
            .unwrap();
        let chunks = h.chunk_messages().await;
        for c in &chunks {
            ingest::load::ingest_chunk(&ingest, c).await.unwrap();
        }
        chunks_of.push(chunks);
    }
    let v2 = h.live().await.unwrap();
    let v1 = v2.previous.clone().unwrap();
    assert!(matches!(
        h.ds().rollback(&v1).await.unwrap(),
        Moved::Moved { .. }
    ));
    let p = h.live().await.unwrap();
    assert_eq!(p.version, v1);
    assert_eq!(p.rolled_back_from.as_deref(), Some(v2.version.as_str()));
    let log = h.ds().log(5).await.unwrap();
    assert_eq!(
        (log[0].event.as_str(), log[0].version.as_str()),
        ("rollback", v1.as_str())
    );

    // A late redelivery of the left version's chunk does not flip it back.
    let late = ingest::load::ingest_chunk(&ingest, &chunks_of[1][0])
        .await
        .unwrap();
    assert_eq!(
        late,
        ingest::load::ChunkReport::Skipped {
            state: Some(State::RolledBack)
        }
    );
    assert_eq!(h.live().await.unwrap().version, v1);
    let status = fsctl::view::dataset_status(&h.stack.redis, &ds)
        .await
        .unwrap();
    assert_eq!(
        status.rolled_back_from.as_deref(),
        Some(v2.version.as_str())
    );
    // Rolling back to something that is not a retained backup is refused.
    assert!(matches!(
        h.ds().rollback("nope").await.unwrap(),
        Moved::UnknownVersion
    ));

    // A new upload is newer than the version rolled back from: it goes live.
    h.stack
        .upload(&format!("{ds}/day3.jsonl"), users(500, 13))
        .await
        .unwrap();
    let events = h.object_event_bodies().await;
    ingest::plan::handle(&planner, integration_tests::sqs_event(&events))
        .await
        .unwrap();
    for c in h.chunk_messages().await {
        ingest::load::ingest_chunk(&ingest, &c).await.unwrap();
    }
    let p3 = h.live().await.unwrap();
    assert!(p3.version > v2.version);
    assert_eq!(p3.rolled_back_from, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_at_serve_time_is_a_503_and_recovers_without_restart() {
    let port = 7190 + (std::process::id() % 7) as u16;
    let dir = std::env::temp_dir().join(unique("redis-outage"));
    std::fs::create_dir_all(&dir).unwrap();
    let start = || {
        let status = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--appendonly",
                "no",
            ])
            .args(integration_tests::acl_args())
            .args([
                "--dir",
                dir.to_str().unwrap(),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    };
    start();
    let url = format!("redis://127.0.0.1:{port}");
    eventually(
        "the private Redis to accept connections",
        Duration::from_secs(10),
        || async {
            redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .map(|_| ())
        },
    )
    .await;
    let mut o = integration_tests::options("outage");
    o.config.redis.cluster = false;
    o.config.redis.urls = vec![url.clone()];
    o.config.redis.timeout = Duration::from_millis(500);
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    assert_eq!(
        h.upload_settled(&ds, "b.jsonl", users(100, 3)).await.state,
        State::Live
    );
    let (status, _) = h.get_json(&format!("/v1/{ds}/users/5")).await;
    assert_eq!(status, 200);

    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: Result<(), _> = redis::cmd("SHUTDOWN").arg("SAVE").query_async(&mut c).await;
    eventually(
        "the private Redis to be gone",
        Duration::from_secs(10),
        || async {
            let gone = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .is_err();
            check(gone, "still accepting connections")
        },
    )
    .await;
    for _ in 0..3 {
        let (status, body) = h.get_json(&format!("/v1/{ds}/users/5")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable");
    }
    let (status, body) = h.get(&format!("/v1/{ds}/users/5"), None).await;
    assert_eq!(status, 503);
    assert!(
        !body.contains("127.0.0.1") && !body.to_lowercase().contains("redis"),
        "no internal detail: {body}"
    );
    start();
    // Serving recovers when Redis is back, without a restart.
    eventually("serving to recover", Duration::from_secs(10), || async {
        let (status, body) = h.get_json(&format!("/v1/{ds}/users/5")).await;
        check(status == 200, (status, body))
    })
    .await;
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: Result<(), _> = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async(&mut c)
        .await;
}

fn tls_config(token: Option<&str>) -> shared::config::RedisConfig {
    let mut c = integration_tests::config().redis;
    c.cluster = false;
    c.urls = vec![std::env::var("FS_TEST_TLS_REDIS_URL")
        .expect("FS_TEST_TLS_REDIS_URL is set by `make test`")];
    c.ca_file = std::env::var("FS_TEST_TLS_CA_FILE").ok();
    c.auth = match token {
        Some(t) => shared::config::RedisAuth::Token(shared::config::Secret::new(t)),
        None => shared::config::RedisAuth::None,
    };
    c.timeout = Duration::from_millis(1000);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_an_auth_token_serves_and_never_leaks_the_token() {
    let token = std::fs::read_to_string(std::env::var("FS_TEST_TLS_TOKEN_FILE").unwrap())
        .unwrap()
        .trim()
        .to_string();
    let mut o = integration_tests::options("tls");
    o.config.redis = tls_config(Some(&token));
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    assert_eq!(
        h.upload_settled(&ds, "b.jsonl", users(100, 4)).await.state,
        State::Live
    );
    let (status, _) = h.get_json(&format!("/v1/{ds}/users/42")).await;
    assert_eq!(status, 200);
    assert!(
        !format!("{:?}", h.config).contains(&token),
        "the token is not in debug output"
    );

    // A wrong token is refused, and the error does not echo it.
    let wrong = "wrong-token-0123456789";
    let err = shared::db::store::Redis::connect_checked(&tls_config(Some(wrong)))
        .await
        .err()
        .expect("refused");
    assert!(!err.to_string().contains(wrong), "{err}");
    // So is no token at all.
    assert!(shared::db::store::Redis::connect_checked(&tls_config(None))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_refuses_a_server_without_tls_when_tls_is_configured() {
    let plain = std::env::var("FS_TEST_STANDALONE_REDIS_URL").unwrap();
    let mut c = tls_config(None);
    c.urls = vec![plain.replace("redis://", "rediss://")];
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        shared::db::store::Redis::connect_checked(&c),
    )
    .await
    .expect("answers quickly");
    assert!(
        result.is_err(),
        "a TLS client must not talk to a plain-text server"
    );
    // The same server without TLS configured works.
    c.urls = vec![plain];
    c.ca_file = None;
    assert!(shared::db::store::Redis::connect_checked(&c).await.is_ok());
}
