// Over 500 lines: the gateway's three authorization modes whole: SigV4 verification, token checks, minting, and their unit tests.
//! Who may call the API: the local gateway refuses a request before it
//! reaches serve, as API Gateway's authorizers do on AWS, so the modes a
//! deployment offers (`ApiAuth` in the template) can be tried and tested
//! here.
//!
//! - `none`: every request passes (the default of `make run`, on loopback).
//! - `iam`: the request must carry a valid AWS Signature Version 4 for the
//!   `execute-api` service, made with the local stack's credentials and at
//!   most five minutes old. The expected signature is computed by the AWS
//!   SigV4 crate over the headers the caller signed, then compared in
//!   constant time.
//! - `jwt`: the request must carry `Authorization: Bearer <token>`, an ES256
//!   token signed by the key the stack generated, with the configured issuer
//!   and audience, not expired. Its claims reach serve as API Gateway's JWT
//!   authorizer passes them (`requestContext.authorizer.jwt.claims`).
//!
//! A refusal is 401 (no credentials) or 403 (credentials that do not
//! verify), in the API's JSON error shape; serve is not called.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

/// How far a signature's time may be from the gateway's clock (API Gateway
/// refuses older signatures the same way).
pub const SIGNATURE_MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The SigV4 service name of API Gateway's API calls.
pub const SERVICE: &str = "execute-api";

/// The environment variables of the gateway's authorization.
pub mod vars {
    /// `none`, `iam` or `jwt`.
    pub const API_AUTH: &str = "FS_API_AUTH";
    /// The `iss` a token must carry.
    pub const JWT_ISSUER: &str = "FS_JWT_ISSUER";
    /// The `aud` a token must carry.
    pub const JWT_AUDIENCE: &str = "FS_JWT_AUDIENCE";
    /// PEM of the public key tokens are verified with.
    pub const JWT_PUBLIC_KEY_FILE: &str = "FS_JWT_PUBLIC_KEY_FILE";
    /// PEM of the private key `local-stack token` signs with.
    pub const JWT_PRIVATE_KEY_FILE: &str = "FS_JWT_PRIVATE_KEY_FILE";
}

/// The gateway's authorization mode.
#[derive(Clone, Default)]
pub enum GatewayAuth {
    #[default]
    None,
    Iam(Iam),
    Jwt(Jwt),
}

/// Names the mode and its public settings; never a secret.
impl std::fmt::Debug for GatewayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayAuth::None => f.write_str("None"),
            GatewayAuth::Iam(iam) => write!(f, "Iam({})", iam.region),
            GatewayAuth::Jwt(jwt) => write!(f, "Jwt({}, {})", jwt.issuer, jwt.audience),
        }
    }
}

/// SigV4 verification against known credentials.
#[derive(Clone)]
pub struct Iam {
    pub region: String,
    /// Access key id → secret access key.
    pub credentials: HashMap<String, String>,
}

/// Token verification against one public key.
#[derive(Clone)]
pub struct Jwt {
    pub issuer: String,
    pub audience: String,
    key: DecodingKey,
}

/// A request the gateway let through: who called, and the claims to pass on.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// What API Gateway puts in `requestContext.authorizer`; `None`: nothing.
    pub authorizer: Option<Value>,
}

/// A request the gateway refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: message.into(),
        }
    }

    fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::FORBIDDEN,
            code,
            message: message.into(),
        }
    }

    /// The API's JSON error shape.
    pub fn body(&self) -> String {
        json!({"error": {"code": self.code, "message": self.message}}).to_string()
    }
}

impl Jwt {
    pub fn new(issuer: &str, audience: &str, public_key_pem: &[u8]) -> Result<Self> {
        Ok(Jwt {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            key: DecodingKey::from_ec_pem(public_key_pem)
                .context("the JWT public key is not an EC public key in PEM")?,
        })
    }
}

