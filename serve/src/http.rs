//! API Gateway events in and out.
//!
//! The same function sits behind an HTTP API (payload format 2.0) or a REST
//! API (1.0): the event's `version` field tells them apart, and the answer is
//! built in the matching shape.

use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayRequestAuthorizer,
    ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
};
use aws_lambda_events::http::header::{ACCEPT, CONTENT_TYPE};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use lambda_runtime::{Error, LambdaEvent};
use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Value};
use shared::config::ServeConfig;
use shared::metrics::{Metrics, Unit};
use tracing::{debug, Instrument};

use crate::api::{self, ApiError, Limits, Request, Response, Route};
use featurestore::{render, Client, Options, Reader};

/// The library's options as serve's configuration sets them.
pub fn options(config: &ServeConfig) -> Options {
    Options {
        pointer_ttl: config.pointer_ttl,
        max_age: config.serving.max_age,
        refuse_stale: config.serving.refuse_stale,
        max_response_bytes: config.serving.max_response_bytes,
    }
}

/// What serve needs, built once per process.
pub struct App {
    pub config: ServeConfig,
    /// Reads through the pointer; the same library rankers link.
    pub client: Client,
    pub metrics: Metrics,
}

/// What answering a request did, for its metrics.
#[derive(Default)]
struct Outcome {
    cache_hit: bool,
    stale: bool,
    users: usize,
}

impl App {
    /// Serve reading through `reader` (its pointer cache TTL is the
    /// configured one in the Lambda; tests choose theirs).
    pub fn new(config: ServeConfig, reader: Reader) -> Self {
        App {
            metrics: Metrics::new(&config.metrics_namespace),
            client: Client::with_reader(reader, options(&config)),
            config,
        }
    }

    /// Answers one request, and emits its latency and status as metrics:
    /// by dataset only for a dataset that exists.
    pub async fn respond(&self, req: &Request) -> Response {
        let (response, line) = self.respond_with_metrics(req).await;
        if let Some(line) = line {
            println!("{line}");
        }
        response
    }

    /// [`App::respond`], handing back the metric line instead of printing it.
    pub async fn respond_with_metrics(&self, req: &Request) -> (Response, Option<String>) {
        let started = Instant::now();
        let limits = Limits {
            batch_max_users: self.config.serving.batch_max_users,
        };
        let route = api::route(req, &limits).and_then(|r| self.allowed(req, r));
        let (response, outcome) = match &route {
            Ok(r) => match self.answer(r).await {
                Ok(answered) => answered,
                Err(e) => (e.into_response(), Outcome::default()),
            },
            Err(e) => (e.clone().into_response(), Outcome::default()),
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let dataset = route
            .as_ref()
            .ok()
            .and_then(|r| r.dataset(&self.config.default_dataset))
            .filter(|d| self.client.reader().is_known(d));
        let mut values = vec![
            ("ServeMillis", ms, Unit::Milliseconds),
            ("Requests", 1.0, Unit::Count),
            (
                "PointerCacheHits",
                f64::from(u8::from(outcome.cache_hit)),
                Unit::Count,
            ),
        ];
        if outcome.stale {
            values.push(("StaleServes", 1.0, Unit::Count));
        }
        if matches!(route, Ok(Route::Batch { .. })) {
            values.push(("BatchUsers", outcome.users as f64, Unit::Count));
        }
        let line = self
            .metrics
            .line_for(dataset, &values, &[("status", json!(response.status))]);
        (response, line)
    }

    /// The route, if the caller may take it: with a user claim configured,
    /// a token reads only the user its claim names, and no batch.
    fn allowed(&self, req: &Request, route: Route) -> Result<Route, ApiError> {
        let Some(claim) = self.config.serving.user_claim.as_deref() else {
            return Ok(route);
        };
        let user = match &route {
            Route::OpenApi => return Ok(route),
            Route::Legacy { user, .. } | Route::User { user, .. } => user,
            Route::Batch { .. } => {
                return Err(ApiError::forbidden(format!(
                    "batch reads are not open to tokens limited to one user (claim {claim})"
                )))
            }
        };
        match req.claims.get(claim) {
            Some(v) if v == user => Ok(route),
            Some(_) => Err(ApiError::forbidden(format!(
                "the token's claim {claim} names another user"
            ))),
            None => Err(ApiError::forbidden(format!(
                "the token has no claim {claim}"
            ))),
        }
    }

    /// The answer to a valid route.
    async fn answer(&self, route: &Route) -> Result<(Response, Outcome), ApiError> {
        let (answer, text) = match route {
            Route::OpenApi => {
                return Ok((Response::json_text(200, api::OPENAPI), Outcome::default()))
            }
            Route::Legacy { user, rank, text } => {
                let items_field = &self.config.items_field;
                let answer = self
                    .client
                    .get_with(
                        &self.config.default_dataset,
                        user,
                        None,
                        |served, stored| {
                            render::render_legacy(user, *rank, *text, items_field, served, stored)
                        },
                    )
                    .await?;
                (answer, *text)
            }
            Route::User {
                dataset,
                user,
                view,
                version,
            } => (
                self.client
                    .get(dataset, user, view, version.as_deref())
                    .await?,
                false,
            ),
            Route::Batch {
                dataset,
                users,
                view,
                version,
            } => (
                self.client
                    .batch_get(dataset, users, view, version.as_deref())
                    .await?,
                false,
            ),
        };
        let outcome = Outcome {
            cache_hit: answer.cache_hit,
            stale: answer.freshness.is_stale(),
            users: answer.users,
        };
        let response = match text {
            true => Response::text(200, answer.body),
            false => Response::json_text(200, answer.body),
        };
        Ok((response, outcome))
    }
}

/// Lambda handler: an API Gateway event (2.0 or 1.0) in, the matching response out.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let span = tracing::info_span!("request", request_id = %event.context.request_id);
    respond_to(app, event.payload).instrument(span).await
}

