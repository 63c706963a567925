//! # bench: the feature store measured beside Redis's own tools
//!
//! Every figure is a ratio against a reference measured in the same run on
//! the same Redis, because the machines are shared and noisy: ingest against
//! `redis-cli --pipe` replaying exactly the same writes, serving against
//! `redis-benchmark`, memory against the original sample's layout (one hash
//! per user), and both against the original sample's approach (a round trip
//! per user, a connection per request).

pub mod report;
pub mod runs;
