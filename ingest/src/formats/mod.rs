//! # Batch formats
//!
//! One module per format, each behind [`Format`]: how the planner cuts an
//! object into user-range chunks, and how ingest reads one chunk's records
//! as its bytes stream in.
//! - [`lines`]: JSON Lines, cut into equal byte ranges without a scan.
//! - [`document`]: a JSON array or a pandas table document, scanned once.
//! - [`csv`](mod@csv): CSV with a header row, cut like JSON Lines; rows become JSON records.
//! - [`parquet`](mod@parquet): Parquet, planned from its footer, one chunk
//!   per row group or run of small ones; rows are encoded from the Arrow arrays.
//!
//! Compression (gzip, zstd) wraps any text format and is no format's
//! concern: [`Object`] decompresses an object's head for [`sniff`], and
//! [`Chunk::text`] streams a chunk's text, decompressed when it has to be.
//! What a record becomes in Redis is decided once, by the record encoder
//! ([`shared::record`]) behind [`Writer`], whatever the format.
//!
//! A new format is a module implementing [`Format`], a [`ChunkFormat`]
//! variant naming it in chunk messages, and a rule in [`sniff`]; [`plan`]
//! and [`read`] hand objects and chunks to it.
//!
//! Invariant (property-tested in `tests.rs`): for any file and any chunk
//! size, every record lands in exactly one chunk. On both sides memory is
//! bounded by the read size and the longest record allowed (a row group for
//! Parquet), never by the chunk or the object.

use crate::s3::messages::ChunkMessage;
use bytes::Bytes;
use futures::Stream;
use shared::config::{IngestConfig, PlannerConfig};
use shared::record::json::InString;
use tokio::io::AsyncRead;

use crate::error::{ChunkError, IngestError, PlanError};
use crate::s3::source::{read_range, ObjectSource};
use crate::write::{Sink, Writer};

pub mod csv;
pub mod document;
pub mod lines;
pub mod parquet;

pub use crate::layout::{ChunkFormat, Compression};
pub use document::{DocPlan, DocScanner, ElementCursor, ElementStop};
pub use lines::{plan_lines, LineCursor};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes read from the head of an object to decide its format and estimate
/// its record count.
const SNIFF_BYTES: u64 = 256 * 1024;

/// Decompressed bytes read at once from a compressed object.
const TEXT_READ: usize = 1 << 20;

/// One batch format.
pub(crate) trait Format {
    /// Cuts `object` into chunks of about `config.chunk_bytes`.
    async fn plan<S: ObjectSource>(
        object: &Object<'_, S>,
        config: &PlannerConfig,
    ) -> Result<Layout, PlanError>;

    /// Hands the records of `chunk` to `records` as its bytes stream in,
    /// sending full rounds on as it goes ([`Writer::send`]).
    async fn read<S: ObjectSource, K: Sink>(
        chunk: &Chunk<'_, S>,
        records: &mut Writer<'_, K>,
    ) -> Result<(), IngestError>;
}

/// How an object is cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub format: ChunkFormat,
    pub compression: Compression,
    /// One per chunk: record-aligned byte ranges (a compressed object's one
    /// range is in decompressed bytes), or a Parquet file's row groups.
    pub ranges: Vec<(u64, u64)>,
    /// Records in the object: counted in a document or a Parquet footer,
    /// estimated from the head of a line format.
    pub estimated_users: u64,
    /// Bytes of text: the object's size, or an estimate of it decompressed.
    pub text_bytes: u64,
}

