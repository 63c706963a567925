//! S3 event notifications as they arrive in an SQS message body.
//!
//! Parsed leniently with our own small structs rather than
//! `aws_lambda_events::s3::S3Event`: emulators omit fields the crate requires
//! (`userIdentity`, `requestParameters`), and the `s3:TestEvent` that S3 sends
//! when a notification is configured has no `Records` at all. Object keys
//! arrive URL-encoded with `+` for a space; [`decode_key`] undoes that.
//! The planner also sends itself one message of its own through the same
//! queue: a folder's marker to look at again ([`recheck_body`]).

use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// What an SQS message body from an S3 notification holds.
#[derive(Debug, PartialEq)]
pub enum Notification {
    /// The `s3:TestEvent` sent when notifications are configured: ignore it.
    Test,
    /// One or more object events.
    Records(Vec<ObjectEvent>),
    /// A SageMaker Batch Transform job ended (through EventBridge).
    Transform(TransformJob),
    /// A folder's marker the planner sent back to itself: the folder's
    /// files were still arriving when it last looked.
    Recheck(ObjectEvent),
}

/// The message that sends the marker `ev` back to the planner.
#[derive(serde::Serialize, Deserialize)]
struct RecheckBody {
    #[serde(rename = "folderRecheck")]
    folder_recheck: ObjectEvent,
}

/// The body of a message that has the planner look at the marker `ev` again.
pub fn recheck_body(ev: &ObjectEvent) -> String {
    serde_json::to_string(&RecheckBody {
        folder_recheck: ev.clone(),
    })
    .expect("an object event serializes")
}

/// A "SageMaker Transform Job State Change" event's part that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformJob {
    pub name: String,
    /// `Completed`, `Failed`, `Stopped` (the rule sends only those).
    pub status: String,
    pub failure: Option<String>,
    /// `TransformOutput.S3OutputPath`, split: its bucket and key prefix
    /// (with a trailing `/`).
    pub bucket: String,
    pub prefix: String,
    /// The event's time (ISO 8601), which orders versions.
    pub time: String,
}

/// The `detail-type` of the SageMaker event handled.
pub const TRANSFORM_JOB_STATE_CHANGE: &str = "SageMaker Transform Job State Change";

