// Over 500 lines: `fsctl generate`: every format and layout the tests and bench upload, and its tests.
//! Synthetic batches: N users, K ranked items each, with skewed item
//! popularity (a few items recommended to many users, a long tail to few),
//! integer or string ids, in any supported layout (JSON Lines, table
//! document, array, CSV, Parquet, SageMaker output), plain or compressed,
//! one file or a folder of part files with a marker. Streams to a writer, so
//! a batch of any size needs constant memory (Parquet: one row group).

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
    /// CSV with a header, the items joined by `|` in one column.
    Csv,
    /// Parquet (Snappy pages, row groups of 131,072 users).
    Parquet,
    /// SageMaker Batch Transform output with `JoinSource=Input`: JSON Lines
    /// with the prediction under `SageMakerOutput`.
    Sagemaker,
}

impl Layout {
    /// The file name extension of the layout.
    pub fn extension(self) -> &'static str {
        match self {
            Layout::Jsonl => "jsonl",
            Layout::Table | Layout::Array => "json",
            Layout::Csv => "csv",
            Layout::Parquet => "parquet",
            Layout::Sagemaker => "jsonl.out",
        }
    }
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
        Options {
            users: 1000,
            items: 10,
            layout: Layout::Jsonl,
            string_ids: false,
            scores: false,
            catalog: 50_000,
            first_user: 1,
            seed: 42,
        }
    }
}

/// The user id of the `n`-th user, as it appears in a batch.
pub fn user_id(opts: &Options, n: u64) -> String {
    let id = opts.first_user + n;
    if opts.string_ids {
        format!("\"u{id}\"")
    } else {
        id.to_string()
    }
}

/// One generated user.
struct Record<'a> {
    /// The user id as JSON (`7` or `"u7"`).
    user: &'a str,
    items: &'a [u64],
    /// Scores as written (four decimals), if asked for.
    scores: &'a [String],
}

/// Calls `each` with every user of the batch, in order.
fn records(opts: &Options, mut each: impl FnMut(&Record) -> io::Result<()>) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut items: Vec<u64> = Vec::with_capacity(opts.items);
    let mut scores: Vec<String> = Vec::with_capacity(opts.items);
    for n in 0..opts.users {
        items.clear();
        while items.len() < opts.items.min(opts.catalog as usize) {
            // Cubing a uniform draw skews popularity toward low ids.
            let u: f64 = rng.random();
            let item = 1 + (u * u * u * opts.catalog as f64) as u64;
            if !items.contains(&item) {
                items.push(item);
            }
        }
        scores.clear();
        if opts.scores {
            let mut s = 1.0f64;
            for _ in 0..items.len() {
                s *= rng.random_range(0.80..0.99);
                scores.push(format!("{s:.4}"));
            }
        }
        each(&Record {
            user: &user_id(opts, n),
            items: &items,
            scores: &scores,
        })?;
    }
    Ok(())
}

/// The record's item list and scores as JSON members: `"movieId":[…],"scores":[…]`.
fn members(opts: &Options, r: &Record, line: &mut String) {
    line.push_str("\"movieId\":[");
    for (i, item) in r.items.iter().enumerate() {
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
        line.push_str(&r.scores.join(","));
        line.push(']');
    }
}

/// Writes a batch to `out`.
pub fn generate(opts: &Options, out: &mut (impl Write + Send)) -> io::Result<()> {
    match opts.layout {
        Layout::Csv => return generate_csv(opts, out),
        Layout::Parquet => return generate_parquet(opts, &mut *out),
        _ => {}
    }
    let (open, sep, close) = match opts.layout {
        Layout::Jsonl | Layout::Sagemaker => ("", "\n", "\n"),
        Layout::Array => ("[", ",\n", "]\n"),
        _ => (
            "{\"schema\":{\"fields\":[{\"name\":\"index\",\"type\":\"integer\"},{\"name\":\"movieId\",\"type\":\"string\"},{\"name\":\"userId\",\"type\":\"integer\"}],\"primaryKey\":[\"index\"],\"pandas_version\":\"0.20.0\"},\"data\":[",
            ",",
            "]}\n",
        ),
    };
    out.write_all(open.as_bytes())?;
    let mut line = String::with_capacity(32 + opts.items * 8);
    let mut first = true;
    records(opts, |r| {
        if !first {
            out.write_all(sep.as_bytes())?;
        }
        first = false;
        line.clear();
        line.push_str("{\"userId\":");
        line.push_str(r.user);
        line.push(',');
        if opts.layout == Layout::Sagemaker {
            line.push_str("\"SageMakerOutput\":{");
            members(opts, r, &mut line);
            line.push('}');
        } else {
            members(opts, r, &mut line);
        }
        line.push('}');
        out.write_all(line.as_bytes())
    })?;
    if opts.users > 0 || !matches!(opts.layout, Layout::Jsonl | Layout::Sagemaker) {
        out.write_all(close.as_bytes())?;
    }
    Ok(())
}

