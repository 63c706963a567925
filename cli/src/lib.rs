//! # fsctl: the operator's command line
//!
//! One module per command, each with its arguments (`Args`) and `run`:
//! [`status`], [`versions`], [`get`], [`upload`], [`redrive`], [`rollback`],
//! [`promote`], [`forget`], [`gc`], [`max_age`], [`generate`], [`capacity`]. What they share (configuration, output
//! mode, the Redis connection) is in [`ctx`]; the read model of datasets and
//! versions that several commands use in [`view`]; operator moves of the
//! pointer in [`moves`]; how versions are named and printed (prefixes,
//! `live`, `previous`) in [`names`].

pub mod capacity;
pub mod ctx;
pub mod forget;
pub mod gc;
pub mod generate;
pub mod get;
pub mod max_age;
pub mod moves;
pub mod names;
pub mod promote;
pub mod redrive;
pub mod rollback;
pub mod status;
pub mod upload;
pub mod versions;
pub mod view;
