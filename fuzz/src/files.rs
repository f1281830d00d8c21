//! Writing the input into the scratch directory, shared by the checks that
//! read files by path.

use std::fs;
use std::io;
use std::path::Path;

/// Makes `dir/name` hold exactly `contents`, or makes it absent when
/// `contents` is `None`, so that no file from an earlier input survives
/// into this one.
pub fn put_file(dir: &Path, name: &str, contents: Option<&[u8]>) {
    let path = dir.join(name);
    let result = match contents {
        Some(bytes) => fs::write(&path, bytes),
        None => match fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    result.unwrap_or_else(|e| panic!("scratch file {}: {e}", path.display()));
}
