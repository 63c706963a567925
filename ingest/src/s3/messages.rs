//! The chunk message: what the planner sends and each ingest invocation reads.

use serde::{Deserialize, Serialize};

use crate::layout::{ChunkFormat, Compression};
use shared::db::protocol::{BatchFile, Span, VersionInfo};

/// One user-range chunk of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMessage {
    pub dataset: String,
    pub version: String,
    pub bucket: String,
    pub key: String,
    /// The object's ETag at planning time; reads are pinned to it.
    pub etag: String,
    /// The object's size at planning time: formats read from their end
    /// (Parquet) start there. Absent in messages planned before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    pub format: ChunkFormat,
    /// How the object is compressed; a compressed object is one chunk whose
    /// range is in decompressed bytes. Absent in messages of uncompressed ones.
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
    /// Which file of a folder batch the chunk reads (0, and absent, for a
    /// batch of one object): the plan's [`Span::file`].
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub file: u32,
    /// Index of this chunk, `0..chunks`.
    pub chunk: u32,
    pub chunks: u32,
    /// Byte range `[start, end)` of the object.
    pub start: u64,
    pub end: u64,
    /// Bucket count of the version (see `keys`).
    pub buckets: u32,
    /// A delta's one chunk: `version` is the delta's id, and its users are
    /// applied to the live version ([`shared::db::deltas`]), not written as
    /// a version of their own. Absent in full batches' messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

impl ChunkMessage {
    /// One message per range of `ranges`, numbered in order (`chunk`,
    /// `chunks`, `start`, `end` set), each otherwise a copy of `self`.
    pub fn per_range(&self, ranges: &[(u64, u64)]) -> Vec<ChunkMessage> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(start, end))| ChunkMessage {
                chunk: i as u32,
                chunks: ranges.len() as u32,
                start,
                end,
                ..self.clone()
            })
            .collect()
    }

    /// One message per span of a plan, numbered in order: a copy of `self`
    /// reading the span, from the span's file of `files` when the batch is a
    /// folder's (`None` if a span names a file `files` lacks, or a file's
    /// format label is not one).
    pub fn for_plan(&self, spans: &[Span], files: &[BatchFile]) -> Option<Vec<ChunkMessage>> {
        let chunks = spans.len() as u32;
        let mut out = Vec::with_capacity(spans.len());
        for (i, span) in spans.iter().enumerate() {
            let mut m = ChunkMessage {
                file: span.file,
                chunk: i as u32,
                chunks,
                start: span.start,
                end: span.end,
                ..self.clone()
            };
            if !files.is_empty() {
                let f = files.get(span.file as usize)?;
                (m.format, m.compression) = crate::layout::parse_label(&f.format)?;
                (m.key, m.etag, m.size) = (f.key.clone(), f.etag.clone(), f.size);
            }
            out.push(m);
        }
        Some(out)
    }

    /// The span of the plan this message says it reads.
    pub fn span(&self) -> Span {
        Span {
            file: self.file,
            start: self.start,
            end: self.end,
        }
    }

    /// The chunk messages of a registered version, from its record and its
    /// stored plan: what a re-plan or a resume sends, so that every message
    /// matches the plan whatever the configuration is now.
    pub fn for_version(
        dataset: &str,
        info: &VersionInfo,
        spans: &[Span],
    ) -> Option<Vec<ChunkMessage>> {
        let (bucket, key) = info.source.strip_prefix("s3://")?.split_once('/')?;
        // A folder batch's record may say `mixed`; its files say what each is.
        let (format, compression) =
            crate::layout::parse_label(info.files.first().map_or(&info.format, |f| &f.format))?;
        let template = ChunkMessage {
            dataset: dataset.to_string(),
            version: info.version.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: info.etag.clone(),
            size: info.size,
            format,
            compression,
            file: 0,
            chunk: 0,
            chunks: 0,
            start: 0,
            end: 0,
            buckets: info.buckets,
            delta: false,
        };
        template.for_plan(spans, &info.files)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("chunk message serialises")
    }

    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_message_round_trips_with_stable_field_names() {
        let m = ChunkMessage {
            dataset: "recs".into(),
            version: "v".into(),
            bucket: "b".into(),
            key: "recs/a b.jsonl".into(),
            etag: "\"e\"".into(),
            size: 0,
            format: ChunkFormat::JsonLines,
            compression: Default::default(),
            file: 0,
            chunk: 2,
            chunks: 3,
            start: 10,
            end: 20,
            buckets: 7,
            delta: false,
        };
        let json = m.to_json();
        assert!(
            json.contains(&format!(
                r#""format":"{}""#,
                ChunkFormat::JsonLines.as_str()
            )),
            "{json}"
        );
        assert_eq!(
            ChunkFormat::parse("json-elements"),
            Some(ChunkFormat::JsonElements)
        );
        assert_eq!(ChunkMessage::from_json(&json).unwrap(), m);
        // Uncompressed messages carry no compression field, as before it existed.
        assert!(!json.contains("compression"), "{json}");
        let gz = ChunkMessage {
            compression: Compression::Gzip,
            ..m.clone()
        };
        assert!(gz.to_json().contains(r#""compression":"gzip""#));
        assert_eq!(ChunkMessage::from_json(&gz.to_json()).unwrap(), gz);
        for (f, c) in [
            (ChunkFormat::JsonLines, Compression::None),
            (ChunkFormat::JsonElements, Compression::Zstd),
        ] {
            assert_eq!(
                crate::layout::parse_label(&crate::layout::label(f, c)),
                Some((f, c))
            );
        }
        assert_eq!(
            crate::layout::label(ChunkFormat::JsonLines, Compression::Gzip),
            "json-lines+gzip"
        );
        assert_eq!(crate::layout::parse_label("json-lines+none"), None);
    }

    #[test]
    fn per_range_numbers_the_chunks_and_keeps_the_rest() {
        let m = ChunkMessage {
            dataset: "recs".into(),
            version: "v".into(),
            bucket: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            size: 0,
            format: ChunkFormat::JsonElements,
            compression: Compression::Gzip,
            file: 0,
            chunk: 0,
            chunks: 0,
            start: 0,
            end: 0,
            buckets: 7,
            delta: false,
        };
        let all = m.per_range(&[(0, 10), (10, 25)]);
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[1].chunk, all[1].chunks, all[1].start, all[1].end),
            (1, 2, 10, 25)
        );
        assert_eq!(
            ChunkMessage {
                chunk: 0,
                chunks: 0,
                start: 0,
                end: 0,
                ..all[1].clone()
            },
            m
        );
    }
}
