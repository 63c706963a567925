//! Users into Redis: a chunk's records, parsed and encoded, gathered into
//! rounds, and each round written as one HSET per bucket, pipelined per
//! primary, while the next round is parsed.
//!
//! The formats hand records to a [`Writer`] as their bytes stream in (a
//! line, an element, a CSV row or Parquet row as JSON, or a Parquet row
//! encoded directly); what a record becomes in Redis is decided here and in
//! [`shared::format::record`], the same for every format.

use std::collections::{HashMap, HashSet};

use redis::cluster_routing::Slot;
use redis::Cmd;
use shared::aws::messages::ChunkMessage;
use shared::config::{BadRecords, IngestConfig};
use shared::db::keys::{bucket_of, DatasetKeys};
use shared::db::store::Redis;
use shared::format::record::{Encoder, RecordError};
use tokio::task::JoinSet;
use tracing::warn;

use crate::error::{At, IngestError};
use crate::format::Found;

/// Where sealed rounds go.
#[derive(Clone, Copy)]
pub(crate) enum Sink<'r> {
    Redis(&'r Redis),
    /// Kept in [`Writer::gathered`] as users and values (a delta's users,
    /// applied once all of them are read).
    Gather,
    /// Kept in [`Writer::collected`], with slots as a cluster would need them or not.
    #[cfg(feature = "testing")]
    Collect { cluster: bool },
}

/// A round is sent once it holds this many bytes, however few users: it
/// bounds memory when records are large.
const ROUND_MAX_BYTES: usize = 16 << 20;

/// Rounds of one chunk written at once while the next is parsed. With two,
/// Redis has the next round queued when it finishes one, instead of waiting
/// while the parser catches up.
const ROUNDS_IN_FLIGHT: usize = 2;

/// Bad records logged per chunk in lenient mode (the rest are only counted).
const BAD_LOGGED: u64 = 5;

/// Collects users into rounds, seals each round into per-bucket HSET
/// commands when it is full, and sends sealed rounds to its sink.
pub(crate) struct Writer<'a> {
    keys: &'a DatasetKeys,
    msg: &'a ChunkMessage,
    config: &'a IngestConfig,
    sink: Sink<'a>,
    encoder: Encoder,
    round: Round,
    /// Full rounds, as commands with their keys' slots, not sent yet.
    /// With the number of users each holds.
    sealed: Vec<(u64, Vec<(Slot, Cmd)>)>,
    /// Rounds a [`Sink::Collect`] writer kept.
    #[cfg(feature = "testing")]
    pub(crate) collected: Vec<Vec<(Slot, Cmd)>>,
    /// A record converted to JSON (a CSV or Parquet row), reused from row to row.
    scratch: Vec<u8>,
    /// A directly encoded row's user id, reused from row to row.
    scratch_id: String,
    /// `"<output field>"`, searched for in each text record.
    output_needle: Option<Vec<u8>>,
    pub(crate) users: u64,
    /// Users in rounds already sent, and when the chunk began: for the rate cap.
    sent_users: u64,
    started: std::time::Instant,
    pub(crate) bad: u64,
    seen: SeenUsers,
    /// Users by bucket, kept only to verify durability (replica acks on).
    pub(crate) written: HashMap<u32, Vec<String>>,
    /// Earlier rounds' writes, still in flight while the next round is
    /// parsed (at most [`ROUNDS_IN_FLIGHT`]). Dropping the set aborts them.
    in_flight: JoinSet<redis::RedisResult<()>>,
    /// A [`Sink::Gather`] writer's users: id, and stored value or `None`
    /// for a tombstone.
    pub(crate) gathered: Vec<(String, Option<Vec<u8>>)>,
}

/// One round of users, packed: each user's stored value and id sit in one
/// buffer, so adding a user allocates nothing; the per-bucket commands are
/// built once, when the round is sent.
#[derive(Default)]
struct Round {
    bytes: Vec<u8>,
    /// (bucket, start of the value in `bytes`, value length, id length);
    /// the id follows the value.
    users: Vec<(u32, usize, usize, usize)>,
}

