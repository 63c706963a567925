//! The chunk message: what the planner sends and each ingest invocation reads.

use serde::{Deserialize, Serialize};

use crate::layout::{ChunkFormat, Compression};
use shared::db::protocol::{BatchFile, ChunkPlan, Span, VersionInfo};

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
    /// A packed chunk's further spans, each a whole small file of the
    /// folder batch, read after the first; their objects are the version
    /// record's files. Absent when the chunk reads one span.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<Span>,
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

    /// One message per chunk of a plan, numbered in order: a copy of `self`
    /// reading the chunk's first span, from the span's file of `files` when
    /// the batch is a folder's, and naming the rest in `more` (`None` if a
    /// span names a file `files` lacks, or a file's format label is not one).
    pub fn for_plan(&self, plan: &[ChunkPlan], files: &[BatchFile]) -> Option<Vec<ChunkMessage>> {
        let chunks = plan.len() as u32;
        let mut out = Vec::with_capacity(plan.len());
        for (i, reads) in plan.iter().enumerate() {
            let (first, more) = reads.spans().split_first()?;
            let m = ChunkMessage {
                chunk: i as u32,
                chunks,
                more: more.to_vec(),
                ..self.reading(*first, files)?
            };
            out.push(m);
        }
        Some(out)
    }

    /// A copy of `self` reading only `span`: of its file of `files` when
    /// the batch is a folder's, else of `self`'s own object.
    fn reading(&self, span: Span, files: &[BatchFile]) -> Option<ChunkMessage> {
        let mut m = ChunkMessage {
            file: span.file,
            start: span.start,
            end: span.end,
            more: Vec::new(),
            ..self.clone()
        };
        if !files.is_empty() {
            let f = files.get(span.file as usize)?;
            (m.format, m.compression) = crate::layout::parse_label(&f.format)?;
            (m.key, m.etag, m.size) = (f.key.clone(), f.etag.clone(), f.size);
        }
        Some(m)
    }

    /// What this message says its chunk reads.
    pub fn plan(&self) -> ChunkPlan {
        let first = Span {
            file: self.file,
            start: self.start,
            end: self.end,
        };
        ChunkPlan(
            std::iter::once(first)
                .chain(self.more.iter().copied())
                .collect(),
        )
    }

    /// The chunk as one single-span message per span it reads, in order: the
    /// message itself, then each packed file of `files` (`None` if one names
    /// a file `files` lacks).
    pub fn parts(&self, files: &[BatchFile]) -> Option<Vec<ChunkMessage>> {
        let first = ChunkMessage {
            more: Vec::new(),
            ..self.clone()
        };
        let mut out = vec![first];
        for &span in &self.more {
            out.push(self.reading(span, files)?);
        }
        Some(out)
    }

    /// The chunk messages of a registered version, from its record and its
    /// stored plan: what a re-plan or a resume sends, so that every message
    /// matches the plan whatever the configuration is now.
    pub fn for_version(
        dataset: &str,
        info: &VersionInfo,
        plan: &[ChunkPlan],
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
            more: Vec::new(),
            buckets: info.buckets,
            delta: false,
        };
        template.for_plan(plan, &info.files)
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
            more: Vec::new(),
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
            more: Vec::new(),
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

    #[test]
    fn a_packed_chunk_names_its_files_and_splits_into_one_message_each() {
        let file = |i: u32, format: &str| BatchFile {
            key: format!("run/part-{i}"),
            etag: format!("\"e{i}\""),
            size: 100 + u64::from(i),
            format: format.into(),
        };
        let files = vec![
            file(0, "json-lines"),
            file(1, "parquet"),
            file(2, "csv+gzip"),
        ];
        let template = ChunkMessage {
            dataset: "recs".into(),
            version: "v".into(),
            bucket: "b".into(),
            key: "run/_SUCCESS".into(),
            etag: "m".into(),
            size: 0,
            format: ChunkFormat::JsonLines,
            compression: Compression::None,
            file: 0,
            chunk: 0,
            chunks: 0,
            start: 0,
            end: 0,
            more: Vec::new(),
            buckets: 3,
            delta: false,
        };
        let plan = vec![ChunkPlan(vec![
            Span::of(0, (0, 100)),
            Span::of(1, (0, 1)),
            Span::of(2, (0, 102)),
        ])];
        let messages = template.for_plan(&plan, &files).unwrap();
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert_eq!(
            (m.key.as_str(), m.chunks, m.more.len()),
            ("run/part-0", 1, 2)
        );
        assert_eq!(m.plan(), plan[0]);
        // The further spans travel as the plan writes them, and come back.
        assert!(
            m.to_json().contains(r#""more":["0-1@1","0-102@2"]"#),
            "{}",
            m.to_json()
        );
        assert_eq!(&ChunkMessage::from_json(&m.to_json()).unwrap(), m);
        let parts = m.parts(&files).unwrap();
        let seen: Vec<_> = parts
            .iter()
            .map(|p| {
                (
                    p.key.as_str(),
                    p.etag.as_str(),
                    p.format,
                    p.compression,
                    p.size,
                    p.plan(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    "run/part-0",
                    "\"e0\"",
                    ChunkFormat::JsonLines,
                    Compression::None,
                    100,
                    Span::of(0, (0, 100)).into()
                ),
                (
                    "run/part-1",
                    "\"e1\"",
                    ChunkFormat::Parquet,
                    Compression::None,
                    101,
                    Span::of(1, (0, 1)).into()
                ),
                (
                    "run/part-2",
                    "\"e2\"",
                    ChunkFormat::Csv,
                    Compression::Gzip,
                    102,
                    Span::of(2, (0, 102)).into()
                ),
            ]
        );
        // A span naming a file the record lacks is no message.
        assert_eq!(m.parts(&files[..2]), None);
    }
}
