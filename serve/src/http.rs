//! API Gateway events in and out.
//!
//! The same function sits behind an HTTP API (payload format 2.0) or a REST
//! API (1.0): the event's `version` field tells them apart, and the answer is
//! built in the matching shape.

use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use lambda_runtime::{Error, LambdaEvent};
use std::time::Instant;

use serde_json::{json, Value};
use shared::metrics::{Metrics, Unit};
use shared::config::ServeConfig;
use shared::format::record::Stored;
use tracing::{error, info};

use crate::api::{self, ApiError, Request, Response, Route};
use crate::reader::Reader;

/// What serve needs, built once per process.
pub struct App {
    pub config: ServeConfig,
    pub reader: Reader,
    pub metrics: Metrics,
}

impl App {
    pub fn new(config: ServeConfig, reader: Reader) -> Self {
        App { metrics: Metrics::new(&config.metrics_namespace), config, reader }
    }

    /// Answers one request, and emits its latency and status as metrics.
    pub async fn respond(&self, req: &Request) -> Response {
        let started = Instant::now();
        let route = api::route(req);
        let dataset = match &route {
            Ok(Route::User { dataset, .. }) => dataset.as_str(),
            _ => self.config.default_dataset.as_str(),
        };
        let (response, hit) = match &route {
            Ok(r) => match self.answer(r).await {
                Ok((resp, hit)) => (resp, hit),
                Err(e) => (e.into_response(), false),
            },
            Err(e) => (e.clone().into_response(), false),
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.emit(
            dataset,
            &[("ServeMillis", ms, Unit::Milliseconds), ("Requests", 1.0, Unit::Count), ("PointerCacheHits", f64::from(u8::from(hit)), Unit::Count)],
            &[("status", json!(response.status))],
        );
        response
    }

    /// The answer to a valid route, and whether the pointer came from the cache.
    async fn answer(&self, route: &Route) -> Result<(Response, bool), ApiError> {
        let (dataset, user, version) = match route {
            Route::Legacy { user, .. } => (self.config.default_dataset.as_str(), user.as_str(), None),
            Route::User { dataset, user, version, .. } => (dataset.as_str(), user.as_str(), version.as_deref()),
        };
        let found = self.reader.find(dataset, user, version).await?;
        let stored = Stored::decode(&found.bytes).map_err(|e| {
            error!(%dataset, version = %found.version, %user, error = %e, "stored record does not decode");
            ApiError::internal()
        })?;
        Ok((api::render(route, &self.config.items_field, dataset, &found.version, &stored)?, found.cache_hit))
    }
}

/// Lambda handler: an API Gateway event (2.0 or 1.0) in, the matching response out.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let request_id = event.context.request_id.clone();
    let span = tracing::info_span!("request", request_id = %request_id);
    let _enter = span.enter();
    let payload = event.payload;
    let v2 = payload.get("version").and_then(Value::as_str) == Some("2.0");
    if v2 {
        let req: ApiGatewayV2httpRequest = serde_json::from_value(payload)?;
        let response = app.respond(&from_v2(&req)).await;
        log(&req.raw_path.unwrap_or_default(), &response);
        Ok(serde_json::to_value(to_v2(response))?)
    } else {
        let req: ApiGatewayProxyRequest = serde_json::from_value(payload)?;
        let response = app.respond(&from_v1(&req)).await;
        log(&req.path.unwrap_or_default(), &response);
        Ok(serde_json::to_value(to_v1(response))?)
    }
}

fn log(path: &str, r: &Response) {
    info!(path = %path.chars().take(200).collect::<String>(), status = r.status, "request");
}

/// Reads an HTTP API (2.0) event.
pub fn from_v2(e: &ApiGatewayV2httpRequest) -> Request {
    let raw_query = e.raw_query_string.clone().unwrap_or_default();
    let mut path = e.raw_path.clone().unwrap_or_else(|| "/".into());
    // A named stage prefixes the raw path; `$default` does not.
    if let Some(stage) = e.request_context.stage.as_deref().filter(|s| *s != "$default" && !s.is_empty()) {
        let prefix = format!("/{stage}");
        if path == prefix || path.starts_with(&format!("{prefix}/")) {
            path = path[prefix.len()..].to_string();
        }
    }
    Request {
        method: e.request_context.http.method.as_str().to_string(),
        path: if path.is_empty() { "/".into() } else { path },
        query: api::parse_query(&raw_query),
        query_len: raw_query.len(),
        accept: header(&e.headers, "accept"),
    }
}

/// Reads a REST API (1.0) event.
pub fn from_v1(e: &ApiGatewayProxyRequest) -> Request {
    let query: Vec<(String, String)> = if e.multi_value_query_string_parameters.is_empty() {
        e.query_string_parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    } else {
        e.multi_value_query_string_parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let query_len = query.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let path = e.path.clone().unwrap_or_else(|| "/".into());
    Request { method: e.http_method.as_str().to_string(), path, query, query_len, accept: header(&e.headers, "accept") }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn headers(r: &Response) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static(r.content_type));
    for (name, value) in &r.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

/// Builds an HTTP API (2.0) response.
pub fn to_v2(r: Response) -> ApiGatewayV2httpResponse {
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(r.status);
    out.headers = headers(&r);
    out.body = Some(Body::Text(r.body));
    out
}

/// Builds a REST API (1.0) response.
pub fn to_v1(r: Response) -> ApiGatewayProxyResponse {
    let mut out = ApiGatewayProxyResponse::default();
    out.status_code = i64::from(r.status);
    out.headers = headers(&r);
    out.body = Some(Body::Text(r.body));
    out
}
