//! The Redis key schema: the one place that spells a key.
//!
//! Two families of keys:
//! - **Metadata** of a dataset (live pointer, version index, each version's
//!   record and its set of finished chunks) shares the hash tag `{dataset}`, so
//!   it sits in one cluster slot and the flip is a single atomic script.
//! - **Data** keys carry no hash tag, so they spread over every slot. Users are
//!   packed into small hashes ("buckets", field = user id, value = encoded
//!   record): `fs:u:<dataset>:<version>:<bucket>`. The bucket of a user is a
//!   stable hash of its id modulo the version's bucket count, which the
//!   version's metadata and the live pointer both carry.
//!
//! Dataset names are restricted to `[A-Za-z0-9._-]`, so they can never carry a
//! hash tag or a separator into a key. User ids are hash *fields*, which Redis
//! treats as opaque bytes, so `:`, `{` or spaces in an id cannot collide with
//! the schema; ids are still bounded in length and free of control characters
//! ([`crate::record::validate_user_id`]).

/// Prefix of every key this system writes.
pub const PREFIX: &str = "fs";
/// Longest dataset name accepted.
pub const MAX_DATASET_LEN: usize = 64;

/// A dataset name that cannot be used in the key schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "dataset name must be 1 to {MAX_DATASET_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"
    )]
    BadDataset,
}

/// Checks a dataset name against the schema's alphabet.
pub fn validate_dataset(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DATASET_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadDataset)
    }
}

/// Set of every dataset that has ever registered a version.
pub fn datasets() -> String {
    format!("{PREFIX}:datasets")
}

/// List: uploads the planner rejected before any dataset could hold them (an
/// invalid dataset folder, an event without a usable time), newest first.
pub fn rejected() -> String {
    format!("{PREFIX}:rejected")
}

/// String with a TTL: set while the janitor's orphan sweep is not due.
pub fn janitor_sweep() -> String {
    format!("{PREFIX}:janitor:sweep")
}

/// Keys of one dataset. Metadata keys share the dataset's hash tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetKeys {
    dataset: String,
}