/// Sniffs the object's format and cuts it into chunks of about
/// `config.chunk_bytes`, reading as little as the format allows.
pub async fn plan<S: ObjectSource>(
    source: &S,
    config: &PlannerConfig,
    bucket: &str,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<Layout, PlanError> {
    let max_text = config.limits.max_decompressed_bytes;
    let object = Object::open(source, bucket, key, etag, size, max_text).await?;
    match sniff(&object.head, &config.user_field).map_err(|e| object.error(e))? {
        ChunkFormat::JsonLines => lines::JsonLines::plan(&object, config).await,
        ChunkFormat::JsonElements => document::JsonDocument::plan(&object, config).await,
        ChunkFormat::Csv => csv::Csv::plan(&object, config).await,
        ChunkFormat::Parquet => parquet::Parquet::plan(&object, config).await,
    }
}

/// Hands the records of the chunk to `records`, by the format its message names.
pub(crate) async fn read<S: ObjectSource, K: Sink>(
    chunk: &Chunk<'_, S>,
    records: &mut Writer<'_, K>,
) -> Result<(), IngestError> {
    match chunk.msg.format {
        ChunkFormat::JsonLines => lines::JsonLines::read(chunk, records).await,
        ChunkFormat::JsonElements => document::JsonDocument::read(chunk, records).await,
        ChunkFormat::Csv => csv::Csv::read(chunk, records).await,
        ChunkFormat::Parquet => parquet::Parquet::read(chunk, records).await,
    }
}

/// An object being planned, with its first bytes already read.
pub struct Object<'a, S> {
    pub source: &'a S,
    pub bucket: &'a str,
    pub key: &'a str,
    pub etag: &'a str,
    pub size: u64,
    /// Told from the first bytes.
    pub compression: Compression,
    /// The first text bytes: up to [`SNIFF_BYTES`] of the object, decompressed.
    pub head: Vec<u8>,
    /// Whether `head` is all of the object's text.
    pub whole: bool,
    /// Bytes of text: the size, or an estimate from the head's ratio when compressed.
    pub text_bytes: u64,
    /// Most bytes the object may decompress to.
    pub max_text: u64,
}

impl<'a, S: ObjectSource> Object<'a, S> {
    /// Reads the head of the `size`-byte object, decompressing it if it has
    /// to; all of its text may be at most `max_text` bytes.
    async fn open(
        source: &'a S,
        bucket: &'a str,
        key: &'a str,
        etag: &'a str,
        size: u64,
        max_text: u64,
    ) -> Result<Self, PlanError> {
        let mut object = Object {
            source,
            bucket,
            key,
            etag,
            size,
            compression: Compression::None,
            head: Vec::new(),
            whole: false,
            text_bytes: size,
            max_text,
        };
        if size == 0 {
            return Err(object.error(ChunkError::Empty));
        }
        let read = SNIFF_BYTES.min(size);
        let raw: Vec<u8> = read_range(source, bucket, key, etag, 0, read).await?.into();
        object.whole = raw.len() as u64 >= size;
        object.compression = Compression::detect(&raw);
        object.head = match object.compression {
            Compression::None => raw,
            c => c
                .head(&raw, object.whole)
                .await
                .map_err(|reason| object.error(ChunkError::Compressed(reason)))?,
        };
        object.text_bytes = if object.whole {
            object.head.len() as u64
        } else {
            (size as f64 * object.head.len() as f64 / read as f64) as u64
        };
        Ok(object)
    }

    pub fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The object cannot be planned, for `reason`.
    pub fn error(&self, reason: ChunkError) -> PlanError {
        PlanError::Layout {
            source_uri: self.source_uri(),
            reason,
        }
    }

    /// Records in the object, estimated from the newlines of its head.
    pub fn estimated_lines(&self) -> u64 {
        let lines = self.head.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
        if self.whole {
            lines
        } else {
            self.text_bytes * lines / self.head.len().max(1) as u64
        }
    }

    /// All of the object's text, streamed from its start (decompressed).
    pub async fn text(&self) -> Result<impl AsyncRead + Send + Unpin, PlanError> {
        let stream = self
            .source
            .read(self.bucket, self.key, self.etag, 0, None)
            .await?;
        Ok(self
            .compression
            .capped_decoder(crate::s3::source::reader(stream), self.max_text))
    }

    /// What a failed read of [`Object::text`] means: the source's error, or
    /// a corrupt compressed stream.
    pub fn text_error(&self, e: std::io::Error) -> PlanError {
        match crate::s3::source::source_error(e) {
            Ok(source) => PlanError::Source(source),
            Err(e) => self.error(ChunkError::Compressed(self.compression.corrupt(&e))),
        }
    }
}

/// A chunk being read: its message, where its bytes come from, and the
/// configuration that says how records look.
pub struct Chunk<'a, S> {
    pub source: &'a S,
    pub msg: &'a ChunkMessage,
    pub config: &'a IngestConfig,
}

/// Text of a chunk, as it streams in.
pub type TextStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, IngestError>> + Send>>;

