//! Retention: keep what rollback and readers need, delete the rest.
//!
//! Kept: the live version; `FS_BACKUPS` most recent backups (versions that
//! were live, for rollback); held versions (waiting for an operator); versions
//! still ingesting; and any version that stopped being live less than
//! `FS_RETENTION_GRACE_S` ago, because a reader may still hold its pointer.
//! Deleted: superseded versions, failed ones, older backups, and versions
//! still ingesting after `FS_ABANDON_AFTER_S` (abandoned: failed first).
//!
//! A version's data keys are known from its bucket count, so deleting them
//! needs no scan: `UNLINK` (freed in the background, so reads do not stall),
//! in pipelined rounds per primary. Failed versions keep a small record, so
//! `status` can say why they failed ([`KEEP_FAILED`] of them per dataset).
//! [`sweep_orphans`] finds data keys of versions that have no record at all
//! (e.g. written by a chunk that outlived its version) by `SCAN` per primary.

use redis::{AsyncCommands, RedisResult};

use crate::config::Retention;
use crate::db::protocol::{self, Dataset, State, VersionInfo};
use crate::db::store::Redis;
use crate::keys::DatasetKeys;

/// Failed versions whose records are kept per dataset, newest first.
pub const KEEP_FAILED: usize = 10;

/// What a retention run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Versions whose data was deleted, with the state they had.
    pub deleted: Vec<(String, State)>,
    /// Versions abandoned (still ingesting too long) and failed by this run.
    pub abandoned: Vec<String>,
    /// Data keys unlinked.
    pub unlinked_keys: u64,
}

/// Runs retention for one dataset. Decisions use the Redis server's clock;
/// each deletion is claimed by [`Dataset::delete_version`], which checks the grace
/// again inside its script, so an operator move during the run, or a caller
/// whose clock is off, cannot delete a version a reader may still hold.
pub async fn gc(ds: &Dataset, policy: &Retention) -> RedisResult<GcReport> {
    let conn = ds.redis();
    let keys = ds.keys();
    let now = conn.server_ms().await?;
    let live = ds.live().await?.map(|p| p.version);
    // Ids read before the records: an id whose record is gone by then was
    // forgotten, never one registered meanwhile.
    let ids = ds.versions().await?;
    let mut infos: Vec<VersionInfo> = ds.history().await?;
    for v in ids
        .iter()
        .filter(|v| !infos.iter().any(|i| &i.version == *v))
    {
        let _: () = conn.clone().zrem(keys.versions(), v).await?;
    }
    let mut report = GcReport::default();
    for info in infos.iter_mut().filter(|i| i.state.is_in_progress()) {
        if now.saturating_sub(info.created_ms) > policy.abandon_after.as_millis() as u64 {
            let reason = abandoned_reason(policy);
            if ds
                .fail_if_older(&info.version, &reason, policy.abandon_after)
                .await?
                == Some(State::Failed)
            {
                info.state = State::Failed;
                info.reason = Some(reason);
                report.abandoned.push(info.version.clone());
            }
        }
    }
    // Newest first: version ids order like uploads.
    infos.sort_by(|a, b| b.version.cmp(&a.version));
    let grace = policy.grace.as_millis() as u64;
    let mut backups_kept = 0u32;
    for info in &infos {
        if Some(&info.version) == live.as_ref() {
            continue;
        }
        let in_grace = info
            .retired_ms
            .is_some_and(|r| now.saturating_sub(r) < grace);
        let delete = match info.state {
            State::Backup | State::RolledBack => {
                if backups_kept < policy.backups || in_grace {
                    backups_kept += u32::from(!in_grace || backups_kept < policy.backups);
                    false
                } else {
                    true
                }
            }
            State::Superseded | State::Deleting => !in_grace,
            State::Failed => !info.data_deleted,
            State::Live | State::Held | State::Ingesting | State::Validating => false,
        };
        if !delete {
            continue;
        }
        let Some(was) = ds
            .delete_version(&info.version, info.buckets, policy.grace)
            .await?
        else {
            continue;
        };
        report.unlinked_keys += u64::from(info.buckets);
        report.deleted.push((info.version.clone(), was));
    }
    // Records of failed versions: keep the newest few.
    let failed: Vec<&VersionInfo> = infos.iter().filter(|i| i.state == State::Failed).collect();
    for old in failed.iter().skip(KEEP_FAILED) {
        ds.forget(&old.version).await?;
    }
    Ok(report)
}

/// The reason an abandoned version fails with: it says what a redrive can
/// and cannot do for it.
pub fn abandoned_reason(policy: &Retention) -> String {
    format!(
        "{ABANDONED}: still ingesting after {} s; its data is deleted and dead-lettered chunks no longer complete it: upload the object again",
        policy.abandon_after.as_secs()
    )
}

/// How the reason of an abandoned version starts.
pub const ABANDONED: &str = "abandoned";

/// Unlinks data keys of the dataset whose version has no record, or one whose
/// data retention already deleted. Returns how many keys it removed.
pub async fn sweep_orphans(conn: &Redis, keys: &DatasetKeys) -> RedisResult<u64> {
    let prefix = keys.data_prefix();
    let found = conn.scan_match(&format!("{prefix}*")).await?;
    let mut verdicts: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut doomed = Vec::new();
    for key in found {
        let Some(rest) = key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        // `<version>:<bucket>`, or a bucket's delta times `<version>:<bucket>:t{…}`.
        let Some((version, _bucket)) = rest.split_once(':') else {
            continue;
        };
        let orphan = match verdicts.get(version) {
            Some(v) => *v,
            None => {
                let info = protocol::Dataset::of(conn, keys)
                    .version_info(version)
                    .await?;
                let v = info.is_none_or(|i| i.data_deleted);
                verdicts.insert(version.to_string(), v);
                v
            }
        };
        if orphan {
            let mut c = redis::cmd("UNLINK");
            c.arg(&key);
            doomed.push((conn.slot_of(&key), c));
        }
    }
    let n = doomed.len() as u64;
    conn.write_grouped(doomed).await?;
    Ok(n)
}
