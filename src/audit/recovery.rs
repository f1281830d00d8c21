//! Torn-line recovery: finding where the last good line of a file ends,
//! and setting aside what follows it before the writer cuts it off.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::reader::Entry;
use super::*;

/// Where the last valid line of a file ends and the chain point it gives.
pub(super) struct Tail {
    pub(super) good_end: u64,
    pub(super) last: Option<ChainPoint>,
}

/// Finds the last valid entry line of the file, reading from the end.
/// Everything after it is torn: a line without its `\n`, or lines that are
/// not entries (a crash can leave garbage or zeros at the end).
pub(super) fn scan_tail(file: &File, len: u64) -> io::Result<Tail> {
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
pub(super) fn last_valid_line(buf: &[u8], starts_file: bool) -> Option<(usize, usize, u64)> {
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
pub(super) fn chain_from_rotated(path: &Path) -> Result<ChainPoint, AuditError> {
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
pub(super) fn set_aside(
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