impl<S: ObjectSource> Chunk<'_, S> {
    pub fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.msg.bucket, self.msg.key)
    }

    /// The longest record allowed, in bytes.
    pub fn max_record(&self) -> usize {
        self.config.validation.max_record_bytes as usize
    }

    /// Bytes `[from, to)` (`to = None`: to the end) of the chunk's text:
    /// ranged reads of the object itself, or, for a compressed object, its
    /// whole stream decompressed, with the bytes outside the range dropped.
    pub async fn text(&self, from: u64, to: Option<u64>) -> Result<TextStream, IngestError> {
        use futures::TryStreamExt;
        let msg = self.msg;
        if msg.compression.is_none() {
            return Ok(Box::pin(
                self.source
                    .read(&msg.bucket, &msg.key, &msg.etag, from, to)
                    .await?
                    .map_err(IngestError::from),
            ));
        }
        let raw = self
            .source
            .read(&msg.bucket, &msg.key, &msg.etag, 0, None)
            .await?;
        let decoder = msg.compression.capped_decoder(
            crate::s3::source::reader(raw),
            self.config.limits.max_decompressed_bytes,
        );
        let (compression, source_uri, to) =
            (msg.compression, self.source_uri(), to.unwrap_or(u64::MAX));
        let state = (decoder, 0u64, vec![0u8; TEXT_READ]);
        Ok(Box::pin(futures::stream::try_unfold(
            state,
            move |(mut decoder, mut at, mut buf)| {
                let source_uri = source_uri.clone();
                async move {
                    use tokio::io::AsyncReadExt;
                    loop {
                        if at >= to {
                            return Ok(None);
                        }
                        let n = decoder.read(&mut buf).await.map_err(|e| {
                            match crate::s3::source::source_error(e) {
                                Ok(source) => IngestError::Source(source),
                                Err(e) => IngestError::Decompress {
                                    source_uri: source_uri.clone(),
                                    reason: compression.corrupt(&e),
                                },
                            }
                        })?;
                        if n == 0 {
                            return Ok(None);
                        }
                        let (start, end) = (at, at + n as u64);
                        at = end;
                        if end <= from {
                            continue;
                        }
                        let piece = Bytes::copy_from_slice(
                            &buf[(from.saturating_sub(start)) as usize
                                ..(end.min(to) - start) as usize],
                        );
                        return Ok(Some((piece, (decoder, at, buf))));
                    }
                }
            },
        )))
    }
}

/// Decides the layout of a batch from its first bytes (64 KiB is plenty).
/// `user_field` tells a record (`{"userId": …}`) from a table document.
pub fn sniff(prefix: &[u8], user_field: &str) -> Result<ChunkFormat, ChunkError> {
    let body = prefix.strip_prefix(BOM).unwrap_or(prefix);
    if prefix.starts_with(b"PAR1") {
        return Ok(ChunkFormat::Parquet);
    }
    let first = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(ChunkError::Empty)?;
    match body[first] {
        b'[' => Ok(ChunkFormat::JsonElements),
        b'{' => {
            // Walk the first object's top-level keys: a record has the user
            // field there, a table document has `schema` or `data`.
            let mut depth = 0u32;
            let mut string: Option<InString> = None;
            let mut key_start = None;
            let mut expect_key = false;
            for (i, &b) in body.iter().enumerate().skip(first) {
                if let Some(s) = string.as_mut() {
                    if s.ends_at(b) {
                        string = None;
                        if let Some(s) = key_start.take() {
                            let key = &body[s..i];
                            if key == user_field.as_bytes() {
                                return Ok(ChunkFormat::JsonLines);
                            }
                            if key == b"data" || key == b"schema" {
                                return Ok(ChunkFormat::JsonElements);
                            }
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => {
                        string = Some(InString::default());
                        if depth == 1 && expect_key {
                            key_start = Some(i + 1);
                            expect_key = false;
                        }
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        expect_key = depth == 1;
                    }
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' => expect_key = depth == 1,
                    _ => {}
                }
            }
            Ok(ChunkFormat::JsonLines)
        }
        other => {
            let line = &body[first..];
            let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
            if csv::is_header(line.strip_suffix(b"\r").unwrap_or(line), user_field) {
                Ok(ChunkFormat::Csv)
            } else {
                Err(ChunkError::UnknownFormat(other as char))
            }
        }
    }
}

#[cfg(test)]
mod tests;
