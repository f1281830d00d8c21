//! Appending to the log: one fsynced line at a time, under the writer's
//! lock, rotating and pruning the files as they fill. Before each line the
//! writer checks that the log is still the file it wrote and ends where it
//! left it; otherwise it refuses (damage is for the admin to see, never
//! healed over).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;
use tracing::warn;

use super::dir::{still_at, Access, Create};
use super::ends::{ChainEnds, EndsFile};
use super::lock::{self, WriterLock};
use super::recovery::{chain_from_rotated, check_current, first_line, oldest_line, set_aside};
use super::*;

/// What torn-line recovery did when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// How many bytes after the log's last newline were set aside.
    pub torn_bytes: u64,
    /// Where those bytes were saved.
    pub saved_to: PathBuf,
    /// The `recovered` event that records it.
    pub seq: u64,
}

/// What `surveyd audit new-chain` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChain {
    /// The old chain's files, under their new names.
    pub set_aside: Vec<PathBuf>,
    /// The old chain's last complete line: its seq (if it parsed) and hash.
    pub old_last_seq: Option<u64>,
    pub old_last_hash: Option<String>,
    /// The `new-chain` event that starts the new chain.
    pub seq: u64,
}

/// Whether root may write into a log directory, and as whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootWrite {
    /// Not root, or a directory only root can write.
    Allowed,
    /// A directory owned by another user (the service's, under
    /// DynamicUser): write there only as that user.
    AsOwner { uid: u32, gid: u32 },
}

impl LogDir {
    /// Creates (mode 0750, if missing) and opens the directory of the log
    /// at `path`.
    pub fn for_log(path: &Path) -> Result<LogDir, AuditError> {
        let dir = parent_dir(path);
        LogDir::create_and_open(&dir).map_err(|source| AuditError::CreateDir { path: dir, source })
    }

    /// Root must not write into a directory another user can write: a link
    /// or file planted there under one of the log's names would turn
    /// root's write into theirs. Decided on the open directory itself.
    pub fn root_write(&self) -> Result<RootWrite, AuditError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(RootWrite::Allowed);
        }
        let meta = self.metadata().map_err(|source| AuditError::CreateDir {
            path: self.path().to_owned(),
            source,
        })?;
        let unsafe_dir = |why: String| AuditError::UnsafeDir {
            path: self.path().to_owned(),
            why,
        };
        let mode = meta.mode() & 0o7777;
        let fix = "make it writable by its owner alone";
        if mode & 0o002 != 0 {
            return Err(unsafe_dir(format!(
                "every user can write it (mode {mode:04o}); {fix}"
            )));
        }
        if meta.uid() != 0 {
            return Ok(RootWrite::AsOwner {
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
        if mode & 0o020 != 0 && meta.gid() != 0 {
            return Err(unsafe_dir(format!(
                "group {} can write it (mode {mode:04o}); {fix}",
                meta.gid()
            )));
        }
        Ok(RootWrite::Allowed)
    }
}

/// How the log is opened for writing.
#[derive(Debug)]
pub struct AuditOptions {
    pub max_size: u64,
    pub keep: u64,
    /// The state-dir file that records the chain's ends, if any.
    pub ends: Option<EndsFile>,
    /// How long to wait for another writer to let go.
    pub lock_wait: Duration,
}

/// The open audit log of one writer. Holding it holds the lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    dir: LogDir,
    name: OsString,
    max_size: u64,
    keep: u64,
    ends: Option<EndsFile>,
    /// `None` between a rotation moving the old file away and the new one
    /// being created; the next append creates it.
    file: Option<File>,
    /// Length of the current file up to its last good line.
    len: u64,
    /// Bytes (with `\n`) of the current file's last line; 0 if it has none.
    last_line_len: u64,
    last: ChainPoint,
    /// The oldest line on disk, for the chain's ends.
    first: Option<ChainPoint>,
    /// Rotated files beyond `keep` may exist; delete them after the next
    /// successful append, when the chain no longer depends on them.
    prune_pending: bool,
    /// A failed append could not be undone; undo it before the next one.
    repair_pending: bool,
    lock: WriterLock,
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

/// A `send` line's shape with another event name: `local` records the
/// same bytes, kept on this machine.
#[derive(Serialize)]
pub(super) struct LocalLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    body: &'a RawValue,
    body_sha256: &'a str,
    prev: &'a str,
}

#[derive(Serialize)]
pub(super) struct ConsentLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    mode: &'a str,
    schema: u32,
    fields: &'a [String],
    url: &'a str,
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

