//! A folder batch: the files a marker commits (`_SUCCESS`, empty or naming
//! its files, or a manifest), each planned as an object of its own, the
//! chunks of all of them in one plan.

use shared::db::protocol::{BatchFile, Span};

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
/// chunks of all of them in one plan.
pub(super) async fn plan<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    ev: &ObjectEvent,
    etag: &str,
    size: u64,
    folder: &str,
    kind: Marker,
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
            for f in &manifest.files {
                let key = folder::key_in(folder, &f.key);
                let Listed {
                    key,
                    etag: actual_etag,
                    size: actual_size,
                } = named_file(deps, &ev.bucket, key, "the manifest", &marker_uri).await?;
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
                });
            }
            (files, Some(manifest))
        }
        Marker::Success => match folder::success_files(folder, &body) {
            Some(named) => {
                let mut files = Vec::with_capacity(named.len());
                for key in named {
                    files.push(named_file(deps, &ev.bucket, key, "`_SUCCESS`", &marker_uri).await?);
                }
                (files, None)
            }
            None => (data_files(deps, &ev.bucket, folder, |_| true).await?, None),
        },
    };
    if files.is_empty() {
        return Err(fail(format!(
            "the folder s3://{}/{folder} holds no data files",
            ev.bucket
        )));
    }
    plan_files(deps, &ev.bucket, &files, manifest.as_ref(), &marker_uri).await
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

/// The file `key` that a marker (`who`, at `marker_uri`) names, with its ETag
/// and size; a missing one fails the batch.
async fn named_file<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    key: String,
    who: &str,
    marker_uri: &str,
) -> Result<Listed, PlanError> {
    match deps.source.head(bucket, &key).await {
        Ok((etag, size)) => Ok(Listed { key, etag, size }),
        Err(SourceError::Missing { .. }) => Err(PlanError::Folder {
            source_uri: marker_uri.to_string(),
            reason: format!("{who} names s3://{bucket}/{key}, which does not exist"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The files of a folder batch, each planned as it would be alone, their
/// chunks in one plan (checked against `manifest`'s format and rows, when
/// there is one; `marker_uri` names the marker in errors).
pub(super) async fn plan_files<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    bucket: &str,
    files: &[Listed],
    manifest: Option<&Manifest>,
    marker_uri: &str,
) -> Result<Batch, PlanError> {
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
    for f in files {
        let layout = match formats::plan(
            &deps.source,
            &deps.config,
            bucket,
            &f.key,
            &f.etag,
            f.size,
        )
        .await
        {
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
        batch
            .spans
            .extend(layout.ranges.iter().map(|&r| Span::of(i as u32, r)));
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
    if batch.files.is_empty() {
        let reason = format!("every one of the {} files is empty", files.len());
        return Err(PlanError::Folder {
            source_uri: marker_uri.to_string(),
            reason,
        });
    }
    Ok(batch)
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
