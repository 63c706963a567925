//! # featurestore for Python
//!
//! The client library ([`featurestore`]) as a Python extension module: a
//! ranking service in Python reads users straight from the store's Redis,
//! one network hop, with the HTTP API's answers (as plain dicts) and its
//! promise: every user of a call comes from one batch version.
//!
//! Each call releases the GIL while it waits on Redis, so threads of a
//! Python server read in parallel through one shared connection. Answers are
//! written as JSON by the same code serve uses and handed to Python's `json`
//! module, so a dict here is exactly what the HTTP API sends.

use std::time::Duration;

use featurestore::{BatchId, Options, Select, View};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyInt, PyString};
use shared::config::{RedisAuth, RedisConfig, Secret};

pyo3::create_exception!(
    featurestore,
    Error,
    PyException,
    "A read failed; `.code` and `.status` are the HTTP API's."
);
pyo3::create_exception!(
    featurestore,
    InvalidRequest,
    Error,
    "What was asked cannot be read (code `invalid_request`)."
);
pyo3::create_exception!(featurestore, NotFound, Error, "Nothing to answer with: `unknown_dataset`, `no_live_version`, `unknown_version`, `unknown_user` or `rank_out_of_range`.");
pyo3::create_exception!(featurestore, Unavailable, Error, "Redis did not answer in time (`unavailable`), or the live batch is past its maximum age and stale answers are refused (`stale_data`); retry later.");

/// The library's error as the matching Python exception, with `code`,
/// `status` and `message` attributes.
fn raise(py: Python<'_>, e: featurestore::Error) -> PyErr {
    let err = match e.status {
        400 | 413 => InvalidRequest::new_err(e.message.clone()),
        404 => NotFound::new_err(e.message.clone()),
        503 => Unavailable::new_err(e.message.clone()),
        _ => Error::new_err(e.message.clone()),
    };
    let value = err.value(py);
    let set = value
        .setattr("code", e.code)
        .and_then(|()| value.setattr("status", e.status))
        .and_then(|()| value.setattr("message", &e.message));
    match set {
        Ok(()) => err,
        Err(other) => other,
    }
}

/// `json.loads`, looked up once.
fn json_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("json")?.getattr("loads")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// A connection to the store, shared by every thread of the process.
///
/// `Client(redis_url, *, cluster=True, username=None, password=None,
/// ca_file=None, timeout_ms=1000, pointer_ttl_ms=1000, max_age_s=None,
/// refuse_stale=False)`: `redis_url` is one node (or several, comma
/// separated); `rediss://` is TLS. Give the read-only Redis user (`fs-serve`)
/// as `username` and `password`.
#[pyclass(frozen, module = "featurestore")]
struct Client {
    inner: featurestore::Client,
    runtime: tokio::runtime::Runtime,
}

/// A rank or a limit as the library takes it: a negative number is the
/// caller's mistake, told as the library tells a zero.
fn count(name: &str, n: Option<i64>) -> Result<Option<u64>, featurestore::Error> {
    match n {
        Some(n) if n < 1 => Err(featurestore::Error::bad_request(format!(
            "{name} must be a whole number from 1 to {}",
            u32::MAX
        ))),
        n => Ok(n.map(|n| n as u64)),
    }
}

fn view(
    rank: Option<i64>,
    limit: Option<i64>,
    fields: Option<Vec<String>>,
) -> Result<View, featurestore::Error> {
    let select = Select::of(count("rank", rank)?, count("limit", limit)?)?;
    View::new(
        select,
        fields.as_ref().map(|f| f.iter().map(String::as_str)),
    )
}

/// A user id as Python gives it: a string, or a whole number.
fn batch_id(i: usize, id: &Bound<'_, PyAny>) -> Result<BatchId, featurestore::Error> {
    if let Ok(s) = id.cast::<PyString>() {
        let s = s.to_cow().map_err(|_| {
            featurestore::Error::bad_request(format!("ids[{i}] is not valid UTF-8"))
        })?;
        return BatchId::text(&s)
            .map_err(|e| featurestore::Error::bad_request(format!("ids[{i}]: {}", e.message)));
    }
    if id.is_instance_of::<PyInt>() {
        if let Ok(n) = id.extract::<i64>() {
            return Ok(BatchId::number(n));
        }
    }
    Err(featurestore::Error::bad_request(format!(
        "ids[{i}] must be a string or a whole number"
    )))
}

