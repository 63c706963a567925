//! The local HTTP gateway answers every request, under concurrent load and
//! with the logging `make run` uses (request spans on, across a
//! multi-threaded runtime), where a span entered across an `.await` once
//! made the subscriber panic and the gateway drop the connection unanswered.

use std::time::Duration;

use integration_tests::{http_with_headers, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_answers_every_request_under_concurrent_load() {
    // Spans of every request enabled, as `make run` has them (its filter is `info`).
    tracing_subscriber::fmt()
        .with_env_filter("warn,serve=info")
        .with_test_writer()
        .init();
    let mut o = integration_tests::options("gateway");
    o.http = Some("127.0.0.1:0".parse().unwrap());
    let h = Harness::start_with(o).await;
    let mut body = String::new();
    for u in 1..=100 {
        body.push_str(&format!("{{\"userId\": {u}, \"movieId\": [1, 2, 3]}}\n"));
    }
    h.upload_and_wait("day.jsonl", body.into_bytes()).await;
    let addr = h.stack.http_addr.unwrap();
    let (clients, each) = (8, 1500);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let ds = h.dataset.clone();
            tokio::spawn(async move {
                let mut unanswered = 0;
                for i in 0..each {
                    let target = format!("/v1/{ds}/users/{}?rank=1", 1 + (c * each + i) % 100);
                    let raw = format!(
                        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    );
                    let (status, _, _) = http_with_headers(addr, raw).await;
                    match status {
                        200 => {}
                        0 => unanswered += 1,
                        other => panic!("{target}: {other}"),
                    }
                }
                unanswered
            })
        })
        .collect();
    let mut unanswered = 0;
    for t in tasks {
        unanswered += tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("clients finish")
            .unwrap();
    }
    assert_eq!(
        unanswered,
        0,
        "{unanswered} of {} requests closed without an answer",
        clients * each
    );
}
