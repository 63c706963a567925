//! How much Redis memory a version takes, from the sizes of its stored
//! values: the model behind `fsctl capacity`, held against `used_memory` by
//! the bench.
//!
//! A version is buckets (hashes of about `FS_USERS_PER_BUCKET` users, the
//! user id the field and the stored record the value). Redis 7 keeps a hash
//! of at most `hash-max-listpack-entries` fields, none longer than
//! `hash-max-listpack-value` bytes, as one listpack: per field and per value
//! an entry of a length header, the bytes (an integer-looking id as an
//! integer) and a back-length; allocated at jemalloc's size class for its
//! length. A larger hash is a hashtable: an entry, two strings and a slot
//! per field. Each bucket also costs its key's entry in the keyspace (the
//! key string, the object, the table slot, and in cluster mode the slot's
//! key list).
//!
//! Buckets hold a Poisson number of users (ids hash into them), so the model
//! draws buckets with the sample's value and id sizes instead of using means:
//! jemalloc's rounding and the listpack/hashtable switch depend on each
//! bucket's own size.

use crate::keys;

/// Redis settings the layout depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// `hash-max-listpack-entries` (Redis's default, and the template's).
    pub max_entries: u64,
    /// `hash-max-listpack-value` (256 in the template and the local stack).
    pub max_value: u64,
}

impl Default for HashLimits {
    fn default() -> Self {
        HashLimits {
            max_entries: 128,
            max_value: 256,
        }
    }
}

/// One stored user as the sample gives it: its id and its stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSize {
    pub id: String,
    pub value_len: u64,
}

/// The memory model's answer for one version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VersionBytes {
    pub users: u64,
    pub buckets: u32,
    /// Bytes of `used_memory` for the whole version.
    pub bytes: f64,
    /// Share of buckets kept as hashtables rather than listpacks.
    pub hashtable_share: f64,
}

impl VersionBytes {
    pub fn per_user(&self) -> f64 {
        self.bytes / self.users.max(1) as f64
    }
}

/// Bytes a version of `users` users takes in Redis, for users like those of
/// `sample` (ids are taken as the sample's, renumbered to the version's
/// size when they are integers), in buckets of `users_per_bucket`.
pub fn version_bytes(
    sample: &[UserSize],
    users: u64,
    users_per_bucket: u32,
    dataset: &str,
    cluster: bool,
    limits: HashLimits,
) -> VersionBytes {
    let buckets = keys::bucket_count(users, users_per_bucket);
    if sample.is_empty() || users == 0 {
        return VersionBytes {
            users,
            buckets,
            bytes: 0.0,
            hashtable_share: 0.0,
        };
    }
    let mean = users as f64 / f64::from(buckets);
    // A bucket key as keys::bucket names it, with a version id's length.
    let key_len = keys::DatasetKeys::new(dataset)
        .map(|k| k.bucket(&"x".repeat(crate::version_id::VERSION_ID_LEN), buckets / 2))
        .map_or(80, |k| k.len()) as u64;
    let per_key = keyspace_entry(key_len, u64::from(buckets), cluster);
    // Integer ids spread over the version's range: their listpack entries
    // grow with its size, not the sample's.
    let int_ids = sample.iter().all(|u| as_int(&u.id).is_some());
    let mut rng = SplitMix(0x5eed);
    let draws = u64::from(buckets).min(4000);
    let (mut total, mut hashtables) = (0.0, 0u64);
    for _ in 0..draws {
        let n = poisson(&mut rng, mean);
        let members: Vec<(u64, u64)> = (0..n)
            .map(|_| {
                let u = &sample[(rng.next() % sample.len() as u64) as usize];
                let id = if int_ids {
                    id_entry_int((1 + rng.next() % users.max(1)) as i64)
                } else {
                    id_entry(&u.id)
                };
                (id, u.value_len)
            })
            .collect();
        let (bytes, hashtable) = bucket_bytes(&members, &sample_ids(sample, &mut rng, n), limits);
        total += bytes + per_key;
        hashtables += u64::from(hashtable);
    }
    VersionBytes {
        users,
        buckets,
        bytes: total / draws as f64 * f64::from(buckets),
        hashtable_share: hashtables as f64 / draws as f64,
    }
}

/// The raw id lengths of `n` sample users, for hashtable buckets (whose
/// fields are strings whatever they hold).
fn sample_ids(sample: &[UserSize], rng: &mut SplitMix, n: u64) -> Vec<u64> {
    (0..n)
        .map(|_| sample[(rng.next() % sample.len() as u64) as usize].id.len() as u64)
        .collect()
}

