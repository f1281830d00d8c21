//! The audit log: the local, tamper-evident record of every payload surveyd
//! sends. It owns the on-disk format, appending (with fsync, locking,
//! rotation and torn-line recovery), reading for `surveyd audit`, and
//! `surveyd audit verify`.
//!
//! # Format
//!
//! JSON Lines: one object per line, `\n` terminated, readable with `jq`.
//! Every line starts with `seq`, `time` (RFC 3339 UTC, whole seconds) and
//! `event`, and ends with `prev`, the lowercase hex SHA-256 of the previous
//! line's bytes (without its `\n`); the very first line ever has 64 zeros.
//! `seq` starts at 1 and grows by exactly 1 per line, across rotations too,
//! so a changed, dropped or reordered line breaks the chain.
//!
//! Events:
//!
//! - `send`, written and fsynced before the request goes out:
//!   `{"seq":N,"time":T,"event":"send","url":URL,"body":PAYLOAD,"body_sha256":HEX,"prev":HEX}`.
//!   `body` is the payload embedded byte for byte as it is sent (canonical
//!   JSON: sorted keys, no whitespace); `body_sha256` is over those bytes.
//! - `result`, the outcome of the send `of`:
//!   `{"seq":N,"time":T,"event":"result","of":SEQ,"status":HTTP_STATUS|null,"error":TEXT|null,"duration_ms":N,"prev":HEX}`.
//! - `recovered`, written when opening found a torn end (a crash or a full
//!   disk cut a write short) and set it aside:
//!   `{"seq":N,"time":T,"event":"recovered","torn_bytes":N,"saved_to":PATH,"prev":HEX}`.
//!
//! No marker line is written at rotation: the first line of a new file
//! simply carries on `seq` and `prev` from the last line of the old one.
//!
//! # Files, next to each other in the log's directory
//!
//! - `audit.log`: the current file (mode 0640; the directory is created
//!   with mode 0750 if missing).
//! - `audit.log.1`, `audit.log.2`, ...: rotated files, `.1` the newest.
//!   Before a line would make `audit.log` exceed `max_size` bytes, the files
//!   shift up by one, `audit.log` becomes `audit.log.1` and a new
//!   `audit.log` starts (a single line larger than `max_size` still gets a
//!   file of its own). Files beyond `keep` are deleted once the new file
//!   holds its first line, so the chain can always be picked up again after
//!   a crash. With `keep = 0` no rotated file survives and `verify` can only
//!   check from the first line still present.
//! - `audit.log.torn-<unix time>`: bytes set aside by torn-line recovery.
//! - `audit.log.lock`: held with `flock` by the one process that writes
//!   (it contains that process's pid). It is a separate file because
//!   rotation replaces `audit.log` itself.

mod reader;
mod recovery;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

pub use reader::{find_send, list, list_rows, read_entries, Entry, ListRow};
pub use verify::{verify, Problem, VerifyFailure, VerifyReport};
pub use writer::{AuditLog, Recovery};

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// `prev` of the very first line ever written.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long `AuditLog::open` waits for another writer to let go of the log.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How much of a file's end is read first when looking for its last line;
/// doubled until a valid line turns up, so a normal open reads one block.
pub(super) const TAIL_WINDOW: u64 = 64 * 1024;

/// What went wrong with the audit log, where, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the audit log directory {path}: {source}; create it (mode 0750, writable by surveyd) or point surveyclient_audit_log elsewhere")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("cannot open audit log {path}: {source}; check that it is a file surveyd may read and write, or point surveyclient_audit_log elsewhere")]
    Open { path: PathBuf, source: io::Error },

    #[error("cannot lock audit log {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },

    #[error("audit log {path} is in use by another surveyd process{}; gave up after {waited:?}; wait for it to finish or stop it (systemctl stop surveyd) and try again", holder_text(*.holder))]
    Locked {
        path: PathBuf,
        holder: Option<u32>,
        waited: Duration,
    },

    #[error("cannot read audit log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write to audit log {path}: {source}; nothing was sent; free disk space or fix permissions")]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot rotate audit log {path}: {source}; nothing was sent; check the directory is writable and has space")]
    Rotate { path: PathBuf, source: io::Error },

    #[error("cannot set aside the torn end of audit log {path}: {source}; free disk space or move the log away by hand")]
    Recover { path: PathBuf, source: io::Error },

    #[error("{path}, line {line}: {reason}; run `surveyd audit verify` for details")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: Problem,
    },

    #[error("rotated audit log {path} has no readable entry to continue the chain from while {current} is empty; move {path} aside and start again")]
    NoChainToContinue { path: PathBuf, current: PathBuf },

    #[error("audit log {path} has reached the highest sequence number; move it and its rotated files aside")]
    SeqExhausted { path: PathBuf },

    #[error("refusing to log a payload that is not canonical JSON ({reason}); this is a bug in surveyd, please report it")]
    BadBody { reason: String },
}

pub(super) fn holder_text(holder: Option<u32>) -> String {
    holder
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}

/// A position in the hash chain: the last line's seq and hash.
#[derive(Debug, Clone)]
pub(super) struct ChainPoint {
    pub(super) seq: u64,
    pub(super) hash: String,
}

impl ChainPoint {
    pub(super) fn genesis() -> Self {
        ChainPoint {
            seq: 0,
            hash: GENESIS_PREV.to_owned(),
        }
    }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `path` with `suffix` appended to its file name.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn rotated_path(path: &Path, index: u64) -> PathBuf {
    sibling(path, &format!(".{index}"))
}

/// Rotated files next to `path` (`audit.log.<number>`) as (number, path),
/// oldest (highest number) first.
pub(super) fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let Some(name) = path.file_name() else {
        return Ok(Vec::new());
    };
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(b'.');
    let mut files = Vec::new();
    for dir_entry in fs::read_dir(parent_dir(path))? {
        let dir_entry = dir_entry?;
        let file_name = dir_entry.file_name();
        let Some(number) = file_name.as_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(index) = std::str::from_utf8(number).unwrap_or("").parse::<u64>() else {
            continue;
        };
        files.push((index, rotated_path(path, index)));
    }
    files.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    Ok(files)
}

/// All files of the log in chain order: rotated ones oldest first, then
/// the current one.
pub(super) fn log_files(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = rotated_files(path)
        .map_err(read_err)?
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    match fs::metadata(path) {
        Ok(_) => files.push(path.to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !files.is_empty() => {}
        Err(e) => return Err(read_err(e)),
    }
    Ok(files)
}

/// Splits file contents into complete lines (without `\n`) and whatever
/// follows the last `\n` (empty unless the file ends in a torn line).
pub(super) fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => (
            bytes[..last].split(|&b| b == b'\n').collect(),
            &bytes[last + 1..],
        ),
        None => (Vec::new(), bytes),
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
