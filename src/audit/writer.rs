//! Appending to the log: one fsynced line at a time, under the writer's
//! lock, rotating and pruning the files as they fill.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use serde_json::value::RawValue;

use super::recovery::{chain_from_rotated, scan_tail, set_aside};
use super::*;

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
pub(super) struct SendLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    url: &'a str,
    body: &'a RawValue,
    body_sha256: &'a str,
    prev: &'a str,
}

#[derive(Serialize)]
pub(super) struct ResultLine<'a> {
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
pub(super) struct RecoveredLine<'a> {
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

    pub(super) fn open_with_lock_wait(
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
pub(super) fn canonical_body(body: &[u8]) -> Result<&RawValue, AuditError> {
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

pub(super) fn write_and_sync(mut file: &File, line: &[u8]) -> io::Result<()> {
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
pub(super) fn open_current(path: &Path, dir: &Path) -> Result<File, AuditError> {
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
pub(super) fn acquire_lock(path: &Path, wait: Duration) -> Result<Flock<File>, AuditError> {
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
