//! Fuzz target for the audit log readers and verifier; what it feeds and
//! checks: fuzz/src/audit.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use surveyd_fuzz::{audit, scratch_dir};

fuzz_target!(|data: &[u8]| audit::check(scratch_dir("audit"), data));
