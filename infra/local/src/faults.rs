//! Fault injection for the local stack: an [`ObjectSource`] wrapper that fails
//! chosen reads, so tests can make one chunk fail every time (a poison chunk)
//! and then heal it, through the real queues and handlers.

use std::sync::{Arc, Mutex};

use ingest::s3::source::{ByteStream, Listed, ObjectSource, SourceError};

/// Reads to fail: (object key, first byte of the read).
#[derive(Debug, Default)]
pub struct Faults {
    poisoned: Mutex<Vec<(String, u64)>>,
}

impl Faults {
    /// Fails every read of `key` that starts at byte `from`, until healed.
    pub fn poison(&self, key: &str, from: u64) {
        self.poisoned
            .lock()
            .expect("faults")
            .push((key.to_string(), from));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.poisoned.lock().expect("faults").clear();
    }

    fn hits(&self, key: &str, from: u64) -> bool {
        self.poisoned
            .lock()
            .expect("faults")
            .iter()
            .any(|(k, f)| k == key && *f == from)
    }
}

/// An [`ObjectSource`] that fails the reads [`Faults`] names.
#[derive(Clone)]
pub struct FaultySource<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S> FaultySource<S> {
    pub fn new(inner: S, faults: Arc<Faults>) -> Self {
        FaultySource { inner, faults }
    }
}

impl<S: ObjectSource> ObjectSource for FaultySource<S> {
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<ByteStream, SourceError> {
        if self.faults.hits(key, from) {
            return Err(SourceError::Io {
                bucket: bucket.into(),
                key: key.into(),
                message: format!("injected fault at byte {from}"),
            });
        }
        self.inner.read(bucket, key, etag, from, to).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<(String, u64), SourceError> {
        self.inner.head(bucket, key).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, SourceError> {
        self.inner.list(bucket, prefix).await
    }
}
