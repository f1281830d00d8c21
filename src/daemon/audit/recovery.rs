//! What the writer checks when it opens the log: the current file verifies
//! line by line, and only a torn tail (bytes after the last `\n`, from a
//! crash or a full disk) is set aside before being cut off. A complete line
//! that does not verify is damage, never cut away.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::dir::{Access, Create};
use super::verify::{check_file, FileCheck, VerifyFailure};
use super::*;

/// Verifies the current file for the writer; damage becomes
/// [`AuditError::Damaged`].
pub(super) fn check_current(file: &File, path: &Path) -> Result<FileCheck, AuditError> {
    check_file(file, path, None).map_err(as_damage)
}

/// The chain point to continue from when the current file is empty: the
/// newest rotated file's last line, so a rotation or recovery never
/// restarts the chain.
pub(super) fn chain_from_rotated(dir: &LogDir, name: &OsStr) -> Result<ChainPoint, AuditError> {
    let newest = rotated_name(name, 1);
    let newest_path = dir.join(&newest);
    let file = match dir.open_existing(&newest) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(ChainPoint::genesis()),
        Err(source) => {
            return Err(AuditError::Read {
                path: newest_path,
                source,
            })
        }
    };
    let check = check_file(&file, &newest_path, None).map_err(as_damage)?;
    check.last.ok_or_else(|| AuditError::NoChainToContinue {
        path: newest_path,
        current: dir.join(name),
    })
}

/// The first line of the oldest file of the log, for the chain's ends.
pub(super) fn oldest_line(dir: &LogDir, name: &OsStr) -> Result<Option<ChainPoint>, AuditError> {
    let read_err = |file: &OsStr, source| AuditError::Read {
        path: dir.join(file),
        source,
    };
    for file_name in log_files(dir, name).map_err(|source| read_err(name, source))? {
        if let Some(first) =
            first_line(dir, &file_name).map_err(|source| read_err(&file_name, source))?
        {
            return Ok(Some(first));
        }
    }
    Ok(None)
}

/// The first complete line of `name` as a chain point (seq 0 if it does not
/// parse), reading no more than one capped line.
pub(super) fn first_line(dir: &LogDir, name: &OsStr) -> io::Result<Option<ChainPoint>> {
    let Some(file) = dir.open_existing(name)? else {
        return Ok(None);
    };
    let mut line = Vec::new();
    BufReader::new(&file)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    Ok(match line.split_last() {
        Some((b'\n', line)) => Some(ChainPoint {
            seq: super::reader::parse_line(line).map_or(0, |entry| entry.seq),
            hash: sha256_hex(line),
        }),
        _ => None,
    })
}

/// A verification failure as the writer reports it.
pub(super) fn as_damage(failure: VerifyFailure) -> AuditError {
    match failure {
        VerifyFailure::Unreadable(err) => err,
        other => AuditError::Damaged {
            what: other.to_string(),
        },
    }
}

/// Copies bytes `from..to` of the log into a new `audit.log.torn-<time>`
/// file and makes it durable, before the log is cut.
pub(super) fn set_aside(
    dir: &LogDir,
    name: &OsStr,
    file: &File,
    from: u64,
    to: u64,
) -> Result<OsString, AuditError> {
    let recover_err = |source| AuditError::Recover {
        path: dir.join(name),
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
        let candidate = sibling(name, &suffix);
        match dir.open_file(&candidate, Access::ReadWrite, Create::New) {
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
        .and_then(|()| dir.sync())
        .map_err(recover_err)?;
    Ok(saved_to)
}
