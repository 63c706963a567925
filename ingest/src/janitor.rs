//! The janitor: retention, abandonment and orphan sweeps, on a schedule.
//!
//! No chunk waits for clean-up: the ingest that flips a version only flips
//! it. The janitor runs every few minutes (an EventBridge schedule on AWS, a
//! task of the local stack here) and, for every dataset that registered a
//! version, runs retention ([`shared::db::retention::gc`]: old backups,
//! superseded and failed versions, versions abandoned while ingesting), and
//! on a slower cadence sweeps data keys no version owns. It emits
//! `LiveVersionAgeSeconds` per dataset, the age of the live batch (from its
//! upload's event time), which the stale-data alarm watches.

use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::json;
use shared::db::protocol::Dataset;
use shared::db::retention;
use shared::keys;
use shared::metrics::{Metrics, Unit};
use tracing::{info, warn};

use crate::deps::JanitorDeps;

/// How often orphaned data keys are swept (a `SCAN` of every primary).
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What one run did, per dataset.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct DatasetReport {
    pub dataset: String,
    pub deleted: Vec<String>,
    pub abandoned: Vec<String>,
    pub orphan_keys: u64,
    /// Deltas dropped from the log: older than every version kept.
    pub deltas_trimmed: u64,
    /// Age of the live batch, by its upload's event time.
    pub live_age_s: Option<u64>,
    pub error: Option<String>,
}

/// One run over every dataset.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct JanitorReport {
    pub datasets: Vec<DatasetReport>,
    /// Whether this run swept orphaned keys.
    pub swept: bool,
}

/// Runs the janitor once over every dataset. A dataset whose clean-up fails
/// does not stop the others; the error is in its report (and the handler
/// fails the run).
pub async fn run_once(deps: &JanitorDeps) -> redis::RedisResult<JanitorReport> {
    let names: Vec<String> = deps.redis.clone().smembers(keys::datasets()).await?;
    run_for(deps, names).await
}

/// [`run_once`] over the named datasets only (a local stack that tests
/// share looks after its own test's).
pub async fn run_for(
    deps: &JanitorDeps,
    mut names: Vec<String>,
) -> redis::RedisResult<JanitorReport> {
    names.sort();
    // One sweep per cadence, whichever janitor gets there first.
    let sweep_ms = SWEEP_EVERY.as_millis() as u64;
    let swept: Option<String> = redis::cmd("SET")
        .arg(keys::janitor_sweep())
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(sweep_ms)
        .query_async(&mut deps.redis.clone())
        .await?;
    let mut report = JanitorReport {
        swept: swept.is_some(),
        ..Default::default()
    };
    let now = deps.redis.server_ms().await?;
    let metrics = Metrics::new(&deps.config.metrics_namespace);
    for name in names {
        let Ok(ds) = Dataset::new(&deps.redis, &name) else {
            continue;
        };
        let mut r = DatasetReport {
            dataset: name.clone(),
            ..Default::default()
        };
        let step = async {
            let gc = retention::gc(&ds, &deps.config.retention).await?;
            r.deleted = gc.deleted.into_iter().map(|(v, _)| v).collect();
            r.abandoned = gc.abandoned;
            r.deltas_trimmed = shared::db::deltas::trim_unneeded(&deps.redis, ds.keys()).await?;
            if report.swept {
                r.orphan_keys = retention::sweep_orphans(&deps.redis, ds.keys()).await?;
            }
            if let Some(live) = ds.live().await? {
                r.live_age_s = shared::version_id::event_ms(&live.version)
                    .map(|t| now.saturating_sub(t) / 1000);
            }
            redis::RedisResult::Ok(())
        }
        .await;
        if let Err(e) = step {
            warn!(dataset = %name, error = %e, "janitor: clean-up failed; the next run tries again");
            r.error = Some(e.to_string());
        }
        if let Some(age) = r.live_age_s {
            metrics.emit(
                &name,
                &[("LiveVersionAgeSeconds", age as f64, Unit::Seconds)],
                &[],
            );
        }
        if !r.deleted.is_empty() || !r.abandoned.is_empty() || r.orphan_keys > 0 {
            info!(dataset = %name, deleted = r.deleted.len(), abandoned = r.abandoned.len(), orphan_keys = r.orphan_keys, "janitor ran");
        }
        report.datasets.push(r);
    }
    Ok(report)
}

/// Lambda handler for the schedule: the event's content does not matter.
pub async fn handle(
    deps: &JanitorDeps,
    _event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let report = run_once(deps).await?;
    let failed: Vec<&str> = report
        .datasets
        .iter()
        .filter(|d| d.error.is_some())
        .map(|d| d.dataset.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(format!("clean-up failed for {}", failed.join(", ")).into());
    }
    Ok(json!(report))
}
