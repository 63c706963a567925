//! # The Redis side
//!
//! Everything that reads or writes Redis: the key schema ([`crate::keys`]), the
//! connection and pipelined writes ([`store`]), the version protocol and its
//! scripts ([`protocol`]), retention ([`retention`]), the memory guard
//! ([`memory`]), the list of rejected uploads ([`rejected`]) and the files of
//! folder batches still waiting for their marker ([`waiting`]), what an
//! operator set for a dataset ([`settings`]), and deltas, users corrected
//! between full batches ([`deltas`]). Nothing here
//! knows about S3 or SQS.

pub mod deltas;
pub mod memory;
pub mod protocol;
pub mod rejected;
pub mod retention;
pub mod settings;
pub mod store;
pub mod waiting;
