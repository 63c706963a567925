//! `fsctl forget <dataset> <userId>…`: removes users from every version that
//! holds data (live, backups, held, superseded) now, and from every version
//! still loading before it can go live.
//!
//! A forget is a delta of tombstones at the server's time, logged like any
//! delta ([`shared::db::deltas`]): a version still loading replays it
//! before its flip, and a rollback or promotion to a version that lacks it
//! replays it first. A full batch produced after the forget (a later S3
//! event time) is newer than it and may bring a user back: upload a delta
//! with the tombstone, or forget again, if the batch still holds the user.

use anyhow::{bail, Result};
use shared::db::deltas::{self, Applied};
use shared::db::protocol::{Dataset, State};
use shared::record::validate_user_id;
use shared::version_id::{self, VersionSource};

use crate::ctx::{print_json, Ctx};
use crate::names::Shortener;
use crate::view;

#[derive(clap::Args)]
pub struct Args {
    dataset: String,
    /// The users to remove.
    #[arg(required = true)]
    users: Vec<String>,
}

/// What a forget did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Forgotten {
    pub dataset: String,
    /// The forget's id in the delta log.
    pub id: String,
    pub users: Vec<String>,
    /// Versions it was applied to now, and how many of the users each held.
    pub versions: Vec<(String, u64)>,
    /// Versions still loading: they drop the users before they go live.
    pub loading: Vec<String>,
}

/// Forgets `users` in `ds` (see the module's header).
pub async fn forget(ds: &Dataset, users: &[String]) -> Result<Forgotten> {
    for u in users {
        if let Err(e) = validate_user_id(u) {
            bail!("user id {u:?}: {e}");
        }
    }
    let redis = ds.redis();
    let now = redis.server_ms().await?;
    let id = version_id::derive(&VersionSource {
        event_time: &version_id::rfc3339_ms(now),
        sequencer: None,
        bucket: "fsctl",
        key: "forget",
        etag: &users.join("\n"),
    })?;
    // Logged first: a version that settles after this replays it.
    deltas::log_forget(redis, ds.keys(), &id, now, users).await?;
    let tombstones: Vec<(String, Option<Vec<u8>>)> =
        users.iter().map(|u| (u.clone(), None)).collect();
    let mut out = Forgotten {
        dataset: ds.name().to_string(),
        id: id.clone(),
        users: users.to_vec(),
        versions: Vec::new(),
        loading: Vec::new(),
    };
    let mut live_deletes = 0;
    for v in view::versions(redis, ds.name()).await? {
        let kept = matches!(
            v.state,
            State::Live | State::Backup | State::RolledBack | State::Held | State::Superseded
        ) && !v.data_deleted
            && !v.unwritten;
        if v.state.is_in_progress() {
            out.loading.push(v.version);
        } else if kept && version_id::event_ms(&v.version).is_some_and(|t| t < now) {
            let a = deltas::apply(
                redis,
                ds.keys(),
                &v.version,
                v.buckets,
                (&id, now),
                &tombstones,
            )
            .await?;
            deltas::replayed(redis, ds.keys(), &v.version, &id).await?;
            if v.state == State::Live {
                live_deletes = a.deletes;
            }
            out.versions.push((v.version, a.deletes));
        }
    }
    deltas::applied(
        redis,
        ds.keys(),
        &id,
        Applied {
            upserts: 0,
            deletes: live_deletes,
            bad: 0,
        },
    )
    .await?;
    Ok(out)
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let ds = Dataset::new(&redis, &args.dataset)?;
    let done = forget(&ds, &args.users).await?;
    if ctx.json {
        return print_json(&done);
    }
    let short = if ctx.full {
        Shortener::full()
    } else {
        Shortener::new(
            done.versions
                .iter()
                .map(|(v, _)| v.as_str())
                .chain(done.loading.iter().map(String::as_str)),
        )
    };
    println!(
        "{}: forgot {} user(s) in {} version(s) now, {} more before they go live",
        done.dataset,
        done.users.len(),
        done.versions.len(),
        done.loading.len()
    );
    for (v, deleted) in &done.versions {
        println!("  {}  {deleted} of the users removed", short.short(v));
    }
    for v in &done.loading {
        println!(
            "  {}  loading: removes them before it goes live",
            short.short(v)
        );
    }
    Ok(())
}
