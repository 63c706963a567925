//! Deltas through the real path: uploads under `<dataset>/_delta/` upsert
//! and delete users on the live version, ordered by event time against each
//! other and against full batches, and nothing of a bad one is applied.

use std::time::Duration;

use ingest::s3::messages::ChunkMessage;
use integration_tests::{at_time, eventually, sqs_event, Harness};
use serde_json::{json, Value};
use shared::db::deltas::{self, DeltaState};
use shared::db::protocol::Step;

/// JSON Lines of users `first..first+n`, each with items `tag*1000 + user`.
fn users(first: u64, n: u64, tag: u64) -> Vec<u8> {
    (first..first + n)
        .map(|u| {
            format!(
                "{{\"userId\": {u}, \"movieId\": [{}, 7]}}\n",
                tag * 1000 + u
            )
        })
        .collect::<String>()
        .into_bytes()
}

fn lines(records: &[Value]) -> Vec<u8> {
    records
        .iter()
        .map(|r| format!("{r}\n"))
        .collect::<String>()
        .into_bytes()
}

/// The first item of `user` in the live version, or `None` when it is unknown.
async fn first_item(h: &Harness, user: u64) -> Option<Value> {
    let (status, v) = h.get_json(&format!("/v1/{}/users/{user}", h.dataset)).await;
    match status {
        200 => Some(v["items"][0].clone()),
        404 => None,
        other => panic!("user {user}: {other} {v}"),
    }
}