impl DatasetKeys {
    /// Keys for `dataset`, which must already be valid.
    pub fn new(dataset: &str) -> Result<Self, KeyError> {
        validate_dataset(dataset)?;
        Ok(DatasetKeys {
            dataset: dataset.to_string(),
        })
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// Hash: the live pointer (`version`, `buckets`, `since`, `previous`).
    pub fn live(&self) -> String {
        format!("{PREFIX}:{{{}}}:live", self.dataset)
    }

    /// Hash: what an operator set for the dataset (`max_age_s`; see
    /// [`crate::db::settings`]).
    pub fn settings(&self) -> String {
        format!("{PREFIX}:{{{}}}:settings", self.dataset)
    }

    /// Sorted set (all scores 0, so ordered by id): every registered version.
    pub fn versions(&self) -> String {
        format!("{PREFIX}:{{{}}}:versions", self.dataset)
    }

    /// Hash: one version's record (state, chunks, source, etag, users, ...).
    pub fn version(&self, version: &str) -> String {
        format!("{PREFIX}:{{{}}}:v:{version}", self.dataset)
    }

    /// List: the dataset's recent flips, rollbacks, promotions and failures
    /// (JSON entries, newest first, bounded).
    pub fn log(&self) -> String {
        format!("{PREFIX}:{{{}}}:log", self.dataset)
    }

    /// Set: indexes of the version's finished chunks.
    pub fn chunks_done(&self, version: &str) -> String {
        format!("{PREFIX}:{{{}}}:v:{version}:done", self.dataset)
    }

    /// Hash: the version's plan, chunk index → `start-end` byte range. Written
    /// once with the record; every chunk message must match it.
    pub fn plan(&self, version: &str) -> String {
        format!("{PREFIX}:{{{}}}:v:{version}:plan", self.dataset)
    }

    /// Hash: data files of folder batches whose marker has not landed yet,
    /// object key → `size first_seen_ms` (see [`crate::db::waiting`]).
    pub fn waiting(&self) -> String {
        format!("{PREFIX}:{{{}}}:waiting", self.dataset)
    }

    /// Hash: one bucket of users of a version. No hash tag: buckets spread over slots.
    pub fn bucket(&self, version: &str, bucket: u32) -> String {
        format!("{PREFIX}:u:{}:{version}:{bucket}", self.dataset)
    }

    /// Hash: for the users of one bucket that deltas touched, the event time
    /// (ms) of the last delta applied to each (see [`crate::db::deltas`]).
    /// Its hash tag is the bucket's whole key, so both sit in one slot and a
    /// script can compare and write them together; it starts like the
    /// bucket's key, so whatever deletes a version's keys finds it.
    pub fn bucket_times(&self, version: &str, bucket: u32) -> String {
        let data = self.bucket(version, bucket);
        format!("{data}:t{{{data}}}")
    }

    /// Sorted set: the dataset's deltas (id → event time in ms), the
    /// log a version replays before it goes live.
    pub fn deltas(&self) -> String {
        format!("{PREFIX}:{{{}}}:deltas", self.dataset)
    }

    /// Hash: one delta's record (source, etag, size, event time, state,
    /// users, reason).
    pub fn delta(&self, id: &str) -> String {
        format!("{PREFIX}:{{{}}}:d:{id}", self.dataset)
    }

    /// Set: the deltas replayed onto a version before it goes live.
    pub fn replayed(&self, version: &str) -> String {
        format!("{PREFIX}:{{{}}}:v:{version}:replayed", self.dataset)
    }

    /// What every bucket key of a version starts with: the bucket number
    /// follows. For writers that name many buckets at once.
    pub fn bucket_prefix(&self, version: &str) -> String {
        format!("{}{version}:", self.data_prefix())
    }

    /// Prefix of every data key of the dataset: `fs:u:<dataset>:`.
    pub fn data_prefix(&self) -> String {
        format!("{PREFIX}:u:{}:", self.dataset)
    }
}

/// Stable 64-bit FNV-1a hash. Its output is part of the stored layout (it picks
/// a user's bucket), so it must never change.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The bucket that holds `user_id` in a version with `buckets` buckets.
pub fn bucket_of(user_id: &str, buckets: u32) -> u32 {
    (fnv1a64(user_id.as_bytes()) % u64::from(buckets.max(1))) as u32
}

/// Bucket count for a version expected to hold `users` users.
pub fn bucket_count(users: u64, users_per_bucket: u32) -> u32 {
    let per = u64::from(users_per_bucket.max(1));
    users.div_ceil(per).clamp(1, 1 << 24) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn metadata_keys_share_one_slot() {
        let k = DatasetKeys::new("recommendations").unwrap();
        let v = "20261126T030000000Z-00000000000000000000000000000000-0a1b2c3d";
        let slot = Slot::for_key(k.live());
        for key in [
            k.versions(),
            k.version(v),
            k.chunks_done(v),
            k.plan(v),
            k.log(),
            k.deltas(),
            k.delta(v),
            k.replayed(v),
        ] {
            assert_eq!(Slot::for_key(&key), slot, "{key}");
        }
    }

    #[test]
    fn data_keys_spread_over_slots() {
        let k = DatasetKeys::new("recommendations").unwrap();
        let slots: std::collections::HashSet<_> = (0..1000)
            .map(|b| Slot::for_key(k.bucket("v1", b)))
            .collect();
        assert!(slots.len() > 900, "only {} distinct slots", slots.len());
        assert_eq!(k.bucket("v1", 42), "fs:u:recommendations:v1:42");
        assert_eq!(format!("{}42", k.bucket_prefix("v1")), k.bucket("v1", 42));
        for b in [0, 42, 999] {
            let times = k.bucket_times("v1", b);
            assert_eq!(
                Slot::for_key(&times),
                Slot::for_key(k.bucket("v1", b)),
                "{times}"
            );
            assert!(times.starts_with(&k.bucket_prefix("v1")), "{times}");
        }
    }

    #[test]
    fn dataset_names_cannot_inject_hash_tags_or_separators() {
        for bad in ["", "a{b}", "a:b", "a b", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(validate_dataset(bad), Err(KeyError::BadDataset), "{bad:?}");
        }
        for good in ["recommendations", "recs-v2", "a.b_c", "0"] {
            assert!(validate_dataset(good).is_ok());
        }
    }

    #[test]
    fn bucket_hash_is_stable() {
        // Pinned values: changing the hash would strand every stored version.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bucket_of("1", 1), 0);
        assert!(bucket_of("42", 7) < 7);
    }

    #[test]
    fn bucket_count_rounds_up_and_is_at_least_one() {
        assert_eq!(bucket_count(0, 64), 1);
        assert_eq!(bucket_count(64, 64), 1);
        assert_eq!(bucket_count(65, 64), 2);
        assert_eq!(bucket_count(200_000, 64), 3125);
    }
}
