//! Records into rounds: a chunk's records, parsed, checked and encoded,
//! gathered into rounds that a [`Sink`] takes when full (Redis writes each
//! as one HSET per bucket, pipelined per primary, while the next round is
//! parsed; a delta's buffer keeps them until all are read).
//!
//! The formats hand records to a [`Writer`] as their bytes stream in (a
//! line, an element, a CSV row or Parquet row as JSON, or a Parquet row
//! encoded directly); what a record becomes in Redis is decided here and in
//! [`shared::record`], the same for every format.

use shared::config::{BadRecords, IngestConfig};
use shared::keys::bucket_of;
use shared::record::{Encoder, RecordError};
use tracing::warn;

use crate::error::{At, IngestError};
use crate::s3::messages::ChunkMessage;

pub mod pace;
mod round;
mod sink;
mod tombstone;

pub use round::{Round, Sealed};
use round::{SeenUsers, SEEN_MAX};
pub use sink::{DeltaBuffer, RedisSink, Sink, PIPELINE_MAX_BYTES, ROUNDS_IN_FLIGHT};
use tombstone::{tombstone, Tombstone};

/// A round holds at least this many users per bucket of the version (past
/// `FS_WRITE_BATCH_USERS`), memory allowing: each of its HSETs then carries
/// a few users, not one (see the planner's `CHUNK_USERS_PER_BUCKET`, which
/// sizes chunks so that they hold as many).
pub const ROUND_USERS_PER_BUCKET: usize = 2;

/// Most memory one round holds (its bytes and its users' entries): a
/// worker's `FS_INGEST_ROUNDS_MIB` shared by the round filling and the
/// [`ROUNDS_IN_FLIGHT`] being written. A round is handed on once it holds
/// this much, however few users: this bounds ingest's memory whatever the
/// batch's size.
pub fn round_max_bytes(config: &IngestConfig) -> usize {
    (config.rounds_mib << 20) / (ROUNDS_IN_FLIGHT + 1)
}

/// Bad records logged per chunk in lenient mode (the rest are only counted).
const BAD_LOGGED: u64 = 5;

/// A record found in a chunk by [`LineCursor`] or [`ElementCursor`].
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A whole record's bytes (a line without its `\n` or a trailing `\r`,
    /// or an element), not yet checked as JSON.
    Record(&'a [u8]),
    /// A record longer than the cursor's limit; its bytes are skipped.
    TooLong,
}

/// Checks and encodes a chunk's records into rounds, and hands each full
/// round to its sink.
pub struct Writer<'a, K> {
    msg: &'a ChunkMessage,
    config: &'a IngestConfig,
    sink: K,
    encoder: Encoder,
    round: Round,
    /// A record converted to JSON (a CSV or Parquet row), reused from row to row.
    scratch: Vec<u8>,
    /// A directly encoded row's user id, reused from row to row.
    scratch_id: String,
    /// `"<output field>"`, searched for in each text record.
    /// (Built once: building a searcher per record was 5% of ingest's time.)
    output_needle: Option<memchr::memmem::Finder<'static>>,
    /// Users taken, and bad records skipped (lenient mode).
    pub users: u64,
    pub bad: u64,
    seen: SeenUsers,
    /// [`round_max_bytes`] of the configuration.
    round_max: usize,
}

impl<'a, K: Sink> Writer<'a, K> {
    /// A writer of the chunk `msg`, handing rounds to `sink`.
    pub fn new(msg: &'a ChunkMessage, config: &'a IngestConfig, sink: K) -> Self {
        Writer {
            msg,
            config,
            sink,
            encoder: Encoder::new(&config.fields, config.validation.max_items as usize),
            round: Round::default(),
            scratch: Vec::new(),
            scratch_id: String::new(),
            output_needle: Some(&config.fields.output)
                .filter(|f| !f.is_empty())
                .map(|f| memchr::memmem::Finder::new(format!("\"{f}\"").as_bytes()).into_owned()),
            users: 0,
            bad: 0,
            // Records are rarely under 100 bytes: this seldom needs to grow.
            seen: SeenUsers::with_capacity(
                (msg.end.saturating_sub(msg.start) / 100).min(SEEN_MAX as u64) as usize,
            ),
            round_max: round_max_bytes(config),
        }
    }

    /// The sink, once the writer is done.
    pub fn into_sink(self) -> K {
        self.sink
    }

