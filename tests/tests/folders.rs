//! Folder batches uploaded the way people upload them: the marker first
//! (`aws s3 sync` sorts `_SUCCESS` before `part-…`), parts in parallel and in
//! any order, a manifest before the files it names, and files that land
//! after their folder was planned. Through the real path: emulator → events
//! queue → planner (which sends a marker back to the queue while its folder
//! settles) → chunks → ingest → flip → served.

use std::time::Duration;

use integration_tests::{check, eventually, Harness};
use shared::db::protocol::State;

/// `n` users starting at `first`, as JSON Lines, with items derived from the id.
fn part(first: u64, n: u64) -> Vec<u8> {
    let mut out = String::new();
    for u in first..first + n {
        out.push_str(&format!(
            "{{\"userId\": {u}, \"movieId\": [{}, {}]}}\n",
            u * 10,
            u * 10 + 1
        ));
    }
    out.into_bytes()
}

/// Every one of `users` is served from the live version, with its items.
async fn all_served(h: &Harness, users: std::ops::Range<u64>) {
    for u in users {
        let (status, v) = h.get_json(&format!("/v1/{}/users/{u}", h.dataset)).await;
        assert_eq!(status, 200, "user {u}: {v}");
        assert_eq!(
            v["items"],
            serde_json::json!([u * 10, u * 10 + 1]),
            "user {u}"
        );
    }
}

/// Waits until the live version is one made from `key`.
async fn live_from(h: &Harness, key: &str) {
    eventually(
        "a version of the upload to be live",
        Duration::from_secs(60),
        || async {
            let source = match h.live().await {
                Some(p) => h
                    .ds()
                    .version_info(&p.version)
                    .await
                    .unwrap()
                    .map(|i| i.source),
                None => None,
            };
            check(source.as_deref().is_some_and(|s| s.ends_with(key)), source)
        },
    )
    .await;
}