async fn respond_to(app: &App, payload: Value) -> Result<Value, Error> {
    let v2 = payload.get("version").and_then(Value::as_str) == Some("2.0");
    if v2 {
        let req: ApiGatewayV2httpRequest = serde_json::from_value(payload)?;
        let response = app.respond(&from_v2(&req)).await;
        log(req.raw_path.as_deref().unwrap_or_default(), &response);
        Ok(serde_json::to_value(to_v2(response))?)
    } else {
        let req: ApiGatewayProxyRequest = serde_json::from_value(payload)?;
        let response = app.respond(&from_v1(&req)).await;
        log(req.path.as_deref().unwrap_or_default(), &response);
        Ok(serde_json::to_value(to_v1(response))?)
    }
}

fn log(path: &str, r: &Response) {
    debug!(path = %path.chars().take(200).collect::<String>(), status = r.status, "request");
}

/// Reads an HTTP API (2.0) event.
pub fn from_v2(e: &ApiGatewayV2httpRequest) -> Request {
    let raw_query = e.raw_query_string.clone().unwrap_or_default();
    let mut path = e.raw_path.clone().unwrap_or_else(|| "/".into());
    // A named stage prefixes the raw path; `$default` does not.
    if let Some(stage) = e
        .request_context
        .stage
        .as_deref()
        .filter(|s| *s != "$default" && !s.is_empty())
    {
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
        accept: header(&e.headers, &ACCEPT),
        body: body(e.body.as_deref(), e.is_base64_encoded),
        claims: e
            .request_context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|j| j.claims.clone())
            .unwrap_or_default(),
    }
}

/// Reads a REST API (1.0) event.
pub fn from_v1(e: &ApiGatewayProxyRequest) -> Request {
    let query: Vec<(String, String)> = if e.multi_value_query_string_parameters.is_empty() {
        e.query_string_parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    } else {
        e.multi_value_query_string_parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let query_len = query.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let path = e.path.clone().unwrap_or_else(|| "/".into());
    let body = body(e.body.as_deref(), e.is_base64_encoded);
    Request {
        method: e.http_method.as_str().to_string(),
        path,
        query,
        query_len,
        accept: header(&e.headers, &ACCEPT),
        body,
        claims: v1_claims(&e.request_context.authorizer),
    }
}

/// A REST API's verified claims: a JWT authorizer's, or a Cognito user
/// pool authorizer's (`authorizer.claims`).
fn v1_claims(a: &ApiGatewayRequestAuthorizer) -> HashMap<String, String> {
    if let Some(jwt) = &a.jwt {
        return jwt.claims.clone();
    }
    a.fields
        .get("claims")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn header(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An event's body as bytes; a body that claims base64 and is not reads as
/// no body (which the routes that take one answer with a 400).
fn body(raw: Option<&str>, base64: bool) -> Option<Vec<u8>> {
    match (raw, base64) {
        (None, _) => None,
        (Some(b), false) => Some(b.as_bytes().to_vec()),
        (Some(b), true) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
    }
}

fn headers(r: &Response) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    for (name, value) in &r.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
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
