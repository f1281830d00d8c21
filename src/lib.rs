//! surveyd: a privacy-first usage-survey daemon for groupware servers, and
//! the collector its vendor runs.

pub mod audit;
pub mod cfgfile;
pub mod payload;
pub mod privacy;
pub mod settings;
