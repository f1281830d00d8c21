//! The fuzz targets' checks, one module per target, and the scratch
//! directory for the code under test that reads files by path (the config
//! loader with its `!include`s, the audit log reader and verifier).
//!
//! The check modules depend on nothing but surveyd, serde_json and std:
//! tests/fuzz_regressions.rs includes the same files (`#[path]`), so a kept
//! finding replays exactly the code the fuzzer ran.

pub mod audit;
pub mod cfgfile;
mod files;
pub mod ingest;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// This process's own empty directory, `surveyd-fuzz-TARGET-PID` in
/// /dev/shm (memory, so writing the input each run costs no disk I/O) or
/// the temp dir. Removed when libFuzzer exits normally; a crash leaves it
/// behind for inspection.
pub fn scratch_dir(target: &str) -> &'static Path {
    SCRATCH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("surveyd-fuzz-{target}-{}", std::process::id()));
        // A directory left by an earlier process with the same pid would
        // make runs depend on its files.
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                panic!("cannot clear scratch directory {}: {e}", dir.display())
            }
            _ => {}
        }
        fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create scratch directory {}: {e}", dir.display()));
        // SAFETY: remove_scratch is an extern "C" fn with no arguments that
        // does not unwind, as atexit requires.
        unsafe { libc::atexit(remove_scratch) };
        dir
    })
}

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = fs::remove_dir_all(dir);
    }
}