fn generate_csv(opts: &Options, out: &mut impl Write) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["userId", "movieId"];
    if opts.scores {
        header.push("scores");
    }
    w.write_record(&header)?;
    records(opts, |r| {
        let user = r.user.trim_matches('"');
        let items: Vec<String> = r
            .items
            .iter()
            .map(|i| {
                if opts.string_ids {
                    format!("i{i}")
                } else {
                    i.to_string()
                }
            })
            .collect();
        let items = items.join("|");
        let scores = format!("[{}]", r.scores.join(","));
        let row: Vec<&str> = if opts.scores {
            vec![user, &items, &scores]
        } else {
            vec![user, &items]
        };
        w.write_record(&row).map_err(io::Error::other)
    })?;
    w.flush()
}

/// Users per Parquet row group.
const ROW_GROUP_USERS: usize = 131_072;

fn generate_parquet<W: Write + Send>(opts: &Options, out: W) -> io::Result<()> {
    let mut sink = ParquetSink::new(opts, out);
    records(opts, |r| sink.push(r))?;
    sink.finish()
}

/// Columns of users not yet written, and the writer once the first batch
/// (which gives the schema) is ready.
struct ParquetSink<'o, W: Write + Send> {
    opts: &'o Options,
    out: Option<W>,
    writer: Option<parquet::arrow::ArrowWriter<W>>,
    int_users: arrow_array::builder::Int64Builder,
    str_users: arrow_array::builder::StringBuilder,
    int_items: arrow_array::builder::ListBuilder<arrow_array::builder::Int64Builder>,
    str_items: arrow_array::builder::ListBuilder<arrow_array::builder::StringBuilder>,
    scores: arrow_array::builder::ListBuilder<arrow_array::builder::Float64Builder>,
    rows: usize,
}

/// Users per batch handed to the Parquet writer.
const PARQUET_BATCH: usize = 8192;

impl<'o, W: Write + Send> ParquetSink<'o, W> {
    fn new(opts: &'o Options, out: W) -> Self {
        use arrow_array::builder::{Float64Builder, Int64Builder, ListBuilder, StringBuilder};
        ParquetSink {
            opts,
            out: Some(out),
            writer: None,
            int_users: Int64Builder::new(),
            str_users: StringBuilder::new(),
            int_items: ListBuilder::new(Int64Builder::new()),
            str_items: ListBuilder::new(StringBuilder::new()),
            scores: ListBuilder::new(Float64Builder::new()),
            rows: 0,
        }
    }