impl GatewayAuth {
    /// The mode `FS_API_AUTH` names, with its settings from the environment:
    /// `iam` trusts the stack's own credentials (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`); `jwt` reads the issuer,
    /// audience and public key file.
    pub fn from_env() -> Result<Self> {
        let mode = std::env::var(vars::API_AUTH).unwrap_or_default();
        Self::from_env_with(if mode.trim().is_empty() {
            "none"
        } else {
            &mode
        })
    }

    /// The mode `mode` names, with its settings from the environment.
    pub fn from_env_with(mode: &str) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match mode.trim() {
            "none" => Ok(GatewayAuth::None),
            "iam" => {
                let (Some(id), Some(secret)) =
                    (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
                else {
                    bail!("{}=iam needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the stack's credentials)", vars::API_AUTH);
                };
                Ok(GatewayAuth::Iam(Iam {
                    region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
                    credentials: HashMap::from([(id, secret)]),
                }))
            }
            "jwt" => {
                let need = |name: &str| {
                    var(name).with_context(|| format!("{}=jwt needs {name}", vars::API_AUTH))
                };
                let path = need(vars::JWT_PUBLIC_KEY_FILE)?;
                let pem = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
                Ok(GatewayAuth::Jwt(Jwt::new(
                    &need(vars::JWT_ISSUER)?,
                    &need(vars::JWT_AUDIENCE)?,
                    &pem,
                )?))
            }
            other => bail!(
                "{}={other:?}: expected `none`, `iam` or `jwt`",
                vars::API_AUTH
            ),
        }
    }

    /// The mode's name, as `FS_API_AUTH` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            GatewayAuth::None => "none",
            GatewayAuth::Iam(_) => "iam",
            GatewayAuth::Jwt(_) => "jwt",
        }
    }

    /// Lets the request through, or says why not.
    pub fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, Refusal> {
        match self {
            GatewayAuth::None => Ok(Caller::default()),
            GatewayAuth::Iam(iam) => iam.check(method, uri, headers, body, now),
            GatewayAuth::Jwt(jwt) => jwt.check(headers),
        }
    }
}

/// The parts of a SigV4 `Authorization` header.
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let auth = Authorization {
        access_key: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    };
    (scope.next()? == "aws4_request" && scope.next().is_none()).then_some(auth)
}

/// `x-amz-date`'s `20261205T215331Z`.
fn parse_amz_date(v: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(v, format).ok()?.assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

impl Iam {
    fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, Refusal> {
        let Some(value) = headers.get("authorization") else {
            return Err(Refusal::unauthorized(
                "missing_authentication",
                "this API takes AWS Signature Version 4 requests (service execute-api); the request is not signed",
            ));
        };
        let bad = |why: &str| Refusal::forbidden("invalid_signature", why.to_string());
        let auth = value
            .to_str()
            .ok()
            .and_then(parse_authorization)
            .ok_or_else(|| bad("the Authorization header is not an AWS4-HMAC-SHA256 signature"))?;
        if auth.service != SERVICE || auth.region != self.region {
            return Err(bad(&format!(
                "the signature is scoped to {}/{}; this API takes {}/{SERVICE}",
                auth.region, auth.service, self.region
            )));
        }
        let secret = self
            .credentials
            .get(auth.access_key)
            .ok_or_else(|| bad("the signature's access key is not known"))?;
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad("the request has no x-amz-date header"))?;
        let signed_at = parse_amz_date(amz_date)
            .filter(|_| amz_date.starts_with(auth.date))
            .ok_or_else(|| bad("x-amz-date is not the signature's date"))?;
        let skew = now
            .duration_since(signed_at)
            .or_else(|_| signed_at.duration_since(now))
            .unwrap_or_default();
        if skew > SIGNATURE_MAX_SKEW {
            return Err(Refusal::forbidden(
                "signature_expired",
                format!(
                    "the signature was made at {amz_date}, more than {} minutes from now",
                    SIGNATURE_MAX_SKEW.as_secs() / 60
                ),
            ));
        }
        if !auth.signed_headers.contains(&"host") {
            return Err(bad("the signature does not cover the host header"));
        }
        // The headers the caller signed, but for those the signer adds itself.
        let mut signed = Vec::new();
        for name in &auth.signed_headers {
            if *name == "x-amz-date" {
                continue;
            }
            let values: Vec<&str> = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                return Err(bad(&format!(
                    "the signed header {name} is not in the request"
                )));
            }
            signed.push((*name, values.join(",")));
        }
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let url = format!(
            "http://{host}{}",
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        let expected = expected_signature(
            method.as_str(),
            &url,
            &signed,
            body,
            auth.access_key,
            secret,
            &self.region,
            signed_at,
        )
        .ok_or_else(|| bad("the request cannot be signed as given"))?;
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(Caller {
                authorizer: Some(json!({"iam": {
                    "accessKey": auth.access_key,
                    "accountId": "000000000000",
                    "callerId": auth.access_key,
                    "userArn": format!("arn:aws:iam::000000000000:user/{}", auth.access_key),
                }})),
            })
        } else {
            Err(bad("the request signature does not match the one computed with the caller's credentials"))
        }
    }
}

