//! # fsctl: the operator's command line
//!
//! - [`generate`]: realistic synthetic batches in every supported format.
//! - [`upload`]: puts a batch into the bucket and follows it to live.
//! - [`status`]: datasets, versions and queue depths, for humans and scripts.
//! - [`redrive`]: moves dead-lettered messages back to their queues.

pub mod generate;
pub mod redrive;
pub mod status;
pub mod upload;
