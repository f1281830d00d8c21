//! `surveyd audit verify`: checking the whole chain and naming the first
//! line that breaks it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ends::ChainEnds;
use super::reader::{parse_line, Entry};
use super::*;

/// Why a line failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NotJson,
    NotAnEntry(String),
    Torn,
    SeqGap { previous: u64, found: u64 },
    PrevMismatch,
    BodyMismatch,
    TooLong,
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
            Problem::TooLong => write!(
                f,
                "line is longer than {MAX_LINE} bytes, which surveyd never writes (planted or damaged); not read further"
            ),
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
    /// The chain is intact but shorter than the state dir says it was.
    #[error("{0}")]
    Truncated(String),
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
    /// True when the oldest line present is the first line of its chain
    /// (prev is all zeros). False when older lines were rotated away: the
    /// chain is then checked from the oldest line present.
    pub starts_at_genesis: bool,
    /// Whether the ends recorded in the state dir were compared.
    pub ends_checked: bool,
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
            f.write_str("the chain starts at its first line")?;
        } else {
            write!(
                f,
                "older lines were rotated away, so the chain is checked from seq {first} on"
            )?;
        }
        if self.ends_checked {
            f.write_str("; both ends match the state dir's record")?;
        }
        Ok(())
    }
}

/// One file's lines, checked as a piece of the chain.
#[derive(Debug, Clone, Default)]
pub(super) struct FileCheck {
    pub(super) lines: u64,
    /// The first line's own point and its `prev`.
    pub(super) first: Option<(ChainPoint, String)>,
    pub(super) last: Option<ChainPoint>,
    /// Bytes of the last complete line, with its `\n`.
    pub(super) last_line_len: u64,
    /// Where the last complete line ends.
    pub(super) good_end: u64,
    /// Bytes after the last `\n`.
    pub(super) torn_len: u64,
}

/// Reads `file` from its start, one line at a time (each capped at
/// [`MAX_LINE`]), checking that each complete line is an entry, that seq
/// grows by one and prev is the hash of the line before (continuing from
/// `before`, the last line of the previous file), and that each send's body
/// hashes right. `path` names the file in errors.
pub(super) fn check_file(
    file: &File,
    path: &Path,
    before: Option<&ChainPoint>,
) -> Result<FileCheck, VerifyFailure> {
    let read_err = |source| {
        VerifyFailure::Unreadable(AuditError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut check = FileCheck::default();
    let mut last = before.cloned();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(read_err)?;
        if read == 0 {
            break;
        }
        let number = check.lines as usize + 1;
        let bad = |seq: Option<u64>, reason: Problem| VerifyFailure::BadLine {
            path: path.to_owned(),
            line: number,
            seq,
            reason,
        };
        if buf.last() != Some(&b'\n') {
            if buf.len() > MAX_LINE {
                return Err(bad(None, Problem::TooLong));
            }
            check.torn_len = buf.len() as u64;
            break;
        }
        let line = &buf[..buf.len() - 1];
        let entry = parse_line(line).map_err(|reason| bad(None, reason))?;
        let seq = Some(entry.seq);
        let hash = sha256_hex(line);
        if let Some(previous) = &last {
            if previous.seq.checked_add(1) != Some(entry.seq) {
                return Err(bad(
                    seq,
                    Problem::SeqGap {
                        previous: previous.seq,
                        found: entry.seq,
                    },
                ));
            }
            if entry.prev != previous.hash {
                return Err(bad(seq, Problem::PrevMismatch));
            }
        }
        check_event(&entry).map_err(|reason| bad(seq, reason))?;
        let point = ChainPoint {
            seq: entry.seq,
            hash,
        };
        if check.first.is_none() {
            check.first = Some((point.clone(), entry.prev.clone()));
        }
        last = Some(point.clone());
        check.last = Some(point);
        check.lines += 1;
        check.last_line_len = read as u64;
        check.good_end += read as u64;
    }
    Ok(check)
}

/// Checks every file of the log in order: each line is an entry, seq grows
/// by one, prev is the hash of the line before (across files), and each
/// send's body hashes to its body_sha256. Then, if `ends_file` (in the
/// state dir) records this log's ends, the oldest and newest lines must
/// match them. Names the first bad line. Opens nothing through a link and
/// writes nothing.
pub fn verify(path: &Path, ends_file: Option<&Path>) -> Result<VerifyReport, VerifyFailure> {
    let read_ends = |file: &Path| {
        ChainEnds::read(file, path).map_err(|source| AuditError::Read {
            path: file.to_owned(),
            source,
        })
    };
    // A running writer appends, rotates and prunes while this reads by
    // name: a result is only taken from a pass during which neither the
    // files nor the recorded ends changed. The ends are read first: the
    // writer records them just after writing and just before pruning, so
    // the log read after them can only be longer.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (dir, name) = open_for_reading(path)?;
        let files_before = snapshot(&dir, &name, path)?;
        let ends = ends_file.map(read_ends).transpose()?.flatten();
        let result = verify_chain(&dir, &name);
        let changed = snapshot(&dir, &name, path)? != files_before
            || match ends_file {
                Some(file) => read_ends(file)? != ends,
                None => false,
            };
        if changed && attempt < MAX_PASSES {
            continue;
        }
        if changed {
            return Err(VerifyFailure::Unreadable(AuditError::Read {
                path: path.to_owned(),
                source: io::Error::other(format!(
                    "the log changed during each of {MAX_PASSES} passes (a busy writer?); run verify again"
                )),
            }));
        }
        let (mut report, oldest, last) = result?;
        let (Some(ends_file), Some(ends)) = (ends_file, ends) else {
            return Ok(report);
        };
        if let Some(what) = ends.contradiction(ends_file, oldest.as_ref(), last.as_ref()) {
            return Err(VerifyFailure::Truncated(what));
        }
        report.ends_checked = true;
        return Ok(report);
    }
}