    fn push(&mut self, r: &Record) -> io::Result<()> {
        if self.opts.string_ids {
            self.str_users.append_value(r.user.trim_matches('"'));
            for i in r.items {
                self.str_items.values().append_value(format!("i{i}"));
            }
            self.str_items.append(true);
        } else {
            self.int_users
                .append_value(r.user.parse::<i64>().map_err(io::Error::other)?);
            for &i in r.items {
                self.int_items.values().append_value(i as i64);
            }
            self.int_items.append(true);
        }
        if self.opts.scores {
            for s in r.scores {
                self.scores.values().append_value(s.parse().unwrap_or(0.0));
            }
            self.scores.append(true);
        }
        self.rows += 1;
        if self.rows == PARQUET_BATCH {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        use arrow_array::ArrayRef;
        use std::sync::Arc;
        let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
        if self.opts.string_ids {
            columns.push(("userId", Arc::new(self.str_users.finish())));
            columns.push(("movieId", Arc::new(self.str_items.finish())));
        } else {
            columns.push(("userId", Arc::new(self.int_users.finish())));
            columns.push(("movieId", Arc::new(self.int_items.finish())));
        }
        if self.opts.scores {
            columns.push(("scores", Arc::new(self.scores.finish())));
        }
        self.rows = 0;
        let batch = arrow_array::RecordBatch::try_from_iter(columns).map_err(io::Error::other)?;
        if self.writer.is_none() {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_max_row_group_size(ROW_GROUP_USERS)
                .build();
            let out = self.out.take().expect("the output is taken once");
            self.writer = Some(
                parquet::arrow::ArrowWriter::try_new(out, batch.schema(), Some(props))
                    .map_err(io::Error::other)?,
            );
        }
        self.writer
            .as_mut()
            .expect("created above")
            .write(&batch)
            .map_err(io::Error::other)
    }

    fn finish(mut self) -> io::Result<()> {
        if self.rows > 0 || self.writer.is_none() {
            self.flush()?;
        }
        self.writer
            .take()
            .expect("flushed above")
            .close()
            .map_err(io::Error::other)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(layout: Layout, string_ids: bool) -> String {
        let opts = Options {
            users: 50,
            items: 5,
            layout,
            string_ids,
            scores: true,
            ..Options::default()
        };
        let mut out = Vec::new();
        generate(&opts, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_layout_is_valid_json_with_distinct_ranked_items() {
        let jsonl = make(Layout::Jsonl, false);
        let records: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 50);
        let array: Vec<serde_json::Value> =
            serde_json::from_str(&make(Layout::Array, true)).unwrap();
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
        let opts = Options {
            users: 2000,
            items: 10,
            catalog: 10_000,
            ..Options::default()
        };
        let mut out = Vec::new();
        generate(&opts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (mut low, mut high) = (0, 0);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            for i in v["movieId"].as_array().unwrap() {
                if i.as_u64().unwrap() <= 1000 {
                    low += 1
                } else if i.as_u64().unwrap() > 9000 {
                    high += 1
                }
            }
        }
        assert!(low > 5 * high, "low {low} high {high}");
    }
}

/// How a generated file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    Gzip,
    Zstd,
}

/// What commits a generated folder batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Marker {
    /// An empty `_SUCCESS`, as Spark writes.
    Success,
    /// A `_manifest.json` listing the files with their sizes, and the rows.
    Manifest,
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
    /// Compress the file (text layouts only).
    #[arg(long, value_enum)]
    compress: Option<Compress>,
    /// Write a folder batch of this many part files (`--out` names the
    /// folder), committed by `--marker` (SageMaker output has no marker).
    #[arg(long)]
    files: Option<u32>,
    #[arg(long, value_enum, default_value_t = Marker::Success)]
    marker: Marker,
    /// Output file or folder (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Writes a batch to `out`, compressed with `compress`.
fn write_compressed<W: Write + Send>(
    opts: &Options,
    compress: Option<Compress>,
    out: W,
) -> anyhow::Result<()> {
    match compress {
        None => {
            let mut out = out;
            generate(opts, &mut out)?;
            out.flush()?;
        }
        Some(Compress::Gzip) => {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            generate(opts, &mut gz)?;
            gz.finish()?.flush()?;
        }
        Some(Compress::Zstd) => {
            let mut z = zstd::Encoder::new(out, 3)?;
            generate(opts, &mut z)?;
            z.finish()?.flush()?;
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        users,
        items,
        format,
        string_ids,
        scores,
        catalog,
        seed,
        compress,
        files,
        marker,
        out,
    } = args;
    let opts = Options {
        users,
        items,
        layout: format,
        string_ids,
        scores,
        catalog,
        seed,
        first_user: 1,
    };
    if format == Layout::Parquet && compress.is_some() {
        anyhow::bail!("Parquet compresses its own pages: leave out --compress");
    }
    let suffix = match compress {
        None => "",
        Some(Compress::Gzip) => ".gz",
        Some(Compress::Zstd) => ".zst",
    };
    let Some(n) = files else {
        return match out {
            Some(p) => write_compressed(
                &opts,
                compress,
                BufWriter::new(
                    File::create(&p).with_context(|| format!("creating {}", p.display()))?,
                ),
            ),
            None => write_compressed(&opts, compress, BufWriter::new(std::io::stdout())),
        };
    };
    let dir = out.context("--files writes a folder: name it with --out")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let n = u64::from(n.max(1));
    let mut listed = Vec::new();
    for i in 0..n {
        // Consecutive users per file, each file with its own draw.
        let (from, to) = (users * i / n, users * (i + 1) / n);
        let part = Options {
            users: to - from,
            first_user: 1 + from,
            seed: seed.wrapping_add(i),
            ..opts.clone()
        };
        let name = match format {
            Layout::Sagemaker => format!("input-{i:05}.jsonl.out{suffix}"),
            _ => format!("part-{i:05}.{}{suffix}", format.extension()),
        };
        let path = dir.join(&name);
        write_compressed(
            &part,
            compress,
            BufWriter::new(
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ),
        )?;
        listed.push(serde_json::json!({"key": name, "size": std::fs::metadata(&path)?.len()}));
    }
    match (format, marker) {
        (Layout::Sagemaker, _) => {}
        (_, Marker::Success) => std::fs::write(dir.join(ingest::s3::folder::SUCCESS), b"")?,
        (_, Marker::Manifest) => {
            let manifest = serde_json::json!({"files": listed, "rows": users});
            std::fs::write(
                dir.join(ingest::s3::folder::MANIFEST),
                serde_json::to_vec_pretty(&manifest)?,
            )?;
        }
    }
    Ok(())
}
