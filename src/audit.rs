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

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// `prev` of the very first line ever written.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long `AuditLog::open` waits for another writer to let go of the log.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How much of a file's end is read first when looking for its last line;
/// doubled until a valid line turns up, so a normal open reads one block.
const TAIL_WINDOW: u64 = 64 * 1024;

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

fn holder_text(holder: Option<u32>) -> String {
    holder
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}

/// What torn-line recovery did when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// How many bytes at the end of the log were not a valid line.
    pub torn_bytes: u64,
    /// Where those bytes were saved.
    pub saved_to: PathBuf,
    /// The `recovered` event that records it.
    pub seq: u64,
}

/// A position in the hash chain: the last line's seq and hash.
#[derive(Debug, Clone)]
struct ChainPoint {
    seq: u64,
    hash: String,
}

impl ChainPoint {
    fn genesis() -> Self {
        ChainPoint {
            seq: 0,
            hash: GENESIS_PREV.to_owned(),
        }
    }
}

/// The open audit log of one writer. Holding it holds the lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    dir: PathBuf,
    max_size: u64,
    keep: u64,
    /// `None` between a rotation moving the old file away and the new one
    /// being created; the next append creates it.
    file: Option<File>,
    /// Length of the current file up to its last good line.
    len: u64,
    last: ChainPoint,
    /// Rotated files beyond `keep` may exist; delete them after the next
    /// successful append, when the chain no longer depends on them.
    prune_pending: bool,
    /// A failed append could not be undone; undo it before the next one.
    repair_pending: bool,
    _lock: Flock<File>,
}

#[derive(Serialize)]
struct SendLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    url: &'a str,
    body: &'a RawValue,
    body_sha256: &'a str,
    prev: &'a str,
}

#[derive(Serialize)]
struct ResultLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    of: u64,
    status: Option<u16>,
    error: Option<&'a str>,
    duration_ms: u64,
    prev: &'a str,
}

#[derive(Serialize)]
struct RecoveredLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    torn_bytes: u64,
    saved_to: &'a str,
    prev: &'a str,
}

impl AuditLog {
    /// Opens (creating if needed) the log at `path` for appending, waiting
    /// up to [`LOCK_WAIT`] for another writer. Returns what torn-line
    /// recovery did, if anything.
    pub fn open(
        path: &Path,
        max_size: u64,
        keep: u64,
    ) -> Result<(AuditLog, Option<Recovery>), AuditError> {
        Self::open_with_lock_wait(path, max_size, keep, LOCK_WAIT)
    }

