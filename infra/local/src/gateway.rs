//! An HTTP server that plays API Gateway (HTTP API, payload format 2.0) in
//! front of the serve handler: each request becomes the event API Gateway
//! would send, and the handler's response becomes the HTTP response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Map, Value};
use serve::http::App;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let router = axum::Router::new().fallback(proxy).with_state(app);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

/// The API Gateway HTTP API event for a request.
pub fn event_for(method: &Method, uri: &Uri, headers: &HeaderMap) -> Value {
    let mut h = Map::new();
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            h.insert(name.as_str().to_string(), json!(v));
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
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
        "isBase64Encoded": false
    })
}

async fn proxy(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let event = event_for(&method, &uri, &headers);
    let out = match serve::handle(&app, LambdaEvent::new(event, Context::default())).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "serve handler failed");
            return plain(StatusCode::BAD_GATEWAY, r#"{"error":{"code":"bad_gateway","message":"handler failed"}}"#.into());
        }
    };
    let status = out.get("statusCode").and_then(Value::as_u64).and_then(|s| StatusCode::from_u16(s as u16).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = out.get("body").and_then(Value::as_str).unwrap_or("").to_string();
    let mut resp = plain(status, if method == Method::HEAD { String::new() } else { body });
    if let Some(h) = out.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            if let (Ok(name), Some(Ok(value))) = (k.parse::<axum::http::HeaderName>(), v.as_str().map(|s| s.parse())) {
                resp.headers_mut().insert(name, value);
            }
        }
    }
    resp
}

fn plain(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
    r
}
