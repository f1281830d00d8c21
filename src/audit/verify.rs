//! `surveyd audit verify`: checking the whole chain and naming the first
//! line that breaks it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

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
pub(super) fn check_event(entry: &Entry) -> Result<(), Problem> {
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
