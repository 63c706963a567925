//! What the protocol's steps take and return: version states, plans,
//! version records, the pointer, and the outcome of each step.

/// State of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ingesting,
    Validating,
    Live,
    Backup,
    RolledBack,
    Superseded,
    Held,
    Failed,
    Deleting,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ingesting => "ingesting",
            State::Validating => "validating",
            State::Live => "live",
            State::Backup => "backup",
            State::RolledBack => "rolled_back",
            State::Superseded => "superseded",
            State::Held => "held",
            State::Failed => "failed",
            State::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ingesting" => State::Ingesting,
            "validating" => State::Validating,
            "live" => State::Live,
            "backup" => State::Backup,
            "rolled_back" => State::RolledBack,
            "superseded" => State::Superseded,
            "held" => State::Held,
            "failed" => State::Failed,
            "deleting" => State::Deleting,
            _ => return None,
        })
    }

    /// Whether every chunk of the version was written and its data is kept
    /// (so it can be read by explicit version).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            State::Live | State::Backup | State::RolledBack | State::Superseded | State::Held
        )
    }

    /// Whether the version is still being written.
    pub fn is_in_progress(self) -> bool {
        matches!(self, State::Ingesting | State::Validating)
    }
}

/// One chunk of a plan: bytes `[start, end)` (Parquet: row groups) of the
/// batch's file `file`. A batch of one object has the one file 0; a folder
/// batch lists its files in the version record ([`BatchFile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub file: u32,
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// `range` of file `file`.
    pub fn of(file: u32, (start, end): (u64, u64)) -> Self {
        Span { file, start, end }
    }

    /// As the plan stores it: `start-end`, and `@file` for files after the first.
    pub(super) fn text(self) -> String {
        match self.file {
            0 => format!("{}-{}", self.start, self.end),
            f => format!("{}-{}@{f}", self.start, self.end),
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        let (range, file) = match s.split_once('@') {
            Some((r, f)) => (r, f.parse().ok()?),
            None => (s, 0),
        };
        let (a, b) = range.split_once('-')?;
        Some(Span {
            file,
            start: a.parse().ok()?,
            end: b.parse().ok()?,
        })
    }
}

impl From<(u64, u64)> for Span {
    fn from(range: (u64, u64)) -> Self {
        Span::of(0, range)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.file {
            0 => write!(f, "bytes {}-{}", self.start, self.end),
            n => write!(f, "file {n} bytes {}-{}", self.start, self.end),
        }
    }
}

/// What one chunk reads: one span, or the spans of several small files of a
/// folder batch packed into one chunk, in file order. A folder of thousands
/// of small part files so costs tens of chunk messages and invocations, not
/// thousands; each packed file is still read as it would be alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ChunkPlan(pub Vec<Span>);

impl ChunkPlan {
    /// As the plan stores it: the spans' own texts, joined by `,`.
    pub(super) fn text(&self) -> String {
        let texts: Vec<String> = self.0.iter().map(|s| s.text()).collect();
        texts.join(",")
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        let spans = s.split(',').map(Span::parse).collect::<Option<Vec<_>>>()?;
        (!spans.is_empty()).then_some(ChunkPlan(spans))
    }

    /// The spans it reads.
    pub fn spans(&self) -> &[Span] {
        &self.0
    }
}

impl From<Span> for ChunkPlan {
    fn from(span: Span) -> Self {
        ChunkPlan(vec![span])
    }
}

impl std::fmt::Display for ChunkPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            [first, .., last] => write!(f, "{} files ({first} … {last})", self.0.len()),
            [] => write!(f, "nothing"),
        }
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a span: {text:?}")))
    }
}

/// One file of a folder batch, as planned: chunk messages name it, and a
/// chunk whose file does not match is refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchFile {
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// Its format label (ingest's `layout::label`).
    pub format: String,
}