impl Round {
    /// Records a user whose value was appended to `bytes` from `start` on.
    fn push(&mut self, bucket: u32, start: usize, id: &str) {
        let value_len = self.bytes.len() - start;
        self.bytes.extend_from_slice(id.as_bytes());
        self.users.push((bucket, start, value_len, id.len()));
    }

    /// One HSET per bucket (with its key's slot); empties the round.
    fn commands(&mut self, keys: &DatasetKeys, version: &str, cluster: bool) -> Vec<(Slot, Cmd)> {
        self.users.sort_unstable_by_key(|u| u.0);
        let mut cmds = Vec::new();
        // Each key is the version's prefix and the bucket number.
        let mut key = keys.bucket_prefix(version).into_bytes();
        let prefix = key.len();
        let mut number = itoa::Buffer::new();
        for group in self.users.chunk_by(|a, b| a.0 == b.0) {
            key.truncate(prefix);
            key.extend_from_slice(number.format(group[0].0).as_bytes());
            let data: usize = group.iter().map(|u| u.2 + u.3).sum();
            let mut cmd = Cmd::with_capacity(2 + 2 * group.len(), 4 + key.len() + data);
            cmd.arg("HSET").arg(&key[..]);
            for &(_, start, value_len, id_len) in group {
                let mid = start + value_len;
                cmd.arg(&self.bytes[mid..mid + id_len]).arg(&self.bytes[start..mid]);
            }
            cmds.push((shared::db::store::slot_of(cluster, &key), cmd));
        }
        self.bytes.clear();
        self.users.clear();
        cmds
    }
}

/// Users a chunk remembers to catch a duplicate where it is (about 16 MiB
/// of integer ids). A chunk of more (a compressed file is one chunk) checks
/// the rest against these only: a duplicate among them is still caught when
/// the version completes, where stored users are counted against written ones.
const SEEN_MAX: usize = 1 << 20;

/// The user ids of a chunk so far (up to [`SEEN_MAX`]), to catch a user
/// written twice. Integer ids, the common case, are kept as numbers; others
/// as strings.
struct SeenUsers {
    numbers: HashSet<u64, foldhash::fast::RandomState>,
    strings: HashSet<Box<str>, foldhash::fast::RandomState>,
}

impl SeenUsers {
    fn with_capacity(n: usize) -> Self {
        SeenUsers { numbers: HashSet::with_capacity_and_hasher(n, Default::default()), strings: HashSet::default() }
    }

    /// Whether `id` (canonical) is new; records it.
    fn insert(&mut self, id: &str) -> bool {
        // Only the one decimal spelling of a number maps to it: "007" stays a string.
        // Up to 19 digits always fit a u64.
        let canonical_number = !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
        let full = self.numbers.len() + self.strings.len() >= SEEN_MAX;
        match canonical_number.then(|| id.parse::<u64>()) {
            Some(Ok(n)) if full => !self.numbers.contains(&n),
            Some(Ok(n)) => self.numbers.insert(n),
            _ if full => !self.strings.contains(id),
            _ => !self.strings.contains(id) && self.strings.insert(id.into()),
        }
    }
}

impl<'a> Writer<'a> {
    pub(crate) fn new(keys: &'a DatasetKeys, msg: &'a ChunkMessage, config: &'a IngestConfig, sink: Sink<'a>) -> Self {
        Writer {
            keys,
            msg,
            config,
            sink,
            encoder: Encoder::new(&config.fields, config.validation.max_items as usize),
            round: Round::default(),
            sealed: Vec::new(),
            #[cfg(feature = "testing")]
            collected: Vec::new(),
            scratch: Vec::new(),
            scratch_id: String::new(),
            output_needle: Some(&config.fields.output).filter(|f| !f.is_empty()).map(|f| format!("\"{f}\"").into_bytes()),
            users: 0,
            sent_users: 0,
            started: std::time::Instant::now(),
            bad: 0,
            // Records are rarely under 100 bytes: this seldom needs to grow.
            seen: SeenUsers::with_capacity((msg.end.saturating_sub(msg.start) / 100).min(SEEN_MAX as u64) as usize),
            written: HashMap::new(),
            in_flight: JoinSet::new(),
            gathered: Vec::new(),
        }
    }

