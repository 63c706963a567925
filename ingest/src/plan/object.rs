//! A batch of one object: planned by its format alone.

use shared::db::protocol::Span;

use super::register::Batch;
use crate::deps::PlannerDeps;
use crate::error::PlanError;
use crate::formats;
use crate::s3::event::ObjectEvent;
use crate::s3::source::ObjectSource;

/// A batch of one object, in chunks of about `chunk_bytes`.
pub(super) async fn plan<S: ObjectSource>(
    deps: &PlannerDeps<S>,
    ev: &ObjectEvent,
    etag: &str,
    size: u64,
    chunk_bytes: u64,
) -> Result<Batch, PlanError> {
    let config = shared::config::PlannerConfig {
        chunk_bytes,
        ..deps.config.clone()
    };
    let layout = formats::plan(&deps.source, &config, &ev.bucket, &ev.key, etag, size).await?;
    Ok(Batch {
        spans: layout
            .ranges
            .iter()
            .map(|&r| Span::from(r).into())
            .collect(),
        files: Vec::new(),
        format: crate::layout::label(layout.format, layout.compression),
        single_format: layout.format,
        single_compression: layout.compression,
        estimated_users: layout.estimated_users,
        text_bytes: layout.text_bytes,
        size,
        expected_records: None,
    })
}
