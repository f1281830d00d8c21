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
//!   A result of a request that got an answer also records what the
//!   answer's signed receipt proved (see `crate::daemon::receipts`):
//!   `...,"duration_ms":N,"receipt":RECEIPT|null,"receipt_state":STATE,"receipt_problem":TEXT,"prev":HEX`,
//!   STATE one of `none` (no receipt, none required), `unchecked` (no key
//!   configured), `valid`, `missing` or `invalid`; `receipt_problem` only
//!   with the last two. Older result lines have none of these keys.
//! - `forget`, written and fsynced before a deletion request goes out (the
//!   request's body is not logged: it reveals the deletion secret):
//!   `{"seq":N,"time":T,"event":"forget","url":DELETE_URL,"uid":HEX,"body_sha256":HEX,"prev":HEX}`,
//!   followed by a `result` `of` it carrying the `deleted` receipt.
//! - `local`, a report built on schedule while the admin has not consented
//!   to uploads: the exact bytes an upload would carry, kept here, never
//!   sent (no `result` follows):
//!   `{"seq":N,"time":T,"event":"local","body":PAYLOAD,"body_sha256":HEX,"prev":HEX}`.
//! - `consent`, the admin's `surveyd consent yes` or `no`, written before
//!   the consent file changes:
//!   `{"seq":N,"time":T,"event":"consent","mode":"upload"|"local","schema":N,"fields":[NAME,...],"url":URL,"prev":HEX}`.
//! - `recovered`, written when opening found a torn end (a crash or a full
//!   disk cut a write short) and set it aside:
//!   `{"seq":N,"time":T,"event":"recovered","torn_bytes":N,"saved_to":PATH,"prev":HEX}`.
//!   Only bytes after the last `\n` are ever torn. A complete line that
//!   does not verify is damage: the writer refuses to append (so nothing is
//!   sent) until the admin runs `surveyd audit new-chain`.
//! - `new-chain`, the first line of a chain the admin started on purpose
//!   (`prev` is 64 zeros again):
//!   `{"seq":1,"time":T,"event":"new-chain","set_aside":[NAME,...],"old_last_seq":N|null,"old_last_hash":HEX|null,"prev":HEX}`.
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
//! - `audit.log.old-chain-<unix time>` (and `.N` after it for rotated
//!   files): a chain set aside by `surveyd audit new-chain`.
//! - `audit.log.lock`: held with `flock` by the one process that writes
//!   (it contains that process's pid). It is a separate file because
//!   rotation replaces `audit.log` itself. The writer also holds `flock` on
//!   the directory, which cannot be unlinked or swapped under it, so a
//!   removed lock file does not let a second writer in.
//!
//! Every file is opened relative to the directory with `O_NOFOLLOW` and
//! must be a regular file (see `dir.rs`); every line read is capped at
//! [`MAX_LINE`] bytes.
//!
//! # The chain's ends, in the state dir
//!
//! `audit-chain-ends` (named in `crate::daemon::state`) records the oldest line still on disk and the last
//! line written (seq and hash each), rewritten atomically after every
//! write, rotation and prune. `verify` and the writer compare the log with
//! it, so cutting lines off the head or the tail is detected.

mod dir;
mod ends;
#[cfg(test)]
mod hostile_tests;
mod lines;
mod lock;
mod reader;
mod receipts;
mod recovery;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

pub use dir::LogDir;
pub use ends::EndsFile;
pub use reader::{
    find_report, find_send, for_each_entry, list, list_rows, read_entries, Entry, ListRow,
    SendResults,
};
pub use receipts::{verify_receipts, ReceiptFailure, ReceiptSummary};
pub use verify::{verify, Problem, VerifyFailure, VerifyReport};
pub use writer::{AuditLog, AuditOptions, NewChain, ReceiptRecord, Recovery, RootWrite};

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// `prev` of the very first line ever written.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long `AuditLog::open` waits for another writer to let go of the log.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The longest line read back or written: a payload is a few KiB, so a
/// longer line was planted or damaged, and reading it whole could exhaust
/// memory.
pub const MAX_LINE: usize = 1024 * 1024;

