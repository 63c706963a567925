//! S3 and SQS clients, built once per process.
//!
//! The same code talks to AWS and to a local S3/SQS emulator: the standard
//! `AWS_ENDPOINT_URL` (honoured by `aws-config`) points it at the emulator, and
//! then S3 uses path-style addressing and computes checksums only where the
//! API requires them, which S3-compatible servers expect.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};

/// Loads region, credentials and endpoint from the environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client for `cfg`, adjusted for custom endpoints.
pub fn s3_client(cfg: &SdkConfig) -> aws_sdk_s3::Client {
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