/// Waits until the delta uploaded from `key` has settled (applied or failed).
async fn settled(h: &Harness, key: &str) -> deltas::Delta {
    let source = format!("s3://{}/{key}", h.stack.topology.bucket);
    eventually(
        &format!("delta {key} to settle"),
        Duration::from_secs(30),
        || async {
            let logged = deltas::newer_than(&h.stack.redis, &h.keys(), 0)
                .await
                .unwrap();
            let found = logged.iter().find(|d| d.source == source);
            match found {
                Some(d) if d.state != DeltaState::Applying => Ok(d.clone()),
                _ => Err(found.map(|d| d.state)),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_upserts_and_deletes_users_of_the_live_version_without_a_flip() {
    let h = Harness::start("delta").await;
    let live = h.upload_and_wait("day1.jsonl", users(1, 100, 1)).await;
    let key = format!("{}/_delta/fixes.jsonl", h.dataset);
    let delta = lines(&[
        json!({"userId": 3, "movieId": [999, 998]}),
        json!({"userId": 4, "_delete": true}),
        json!({"userId": 5000, "movieId": [5]}),
    ]);
    h.stack.upload(&key, delta).await.unwrap();
    let d = settled(&h, &key).await;
    assert_eq!(
        (d.state, d.upserts, d.deletes, d.bad),
        (DeltaState::Applied, 2, 1, 0),
        "{d:?}"
    );
    assert_eq!(
        h.live().await.unwrap().version,
        live.version,
        "no new version, no flip"
    );
    assert_eq!(first_item(&h, 3).await, Some(json!(999)));
    assert_eq!(
        first_item(&h, 4).await,
        None,
        "the tombstone removed user 4"
    );
    assert_eq!(first_item(&h, 5000).await, Some(json!(5)), "a new user");
    assert_eq!(
        first_item(&h, 6).await,
        Some(json!(1006)),
        "the rest untouched"
    );
    // A batch read sees the same.
    let (_, v) = h
        .get_json(&format!("/v1/{}/users?ids=3,4,6", h.dataset))
        .await;
    let statuses: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["found", "unknown_user", "found"]);

    // A malformed delta applies nothing, and says why.
    let bad_key = format!("{}/_delta/broken.jsonl", h.dataset);
    let mut broken = lines(&[json!({"userId": 6, "movieId": [1]})]);
    broken.extend_from_slice(b"{\"userId\": 7, \"movieId\": \n");
    h.stack.upload(&bad_key, broken).await.unwrap();
    let d = settled(&h, &bad_key).await;
    assert_eq!(d.state, DeltaState::Failed, "{d:?}");
    assert!(
        d.reason.as_deref().unwrap_or("").contains("broken.jsonl"),
        "{d:?}"
    );
    assert_eq!(
        first_item(&h, 6).await,
        Some(json!(1006)),
        "nothing of a failed delta is applied"
    );

    // A CSV delta, as Python's csv module writes one: a `_delete` column of
    // `true` makes a row a tombstone.
    let csv_key = format!("{}/_delta/fixes.csv", h.dataset);
    let csv = integration_tests::csv_by_python(
        &lines(&[
            json!({"userId": 8, "movieId": [888, 887]}),
            json!({"userId": 9, "_delete": true}),
        ]),
        "joined",
    );
    assert!(
        String::from_utf8_lossy(&csv).contains("_delete"),
        "{}",
        String::from_utf8_lossy(&csv)
    );
    h.stack.upload(&csv_key, csv).await.unwrap();
    let d = settled(&h, &csv_key).await;
    assert_eq!(
        (d.state, d.upserts, d.deletes),
        (DeltaState::Applied, 1, 1),
        "{d:?}"
    );
    assert_eq!(
        (first_item(&h, 8).await, first_item(&h, 9).await),
        (Some(json!(888)), None)
    );

    // Status: the deltas since the live version went live, the failed one's reason.
    let st = fsctl::view::dataset_status(&h.stack.redis, &h.dataset)
        .await
        .unwrap();
    let d = &st.deltas;
    assert_eq!(
        (
            d.applied_since_live,
            d.users_since_live,
            st.live.as_ref().unwrap().deltas
        ),
        (2, 5, 2),
        "{d:?}"
    );
    assert_eq!(
        d.last.as_ref().unwrap().source,
        format!("s3://{}/{csv_key}", h.stack.topology.bucket)
    );
    assert!(
        d.failed[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("broken.jsonl"),
        "{d:?}"
    );

    // The log keeps a delta while a version older than it is kept.
    let day2 = h.upload_and_wait("day2.jsonl", users(1, 100, 2)).await;
    assert_eq!(
        first_item(&h, 3).await,
        Some(json!(2003)),
        "the newer batch, not the older delta"
    );
    assert_eq!(
        deltas::trim_unneeded(&h.stack.redis, &h.keys())
            .await
            .unwrap(),
        0,
        "day 1 is kept"
    );
    assert_eq!(
        deltas::newer_than(&h.stack.redis, &h.keys(), 0)
            .await
            .unwrap()
            .len(),
        3
    );
    let ds = h.ds();
    ds.delete_version(&live.version, live.buckets, Duration::ZERO)
        .await
        .unwrap();
    // (The stack's janitor may trim them first.)
    deltas::trim_unneeded(&h.stack.redis, &h.keys())
        .await
        .unwrap();
    assert!(
        deltas::newer_than(&h.stack.redis, &h.keys(), 0)
            .await
            .unwrap()
            .is_empty(),
        "older than every kept version"
    );
    assert_eq!(h.live().await.unwrap().version, day2.version);
}

/// Plans the uploads of `keys` with the event times given, in that order,
/// and returns their chunk messages by key.
async fn plan_at(h: &Harness, uploads: &[(&str, &str)]) -> Vec<(String, Vec<ChunkMessage>)> {
    let events = h.object_events().await;
    let bodies: Vec<String> = uploads
        .iter()
        .map(|(key, time)| at_time(&events[*key], time))
        .collect();
    let resp = ingest::plan::handle(&h.planner_deps(), sqs_event(&bodies))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let msgs: Vec<ChunkMessage> = h
        .drain(&h.stack.topology.chunks_url)
        .await
        .iter()
        .map(|b| ChunkMessage::from_json(b).unwrap())
        .collect();
    uploads
        .iter()
        .map(|(key, _)| {
            (
                key.to_string(),
                msgs.iter().filter(|m| m.key == *key).cloned().collect(),
            )
        })
        .collect()
}

async fn ingest_all(h: &Harness, msgs: &[ChunkMessage]) -> Vec<ingest::load::ChunkReport> {
    let deps = h.ingest_deps();
    let mut out = Vec::new();
    for m in msgs {
        out.push(ingest::load::ingest_chunk(&deps, m).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn deltas_apply_in_event_time_order_once_and_never_below_the_batch_they_follow() {
    let h = Harness::manual("delta-order").await;
    let k = |name: &str| format!("{}/{name}", h.dataset);
    h.stack
        .upload(&k("day1.jsonl"), users(1, 50, 1))
        .await
        .unwrap();
    let planned = plan_at(&h, &[(&k("day1.jsonl"), "2026-12-01T10:00:00.000Z")]).await;
    ingest_all(&h, &planned[0].1).await;
    assert!(h.live().await.is_some());

    h.stack
        .upload(
            &k("_delta/a.jsonl"),
            lines(&[
                json!({"userId": 1, "movieId": [111]}),
                json!({"userId": 2, "movieId": [211]}),
            ]),
        )
        .await
        .unwrap();
    h.stack
        .upload(
            &k("_delta/b.jsonl"),
            lines(&[
                json!({"userId": 1, "movieId": [122]}),
                json!({"userId": 3, "_delete": true}),
            ]),
        )
        .await
        .unwrap();
    h.stack
        .upload(
            &k("_delta/old.jsonl"),
            lines(&[json!({"userId": 4, "movieId": [404]})]),
        )
        .await
        .unwrap();
    let planned = plan_at(
        &h,
        &[
            (&k("_delta/a.jsonl"), "2026-12-01T10:01:00.000Z"),
            (&k("_delta/b.jsonl"), "2026-12-01T10:02:00.000Z"),
            (&k("_delta/old.jsonl"), "2026-12-01T09:59:00.000Z"),
        ],
    )
    .await;
    let (a, b, old) = (&planned[0].1, &planned[1].1, &planned[2].1);
    assert_eq!(
        (a.len(), b.len(), old.len()),
        (1, 1, 1),
        "a delta is one chunk"
    );

    // The newer delta first, then the older one, late: user 1 keeps the
    // newer delta's record; user 2, which only the older one touches, takes it.
    ingest_all(&h, b).await;
    ingest_all(&h, a).await;
    assert_eq!(first_item(&h, 1).await, Some(json!(122)));
    assert_eq!(first_item(&h, 2).await, Some(json!(211)));
    assert_eq!(first_item(&h, 3).await, None);
    // Delivered again, each changes nothing.
    ingest_all(&h, a).await;
    ingest_all(&h, b).await;
    assert_eq!(
        (
            first_item(&h, 1).await,
            first_item(&h, 2).await,
            first_item(&h, 3).await
        ),
        (Some(json!(122)), Some(json!(211)), None)
    );
    // Applied twice by its script (a redelivery after a crash mid-way), the
    // older delta still loses to the newer one.
    let live = h.live().await.unwrap();
    let a_ms = deltas::get(&h.stack.redis, &h.keys(), &a[0].version)
        .await
        .unwrap()
        .unwrap()
        .event_ms;
    let again = deltas::apply(
        &h.stack.redis,
        &h.keys(),
        &live.version,
        live.buckets,
        (&a[0].version, a_ms),
        &[("1".into(), Some(b"\x02\x03\x01\x02".to_vec()))],
    )
    .await
    .unwrap();
    assert_eq!(again.upserts, 0);
    assert_eq!(first_item(&h, 1).await, Some(json!(122)));
    // Two deltas of one millisecond are ordered by id, whichever comes first.
    let value = |item: u8| Some(vec![0x02, 0x03, 0x01, item * 2]);
    let t = a_ms + 3_600_000;
    for (id, item) in [("t-b", 9), ("t-a", 8)] {
        deltas::apply(
            &h.stack.redis,
            &h.keys(),
            &live.version,
            live.buckets,
            (id, t),
            &[("1".into(), value(item))],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        first_item(&h, 1).await,
        Some(json!(9)),
        "the later id wins though it came first"
    );
    // A delta older than the live batch is taken as included in it.
    ingest_all(&h, old).await;
    assert_eq!(first_item(&h, 4).await, Some(json!(1004)));

    // In lenient mode a delta skips and counts its bad records.
    let mixed = k("_delta/mixed.jsonl");
    let mut body = lines(&[json!({"userId": 5, "movieId": [555]})]);
    body.extend_from_slice(b"{\"userId\": 6, \"movieId\": \"not a list\"}\n");
    h.stack.upload(&mixed, body).await.unwrap();
    let msgs = plan_at(&h, &[(&mixed, "2026-12-01T10:03:00.000Z")])
        .await
        .remove(0)
        .1;
    let mut lenient = h.ingest_deps();
    lenient.config.validation.bad_records =
        shared::config::BadRecords::Lenient { max_fraction: 0.5 };
    ingest::load::ingest_chunk(&lenient, &msgs[0])
        .await
        .unwrap();
    let d = deltas::get(&h.stack.redis, &h.keys(), &msgs[0].version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.state, d.upserts, d.bad),
        (DeltaState::Applied, 1, 1),
        "{d:?}"
    );
    assert_eq!(
        (first_item(&h, 5).await, first_item(&h, 6).await),
        (Some(json!(555)), Some(json!(1006)))
    );

    // Parquet does not stream: no delta, and the log says why.
    let pq = k("_delta/cols.parquet");
    h.stack
        .upload(
            &pq,
            integration_tests::parquet_by(
                "pyarrow",
                &lines(&[json!({"userId": 7, "movieId": [777]})]),
                &[],
            ),
        )
        .await
        .unwrap();
    let planned = plan_at(&h, &[(&pq, "2026-12-01T10:04:00.000Z")])
        .await
        .remove(0)
        .1;
    assert!(planned.is_empty(), "no chunk message for it");
    let failed = deltas::newer_than(&h.stack.redis, &h.keys(), 0)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.source.ends_with("cols.parquet"))
        .unwrap();
    assert_eq!(failed.state, DeltaState::Failed);
    assert!(
        failed.reason.as_deref().unwrap().contains("not Parquet"),
        "{failed:?}"
    );
    assert_eq!(first_item(&h, 7).await, Some(json!(1007)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_uploaded_while_a_batch_loads_survives_that_batch_going_live() {
    let h = Harness::manual("delta-replay").await;
    let k = |name: &str| format!("{}/{name}", h.dataset);
    h.stack
        .upload(&k("day1.jsonl"), users(1, 200, 1))
        .await
        .unwrap();
    let planned = plan_at(&h, &[(&k("day1.jsonl"), "2026-12-01T10:00:00.000Z")]).await;
    ingest_all(&h, &planned[0].1).await;

    // The next batch, produced at 11:00, loads all but its last chunk…
    h.stack
        .upload(&k("day2.jsonl"), users(1, 200, 2))
        .await
        .unwrap();
    let day2 = plan_at(&h, &[(&k("day2.jsonl"), "2026-12-01T11:00:00.000Z")])
        .await
        .remove(0)
        .1;
    assert!(day2.len() > 2, "several chunks");
    let (last, rest) = day2.split_last().unwrap();
    ingest_all(&h, rest).await;

    // …while a delta from 11:30 and one from 10:30 arrive.
    h.stack
        .upload(
            &k("_delta/late.jsonl"),
            lines(&[
                json!({"userId": 1, "movieId": [777]}),
                json!({"userId": 2, "_delete": true}),
            ]),
        )
        .await
        .unwrap();
    h.stack
        .upload(
            &k("_delta/early.jsonl"),
            lines(&[json!({"userId": 3, "movieId": [333]})]),
        )
        .await
        .unwrap();
    let deltas = plan_at(
        &h,
        &[
            (&k("_delta/late.jsonl"), "2026-12-01T11:30:00.000Z"),
            (&k("_delta/early.jsonl"), "2026-12-01T10:30:00.000Z"),
        ],
    )
    .await;
    ingest_all(&h, &deltas[0].1).await;
    ingest_all(&h, &deltas[1].1).await;
    // Both apply to the live day-1 batch.
    assert_eq!(
        (
            first_item(&h, 1).await,
            first_item(&h, 2).await,
            first_item(&h, 3).await
        ),
        (Some(json!(777)), None, Some(json!(333)))
    );

    // Day 2's last chunk: the late delta is replayed onto it before it goes
    // live; the early one is taken as included in day 2.
    let report = ingest_all(&h, std::slice::from_ref(last)).await.remove(0);
    assert!(
        matches!(
            report,
            ingest::load::ChunkReport::Done {
                step: Step::Flipped { .. },
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(h.live().await.unwrap().version, last.version);
    assert_eq!(
        first_item(&h, 1).await,
        Some(json!(777)),
        "the newer delta survived the flip"
    );
    assert_eq!(first_item(&h, 2).await, None, "and its tombstone");
    assert_eq!(
        first_item(&h, 3).await,
        Some(json!(2003)),
        "the older delta did not overwrite the newer batch"
    );
    assert_eq!(first_item(&h, 4).await, Some(json!(2004)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_target_gets_the_deltas_newer_than_it_replayed_first() {
    let h = Harness::manual("delta-rollback").await;
    let k = |name: &str| format!("{}/{name}", h.dataset);
    for (name, tag) in [("day1.jsonl", 1), ("day2.jsonl", 2)] {
        h.stack.upload(&k(name), users(1, 50, tag)).await.unwrap();
    }
    for (name, body) in [
        ("a.jsonl", lines(&[json!({"userId": 1, "movieId": [111]})])),
        (
            "b.jsonl",
            lines(&[
                json!({"userId": 2, "movieId": [222]}),
                json!({"userId": 3, "_delete": true}),
            ]),
        ),
    ] {
        h.stack
            .upload(&k(&format!("_delta/{name}")), body)
            .await
            .unwrap();
    }
    // Day 1 live, delta a onto it, day 2 live (a is older: not replayed),
    // delta b onto day 2: each planned and ingested before the next arrives.
    let events = h.object_events().await;
    let mut versions = Vec::new();
    for (name, time) in [
        ("day1.jsonl", "10:00"),
        ("_delta/a.jsonl", "10:30"),
        ("day2.jsonl", "11:00"),
        ("_delta/b.jsonl", "11:30"),
    ] {
        let body = at_time(&events[&k(name)], &format!("2026-12-01T{time}:00.000Z"));
        ingest::plan::handle(&h.planner_deps(), sqs_event(&[body]))
            .await
            .unwrap();
        let msgs: Vec<ChunkMessage> = h
            .drain(&h.stack.topology.chunks_url)
            .await
            .iter()
            .map(|b| ChunkMessage::from_json(b).unwrap())
            .collect();
        ingest_all(&h, &msgs).await;
        versions.push(msgs[0].version.clone());
    }
    let day1 = versions[0].clone();
    assert_eq!(h.live().await.unwrap().version, versions[2]);
    assert_eq!(
        (
            first_item(&h, 1).await,
            first_item(&h, 2).await,
            first_item(&h, 3).await
        ),
        (Some(json!(2001)), Some(json!(222)), None)
    );

    // A bare rollback to day 1 is refused until b is in it…
    assert_eq!(
        h.ds().rollback(&day1).await.unwrap(),
        shared::db::protocol::Moved::Replay
    );
    // …which the operator's rollback does first.
    let ctx = fsctl::ctx::Ctx {
        config: h.config.clone(),
        json: true,
        full: false,
    };
    let ds = h.ds();
    let moved = fsctl::moves::move_replaying(&ctx, &ds, &day1, || ds.rollback(&day1))
        .await
        .unwrap();
    assert!(
        matches!(moved, shared::db::protocol::Moved::Moved { .. }),
        "{moved:?}"
    );
    assert_eq!(h.live().await.unwrap().version, day1);
    assert_eq!(
        first_item(&h, 1).await,
        Some(json!(111)),
        "delta a, applied while day 1 was live"
    );
    assert_eq!(
        first_item(&h, 2).await,
        Some(json!(222)),
        "delta b, replayed before the rollback"
    );
    assert_eq!(first_item(&h, 3).await, None, "and b's tombstone");
    assert_eq!(
        first_item(&h, 4).await,
        Some(json!(1004)),
        "day 1's own users"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_reaches_the_live_version_backups_and_a_version_still_loading() {
    let h = Harness::manual("forget").await;
    let k = |name: &str| format!("{}/{name}", h.dataset);
    for (name, tag) in [("day1.jsonl", 1), ("day2.jsonl", 2), ("day3.jsonl", 3)] {
        h.stack.upload(&k(name), users(1, 200, tag)).await.unwrap();
    }
    let events = h.object_events().await;
    let mut plans = Vec::new();
    for (name, time) in [
        ("day1.jsonl", "10:00"),
        ("day2.jsonl", "11:00"),
        ("day3.jsonl", "12:00"),
    ] {
        let body = at_time(&events[&k(name)], &format!("2026-12-01T{time}:00.000Z"));
        ingest::plan::handle(&h.planner_deps(), sqs_event(&[body]))
            .await
            .unwrap();
        plans.push(
            h.drain(&h.stack.topology.chunks_url)
                .await
                .iter()
                .map(|b| ChunkMessage::from_json(b).unwrap())
                .collect::<Vec<_>>(),
        );
    }
    // Day 1 a backup, day 2 live, day 3 loading all but its last chunk.
    ingest_all(&h, &plans[0]).await;
    ingest_all(&h, &plans[1]).await;
    let (last, rest) = plans[2].split_last().unwrap();
    ingest_all(&h, rest).await;
    let (day1, day2, day3) = (
        plans[0][0].version.clone(),
        plans[1][0].version.clone(),
        last.version.clone(),
    );

    let done = fsctl::forget::forget(
        &h.ds(),
        &["5".to_string(), "6".to_string(), "no-such-user".to_string()],
    )
    .await
    .unwrap();
    let mut touched: Vec<(String, u64)> = done.versions.clone();
    touched.sort();
    assert_eq!(
        touched,
        vec![(day1.clone(), 2), (day2.clone(), 2)],
        "{done:?}"
    );
    assert_eq!(done.loading, vec![day3.clone()]);
    assert_eq!(
        (
            first_item(&h, 5).await,
            first_item(&h, 6).await,
            first_item(&h, 7).await
        ),
        (None, None, Some(json!(2007)))
    );
    for v in [&day1, &day2] {
        let held = h.contents(&h.dataset, v).await;
        assert!(
            !held.contains_key("5") && !held.contains_key("6") && held.contains_key("7"),
            "{v}"
        );
    }

    // Day 3 drops them before it goes live.
    ingest_all(&h, std::slice::from_ref(last)).await;
    assert_eq!(h.live().await.unwrap().version, day3);
    assert_eq!(
        (first_item(&h, 5).await, first_item(&h, 7).await),
        (None, Some(json!(3007)))
    );
    // A rollback to day 1 does not bring them back.
    let ctx = fsctl::ctx::Ctx {
        config: h.config.clone(),
        json: true,
        full: false,
    };
    let ds = h.ds();
    fsctl::moves::move_replaying(&ctx, &ds, &day1, || ds.rollback(&day1))
        .await
        .unwrap();
    assert_eq!(
        (first_item(&h, 5).await, first_item(&h, 7).await),
        (None, Some(json!(1007)))
    );

    // A batch produced after the forget is newer than it: it holds the user again.
    h.stack
        .upload(&k("day4.jsonl"), users(1, 200, 4))
        .await
        .unwrap();
    let body = at_time(
        &h.object_events().await[&k("day4.jsonl")],
        &shared::version_id::rfc3339_ms(protocol_now(&h).await + 60_000),
    );
    ingest::plan::handle(&h.planner_deps(), sqs_event(&[body]))
        .await
        .unwrap();
    let day4: Vec<ChunkMessage> = h
        .drain(&h.stack.topology.chunks_url)
        .await
        .iter()
        .map(|b| ChunkMessage::from_json(b).unwrap())
        .collect();
    ingest_all(&h, &day4).await;
    assert_eq!(h.live().await.unwrap().version, day4[0].version);
    assert_eq!(first_item(&h, 5).await, Some(json!(4005)));
}

async fn protocol_now(h: &Harness) -> u64 {
    h.stack.redis.server_ms().await.unwrap()
}