    fn open_with_lock_wait(
        path: &Path,
        max_size: u64,
        keep: u64,
        lock_wait: Duration,
    ) -> Result<(AuditLog, Option<Recovery>), AuditError> {
        let dir = parent_dir(path);
        DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .map_err(|source| AuditError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        let lock = acquire_lock(path, lock_wait)?;
        let file = open_current(path, &dir)?;
        let read_err = |source| AuditError::Read {
            path: path.to_owned(),
            source,
        };
        let len = file.metadata().map_err(read_err)?.len();
        let tail = scan_tail(&file, len).map_err(read_err)?;

        let torn = if tail.good_end < len {
            let saved_to = set_aside(path, &dir, &file, tail.good_end, len)?;
            // The torn bytes are safe elsewhere; only now cut them off.
            file.set_len(tail.good_end)
                .and_then(|()| file.sync_all())
                .map_err(|source| AuditError::Recover {
                    path: path.to_owned(),
                    source,
                })?;
            Some((len - tail.good_end, saved_to))
        } else {
            None
        };

        let last = match tail.last {
            Some(point) => point,
            None => chain_from_rotated(path)?,
        };
        let mut log = AuditLog {
            path: path.to_owned(),
            dir,
            max_size,
            keep,
            file: Some(file),
            len: tail.good_end,
            last,
            prune_pending: true,
            repair_pending: false,
            _lock: lock,
        };

        let recovery = match torn {
            Some((torn_bytes, saved_to)) => {
                let seq = log.append_recovered(torn_bytes, &saved_to)?;
                Some(Recovery {
                    torn_bytes,
                    saved_to,
                    seq,
                })
            }
            None => None,
        };
        Ok((log, recovery))
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seq of the last line written (0 if the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.last.seq
    }

    /// Records that `body` is about to be sent to `url`; returns once the
    /// line is on disk. `body` must be canonical JSON (sorted keys, no
    /// whitespace), exactly the bytes that will be sent. On error nothing
    /// must be sent.
    pub fn append_send(&mut self, url: &str, body: &[u8]) -> Result<u64, AuditError> {
        let body = canonical_body(body)?;
        let body_sha256 = sha256_hex(body.get().as_bytes());
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let line = serde_json::to_vec(&SendLine {
            seq,
            time: &time,
            event: "send",
            url,
            body,
            body_sha256: &body_sha256,
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }

    /// Records the outcome of the send with seq `of`: the HTTP status if a
    /// response came, the error if it failed, and how long it took.
    pub fn append_result(
        &mut self,
        of: u64,
        status: Option<u16>,
        error: Option<&str>,
        duration: Duration,
    ) -> Result<u64, AuditError> {
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let line = serde_json::to_vec(&ResultLine {
            seq,
            time: &time,
            event: "result",
            of,
            status,
            error,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }

    fn append_recovered(&mut self, torn_bytes: u64, saved_to: &Path) -> Result<u64, AuditError> {
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let saved_to = saved_to.to_string_lossy();
        let line = serde_json::to_vec(&RecoveredLine {
            seq,
            time: &time,
            event: "recovered",
            torn_bytes,
            saved_to: &saved_to,
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }

    fn next_seq(&self) -> Result<u64, AuditError> {
        self.last
            .seq
            .checked_add(1)
            .ok_or_else(|| AuditError::SeqExhausted {
                path: self.path.clone(),
            })
    }

    /// Appends one line (given without its `\n`) with a single write and
    /// fsyncs it. On failure the file is cut back to its previous length so
    /// it never ends in half a line, and seq and chain stay where they were.
    /// Takes the serialiser's result so that its (practically impossible)
    /// failure is reported like any other failed write.
    fn write_line(
        &mut self,
        seq: u64,
        line: Result<Vec<u8>, serde_json::Error>,
    ) -> Result<u64, AuditError> {
        let write_err = |path: &Path, source| AuditError::Write {
            path: path.to_owned(),
            source,
        };
        let mut line = line.map_err(|e| write_err(&self.path, io::Error::other(e)))?;
        self.repair()?;
        let line_len = line.len() as u64 + 1;
        if self.len > 0 && self.len.saturating_add(line_len) > self.max_size {
            self.rotate()?;
        }
        let file = match self.file.take() {
            Some(file) => file,
            None => open_current(&self.path, &self.dir)?,
        };
        let file = self.file.insert(file);

        let hash = sha256_hex(&line);
        line.push(b'\n');
        if let Err(source) = write_and_sync(file, &line) {
            if file
                .set_len(self.len)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                self.repair_pending = true;
            }
            return Err(write_err(&self.path, source));
        }
        self.len += line_len;
        self.last = ChainPoint { seq, hash };
        if self.prune_pending {
            self.prune();
        }
        Ok(seq)
    }

    /// Retries cutting off a failed append that could not be undone at once.
    fn repair(&mut self) -> Result<(), AuditError> {
        if !self.repair_pending {
            return Ok(());
        }
        if let Some(file) = &self.file {
            file.set_len(self.len)
                .and_then(|()| file.sync_data())
                .map_err(|source| AuditError::Write {
                    path: self.path.clone(),
                    source,
                })?;
        }
        self.repair_pending = false;
        Ok(())
    }

    /// Shifts every rotated file up by one and moves the current file to
    /// `.1`. Files beyond `keep` are only deleted after the next line is
    /// safely in the new file (see `prune`).
    fn rotate(&mut self) -> Result<(), AuditError> {
        let path = self.path.clone();
        let rotate_err = |source| AuditError::Rotate {
            path: path.clone(),
            source,
        };
        // Highest index first, so no rename overwrites a file still needed.
        for (index, from) in rotated_files(&self.path).map_err(rotate_err)? {
            fs::rename(&from, rotated_path(&self.path, index + 1)).map_err(rotate_err)?;
        }
        fs::rename(&self.path, rotated_path(&self.path, 1)).map_err(rotate_err)?;
        // From here on the old handle points at `.1`; never write through it.
        self.file = None;
        self.len = 0;
        self.prune_pending = true;
        let file = open_current(&self.path, &self.dir)?;
        self.file = Some(file);
        sync_dir(&self.dir).map_err(rotate_err)
    }

    /// Deletes rotated files beyond `keep`. A failure only costs disk space,
    /// so it is logged and retried after the next append.
    fn prune(&mut self) {
        let result = rotated_files(&self.path).and_then(|files| {
            let mut removed = false;
            for (_, path) in files.iter().filter(|(index, _)| *index > self.keep) {
                fs::remove_file(path)?;
                removed = true;
            }
            if removed {
                sync_dir(&self.dir)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => self.prune_pending = false,
            Err(e) => tracing::warn!(
                "cannot delete old rotated audit logs next to {}: {e}",
                self.path.display()
            ),
        }
    }
}

/// Checks that `body` is canonical JSON and returns it as a raw value that
/// serialises to exactly these bytes. Anything else would break the promise
/// that `body` re-serialised canonically hashes to `body_sha256`.
fn canonical_body(body: &[u8]) -> Result<&RawValue, AuditError> {
    let bad = |reason: String| AuditError::BadBody { reason };
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let canonical = serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))?;
    if canonical != body {
        return Err(bad(
            "keys not sorted, whitespace, or a non-canonical number or escape".to_owned(),
        ));
    }
    serde_json::from_str(text).map_err(|e| bad(e.to_string()))
}

fn write_and_sync(mut file: &File, line: &[u8]) -> io::Result<()> {
    let written = loop {
        match file.write(line) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => break result?,
        }
    };
    if written != line.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "only {written} of {} bytes written (disk full or file size limit)",
                line.len()
            ),
        ));
    }
    file.sync_data()
}

/// Opens the current file for appending, creating it with mode 0640 (and
/// making the creation durable) if it does not exist.
fn open_current(path: &Path, dir: &Path) -> Result<File, AuditError> {
    let open_err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    match options.clone().create_new(true).mode(0o640).open(path) {
        Ok(file) => {
            sync_dir(dir).map_err(open_err)?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = options.open(path).map_err(open_err)?;
            let meta = file.metadata().map_err(open_err)?;
            if !meta.is_file() {
                return Err(open_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            Ok(file)
        }
        Err(e) => Err(open_err(e)),
    }
}

/// Takes the writer's lock on `audit.log.lock`, retrying until `wait` is up.
fn acquire_lock(path: &Path, wait: Duration) -> Result<Flock<File>, AuditError> {
    let lock_path = sibling(path, ".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(&lock_path)
        .map_err(|source| AuditError::Open {
            path: lock_path.clone(),
            source,
        })?;
    let deadline = Instant::now() + wait;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                // Only a hint for the error message of a process that has
                // to wait, so failing to write it is not worth failing over.
                let pid = format!("{}\n", std::process::id());
                let _ = locked
                    .set_len(0)
                    .and_then(|()| locked.write_all_at(pid.as_bytes(), 0));
                return Ok(locked);
            }
            Err((unlocked, errno)) if errno == Errno::EWOULDBLOCK || errno == Errno::EINTR => {
                if Instant::now() >= deadline {
                    let holder = fs::read_to_string(&lock_path)
                        .ok()
                        .and_then(|text| text.trim().parse().ok());
                    return Err(AuditError::Locked {
                        path: path.to_owned(),
                        holder,
                        waited: wait,
                    });
                }
                file = unlocked;
                thread::sleep(Duration::from_millis(50));
            }
            Err((_, errno)) => {
                return Err(AuditError::Lock {
                    path: lock_path,
                    source: errno.into(),
                })
            }
        }
    }
}

/// Where the last valid line of a file ends and the chain point it gives.
struct Tail {
    good_end: u64,
    last: Option<ChainPoint>,
}

/// Finds the last valid entry line of the file, reading from the end.
/// Everything after it is torn: a line without its `\n`, or lines that are
/// not entries (a crash can leave garbage or zeros at the end).
fn scan_tail(file: &File, len: u64) -> io::Result<Tail> {
    let mut window = TAIL_WINDOW;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0; (len - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        match last_valid_line(&buf, start == 0) {
            Some((line_start, line_end, seq)) => {
                return Ok(Tail {
                    good_end: start + line_end as u64 + 1,
                    last: Some(ChainPoint {
                        seq,
                        hash: sha256_hex(&buf[line_start..line_end]),
                    }),
                })
            }
            None if start == 0 => {
                return Ok(Tail {
                    good_end: 0,
                    last: None,
                })
            }
            None => window = window.saturating_mul(2),
        }
    }
}

/// The byte range (without `\n`) and seq of the last complete line in
/// `buf` that is a valid entry. A line is only judged when its start is
/// known: after a `\n`, or at the beginning when `buf` starts the file.
fn last_valid_line(buf: &[u8], starts_file: bool) -> Option<(usize, usize, u64)> {
    let mut end = buf.iter().rposition(|&b| b == b'\n')?;
    loop {
        let start = match buf[..end].iter().rposition(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None if starts_file => 0,
            None => return None,
        };
        if let Ok(entry) = serde_json::from_slice::<Entry>(&buf[start..end]) {
            return Some((start, end, entry.seq));
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    }
}

/// When the current file is empty the chain continues from the newest
/// rotated file, so a rotation or recovery never restarts it.
fn chain_from_rotated(path: &Path) -> Result<ChainPoint, AuditError> {
    let newest = rotated_path(path, 1);
    let file = match File::open(&newest) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ChainPoint::genesis()),
        Err(source) => {
            return Err(AuditError::Read {
                path: newest,
                source,
            })
        }
    };
    let tail = file
        .metadata()
        .and_then(|meta| scan_tail(&file, meta.len()))
        .map_err(|source| AuditError::Read {
            path: newest.clone(),
            source,
        })?;
    tail.last.ok_or_else(|| AuditError::NoChainToContinue {
        path: newest,
        current: path.to_owned(),
    })
}

/// Copies bytes `from..to` of the log into a new `audit.log.torn-<time>`
/// file and makes it durable, before the log is cut.
fn set_aside(
    path: &Path,
    dir: &Path,
    file: &File,
    from: u64,
    to: u64,
) -> Result<PathBuf, AuditError> {
    let recover_err = |source| AuditError::Recover {
        path: path.to_owned(),
        source,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut attempt = 0u32;
    let (saved_to, mut out) = loop {
        let suffix = match attempt {
            0 => format!(".torn-{now}"),
            n => format!(".torn-{now}-{n}"),
        };
        let candidate = sibling(path, &suffix);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&candidate)
        {
            Ok(out) => break (candidate, out),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
            Err(source) => return Err(recover_err(source)),
        }
    };
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(from))
        .and_then(|_| io::copy(&mut reader.take(to - from), &mut out))
        .and_then(|_| out.sync_all())
        .and_then(|()| sync_dir(dir))
        .map_err(recover_err)?;
    Ok(saved_to)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn rotated_path(path: &Path, index: u64) -> PathBuf {
    sibling(path, &format!(".{index}"))
}

/// Rotated files next to `path` (`audit.log.<number>`) as (number, path),
/// oldest (highest number) first.
fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
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
fn log_files(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
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
fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => (
            bytes[..last].split(|&b| b == b'\n').collect(),
            &bytes[last + 1..],
        ),
        None => (Vec::new(), bytes),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// One line of the log, as read back. Fields an event does not have are
/// `None`.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub event: String,
    #[serde(default)]
    pub url: Option<String>,
    /// The payload exactly as sent.
    #[serde(default)]
    pub body: Option<Box<RawValue>>,
    #[serde(default)]
    pub body_sha256: Option<String>,
    #[serde(default)]
    pub of: Option<u64>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub torn_bytes: Option<u64>,
    #[serde(default)]
    pub saved_to: Option<String>,
    pub prev: String,
    /// The line as stored, without its `\n`.
    #[serde(skip)]
    pub raw: String,
}

/// Reads every entry, rotated files oldest first, then the current file.
/// A torn last line (still being written, or left by a crash) is skipped;
/// any other unreadable line is an error.
pub fn read_entries(path: &Path) -> Result<Vec<Entry>, AuditError> {
    let mut entries = Vec::new();
    for file in log_files(path)? {
        let bytes = fs::read(&file).map_err(|source| AuditError::Read {
            path: file.clone(),
            source,
        })?;
        let (lines, _torn) = split_lines(&bytes);
        for (index, line) in lines.into_iter().enumerate() {
            let entry = parse_line(line).map_err(|reason| AuditError::BadLine {
                path: file.clone(),
                line: index + 1,
                reason,
            })?;
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn parse_line(line: &[u8]) -> Result<Entry, Problem> {
    let mut entry: Entry = serde_json::from_slice(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::NotAnEntry(e.to_string()),
        _ => Problem::NotJson,
    })?;
    // Parsing succeeded, so the line is valid UTF-8.
    entry.raw = String::from_utf8_lossy(line).into_owned();
    Ok(entry)
}

/// The send entry with this seq, for `surveyd audit show SEQ`.
pub fn find_send(path: &Path, seq: u64) -> Result<Option<Entry>, AuditError> {
    Ok(read_entries(path)?
        .into_iter()
        .find(|entry| entry.seq == seq && entry.event == "send"))
}

/// One send and its outcome, for `surveyd audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListRow {
    pub seq: u64,
    pub time: String,
    pub url: String,
    /// `HTTP 204`, `error: ...`, or `no result`.
    pub outcome: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    /// Bytes sent.
    pub body_size: usize,
    pub body_sha256: String,
}

/// Pairs each send with its result, in log order.
pub fn list_rows(entries: &[Entry]) -> Vec<ListRow> {
    let results: HashMap<u64, &Entry> = entries
        .iter()
        .filter(|entry| entry.event == "result")
        .filter_map(|entry| entry.of.map(|of| (of, entry)))
        .collect();
    entries
        .iter()
        .filter(|entry| entry.event == "send")
        .map(|send| {
            let result = results.get(&send.seq);
            let status = result.and_then(|r| r.status);
            let error = result.and_then(|r| r.error.clone());
            let outcome = match (result, status, &error) {
                (None, _, _) => "no result".to_owned(),
                (Some(_), Some(status), None) => format!("HTTP {status}"),
                (Some(_), Some(status), Some(error)) => format!("HTTP {status}: {error}"),
                (Some(_), None, Some(error)) => format!("error: {error}"),
                (Some(_), None, None) => "finished without status".to_owned(),
            };
            ListRow {
                seq: send.seq,
                time: send.time.clone(),
                url: send.url.clone().unwrap_or_default(),
                outcome,
                status,
                error,
                duration_ms: result.and_then(|r| r.duration_ms),
                body_size: send.body.as_ref().map_or(0, |body| body.get().len()),
                body_sha256: send.body_sha256.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// The rows of every send in the log at `path`.
pub fn list(path: &Path) -> Result<Vec<ListRow>, AuditError> {
    Ok(list_rows(&read_entries(path)?))
}

/// A table for people: one send per line, hashes shortened to 12 digits.
pub fn format_table(rows: &[ListRow]) -> String {
    let header = ["SEQ", "TIME", "URL", "OUTCOME", "SIZE", "SHA256"];
    let mut cells: Vec<[String; 6]> = vec![header.map(str::to_owned)];
    for row in rows {
        cells.push([
            row.seq.to_string(),
            row.time.clone(),
            printable(&row.url),
            printable(&row.outcome),
            row.body_size.to_string(),
            row.body_sha256.chars().take(12).collect(),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<width$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Error texts come from the network; keep them from breaking the table.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The rows as JSON Lines (full hashes), for `surveyd audit --json`.
pub fn format_json_lines(rows: &[ListRow]) -> String {
    let mut out = String::new();
    for row in rows {
        // A ListRow holds only strings and numbers, which always serialise.
        if let Ok(line) = serde_json::to_string(row) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Why a line failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NotJson,
    NotAnEntry(String),
    Torn,
    SeqGap { previous: u64, found: u64 },
    PrevMismatch,
    BodyMismatch,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotJson => f.write_str("not JSON"),
            Problem::NotAnEntry(why) => write!(f, "not an audit entry: {why}"),
            Problem::Torn => f.write_str(
                "last line has no newline (a write was cut short); surveyd sets it aside the next time it opens the log",
            ),
            Problem::SeqGap { previous, found } => write!(f, "seq {found} follows {previous}"),
            Problem::PrevMismatch => f.write_str("prev does not match the hash of the line before"),
            Problem::BodyMismatch => f.write_str("body does not match body_sha256"),
        }
    }
}

/// The first line that breaks the log, or why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    #[error("{path}, line {line}{}: {reason}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default(), path = path.display())]
    BadLine {
        path: PathBuf,
        /// 1-based, within `path`.
        line: usize,
        seq: Option<u64>,
        reason: Problem,
    },
    #[error(transparent)]
    Unreadable(#[from] AuditError),
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub lines: u64,
    pub files: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// True when the oldest line present is the first line ever written
    /// (prev is all zeros). False when older lines were rotated away: the
    /// chain is then checked from the oldest line present.
    pub starts_at_genesis: bool,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(first), Some(last)) = (self.first_seq, self.last_seq) else {
            return write!(f, "audit log OK: no entries yet ({} file(s))", self.files);
        };
        write!(
            f,
            "audit log OK: {} lines in {} file(s), seq {first} to {last}; ",
            self.lines, self.files
        )?;
        if self.starts_at_genesis {
            f.write_str("the chain starts at the first line ever written")
        } else {
            write!(
                f,
                "older lines were rotated away, so the chain is checked from seq {first} on"
            )
        }
    }
}

/// Checks every file of the log in order: each line is an entry, seq grows
/// by one, prev is the hash of the line before (across files), and each
/// send's body hashes to its body_sha256. Names the first bad line.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyFailure> {
    let files = log_files(path)?;
    let mut report = VerifyReport {
        lines: 0,
        files: files.len(),
        first_seq: None,
        last_seq: None,
        starts_at_genesis: false,
    };
    let mut last: Option<ChainPoint> = None;
    for file in &files {
        let bytes = fs::read(file).map_err(|source| AuditError::Read {
            path: file.clone(),
            source,
        })?;
        let (lines, torn) = split_lines(&bytes);
        let bad = |line: usize, seq: Option<u64>, reason: Problem| VerifyFailure::BadLine {
            path: file.clone(),
            line,
            seq,
            reason,
        };
        for (index, line) in lines.iter().enumerate() {
            let number = index + 1;
            let entry = parse_line(line).map_err(|reason| bad(number, None, reason))?;
            let seq = Some(entry.seq);
            match &last {
                Some(previous) => {
                    if previous.seq.checked_add(1) != Some(entry.seq) {
                        return Err(bad(
                            number,
                            seq,
                            Problem::SeqGap {
                                previous: previous.seq,
                                found: entry.seq,
                            },
                        ));
                    }
                    if entry.prev != previous.hash {
                        return Err(bad(number, seq, Problem::PrevMismatch));
                    }
                }
                None => {
                    report.first_seq = seq;
                    report.starts_at_genesis = entry.prev == GENESIS_PREV;
                }
            }
            check_event(&entry).map_err(|reason| bad(number, seq, reason))?;
            last = Some(ChainPoint {
                seq: entry.seq,
                hash: sha256_hex(line),
            });
            report.lines += 1;
            report.last_seq = seq;
        }
        if !torn.is_empty() {
            return Err(bad(lines.len() + 1, None, Problem::Torn));
        }
    }
    Ok(report)
}

/// The fields each event needs, and for sends that the body hashes right.
fn check_event(entry: &Entry) -> Result<(), Problem> {
    let missing =
        |field: &str| Problem::NotAnEntry(format!("{} event without `{field}`", entry.event));
    match entry.event.as_str() {
        "send" => {
            entry.url.as_ref().ok_or_else(|| missing("url"))?;
            let body = entry.body.as_ref().ok_or_else(|| missing("body"))?;
            let body_sha256 = entry
                .body_sha256
                .as_ref()
                .ok_or_else(|| missing("body_sha256"))?;
            let canonical = serde_json::from_str::<serde_json::Value>(body.get())
                .and_then(|value| serde_json::to_vec(&value))
                .map_err(|_| Problem::BodyMismatch)?;
            if sha256_hex(&canonical) != *body_sha256 {
                return Err(Problem::BodyMismatch);
            }
        }
        "result" => {
            entry.of.ok_or_else(|| missing("of"))?;
            entry.duration_ms.ok_or_else(|| missing("duration_ms"))?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    const URL: &str = "https://stats.example.org/api/stats/v1/submit";
    const BIG: u64 = 1 << 30;

    /// A canonical payload like the real one, distinct per `n`.
    fn body(n: u32) -> Vec<u8> {
        format!(
            r#"{{"stats":{{"program_name":{{"desc":"Program name","type":"string","value":"kopano-server"}},"usercnt_active":{{"desc":"Active users","mode":"gauge","type":"int","value":{}}}}},"version":2}}"#,
            100 + n
        )
        .into_bytes()
    }

    fn log_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("audit.log")
    }

    fn open(path: &Path, max_size: u64, keep: u64) -> (AuditLog, Option<Recovery>) {
        AuditLog::open(path, max_size, keep).expect("open audit log")
    }

    /// Appends `n` send/result pairs; returns the seqs of the sends.
    fn write_pairs(log: &mut AuditLog, n: u32) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let seq = log.append_send(URL, &body(i)).unwrap();
                log.append_result(seq, Some(204), None, Duration::from_millis(12))
                    .unwrap();
                seq
            })
            .collect()
    }

    fn read_lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(path, text).unwrap();
    }

    fn time_of(line: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        value["time"].as_str().unwrap().to_owned()
    }

    fn bad_line(
        result: Result<VerifyReport, VerifyFailure>,
    ) -> (PathBuf, usize, Option<u64>, Problem) {
        match result {
            Err(VerifyFailure::BadLine {
                path,
                line,
                seq,
                reason,
            }) => (path, line, seq, reason),
            other => panic!("expected a bad line, got {other:?}"),
        }
    }

    /// A log of 4 send/result pairs (lines 1..=8) written and closed.
    fn good_log() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, BIG, 3);
        write_pairs(&mut log, 4);
        (dir, path)
    }

    #[test]
    fn send_line_has_the_documented_fields_in_order_and_embeds_the_sent_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, recovery) = open(&path, BIG, 3);
        assert!(recovery.is_none());
        let sent = body(7);
        assert_eq!(log.append_send(URL, &sent).unwrap(), 1);

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let line = text.trim_end_matches('\n');
        let time = time_of(line);
        assert!(
            time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "not RFC 3339 UTC with seconds: {time}"
        );
        let expected = format!(
            r#"{{"seq":1,"time":"{time}","event":"send","url":"{URL}","body":{},"body_sha256":"{}","prev":"{GENESIS_PREV}"}}"#,
            String::from_utf8(sent.clone()).unwrap(),
            sha256_hex(&sent),
        );
        assert_eq!(line, expected);

