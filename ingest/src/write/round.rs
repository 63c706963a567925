//! A round of users, packed for writing, and the users a chunk has seen.
//!
//! A round is what a [`super::Sink`] takes at a time: a sink for Redis turns
//! it into one HSET per bucket; a delta's buffer keeps its users as they are.

use std::collections::HashSet;

use redis::cluster_routing::Slot;
use redis::Cmd;
use shared::keys::DatasetKeys;

/// One pipeline's worth of a round's commands, each with its key's slot.
pub struct Piece {
    pub cmds: Vec<(Slot, Cmd)>,
    /// Users the commands write.
    pub users: u64,
}

/// What a round keeps per user besides its bytes: its bucket, where its
/// value starts in the round's buffer, the value's length and the id's
/// (which follows the value). A round's buffer stays far below 4 GiB
/// (`FS_INGEST_ROUNDS_MIB` is at most `MAX_ROUNDS_MIB`, shared by three rounds).
#[derive(Clone, Copy)]
struct Entry {
    bucket: u32,
    start: u32,
    value_len: u32,
    id_len: u32,
}

/// One round of users, packed: each user's stored value and id sit in one
/// buffer, so adding a user allocates nothing; the per-bucket commands are
/// built a pipeline at a time as the round is sent (a [`Sealed`] round), so a round
/// is never held twice.
#[derive(Default)]
pub struct Round {
    pub(super) bytes: Vec<u8>,
    users: Vec<Entry>,
}

impl Round {
    /// Memory a round holds per user besides its bytes.
    pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

    /// Records a user whose value was appended to `bytes` from `start` on.
    pub(super) fn push(&mut self, bucket: u32, start: usize, id: &str) {
        let value_len = self.bytes.len() - start;
        self.bytes.extend_from_slice(id.as_bytes());
        self.users.push(Entry {
            bucket,
            start: start as u32,
            value_len: value_len as u32,
            id_len: id.len() as u32,
        });
    }

    /// Users in the round.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Memory the round holds: its bytes and its users' entries.
    pub fn held_bytes(&self) -> usize {
        self.bytes.len() + self.users.len() * Self::ENTRY_BYTES
    }

    fn id_and_value(&self, e: &Entry) -> (&[u8], &[u8]) {
        let (start, mid) = (e.start as usize, (e.start + e.value_len) as usize);
        (
            &self.bytes[mid..mid + e.id_len as usize],
            &self.bytes[start..mid],
        )
    }

    /// Each user's bucket, id and stored value (empty: a delta's tombstone),
    /// in the order they were added.
    pub fn users(&self) -> impl Iterator<Item = (u32, &[u8], &[u8])> {
        self.users.iter().map(|e| {
            let (id, value) = self.id_and_value(e);
            (e.bucket, id, value)
        })
    }

    /// Empties the round.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.users.clear();
    }

    /// The round, taken (this one is left empty), as one HSET per bucket of
    /// `version` (`cluster`: with each key's slot as a cluster needs it, or
    /// one slot for all), handed out in pieces of at most `piece_bytes` of
    /// keys, ids and values each (a bucket's HSET is never split, so a
    /// piece may hold one larger HSET).
    pub fn seal(
        &mut self,
        keys: &DatasetKeys,
        version: &str,
        cluster: bool,
        piece_bytes: usize,
    ) -> Sealed {
        let mut round = std::mem::take(self);
        round.users.sort_unstable_by_key(|u| u.bucket);
        let key = keys.bucket_prefix(version).into_bytes();
        Sealed {
            prefix: key.len(),
            key,
            round,
            next: 0,
            cluster,
            piece_bytes,
        }
    }
}

/// A round sorted by bucket, whose commands are built one piece at a time
/// (it is an iterator of pieces): only the piece being sent is held as commands
/// beside the round.
pub struct Sealed {
    round: Round,
    /// The users before this one are in pieces already handed out.
    next: usize,
    /// The version's bucket prefix, then the current bucket's number.
    key: Vec<u8>,
    prefix: usize,
    cluster: bool,
    piece_bytes: usize,
}

impl Sealed {
    /// Users in the round.
    pub fn len(&self) -> usize {
        self.round.len()
    }

    pub fn is_empty(&self) -> bool {
        self.round.is_empty()
    }
}

impl Iterator for Sealed {
    type Item = Piece;

