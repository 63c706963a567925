//! # The planner Lambda: S3 ObjectCreated events in, chunk messages out
//!
//! For each new object it derives the version id from the event (so a repeated
//! event names the same version), decides the layout from the first bytes,
//! cuts the object into record-aligned user-range chunks, registers the
//! version, then sends one message per chunk. Running it twice for one event
//! re-sends the same chunks, which ingest treats as repeats.

//!
//! - [`object`]: a batch of one object.
//! - [`folder`]: a folder batch, committed by a marker (`_SUCCESS`, a manifest).
//! - [`sagemaker`]: a SageMaker Batch Transform job's output folder.
//! - [`delta`]: a delta, users corrected on the live version.
//! - [`register`]: a planned batch registered as a version (or a failed one),
//!   and a version planned before re-sent.
//! - [`send`]: chunk messages onto the chunks queue.

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};
use shared::config::PlannerConfig;
use shared::db::protocol::Dataset;
use shared::db::waiting::FolderState;
use shared::db::{rejected, waiting};
use shared::version_id::{self, VersionSource};
use tracing::{debug, error, info, warn};

use crate::deps::PlannerDeps;
use crate::error::PlanError;
use crate::s3::event::{parse_notification, recheck_body, Notification, ObjectEvent};
use crate::s3::folder::{self as folders, Upload};
use crate::s3::source::ObjectSource;

pub mod delta;
pub mod folder;
pub mod object;
pub mod register;
pub mod sagemaker;
pub mod send;

pub use register::Planned;
use register::{register_batch, replan, Identity};

/// Lambda handler for the events queue.
pub async fn handle<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    for msg in &event.payload.records {
        if let Err(e) = handle_message(deps, msg).await {
            let id = msg.message_id.clone().unwrap_or_default();
            if e.is_permanent() {
                error!(message_id = %id, error = %e, "dropping event that cannot be planned");
            } else {
                warn!(message_id = %id, error = %e, "planning failed; the event will be retried");
                response.add_failure(id);
            }
        }
    }
    Ok(response)
}

async fn handle_message<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    msg: &SqsMessage,
) -> Result<Vec<Planned>, PlanError> {
    let body = msg.body.as_deref().unwrap_or("");
    let events = match parse_notification(body)? {
        Notification::Test => {
            info!("ignoring s3:TestEvent");
            return Ok(Vec::new());
        }
        Notification::Records(r) => r,
        Notification::Transform(job) => return Ok(vec![sagemaker::plan(deps, &job).await?]),
        Notification::Recheck(ev) => {
            return Ok(plan_object(deps, &ev).await?.into_iter().collect())
        }
    };
    let mut out = Vec::new();
    for ev in events.iter().filter(|e| e.is_object_created()) {
        out.extend(plan_object(deps, ev).await?);
    }
    Ok(out)
}

/// Plans one upload: an object of its own, or a folder batch's marker,
/// registers its version with its plan and sends its chunk messages; a data
/// file of a folder batch is noted as waiting for its marker (`None`). An
/// event delivered again while its version is still ingesting re-sends the
/// stored plan, never a new one.
/// An upload that cannot be planned at all (no valid dataset, no version id)
/// is recorded as a rejected upload, so `status` and `fsctl upload --wait`
/// can say why at once.
pub async fn plan_object<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    ev: &ObjectEvent,
) -> Result<Option<Planned>, PlanError> {
    let result = plan(deps, ev).await;
    if let Err(e) = &result {
        if e.is_permanent() {
            rejected::record(&deps.redis, &ev.source(), &ev.etag, &e.to_string()).await?;
        }
    }
    result
}

