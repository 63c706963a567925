//! A folder batch: the files a marker commits (`_SUCCESS`, empty or naming
//! its files, or a manifest), each planned as an object of its own, the
//! chunks of all of them in one plan. Files are planned several at once, and
//! small files are packed several to a chunk ([`Packer`]), so a folder of
//! thousands of part files costs time and S3 calls in proportion to its
//! files, and tens of chunks, not thousands.

use std::time::Duration;

use futures::StreamExt;
use shared::db::protocol::{BatchFile, ChunkPlan, Span};

use super::register::Batch;
use crate::deps::PlannerDeps;
use crate::error::{ChunkError, PlanError};
use crate::formats;
use crate::layout::{ChunkFormat, Compression};
use crate::s3::event::ObjectEvent;
use crate::s3::folder::{self, Manifest, Marker};
use crate::s3::source::{read_range, Listed, ObjectSource, SourceError};

/// A folder batch committed by the marker `ev`: its files (from the marker,
/// or the folder's listing), each planned like an object of its own, the
/// chunks of all of them (about `chunk_bytes` each) in one plan.
pub(super) async fn plan<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    ev: &ObjectEvent,
    etag: &str,
    size: u64,
    folder: &str,
    kind: Marker,
    chunk_bytes: u64,
) -> Result<Batch, PlanError> {
    let marker_uri = ev.source();
    let fail = |reason: String| PlanError::Folder {
        source_uri: marker_uri.clone(),
        reason,
    };
    if size > folder::MAX_MARKER_BYTES {
        return Err(fail(format!(
            "the marker is {size} bytes, more than the {} read",
            folder::MAX_MARKER_BYTES
        )));
    }
    let body = if size == 0 {
        Vec::new()
    } else {
        read_range(&deps.source, &ev.bucket, &ev.key, etag, 0, size)
            .await?
            .into()
    };
    let (files, manifest) = match kind {
        Marker::Manifest => {
            let manifest = Manifest::parse(&body).map_err(fail)?;
            too_many(deps, manifest.files.len()).map_err(fail)?;
            let mut files = Vec::with_capacity(manifest.files.len());
            let mut missing = Vec::new();
            for f in &manifest.files {
                let key = folder::key_in(folder, &f.key);
                let Some(Listed {
                    key,
                    etag: actual_etag,
                    size: actual_size,
                    ..
                }) = named_file(deps, &ev.bucket, key.clone()).await?
                else {
                    missing.push(key);
                    continue;
                };
                if let Some(want) = f.size.filter(|&s| s != actual_size) {
                    return Err(fail(format!(
                        "the manifest says s3://{}/{key} has {want} bytes; it has {actual_size}",
                        ev.bucket
                    )));
                }
                if let Some(want) = f
                    .etag
                    .as_deref()
                    .filter(|e| shared::bare_etag(e) != shared::bare_etag(&actual_etag))
                {
                    return Err(fail(format!("the manifest says s3://{}/{key} has ETag {want}; it has {actual_etag} (changed since the manifest was written)", ev.bucket)));
                }
                files.push(Listed {
                    key,
                    etag: actual_etag,
                    size: actual_size,
                    modified_ms: None,
                });
            }
            not_all_in(
                deps,
                &ev.bucket,
                &marker_uri,
                "the manifest",
                &missing,
                files.len(),
            )?;
            (files, Some(manifest))
        }
        Marker::Success => match folder::success_files(folder, &body) {
            Some(named) => {
                let mut files = Vec::with_capacity(named.len());
                let mut missing = Vec::new();
                for key in named {
                    match named_file(deps, &ev.bucket, key.clone()).await? {
                        Some(f) => files.push(f),
                        None => missing.push(key),
                    }
                }
                not_all_in(
                    deps,
                    &ev.bucket,
                    &marker_uri,
                    "`_SUCCESS`",
                    &missing,
                    files.len(),
                )?;
                (files, None)
            }
            None => {
                let files = data_files(deps, &ev.bucket, folder, |_| true).await?;
                settled(deps, &ev.bucket, folder, &marker_uri, &files)?;
                (files, None)
            }
        },
    };
    if files.is_empty() {
        return Err(fail(format!(
            "the folder s3://{}/{folder} holds no data files",
            ev.bucket
        )));
    }
    plan_files(
        deps,
        &ev.bucket,
        &files,
        manifest.as_ref(),
        &marker_uri,
        chunk_bytes,
    )
    .await
}

/// The data files below `folder` (never a hidden name) that `wanted` keeps.
pub(super) async fn data_files<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    folder: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Listed>, PlanError> {
    let all = deps.source.list(bucket, folder).await?;
    Ok(all
        .into_iter()
        .filter(|o| folder::is_data(folder, &o.key) && wanted(&o.key))
        .collect())
}

