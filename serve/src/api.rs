//! Routing, parameter validation and rendering: pure functions, no I/O.

use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};
use shared::db::keys::{validate_dataset, validate_user_id};
use shared::format::record::{ItemId, Stored};
use shared::version_id::is_version_id;

/// Longest query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 4096;

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
}

/// A response as the API produces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, body: &Value) -> Self {
        Response { status, content_type: "application/json", body: body.to_string(), headers: Vec::new() }
    }

    pub fn text(status: u16, body: String) -> Self {
        Response { status, content_type: "text/plain; charset=utf-8", body, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
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
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: 400, code: "invalid_request", message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status: 404, code, message: message.into() }
    }

    pub fn unavailable() -> Self {
        ApiError { status: 503, code: "unavailable", message: "the store is unavailable; retry shortly".into() }
    }

    pub fn internal() -> Self {
        ApiError { status: 500, code: "internal", message: "internal error".into() }
    }

    pub fn into_response(self) -> Response {
        let r = Response::json(self.status, &json!({ "error": { "code": self.code, "message": self.message } }));
        match self.status {
            503 => r.with_header("retry-after", "1"),
            405 => r.with_header("allow", "GET, HEAD"),
            _ => r,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /?userId=&rank=`: one item, original response shapes.
    Legacy { user: String, rank: u32, text: bool },
    /// `GET /v1/{dataset}/users/{userId}`.
    User { dataset: String, user: String, select: Select, version: Option<String> },
}

/// Which part of a user's list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    All,
    Rank(u32),
    Limit(u32),
}

/// Decides the route and validates every parameter.
pub fn route(req: &Request) -> Result<Route, ApiError> {
    if req.method != "GET" && req.method != "HEAD" {
        return Err(ApiError { status: 405, code: "method_not_allowed", message: format!("method {} is not allowed; use GET", short(&req.method)) });
    }
    if req.query_len > MAX_QUERY_LEN {
        return Err(ApiError::bad_request(format!("query string is longer than {MAX_QUERY_LEN} bytes")));
    }
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => {
            let params = Params::new(&req.query, &["userId", "rank"])?;
            let user = user_id(params.required("userId")?)?;
            let rank = positive("rank", params.required("rank")?)?;
            let text = wants_text(req.accept.as_deref());
            Ok(Route::Legacy { user, rank, text })
        }
        ["v1", dataset, "users", user] => {
            let dataset = decode_segment(dataset)?;
            validate_dataset(&dataset).map_err(|e| ApiError::bad_request(format!("dataset: {e}")))?;
            let user = user_id(&decode_segment(user)?)?;
            let params = Params::new(&req.query, &["rank", "limit", "version"])?;
            let select = match (params.get("rank"), params.get("limit")) {
                (Some(_), Some(_)) => return Err(ApiError::bad_request("give either rank or limit, not both")),
                (Some(r), None) => Select::Rank(positive("rank", r)?),
                (None, Some(l)) => Select::Limit(positive("limit", l)?),
                (None, None) => Select::All,
            };
            let version = match params.get("version") {
                Some(v) if is_version_id(v) => Some(v.to_string()),
                Some(_) => return Err(ApiError::bad_request("version is not a version id")),
                None => None,
            };
            Ok(Route::User { dataset, user, select, version })
        }
        _ => Err(ApiError::not_found("no_route", "no such route; see GET /v1/{dataset}/users/{userId}")),
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
                return Err(ApiError::bad_request(format!("parameter {name} is repeated")));
            }
        }
        Ok(Params { pairs })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&'a str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::bad_request(format!("missing parameter {name}")))
    }
}

fn user_id(raw: &str) -> Result<String, ApiError> {
    validate_user_id(raw).map_err(|e| ApiError::bad_request(format!("userId: {e}")))?;
    Ok(raw.to_string())
}

fn positive(name: &str, raw: &str) -> Result<u32, ApiError> {
    let ok = !raw.is_empty() && raw.len() <= 10 && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u32>() {
        Ok(n) if ok && n >= 1 => Ok(n),
        _ => Err(ApiError::bad_request(format!("{name} must be a positive whole number, got {:?}", short(raw)))),
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

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
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
    percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// Renders the answer for a found user.
pub fn render(route: &Route, items_field: &str, dataset: &str, version: &str, stored: &Stored<'_>) -> Result<Response, ApiError> {
    let item_at = |rank: u32| -> Result<Value, ApiError> {
        stored
            .items
            .get(rank as usize - 1)
            .map(ItemId::to_json)
            .ok_or_else(|| ApiError::not_found("rank_out_of_range", format!("rank {rank} is past the end of the list ({} items)", stored.items.len())))
    };
    let asked = match route {
        Route::Legacy { user, .. } | Route::User { user, .. } => user.as_str(),
    };
    // The id as the batch wrote it: a number for integer ids.
    let user = match asked.parse::<i64>() {
        Ok(n) if stored.user_is_int => Value::from(n),
        _ => Value::from(asked),
    };
    match route {
        Route::Legacy { user: asked, rank, text } => {
            let item = item_at(*rank)?;
            if *text {
                let item = match &item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return Ok(Response::text(200, format!("The number {rank} recommended movie for user {asked} is {item}")));
            }
            let mut body = Map::new();
            body.insert("userId".into(), user);
            body.insert("rank".into(), json!(rank));
            body.insert(items_field.into(), item);
            body.insert("version".into(), json!(version));
            Ok(Response::json(200, &Value::Object(body)))
        }
        Route::User { select, .. } => {
            let all: Vec<Value> = stored.items.iter().map(ItemId::to_json).collect();
            let n = all.len();
            let other: Map<String, Value> = match stored.other {
                Some(raw) => serde_json::from_str(raw.get()).map_err(|_| ApiError::internal())?,
                None => Map::new(),
            };
            // Fields holding one value per item (scores, reasons) follow the selection.
            let aligned = |sel: &dyn Fn(&Vec<Value>) -> Value| -> Map<String, Value> {
                other.iter().map(|(k, v)| match v {
                    Value::Array(a) if a.len() == n => (k.clone(), sel(a)),
                    _ => (k.clone(), v.clone()),
                }).collect()
            };
            let mut body = json!({ "dataset": dataset, "userId": user, "version": version });
            match select {
                Select::Rank(rank) => {
                    body["rank"] = json!(rank);
                    body["item"] = item_at(*rank)?;
                    let r = *rank as usize - 1;
                    body["fields"] = Value::Object(aligned(&|a| a[r].clone()));
                }
                Select::Limit(k) => {
                    let k = (*k as usize).min(n);
                    body["items"] = Value::Array(all[..k].to_vec());
                    body["count"] = json!(k);
                    body["fields"] = Value::Object(aligned(&|a| Value::Array(a[..k].to_vec())));
                }
                Select::All => {
                    body["items"] = Value::Array(all);
                    body["count"] = json!(n);
                    body["fields"] = Value::Object(other.clone());
                }
            }
            Ok(Response::json(200, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, query: &str) -> Request {
        Request { method: "GET".into(), path: path.into(), query: parse_query(query), query_len: query.len(), accept: None }
    }

    #[test]
    fn legacy_route_validates_user_and_rank() {
        assert_eq!(route(&get("/", "userId=1&rank=1")), Ok(Route::Legacy { user: "1".into(), rank: 1, text: false }));
        for bad in ["userId=1", "rank=1", "userId=&rank=1", "userId=1&rank=0", "userId=1&rank=-1", "userId=1&rank=1.5",
                    "userId=1&rank=1e9", "userId=1&rank=abc", "userId=1&rank=99999999999", "userId=1&userId=2&rank=1",
                    "userId=a%0Ab&rank=1"] {
            let e = route(&get("/", bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad}: {e:?}");
        }
    }

    #[test]
    fn user_route_decodes_segments_and_options() {
        assert_eq!(
            route(&get("/v1/recs/users/user%20one", "limit=3")),
            Ok(Route::User { dataset: "recs".into(), user: "user one".into(), select: Select::Limit(3), version: None })
        );
        assert_eq!(route(&get("/v1/recs/users/7", "rank=2&limit=3")).unwrap_err().status, 400);
        assert_eq!(route(&get("/v1/re%7Bcs/users/7", "")).unwrap_err().status, 400);
        assert_eq!(route(&get("/v1/recs/users/7", "version=../x")).unwrap_err().status, 400);
        assert_eq!(route(&get("/v1/recs/users/%FF", "")).unwrap_err().status, 400);
    }

    #[test]
    fn unknown_routes_and_methods() {
        assert_eq!(route(&get("/v1/recs", "")).unwrap_err().status, 404);
        assert_eq!(route(&get("/v1/recs/users/1/extra", "")).unwrap_err().status, 404);
        let mut post = get("/", "userId=1&rank=1");
        post.method = "POST".into();
        assert_eq!(route(&post).unwrap_err().status, 405);
        let mut long = get("/", "userId=1&rank=1");
        long.query_len = MAX_QUERY_LEN + 1;
        assert_eq!(route(&long).unwrap_err().status, 400);
    }

    #[test]
    fn query_decoding_keeps_repeats_and_plus() {
        assert_eq!(parse_query("a=1&a=2&b=x+y%21&c"), vec![
            ("a".into(), "1".into()), ("a".into(), "2".into()), ("b".into(), "x y!".into()), ("c".into(), "".into())
        ]);
    }

    #[test]
    fn legacy_text_answer_matches_the_original_sentence() {
        let stored = Stored::decode(br#"{"u":1,"i":[2012,553,780]}"#).unwrap();
        let r = Route::Legacy { user: "1".into(), rank: 1, text: true };
        let resp = render(&r, "movieId", "recommendations", "v", &stored).unwrap();
        assert_eq!(resp.body, "The number 1 recommended movie for user 1 is 2012");
        let r = Route::Legacy { user: "1".into(), rank: 4, text: false };
        assert_eq!(render(&r, "movieId", "recommendations", "v", &stored).unwrap_err().status, 404);
    }

    #[test]
    fn aligned_fields_follow_rank_and_limit() {
        let stored = Stored::decode(br#"{"u":"a","i":[10,20,30],"x":{"scores":[0.9,0.5,0.1],"model":"als"}}"#).unwrap();
        let r = Route::User { dataset: "d".into(), user: "a".into(), select: Select::Rank(2), version: None };
        let v: Value = serde_json::from_str(&render(&r, "movieId", "d", "v", &stored).unwrap().body).unwrap();
        assert_eq!(v["item"], json!(20));
        assert_eq!(v["fields"], json!({"scores": 0.5, "model": "als"}));
        let r = Route::User { dataset: "d".into(), user: "a".into(), select: Select::Limit(2), version: None };
        let v: Value = serde_json::from_str(&render(&r, "movieId", "d", "v", &stored).unwrap().body).unwrap();
        assert_eq!(v["items"], json!([10, 20]));
        assert_eq!(v["fields"]["scores"], json!([0.9, 0.5]));
    }
}
