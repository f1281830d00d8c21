//! surveyd: a privacy-first usage-survey daemon for groupware servers, and
//! the collector its vendor runs.

// The two programs side by side, and below them what both share.
pub mod collector;
pub mod daemon;

pub mod privacy;
pub mod safe_fs;
pub mod sys;
pub mod wire;

// Both programs' exit codes and logging live in `sys`; these names are
// the ones every module uses.
pub use sys::{exit, logging};
