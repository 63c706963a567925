//! Where batch bytes come from.
//!
//! [`ObjectSource`] serves byte ranges of an object pinned to an ETag, as a
//! stream, so neither the planner nor ingest ever holds a whole batch. The S3
//! implementation issues ranged GETs with `If-Match`, so an object overwritten
//! after planning fails cleanly instead of mixing two uploads.

use std::future::Future;
use std::pin::Pin;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use futures::Stream;

/// A stream of an object's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, SourceError>> + Send>>;

/// Why bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The object no longer has the planned ETag: it was overwritten.
    #[error("s3://{bucket}/{key} changed since it was planned (ETag {etag} no longer matches)")]
    Changed {
        bucket: String,
        key: String,
        etag: String,
    },
    /// The object is gone.
    #[error("s3://{bucket}/{key} does not exist")]
    Missing { bucket: String, key: String },
    /// Anything else (network, throttling, 5xx): worth a retry.
    #[error("reading s3://{bucket}/{key}: {message}")]
    Io {
        bucket: String,
        key: String,
        message: String,
    },
}

impl SourceError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SourceError::Changed { .. } | SourceError::Missing { .. }
        )
    }
}

/// `stream` as a buffered reader (for a decompressor); a read error keeps
/// its [`SourceError`] inside, for [`source_error`] to take out again.
pub fn reader(stream: ByteStream) -> impl tokio::io::AsyncBufRead + Send + Unpin {
    use futures::TryStreamExt;
    tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other))
}

/// The [`SourceError`] a reader from [`reader`] failed with, or the error
/// itself when the bytes were read but could not be decoded.
pub fn source_error(e: std::io::Error) -> Result<SourceError, std::io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
        let inner = e.into_inner().expect("checked above");
        return Ok(*inner.downcast::<SourceError>().expect("checked above"));
    }
    Err(e)
}

/// Bytes `[from, to)` of an object, gathered in memory: for reads that are
/// small or bounded (a head, a footer, a marker, one Parquet row group).
pub async fn read_range<S: ObjectSource>(
    source: &S,
    bucket: &str,
    key: &str,
    etag: &str,
    from: u64,
    to: u64,
) -> Result<Bytes, SourceError> {
    use futures::StreamExt;
    let mut stream = source.read(bucket, key, etag, from, Some(to)).await?;
    let mut out = bytes::BytesMut::with_capacity(to.saturating_sub(from) as usize);
    while let Some(bytes) = stream.next().await {
        out.extend_from_slice(&bytes?);
    }
    Ok(out.freeze())
}

/// Serves byte ranges of objects.
pub trait ObjectSource: Send + Sync {
    /// Streams bytes `[from, to)` of the object (`to = None`: to its end),
    /// failing with [`SourceError::Changed`] if its ETag is no longer `etag`.
    fn read(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        from: u64,
        to: Option<u64>,
    ) -> impl Future<Output = Result<ByteStream, SourceError>> + Send;

    /// The current ETag and size of the object.
    fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(String, u64), SourceError>> + Send;

    /// Every object whose key starts with `prefix`, in key order.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<Listed>, SourceError>> + Send;
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// When it was written (S3's LastModified, whole seconds), when known.
    pub modified_ms: Option<u64>,
}

/// [`ObjectSource`] over S3 (or an S3-compatible endpoint).
#[derive(Clone)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
}

impl S3Source {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        S3Source { client }
    }
}

fn classify<E>(
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    bucket: &str,
    key: &str,
    etag: &str,
) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (bucket, key) = (bucket.to_string(), key.to_string());
    let status = match &err {
        SdkError::ServiceError(_) => err.raw_response().map(|r| r.status().as_u16()),
        _ => None,
    };
    match (status, err.code()) {
        (Some(412), _) | (_, Some("PreconditionFailed")) => SourceError::Changed {
            bucket,
            key,
            etag: etag.to_string(),
        },
        (Some(404), _) | (_, Some("NoSuchKey")) | (_, Some("NotFound")) => {
            SourceError::Missing { bucket, key }
        }
        _ => SourceError::Io {
            bucket,
            key,
            message: aws_sdk_s3::error::DisplayErrorContext(&err).to_string(),
        },
    }
}

impl ObjectSource for S3Source {
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<ByteStream, SourceError> {
        let range = match to {
            Some(to) if to > from => format!("bytes={}-{}", from, to - 1),
            Some(_) => return Ok(Box::pin(futures::stream::empty())),
            None => format!("bytes={from}-"),
        };
        let mut req = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(range);
        if !etag.is_empty() {
            req = req.if_match(etag);
        }
        let out = req
            .send()
            .await
            .map_err(|e| classify(e, bucket, key, etag))?;
        let (b, k) = (bucket.to_string(), key.to_string());
        let stream = futures::stream::unfold((out.body, b, k), |(mut body, b, k)| async move {
            match body.next().await {
                None => None,
                Some(Ok(bytes)) => Some((Ok(bytes), (body, b, k))),
                Some(Err(e)) => {
                    let err = SourceError::Io {
                        bucket: b.clone(),
                        key: k.clone(),
                        message: e.to_string(),
                    };
                    Some((Err(err), (body, b, k)))
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<(String, u64), SourceError> {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, bucket, key, ""))?;
        Ok((
            out.e_tag.unwrap_or_default(),
            out.content_length.unwrap_or(0).max(0) as u64,
        ))
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, SourceError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, bucket, prefix, ""))?;
            for o in page.contents.unwrap_or_default() {
                let Some(key) = o.key else { continue };
                out.push(Listed {
                    key,
                    etag: o.e_tag.unwrap_or_default(),
                    size: o.size.unwrap_or(0).max(0) as u64,
                    modified_ms: o
                        .last_modified
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