#[derive(Serialize)]
pub(super) struct NewChainLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    set_aside: &'a [String],
    old_last_seq: Option<u64>,
    old_last_hash: Option<&'a str>,
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
        let options = AuditOptions {
            max_size,
            keep,
            ends: None,
            lock_wait,
        };
        Self::open_in(LogDir::for_log(path)?, path, options)
    }

    /// Opens the log at `path` in its already opened directory `dir`. The
    /// current file must verify line by line and agree with the recorded
    /// ends; a torn tail is set aside and recorded.
    pub fn open_in(
        dir: LogDir,
        path: &Path,
        options: AuditOptions,
    ) -> Result<(AuditLog, Option<Recovery>), AuditError> {
        let name = file_name(path)?;
        let lock = lock::acquire(&dir, path, &name, options.lock_wait)?;
        let file = open_current(&dir, &name)?;
        let read_err = |source| AuditError::Read {
            path: path.to_owned(),
            source,
        };
        let len = file.metadata().map_err(read_err)?.len();
        let check = check_current(&file, path)?;

        let torn = if check.good_end < len {
            let saved_to = set_aside(&dir, &name, &file, check.good_end, len)?;
            // The torn bytes are safe elsewhere; only now cut them off.
            file.set_len(check.good_end)
                .and_then(|()| file.sync_all())
                .map_err(|source| AuditError::Recover {
                    path: path.to_owned(),
                    source,
                })?;
            Some((len - check.good_end, dir.join(&saved_to)))
        } else {
            None
        };

        let last = match check.last {
            Some(point) => point,
            None => chain_from_rotated(&dir, &name)?,
        };
        let first = oldest_line(&dir, &name)?;
        if let Some(ends_file) = &options.ends {
            let recorded =
                ChainEnds::read_in(ends_file, path).map_err(|source| AuditError::Read {
                    path: ends_file.path(),
                    source,
                })?;
            let newest = (last.seq > 0).then_some(&last);
            if let Some(what) = recorded
                .as_ref()
                .and_then(|ends| ends.contradiction(&ends_file.path(), first.as_ref(), newest))
            {
                return Err(AuditError::Damaged { what });
            }
        }
        let mut log = AuditLog {
            path: path.to_owned(),
            dir,
            name,
            max_size: options.max_size,
            keep: options.keep,
            ends: options.ends,
            file: Some(file),
            len: check.good_end,
            last_line_len: check.last_line_len,
            last,
            first,
            prune_pending: true,
            repair_pending: false,
            lock,
        };
        log.record_ends();

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

    /// Sets the old chain aside (every file renamed to
    /// `NAME.old-chain-<time>[.N]`) and starts a new one whose first line
    /// records that, for `surveyd audit new-chain`: the way out of a
    /// damaged log that neither heals silently nor blocks forever.
    pub fn start_new_chain(
        dir: LogDir,
        path: &Path,
        options: AuditOptions,
    ) -> Result<(AuditLog, NewChain), AuditError> {
        let name = file_name(path)?;
        let lock = lock::acquire(&dir, path, &name, options.lock_wait)?;
        let rotate_err = |source| AuditError::Rotate {
            path: path.to_owned(),
            source,
        };
        let files = log_files(&dir, &name).map_err(rotate_err)?;
        let old_last = files
            .iter()
            .rev()
            .find_map(|file| last_line(&dir, file).transpose())
            .transpose()
            .map_err(rotate_err)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut stamp = format!(".old-chain-{now}");
        let mut attempt = 0;
        while files
            .iter()
            .map(|file| aside_name(&name, file, &stamp))
            .any(|aside| dir.exists(&aside).unwrap_or(true))
        {
            attempt += 1;
            stamp = format!(".old-chain-{now}-{attempt}");
        }
        let mut set_aside = Vec::new();
        for file in &files {
            let aside = aside_name(&name, file, &stamp);
            dir.rename(file, &aside).map_err(rotate_err)?;
            set_aside.push(aside);
        }
        dir.sync().map_err(rotate_err)?;

        let file = open_current(&dir, &name)?;
        let mut log = AuditLog {
            path: path.to_owned(),
            dir,
            name,
            max_size: options.max_size,
            keep: options.keep,
            ends: options.ends,
            file: Some(file),
            len: 0,
            last_line_len: 0,
            last: ChainPoint::genesis(),
            first: None,
            prune_pending: false,
            repair_pending: false,
            lock,
        };
        let set_aside_text: Vec<String> = set_aside
            .iter()
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        let time = now_rfc3339();
        let line = serde_json::to_vec(&NewChainLine {
            seq: 1,
            time: &time,
            event: "new-chain",
            set_aside: &set_aside_text,
            old_last_seq: old_last.as_ref().and_then(|(seq, _)| *seq),
            old_last_hash: old_last.as_ref().map(|(_, hash)| hash.as_str()),
            prev: GENESIS_PREV,
        });
        let seq = log.write_line(1, line)?;
        let set_aside = set_aside.iter().map(|name| log.dir.join(name)).collect();
        Ok((
            log,
            NewChain {
                set_aside,
                old_last_seq: old_last.as_ref().and_then(|(seq, _)| *seq),
                old_last_hash: old_last.map(|(_, hash)| hash),
                seq,
            },
        ))
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seq of the last line written (0 if the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.last.seq
    }

    /// Applies new rotation limits to the open log (a reload that changes
    /// only these must not reopen it).
    pub fn set_limits(&mut self, max_size: u64, keep: u64) {
        if keep < self.keep {
            self.prune_pending = true;
        }
        self.max_size = max_size;
        self.keep = keep;
    }

    /// Records that `body` is about to be sent to `url`; returns once the
    /// line is on disk. `body` must be canonical JSON (sorted keys, no
    /// whitespace), exactly the bytes that will be sent. On error nothing
    /// must be sent.
    pub fn append_send(&mut self, url: &str, body: &[u8]) -> Result<u64, AuditError> {
        self.recheck_lock()?;
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

    /// Records a report that was built but, without consent to upload, is
    /// kept here: the exact bytes an upload would have sent.
    pub fn append_local(&mut self, body: &[u8]) -> Result<u64, AuditError> {
        self.recheck_lock()?;
        let body = canonical_body(body)?;
        let body_sha256 = sha256_hex(body.get().as_bytes());
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let line = serde_json::to_vec(&LocalLine {
            seq,
            time: &time,
            event: "local",
            body,
            body_sha256: &body_sha256,
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }

    /// Records the admin's `surveyd consent yes` or `no` before it takes
    /// effect: the mode, the schema and fields acknowledged, and the
    /// destination they were shown.
    pub fn append_consent(
        &mut self,
        mode: &str,
        schema: u32,
        fields: &[String],
        url: &str,
    ) -> Result<u64, AuditError> {
        self.recheck_lock()?;
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let line = serde_json::to_vec(&ConsentLine {
            seq,
            time: &time,
            event: "consent",
            mode,
            schema,
            fields,
            url,
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }

    fn recheck_lock(&mut self) -> Result<(), AuditError> {
        if self.lock.recheck(&self.dir)? {
            warn!(
                "the lock file next to audit log {} was removed or replaced; locked it again",
                self.path.display()
            );
        }
        Ok(())
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
        if line.len() >= MAX_LINE {
            return Err(write_err(
                &self.path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a line of {} bytes is over the limit of {MAX_LINE}",
                        line.len()
                    ),
                ),
            ));
        }
        self.check_unchanged()?;
        let line_len = line.len() as u64 + 1;
        if self.len > 0 && self.len.saturating_add(line_len) > self.max_size {
            self.rotate()?;
        }
        let file = match self.file.take() {
            Some(file) => file,
            None => open_current(&self.dir, &self.name)?,
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
        self.last_line_len = line_len;
        self.last = ChainPoint { seq, hash };
        if self.first.is_none() {
            self.first = Some(self.last.clone());
        }
        self.record_ends();
        if self.prune_pending {
            self.prune();
        }
        Ok(seq)
    }

    /// Before a line is added: the current file must still be the one at
    /// the log's name (not removed or replaced), end where the last write
    /// left it, and end in the line written last. Anything else means
    /// another process changed the log, and appending would hide it.
    fn check_unchanged(&mut self) -> Result<(), AuditError> {
        let path = self.path.clone();
        let read_err = |source| AuditError::Read {
            path: path.clone(),
            source,
        };
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !still_at(&self.dir, &self.name, file).map_err(read_err)? {
            return Err(AuditError::Replaced {
                path: self.path.clone(),
            });
        }
        self.repair()?;
        let Some(file) = &self.file else {
            return Ok(());
        };
        let len = file.metadata().map_err(read_err)?.len();
        if len != self.len {
            return Err(AuditError::Damaged {
                what: format!(
                    "{} is {len} bytes long, but surveyd's last line ended at byte {}: another process changed it",
                    self.path.display(),
                    self.len
                ),
            });
        }
        if self.last_line_len > 0 {
            let mut tail = vec![0; self.last_line_len as usize];
            file.read_exact_at(&mut tail, self.len - self.last_line_len)
                .map_err(read_err)?;
            if tail.pop() != Some(b'\n') || sha256_hex(&tail) != self.last.hash {
                return Err(AuditError::Damaged {
                    what: format!(
                        "{}: the last line (seq {}) is not what surveyd wrote: another process changed it",
                        self.path.display(),
                        self.last.seq
                    ),
                });
            }
        }
        Ok(())
    }

    /// Records the chain's ends in the state dir. The log line is already
    /// on disk, so a failure here is worth a warning, not a failed report.
    fn record_ends(&self) {
        let (Some(ends_file), Some(first)) = (&self.ends, &self.first) else {
            return;
        };
        if let Err(err) = ChainEnds::new(&self.path, first, &self.last).write(ends_file) {
            warn!(
                "cannot record the audit chain's ends in {}: {err}",
                ends_file.path().display()
            );
        }
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
        for (index, from) in rotated_files(&self.dir, &self.name).map_err(rotate_err)? {
            self.dir
                .rename(&from, &rotated_name(&self.name, index + 1))
                .map_err(rotate_err)?;
        }
        self.dir
            .rename(&self.name, &rotated_name(&self.name, 1))
            .map_err(rotate_err)?;
        // From here on the old handle points at `.1`; never write through it.
        self.file = None;
        self.len = 0;
        self.last_line_len = 0;
        self.prune_pending = true;
        let file = open_current(&self.dir, &self.name)?;
        self.file = Some(file);
        self.dir.sync().map_err(rotate_err)
    }

    /// Deletes rotated files beyond `keep`. The chain's ends move to the
    /// oldest file kept before anything is deleted, so a reader never sees
    /// a head that looks cut. A failure only costs disk space, so it is
    /// logged and retried after the next append.
    fn prune(&mut self) {
        let result = rotated_files(&self.dir, &self.name).and_then(|files| {
            let (doomed, kept): (Vec<_>, Vec<_>) =
                files.into_iter().partition(|(index, _)| *index > self.keep);
            if doomed.is_empty() {
                return Ok(());
            }
            let oldest_kept = kept.first().map_or(self.name.as_os_str(), |(_, name)| name);
            if let Some(first) = first_line(&self.dir, oldest_kept)? {
                self.first = Some(first);
                self.record_ends();
            }
            for (_, name) in &doomed {
                self.dir.remove(name)?;
            }
            self.dir.sync()
        });
        match result {
            Ok(()) => self.prune_pending = false,
            Err(e) => warn!(
                "cannot delete old rotated audit logs next to {}: {e}",
                self.path.display()
            ),
        }
    }
}

/// Opens the current file for appending, creating it with mode 0640 (and
/// making the creation durable) if it does not exist. Never through a
/// link, and only a regular file.
fn open_current(dir: &LogDir, name: &OsStr) -> Result<File, AuditError> {
    let open_err = |source| AuditError::Open {
        path: dir.join(name),
        source,
    };
    match dir.open_file(name, Access::Append, Create::New) {
        Ok(file) => {
            dir.sync().map_err(open_err)?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => dir
            .open_file(name, Access::Append, Create::No)
            .map_err(open_err),
        Err(e) => Err(open_err(e)),
    }
}

/// The last complete line of `name`: its seq (if it parses) and hash. Read
/// whatever it holds, damaged or not; a line over [`MAX_LINE`] ends it.
fn last_line(dir: &LogDir, name: &OsStr) -> io::Result<Option<(Option<u64>, String)>> {
    let Some(file) = dir.open_existing(name)? else {
        return Ok(None);
    };
    let mut last = None;
    let _ = super::reader::for_each_line(&file, &dir.join(name), |_, line| {
        last = Some((
            super::reader::parse_line(line).ok().map(|entry| entry.seq),
            sha256_hex(line),
        ));
        Ok(())
    });
    Ok(last)
}

/// `audit.log` -> `audit.log.old-chain-T`, `audit.log.3` ->
/// `audit.log.old-chain-T.3`.
fn aside_name(name: &OsStr, file: &OsStr, stamp: &str) -> OsString {
    let tail = &file.as_bytes()[name.len()..];
    let mut aside = sibling(name, stamp);
    aside.push(OsStr::from_bytes(tail));
    aside
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
