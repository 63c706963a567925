//! A SageMaker Batch Transform job that ended: a completed job's output
//! folder is a folder batch; a failed or stopped one, a failed version.

use std::time::Instant;

use shared::db::protocol::Dataset;
use shared::version_id::{self, VersionSource};

use super::folder::{data_files, plan_files};
use super::register::{register_batch, replan, Identity, Planned};
use crate::deps::PlannerDeps;
use crate::error::PlanError;
use crate::s3::event::{dataset_of, TransformJob};
use crate::s3::source::ObjectSource;

/// A SageMaker Batch Transform job that ended: a completed job's `.out`
/// files under its output prefix are one folder batch of the dataset the
/// prefix is in; a failed or stopped job registers a failed version, so it
/// never goes live and shows in `status`.
pub(super) async fn plan<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    job: &TransformJob,
) -> Result<Planned, PlanError> {
    let started = Instant::now();
    let dataset = dataset_of(&job.prefix, &deps.config.default_dataset).to_string();
    let source_uri = format!("s3://{}/{}", job.bucket, job.prefix);
    let ds = Dataset::new(&deps.redis, &dataset).map_err(|reason| PlanError::Dataset {
        key: job.prefix.clone(),
        dataset: dataset.clone(),
        reason,
    })?;
    // The job's name stands for an ETag: a repeated event names the same version.
    let version = version_id::derive(&VersionSource {
        event_time: &job.time,
        sequencer: None,
        bucket: &job.bucket,
        key: &job.prefix,
        etag: &job.name,
    })
    .map_err(|reason| PlanError::Version {
        source_uri: source_uri.clone(),
        reason,
    })?;
    if let Some(existing) = ds.version_info(&version).await? {
        return replan(deps, &ds, existing).await;
    }
    let batch = if job.status != "Completed" {
        let why = job
            .failure
            .as_deref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default();
        Err(PlanError::Folder {
            source_uri: source_uri.clone(),
            reason: format!(
                "SageMaker transform job {} ended {}{why}",
                job.name, job.status
            ),
        })
    } else if job.prefix.matches('/').count() < 2 {
        let reason = format!("transform job {}'s S3OutputPath must be a folder inside a dataset folder (s3://bucket/<dataset>/<run>/)", job.name);
        Err(PlanError::Folder {
            source_uri: source_uri.clone(),
            reason,
        })
    } else {
        match data_files(deps, &job.bucket, &job.prefix, |key| key.ends_with(".out")).await {
            Ok(outs) if outs.is_empty() => Err(PlanError::Folder {
                source_uri: source_uri.clone(),
                reason: format!("transform job {} left no `.out` files there", job.name),
            }),
            Ok(outs) => {
                super::plan_dense(&deps.config, |chunk_bytes| {
                    plan_files(deps, &job.bucket, &outs, None, &source_uri, chunk_bytes)
                })
                .await
            }
            Err(e) => Err(e),
        }
    };
    let id = Identity {
        ds: &ds,
        version: &version,
        source_uri: &source_uri,
        bucket: &job.bucket,
        key: &job.prefix,
        etag: &job.name,
        size: 0,
        committed: Some(&job.prefix),
    };
    register_batch(deps, &id, batch, started).await
}
