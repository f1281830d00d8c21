//! Fuzz target for the server.cfg reader and check-config; what it feeds
//! and checks: fuzz/src/cfgfile.rs.

#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use surveyd_fuzz::{cfgfile, scratch_dir};

fuzz_target!(|data: &[u8]| -> Corpus {
    if cfgfile::check(scratch_dir("cfgfile"), data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
