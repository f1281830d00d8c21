//! Fuzz target for the collector's payload parser; what it feeds and
//! checks: fuzz/src/ingest.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use surveyd_fuzz::ingest;

fuzz_target!(|data: &[u8]| ingest::check(data));
