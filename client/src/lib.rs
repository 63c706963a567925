//! # featurestore: read users straight from the store
//!
//! The reading half of the feature store as a library: a ranking service
//! links it (or its Python package) and reads from Redis in one network
//! hop, with the same answers as the HTTP API and the same promise. The
//! serve Lambda is one of its users.
//!
//! ```ignore
//! let client = Client::connect(&redis_config, Options::default()).await?;
//! let one = client.get("recs", "42", &View::default(), None).await?;
//! let ids = [BatchId::number(1), BatchId::text("u-2")?];
//! let many = client.batch_get("recs", &ids, &View::new(Select::of(None, Some(10))?, None::<[&str; 0]>)?, None).await?;
//! ```
//!
//! ## Consistency
//! - **One version per call.** A call reads the dataset's live pointer once
//!   and every user it returns comes from that version: a batch read during
//!   a flip is all old or all new, never a mix. The version is in the answer.
//! - **No half-written user.** A version goes live only once all its users
//!   are written, and a user's record is one Redis value.
//! - **Staleness of the pointer.** The pointer (with the dataset's maximum
//!   age) is cached in the process for [`Options::pointer_ttl`] (1 s by
//!   default, as serve's `FS_POINTER_TTL_MS`): after a flip a client may
//!   answer from the previous version for up to that long. That version
//!   stays complete and readable meanwhile: retention deletes a superseded
//!   version only after a grace longer than any pointer cache.
//! - **Pinned version.** Naming a version reads that one, if it is live or
//!   a retained backup.
//! - **Freshness.** Every answer says when its batch was produced and went
//!   live, its age, and whether that age is past the dataset's maximum
//!   (its own, set with `fsctl`, or [`Options::max_age`]). With
//!   [`Options::refuse_stale`] a stale live version is refused
//!   (`stale_data`) instead of flagged.
//!
//! ## Layout
//! - [`reader`]: the Redis side: the pointer cache, then one `HGET` per user
//!   or one `HMGET` per bucket, pipelined per primary.
//! - [`render`]: answers written as JSON straight from the stored records.
//! - [`view`]: what a read asks for (rank, limit, fields, batch ids).
//! - [`error`]: failures, with the HTTP API's codes.

pub mod error;
pub mod reader;
pub mod render;
pub mod view;

use std::time::Duration;

use shared::config::RedisConfig;
use shared::db::store::Redis;
use shared::record::{validate_user_id, Stored};
use shared::version_id::{self, is_version_id};
use tracing::error;

pub use error::Error;
pub use reader::Reader;
pub use render::{Freshness, Served};
pub use view::{BatchId, Select, View};

/// How a client reads.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a dataset's live pointer is cached (how stale an answer may
    /// be after a flip).
    pub pointer_ttl: Duration,
    /// The maximum age of a live batch for datasets that set none.
    pub max_age: Option<Duration>,
    /// Refuse a stale live version (`stale_data`) instead of flagging it.
    pub refuse_stale: bool,
    /// Largest answer, in bytes; a batch read past it is refused
    /// (`response_too_large`).
    pub max_response_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pointer_ttl: Duration::from_secs(1),
            max_age: None,
            refuse_stale: false,
            max_response_bytes: usize::MAX,
        }
    }
}

/// One call's answer: the JSON the HTTP API answers with, and where its
/// users came from.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer as JSON, shaped as the HTTP API's (see its OpenAPI document).
    pub body: String,
    /// The one version every user of the answer comes from.
    pub version: String,
    pub freshness: Freshness,
    /// The pointer came from the cache (no Redis call for it).
    pub cache_hit: bool,
    /// Users asked for.
    pub users: usize,
}

/// Reads users; one per process, shared by every caller (it is `Sync`).
pub struct Client {
    reader: Reader,
    options: Options,
}

impl Client {
    pub fn new(redis: Redis, options: Options) -> Self {
        Client {
            reader: Reader::new(redis, options.pointer_ttl),
            options,
        }
    }

    /// A client reading through `reader`, whose pointer cache TTL takes
    /// the place of the options'.
    pub fn with_reader(reader: Reader, options: Options) -> Self {
        Client {
            options: Options {
                pointer_ttl: reader.ttl(),
                ..options
            },
            reader,
        }
    }

