//! # serve: the API Lambda
//!
//! Answers `GET /?userId=&rank=` (the original sample's API, default dataset)
//! and `GET /v1/{dataset}/users/{userId}` by reading through the dataset's
//! live-version pointer.
//!
//! - [`http`]: API Gateway event shapes (HTTP API payload 2.0 and REST 1.0) in
//!   and out; one plain request/response type inside.
//! - [`api`]: routing and parameter validation (pure).
//!
//! Reading through the pointer (its cache, the one version per call,
//! freshness, rendering) is the `featurestore` library's, which rankers
//! link to read in one hop: serve adds the HTTP shapes, the original
//! route's answers, who may read what, and metrics.
//!
//! Handlers never return `Err` for anything a caller sent: every outcome is a
//! status code with a JSON body.

pub mod api;
pub mod http;

pub use featurestore::Reader;
pub use http::handle;