    /// The next piece's HSETs, or `None` when all were handed out.
    fn next(&mut self) -> Option<Piece> {
        let users = &self.round.users[self.next..];
        if users.is_empty() {
            return None;
        }
        let (mut cmds, mut bytes, first) = (Vec::new(), 0, self.next);
        let mut number = itoa::Buffer::new();
        for group in users.chunk_by(|a, b| a.bucket == b.bucket) {
            self.key.truncate(self.prefix);
            self.key
                .extend_from_slice(number.format(group[0].bucket).as_bytes());
            let data: usize = group
                .iter()
                .map(|u| (u.value_len + u.id_len) as usize)
                .sum();
            if bytes > 0 && bytes + self.key.len() + data > self.piece_bytes {
                break;
            }
            bytes += self.key.len() + data;
            let mut cmd = Cmd::with_capacity(2 + 2 * group.len(), 4 + self.key.len() + data);
            cmd.arg("HSET").arg(&self.key[..]);
            for e in group {
                let (id, value) = self.round.id_and_value(e);
                cmd.arg(id).arg(value);
            }
            cmds.push((shared::db::store::slot_of(self.cluster, &self.key), cmd));
            self.next += group.len();
        }
        Some(Piece {
            cmds,
            users: (self.next - first) as u64,
        })
    }
}

/// Users a chunk remembers to catch a duplicate where it is (about 16 MiB
/// of integer ids). A chunk of more (a compressed file is one chunk) checks
/// the rest against these only: a duplicate among them is still caught when
/// the version completes, where stored users are counted against written ones.
pub(super) const SEEN_MAX: usize = 1 << 20;

/// The user ids of a chunk so far (up to [`SEEN_MAX`]), to catch a user
/// written twice. Integer ids, the common case, are kept as numbers; others
/// as strings.
pub(super) struct SeenUsers {
    pub(super) numbers: HashSet<u64, foldhash::fast::RandomState>,
    strings: HashSet<Box<str>, foldhash::fast::RandomState>,
}

impl SeenUsers {
    pub(super) fn with_capacity(n: usize) -> Self {
        SeenUsers {
            numbers: HashSet::with_capacity_and_hasher(n, Default::default()),
            strings: HashSet::default(),
        }
    }

    /// Whether `id` (canonical) is new; records it.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        // Only the one decimal spelling of a number maps to it: "007" stays a string.
        // Up to 19 digits always fit a u64.
        let canonical_number = !id.is_empty()
            && id.len() <= 19
            && id.bytes().all(|b| b.is_ascii_digit())
            && (id == "0" || !id.starts_with('0'));
        let full = self.numbers.len() + self.strings.len() >= SEEN_MAX;
        match canonical_number.then(|| id.parse::<u64>()) {
            Some(Ok(n)) if full => !self.numbers.contains(&n),
            Some(Ok(n)) => self.numbers.insert(n),
            _ if full => !self.strings.contains(id),
            _ => !self.strings.contains(id) && self.strings.insert(id.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_cut_into_pieces_of_whole_buckets_under_the_bound() {
        let keys = DatasetKeys::new("d").unwrap();
        let mut round = Round::default();
        for user in 0..1000u32 {
            let start = round.bytes.len();
            round.bytes.extend_from_slice(&[7u8; 90]);
            round.push(user % 300, start, &format!("user-{user}"));
        }
        let total = round.bytes.len();
        let pieces: Vec<Piece> = round.seal(&keys, "v1", true, 4096).collect();
        assert!(round.is_empty());
        assert!(pieces.len() > total / 4096, "{} pieces", pieces.len());
        let mut buckets = std::collections::HashSet::new();
        let mut users = 0;
        for piece in &pieces {
            let mut bytes = 0;
            let before = users;
            for (_, cmd) in &piece.cmds {
                let args: Vec<_> = cmd.args_iter().collect();
                let redis::Arg::Simple(key) = args[1] else {
                    panic!("a key")
                };
                assert!(buckets.insert(key.to_vec()), "a bucket in one HSET only");
                users += (args.len() - 2) / 2;
                bytes += args[1..]
                    .iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => b.len(),
                        _ => 0,
                    })
                    .sum::<usize>();
            }
            assert!(bytes <= 4096, "a piece of {bytes} bytes");
            assert_eq!(piece.users as usize, users - before);
        }
        assert_eq!((buckets.len(), users), (300, 1000));
    }

    #[test]
    fn seen_users_stop_growing_at_their_cap_and_still_catch_what_they_hold() {
        let mut seen = SeenUsers::with_capacity(16);
        for n in 0..SEEN_MAX as u64 + 10 {
            assert!(seen.insert(&n.to_string()), "{n} is new");
        }
        assert_eq!(seen.numbers.len(), SEEN_MAX, "full sets take no more");
        assert!(!seen.insert("5"), "a user it holds is still a duplicate");
        assert!(
            seen.insert(&(SEEN_MAX as u64 + 5).to_string()),
            "past the cap, left to the version's count"
        );
    }
}