/// What the planner knows of a new version.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub version: &'a str,
    /// The plan: what each chunk reads (record-aligned spans).
    pub spans: &'a [ChunkPlan],
    /// A folder batch's files, in the order spans number them (empty for a
    /// batch of one object, whose file is the record's source).
    pub files: &'a [BatchFile],
    pub buckets: u32,
    pub source: &'a str,
    pub etag: &'a str,
    pub size: u64,
    pub format: &'a str,
    /// Estimated bytes in Redis once written (0: unknown).
    pub est_bytes: u64,
    /// Register the version `held` with this reason, before any write (the
    /// memory guard).
    pub hold: Option<&'a str>,
    /// Records the batch holds, as its manifest says: the version fails at
    /// completion if its chunks read another number.
    pub expected_records: Option<u64>,
}

/// What registering found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Created,
    /// The version was registered before (a repeated event), in this state.
    Existing(Option<State>),
}

/// A version's record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub version: String,
    pub state: State,
    pub chunks: u32,
    pub chunks_done: u32,
    pub buckets: u32,
    /// Distinct users (set when the version completes).
    pub users: u64,
    /// Users written by the chunks, duplicates included.
    pub users_written: u64,
    pub bad_records: u64,
    pub duplicates: u64,
    pub source: String,
    pub etag: String,
    pub size: u64,
    pub format: String,
    /// A folder batch's files (empty for a batch of one object).
    pub files: Vec<BatchFile>,
    /// Estimated bytes in Redis, from the planner (0: unknown).
    pub est_bytes: u64,
    /// Held before any write (the memory guard): promoting it ingests it.
    pub unwritten: bool,
    pub created_ms: u64,
    /// When its last chunk was written (server time): from here to
    /// `live_ms` is the flip's own time (count, checks, pointer).
    pub written_ms: Option<u64>,
    pub completed_ms: Option<u64>,
    pub live_ms: Option<u64>,
    pub retired_ms: Option<u64>,
    pub reason: Option<String>,
    /// Retention removed the data; the record stays to say why it failed.
    pub data_deleted: bool,
    /// The distinct users its chunks wrote, counted when they were all in
    /// (before any delta was replayed onto it).
    pub counted_users: Option<u64>,
}

/// The live pointer of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub version: String,
    pub buckets: u32,
    pub since_ms: u64,
    pub previous: Option<String>,
    /// Set while the dataset is rolled back: the version it left.
    pub rolled_back_from: Option<String>,
    /// Versions up to this one never go live by themselves (set by rollbacks).
    pub floor: Option<String>,
}

/// One chunk whose writes were all acknowledged.
#[derive(Debug, Clone)]
pub struct ChunkDone<'a> {
    pub version: &'a str,
    pub chunk: u32,
    /// What it read, which must be the planned one.
    pub span: ChunkPlan,
    /// The version's bucket count (from its record), for counting and clean-up.
    pub buckets: u32,
    /// Users written, and bad records skipped.
    pub users: u64,
    pub bad: u64,
}

/// What a chunk's completion led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More chunks to go.
    Pending { done: u32, total: u32 },
    /// This chunk completed the version and it went live.
    Flipped { users: u64 },
    /// Completed and passed its checks, but a delta newer than it is logged
    /// and not replayed onto it yet: replay the deltas newer than the
    /// version ([`crate::db::deltas`]), then [`Dataset::finalize`] again.
    Replay,
    /// Completed, and held by the user-count guard until promoted.
    Held(String),
    /// Completed after a newer version went live (or not above the floor).
    Superseded(String),
    /// Completed and failed a check, or failed while this chunk wrote.
    Failed(String),
    /// The version had settled before (a repeated delivery), or is gone.
    Settled(Option<State>),
    /// The chunk is not part of the version's plan.
    NotPlanned {
        planned: Option<ChunkPlan>,
        chunks: u32,
    },
}

/// An entry of a dataset's log.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct LogEntry {
    pub event: String,
    pub version: String,
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backwards: Option<bool>,
    pub at_ms: u64,
}

/// Result of an operator move of the pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// The pointer moved; holds the version it left (if any).
    Moved {
        left: Option<String>,
    },
    /// The target is live already.
    AlreadyLive,
    /// A delta newer than the target is not in it: replay the deltas newer
    /// than it ([`crate::db::deltas`]), then move again.
    Replay,
    /// Not allowed, with the reason.
    Refused(String),
    UnknownVersion,
}