/// How many times [`verify`] reads a log that keeps changing under it.
const MAX_PASSES: u32 = 10;

/// Each file of the log with its inode and size: equal snapshots before
/// and after a pass mean no line was added, no file rotated or pruned.
fn snapshot(
    dir: &LogDir,
    name: &OsStr,
    path: &Path,
) -> Result<Vec<(OsString, u64, i64)>, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for file in log_files(dir, name).map_err(read_err)? {
        if let Some(stat) = dir.stat(&file).map_err(read_err)? {
            files.push((file, stat.st_ino, stat.st_size));
        }
    }
    Ok(files)
}

/// The chain check of [`verify`], with the oldest and newest lines found.
fn verify_chain(
    dir: &LogDir,
    name: &OsStr,
) -> Result<(VerifyReport, Option<ChainPoint>, Option<ChainPoint>), VerifyFailure> {
    let read_err = |file: &OsStr, source| AuditError::Read {
        path: dir.join(file),
        source,
    };
    let files = log_files(dir, name).map_err(|source| read_err(name, source))?;
    let mut report = VerifyReport {
        lines: 0,
        files: files.len(),
        first_seq: None,
        last_seq: None,
        starts_at_genesis: false,
        ends_checked: false,
    };
    let mut oldest: Option<ChainPoint> = None;
    let mut last: Option<ChainPoint> = None;
    for file_name in &files {
        let file_path = dir.join(file_name);
        let Some(file) = dir
            .open_existing(file_name)
            .map_err(|source| read_err(file_name, source))?
        else {
            continue;
        };
        let check = check_file(&file, &file_path, last.as_ref())?;
        if let (None, Some((first, prev))) = (&oldest, &check.first) {
            report.first_seq = Some(first.seq);
            report.starts_at_genesis = prev == GENESIS_PREV;
            oldest = Some(first.clone());
        }
        if check.torn_len > 0 {
            return Err(VerifyFailure::BadLine {
                path: file_path,
                line: check.lines as usize + 1,
                seq: None,
                reason: Problem::Torn,
            });
        }
        report.lines += check.lines;
        if check.last.is_some() {
            last = check.last;
        }
    }
    report.last_seq = last.as_ref().map(|point| point.seq);
    Ok((report, oldest, last))
}

/// The fields each event needs, and for sends that the body hashes right.
pub(super) fn check_event(entry: &Entry) -> Result<(), Problem> {
    let missing =
        |field: &str| Problem::NotAnEntry(format!("{} event without `{field}`", entry.event));
    match entry.event.as_str() {
        "send" | "local" => {
            if entry.event == "send" {
                entry.url.as_ref().ok_or_else(|| missing("url"))?;
            }
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
        "consent" => {
            entry.mode.as_ref().ok_or_else(|| missing("mode"))?;
            entry.schema.ok_or_else(|| missing("schema"))?;
            entry.fields.as_ref().ok_or_else(|| missing("fields"))?;
            entry.url.as_ref().ok_or_else(|| missing("url"))?;
        }
        _ => {}
    }
    Ok(())
}
