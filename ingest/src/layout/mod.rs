//! # How a chunk's bytes are laid out
//!
//! [`ChunkFormat`] and [`Compression`]: how a chunk message and a version's
//! record name the layout of a chunk's bytes, and how compressed bytes are
//! read. The formats themselves (sniffing an object, cutting it into chunks,
//! reading a chunk's records) are in the `formats` module.

use serde::{Deserialize, Serialize};

pub mod compressed;

pub use compressed::Compression;

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
        [
            ChunkFormat::JsonLines,
            ChunkFormat::JsonElements,
            ChunkFormat::Csv,
            ChunkFormat::Parquet,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
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
        Some((f, c)) => Some((
            ChunkFormat::parse(f)?,
            Compression::parse(c).filter(|c| !c.is_none())?,
        )),
    }
}
