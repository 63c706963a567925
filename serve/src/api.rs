// Over 500 lines: the API's routes and parameter parsing, and the unit tests of every refusal (from the `tests` module on).
//! Routing and parameter validation: pure functions, no I/O. What a valid
//! route answers is written by the `render` module.

use std::collections::HashMap;
use std::num::NonZeroU32;

use aws_lambda_events::http::header::{HeaderName, ALLOW, RETRY_AFTER};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::keys::validate_dataset;
use shared::record::validate_user_id;
use shared::version_id::is_version_id;

pub use featurestore::view::{field_names, short, MAX_FIELDS};
pub use featurestore::{BatchId, Select, View};

/// Longest query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 4096;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The OpenAPI document of this API, as served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// A request as the API sees it, whatever event shape carried it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub method: String,
    /// Path without a stage prefix, still percent-encoded.
    pub path: String,
    /// Query parameters, decoded, in order, repeats kept.
    pub query: Vec<(String, String)>,
    /// Length of the raw query string, when the event carries it.
    pub query_len: usize,
    pub accept: Option<String>,
    /// The body, decoded from base64 when the event says it is.
    pub body: Option<Vec<u8>>,
    /// The claims of the caller's token, as API Gateway's JWT authorizer
    /// verified them; empty without one.
    pub claims: HashMap<String, String>,
}

/// A response as the API produces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(HeaderName, String)>,
}

impl Response {
    pub fn json(status: u16, body: &Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// A JSON document already written out.
    pub fn json_text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An error answer: status, machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The methods the route takes, for a 405.
    pub allow: Option<&'static str>,
}

impl From<featurestore::Error> for ApiError {
    fn from(e: featurestore::Error) -> Self {
        ApiError::new(e.status, e.code, e.message)
    }
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "invalid_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(404, code, message)
    }