        let entries = read_entries(&path).unwrap();
        let stored = entries[0].body.as_ref().unwrap();
        assert_eq!(stored.get().as_bytes(), sent.as_slice());
        assert_eq!(entries[0].raw, line);
    }

    #[test]
    fn result_line_has_the_documented_fields_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, BIG, 3);
        let send = log.append_send(URL, &body(1)).unwrap();
        let result = log
            .append_result(
                send,
                None,
                Some("connection refused"),
                Duration::from_millis(1500),
            )
            .unwrap();
        assert_eq!(result, send + 1);

        let lines = read_lines(&path);
        let expected = format!(
            r#"{{"seq":2,"time":"{}","event":"result","of":1,"status":null,"error":"connection refused","duration_ms":1500,"prev":"{}"}}"#,
            time_of(&lines[1]),
            sha256_hex(lines[0].as_bytes()),
        );
        assert_eq!(lines[1], expected);
    }

    #[test]
    fn body_that_is_not_canonical_json_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, BIG, 3);
        for body in [
            &b"{\"version\":2"[..],
            b"{\"version\": 2}",
            b"{\"version\":2,\"stats\":{}}",
            b"{\"a\":1}\n",
            b"\xff",
        ] {
            let err = log.append_send(URL, body).unwrap_err();
            assert!(matches!(err, AuditError::BadBody { .. }), "{err}");
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(log.append_send(URL, &body(0)).unwrap(), 1);
    }

    #[test]
    fn verify_passes_on_a_good_log_with_several_send_result_pairs() {
        let (_dir, path) = good_log();
        let report = verify(&path).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                lines: 8,
                files: 1,
                first_seq: Some(1),
                last_seq: Some(8),
                starts_at_genesis: true,
            }
        );
    }

    #[test]
    fn verify_names_the_line_whose_body_had_a_byte_flipped() {
        let (_dir, path) = good_log();
        let mut lines = read_lines(&path);
        // Line 5 is the third send; its count is 102. Still valid JSON.
        assert!(lines[4].contains(r#""value":102"#));
        lines[4] = lines[4].replacen(r#""value":102"#, r#""value":112"#, 1);
        write_lines(&path, &lines);

        let (file, line, seq, reason) = bad_line(verify(&path));
        assert_eq!((file, line, seq), (path, 5, Some(5)));
        assert_eq!(reason, Problem::BodyMismatch);
        assert_eq!(reason.to_string(), "body does not match body_sha256");
    }

    #[test]
    fn verify_names_the_line_after_a_deleted_line() {
        let (_dir, path) = good_log();
        let mut lines = read_lines(&path);
        lines.remove(3);
        write_lines(&path, &lines);

        let (file, line, seq, reason) = bad_line(verify(&path));
        assert_eq!((file, line, seq), (path, 4, Some(5)));
        assert_eq!(reason.to_string(), "seq 5 follows 3");
    }

    #[test]
    fn verify_names_the_first_of_two_swapped_lines() {
        let (_dir, path) = good_log();
        let mut lines = read_lines(&path);
        lines.swap(5, 6);
        write_lines(&path, &lines);

        let (file, line, seq, reason) = bad_line(verify(&path));
        assert_eq!((file, line, seq), (path, 6, Some(7)));
        assert_eq!(
            reason,
            Problem::SeqGap {
                previous: 5,
                found: 7
            }
        );
    }

    #[test]
    fn verify_names_the_line_whose_prev_was_altered() {
        let (_dir, path) = good_log();
        let mut lines = read_lines(&path);
        let real_prev = sha256_hex(lines[2].as_bytes());
        lines[3] = lines[3].replace(&real_prev, &sha256_hex(b"forged"));
        write_lines(&path, &lines);

        let (file, line, seq, reason) = bad_line(verify(&path));
        assert_eq!((file, line, seq), (path, 4, Some(4)));
        assert_eq!(
            reason.to_string(),
            "prev does not match the hash of the line before"
        );
    }

    #[test]
    fn verify_names_a_line_that_is_not_json_and_a_torn_last_line() {
        let (_dir, path) = good_log();
        let mut lines = read_lines(&path);
        lines[1] = "{\"seq\":2,".to_owned();
        write_lines(&path, &lines);
        let (_, line, seq, reason) = bad_line(verify(&path));
        assert_eq!((line, seq, reason), (2, None, Problem::NotJson));

        let (_dir, path) = good_log();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":9,\"ti").unwrap();
        let (_, line, _, reason) = bad_line(verify(&path));
        assert_eq!((line, reason), (9, Problem::Torn));
    }

    #[test]
    fn torn_last_line_is_set_aside_and_recorded_when_the_log_is_opened() {
        let (dir, path) = good_log();
        let intact = fs::read(&path).unwrap();
        let torn =
            br#"{"seq":9,"time":"2024-05-01T10:00:00Z","event":"send","url":"https://x","bo"#;
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(torn).unwrap();
        drop(file);

        let (mut log, recovery) = open(&path, BIG, 3);
        let recovery = recovery.expect("torn line must be recovered");
        assert_eq!(recovery.torn_bytes, torn.len() as u64);
        assert_eq!(recovery.seq, 9);
        assert_eq!(recovery.saved_to.parent(), Some(dir.path()));
        assert!(recovery
            .saved_to
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("audit.log.torn-"));
        assert_eq!(fs::read(&recovery.saved_to).unwrap(), torn);

        let now = fs::read(&path).unwrap();
        assert_eq!(
            &now[..intact.len()],
            intact.as_slice(),
            "older lines changed"
        );
        let entries = read_entries(&path).unwrap();
        let recovered = &entries[8];
        assert_eq!(recovered.seq, 9);
        assert_eq!(recovered.event, "recovered");
        assert_eq!(recovered.torn_bytes, Some(torn.len() as u64));
        assert_eq!(
            recovered.saved_to.as_deref(),
            Some(recovery.saved_to.to_str().unwrap())
        );

        assert_eq!(log.append_send(URL, &body(9)).unwrap(), 10);
        assert_eq!(verify(&path).unwrap().last_seq, Some(10));
    }

    #[test]
    fn complete_last_line_that_is_not_json_is_set_aside_too() {
        let (_dir, path) = good_log();
        let intact = fs::read(&path).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"\0\0\0\0\n").unwrap();
        drop(file);

        let (_log, recovery) = open(&path, BIG, 3);
        let recovery = recovery.expect("garbage line must be recovered");
        assert_eq!(recovery.torn_bytes, 5);
        assert!(fs::read(&path).unwrap().starts_with(&intact));
        assert_eq!(verify(&path).unwrap().last_seq, Some(9));
    }

    #[test]
    fn reopening_continues_seq_and_chain() {
        let (_dir, path) = good_log();
        let (mut log, recovery) = open(&path, BIG, 3);
        assert!(recovery.is_none());
        assert_eq!(log.last_seq(), 8);
        assert_eq!(log.append_send(URL, &body(5)).unwrap(), 9);
        drop(log);

        let lines = read_lines(&path);
        let entry: Entry = serde_json::from_str(&lines[8]).unwrap();
        assert_eq!(entry.prev, sha256_hex(lines[7].as_bytes()));
        assert_eq!(verify(&path).unwrap().lines, 9);
    }

    #[test]
    fn rotation_continues_the_chain_across_files_and_keeps_only_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let keep = 2;
        // About three lines per file.
        let (mut log, _) = open(&path, 1000, keep);
        write_pairs(&mut log, 12);

        let rotated = rotated_files(&path).unwrap();
        let numbers: Vec<u64> = rotated.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, vec![2, 1], "only `keep` rotated files remain");
        for file in [&path, &rotated_path(&path, 1), &rotated_path(&path, 2)] {
            let size = fs::metadata(file).unwrap().len();
            assert!(size <= 1000, "{} has {size} bytes", file.display());
        }

        let older = read_lines(&rotated_path(&path, 1));
        let newer = read_lines(&path);
        let last_old: Entry = serde_json::from_str(older.last().unwrap()).unwrap();
        let first_new: Entry = serde_json::from_str(&newer[0]).unwrap();
        assert_eq!(first_new.seq, last_old.seq + 1);
        assert_eq!(first_new.prev, sha256_hex(older.last().unwrap().as_bytes()));

        let report = verify(&path).unwrap();
        assert_eq!(report.files, 3);
        assert_eq!(report.last_seq, Some(24));
        assert!(!report.starts_at_genesis, "seq 1 was rotated away");
        assert_eq!(
            report.lines,
            report.last_seq.unwrap() - report.first_seq.unwrap() + 1
        );
    }

    #[test]
    fn rotation_with_keep_zero_deletes_rotated_files_and_verify_starts_at_the_oldest_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, 1000, 0);
        write_pairs(&mut log, 5);
        assert!(rotated_files(&path).unwrap().is_empty());

        let report = verify(&path).unwrap();
        assert_eq!((report.files, report.last_seq), (1, Some(10)));
        assert!(report.first_seq.unwrap() > 1);
        assert!(!report.starts_at_genesis);
        assert!(report.to_string().contains("rotated away"));
    }

    #[test]
    fn a_line_larger_than_max_size_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, 10, 5);
        log.append_send(URL, &body(0)).unwrap();
        assert!(
            rotated_files(&path).unwrap().is_empty(),
            "empty file rotated"
        );
        log.append_send(URL, &body(1)).unwrap();
        assert_eq!(read_lines(&path).len(), 1);
        assert_eq!(read_lines(&rotated_path(&path, 1)).len(), 1);
        assert_eq!(verify(&path).unwrap().files, 2);
    }

    #[test]
    fn empty_current_file_continues_the_chain_from_the_newest_rotated_file() {
        // As after a crash between rotating and writing the new file's
        // first line.
        let (_dir, path) = good_log();
        fs::rename(&path, rotated_path(&path, 1)).unwrap();
        File::create(&path).unwrap();

        let (mut log, recovery) = open(&path, BIG, 3);
        assert!(recovery.is_none());
        assert_eq!(log.append_send(URL, &body(1)).unwrap(), 9);
        let report = verify(&path).unwrap();
        assert_eq!((report.files, report.lines), (2, 9));
        assert!(report.starts_at_genesis);
    }

    #[test]
    fn verify_names_the_rotated_file_holding_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, 1000, 5);
        write_pairs(&mut log, 6);
        let older = rotated_path(&path, 1);
        let mut lines = read_lines(&older);
        lines.remove(0);
        write_lines(&older, &lines);

        let (file, line, _, reason) = bad_line(verify(&path));
        assert_eq!((file, line), (older, 1));
        assert!(matches!(reason, Problem::SeqGap { .. }), "{reason}");
    }

    #[test]
    fn open_creates_the_directory_0750_and_the_file_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/log/surveyd/audit.log");
        let _ = open(&path, BIG, 3);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        let file_mode = fs::metadata(&path).unwrap().permissions().mode();
        // The umask may take bits away but never adds any.
        assert_eq!(dir_mode & 0o777 & !0o750, 0, "{dir_mode:o}");
        assert_eq!(file_mode & 0o777 & !0o640, 0, "{file_mode:o}");
        assert_ne!(file_mode & 0o600, 0);
    }

    #[test]
    fn open_fails_clearly_when_the_directory_cannot_exist() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"").unwrap();
        let err = AuditLog::open(&blocker.join("audit.log"), BIG, 3).unwrap_err();
        assert!(matches!(err, AuditError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn second_writer_waits_then_fails_clearly_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (first, _) = open(&path, BIG, 3);
        let wait = Duration::from_millis(200);
        let started = Instant::now();
        let err = AuditLog::open_with_lock_wait(&path, BIG, 3, wait).unwrap_err();
        assert!(started.elapsed() >= wait);
        match &err {
            AuditError::Locked { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
            other => panic!("expected Locked, got {other}"),
        }
        assert!(err
            .to_string()
            .contains("in use by another surveyd process"));

        drop(first);
        AuditLog::open_with_lock_wait(&path, BIG, 3, wait).expect("lock released on drop");
    }

    const CHILD_DIR_ENV: &str = "SURVEYD_AUDIT_TEST_CHILD_DIR";

    /// Root ignores file permissions but not RLIMIT_FSIZE, so the failing
    /// write happens in a copy of this test binary run under `prlimit`:
    /// the kernel writes part of the line, then refuses, like a full disk.
    #[test]
    fn failed_write_leaves_the_log_consistent_and_uses_up_no_seq() {
        if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
            return append_past_file_size_limit(Path::new(&dir));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, BIG, 3);
        write_pairs(&mut log, 1);
        drop(log);
        let before = fs::read(&path).unwrap();

        let test_name = concat!(
            module_path!(),
            "::failed_write_leaves_the_log_consistent_and_uses_up_no_seq"
        );
        let test_name = test_name.split_once("::").unwrap().1;
        let output = Command::new("prlimit")
            .arg(format!("--fsize={}", before.len() + 250))
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args([test_name, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD_DIR_ENV, dir.path())
            .output()
            .expect("run prlimit (util-linux)");
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let after = fs::read(&path).unwrap();
        assert!(after.starts_with(&before));
        let report = verify(&path).unwrap();
        assert_eq!((report.lines, report.last_seq), (3, Some(3)));
        let (_log, recovery) = open(&path, BIG, 3);
        assert!(recovery.is_none(), "the failed write left a torn line");
    }

    fn append_past_file_size_limit(dir: &Path) {
        // Get EFBIG instead of being killed by SIGXFSZ.
        // SAFETY: SIG_IGN installs no handler code, so nothing can run in
        // signal context.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGXFSZ,
                nix::sys::signal::SigHandler::SigIgn,
            )
        }
        .unwrap();
        let path = dir.join("audit.log");
        let (mut log, _) = open(&path, BIG, 3);
        let len = fs::metadata(&path).unwrap().len();
        let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(600));

        let err = log.append_send(URL, huge.as_bytes()).unwrap_err();
        assert!(matches!(err, AuditError::Write { .. }), "{err}");
        assert!(err.to_string().contains("nothing was sent"), "{err}");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len,
            "partial line left behind"
        );

        // A short line still fits, with the seq the failed send did not use.
        let seq = log.append_result(1, None, Some("audit log full"), Duration::ZERO);
        assert_eq!(seq.unwrap(), 3);
    }

    #[test]
    fn list_pairs_each_send_with_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, BIG, 3);
        let ok = log.append_send(URL, &body(1)).unwrap();
        let failed = log.append_send(URL, &body(2)).unwrap();
        log.append_result(ok, Some(204), None, Duration::from_millis(40))
            .unwrap();
        log.append_result(
            failed,
            None,
            Some("timed out\nafter 30s"),
            Duration::from_secs(30),
        )
        .unwrap();
        let pending = log.append_send(URL, &body(3)).unwrap();

        let rows = list(&path).unwrap();
        let outcomes: Vec<(u64, &str)> = rows.iter().map(|r| (r.seq, r.outcome.as_str())).collect();
        assert_eq!(
            outcomes,
            vec![
                (ok, "HTTP 204"),
                (failed, "error: timed out\nafter 30s"),
                (pending, "no result")
            ]
        );
        assert_eq!(rows[0].body_size, body(1).len());
        assert_eq!(rows[0].body_sha256, sha256_hex(&body(1)));
        assert_eq!(rows[0].duration_ms, Some(40));

        let table = format_table(&rows);
        let table_lines: Vec<&str> = table.lines().collect();
        assert_eq!(table_lines.len(), 4, "{table}");
        assert!(table_lines[0].starts_with("SEQ"));
        assert!(table_lines[1].contains("HTTP 204"));
        assert!(table_lines[1].contains(&sha256_hex(&body(1))[..12]));
        assert!(!table_lines[1].contains(&sha256_hex(&body(1))[..13]));
        assert!(table_lines[2].contains("error: timed out after 30s"));
        assert!(table_lines[3].contains("no result"));

        let json = format_json_lines(&rows);
        let parsed: Vec<serde_json::Value> = json
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0]["outcome"], "HTTP 204");
        assert_eq!(parsed[0]["status"], 204);
        assert_eq!(parsed[2]["status"], serde_json::Value::Null);
        assert_eq!(parsed[1]["body_sha256"], sha256_hex(&body(2)));
    }

    #[test]
    fn find_send_returns_the_payload_of_that_seq_only() {
        let (_dir, path) = good_log();
        let send = find_send(&path, 3).unwrap().expect("seq 3 is a send");
        assert_eq!(send.body.unwrap().get().as_bytes(), body(1).as_slice());
        assert!(find_send(&path, 4).unwrap().is_none(), "seq 4 is a result");
        assert!(find_send(&path, 99).unwrap().is_none());
    }

    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "[ -~\n\t\u{0}]{0,200}".prop_map(String::into_bytes),
            r#"(\{"seq":[0-9]{1,20},"time":"x","event":"(send|result|x)","prev":"[0-9a-f]{0,64}"\}\n?|[{}\[\]",:0-9\n]{0,20}){0,4}"#
                .prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn garbage_after_a_valid_log_is_recovered_or_refused_never_panics(garbage in garbage()) {
            let dir = tempfile::tempdir().unwrap();
            let path = log_path(&dir);
            let (mut log, _) = open(&path, BIG, 3);
            write_pairs(&mut log, 1);
            drop(log);
            let intact = fs::read(&path).unwrap();
            OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage).unwrap();

            let opened = AuditLog::open(&path, BIG, 3);
            let _ = verify(&path);
            if let Ok((mut log, _)) = opened {
                prop_assert!(fs::read(&path).unwrap().starts_with(&intact), "older lines changed");
                let _ = log.append_send(URL, &body(1));
                let _ = verify(&path);
            }
        }
    }
}