    pub(crate) fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.msg.bucket, self.msg.key)
    }

    /// A bad record: fails the chunk in strict mode, is counted in lenient mode.
    fn bad(&mut self, at: At, reason: RecordError) -> Result<(), IngestError> {
        let err = IngestError::Record { source_uri: self.source_uri(), chunk: self.msg.chunk, at, reason };
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
    pub(crate) fn found(&mut self, at: At, found: Found<'_>) -> Result<(), IngestError> {
        match found {
            Found::TooLong => self.bad(at, RecordError::TooLarge(self.config.validation.max_record_bytes)),
            Found::Record(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => self.add(at, text),
                Err(_) => self.bad(at, RecordError::NotUtf8),
            },
        }
    }

    /// A record a format writes as JSON (a CSV or Parquet row) with `write`,
    /// into a buffer reused from record to record.
    pub(crate) fn converted(&mut self, at: At, write: impl FnOnce(&mut Vec<u8>) -> Result<(), RecordError>) -> Result<(), IngestError> {
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
    /// stored value (as [`shared::format::record`] would write it) and sets
    /// the user id.
    pub(crate) fn encoded(&mut self, at: At, encode: impl FnOnce(&mut Vec<u8>, &mut String) -> Result<(), RecordError>) -> Result<(), IngestError> {
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
        let needle = self.output_needle.as_deref()?;
        memchr::memmem::find(text.as_bytes(), needle)?;
        let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
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
            _ => return Some(Err(RecordError::BadItems(format!("{} (inside `{}`)", fields.items, fields.output)))),
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
        let bucket = bucket_of(user, self.msg.buckets);
        self.round.push(bucket, start, user);
        if self.config.replication.acks > 0 {
            self.written.entry(bucket).or_default().push(user.to_string());
        }
        self.users += 1;
        if self.round_is_full() {
            self.seal();
        }
        Ok(())
    }

    /// Whether the round is full: enough users, or enough bytes however few
    /// users (which bounds memory when records are large).
    fn round_is_full(&self) -> bool {
        self.round.users.len() >= self.config.write_batch_users || self.round.bytes.len() >= ROUND_MAX_BYTES
    }

    /// Turns the round into commands, ready to send.
    pub(crate) fn seal(&mut self) {
        if self.round.users.is_empty() {
            return;
        }
        let cluster = match self.sink {
            Sink::Redis(redis) => redis.is_cluster(),
            Sink::Gather => {
                let round = &mut self.round;
                for &(_, start, value_len, id_len) in &round.users {
                    let mid = start + value_len;
                    let id = String::from_utf8_lossy(&round.bytes[mid..mid + id_len]).into_owned();
                    self.gathered.push((id, (value_len > 0).then(|| round.bytes[start..mid].to_vec())));
                }
                round.bytes.clear();
                round.users.clear();
                return;
            }
            #[cfg(feature = "testing")]
            Sink::Collect { cluster } => cluster,
        };
        let users = self.round.users.len() as u64;
        let cmds = self.round.commands(self.keys, &self.msg.version, cluster);
        self.sealed.push((users, cmds));
    }

    /// Sends the sealed rounds, each first waiting for the oldest in flight
    /// when [`ROUNDS_IN_FLIGHT`] are, and, under `FS_INGEST_MAX_USERS_PER_S`,
    /// until the users sent before it are within the rate.
    pub(crate) async fn send(&mut self) -> Result<(), IngestError> {
        for (users, cmds) in std::mem::take(&mut self.sealed) {
            if let Some(cap) = self.config.max_users_per_s {
                let due = std::time::Duration::from_secs_f64(self.sent_users as f64 / cap as f64);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            self.sent_users += users;
            match self.sink {
                Sink::Redis(redis) => {
                    while self.in_flight.len() >= ROUNDS_IN_FLIGHT {
                        self.wait_one().await?;
                    }
                    let redis = redis.clone();
                    self.in_flight.spawn(async move { redis.write_grouped(cmds).await });
                }
                #[cfg(feature = "testing")]
                Sink::Collect { .. } => self.collected.push(cmds),
                Sink::Gather => {}
            }
        }
        Ok(())
    }

    /// Stops the writes still in flight: none of them writes after the
    /// chunk gave up (and perhaps failed its version).
    pub(crate) async fn stop(&mut self) {
        self.in_flight.shutdown().await;
    }

    /// Waits for every write in flight.
    pub(crate) async fn finish(&mut self) -> Result<(), IngestError> {
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    /// Waits for the next round in flight to finish; its error, if it failed.
    async fn wait_one(&mut self) -> Result<(), IngestError> {
        if let Some(done) = self.in_flight.join_next().await {
            done.map_err(|e| IngestError::Redis(redis::RedisError::from(std::io::Error::other(e.to_string()))))??;
        }
        Ok(())
    }
}

/// What a delta's record is.
#[derive(Debug, PartialEq)]
enum Tombstone {
    /// An upsert: it has no `_delete` field.
    No,
    /// `"_delete": true`: delete this user.
    Delete(String),
    /// `"_delete": false`: an upsert, the record without the field.
    Keep(String),
    Bad(RecordError),
}

/// The field that makes a delta's record a tombstone.
pub(crate) const DELETE_FIELD: &str = "_delete";

/// Tells a delta's tombstone (`{"<user field>": 5, "_delete": true}`) from
/// an upsert, by one substring search for the common case.
fn tombstone(text: &str, user_field: &str) -> Tombstone {
    if memchr::memmem::find(text.as_bytes(), format!("\"{DELETE_FIELD}\"").as_bytes()).is_none() {
        return Tombstone::No;
    }
    let Ok(mut record) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) else { return Tombstone::No };
    match record.remove(DELETE_FIELD) {
        None => Tombstone::No,
        Some(serde_json::Value::Bool(false)) => Tombstone::Keep(serde_json::Value::Object(record).to_string()),
        Some(serde_json::Value::Bool(true)) => {
            let user = match record.get(user_field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                Some(_) => return Tombstone::Bad(RecordError::BadUserIdType(user_field.to_string())),
                None => return Tombstone::Bad(RecordError::MissingUserId(user_field.to_string())),
            };
            match shared::db::keys::validate_user_id(&user) {
                Ok(()) => Tombstone::Delete(user),
                Err(e) => Tombstone::Bad(RecordError::BadUserId(e)),
            }
        }
        Some(_) => Tombstone::Bad(RecordError::BadTombstone(DELETE_FIELD.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_records_are_upserts_or_tombstones() {
        assert_eq!(tombstone(r#"{"userId": 1, "movieId": [2]}"#, "userId"), Tombstone::No);
        assert_eq!(tombstone(r#"{"userId": 5, "_delete": true}"#, "userId"), Tombstone::Delete("5".into()));
        assert_eq!(tombstone(r#"{"_delete": true, "userId": "u-5"}"#, "userId"), Tombstone::Delete("u-5".into()));
        assert_eq!(tombstone(r#"{"userId": 5, "_delete": false, "movieId": [1]}"#, "userId"), Tombstone::Keep(r#"{"userId":5,"movieId":[1]}"#.into()));
        assert!(matches!(tombstone(r#"{"userId": 5, "_delete": "yes"}"#, "userId"), Tombstone::Bad(_)));
        assert!(matches!(tombstone(r#"{"_delete": true}"#, "userId"), Tombstone::Bad(RecordError::MissingUserId(_))));
        assert!(matches!(tombstone(r#"{"userId": 1.5, "_delete": true}"#, "userId"), Tombstone::Bad(_)));
        // A user whose field merely mentions the word is an upsert.
        assert_eq!(tombstone(r#"{"userId": 1, "movieId": ["_delete"]}"#, "userId"), Tombstone::No);
    }

    #[test]
    fn seen_users_stop_growing_at_their_cap_and_still_catch_what_they_hold() {
        let mut seen = SeenUsers::with_capacity(16);
        for n in 0..SEEN_MAX as u64 + 10 {
            assert!(seen.insert(&n.to_string()), "{n} is new");
        }
        assert_eq!(seen.numbers.len(), SEEN_MAX, "full sets take no more");
        assert!(!seen.insert("5"), "a user it holds is still a duplicate");
        assert!(seen.insert(&(SEEN_MAX as u64 + 5).to_string()), "past the cap, left to the version's count");
    }
}