    pub fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.msg.bucket, self.msg.key)
    }

    /// A bad record: fails the chunk in strict mode, is counted in lenient mode.
    fn bad(&mut self, at: At, reason: RecordError) -> Result<(), IngestError> {
        let err = IngestError::Record {
            source_uri: self.source_uri(),
            chunk: self.msg.chunk,
            at,
            reason,
        };
        match self.config.validation.bad_records {
            BadRecords::Strict => Err(err),
            BadRecords::Lenient { .. } => {
                self.bad += 1;
                if self.bad <= BAD_LOGGED {
                    warn!(dataset = %self.msg.dataset, version = %self.msg.version, error = %err, "bad record skipped");
                }
                Ok(())
            }
        }
    }

    /// A record a format found: its bytes, not yet checked as UTF-8 or JSON.
    pub fn found(&mut self, at: At, found: Found<'_>) -> Result<(), IngestError> {
        match found {
            Found::TooLong => self.bad(
                at,
                RecordError::TooLarge(self.config.validation.max_record_bytes),
            ),
            Found::Record(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => self.add(at, text),
                Err(_) => self.bad(at, RecordError::NotUtf8),
            },
        }
    }

    /// A record a format writes as JSON (a CSV or Parquet row) with `write`,
    /// into a buffer reused from record to record.
    pub fn converted(
        &mut self,
        at: At,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), RecordError>,
    ) -> Result<(), IngestError> {
        let mut json = std::mem::take(&mut self.scratch);
        json.clear();
        let result = match write(&mut json) {
            Ok(()) => self.found(at, Found::Record(&json)),
            Err(reason) => self.bad(at, reason),
        };
        self.scratch = json;
        result
    }

    /// A record a format encodes itself with `encode`, which appends the
    /// stored value (as [`shared::record`] would write it) and sets
    /// the user id.
    pub fn encoded(
        &mut self,
        at: At,
        encode: impl FnOnce(&mut Vec<u8>, &mut String) -> Result<(), RecordError>,
    ) -> Result<(), IngestError> {
        let start = self.round.bytes.len();
        let mut id = std::mem::take(&mut self.scratch_id);
        id.clear();
        let result = match encode(&mut self.round.bytes, &mut id) {
            Ok(()) => self.accept(at, start, &id),
            Err(reason) => {
                self.round.bytes.truncate(start);
                self.bad(at, reason)
            }
        };
        self.scratch_id = id;
        result
    }

    fn add(&mut self, at: At, text: &str) -> Result<(), IngestError> {
        match self.unwrap_output(text) {
            None => self.add_record(at, text),
            Some(Ok(merged)) => self.add_record(at, &merged),
            Some(Err(reason)) => self.bad(at, reason),
        }
    }

    /// The record with its nested prediction ([`shared::config::OUTPUT_FIELD`])
    /// merged in: an object's members join the record, an array is its item
    /// list. `None` when the record has no such field (the common case,
    /// told by one substring search) or is not a JSON object.
    fn unwrap_output(&self, text: &str) -> Option<Result<String, RecordError>> {
        self.output_needle.as_ref()?.find(text.as_bytes())?;
        let mut record: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).ok()?;
        let fields = &self.config.fields;
        match record.remove(&fields.output)? {
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    record.entry(k).or_insert(v);
                }
            }
            items @ serde_json::Value::Array(_) if !record.contains_key(&fields.items) => {
                record.insert(fields.items.clone(), items);
            }
            _ => {
                return Some(Err(RecordError::BadItems(format!(
                    "{} (inside `{}`)",
                    fields.items, fields.output
                ))))
            }
        }
        Some(Ok(serde_json::Value::Object(record).to_string()))
    }

    fn add_record(&mut self, at: At, text: &str) -> Result<(), IngestError> {
        if self.msg.delta {
            match tombstone(text, &self.config.fields.user) {
                Tombstone::No => {}
                Tombstone::Delete(user) => {
                    // A tombstone is a user with an empty value: no stored value is empty.
                    let start = self.round.bytes.len();
                    return self.accept(at, start, &user);
                }
                Tombstone::Keep(record) => return self.add_record_text(at, &record),
                Tombstone::Bad(reason) => return self.bad(at, reason),
            }
        }
        self.add_record_text(at, text)
    }

    fn add_record_text(&mut self, at: At, text: &str) -> Result<(), IngestError> {
        let start = self.round.bytes.len();
        let user = match self.encoder.encode(text, &mut self.round.bytes) {
            Ok(user) => user,
            Err(reason) => return self.bad(at, reason),
        };
        self.accept(at, start, &user)
    }

    /// Takes the user `user` whose stored value was appended to the round
    /// from `start` on, unless it was seen before in the chunk.
    fn accept(&mut self, at: At, start: usize, user: &str) -> Result<(), IngestError> {
        if !self.seen.insert(user) {
            self.round.bytes.truncate(start);
            return self.bad(at, RecordError::DuplicateUser(user.to_string()));
        }
        // Scores and other per-item numbers go to Redis as numbers.
        shared::record::compact(&mut self.round.bytes, start);
        let bucket = bucket_of(user, self.msg.buckets);
        self.round.push(bucket, start, user);
        self.users += 1;
        if self.round_is_full() {
            self.seal();
        }
        Ok(())
    }

    /// Whether the round is full: enough users, or as much memory as a
    /// round may hold however few users.
    fn round_is_full(&self) -> bool {
        let users = self
            .config
            .write_batch_users
            .max(ROUND_USERS_PER_BUCKET * self.msg.buckets as usize);
        self.round.len() >= users || self.round.held_bytes() >= self.round_max
    }

    /// Hands the round to the sink, if it holds anyone.
    pub fn seal(&mut self) {
        if !self.round.is_empty() {
            self.sink.take(&mut self.round);
        }
    }

    /// Sends the rounds the sink took ([`Sink::send`]).
    pub async fn send(&mut self) -> Result<(), IngestError> {
        self.sink.send().await
    }

    /// Stops the writes still in flight: none of them writes after the
    /// chunk gave up (and perhaps failed its version).
    pub async fn stop(&mut self) {
        self.sink.stop().await;
    }

    /// Waits for every write in flight.
    pub async fn finish(&mut self) -> Result<(), IngestError> {
        self.sink.finish().await
    }
}
