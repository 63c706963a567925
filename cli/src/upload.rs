//! `fsctl upload <file|folder> [--wait]`: put a batch into the bucket and
//! follow it until it settles (live, held, superseded or failed). A folder
//! is a folder batch: every data file goes up first, its commit marker
//! (`_SUCCESS` or `_manifest.json`, or an empty `_SUCCESS` when it has none)
//! last, so the batch is planned only once all of it is there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use shared::db::protocol::{self, State, VersionInfo};
use shared::db::store::Redis;

use crate::ctx::{print_json, Ctx};

/// When an upload goes in parts, and how large they are.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// Files from this size up are uploaded in parts.
    pub from: u64,
    /// Size of each part (the last one shorter).
    pub size: usize,
}

/// Size of each part of `fsctl upload`'s multipart uploads.
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// What `fsctl upload` does: files from 64 MiB up go in 16 MiB parts.
pub const PARTS: Parts = Parts {
    from: 64 * 1024 * 1024,
    size: PART_SIZE,
};

/// Puts `file` at `s3://bucket/key`, in parts as `parts` says, calling
/// `progress(bytes sent so far)`; returns the object's ETag.
pub async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &Path,
    parts: Parts,
    mut progress: impl FnMut(u64),
) -> Result<String> {
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size < parts.from {
        let body = ByteStream::from_path(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        let out = s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .with_context(|| format!("uploading to s3://{bucket}/{key}"))?;
        progress(size);
        return Ok(out.e_tag.unwrap_or_default());
    }
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .context("starting a multipart upload")?;
    let upload_id = created.upload_id.context("no upload id")?;
    let result = put_parts(s3, bucket, key, file, &upload_id, parts.size, &mut progress).await;
    match result {
        Ok(etag) => Ok(etag),
        Err(e) => {
            // Leave no half upload behind.
            let _ = s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            Err(e)
        }
    }
}

async fn put_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &Path,
    upload_id: &str,
    part_size: usize,
    progress: &mut impl FnMut(u64),
) -> Result<String> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(file).await?;
    let mut parts = Vec::new();
    let mut sent = 0u64;
    for number in 1.. {
        let mut buf = Vec::with_capacity(part_size);
        (&mut f)
            .take(part_size as u64)
            .read_to_end(&mut buf)
            .await?;
        if buf.is_empty() {
            break;
        }
        let len = buf.len() as u64;
        let out = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(buf))
            .send()
            .await
            .with_context(|| format!("uploading part {number}"))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        sent += len;
        progress(sent);
    }
    let done = s3
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .context("completing the multipart upload")?;
    Ok(done.e_tag.unwrap_or_default())
}

/// Finds the version planned for `s3://bucket/key` with `etag`.
pub async fn find_version(
    redis: &Redis,
    dataset: &str,
    source: &str,
    etag: &str,
) -> Result<Option<VersionInfo>> {
    let history = protocol::Dataset::new(redis, dataset)?.history().await?;
    Ok(history.into_iter().rev().take(20).find(|info| {
        info.source == source && shared::bare_etag(&info.etag) == shared::bare_etag(etag)
    }))
}

