//! # serve: the API Lambda
//!
//! Answers `GET /?userId=&rank=` (the original sample's API, default dataset)
//! and `GET /v1/{dataset}/users/{userId}` by reading through the dataset's
//! live-version pointer.
//!
//! - [`http`]: API Gateway event shapes (HTTP API payload 2.0 and REST 1.0) in
//!   and out; one plain request/response type inside.
//! - [`api`]: routing and parameter validation (pure).
//! - [`render`]: answers with users, written as JSON from the stored records.
//! - [`reader`]: the Redis side: a pointer cache with bounded staleness, then
//!   one `HGET` per request.
//!
//! Handlers never return `Err` for anything a caller sent: every outcome is a
//! status code with a JSON body.

pub mod api;
pub mod http;
pub mod reader;
pub mod render;

pub use http::handle;
pub use reader::Reader;
