//! # fsctl: the operator's command line
//!
//! - [`generate`]: realistic synthetic batches in every supported format.
//! - [`upload`]: puts a batch into the bucket and follows it to live.
//! - [`status`]: datasets, versions and queue depths, for humans and scripts.
//! - [`promote`]: puts a held version live, or ingests one held for memory.
//! - [`redrive`]: moves dead-lettered messages back to their queues.

pub mod generate;
pub mod promote;
pub mod redrive;
pub mod status;
pub mod upload;