/// One bucket: `members` as (id entry bytes, value length); `id_lens` the
/// ids' string lengths. Returns its bytes and whether it is a hashtable.
fn bucket_bytes(members: &[(u64, u64)], id_lens: &[u64], limits: HashLimits) -> (f64, bool) {
    let n = members.len() as u64;
    let listpack = n <= limits.max_entries && members.iter().all(|&(_, v)| v <= limits.max_value);
    if listpack {
        // Header (6 bytes) and end byte, then a field and a value entry each.
        let len: u64 = 7 + members
            .iter()
            .map(|&(id, v)| id + string_entry(v))
            .sum::<u64>();
        return (size_class(len) as f64, false);
    }
    // A hashtable: the dict, its table, an entry and two strings per field.
    let table = 8 * n.next_power_of_two().max(4);
    let entries: u64 = members
        .iter()
        .zip(id_lens)
        .map(|(&(_, v), &id)| size_class(24) + size_class(sds_len(id)) + size_class(sds_len(v)))
        .sum();
    ((size_class(96) + size_class(table) + entries) as f64, true)
}

/// A key's cost in the keyspace: its string, its object, its dict entry
/// (with the cluster's per-slot links), and its share of the table.
fn keyspace_entry(key_len: u64, keys_total: u64, cluster: bool) -> f64 {
    let entry = if cluster { 24 + 16 } else { 24 };
    let slots = keys_total.next_power_of_two() as f64 / keys_total.max(1) as f64;
    (size_class(sds_len(key_len)) + size_class(16) + size_class(entry)) as f64 + 8.0 * slots
}

/// Bytes of an sds string of `len` bytes (header, bytes, terminator).
fn sds_len(len: u64) -> u64 {
    let header = match len {
        0..=31 => 1,
        32..=255 => 3,
        256..=65535 => 5,
        _ => 9,
    };
    header + len + 1
}

/// A listpack string entry of `len` bytes: encoding header, bytes, back-length.
fn string_entry(len: u64) -> u64 {
    let header = match len {
        0..=63 => 1,
        64..=4095 => 2,
        _ => 5,
    };
    header + len + backlen(header + len)
}

fn backlen(len: u64) -> u64 {
    match len {
        0..=127 => 1,
        128..=16383 => 2,
        16384..=2097151 => 3,
        _ => 4,
    }
}

/// A field entry for the id `id`: an integer when the listpack stores it as
/// one, else a string.
fn id_entry(id: &str) -> u64 {
    match as_int(id) {
        Some(n) => id_entry_int(n),
        None => string_entry(id.len() as u64),
    }
}

fn id_entry_int(n: i64) -> u64 {
    let body = match n {
        0..=127 => 1,
        -4096..=4095 => 2,
        -32768..=32767 => 3,
        -8388608..=8388607 => 4,
        -2147483648..=2147483647 => 5,
        _ => 9,
    };
    body + backlen(body)
}

/// The integer a listpack takes `s` for: decimal, no leading zero or plus.
fn as_int(s: &str) -> Option<i64> {
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// jemalloc's size class for `n` bytes (the allocation Redis counts).
pub fn size_class(n: u64) -> u64 {
    match n {
        0..=8 => 8,
        9..=128 => n.div_ceil(16) * 16,
        _ => {
            // Four classes between powers of two.
            let top = 63 - (n - 1).leading_zeros() as u64;
            let step = 1u64 << (top - 2);
            n.div_ceil(step) * step
        }
    }
}

/// A Poisson draw with mean `mean` (a normal approximation past 50).
fn poisson(rng: &mut SplitMix, mean: f64) -> u64 {
    if mean > 50.0 {
        // Box–Muller.
        let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (mean + z * mean.sqrt()).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.unit();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// A small seeded generator: the model gives the same answer every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_jemallocs() {
        let classes: Vec<u64> = [
            1, 8, 9, 16, 17, 24, 100, 128, 129, 160, 161, 4096, 4097, 5121,
        ]
        .iter()
        .map(|&n| size_class(n))
        .collect();
        assert_eq!(
            classes,
            [8, 8, 16, 16, 32, 32, 112, 128, 160, 160, 192, 4096, 5120, 6144]
        );
    }

    #[test]
    fn listpack_entries_follow_redis_encoding() {
        assert_eq!(string_entry(50), 1 + 50 + 1);
        assert_eq!(string_entry(200), 2 + 200 + 2);
        assert_eq!(id_entry("7"), 2);
        assert_eq!(id_entry("123456"), 5);
        assert_eq!(id_entry("0123"), string_entry(4));
        assert_eq!(id_entry("u-1"), string_entry(3));
    }

    #[test]
    fn larger_values_cost_more_and_long_ones_make_hashtables() {
        let sample = |len| {
            (1..=100)
                .map(|i| UserSize {
                    id: i.to_string(),
                    value_len: len,
                })
                .collect::<Vec<_>>()
        };
        let at = |len| {
            version_bytes(
                &sample(len),
                1_000_000,
                64,
                "recs",
                false,
                HashLimits::default(),
            )
        };
        let (small, large, huge) = (at(50), at(200), at(300));
        assert!(small.per_user() < large.per_user());
        assert_eq!(small.hashtable_share, 0.0);
        assert_eq!(huge.hashtable_share, 1.0);
        // A hashtable costs far more per user than a listpack of the same data.
        assert!(huge.per_user() - 300.0 > large.per_user() - 200.0 + 30.0);
        // About a value and an id, plus a little per user for the bucket.
        let over = small.per_user() - 50.0;
        assert!((5.0..25.0).contains(&over), "{over}");
    }
}