/// The SigV4 signature of a request, by the AWS SigV4 crate.
#[allow(clippy::too_many_arguments)]
fn expected_signature(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    access_key: &str,
    secret: &str,
    region: &str,
    at: SystemTime,
) -> Option<String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let identity =
        aws_credential_types::Credentials::new(access_key, secret, None, None, "local").into();
    let mut settings = SigningSettings::default();
    // Only the caller's signed headers are given; sign all of them.
    settings.excluded_headers = None;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(at)
        .settings(settings)
        .build()
        .ok()?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .ok()?;
    let (_, signature) = sign(request, &params).ok()?.into_parts();
    Some(signature)
}

impl Jwt {
    fn check(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Refusal::unauthorized(
                    "missing_authentication",
                    "this API takes a bearer token (Authorization: Bearer <JWT>)",
                )
            })?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &validation)
            .map_err(|e| {
                Refusal::unauthorized("invalid_token", format!("the token does not verify: {e}"))
            })?;
        // API Gateway hands claims on as strings.
        let claims: Map<String, Value> = data
            .claims
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, Value::String(s))
            })
            .collect();
        Ok(Caller {
            authorizer: Some(json!({"jwt": {"claims": claims, "scopes": null}})),
        })
    }
}

/// A token the gateway's `jwt` mode accepts: ES256, signed with the
/// private key in `private_key_pem`, for `sub`, valid for `ttl`.
pub fn mint(
    private_key_pem: &[u8],
    issuer: &str,
    audience: &str,
    sub: &str,
    ttl: Duration,
) -> Result<String> {
    let key = EncodingKey::from_ec_pem(private_key_pem)
        .context("the JWT private key is not an EC private key in PEM (PKCS#8)")?;
    let now = shared::now_ms() / 1000;
    let claims = json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_parse_or_are_refused() {
        let a = parse_authorization("AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc").unwrap();
        assert_eq!(
            (
                a.access_key,
                a.date,
                a.region,
                a.service,
                a.signed_headers,
                a.signature
            ),
            (
                "AKID",
                "20261205",
                "us-east-1",
                "execute-api",
                vec!["host", "x-amz-date"],
                "abc"
            )
        );
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/execute-api, SignedHeaders=host, Signature=abc",
            "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/execute-api/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/execute-api/aws4_request/x, SignedHeaders=host, Signature=a",
        ] {
            assert!(parse_authorization(bad).is_none(), "{bad}");
        }
        assert_eq!(
            parse_amz_date("19700101T000100Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60))
        );
        assert!(parse_amz_date("1970-01-01").is_none());
    }
}
