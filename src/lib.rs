//! surveyd: a privacy-first usage-survey daemon for groupware servers, and
//! the collector its vendor runs.

pub mod audit;
pub mod cfgfile;
pub mod cli;
pub mod collector;
pub mod facts;
pub mod payload;
pub mod privacy;
pub mod report;
pub mod safe_fs;
pub mod scheduler;
pub mod service;
pub mod settings;
pub mod state;
pub mod sys;
pub mod transport;
pub mod wire;

/// Kept at the crate root too: the integration tests name its queries there.
pub use facts::kopano_mysql;
// Both programs' exit codes and logging live in `sys`; these names are
// the ones every module uses.
pub use sys::{exit, logging};
