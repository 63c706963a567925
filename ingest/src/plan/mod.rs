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

use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};
use shared::db::protocol::Dataset;
use shared::db::{rejected, waiting};
use shared::version_id::{self, VersionSource};
use tracing::{debug, error, info, warn};

use crate::deps::PlannerDeps;
use crate::error::PlanError;
use crate::s3::event::{parse_notification, Notification, ObjectEvent};
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
        waiting::note(&deps.redis, ds.keys(), folder, &ev.key, size).await?;
        debug!(%dataset, source = %ev.source(), %folder, "part of a folder batch: it goes live with its folder's `_SUCCESS` or `_manifest.json`");
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
            let batch = folder::plan(deps, ev, &etag, size, folder, kind).await;
            (format!("s3://{}/{folder}", ev.bucket), batch)
        }
        _ => (ev.source(), object::plan(deps, ev, &etag, size).await),
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

/// An upload whose event time is further ahead of the clock than
/// `FS_MAX_EVENT_AHEAD_S` fails: versions are ordered by event time, so it
/// would outrank every upload after it until the clock caught up.
fn ahead<S>(deps: &PlannerDeps<S>, ev: &ObjectEvent, version: &str) -> Option<PlanError> {
    let at = version_id::event_ms(version)?;
    let now = shared::now_ms();
    let max = deps.config.limits.max_event_ahead;
    let ahead = std::time::Duration::from_millis(at.saturating_sub(now));
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
