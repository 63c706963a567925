//! # The S3 and SQS side of ingest
//!
//! - [`file`]: the same reads from local files (sizing a sample batch).
//! - [`event`]: S3 event notifications (and SageMaker job completions) as
//!   they arrive through the events queue.
//! - [`folder`]: which uploads are batches: one object, a folder committed by
//!   a marker, a delta.
//! - [`messages`]: the chunk message the planner sends and ingest reads.
//! - [`source`]: byte ranges of objects pinned to an ETag, behind one small
//!   trait ([`source::ObjectSource`]).
//!
//! Against a local S3/SQS emulator (`AWS_ENDPOINT_URL` set), S3 uses
//! path-style addressing and computes checksums only where the API requires
//! them, which S3-compatible servers expect.

pub mod event;
pub mod file;
pub mod folder;
pub mod messages;
pub mod source;

use aws_config::SdkConfig;

/// An S3 client for `cfg`, adjusted for custom endpoints.
pub fn s3_client(cfg: &SdkConfig) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
    let mut b = aws_sdk_s3::config::Builder::from(cfg);
    if cfg.endpoint_url().is_some() {
        b = b
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// An SQS client for `cfg`.
pub fn sqs_client(cfg: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(cfg)
}