#[derive(Deserialize)]
struct EventBridge {
    #[serde(rename = "detail-type")]
    detail_type: String,
    time: String,
    detail: TransformDetail,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TransformDetail {
    transform_job_name: String,
    transform_job_status: String,
    #[serde(default)]
    failure_reason: Option<String>,
    transform_output: TransformOutput,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TransformOutput {
    s3_output_path: String,
}

fn transform_job(body: &str) -> Result<Option<TransformJob>, EventError> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    if value.get("detail-type").and_then(|t| t.as_str()) != Some(TRANSFORM_JOB_STATE_CHANGE) {
        return Ok(None);
    }
    let ev: EventBridge = serde_json::from_value(value)?;
    let _ = ev.detail_type;
    let path = ev.detail.transform_output.s3_output_path;
    let (bucket, prefix) = path
        .strip_prefix("s3://")
        .and_then(|p| p.split_once('/'))
        .ok_or(EventError::BadOutputPath(path.clone()))?;
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    Ok(Some(TransformJob {
        name: ev.detail.transform_job_name,
        status: ev.detail.transform_job_status,
        failure: ev.detail.failure_reason.filter(|r| !r.is_empty()),
        bucket: bucket.to_string(),
        prefix,
        time: ev.time,
    }))
}

/// One object event, with the key already decoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
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
    #[error("the transform job's S3OutputPath {0:?} is not s3://bucket/prefix")]
    BadOutputPath(String),
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

/// Parses an SQS message body that carries an S3 notification (or a
/// SageMaker Transform job's state change from EventBridge).
pub fn parse_notification(body: &str) -> Result<Notification, EventError> {
    if body.trim_start().starts_with("{\"folderRecheck\"") {
        let r: RecheckBody = serde_json::from_str(body)?;
        return Ok(Notification::Recheck(r.folder_recheck));
    }
    if let Some(job) = transform_job(body)? {
        return Ok(Notification::Transform(job));
    }
    let raw: Body = serde_json::from_str(body)?;
    if raw.records.is_none() && raw.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    let records = raw.records.ok_or(EventError::Missing {
        index: 0,
        field: "Records",
    })?;
    let mut out = Vec::with_capacity(records.len());
    for (index, r) in records.into_iter().enumerate() {
        let missing = |field| EventError::Missing { index, field };
        let s3 = r.s3.ok_or(missing("s3"))?;
        let object = s3.object.ok_or(missing("s3.object"))?;
        let raw_key = object.key.ok_or(missing("s3.object.key"))?;
        out.push(ObjectEvent {
            event_name: r.event_name.ok_or(missing("eventName"))?,
            event_time: r.event_time.ok_or(missing("eventTime"))?,
            bucket: s3
                .bucket
                .and_then(|b| b.name)
                .ok_or(missing("s3.bucket.name"))?,
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
    const EMULATOR_TEST_EVENT: &str =
        include_str!("../../tests/fixtures/s3-test-event-emulator.json");

    #[test]
    fn a_sagemaker_transform_job_state_change_names_its_output_prefix() {
        let done = include_str!("../../tests/fixtures/sagemaker-transform-completed.json");
        let Notification::Transform(job) = parse_notification(done).unwrap() else {
            panic!()
        };
        assert_eq!(
            (job.name.as_str(), job.status.as_str(), job.failure),
            ("recs-nightly-2026-12-02", "Completed", None)
        );
        assert_eq!(
            (job.bucket.as_str(), job.prefix.as_str(), job.time.as_str()),
            (
                "amzn-s3-demo-bucket",
                "recommendations/2026-12-02/",
                "2026-12-02T03:26:13Z"
            )
        );
        let failed = include_str!("../../tests/fixtures/sagemaker-transform-failed.json");
        let Notification::Transform(job) = parse_notification(failed).unwrap() else {
            panic!()
        };
        assert_eq!(
            (job.status.as_str(), job.failure.as_deref()),
            (
                "Failed",
                Some("ClientError: See job logs for more information")
            )
        );
    }

    #[test]
    fn aws_documented_event_parses_and_decodes_the_key() {
        let Notification::Records(r) = parse_notification(AWS).unwrap() else {
            panic!()
        };
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
        let Notification::Records(r) = parse_notification(EMULATOR).unwrap() else {
            panic!()
        };
        // The emulator also percent-encodes the slash.
        assert_eq!(r[0].key, "recommendations/nightly batch+1.jsonl");
        assert_eq!(r[0].sequencer, None);
        assert_eq!(r[0].size, Some(33));
        assert_eq!(dataset_of(&r[0].key, "default"), "recommendations");
    }

    #[test]
    fn a_recheck_carries_its_marker_event_back_unchanged() {
        let ev = ObjectEvent {
            event_name: "ObjectCreated:Put".into(),
            event_time: "2026-12-05T10:00:00.000Z".into(),
            bucket: "b".into(),
            key: "recs/run 1/_SUCCESS".into(),
            size: Some(0),
            etag: "\"d41d8cd98f00b204e9800998ecf8427e\"".into(),
            sequencer: Some("0055AED6DCD90281E5".into()),
        };
        assert_eq!(
            parse_notification(&recheck_body(&ev)).unwrap(),
            Notification::Recheck(ev)
        );
    }

    #[test]
    fn test_event_is_recognised() {
        assert_eq!(parse_notification(TEST_EVENT).unwrap(), Notification::Test);
        assert_eq!(
            parse_notification(EMULATOR_TEST_EVENT).unwrap(),
            Notification::Test
        );
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