/// Waits until the upload's version settles (live, held, superseded or
/// failed); `progress(done, total)` is called while it ingests.
pub async fn wait(
    redis: &Redis,
    dataset: &str,
    source: &str,
    etag: &str,
    timeout: Duration,
    mut progress: impl FnMut(u32, u32),
) -> Result<VersionInfo> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = shared::db::rejected::find(redis, source, etag).await? {
            bail!("{source} was rejected by the planner: {}", r.reason);
        }
        if shared::keys::validate_dataset(dataset).is_err() {
            // No version can appear; only a rejection can.
        } else if let Some(info) = find_version(redis, dataset, source, etag).await? {
            progress(info.chunks_done, info.chunks);
            if !info.state.is_in_progress() {
                return Ok(info);
            }
        }
        if Instant::now() > deadline {
            bail!("{source} did not settle within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// A batch file, or a folder of them (a folder batch).
    file: PathBuf,
    /// Dataset (the key's first folder); default FS_DEFAULT_DATASET.
    #[arg(long)]
    dataset: Option<String>,
    /// Bucket; default FS_BUCKET.
    #[arg(long)]
    bucket: Option<String>,
    /// Wait for the version to go live (or fail, or be held).
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// The files of a folder batch under `dir`, as (path, key below the
/// folder), data first and the marker last; whether it brought its own
/// marker.
fn folder_files(dir: &Path) -> Result<(Vec<(PathBuf, String)>, bool)> {
    let mut data = Vec::new();
    let mut markers = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let rel = path
                .strip_prefix(dir)
                .expect("below dir")
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                if !rel
                    .split('/')
                    .any(|s| s.starts_with('_') || s.starts_with('.'))
                {
                    dirs.push(path);
                }
            } else if rel == ingest::s3::folder::SUCCESS || rel == ingest::s3::folder::MANIFEST {
                markers.push((path, rel));
            } else if ingest::s3::folder::is_data("", &rel) {
                data.push((path, rel));
            }
        }
    }
    data.sort_by(|a, b| a.1.cmp(&b.1));
    let has_marker = !markers.is_empty();
    // A manifest is the marker when both are there; `_SUCCESS` goes up first.
    markers.sort_by_key(|(_, rel)| rel == ingest::s3::folder::MANIFEST);
    data.extend(markers);
    Ok((data, has_marker))
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let Args {
        file,
        dataset,
        bucket,
        wait: follow,
        timeout,
    } = args;
    let json = ctx.json;
    let dataset = dataset.unwrap_or_else(|| ctx.config.default_dataset.clone());
    shared::keys::validate_dataset(&dataset)?;
    let bucket = bucket.unwrap_or_else(|| ctx.config.bucket.clone());
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .context("file has no name")?;
    let sdk = shared::boot::sdk_config().await;
    let s3 = ingest::s3::s3_client(&sdk);
    let started = Instant::now();
    let (source, etag) = if file.is_dir() {
        let (files, has_marker) = folder_files(&file)?;
        if files.iter().all(|(_, rel)| rel.starts_with('_')) {
            bail!("{} holds no data files", file.display());
        }
        let size: u64 = files
            .iter()
            .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        let prefix = format!("{dataset}/{name}/");
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(size)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "upload  {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .expect("template"),
        );
        let (mut before, mut etag) = (0, String::new());
        let count = files.len() + usize::from(!has_marker);
        for (i, (path, rel)) in files.iter().enumerate() {
            bar.set_message(format!("file {}/{count}", i + 1));
            let len = std::fs::metadata(path)?.len();
            etag = put(
                &s3,
                &bucket,
                &format!("{prefix}{rel}"),
                path,
                PARTS,
                |sent| bar.set_position(before + sent),
            )
            .await?;
            before += len;
        }
        if !has_marker {
            let key = format!("{prefix}{}", ingest::s3::folder::SUCCESS);
            let out = s3
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(ByteStream::from_static(b""))
                .send()
                .await
                .with_context(|| format!("uploading s3://{bucket}/{key}"))?;
            etag = out.e_tag.unwrap_or_default();
        }
        bar.finish_and_clear();
        if !json {
            println!("uploaded {} ({count} files, {size} bytes, the marker last) to s3://{bucket}/{prefix} in {} ms", file.display(), started.elapsed().as_millis());
        }
        (format!("s3://{bucket}/{prefix}"), etag)
    } else {
        let key = format!("{dataset}/{name}");
        let size = std::fs::metadata(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(size)
        };
        bar.set_style(
            ProgressStyle::with_template("upload  {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("template"),
        );
        let etag = put(&s3, &bucket, &key, &file, PARTS, |sent| {
            bar.set_position(sent)
        })
        .await?;
        bar.finish_and_clear();
        let source = format!("s3://{bucket}/{key}");
        if !json {
            println!(
                "uploaded {} ({size} bytes) to {source} in {} ms",
                file.display(),
                started.elapsed().as_millis()
            );
        }
        (source, etag)
    };
    if !follow {
        if json {
            print_json(&json!({"source": source, "etag": etag}))?;
        }
        return Ok(());
    }
    let redis = ctx.redis().await?;
    let chunks = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    chunks.set_style(
        ProgressStyle::with_template("ingest  {bar:40} {pos}/{len} chunks {elapsed}")
            .expect("template"),
    );
    let info = wait(
        &redis,
        &dataset,
        &source,
        &etag,
        Duration::from_secs(timeout),
        |done, total| {
            chunks.set_length(u64::from(total));
            chunks.set_position(u64::from(done));
        },
    )
    .await;
    chunks.finish_and_clear();
    let info = info?;
    if info.state == State::Failed && !json {
        bail!(
            "version {} failed: {}",
            info.version,
            info.reason.unwrap_or_default()
        );
    }
    if json {
        return print_json(&json!({
            "source": source, "version": info.version, "state": info.state.as_str(), "users": info.users,
            "reason": info.reason, "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    match info.state {
        State::Held => println!(
            "version {} is HELD: {} (fsctl promote {dataset} {})",
            info.version,
            info.reason.unwrap_or_default(),
            info.version
        ),
        _ => println!(
            "version {} is {} with {} users, {} ms after upload{}",
            info.version,
            info.state.as_str(),
            info.users,
            started.elapsed().as_millis(),
            info.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    }
    Ok(())
}
