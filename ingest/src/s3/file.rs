//! Batches read from local files instead of S3, with the same formats and
//! writer: `fsctl capacity` sizes a sample batch on the operator's disk this
//! way, and the bench measures ingest without an S3 endpoint in the way.

use super::source::{ByteStream, Listed, ObjectSource, SourceError};

/// [`ObjectSource`] over local files: `key` is a path below `root`; the
/// bucket is only named in errors.
#[derive(Clone, Debug)]
pub struct FileSource {
    root: std::path::PathBuf,
}

impl FileSource {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        FileSource { root: root.into() }
    }
}

impl ObjectSource for FileSource {
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        _etag: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<ByteStream, SourceError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let io = |e: std::io::Error| SourceError::Io {
            bucket: bucket.to_string(),
            key: key.to_string(),
            message: e.to_string(),
        };
        let mut f = tokio::fs::File::open(self.root.join(key))
            .await
            .map_err(io)?;
        f.seek(std::io::SeekFrom::Start(from)).await.map_err(io)?;
        let left = to.map(|t| t.saturating_sub(from));
        let (b, k) = (bucket.to_string(), key.to_string());
        let stream = futures::stream::unfold((f, left, b, k), |(mut f, left, b, k)| async move {
            let want = left.map_or(1 << 20, |l| l.min(1 << 20)) as usize;
            if want == 0 {
                return None;
            }
            let mut buf = bytes::BytesMut::with_capacity(want);
            match (&mut f).take(want as u64).read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(n) => Some((Ok(buf.freeze()), (f, left.map(|l| l - n as u64), b, k))),
                Err(e) => Some((
                    Err(SourceError::Io {
                        bucket: b.clone(),
                        key: k.clone(),
                        message: e.to_string(),
                    }),
                    (f, Some(0), b, k),
                )),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<(String, u64), SourceError> {
        let meta = tokio::fs::metadata(self.root.join(key))
            .await
            .map_err(|e| SourceError::Io {
                bucket: bucket.to_string(),
                key: key.to_string(),
                message: e.to_string(),
            })?;
        Ok(("local".to_string(), meta.len()))
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, SourceError> {
        let io = |e: std::io::Error| SourceError::Io {
            bucket: bucket.to_string(),
            key: prefix.to_string(),
            message: e.to_string(),
        };
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut entries = tokio::fs::read_dir(&dir).await.map_err(io)?;
            while let Some(entry) = entries.next_entry().await.map_err(io)? {
                let meta = entry.metadata().await.map_err(io)?;
                if meta.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let key = entry
                    .path()
                    .strip_prefix(&self.root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if key.starts_with(prefix) {
                    out.push(Listed {
                        key,
                        etag: "local".to_string(),
                        size: meta.len(),
                        modified_ms: meta
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_millis() as u64),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