async fn plan<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    ev: &ObjectEvent,
) -> Result<Option<Planned>, PlanError> {
    let started = Instant::now();
    let upload = folders::classify(&ev.key, &deps.config.default_dataset);
    let dataset = match upload {
        Upload::Ignored => {
            info!(source = %ev.source(), "not a batch file (a name starting with `_` or `.`, or a marker outside a batch folder): ignored");
            return Ok(None);
        }
        Upload::Object { dataset }
        | Upload::Part { dataset, .. }
        | Upload::Marker { dataset, .. }
        | Upload::Delta { dataset } => dataset.to_string(),
    };
    let ds = Dataset::new(&deps.redis, &dataset).map_err(|reason| PlanError::Dataset {
        key: ev.key.clone(),
        dataset: dataset.clone(),
        reason,
    })?;
    // An event without an ETag or a size (some sources omit them) is
    // completed by a HEAD, so a non-empty object is never taken for empty.
    let (etag, size) = match (ev.etag.is_empty(), ev.size) {
        (false, Some(size)) => (ev.etag.clone(), size),
        _ => deps.source.head(&ev.bucket, &ev.key).await?,
    };
    if let Upload::Delta { .. } = upload {
        return delta::plan(deps, &ds, ev, &etag, size).await.map(Some);
    }
    if let Upload::Part { folder, .. } = upload {
        match waiting::note(&deps.redis, ds.keys(), folder, &ev.key, size).await? {
            Some(FolderState::Committed {
                version: Some(version),
            }) => late_file(deps, &ds, ev, &etag, folder, &version).await?,
            _ => {
                debug!(%dataset, source = %ev.source(), %folder, "part of a folder batch: it goes live with its folder's `_SUCCESS` or `_manifest.json`")
            }
        }
        return Ok(None);
    }
    let version = version_id::derive(&VersionSource {
        event_time: &ev.event_time,
        sequencer: ev.sequencer.as_deref(),
        bucket: &ev.bucket,
        key: &ev.key,
        etag: &etag,
    })
    .map_err(|reason| PlanError::Version {
        source_uri: ev.source(),
        reason,
    })?;

    if let Some(existing) = ds.version_info(&version).await? {
        return replan(deps, &ds, existing).await.map(Some);
    }

    let (source_uri, batch) = match (&upload, ahead(deps, ev, &version)) {
        (_, Some(too_far)) => (ev.source(), Err(too_far)),
        (&Upload::Marker { folder, kind, .. }, None) => {
            let batch = plan_dense(&deps.config, |chunk_bytes| {
                folder::plan(deps, ev, &etag, size, folder, kind, chunk_bytes)
            })
            .await;
            let batch = match batch {
                Err(PlanError::NotYet {
                    source_uri,
                    reason,
                    retry_in,
                }) => match settle(deps, &ds, ev, folder, &version, &reason, retry_in).await? {
                    None => return Ok(None),
                    Some(waited) => Err(PlanError::Folder {
                        source_uri,
                        reason: format!("after {} s: {reason}", waited.as_secs()),
                    }),
                },
                other => other,
            };
            (format!("s3://{}/{folder}", ev.bucket), batch)
        }
        _ => {
            let batch = plan_dense(&deps.config, |chunk_bytes| {
                object::plan(deps, ev, &etag, size, chunk_bytes)
            })
            .await;
            (ev.source(), batch)
        }
    };
    let committed = match upload {
        Upload::Marker { folder, .. } => Some(folder),
        _ => None,
    };
    let id = Identity {
        ds: &ds,
        version: &version,
        source_uri: &source_uri,
        bucket: &ev.bucket,
        key: &ev.key,
        etag: &etag,
        size,
        committed,
    };
    register_batch(deps, &id, batch, started).await.map(Some)
}

/// Users a chunk holds per bucket of its version, at least, once a batch is
/// large: ingest writes a bucket's users of one round with one HSET, and a
/// round never spans chunks, so a chunk of fewer users than the version has
/// buckets costs Redis nearly an HSET per user (0.93 at 10M users in 8 MiB
/// chunks, against 0.52 at 1M: the whole of the slowdown at scale).
pub const CHUNK_USERS_PER_BUCKET: u64 = 2;

/// Chunks grow past `FS_CHUNK_BYTES` for bucket density up to this size
/// (100M users of 130 bytes want 410 MB chunks). Ingest streams a chunk
/// (its memory is its rounds', not the chunk's), reading and parsing about
/// 100 MB/s: a chunk this size is seconds of the ingest Lambda's 300.
pub const MAX_DENSE_CHUNK_BYTES: u64 = 1 << 30;

