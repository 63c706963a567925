//! # fsctl: the operator's command line
//!
//! - [`generate`]: realistic synthetic batches in every supported format.
//! - [`upload`]: puts a batch into the bucket and follows it to live.

pub mod generate;
pub mod upload;
