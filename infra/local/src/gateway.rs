//! An HTTP server that plays API Gateway (HTTP API, payload format 2.0) in
//! front of the serve handler: each request is authorized as the stage's
//! authorizer would ([`crate::auth`]), then becomes the event API Gateway
//! would send, and the handler's response becomes the HTTP response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Map, Value};
use serve::http::App;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Caller, GatewayAuth};
use crate::console::Traffic;

/// What the gateway's requests share.
#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    traffic: Arc<Traffic>,
    auth: Arc<GatewayAuth>,
}

/// Serves `app` on `listener` until `stop` turns true, letting through only
/// the requests `auth` allows, counting every answer in `traffic`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    auth: Arc<GatewayAuth>,
    traffic: Arc<Traffic>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // API Gateway takes bodies up to 10 MB; the handler has its own, lower, limit.
    let router = axum::Router::new()
        .fallback(proxy)
        .layer(DefaultBodyLimit::max(10 << 20))
        .with_state(Shared { app, traffic, auth });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    })
    .await
}

/// The API Gateway HTTP API event for a request: a body that is not UTF-8
/// travels in base64, as API Gateway sends it.
pub fn event_for(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Value {
    let mut h = Map::new();
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            h.insert(name.as_str().to_string(), json!(v));
        }
    }
    let (body, base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (json!(text), false),
        Err(_) => (
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let now = shared::now_ms();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": h,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": { "method": method.as_str(), "path": uri.path(), "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "" },
            "requestId": format!("local-{now}"),
            "routeKey": "$default",
            "stage": "$default",
            "time": "",
            "timeEpoch": now
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

async fn proxy(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use futures::FutureExt;
    let started = Instant::now();
    let caller =
        match shared
            .auth
            .check(&method, &uri, &headers, &body, std::time::SystemTime::now())
        {
            Ok(caller) => caller,
            Err(refusal) => {
                let response = plain(refusal.status, refusal.body());
                shared
                    .traffic
                    .record(response.status().as_u16(), started.elapsed());
                return response;
            }
        };
    // A handler that panics is a failed invocation, which API Gateway answers
    // with an error; it must not leave the connection closed unanswered.
    let response =
        match std::panic::AssertUnwindSafe(answer(&shared.app, caller, method, uri, headers, body))
            .catch_unwind()
            .await
        {
            Ok(response) => response,
            Err(_) => {
                tracing::error!("serve handler panicked");
                plain(
                    StatusCode::BAD_GATEWAY,
                    r#"{"error":{"code":"bad_gateway","message":"handler failed"}}"#.into(),
                )
            }
        };
    shared
        .traffic
        .record(response.status().as_u16(), started.elapsed());
    response
}

async fn answer(
    app: &App,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut event = event_for(&method, &uri, &headers, &body);
    if let Some(authorizer) = caller.authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    let out = match serve::handle(app, LambdaEvent::new(event, Context::default())).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "serve handler failed");
            return plain(
                StatusCode::BAD_GATEWAY,
                r#"{"error":{"code":"bad_gateway","message":"handler failed"}}"#.into(),
            );
        }
    };
    let status = out
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = out
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut resp = plain(
        status,
        if method == Method::HEAD {
            String::new()
        } else {
            body
        },
    );
    if let Some(h) = out.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            if let (Ok(name), Some(Ok(value))) = (
                k.parse::<axum::http::HeaderName>(),
                v.as_str().map(|s| s.parse()),
            ) {
                resp.headers_mut().insert(name, value);
            }
        }
    }
    resp
}

fn plain(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r
}
