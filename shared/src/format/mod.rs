//! # Batch formats
//!
//! Splitting a batch object into user-range chunks (the planner), and finding
//! the records of one chunk again (ingest). One file per format:
//! - [`lines`]: JSON Lines, cut into equal byte ranges without a scan.
//! - [`document`]: a JSON array or a pandas table document, scanned once.
//! - [`csv`](mod@csv): CSV with a header row, cut like JSON Lines; rows become JSON records.
//! - [`compressed`]: gzip and zstd around any of them, one chunk per object.
//! - [`parquet`](mod@parquet): Parquet, planned from its footer, one chunk per
//!   row group or run of small ones; rows become JSON records (feature `parquet`).
//! - [`json`]: the JSON string scanner the formats and [`record`] share.
//! - [`record`]: one user record: parse, validate, encode for Redis (the
//!   reference for what every format writes), decode for serving.
//!
//! Invariant (property-tested in `tests.rs`): for any file and any chunk
//! size, every record lands in exactly one chunk. On both sides memory is
//! bounded by the read size and the longest record allowed, never by the
//! chunk or the object.

use serde::{Deserialize, Serialize};

pub mod compressed;
pub mod csv;
pub mod document;
pub mod json;
pub mod lines;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod record;

pub use compressed::Compression;
pub use document::{DocPlan, DocScanner, ElementCursor, ElementStop};
pub use lines::{plan_lines, LineCursor};

use json::InString;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the bytes of a chunk are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkFormat {
    /// JSON Lines. The chunk owns every line that *starts* inside
    /// `[start, end)`; ingest aligns to newlines itself.
    JsonLines,
    /// Elements of a JSON array (a `to_json(orient="table")` document's `data`,
    /// or a top-level array), separated by commas. The planner scanned the
    /// document, so `[start, end)` holds whole elements.
    JsonElements,
    /// CSV rows under a header row; cut like JSON Lines. Ingest reads the
    /// header from the object's first line.
    Csv,
    /// Row groups `[start, end)` of a Parquet file (indices, not bytes),
    /// read by ranged reads from the file's footer.
    Parquet,
}

impl ChunkFormat {
    /// The name stored in a version's record (as in the message).
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkFormat::JsonLines => "json-lines",
            ChunkFormat::JsonElements => "json-elements",
            ChunkFormat::Csv => "csv",
            ChunkFormat::Parquet => "parquet",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [ChunkFormat::JsonLines, ChunkFormat::JsonElements, ChunkFormat::Csv, ChunkFormat::Parquet].into_iter().find(|f| f.as_str() == s)
    }
}

/// The format label a version's record holds: the layout, and the
/// compression when there is one (`json-lines`, `json-lines+gzip`).
pub fn label(format: ChunkFormat, compression: Compression) -> String {
    match compression {
        Compression::None => format.as_str().to_string(),
        c => format!("{}+{}", format.as_str(), c.as_str()),
    }
}

/// The layout and compression a [`label`] names.
pub fn parse_label(label: &str) -> Option<(ChunkFormat, Compression)> {
    match label.split_once('+') {
        None => Some((ChunkFormat::parse(label)?, Compression::None)),
        Some((f, c)) => Some((ChunkFormat::parse(f)?, Compression::parse(c).filter(|c| !c.is_none())?)),
    }
}

/// Why a batch object cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("the batch is empty")]
    Empty,
    #[error("unknown batch format: expected JSON Lines, a JSON array, a table document, CSV with a header naming the user field, or Parquet (first byte {0:?})")]
    UnknownFormat(char),
    #[error("no records array found: expected a top-level array or a `data` array in a table document")]
    NoRecords,
    #[error("the document ends early at byte {0} (truncated or unbalanced)")]
    Truncated(u64),
    #[error("unexpected content after the document at byte {0}")]
    TrailingContent(u64),
    /// A compressed object's stream cannot be read ([`Compression::corrupt`]).
    #[error("{0}")]
    Compressed(String),
    /// A Parquet file whose footer or schema cannot be read.
    #[error("{0}")]
    Parquet(String),
}

/// Decides the layout of a batch from its first bytes (64 KiB is plenty).
/// `user_field` tells a record (`{"userId": …}`) from a table document.
pub fn sniff(prefix: &[u8], user_field: &str) -> Result<ChunkFormat, ChunkError> {
    let body = prefix.strip_prefix(BOM).unwrap_or(prefix);
    if prefix.starts_with(b"PAR1") {
        return Ok(ChunkFormat::Parquet);
    }
    let first = body.iter().position(|b| !b.is_ascii_whitespace()).ok_or(ChunkError::Empty)?;
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
            if self::csv::is_header(line.strip_suffix(b"\r").unwrap_or(line), user_field) {
                Ok(ChunkFormat::Csv)
            } else {
                Err(ChunkError::UnknownFormat(other as char))
            }
        }
    }
}

/// A record found in a chunk by [`LineCursor`] or [`ElementCursor`].
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A whole record's bytes (a line without its `\n` or a trailing `\r`,
    /// or an element), not yet checked as JSON.
    Record(&'a [u8]),
    /// A record longer than the cursor's limit; its bytes are skipped.
    TooLong,
}

#[cfg(test)]
mod tests;
