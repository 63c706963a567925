//! A sample batch on local disk, sized as ingest would store it: each file
//! planned and read by its own format, each record encoded and packed by the
//! same writer, and the stored size of each user kept (not written
//! anywhere). What `fsctl capacity` predicts memory from, so its figures are
//! our encoder's, not a guess.

use std::path::Path;

use shared::config::Config;
use shared::sizing::UserSize;

use crate::error::{IngestError, PlanError};
use crate::formats;
use crate::s3::file::FileSource;
use crate::s3::messages::ChunkMessage;
use crate::s3::source::ObjectSource;
use crate::write::{Round, Sink};

/// What a sample held.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Each user read, with its stored value's size.
    pub users: Vec<UserSize>,
    /// Records that would be refused.
    pub bad: u64,
    /// Files read, and the bytes of the chunks read from them (the part of
    /// the batch that holds the users read).
    pub files: usize,
    pub bytes: u64,
    /// The files' format labels, as a version record would say them.
    pub format: String,
}

/// Why a sample could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} holds no data files")]
    Empty(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Keeps each user's id and stored size instead of writing them.
#[derive(Default)]
struct Sizes(Vec<UserSize>);

impl Sink for Sizes {
    fn take(&mut self, round: &mut Round) {
        self.0.extend(round.users().map(|(_, id, value)| UserSize {
            id: String::from_utf8_lossy(id).into_owned(),
            value_len: value.len() as u64,
        }));
        round.clear();
    }
}

/// Reads the batch at `path` (a file, or a folder batch's folder) as ingest
/// would, up to about `max_users` users, with `config`'s fields and limits.
pub async fn read(config: &Config, path: &Path, max_users: usize) -> Result<Sample, SampleError> {
    let io = |e| SampleError::Io(path.display().to_string(), e);
    let meta = std::fs::metadata(path).map_err(io)?;
    let (root, keys) = if meta.is_dir() {
        let source = FileSource::new(path);
        let listed = source.list("local", "").await.map_err(IngestError::from)?;
        let keys: Vec<(String, u64)> = listed
            .into_iter()
            .filter(|f| crate::s3::folder::is_data("", &f.key))
            .map(|f| (f.key, f.size))
            .collect();
        (path.to_path_buf(), keys)
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (root, vec![(name, meta.len())])
    };
    if keys.is_empty() {
        return Err(SampleError::Empty(path.display().to_string()));
    }
    let source = FileSource::new(&root);
    let planner = config.planner("");
    let ingest = config.ingest();
    let mut sample = Sample::default();
    let mut labels: Vec<String> = Vec::new();
    for (key, size) in keys {
        if sample.users.len() >= max_users {
            break;
        }
        let layout = match formats::plan(&source, &planner, "local", &key, "local", size).await {
            Err(PlanError::Layout {
                reason: crate::error::ChunkError::Empty,
                ..
            }) => continue,
            other => other?,
        };
        sample.files += 1;
        let label = crate::layout::label(layout.format, layout.compression);
        if !labels.contains(&label) {
            labels.push(label);
        }
        let template = ChunkMessage {
            dataset: "sample".into(),
            version: "sample".into(),
            bucket: "local".into(),
            key: key.clone(),
            etag: "local".into(),
            size,
            format: layout.format,
            compression: layout.compression,
            file: 0,
            chunk: 0,
            chunks: 0,
            start: 0,
            end: 0,
            more: Vec::new(),
            buckets: 1,
            delta: false,
        };
        for msg in template.per_range(&layout.ranges) {
            if sample.users.len() >= max_users {
                break;
            }
            let writer = crate::load::read_chunk(&ingest, &source, &msg, Sizes::default()).await?;
            sample.bytes += msg.end - msg.start;
            sample.bad += writer.bad;
            sample.users.extend(writer.into_sink().0);
        }
    }
    sample.format = match labels.as_slice() {
        [one] => one.clone(),
        _ => "mixed".into(),
    };
    Ok(sample)
}
