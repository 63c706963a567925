//! # The AWS side
//!
//! - [`boot`]: what every Lambda does at cold start.
//! - The Redis AUTH token from Secrets Manager, read at cold start
//!   ([`resolve_redis_auth`]; feature `secrets`, which every Lambda enables).
//! - With feature `aws` (the planner, ingest, the CLI, the local stack; not
//!   serve, which never calls S3 or SQS): S3 and SQS clients, S3 event
//!   notifications as they arrive through SQS ([`event`]), which uploads are
//!   batches (one object, or a folder committed by a marker: [`folder`]), and the chunk
//!   message the planner sends and ingest reads ([`messages`]).
//!
//! The same code talks to AWS and to a local S3/SQS emulator: the standard
//! `AWS_ENDPOINT_URL` (honoured by `aws-config`) points it at the emulator, and
//! then S3 uses path-style addressing and computes checksums only where the
//! API requires them, which S3-compatible servers expect.

pub mod boot;
#[cfg(feature = "aws")]
pub mod event;
#[cfg(feature = "aws")]
pub mod folder;
#[cfg(feature = "aws")]
pub mod messages;

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads region, credentials and endpoint from the environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client for `cfg`, adjusted for custom endpoints.
#[cfg(feature = "aws")]
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
#[cfg(feature = "aws")]
pub fn sqs_client(cfg: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(cfg)
}

/// Resolves a Redis AUTH token kept in Secrets Manager (read once, at cold
/// start). The secret holds `{"token": "…"}` or the bare token.
pub async fn resolve_redis_auth(redis: &mut crate::config::RedisConfig, cfg: &SdkConfig) -> Result<(), AuthError> {
    use crate::config::{RedisAuth, Secret};
    let RedisAuth::SecretArn(arn) = &redis.auth else { return Ok(()) };
    let client = aws_sdk_secretsmanager::Client::new(cfg);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| AuthError(format!("reading secret {arn}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e))))?;
    let raw = out.secret_string.ok_or_else(|| AuthError(format!("secret {arn} has no string value")))?;
    let token = match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(m)) => m
            .get("token")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| AuthError(format!("secret {arn} has no `token` field")))?,
        _ => raw,
    };
    redis.auth = RedisAuth::Token(Secret::new(token));
    Ok(())
}

/// The Redis AUTH token could not be read (the message never holds the token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);