/// Below this many buckets (640,000 users at 64 a bucket) `FS_CHUNK_BYTES`
/// chunks already hold several users a bucket.
const DENSE_FROM_BUCKETS: u32 = 10_000;

/// The chunk size at which `batch`'s chunks each hold about
/// [`CHUNK_USERS_PER_BUCKET`] users per bucket, when that is larger than
/// the configured size; `None` when the batch's plan stands as it is.
fn dense_chunk_bytes(config: &PlannerConfig, batch: &register::Batch) -> Option<u64> {
    dense_chunk_bytes_for(
        config,
        batch.estimated_users,
        batch.text_bytes,
        batch.spans.len(),
    )
}

/// A batch planned by `plan_at` at the configured chunk size, and planned
/// again at [`dense_chunk_bytes`] when it is large enough to need it.
async fn plan_dense<F, Fut>(
    config: &PlannerConfig,
    plan_at: F,
) -> Result<register::Batch, PlanError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<register::Batch, PlanError>>,
{
    let batch = plan_at(config.chunk_bytes).await;
    match batch
        .as_ref()
        .ok()
        .and_then(|b| dense_chunk_bytes(config, b))
    {
        Some(bytes) => plan_at(bytes).await,
        None => batch,
    }
}

/// [`dense_chunk_bytes`] for a plan of `chunks` chunks over about `users`
/// users in `text_bytes` bytes of text.
pub fn dense_chunk_bytes_for(
    config: &PlannerConfig,
    users: u64,
    text_bytes: u64,
    chunks: usize,
) -> Option<u64> {
    let buckets = shared::keys::bucket_count(users, config.users_per_bucket);
    if buckets < DENSE_FROM_BUCKETS || chunks < 2 || users == 0 {
        return None;
    }
    let per_user = text_bytes as f64 / users as f64;
    let want = (per_user * (CHUNK_USERS_PER_BUCKET * u64::from(buckets)) as f64) as u64;
    let want = want.min(MAX_DENSE_CHUNK_BYTES);
    (want > config.chunk_bytes).then_some(want)
}

/// An upload whose event time is further ahead of the clock than
/// `FS_MAX_EVENT_AHEAD_S` fails: versions are ordered by event time, so it
/// would outrank every upload after it until the clock caught up.
fn ahead<S>(deps: &PlannerDeps<S>, ev: &ObjectEvent, version: &str) -> Option<PlanError> {
    let at = version_id::event_ms(version)?;
    let now = shared::now_ms();
    let max = deps.config.limits.max_event_ahead;
    let ahead = Duration::from_millis(at.saturating_sub(now));
    (ahead > max).then(|| PlanError::Limit {
        source_uri: ev.source(),
        reason: format!(
            "its event time {} is {} s ahead of the clock, more than FS_MAX_EVENT_AHEAD_S ({} s): it would outrank every later upload",
            ev.event_time,
            ahead.as_secs(),
            max.as_secs()
        ),
    })
}

