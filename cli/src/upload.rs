//! Uploading a batch and following it to live.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use shared::keys::DatasetKeys;
use shared::protocol::{self, State, VersionInfo};
use shared::store::Redis;

/// Puts `file` at `s3://bucket/key`; returns the object's ETag.
pub async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, file: &Path) -> Result<String> {
    let body = ByteStream::from_path(file).await.with_context(|| format!("reading {}", file.display()))?;
    let out = s3.put_object().bucket(bucket).key(key).body(body).send().await.with_context(|| format!("uploading to s3://{bucket}/{key}"))?;
    Ok(out.e_tag.unwrap_or_default())
}

/// Strips the quotes S3 puts around ETags in some places and not others.
pub fn bare_etag(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Finds the version planned for `s3://bucket/key` with `etag`.
pub async fn find_version(redis: &Redis, dataset: &str, source: &str, etag: &str) -> Result<Option<VersionInfo>> {
    let keys = DatasetKeys::new(dataset)?;
    let versions = protocol::versions(redis, &keys).await?;
    for v in versions.iter().rev().take(20) {
        if let Some(info) = protocol::version_info(redis, &keys, v).await? {
            if info.source == source && bare_etag(&info.etag) == bare_etag(etag) {
                return Ok(Some(info));
            }
        }
    }
    Ok(None)
}

/// Waits until the upload's version settles; `progress(done, total)` is
/// called while it ingests. Returns the settled version.
pub async fn wait(
    redis: &Redis,
    dataset: &str,
    source: &str,
    etag: &str,
    timeout: Duration,
    mut progress: impl FnMut(u32, u32),
) -> Result<VersionInfo> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(info) = find_version(redis, dataset, source, etag).await? {
            progress(info.chunks_done, info.chunks);
            match info.state {
                State::Ingesting => {}
                State::Failed => bail!("version {} failed: {}", info.version, info.reason.unwrap_or_default()),
                _ => return Ok(info),
            }
        }
        if Instant::now() > deadline {
            bail!("{source} did not settle within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
