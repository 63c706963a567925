//! Requests as API callers send them: signed with AWS SigV4 by the AWS
//! SigV4 crate (what the AWS SDKs use), or carrying a bearer token.

use std::net::SocketAddr;
use std::time::SystemTime;

/// Who signs a request, and when.
#[derive(Clone, Debug)]
pub struct Signer {
    pub access_key: String,
    pub secret: String,
    pub region: String,
    pub at: SystemTime,
}

impl Signer {
    /// The local stack's own credentials, signing now.
    pub fn stack() -> Signer {
        Signer {
            access_key: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
            secret: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            at: SystemTime::now(),
        }
    }

    /// The headers SigV4 adds to `method url` with `headers` and `body`
    /// (`x-amz-date` and `authorization`).
    pub fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(String, String)> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = aws_credential_types::Credentials::new(
            &self.access_key,
            &self.secret,
            None,
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(self.at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// How a test request authenticates.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    #[default]
    None,
    SigV4(Signer),
    Bearer(String),
}

/// The raw HTTP/1.1 request `method target` to `addr`, with `credentials`,
/// optional `accept` and JSON `body`.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    accept: Option<&str>,
    body: Option<&str>,
    credentials: &Credentials,
) -> String {
    let host = addr.to_string();
    let mut headers: Vec<(String, String)> = vec![("host".into(), host.clone())];
    if let Some(a) = accept {
        headers.push(("accept".into(), a.into()));
    }
    if let Some(b) = body {
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("content-length".into(), b.len().to_string()));
    }
    match credentials {
        Credentials::None => {}
        Credentials::Bearer(token) => {
            headers.push(("authorization".into(), format!("Bearer {token}")))
        }
        Credentials::SigV4(signer) => {
            let signed: Vec<(&str, &str)> = headers
                .iter()
                .filter(|(k, _)| k != "content-length")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let url = format!("http://{host}{target}");
            let extra = signer.headers(method, &url, &signed, body.unwrap_or("").as_bytes());
            headers.extend(extra);
        }
    }
    let mut raw = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in &headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body.unwrap_or(""));
    raw
}