    /// Connects once (cluster or standalone, TLS with `rediss://`, a Redis
    /// user and password when given) and checks the connection.
    pub async fn connect(redis: &RedisConfig, options: Options) -> Result<Self, Error> {
        let conn = Redis::connect_checked(redis)
            .await
            .map_err(|e| Error::new(503, "unavailable", format!("cannot connect to Redis: {e}")))?;
        Ok(Client::new(conn, options))
    }

    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// One user of `dataset`, cut to `view`, from the live version or the
    /// pinned `version`.
    pub async fn get(
        &self,
        dataset: &str,
        user: &str,
        view: &View,
        version: Option<&str>,
    ) -> Result<Answer, Error> {
        self.get_with(dataset, user, version, |served, stored| {
            render::render_user(user, view, served, stored)
        })
        .await
    }

    /// One user, written by `render` (the HTTP API's original route has its
    /// own shapes).
    pub async fn get_with(
        &self,
        dataset: &str,
        user: &str,
        version: Option<&str>,
        render: impl FnOnce(&Served<'_>, &Stored<'_>) -> Result<String, Error>,
    ) -> Result<Answer, Error> {
        validate_user_id(user).map_err(|e| Error::bad_request(format!("userId: {e}")))?;
        let (ds, at) = self.resolve(dataset, version).await?;
        let served = self.served(dataset, &at)?;
        let bytes = self.reader.read_one(&ds, &at, user).await?.ok_or_else(|| {
            Error::not_found(
                "unknown_user",
                format!("user {user} is not in dataset {dataset}"),
            )
        })?;
        let body = render(&served, &decode(&served, user, &bytes)?)?;
        self.answer(body, served, at.cache_hit, 1)
    }

    /// Users of `dataset` in the order asked, each once (see
    /// [`BatchId::dedup`]), each with its status, all from one version.
    pub async fn batch_get(
        &self,
        dataset: &str,
        users: &[BatchId],
        view: &View,
        version: Option<&str>,
    ) -> Result<Answer, Error> {
        let (ds, at) = self.resolve(dataset, version).await?;
        let served = self.served(dataset, &at)?;
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let found = self.reader.read_many(&ds, &at, &ids).await?;
        // Past the cap already as stored: refused before rendering.
        let cap = self.options.max_response_bytes;
        let stored = found.stored_bytes();
        if stored > cap {
            return Err(Error::too_large(stored, cap));
        }
        let records = users
            .iter()
            .enumerate()
            .map(|(i, u)| found.get(i).map(|b| decode(&served, &u.id, b)).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let body = render::render_batch(users, &records, view, &served)?;
        self.answer(body, served, at.cache_hit, users.len())
    }

    /// The dataset and the version to read it from.
    async fn resolve(
        &self,
        dataset: &str,
        version: Option<&str>,
    ) -> Result<(shared::db::protocol::Dataset, reader::Resolved), Error> {
        if version.is_some_and(|v| !is_version_id(v)) {
            return Err(Error::bad_request("version is not a version id"));
        }
        let ds = self
            .reader
            .dataset(dataset)
            .map_err(|e| Error::bad_request(format!("dataset: {e}")))?;
        let at = self.reader.resolve(&ds, version).await?;
        Ok((ds, at))
    }

    /// Where the answer's users come from and how fresh that is; refused
    /// when it is stale, read through the pointer, and stale answers are
    /// refused.
    fn served<'a>(&self, dataset: &'a str, at: &'a reader::Resolved) -> Result<Served<'a>, Error> {
        let freshness = Freshness {
            produced_ms: version_id::event_ms(&at.version),
            live_ms: at.live_ms,
            max_age: at.max_age.unwrap_or(self.options.max_age),
            now_ms: shared::now_ms(),
        };
        if let (true, true, Some(max_age)) = (
            freshness.is_stale(),
            at.through_pointer && self.options.refuse_stale,
            freshness.max_age,
        ) {
            return Err(Error::stale(
                dataset,
                &at.version,
                freshness.age_s().unwrap_or(0),
                max_age,
            ));
        }
        Ok(Served {
            dataset,
            version: &at.version,
            freshness,
        })
    }

    fn answer(
        &self,
        body: String,
        served: Served<'_>,
        cache_hit: bool,
        users: usize,
    ) -> Result<Answer, Error> {
        let cap = self.options.max_response_bytes;
        if body.len() > cap {
            return Err(Error::too_large(body.len(), cap));
        }
        Ok(Answer {
            body,
            version: served.version.to_string(),
            freshness: served.freshness,
            cache_hit,
            users,
        })
    }
}

fn decode<'b>(served: &Served<'_>, user: &str, bytes: &'b [u8]) -> Result<Stored<'b>, Error> {
    Stored::decode(bytes).map_err(|e| {
        error!(dataset = %served.dataset, version = %served.version, %user, error = %e, "stored record does not decode");
        Error::internal()
    })
}
