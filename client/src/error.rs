//! What a read can fail with: the same codes, statuses and messages as the
//! HTTP API's error answers, so a caller handles a refusal the same way
//! whichever path it read through.

use std::time::Duration;

/// A read's failure: the HTTP status the API answers it with, a
/// machine-readable code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Error {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            status,
            code,
            message: message.into(),
        }
    }

    /// What the caller sent cannot be read (a bad dataset name, user id,
    /// version or field list).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(400, "invalid_request", message)
    }

    /// Nothing to answer with: `unknown_dataset`, `no_live_version`,
    /// `unknown_version`, `unknown_user` or `rank_out_of_range`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Error::new(404, code, message)
    }

    /// Redis did not answer in time, or answered nonsense; retry shortly.
    pub fn unavailable() -> Self {
        Error::new(
            503,
            "unavailable",
            "the store is unavailable; retry shortly",
        )
    }

    /// The live batch is older than the dataset's maximum age, and the
    /// client refuses stale answers.
    pub fn stale(dataset: &str, version: &str, age_s: u64, max_age: Duration) -> Self {
        let message = format!("dataset {dataset}'s live version {version} is {age_s} s old, past its maximum age of {} s", max_age.as_secs());
        Error::new(503, "stale_data", message)
    }

    /// The answer would pass the response cap.
    pub fn too_large(bytes: usize, cap: usize) -> Self {
        let message = format!("the answer would be {bytes} bytes, over the cap of {cap} bytes (FS_MAX_RESPONSE_BYTES); ask for fewer users, a rank, a limit or fewer fields");
        Error::new(413, "response_too_large", message)
    }

    /// A stored record that does not decode: a bug, never the caller's doing.
    pub fn internal() -> Self {
        Error::new(500, "internal", "internal error")
    }

    /// Whether retrying the same read later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.status == 503
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
