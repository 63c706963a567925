//! The commands ingest sends for a chunk, round by round, built by the same
//! code but not sent: for comparing ingest with Redis's own mass insertion
//! of exactly the same writes (the bench), and for checking that both agree.

use ingest::error::IngestError;
use ingest::s3::messages::ChunkMessage;
use ingest::s3::source::ObjectSource;
use ingest::write::{Round, Sink};
use redis::Cmd;
use shared::config::IngestConfig;
use shared::keys::DatasetKeys;

/// A sink that keeps each round's commands instead of sending them.
pub struct Collect {
    keys: DatasetKeys,
    version: String,
    /// Whether commands are grouped as a cluster needs them.
    cluster: bool,
    pub rounds: Vec<Vec<Cmd>>,
}

impl Sink for Collect {
    fn take(&mut self, round: &mut Round) {
        let sealed = round.seal(
            &self.keys,
            &self.version,
            self.cluster,
            ingest::write::PIPELINE_MAX_BYTES,
        );
        self.rounds
            .push(sealed.flat_map(|p| p.cmds).map(|(_, cmd)| cmd).collect());
    }
}

/// The one chunk of a whole JSON Lines file `key` of `size` bytes, read
/// from a local folder ([`crate::FileSource`]), for `version` of `dataset`
/// in `buckets` buckets; [`ChunkMessage::per_range`] cuts it in ranges.
pub fn local_chunk(
    dataset: &str,
    version: &str,
    key: &str,
    size: u64,
    buckets: u32,
) -> ChunkMessage {
    ChunkMessage {
        dataset: dataset.into(),
        version: version.into(),
        bucket: "local".into(),
        key: key.into(),
        etag: String::new(),
        size,
        format: ingest::layout::ChunkFormat::JsonLines,
        compression: Default::default(),
        file: 0,
        chunk: 0,
        chunks: 1,
        start: 0,
        end: size,
        buckets,
        more: Vec::new(),
        delta: false,
    }
}

/// The commands ingest would send for the chunk `msg`, round by round.
pub async fn chunk_rounds<S: ObjectSource>(
    config: &IngestConfig,
    source: &S,
    msg: &ChunkMessage,
    cluster: bool,
) -> Result<Vec<Vec<Cmd>>, IngestError> {
    let keys =
        DatasetKeys::new(&msg.dataset).map_err(|_| IngestError::Dataset(msg.dataset.clone()))?;
    let sink = Collect {
        keys,
        version: msg.version.clone(),
        cluster,
        rounds: Vec::new(),
    };
    let writer = ingest::load::read_chunk(config, source, msg, sink).await?;
    Ok(writer.into_sink().rounds)
}