    /// The caller is authenticated but may not read this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "forbidden", message)
    }

    fn method(method: &str, allow: &'static str) -> Self {
        let message = format!("method {} is not allowed here; use {allow}", short(method));
        ApiError {
            allow: Some(allow),
            ..ApiError::new(405, "method_not_allowed", message)
        }
    }

    pub fn into_response(self) -> Response {
        let r = Response::json(
            self.status,
            &json!({ "error": { "code": self.code, "message": self.message } }),
        );
        match (self.code, self.allow) {
            ("unavailable", _) => r.with_header(RETRY_AFTER, "1"),
            (_, Some(allow)) => r.with_header(ALLOW, allow),
            _ => r,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /?userId=&rank=`: one item, original response shapes.
    Legacy {
        user: String,
        rank: NonZeroU32,
        text: bool,
    },
    /// `GET /v1/{dataset}/users/{userId}`.
    User {
        dataset: String,
        user: String,
        view: View,
        version: Option<String>,
    },
    /// `GET /v1/{dataset}/users?ids=` and `POST /v1/{dataset}/users:batchGet`:
    /// users in the request's order, each once (a repeat is dropped).
    Batch {
        dataset: String,
        users: Vec<BatchId>,
        view: View,
        version: Option<String>,
    },
    /// `GET /openapi.json`.
    OpenApi,
}

impl Route {
    /// The dataset the route reads (the default one for `/?userId=`).
    pub fn dataset<'a>(&'a self, default: &'a str) -> Option<&'a str> {
        match self {
            Route::Legacy { .. } => Some(default),
            Route::User { dataset, .. } | Route::Batch { dataset, .. } => Some(dataset),
            Route::OpenApi => None,
        }
    }
}

/// Limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub batch_max_users: usize,
}

/// Decides the route and validates every parameter.
pub fn route(req: &Request, limits: &Limits) -> Result<Route, ApiError> {
    if req.query_len > MAX_QUERY_LEN {
        return Err(ApiError::bad_request(format!("query string is longer than {MAX_QUERY_LEN} bytes (for many users, POST /v1/{{dataset}}/users:batchGet)")));
    }
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let get = || allow(req, &["GET", "HEAD"], "GET, HEAD");
    match segments.as_slice() {
        [""] => {
            get()?;
            let params = Params::new(&req.query, &["userId", "rank"])?;
            let user = user_id(params.required("userId")?)?;
            let rank = positive("rank", params.required("rank")?)?;
            let text = wants_text(req.accept.as_deref());
            Ok(Route::Legacy { user, rank, text })
        }
        ["openapi.json"] => get().map(|()| Route::OpenApi),
        ["v1", dataset, "users", user] => {
            get()?;
            let dataset = dataset_name(dataset)?;
            let user = user_id(&decode_segment(user)?)?;
            let params = Params::new(&req.query, &["rank", "limit", "version", "fields"])?;
            Ok(Route::User {
                dataset,
                user,
                view: view(&params)?,
                version: version(params.get("version"))?,
            })
        }
        ["v1", dataset, "users"] => {
            get()?;
            let dataset = dataset_name(dataset)?;
            let params = Params::new(&req.query, &["ids", "rank", "limit", "version", "fields"])?;
            let ids = params.required("ids")?;
            let users = ids
                .split(',')
                .enumerate()
                .map(|(i, id)| {
                    let id = id.trim();
                    validate_user_id(id)
                        .map_err(|e| ApiError::bad_request(format!("ids[{i}]: {e}")))?;
                    Ok(BatchId {
                        id: id.to_string(),
                        given: Value::from(id),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let users = within(users, limits)?;
            Ok(Route::Batch {
                dataset,
                users,
                view: view(&params)?,
                version: version(params.get("version"))?,
            })
        }
        ["v1", dataset, action] if decode_segment(action).is_ok_and(|a| a == "users:batchGet") => {
            allow(req, &["POST"], "POST")?;
            let dataset = dataset_name(dataset)?;
            batch_get(req, dataset, limits)
        }
        _ => Err(ApiError::not_found(
            "no_route",
            "no such route; see GET /openapi.json",
        )),
    }
}

/// The request's method is one of `methods`, or a 405 that lists them.
fn allow(req: &Request, methods: &[&str], listed: &'static str) -> Result<(), ApiError> {
    match methods.contains(&req.method.as_str()) {
        true => Ok(()),
        false => Err(ApiError::method(&req.method, listed)),
    }
}

/// The body of `POST /v1/{dataset}/users:batchGet`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BatchGet {
    user_ids: Vec<Value>,
    #[serde(default)]
    rank: Option<NonZeroU32>,
    #[serde(default)]
    limit: Option<NonZeroU32>,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    version: Option<String>,
}

fn batch_get(req: &Request, dataset: String, limits: &Limits) -> Result<Route, ApiError> {
    let body = req
        .body
        .as_deref()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(r#"the body must be a JSON object: {"userIds": [...]}"#)
        })?;
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the body is longer than {MAX_BODY_BYTES} bytes"
        )));
    }
    let asked: BatchGet =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    // Options may come in the query instead; not the same one in both.
    let params = Params::new(&req.query, &["rank", "limit", "version", "fields"])?;
    for (name, in_body) in [
        ("rank", asked.rank.is_some()),
        ("limit", asked.limit.is_some()),
        ("version", asked.version.is_some()),
        ("fields", asked.fields.is_some()),
    ] {
        if in_body && params.get(name).is_some() {
            return Err(ApiError::bad_request(format!(
                "{name} is given in both the query and the body"
            )));
        }
    }
    let users = asked
        .user_ids
        .into_iter()
        .enumerate()
        .map(|(i, given)| {
            let id = match &given {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "userIds[{i}] must be a string or a whole number"
                    )))
                }
            };
            validate_user_id(&id)
                .map_err(|e| ApiError::bad_request(format!("userIds[{i}]: {e}")))?;
            Ok(BatchId { id, given })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let users = within(users, limits)?;
    let mut view = view(&params)?;
    view.select = match (asked.rank, asked.limit, view.select) {
        (Some(_), Some(_), _) | (Some(_), _, Select::Limit(_)) | (_, Some(_), Select::Rank(_)) => {
            return Err(ApiError::bad_request("give either rank or limit, not both"))
        }
        (Some(r), None, _) => Select::Rank(r),
        (None, Some(l), _) => Select::Limit(l),
        (None, None, select) => select,
    };
    if let Some(fields) = asked.fields {
        view.fields = Some(field_names(fields.iter().map(String::as_str))?);
    }
    let version = version(asked.version.as_deref().or(params.get("version")))?;
    Ok(Route::Batch {
        dataset,
        users,
        view,
        version,
    })
}

/// The batch's ids, if there are some and not too many, each once: a
/// repeated id (`3` and `"3"` are the same user) keeps its first place, so
/// one request cannot make serve send one record many times over.
fn within(users: Vec<BatchId>, limits: &Limits) -> Result<Vec<BatchId>, ApiError> {
    match users.len() {
        0 => Err(ApiError::bad_request("no user ids given")),
        n if n > limits.batch_max_users => Err(ApiError::bad_request(format!(
            "{n} user ids given; at most {} per request",
            limits.batch_max_users
        ))),
        _ => Ok(BatchId::dedup(users)),
    }
}

fn dataset_name(segment: &str) -> Result<String, ApiError> {
    let dataset = decode_segment(segment)?;
    validate_dataset(&dataset).map_err(|e| ApiError::bad_request(format!("dataset: {e}")))?;
    Ok(dataset)
}

fn view(params: &Params<'_>) -> Result<View, ApiError> {
    let select = match (params.get("rank"), params.get("limit")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give either rank or limit, not both"))
        }
        (Some(r), None) => Select::Rank(positive("rank", r)?),
        (None, Some(l)) => Select::Limit(positive("limit", l)?),
        (None, None) => Select::All,
    };
    let fields = params
        .get("fields")
        .map(|f| field_names(f.split(',')))
        .transpose()?;
    Ok(View { select, fields })
}

fn version(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(v) if is_version_id(v) => Ok(Some(v.to_string())),
        Some(_) => Err(ApiError::bad_request("version is not a version id")),
        None => Ok(None),
    }
}

struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    /// Rejects repeated parameters among `known`; unknown ones are ignored.
    fn new(pairs: &'a [(String, String)], known: &[&str]) -> Result<Self, ApiError> {
        for name in known {
            if pairs.iter().filter(|(k, _)| k == name).count() > 1 {
                return Err(ApiError::bad_request(format!(
                    "parameter {name} is repeated"
                )));
            }
        }
        Ok(Params { pairs })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&'a str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad_request(format!("missing parameter {name}")))
    }
}

fn user_id(raw: &str) -> Result<String, ApiError> {
    validate_user_id(raw).map_err(|e| ApiError::bad_request(format!("userId: {e}")))?;
    Ok(raw.to_string())
}

fn positive(name: &str, raw: &str) -> Result<NonZeroU32, ApiError> {
    let ok = !raw.is_empty() && raw.len() <= 10 && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<NonZeroU32>() {
        Ok(n) if ok => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be a positive whole number, got {:?}",
            short(raw)
        ))),
    }
}

fn decode_segment(seg: &str) -> Result<String, ApiError> {
    percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("path is not valid percent-encoded UTF-8"))
}

fn wants_text(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/plain") && !a.contains("application/json"))
}

/// Decodes a query string (`+` is a space), keeping repeats and order.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { batch_max_users: 5 };

    fn get(path: &str, query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: parse_query(query),
            query_len: query.len(),
            ..Request::default()
        }
    }

    fn post(path: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            body: Some(body.as_bytes().to_vec()),
            ..Request::default()
        }
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn legacy_route_validates_user_and_rank() {
        assert_eq!(
            route(&get("/", "userId=1&rank=1"), &LIMITS),
            Ok(Route::Legacy {
                user: "1".into(),
                rank: nz(1),
                text: false
            })
        );
        for bad in [
            "userId=1",
            "rank=1",
            "userId=&rank=1",
            "userId=1&rank=0",
            "userId=1&rank=-1",
            "userId=1&rank=1.5",
            "userId=1&rank=1e9",
            "userId=1&rank=abc",
            "userId=1&rank=99999999999",
            "userId=1&userId=2&rank=1",
            "userId=a%0Ab&rank=1",
        ] {
            let e = route(&get("/", bad), &LIMITS).unwrap_err();
            assert_eq!(e.status, 400, "{bad}: {e:?}");
        }
    }

    #[test]
    fn user_route_decodes_segments_and_options() {
        assert_eq!(
            route(
                &get(
                    "/v1/recs/users/user%20one",
                    "limit=3&fields=items,scores,items"
                ),
                &LIMITS
            ),
            Ok(Route::User {
                dataset: "recs".into(),
                user: "user one".into(),
                view: View {
                    select: Select::Limit(nz(3)),
                    fields: Some(vec!["items".into(), "scores".into()])
                },
                version: None
            })
        );
        for (path, query) in [
            ("/v1/recs/users/7", "rank=2&limit=3"),
            ("/v1/re%7Bcs/users/7", ""),
            ("/v1/recs/users/7", "version=../x"),
            ("/v1/recs/users/%FF", ""),
            ("/v1/recs/users/7", "fields="),
            ("/v1/recs/users/7", "fields=a,,b"),
        ] {
            assert_eq!(
                route(&get(path, query), &LIMITS).unwrap_err().status,
                400,
                "{path}?{query}"
            );
        }
    }

    #[test]
    fn batch_routes_keep_order_drop_repeats_and_check_the_ids() {
        let Ok(Route::Batch {
            dataset,
            users,
            view,
            version,
        }) = route(&get("/v1/recs/users", "ids=3,u-2,3&rank=2"), &LIMITS)
        else {
            panic!()
        };
        assert_eq!(
            (dataset.as_str(), view.select, version),
            ("recs", Select::Rank(nz(2)), None)
        );
        assert_eq!(
            users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            ["3", "u-2"]
        );
        let Ok(Route::Batch { users, view, .. }) = route(
            &post(
                "/v1/recs/users:batchGet",
                r#"{"userIds": [1, "u-2"], "limit": 2, "fields": ["items"]}"#,
            ),
            &LIMITS,
        ) else {
            panic!()
        };
        assert_eq!(
            users,
            vec![
                BatchId {
                    id: "1".into(),
                    given: json!(1)
                },
                BatchId {
                    id: "u-2".into(),
                    given: json!("u-2")
                }
            ]
        );
        assert_eq!(
            view,
            View {
                select: Select::Limit(nz(2)),
                fields: Some(vec!["items".into()])
            }
        );
        assert!(matches!(
            route(
                &post("/v1/recs/users%3AbatchGet", r#"{"userIds": [1]}"#),
                &LIMITS
            ),
            Ok(Route::Batch { .. })
        ));
        for body in [
            "",
            "not json",
            "[1, 2]",
            r#"{"userIds": []}"#,
            r#"{"userIds": [1.5]}"#,
            r#"{"userIds": [true]}"#,
            r#"{"userIds": [""]}"#,
            r#"{"userIds": [1, 2, 3, 4, 5, 6]}"#,
            r#"{"userIds": "1"}"#,
            r#"{"userIds": [1], "rank": 0}"#,
            r#"{"userIds": [1], "rank": 1, "limit": 2}"#,
            r#"{"userIds": [1], "extra": 1}"#,
            r#"{"userIds": [1], "version": "x"}"#,
            r#"{"userIds": [1], "fields": []}"#,
        ] {
            let e = route(&post("/v1/recs/users:batchGet", body), &LIMITS).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (400, "invalid_request"),
                "{body}: {e:?}"
            );
        }
        let mut both = post("/v1/recs/users:batchGet", r#"{"userIds": [1], "rank": 1}"#);
        both.query = parse_query("rank=2");
        assert!(route(&both, &LIMITS)
            .unwrap_err()
            .message
            .contains("both the query and the body"));
        let mut big = post("/v1/recs/users:batchGet", "");
        big.body = Some(vec![b' '; MAX_BODY_BYTES + 1]);
        assert_eq!(route(&big, &LIMITS).unwrap_err().status, 400);
        assert_eq!(
            route(&get("/v1/recs/users", "ids=1,,2"), &LIMITS)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&get("/v1/recs/users", "ids=1,2,3,4,5,6"), &LIMITS)
                .unwrap_err()
                .message,
            "6 user ids given; at most 5 per request"
        );
        assert_eq!(
            route(&get("/v1/recs/users", ""), &LIMITS)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn unknown_routes_and_methods() {
        assert_eq!(
            route(&get("/v1/recs", ""), &LIMITS).unwrap_err().status,
            404
        );
        assert_eq!(
            route(&get("/v1/recs/users/1/extra", ""), &LIMITS)
                .unwrap_err()
                .status,
            404
        );
        let mut post_root = get("/", "userId=1&rank=1");
        post_root.method = "POST".into();
        let e = route(&post_root, &LIMITS).unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET, HEAD")));
        let e = route(&get("/v1/recs/users:batchGet", ""), &LIMITS).unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("POST")));
        assert_eq!(e.into_response().headers, vec![(ALLOW, "POST".to_string())]);
        let mut long = get("/", "userId=1&rank=1");
        long.query_len = MAX_QUERY_LEN + 1;
        assert_eq!(route(&long, &LIMITS).unwrap_err().status, 400);
        assert_eq!(
            route(&get("/openapi.json", ""), &LIMITS),
            Ok(Route::OpenApi)
        );
    }

    #[test]
    fn query_decoding_keeps_repeats_and_plus() {
        assert_eq!(
            parse_query("a=1&a=2&b=x+y%21&c"),
            vec![
                ("a".into(), "1".into()),
                ("a".into(), "2".into()),
                ("b".into(), "x y!".into()),
                ("c".into(), "".into())
            ]
        );
    }
}