/// A marker whose folder is not complete yet is sent back to the events
/// queue, to be looked at again in `retry_in` (SQS holds it: no Lambda
/// waits), and the folder shows as settling. Past `FS_FOLDER_WAIT_MAX_S`
/// from the marker's event time it has waited long enough: how long is
/// returned, and its version fails.
async fn settle<S>(
    deps: &PlannerDeps<S>,
    ds: &Dataset,
    ev: &ObjectEvent,
    folder: &str,
    version: &str,
    reason: &str,
    retry_in: Duration,
) -> Result<Option<Duration>, PlanError> {
    let since = version_id::event_ms(version).unwrap_or_else(shared::now_ms);
    let waited = Duration::from_millis(shared::now_ms().saturating_sub(since));
    let Some(queue) = deps.config.events_queue_url.as_deref() else {
        return Ok(Some(waited));
    };
    if waited + retry_in > deps.config.folders.max {
        return Ok(Some(waited));
    }
    // SQS delays a message by at most 15 minutes.
    let delay = retry_in.as_secs().clamp(1, 900) as i32;
    deps.sqs
        .send_message()
        .queue_url(queue)
        .message_body(recheck_body(ev))
        .delay_seconds(delay)
        .send()
        .await
        .map_err(|e| PlanError::Send(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
    waiting::settling(&deps.redis, ds.keys(), folder, reason).await?;
    info!(dataset = %ds.name(), %folder, %reason, delay_s = delay, "folder not complete yet: looking again later");
    Ok(None)
}

/// A data file that lands after its folder was planned as `version`: it is
/// not in the version, so a version not live yet fails (rather than go live
/// without it); a live one stays, and the file is logged as late.
async fn late_file<S>(
    deps: &PlannerDeps<S>,
    ds: &Dataset,
    ev: &ObjectEvent,
    etag: &str,
    folder: &str,
    version: &str,
) -> Result<(), PlanError> {
    // A version that failed (or is gone) has nothing to protect.
    let Some(info) = ds
        .version_info(version)
        .await?
        .filter(|i| i.state != shared::db::protocol::State::Failed)
    else {
        return Ok(());
    };
    // The listing that planned the folder saw this very file: not late.
    if info
        .files
        .iter()
        .any(|f| f.key == ev.key && shared::bare_etag(&f.etag) == shared::bare_etag(etag))
    {
        return Ok(());
    }
    let reason = format!(
        "{} landed after its folder s3://{}/{folder} was planned, so the version would miss it: upload the folder's marker last, or list its files in a `_manifest.json`",
        ev.source(),
        ev.bucket
    );
    if info.state.is_in_progress() {
        ds.fail(version, &reason).await?;
        warn!(dataset = %ds.name(), %version, %reason, "late file: version failed");
    } else {
        // Shown by `fsctl status` among the uploads that made no version.
        rejected::record(&deps.redis, &ev.source(), etag, &reason).await?;
        warn!(dataset = %ds.name(), %version, state = info.state.as_str(), %reason, "late file: not in the version");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ChunkFormat, Compression};
    use shared::db::protocol::{ChunkPlan, Span};

    fn batch(users: u64, chunks: u64) -> register::Batch {
        register::Batch {
            spans: (0..chunks)
                .map(|i| ChunkPlan::from(Span::of(0, (i, i + 1))))
                .collect(),
            files: Vec::new(),
            format: "json-lines".into(),
            single_format: ChunkFormat::JsonLines,
            single_compression: Compression::None,
            estimated_users: users,
            text_bytes: users * 130,
            size: users * 130,
            expected_records: None,
        }
    }

    #[test]
    fn chunks_grow_with_the_bucket_count_once_a_batch_is_large() {
        let config = shared::config::Config::from_lookup(|_| None)
            .unwrap()
            .planner("q");
        let (chunk, per_bucket) = (config.chunk_bytes, config.users_per_bucket);
        assert_eq!((chunk, per_bucket), (8 << 20, 64));
        // Up to a million users, 8 MiB chunks hold several users a bucket.
        assert_eq!(dense_chunk_bytes(&config, &batch(200_000, 4)), None);
        assert_eq!(dense_chunk_bytes(&config, &batch(1_000_000, 16)), None);
        // At 10M, two users a bucket: 156,250 buckets × 2 × 130 bytes.
        assert_eq!(
            dense_chunk_bytes(&config, &batch(10_000_000, 156)),
            Some(156_250 * 2 * 130)
        );
        // At 100M too (406 MB chunks); at 1B, up to the largest chunk.
        assert_eq!(
            dense_chunk_bytes(&config, &batch(100_000_000, 1560)),
            Some(1_562_500 * 2 * 130)
        );
        assert_eq!(
            dense_chunk_bytes(&config, &batch(1_000_000_000, 15600)),
            Some(MAX_DENSE_CHUNK_BYTES)
        );
        // One chunk (a compressed object) stays one chunk.
        assert_eq!(dense_chunk_bytes(&config, &batch(10_000_000, 1)), None);
    }
}
