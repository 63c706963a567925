//! Synthetic batches: N users, K ranked items each, with skewed item
//! popularity (a few items recommended to many users, a long tail to few),
//! integer or string ids, in any supported layout. Streams to a writer, so a
//! batch of any size needs constant memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Layout of a generated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// JSON Lines, one user a line.
    Jsonl,
    /// pandas `DataFrame.to_json(orient="table")`, like the original sample.
    Table,
    /// A top-level JSON array of records.
    Array,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    pub users: u64,
    pub items: usize,
    pub layout: Layout,
    pub string_ids: bool,
    /// Add a `scores` field aligned with the items.
    pub scores: bool,
    /// Size of the item catalogue.
    pub catalog: u64,
    /// First user id (ids run consecutively from it).
    pub first_user: u64,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { users: 1000, items: 10, layout: Layout::Jsonl, string_ids: false, scores: false, catalog: 50_000, first_user: 1, seed: 42 }
    }
}

/// The user id of the `n`-th user, as it appears in a batch.
pub fn user_id(opts: &Options, n: u64) -> String {
    let id = opts.first_user + n;
    if opts.string_ids { format!("\"u{id}\"") } else { id.to_string() }
}

/// Writes a batch to `out`.
pub fn generate(opts: &Options, out: &mut impl Write) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let (open, sep, close) = match opts.layout {
        Layout::Jsonl => ("", "\n", "\n"),
        Layout::Array => ("[", ",\n", "]\n"),
        Layout::Table => (
            "{\"schema\":{\"fields\":[{\"name\":\"index\",\"type\":\"integer\"},{\"name\":\"movieId\",\"type\":\"string\"},{\"name\":\"userId\",\"type\":\"integer\"}],\"primaryKey\":[\"index\"],\"pandas_version\":\"0.20.0\"},\"data\":[",
            ",",
            "]}\n",
        ),
    };
    out.write_all(open.as_bytes())?;
    let mut line = String::with_capacity(32 + opts.items * 8);
    let mut items: Vec<u64> = Vec::with_capacity(opts.items);
    for n in 0..opts.users {
        if n > 0 {
            out.write_all(sep.as_bytes())?;
        }
        items.clear();
        while items.len() < opts.items.min(opts.catalog as usize) {
            // Cubing a uniform draw skews popularity toward low ids.
            let u: f64 = rng.random();
            let item = 1 + (u * u * u * opts.catalog as f64) as u64;
            if !items.contains(&item) {
                items.push(item);
            }
        }
        line.clear();
        line.push_str("{\"userId\":");
        line.push_str(&user_id(opts, n));
        line.push_str(",\"movieId\":[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            if opts.string_ids {
                line.push_str(&format!("\"i{item}\""));
            } else {
                line.push_str(&item.to_string());
            }
        }
        line.push(']');
        if opts.scores {
            line.push_str(",\"scores\":[");
            let mut s = 1.0f64;
            for i in 0..items.len() {
                if i > 0 {
                    line.push(',');
                }
                s *= rng.random_range(0.80..0.99);
                line.push_str(&format!("{s:.4}"));
            }
            line.push(']');
        }
        line.push('}');
        out.write_all(line.as_bytes())?;
    }
    if opts.users > 0 || opts.layout != Layout::Jsonl {
        out.write_all(close.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(layout: Layout, string_ids: bool) -> String {
        let opts = Options { users: 50, items: 5, layout, string_ids, scores: true, ..Options::default() };
        let mut out = Vec::new();
        generate(&opts, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_layout_is_valid_json_with_distinct_ranked_items() {
        let jsonl = make(Layout::Jsonl, false);
        let records: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.len(), 50);
        let array: Vec<serde_json::Value> = serde_json::from_str(&make(Layout::Array, true)).unwrap();
        assert_eq!(array.len(), 50);
        assert_eq!(array[0]["userId"], "u1");
        let table: serde_json::Value = serde_json::from_str(&make(Layout::Table, false)).unwrap();
        let data = table["data"].as_array().unwrap();
        assert_eq!(data.len(), 50);
        for r in data {
            let items = r["movieId"].as_array().unwrap();
            assert_eq!(items.len(), 5);
            let mut ids: Vec<u64> = items.iter().map(|i| i.as_u64().unwrap()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 5);
            assert_eq!(r["scores"].as_array().unwrap().len(), 5);
        }
    }

    #[test]
    fn popularity_is_skewed() {
        let opts = Options { users: 2000, items: 10, catalog: 10_000, ..Options::default() };
        let mut out = Vec::new();
        generate(&opts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (mut low, mut high) = (0, 0);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            for i in v["movieId"].as_array().unwrap() {
                if i.as_u64().unwrap() <= 1000 { low += 1 } else if i.as_u64().unwrap() > 9000 { high += 1 }
            }
        }
        assert!(low > 5 * high, "low {low} high {high}");
    }
}

/// `fsctl generate`: write a synthetic batch.
#[derive(clap::Args)]
pub struct Args {
    /// Number of users.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Items per user.
    #[arg(long, default_value_t = 10)]
    items: usize,
    #[arg(long, value_enum, default_value_t = Layout::Jsonl)]
    format: Layout,
    /// String user and item ids (`"u1"`, `"i42"`) instead of integers.
    #[arg(long)]
    string_ids: bool,
    /// Add a `scores` field aligned with the items.
    #[arg(long)]
    scores: bool,
    /// Size of the item catalogue.
    #[arg(long, default_value_t = 50_000)]
    catalog: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { users, items, format, string_ids, scores, catalog, seed, out } = args;
    let opts = Options { users, items, layout: format, string_ids, scores, catalog, seed, first_user: 1 };
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(BufWriter::new(File::create(&p).with_context(|| format!("creating {}", p.display()))?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    generate(&opts, &mut w)?;
    w.flush()?;
    Ok(())
}
