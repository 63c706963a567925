//! S3 event notifications as they arrive in an SQS message body.
//!
//! Parsed leniently with our own small structs rather than
//! `aws_lambda_events::s3::S3Event`: emulators omit fields the crate requires
//! (`userIdentity`, `requestParameters`), and the `s3:TestEvent` that S3 sends
//! when a notification is configured has no `Records` at all. Object keys
//! arrive URL-encoded with `+` for a space; [`decode_key`] undoes that.

use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// What an SQS message body from an S3 notification holds.
#[derive(Debug, PartialEq)]
pub enum Notification {
    /// The `s3:TestEvent` sent when notifications are configured: ignore it.
    Test,
    /// One or more object events.
    Records(Vec<ObjectEvent>),
}

/// One object event, with the key already decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectEvent {
    pub event_name: String,
    pub event_time: String,
    pub bucket: String,
    pub key: String,
    /// The object's size, when the event says (a source may omit it).
    pub size: Option<u64>,
    pub etag: String,
    pub sequencer: Option<String>,
}

impl ObjectEvent {
    /// Whether this event announces a new or overwritten object.
    pub fn is_object_created(&self) -> bool {
        self.event_name.starts_with("ObjectCreated")
    }

    /// `s3://bucket/key`, for logs and status.
    pub fn source(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("message body is not an S3 notification: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("S3 notification record {index} lacks {field}")]
    Missing { index: usize, field: &'static str },
    #[error("object key {0:?} is not valid percent-encoded UTF-8")]
    BadKey(String),
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Records")]
    records: Option<Vec<RawRecord>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecord {
    event_name: Option<String>,
    event_time: Option<String>,
    s3: Option<RawS3>,
}

#[derive(Deserialize)]
struct RawS3 {
    bucket: Option<RawBucket>,
    object: Option<RawObject>,
}

#[derive(Deserialize)]
struct RawBucket {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    key: Option<String>,
    size: Option<u64>,
    e_tag: Option<String>,
    sequencer: Option<String>,
}

/// Parses an SQS message body that carries an S3 notification.
pub fn parse_notification(body: &str) -> Result<Notification, EventError> {
    let raw: Body = serde_json::from_str(body)?;
    if raw.records.is_none() && raw.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    let records = raw.records.ok_or(EventError::Missing { index: 0, field: "Records" })?;
    let mut out = Vec::with_capacity(records.len());
    for (index, r) in records.into_iter().enumerate() {
        let missing = |field| EventError::Missing { index, field };
        let s3 = r.s3.ok_or(missing("s3"))?;
        let object = s3.object.ok_or(missing("s3.object"))?;
        let raw_key = object.key.ok_or(missing("s3.object.key"))?;
        out.push(ObjectEvent {
            event_name: r.event_name.ok_or(missing("eventName"))?,
            event_time: r.event_time.ok_or(missing("eventTime"))?,
            bucket: s3.bucket.and_then(|b| b.name).ok_or(missing("s3.bucket.name"))?,
            key: decode_key(&raw_key)?,
            size: object.size,
            etag: object.e_tag.unwrap_or_default(),
            sequencer: object.sequencer.filter(|s| !s.is_empty()),
        });
    }
    Ok(Notification::Records(out))
}

/// Decodes an S3 notification key: `+` is a space, then percent-decoding.
pub fn decode_key(raw: &str) -> Result<String, EventError> {
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| EventError::BadKey(raw.to_string()))
}

/// The dataset an object key belongs to: its first path segment, or `default`
/// for a key without a folder.
pub fn dataset_of<'a>(key: &'a str, default: &'a str) -> &'a str {
    match key.split_once('/') {
        Some((first, _)) if !first.is_empty() => first,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: &str = include_str!("../../tests/fixtures/s3-put-aws.json");
    const EMULATOR: &str = include_str!("../../tests/fixtures/s3-put-emulator.json");
    const TEST_EVENT: &str = include_str!("../../tests/fixtures/s3-test-event.json");
    const EMULATOR_TEST_EVENT: &str = include_str!("../../tests/fixtures/s3-test-event-emulator.json");

    #[test]
    fn aws_documented_event_parses_and_decodes_the_key() {
        let Notification::Records(r) = parse_notification(AWS).unwrap() else { panic!() };
        assert_eq!(r.len(), 1);
        let e = &r[0];
        assert!(e.is_object_created());
        assert_eq!(e.bucket, "amzn-s3-demo-bucket");
        assert_eq!(e.key, "recommendations/nightly batch 2026-11-26.jsonl");
        assert_eq!(e.size, Some(1024));
        assert_eq!(e.etag, "0123456789abcdef0123456789abcdef");
        assert_eq!(e.sequencer.as_deref(), Some("0A1B2C3D4E5F678901"));
        assert_eq!(e.event_time, "1970-01-01T00:00:00.000Z");
        assert_eq!(dataset_of(&e.key, "d"), "recommendations");
    }

    #[test]
    fn emulator_event_without_identity_fields_parses() {
        let Notification::Records(r) = parse_notification(EMULATOR).unwrap() else { panic!() };
        // The emulator also percent-encodes the slash.
        assert_eq!(r[0].key, "recommendations/nightly batch+1.jsonl");
        assert_eq!(r[0].sequencer, None);
        assert_eq!(r[0].size, Some(33));
        assert_eq!(dataset_of(&r[0].key, "default"), "recommendations");
    }

    #[test]
    fn test_event_is_recognised() {
        assert_eq!(parse_notification(TEST_EVENT).unwrap(), Notification::Test);
        assert_eq!(parse_notification(EMULATOR_TEST_EVENT).unwrap(), Notification::Test);
    }

    #[test]
    fn keys_decode_plus_and_percent() {
        assert_eq!(decode_key("a+b%2Bc%20d").unwrap(), "a b+c d");
        assert_eq!(decode_key("caf%C3%A9").unwrap(), "café");
        assert!(decode_key("%FF").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_notification("not json").is_err());
        assert!(parse_notification("{}").is_err());
        assert!(parse_notification(r#"{"Records":[{"eventName":"x"}]}"#).is_err());
    }

    #[test]
    fn dataset_is_the_first_folder() {
        assert_eq!(dataset_of("recs/2026/11/a.jsonl", "d"), "recs");
        assert_eq!(dataset_of("a.jsonl", "d"), "d");
        assert_eq!(dataset_of("/a.jsonl", "d"), "d");
    }
}