/// The file `key` that a marker names, with its ETag and size; `None` while
/// it is not there (yet).
async fn named_file<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    key: String,
) -> Result<Option<Listed>, PlanError> {
    match deps.source.head(bucket, &key).await {
        Ok((etag, size)) => Ok(Some(Listed {
            key,
            etag,
            size,
            modified_ms: None,
        })),
        Err(SourceError::Missing { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A marker that names files (`who`: a manifest, an S3A `_SUCCESS`) waits
/// until every one of them is in: the `missing` ones make it look again.
fn not_all_in<S>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    marker_uri: &str,
    who: &str,
    missing: &[String],
    found: usize,
) -> Result<(), PlanError> {
    let Some(first) = missing.first() else {
        return Ok(());
    };
    Err(PlanError::NotYet {
        source_uri: marker_uri.to_string(),
        reason: format!(
            "{who} names {} files, {} of them not in the bucket yet (s3://{bucket}/{first}{})",
            missing.len() + found,
            missing.len(),
            if missing.len() > 1 { ", …" } else { "" }
        ),
        retry_in: deps.config.folders.settle,
    })
}

/// An empty `_SUCCESS` names no file, so its folder is planned once it has
/// been quiet: no data file written in the last `FS_FOLDER_SETTLE_S`. A
/// marker uploaded before its files (`aws s3 sync` sorts `_SUCCESS` first)
/// so waits for them instead of planning part of the batch.
fn settled<S>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    folder: &str,
    marker_uri: &str,
    files: &[Listed],
) -> Result<(), PlanError> {
    let settle = deps.config.folders.settle;
    let now = shared::now_ms();
    // S3 keeps whole seconds: a file of this second may be younger than it says.
    let newest = files.iter().filter_map(|f| f.modified_ms).max();
    let quiet = newest.map(|t| Duration::from_millis(now.saturating_sub(t + 999)));
    let reason = match quiet {
        None if files.is_empty() => {
            format!("the folder s3://{bucket}/{folder} holds no data files yet")
        }
        Some(q) if q < settle => format!(
            "{} data files so far, the last written {} ms ago; planned once none has come for {} s",
            files.len(),
            now.saturating_sub(newest.unwrap_or(now)),
            settle.as_secs()
        ),
        _ => return Ok(()),
    };
    let retry_in = settle.saturating_sub(quiet.unwrap_or_default());
    Err(PlanError::NotYet {
        source_uri: marker_uri.to_string(),
        reason,
        retry_in: retry_in.max(Duration::from_secs(1)),
    })
}

/// The files of a folder batch, each planned as it would be alone, their
/// chunks (about `chunk_bytes` each) in one plan (checked against
/// `manifest`'s format and rows, when there is one; `marker_uri` names the
/// marker in errors).
pub(super) async fn plan_files<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    files: &[Listed],
    manifest: Option<&Manifest>,
    marker_uri: &str,
    chunk_bytes: u64,
) -> Result<Batch, PlanError> {
    let config = shared::config::PlannerConfig {
        chunk_bytes,
        ..deps.config.clone()
    };
    let config = &config;
    too_many(deps, files.len()).map_err(|reason| PlanError::Folder {
        source_uri: marker_uri.to_string(),
        reason,
    })?;
    let mut batch = Batch {
        spans: Vec::new(),
        files: Vec::with_capacity(files.len()),
        format: String::new(),
        single_format: ChunkFormat::JsonLines,
        single_compression: Compression::None,
        estimated_users: 0,
        text_bytes: 0,
        size: 0,
        expected_records: manifest.and_then(|m| m.rows),
    };
    // Each file's plan is a read of its head (and a Parquet file's footer):
    // several at once, taken in file order.
    // (The futures are made first: a closure in the stream's type would not
    // be general enough over its borrows for a spawned task.)
    let plans: Vec<_> = files
        .iter()
        .map(|f| async move {
            let layout = formats::plan(&deps.source, config, bucket, &f.key, &f.etag, f.size).await;
            (f, layout)
        })
        .collect();
    let mut planned = futures::stream::iter(plans).buffered(PLAN_CONCURRENCY);
    let mut packer = Packer::new(chunk_bytes);
    while let Some((f, layout)) = planned.next().await {
        let layout = match layout {
            // An empty part (a Spark task with no rows, an empty input's
            // `.out`) holds nobody: the batch is its other files.
            Err(PlanError::Layout {
                reason: ChunkError::Empty,
                ..
            }) => continue,
            other => other?,
        };
        let i = batch.files.len();
        let label = crate::layout::label(layout.format, layout.compression);
        if let Some(want) = manifest.and_then(|m| m.format.as_deref()) {
            if label != want && layout.format.as_str() != want {
                let reason = format!(
                    "the manifest says the files are {want}; s3://{bucket}/{} is {label}",
                    f.key
                );
                return Err(PlanError::Folder {
                    source_uri: marker_uri.to_string(),
                    reason,
                });
            }
        }
        packer.add(i as u32, &layout.ranges, layout.text_bytes.max(f.size));
        batch.estimated_users += layout.estimated_users;
        batch.text_bytes += layout.text_bytes;
        batch.size += f.size;
        batch.format = match batch.format.as_str() {
            "" => label.clone(),
            same if same == label => label.clone(),
            _ => "mixed".to_string(),
        };
        batch.files.push(BatchFile {
            key: f.key.clone(),
            etag: f.etag.clone(),
            size: f.size,
            format: label,
        });
    }
    batch.spans = packer.finish();
    if batch.files.is_empty() {
        let reason = format!("every one of the {} files is empty", files.len());
        return Err(PlanError::Folder {
            source_uri: marker_uri.to_string(),
            reason,
        });
    }
    Ok(batch)
}

/// Files of a folder planned at once.
pub const PLAN_CONCURRENCY: usize = 16;

/// At most this many small files are packed into one chunk, so that a
/// chunk's reads stay few whatever the files' sizes.
pub const PACK_MAX_FILES: usize = 64;

/// Packs the spans of a folder's files into chunks, in file order: a file
/// planned as one span and smaller than the chunk size shares its chunk with
/// the small files next to it, up to the chunk size in bytes and
/// [`PACK_MAX_FILES`] files; a larger file keeps its own chunks.
#[derive(Debug)]
pub struct Packer {
    chunk_bytes: u64,
    chunks: Vec<ChunkPlan>,
    open: Vec<Span>,
    open_bytes: u64,
}

impl Packer {
    pub fn new(chunk_bytes: u64) -> Self {
        Packer {
            chunk_bytes,
            chunks: Vec::new(),
            open: Vec::new(),
            open_bytes: 0,
        }
    }

    /// Adds file `file`, planned as `ranges`, of about `bytes` bytes of text.
    pub fn add(&mut self, file: u32, ranges: &[(u64, u64)], bytes: u64) {
        match ranges {
            [range] if bytes < self.chunk_bytes => {
                if !self.open.is_empty()
                    && (self.open_bytes + bytes > self.chunk_bytes
                        || self.open.len() >= PACK_MAX_FILES)
                {
                    self.close();
                }
                self.open.push(Span::of(file, *range));
                self.open_bytes += bytes;
            }
            _ => {
                self.close();
                self.chunks
                    .extend(ranges.iter().map(|&r| ChunkPlan::from(Span::of(file, r))));
            }
        }
    }

    fn close(&mut self) {
        if !self.open.is_empty() {
            self.chunks.push(ChunkPlan(std::mem::take(&mut self.open)));
        }
        self.open_bytes = 0;
    }

    /// The plan: what each chunk reads.
    pub fn finish(mut self) -> Vec<ChunkPlan> {
        self.close();
        self.chunks
    }
}

/// A folder batch of more files than `FS_MAX_FOLDER_FILES` is refused before
/// any of them is read.
fn too_many<S>(deps: &PlannerDeps<S>, files: usize) -> Result<(), String> {
    let max = deps.config.limits.max_folder_files;
    if files as u64 > max {
        return Err(format!(
            "the batch has {files} files, more than FS_MAX_FOLDER_FILES ({max})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(plan: &[ChunkPlan]) -> Vec<Vec<(u32, u64, u64)>> {
        plan.iter()
            .map(|c| c.spans().iter().map(|s| (s.file, s.start, s.end)).collect())
            .collect()
    }

    #[test]
    fn small_files_share_chunks_up_to_the_chunk_size_and_large_ones_keep_their_own() {
        let mut p = Packer::new(1000);
        p.add(0, &[(0, 400)], 400);
        p.add(1, &[(0, 500)], 500);
        // Would pass 1,000 bytes: a new chunk.
        p.add(2, &[(0, 300)], 300);
        // Cut in two by its own plan: its own chunks, closing the open one.
        p.add(3, &[(0, 900), (900, 1800)], 1800);
        p.add(4, &[(0, 10)], 10);
        // One span, but not smaller than a chunk: alone.
        p.add(5, &[(0, 1000)], 1000);
        p.add(6, &[(0, 1)], 1);
        assert_eq!(
            texts(&p.finish()),
            vec![
                vec![(0, 0, 400), (1, 0, 500)],
                vec![(2, 0, 300)],
                vec![(3, 0, 900)],
                vec![(3, 900, 1800)],
                vec![(4, 0, 10)],
                vec![(5, 0, 1000)],
                vec![(6, 0, 1)],
            ]
        );
    }

    #[test]
    fn a_chunk_packs_at_most_pack_max_files() {
        let mut p = Packer::new(u64::MAX);
        let n = PACK_MAX_FILES as u32 * 2 + 1;
        for i in 0..n {
            p.add(i, &[(0, 1)], 1);
        }
        let plan = p.finish();
        let sizes: Vec<usize> = plan.iter().map(|c| c.spans().len()).collect();
        assert_eq!(sizes, vec![PACK_MAX_FILES, PACK_MAX_FILES, 1]);
        // Every file once, in order.
        let files: Vec<u32> = plan
            .iter()
            .flat_map(|c| c.spans().iter().map(|s| s.file))
            .collect();
        assert_eq!(files, (0..n).collect::<Vec<_>>());
    }
}
