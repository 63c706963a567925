//! Batches the tests upload, written by fsctl's generator (the same one
//! operators use), and small shapes the tests name.

use fsctl::generate::{self, Options};
use shared::db::protocol::{ChunkPlan, Span};

/// The batch fsctl's generator writes for `opts`.
pub fn batch(opts: &Options) -> Vec<u8> {
    let mut out = Vec::new();
    generate::generate(opts, &mut out).expect("generating a batch");
    out
}

/// `n` users of 5 items each, as JSON Lines, from `seed`.
pub fn users(n: u64, seed: u64) -> Vec<u8> {
    batch(&Options {
        users: n,
        items: 5,
        seed,
        ..Options::default()
    })
}

/// A plan of one object's byte ranges.
pub fn spans_of(ranges: &[(u64, u64)]) -> Vec<ChunkPlan> {
    ranges.iter().map(|&r| Span::from(r).into()).collect()
}

/// The path of one of the workspace's debug binaries (`fsctl`, `ingest`).
pub fn binary(name: &str) -> String {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    format!("{dir}/debug/{name}")
}