fn settling(o: &mut local_stack::stack::StackOptions, settle_s: u64) {
    o.config.folders.settle = Duration::from_secs(settle_s);
    o.config.folders.max = Duration::from_secs(60);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_uploaded_marker_first_goes_live_complete() {
    let mut o = integration_tests::options("sync");
    settling(&mut o, 3);
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    // The marker first, as `aws s3 sync` uploads it; then the parts, one
    // every 0.7 s (each inside the 3 s settle window of the one before).
    h.stack
        .upload(&format!("{ds}/run-1/_SUCCESS"), Vec::new())
        .await
        .unwrap();
    for i in 0..4u64 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        h.stack
            .upload(&format!("{ds}/run-1/part-{i:05}.jsonl"), part(i * 100, 100))
            .await
            .unwrap();
    }
    // Meanwhile the folder shows as settling, with the files seen so far.
    let status = fsctl::view::dataset_status(&h.stack.redis, &ds)
        .await
        .unwrap();
    let w = status
        .waiting
        .iter()
        .find(|w| w.folder == format!("{ds}/run-1/"));
    assert!(
        w.is_some_and(|w| w.settling.is_some()),
        "settling: {:?}",
        status.waiting
    );
    let live = h
        .stack
        .wait_for_flip(&ds, None, Duration::from_secs(60))
        .await
        .unwrap();
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();
    assert_eq!(
        (info.users, info.files.len()),
        (400, 4),
        "one version of every file"
    );
    all_served(&h, 0..400).await;
    assert_eq!(h.ds().history().await.unwrap().len(), 1, "one version only");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_folder_put_in_parallel_in_random_order_goes_live_complete() {
    let mut o = integration_tests::options("partitioned");
    settling(&mut o, 2);
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let mut puts: Vec<(String, Vec<u8>)> = (0..6u64)
        .map(|i| {
            (
                format!("{ds}/run-1/k={}/part-{i}.jsonl", i % 3),
                part(i * 50, 50),
            )
        })
        .collect();
    puts.push((format!("{ds}/run-1/_SUCCESS"), Vec::new()));
    // A fixed shuffle that puts the marker in the middle.
    puts.swap(6, 2);
    puts.swap(0, 5);
    let puts_len = puts.len();
    integration_tests::put_all(&h.stack.s3, &h.stack.topology.bucket, puts, puts_len).await;
    let live = h
        .stack
        .wait_for_flip(&ds, None, Duration::from_secs(60))
        .await
        .unwrap();
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();
    assert_eq!(info.users, 300);
    all_served(&h, 0..300).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_waits_for_the_files_it_names() {
    let mut o = integration_tests::options("manifest-first");
    settling(&mut o, 1);
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let manifest = serde_json::json!({"files": [
        {"key": "a.jsonl"}, {"key": "b.jsonl"}
    ]});
    h.stack
        .upload(
            &format!("{ds}/m/_manifest.json"),
            manifest.to_string().into_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.stack
        .upload(&format!("{ds}/m/a.jsonl"), part(0, 20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        h.live().await.is_none(),
        "not before every named file is in"
    );
    h.stack
        .upload(&format!("{ds}/m/b.jsonl"), part(20, 20))
        .await
        .unwrap();
    h.stack
        .wait_for_flip(&ds, None, Duration::from_secs(60))
        .await
        .unwrap();
    all_served(&h, 0..40).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_landing_after_its_folder_was_planned_fails_the_unfinished_version() {
    let mut o = integration_tests::options("late");
    settling(&mut o, 1);
    // Ingest held back, so the version is still loading when the file lands.
    o.ingest.concurrency = 0;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    h.stack
        .upload(&format!("{ds}/run-1/part-0.jsonl"), part(0, 10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.stack
        .upload(&format!("{ds}/run-1/_SUCCESS"), Vec::new())
        .await
        .unwrap();
    let version = eventually(
        "the folder to be planned",
        Duration::from_secs(30),
        || async {
            let history = h.ds().history().await.unwrap();
            check(!history.is_empty(), history.len()).map(|_| history[0].version.clone())
        },
    )
    .await;
    h.stack
        .upload(&format!("{ds}/run-1/part-1.jsonl"), part(10, 10))
        .await
        .unwrap();
    let info = eventually("the version to fail", Duration::from_secs(30), || async {
        let info = h.ds().version_info(&version).await.unwrap().unwrap();
        check(info.state == State::Failed, info.state).map(|_| info)
    })
    .await;
    let reason = info.reason.unwrap();
    assert!(
        reason.contains("part-1.jsonl") && reason.contains("marker last"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_uploads_go_live_like_single_part_ones() {
    let h = Harness::start("multipart").await;
    let ds = h.dataset.clone();
    let bucket = h.stack.topology.bucket.clone();
    // The version of the upload of `key` with `etag` (the emulator announces
    // a multipart upload twice, as `Put` and as `CompleteMultipartUpload`,
    // so the first flip after it may be either).
    let settled = |key: String, etag: String| {
        let (redis, ds, bucket) = (h.stack.redis.clone(), ds.clone(), bucket.clone());
        async move {
            fsctl::upload::wait(
                &redis,
                &ds,
                &format!("s3://{bucket}/{key}"),
                &etag,
                Duration::from_secs(60),
                |_, _| {},
            )
            .await
            .expect("the upload settles")
        }
    };
    // JSON Lines in 1 KiB parts (records cut across parts).
    let body = part(0, 200);
    let key = format!("{ds}/day1.jsonl");
    let etag = integration_tests::upload_multipart(&h.stack.s3, &bucket, &key, &body, 1024).await;
    let parts = body.len().div_ceil(1024);
    assert!(
        etag.trim_matches('"').ends_with(&format!("-{parts}")),
        "{etag}"
    );
    let info = settled(key.clone(), etag).await;
    assert_eq!(
        (info.state.is_complete(), info.users),
        (true, 200),
        "{info:?}"
    );
    live_from(&h, &key).await;
    all_served(&h, 0..200).await;

    // Parquet by pyarrow, in parts.
    let parquet = integration_tests::parquet_by("pyarrow", &part(1000, 300), &[]);
    let key = format!("{ds}/day2.parquet");
    let etag =
        integration_tests::upload_multipart(&h.stack.s3, &bucket, &key, &parquet, 2048).await;
    assert!(etag.contains('-'), "{etag}");
    let info = settled(key.clone(), etag).await;
    assert_eq!(
        (info.state.is_complete(), info.users),
        (true, 300),
        "{info:?}"
    );
    live_from(&h, &key).await;
    all_served(&h, 1000..1300).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_object_overwritten_during_ingest_fails_its_old_version() {
    let mut o = integration_tests::options("multipart-overwrite");
    o.planner.concurrency = 0;
    o.ingest.concurrency = 0;
    o.config.chunk_bytes = 4096;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let bucket = h.stack.topology.bucket.clone();
    let key = format!("{ds}/nightly.jsonl");
    let (planner, ingest) = (h.planner_deps(), h.ingest_deps());
    integration_tests::upload_multipart(&h.stack.s3, &bucket, &key, &part(0, 400), 4096).await;
    ingest::plan::handle(
        &planner,
        integration_tests::sqs_event(&h.object_event_bodies().await),
    )
    .await
    .unwrap();
    let chunks = h.chunk_messages().await;
    assert!(chunks.len() >= 2, "{}", chunks.len());
    ingest::load::ingest_chunk(&ingest, &chunks[0])
        .await
        .unwrap();
    // Another multipart upload of the same key, mid-ingest.
    integration_tests::upload_multipart(&h.stack.s3, &bucket, &key, &part(5000, 400), 4096).await;
    let mut failed = None;
    for c in &chunks[1..] {
        if let ingest::load::ChunkReport::VersionFailed { reason } =
            ingest::load::ingest_chunk(&ingest, c).await.unwrap()
        {
            failed.get_or_insert(reason);
        }
    }
    let reason = failed.expect("the old version fails");
    assert!(reason.contains("changed since it was planned"), "{reason}");
    assert!(h.live().await.is_none(), "never live with mixed data");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_of_2500_part_files_goes_live_as_one_version() {
    let mut o = integration_tests::options("many");
    settling(&mut o, 2);
    // 2,500 PUTs take a minute on a loaded machine.
    o.config.folders.max = Duration::from_secs(600);
    o.ingest.batch_size = 10;
    o.ingest.concurrency = 8;
    // The events of 2,500 files, noted by several planners at once, as
    // Lambda's event source runs them.
    o.planner.concurrency = 4;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    const FILES: u64 = 2500;
    // The marker first, then the parts, 32 at a time: more than two pages
    // of ListObjectsV2.
    h.stack
        .upload(&format!("{ds}/run-1/_SUCCESS"), Vec::new())
        .await
        .unwrap();
    let parts = (0..FILES)
        .map(|i| (format!("{ds}/run-1/part-{i:05}.jsonl"), part(i, 1)))
        .collect();
    integration_tests::put_all(&h.stack.s3, &h.stack.topology.bucket, parts, 32).await;
    let live = h
        .stack
        .wait_for_flip(&ds, None, Duration::from_secs(600))
        .await
        .unwrap();
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();
    assert_eq!((info.users, info.files.len() as u64), (FILES, FILES));
    // Small files are packed: tens of chunks, not one per file.
    let packed = FILES.div_ceil(ingest::plan::folder::PACK_MAX_FILES as u64);
    assert_eq!(
        u64::from(info.chunks),
        packed,
        "chunks of {FILES} one-user files"
    );
    for u in [0, 999, 1000, 1001, 2047, FILES - 1] {
        let (status, v) = h.get_json(&format!("/v1/{ds}/users/{u}")).await;
        assert_eq!(
            (status, &v["items"]),
            (200, &serde_json::json!([u * 10, u * 10 + 1])),
            "user {u}"
        );
    }
    assert_eq!(h.ds().history().await.unwrap().len(), 1, "one version only");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_may_name_a_multipart_etag() {
    let h = Harness::start("manifest-multipart").await;
    let ds = h.dataset.clone();
    let bucket = h.stack.topology.bucket.clone();
    let body = part(0, 60);
    let etag = integration_tests::upload_multipart(
        &h.stack.s3,
        &bucket,
        &format!("{ds}/m/a.jsonl"),
        &body,
        512,
    )
    .await;
    assert!(etag.contains('-'), "{etag}");
    let manifest = serde_json::json!({"files": [
        {"key": "a.jsonl", "size": body.len(), "etag": etag}
    ]});
    let info = h
        .upload_folder(
            &ds,
            "m",
            &[],
            ("_manifest.json", manifest.to_string().into_bytes()),
        )
        .await;
    assert_eq!(info.state, State::Live, "{info:?}");
    all_served(&h, 0..60).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_of_any_format_share_a_chunk_and_a_bad_one_fails_its_version() {
    let mut o = integration_tests::options("packed");
    // The failed version is looked at after it fails.
    o.janitor = None;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let put = |run: &str, files: Vec<(&str, Vec<u8>)>| {
        let parts = files
            .into_iter()
            .map(|(name, body)| (format!("{ds}/{run}/{name}"), body))
            .collect();
        integration_tests::put_all(&h.stack.s3, &h.stack.topology.bucket, parts, 4)
    };
    // Each file from its real writer; every one far below a chunk.
    put(
        "run-1",
        vec![
            ("part-0.jsonl", part(0, 50)),
            (
                "part-1.parquet",
                integration_tests::parquet_by("pyarrow", &part(50, 50), &[]),
            ),
            (
                "part-2.jsonl.gz",
                integration_tests::compressed_by("gzip", &part(100, 50)),
            ),
            (
                "part-3.csv",
                integration_tests::csv_by_python(&part(150, 50), "json"),
            ),
        ],
    )
    .await;
    h.stack
        .upload(&format!("{ds}/run-1/_SUCCESS"), Vec::new())
        .await
        .unwrap();
    live_from(&h, "run-1/").await;
    let live = h.live().await.unwrap();
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();
    assert_eq!(
        (info.chunks, info.files.len(), info.users),
        (1, 4, 200),
        "four files in one chunk"
    );
    all_served(&h, 0..200).await;

    // A malformed file packed between good ones fails its version, named.
    put(
        "run-2",
        vec![
            ("part-0.jsonl", part(0, 50)),
            // Planned like the others; a record without a user id, read at ingest.
            (
                "part-1.jsonl",
                [part(50, 10), b"{\"movieId\": [1, 2]}\n".to_vec()].concat(),
            ),
            ("part-2.jsonl", part(100, 50)),
        ],
    )
    .await;
    h.stack
        .upload(&format!("{ds}/run-2/_SUCCESS"), Vec::new())
        .await
        .unwrap();
    let failed = eventually("run-2 to fail", Duration::from_secs(60), || async {
        let history = h.ds().history().await.unwrap();
        let run2 = history
            .iter()
            .find(|v| v.source.contains("/run-2/") && v.state == State::Failed)
            .cloned();
        check(run2.is_some(), history.len()).map(|_| run2.unwrap())
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("run-2/part-1.jsonl"), "{reason}");
    assert_eq!(
        h.live().await.unwrap().version,
        live.version,
        "run-1 stays live"
    );
    all_served(&h, 0..200).await;
}

/// A batch of 10,000 buckets or more is planned again in chunks of about
/// two users a bucket (so that each HSET carries a few users), a single
/// object and a folder alike. With 4 users a bucket, 48,000 users (12,000
/// buckets, 2.4 MB) would be 36 chunks of the 64 KiB configured here; the
/// denser plan holds about 24,000 users a chunk.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_batch_is_planned_in_chunks_of_about_two_users_a_bucket() {
    let mut o = integration_tests::options("dense");
    o.config.users_per_bucket = 4;
    let h = Harness::start_with(o).await;
    let ds = h.dataset.clone();
    let users = 48_000;
    let live = h.upload_and_wait("one.jsonl", part(0, users)).await;
    let info = h.ds().version_info(&live.version).await.unwrap().unwrap();
    assert_eq!(info.users, users);
    // Buckets come from the planner's estimate of the users.
    assert!((10_000..14_000).contains(&info.buckets), "{}", info.buckets);
    assert!((2..=3).contains(&info.chunks), "{} chunks", info.chunks);
    for u in (0..users).step_by(97) {
        all_served(&h, u..u + 1).await;
    }

    let info = h
        .upload_folder(
            &ds,
            "run-1",
            &[
                ("part-0.jsonl", part(0, users / 2)),
                ("part-1.jsonl", part(users / 2, users / 2)),
            ],
            ("_SUCCESS", Vec::new()),
        )
        .await;
    assert_eq!((info.state, info.users), (State::Live, users));
    assert!((2..=3).contains(&info.chunks), "{} chunks", info.chunks);
    for u in (0..users).step_by(97) {
        all_served(&h, u..u + 1).await;
    }
}