impl Client {
    /// Runs a read with the GIL released, and turns its JSON answer into
    /// Python objects.
    fn call<'py>(
        &self,
        py: Python<'py>,
        read: impl std::future::Future<Output = Result<featurestore::Answer, featurestore::Error>>
            + Send,
    ) -> PyResult<Bound<'py, PyAny>> {
        let answer = py
            .detach(|| self.runtime.block_on(read))
            .map_err(|e| raise(py, e))?;
        json_loads(py)?.call1((answer.body,))
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (redis_url, *, cluster=true, username=None, password=None, ca_file=None, timeout_ms=1000, pointer_ttl_ms=1000, max_age_s=None, refuse_stale=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        redis_url: &str,
        cluster: bool,
        username: Option<String>,
        password: Option<String>,
        ca_file: Option<String>,
        timeout_ms: u64,
        pointer_ttl_ms: u64,
        max_age_s: Option<u64>,
        refuse_stale: bool,
    ) -> PyResult<Self> {
        let auth = match (username, password) {
            (Some(name), Some(p)) => RedisAuth::User {
                name,
                password: Secret::new(p),
            },
            (None, Some(p)) => RedisAuth::Token(Secret::new(p)),
            (Some(_), None) => {
                return Err(raise(
                    py,
                    featurestore::Error::bad_request("a username needs a password"),
                ))
            }
            (None, None) => RedisAuth::None,
        };
        let redis = RedisConfig {
            urls: redis_url.split(',').map(|u| u.trim().to_string()).collect(),
            cluster,
            timeout: Duration::from_millis(timeout_ms),
            read_from_replicas: false,
            auth,
            ca_file,
        };
        let options = Options {
            pointer_ttl: Duration::from_millis(pointer_ttl_ms),
            max_age: max_age_s.filter(|&s| s > 0).map(Duration::from_secs),
            refuse_stale,
            ..Options::default()
        };
        // One thread's scheduler, driven by whichever caller waits: a read
        // runs on the calling thread, with no hand-off to another.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new_err(format!("cannot start the I/O runtime: {e}")))?;
        let inner = py
            .detach(|| runtime.block_on(featurestore::Client::connect(&redis, options)))
            .map_err(|e| raise(py, e))?;
        Ok(Client { inner, runtime })
    }

    /// One user's answer: `{"dataset", "userId", "version", "freshness",
    /// "items", "count", "fields"}` (with `rank` and `item` for a rank).
    #[pyo3(signature = (dataset, user_id, *, limit=None, rank=None, fields=None, version=None))]
    #[allow(clippy::too_many_arguments)]
    fn get<'py>(
        &self,
        py: Python<'py>,
        dataset: &str,
        user_id: &Bound<'py, PyAny>,
        limit: Option<i64>,
        rank: Option<i64>,
        fields: Option<Vec<String>>,
        version: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let user = batch_id(0, user_id)
            .map_err(|_| {
                featurestore::Error::bad_request("user_id must be a string or a whole number")
            })
            .map_err(|e| raise(py, e))?;
        let view = view(rank, limit, fields).map_err(|e| raise(py, e))?;
        let client = &self.inner;
        self.call(py, client.get(dataset, &user.id, &view, version.as_deref()))
    }

    /// Many users' answers, all from one version: `{"dataset", "version",
    /// "freshness", "count", "found", "results"}`, one result per distinct
    /// id in the order given, each with its `status` (`found`,
    /// `unknown_user`, `rank_out_of_range`).
    #[pyo3(signature = (dataset, ids, *, limit=None, rank=None, fields=None, version=None))]
    #[allow(clippy::too_many_arguments)]
    fn batch_get<'py>(
        &self,
        py: Python<'py>,
        dataset: &str,
        ids: &Bound<'py, PyAny>,
        limit: Option<i64>,
        rank: Option<i64>,
        fields: Option<Vec<String>>,
        version: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if ids.is_instance_of::<PyString>() {
            return Err(raise(
                py,
                featurestore::Error::bad_request("ids must be a list of ids, not one string"),
            ));
        }
        let users = ids
            .try_iter()?
            .enumerate()
            .map(|(i, id)| batch_id(i, &id?).map_err(|e| raise(py, e)))
            .collect::<PyResult<Vec<_>>>()?;
        let users = BatchId::dedup(users);
        if users.is_empty() {
            return Err(raise(
                py,
                featurestore::Error::bad_request("no user ids given"),
            ));
        }
        let view = view(rank, limit, fields).map_err(|e| raise(py, e))?;
        let client = &self.inner;
        self.call(
            py,
            client.batch_get(dataset, &users, &view, version.as_deref()),
        )
    }

    /// Redis round trips made so far (a pipeline to one primary counts once).
    fn round_trips(&self) -> u64 {
        self.inner.reader().round_trips()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    Ok(())
}
