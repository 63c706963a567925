//! `fsctl status`: the read model ([`crate::view`]) of one dataset or all,
//! printed for a person or as JSON.

use anyhow::Result;

use crate::ctx::{ago, datasets_or_all, print_json, Ctx};
use crate::names::Shortener;
use crate::view::{dataset_status, queue_depths, Status, VersionView};

/// `fsctl status [dataset]`.
#[derive(clap::Args)]
pub struct Args {
    /// One dataset (default: all).
    dataset: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let redis = ctx.redis().await?;
    let mut datasets = Vec::new();
    for d in &datasets_or_all(&redis, args.dataset).await? {
        datasets.push(dataset_status(&redis, d).await?);
    }
    let queues = queue_depths(&ctx.sqs().await, &ctx.config.queues).await;
    let rejected = shared::db::rejected::recent(&redis, 10).await?;
    let st = Status {
        datasets,
        queues,
        rejected,
    };
    if ctx.json {
        return print_json(&st);
    }
    print_status(&st, ctx.config.retention.abandon_after, ctx.full);
    Ok(())
}

/// `source`, and its file count when it is a folder batch.
fn source_of(v: &VersionView) -> String {
    match v.files {
        0 => v.source.clone(),
        n => format!("{} ({n} files, {})", v.source, v.format),
    }
}

fn print_status(st: &Status, abandon_after: std::time::Duration, full: bool) {
    for d in &st.datasets {
        println!("dataset {}", d.dataset);
        let listed = [&d.backups, &d.ingesting, &d.held, &d.failed, &d.superseded];
        let named = d
            .live
            .iter()
            .chain(listed.into_iter().flatten())
            .map(|v| v.version.as_str());
        let named = named
            .chain(d.log.iter().map(|e| e.version.as_str()))
            .chain(d.rolled_back_from.as_deref());
        let short = if full {
            Shortener::full()
        } else {
            Shortener::new(named)
        };
        let s = |v: &str| short.short(v).to_string();
        match &d.live {
            Some(l) => println!(
                "  live       {}  {} users, {} deltas, since {}{}",
                s(&l.version),
                l.users,
                l.deltas,
                d.live_since_ms.map(ago).unwrap_or_default(),
                d.rolled_back_from
                    .as_ref()
                    .map(|f| format!("  (rolled back from {})", s(f)))
                    .unwrap_or_default()
            ),
            None => println!("  live       none"),
        }
        let ds = &d.deltas;
        if ds.applied_since_live > 0 || ds.last.is_some() {
            println!(
                "  deltas     {} applied since live ({} users){}",
                ds.applied_since_live,
                ds.users_since_live,
                ds.last
                    .as_ref()
                    .map(|l| format!(
                        ", last {} {}",
                        l.source,
                        l.applied_ms.map(ago).unwrap_or_default()
                    ))
                    .unwrap_or_default()
            );
        }
        for x in &ds.applying {
            println!(
                "  delta      applying {}  since {}",
                x.source,
                ago(x.created_ms)
            );
        }
        for x in &ds.failed {
            println!(
                "  DELTA FAILED {}  {}: nothing of it applied",
                x.source,
                x.reason.as_deref().unwrap_or("unknown reason")
            );
        }
        for b in &d.backups {
            println!(
                "  {:<10} {}  {} users, {} deltas",
                if b.state == "rolled_back" {
                    "rolled back"
                } else {
                    "backup"
                },
                s(&b.version),
                b.users,
                b.deltas
            );
        }
        for v in &d.ingesting {
            println!(
                "  ingesting  {}  chunks {}/{}, started {}, ~{} MiB  {}",
                s(&v.version),
                v.chunks_done,
                v.chunks,
                ago(v.created_ms),
                v.est_bytes >> 20,
                source_of(v)
            );
        }
        for v in &d.held {
            println!(
                "  HELD       {}  {} users: {}  (fsctl promote {} {})",
                s(&v.version),
                v.users,
                v.reason.as_deref().unwrap_or(""),
                d.dataset,
                s(&v.version)
            );
        }
        for v in &d.failed {
            println!(
                "  failed     {}  {}: {}",
                s(&v.version),
                source_of(v),
                v.reason.as_deref().unwrap_or("unknown reason")
            );
        }
        for w in &d.waiting {
            if let Some(reason) = &w.settling {
                println!(
                    "  settling   {}  {} files so far, {} MiB, marker in {}: {reason}",
                    w.folder,
                    w.files,
                    w.bytes >> 20,
                    ago(w.since_ms)
                );
                continue;
            }
            let overdue =
                shared::now_ms().saturating_sub(w.since_ms) > abandon_after.as_millis() as u64;
            println!(
                "  {}    {}  {} files, {} MiB, first {}: no `_SUCCESS` or `_manifest.json` yet{}",
                if overdue { "WAITING" } else { "waiting" },
                w.folder,
                w.files,
                w.bytes >> 20,
                ago(w.since_ms),
                if overdue {
                    format!(" (over {} s: did the job finish?)", abandon_after.as_secs())
                } else {
                    String::new()
                }
            );
        }
        for v in &d.superseded {
            println!(
                "  superseded {}  {}",
                s(&v.version),
                v.reason.as_deref().unwrap_or("")
            );
        }
        for e in d.log.iter().take(5) {
            println!(
                "  log        {} {} {}{}",
                ago(e.at_ms),
                e.event,
                s(&e.version),
                e.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
    }
    for r in &st.rejected {
        println!(
            "REJECTED upload {} {}: {}",
            r.source,
            ago(r.at_ms),
            r.reason
        );
    }
    let q = &st.queues;
    let n = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    println!(
        "queues: events {}, events DLQ {}, chunks {}, chunks DLQ {}",
        n(q.events),
        n(q.events_dlq),
        n(q.chunks),
        n(q.chunks_dlq)
    );
}
