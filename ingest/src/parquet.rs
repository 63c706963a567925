//! A Parquet file over an [`ObjectSource`]: its footer by ranged reads (the
//! planner and every ingest chunk), and one row group at a time by one
//! ranged read of its column chunks, decoded by arrow-rs from memory.
//!
//! Reads are pinned to the planned ETag like every other format's, so a file
//! overwritten after planning fails cleanly. What is in memory at once is the
//! footer and one row group's compressed column chunks, never the file.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use futures::FutureExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::MetadataFetch;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use shared::aws::messages::ChunkMessage;
use shared::format::parquet::row_group_span;

use crate::error::{IngestError, PlanError};
use crate::source::{read_range, ObjectSource, SourceError};

/// Bytes read from the end of a file at first: most footers fit, so one read.
const FOOTER_GUESS: usize = 64 * 1024;

/// Rows decoded at once.
const BATCH_ROWS: usize = 8192;

/// Why a Parquet file could not be read.
#[derive(Debug)]
pub enum ParquetFault {
    /// The bytes could not be fetched (retry, or the file changed).
    Source(SourceError),
    /// The bytes are not a Parquet file arrow-rs can read.
    Corrupt(String),
}

impl ParquetFault {
    pub fn into_ingest(self, source_uri: &str) -> IngestError {
        match self {
            ParquetFault::Source(e) => IngestError::Source(e),
            ParquetFault::Corrupt(reason) => IngestError::Parquet { source_uri: source_uri.to_string(), reason },
        }
    }

    pub fn into_plan(self, source_uri: &str) -> PlanError {
        match self {
            ParquetFault::Source(e) => PlanError::Source(e),
            ParquetFault::Corrupt(reason) => PlanError::Layout { source_uri: source_uri.to_string(), reason: shared::format::ChunkError::Parquet(reason) },
        }
    }
}

/// Reads bytes for the footer reader, keeping a read failure aside so it is
/// not mistaken for a corrupt file.
struct Fetch<'a, S> {
    source: &'a S,
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    failed: &'a mut Option<SourceError>,
}

impl<S: ObjectSource> MetadataFetch for Fetch<'_, S> {
    fn fetch(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            match read_range(self.source, self.bucket, self.key, self.etag, range.start, range.end).await {
                Ok(bytes) => Ok(bytes),
                Err(e) => {
                    let message = e.to_string();
                    *self.failed = Some(e);
                    Err(ParquetError::General(message))
                }
            }
        }
        .boxed()
    }
}

/// The footer of the `size`-byte Parquet file at `bucket/key`.
pub async fn footer<S: ObjectSource>(source: &S, bucket: &str, key: &str, etag: &str, size: u64) -> Result<Arc<ParquetMetaData>, ParquetFault> {
    if size < 12 {
        return Err(ParquetFault::Corrupt(format!("a {size}-byte file is too short to be Parquet")));
    }
    let mut failed = None;
    let fetch = Fetch { source, bucket, key, etag, failed: &mut failed };
    let result = ParquetMetaDataReader::new().with_prefetch_hint(Some(FOOTER_GUESS)).load_and_finish(fetch, size).await;
    match (result, failed) {
        (Ok(meta), _) => Ok(Arc::new(meta)),
        (Err(_), Some(e)) => Err(ParquetFault::Source(e)),
        (Err(e), None) => Err(ParquetFault::Corrupt(format!("the Parquet footer cannot be read (truncated or corrupt): {e}"))),
    }
}

/// Row group `index` of the chunk's file, as batches of rows: its column
/// chunks are read with one ranged read, then decoded from memory.
pub async fn row_group<S: ObjectSource>(
    source: &S,
    msg: &ChunkMessage,
    meta: &ArrowReaderMetadata,
    index: usize,
) -> Result<ParquetRecordBatchReader, ParquetFault> {
    let (from, to) = row_group_span(meta.metadata(), index);
    if from > to || to > msg.size {
        return Err(ParquetFault::Corrupt(format!("row group {index} lies outside the file (bytes {from}..{to} of {})", msg.size)));
    }
    let bytes = read_range(source, &msg.bucket, &msg.key, &msg.etag, from, to).await.map_err(ParquetFault::Source)?;
    let span = Span { offset: from, bytes, file_len: msg.size };
    ParquetRecordBatchReaderBuilder::new_with_metadata(span, meta.clone())
        .with_row_groups(vec![index])
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| ParquetFault::Corrupt(format!("row group {index}: {e}")))
}

/// The bytes of one row group, standing in for the whole file.
struct Span {
    offset: u64,
    bytes: Bytes,
    file_len: u64,
}

impl Span {
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let at = start.checked_sub(self.offset).map(|a| a as usize).filter(|&a| a <= self.bytes.len());
        let end = at.map(|a| length.map_or(self.bytes.len(), |l| a + l));
        match (at, end) {
            (Some(a), Some(e)) if e <= self.bytes.len() => Ok(self.bytes.slice(a..e)),
            _ => Err(ParquetError::EOF(format!("bytes {start}.. are outside the row group's column chunks"))),
        }
    }
}

impl Length for Span {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for Span {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}
