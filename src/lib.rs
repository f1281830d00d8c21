//! surveyd: a privacy-first usage-survey daemon for groupware servers, and
//! the collector its vendor runs.

pub mod collector;
pub mod payload;