/// What went wrong with the audit log, where, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create or open the audit log directory {path}: {source}; create it (mode 0750, writable by surveyd) or point surveyclient_audit_log elsewhere")]
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

    #[error("cannot write to audit log {path}: {source}; free disk space, raise the file size limit or fix permissions")]
    Write { path: PathBuf, source: io::Error },

    #[error(
        "cannot rotate audit log {path}: {source}; check the directory is writable and has space"
    )]
    Rotate { path: PathBuf, source: io::Error },

    #[error("cannot set aside the torn end of audit log {path}: {source}; free disk space or move the log away by hand")]
    Recover { path: PathBuf, source: io::Error },

    #[error("{path}, line {line}: {reason}; run `surveyd audit verify` for details")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: Problem,
    },

    #[error("audit log is damaged: {what}; surveyd writes (and sends) nothing until an admin acts: keep a copy for investigation, then run `surveyd audit new-chain` to set the damaged files aside and start a new chain")]
    Damaged { what: String },

    #[error("audit log {path} was removed or replaced while surveyd held it open; nothing is written into the old file; restore it, or run `surveyd audit new-chain` to start a new chain")]
    Replaced { path: PathBuf },

    #[error("refusing to write as root into {path}: {why}")]
    UnsafeDir { path: PathBuf, why: String },

    #[error("rotated audit log {path} has no readable entry to continue the chain from while {current} is empty; move {path} aside and start again")]
    NoChainToContinue { path: PathBuf, current: PathBuf },

    #[error("audit log {path} has reached the highest sequence number; move it and its rotated files aside")]
    SeqExhausted { path: PathBuf },

    #[error("refusing to log a payload that is not canonical JSON ({reason}); this is a bug in surveyd, please report it")]
    BadBody { reason: String },
}

impl AuditError {
    /// The log's contents or identity are wrong, not just unwritable: the
    /// writer must let go of it so that the admin can start a new chain.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            AuditError::Damaged { .. } | AuditError::Replaced { .. }
        )
    }
}

pub(super) fn holder_text(holder: Option<u32>) -> String {
    holder
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}

/// A position in the hash chain: a line's seq and the hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The directory part of `path` (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The file name part of `path`, or an error naming it.
pub(super) fn file_name(path: &Path) -> Result<OsString, AuditError> {
    path.file_name()
        .map(OsStr::to_owned)
        .ok_or_else(|| AuditError::Open {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "names no file"),
        })
}

/// `name` with `suffix` appended.
pub(super) fn sibling(name: &OsStr, suffix: &str) -> OsString {
    let mut name = name.to_owned();
    name.push(suffix);
    name
}

pub(super) fn rotated_name(name: &OsStr, index: u64) -> OsString {
    sibling(name, &format!(".{index}"))
}

/// Rotated files of the log `name` in `dir` (`audit.log.<number>`) as
/// (number, name), oldest (highest number) first.
pub(super) fn rotated_files(dir: &LogDir, name: &OsStr) -> io::Result<Vec<(u64, OsString)>> {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(b'.');
    let mut files = Vec::new();
    for file_name in dir.names()? {
        let Some(number) = file_name.as_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(index) = std::str::from_utf8(number).unwrap_or("").parse::<u64>() else {
            continue;
        };
        files.push((index, rotated_name(name, index)));
    }
    files.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    Ok(files)
}

/// All files of the log in chain order: rotated ones oldest first, then
/// the current one (if present).
pub(super) fn log_files(dir: &LogDir, name: &OsStr) -> io::Result<Vec<OsString>> {
    let mut files: Vec<OsString> = rotated_files(dir, name)?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    if dir.exists(name)? {
        files.push(name.to_owned());
    }
    Ok(files)
}

/// Opens the directory of the log at `path` for reading, naming the log in
/// errors.
pub(super) fn open_for_reading(path: &Path) -> Result<(LogDir, OsString), AuditError> {
    let name = file_name(path)?;
    let dir = LogDir::open(&parent_dir(path)).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((dir, name))
}

/// Whether the log at `path` has any file yet (current or rotated).
pub fn exists(path: &Path) -> Result<bool, AuditError> {
    let name = file_name(path)?;
    let dir = match LogDir::open(&parent_dir(path)) {
        Ok(dir) => dir,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(AuditError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    log_files(&dir, &name)
        .map(|files| !files.is_empty())
        .map_err(|source| AuditError::Read {
            path: path.to_owned(),
            source,
        })
}

pub(super) use crate::wire::sha256_hex;

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
