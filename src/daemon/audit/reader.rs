//! Reading the log back: every entry in chain order, one report's payload,
//! and the reports (sent, paired with their results, or kept local) and
//! consent answers for `surveyd audit`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::*;

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
    /// The installation a `forget` asked to delete.
    #[serde(default)]
    pub uid: Option<String>,
    /// A result's receipt as the collector sent it (`null` and absent
    /// both read as `None`; `receipt_state` tells them apart).
    #[serde(default)]
    pub receipt: Option<Box<RawValue>>,
    #[serde(default)]
    pub receipt_state: Option<String>,
    #[serde(default)]
    pub receipt_problem: Option<String>,
    /// `consent`: `upload` or `local`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `consent`: the schema acknowledged.
    #[serde(default)]
    pub schema: Option<u32>,
    /// `consent`: the fields acknowledged.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    pub prev: String,
    /// The line as stored, without its `\n`.
    #[serde(skip)]
    pub raw: String,
}

impl Entry {
    /// A result the collector accepted: a 2xx answer that surveyd did not
    /// mark with an error (such as a receipt that failed to verify).
    pub fn is_accepted(&self) -> bool {
        self.event == "result" && matches!(self.status, Some(200..=299)) && self.error.is_none()
    }
}

/// Pairs each send with the result written for it, fed the entries in log
/// order one at a time: it holds only the sends still awaiting their
/// result (a send a crash left without one stays there).
#[derive(Debug, Default)]
pub struct SendResults {
    waiting: HashMap<u64, Entry>,
}

impl SendResults {
    /// Takes the next entry; a result of a send gives that send and it.
    pub fn add(&mut self, entry: Entry) -> Option<(Entry, Entry)> {
        match entry.event.as_str() {
            "send" => {
                self.waiting.insert(entry.seq, entry);
                None
            }
            "result" => {
                let send = self.waiting.remove(&entry.of?)?;
                Some((send, entry))
            }
            _ => None,
        }
    }
}

/// Reads every entry, rotated files oldest first, then the current file.
/// A torn last line (still being written, or left by a crash) is skipped;
/// any other unreadable line is an error. Opens nothing through a link,
/// writes nothing, and reads no line longer than [`MAX_LINE`].
pub fn read_entries(path: &Path) -> Result<Vec<Entry>, AuditError> {
    let mut entries = Vec::new();
    for_each_entry(path, |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok(entries)
}

/// Like [`read_entries`], one entry at a time: memory for one line, not
/// the whole log.
pub fn for_each_entry(
    path: &Path,
    mut each: impl FnMut(Entry) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let (dir, name) = open_for_reading(path)?;
    let files = log_files(&dir, &name).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    for file_name in files {
        let file_path = dir.join(&file_name);
        let Some(file) = dir
            .open_existing(&file_name)
            .map_err(|source| AuditError::Read {
                path: file_path.clone(),
                source,
            })?
        else {
            continue;
        };
        for_each_line(&file, &file_path, |number, line| {
            let entry = parse_line(line).map_err(|reason| AuditError::BadLine {
                path: file_path.clone(),
                line: number,
                reason,
            })?;
            each(entry)
        })?;
    }
    Ok(())
}

/// Calls `each` with the number (1-based) and bytes (without `\n`) of
/// every complete line of `file`, read from its current offset. Bytes
/// after the last `\n` are not a line. A line longer than [`MAX_LINE`] is
/// an error naming it, and is not read into memory.
pub(super) fn for_each_line(
    file: &File,
    path: &Path,
    mut each: impl FnMut(usize, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| AuditError::Read {
                path: path.to_owned(),
                source,
            })?;
        number += 1;
        match buf.split_last() {
            Some((b'\n', line)) => each(number, line)?,
            Some(_) if buf.len() > MAX_LINE => {
                return Err(AuditError::BadLine {
                    path: path.to_owned(),
                    line: number,
                    reason: Problem::TooLong,
                })
            }
            _ => return Ok(()),
        }
    }
}

pub(super) fn parse_line(line: &[u8]) -> Result<Entry, Problem> {
    let mut entry: Entry = serde_json::from_slice(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::NotAnEntry(e.to_string()),
        _ => Problem::NotJson,
    })?;
    // Parsing succeeded, so the line is valid UTF-8.
    entry.raw = String::from_utf8_lossy(line).into_owned();
    Ok(entry)
}

/// The send entry with this seq.
pub fn find_send(path: &Path, seq: u64) -> Result<Option<Entry>, AuditError> {
    Ok(read_entries(path)?
        .into_iter()
        .find(|entry| entry.seq == seq && entry.event == "send"))
}

/// The report with this seq, sent or kept local, for `surveyd audit show
/// SEQ`.
pub fn find_report(path: &Path, seq: u64) -> Result<Option<Entry>, AuditError> {
    Ok(read_entries(path)?
        .into_iter()
        .find(|entry| entry.seq == seq && matches!(entry.event.as_str(), "send" | "local")))
}

/// One report (sent or kept local) and its outcome, one deletion request
/// and its outcome, or one consent answer, for `surveyd audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListRow {
    pub seq: u64,
    pub time: String,
    /// `send`, `local` (built, not sent: no consent), `consent`, or
    /// `forget` (a deletion request).
    pub event: String,
    pub url: String,
    /// `HTTP 204`, `error: ...`, `no result`, `local (not sent)`, or the
    /// consent given (`consent: upload, schema 3, 15 fields`).
    pub outcome: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    /// Bytes sent.
    pub body_size: usize,
    pub body_sha256: String,
    /// The result's `receipt_state`; `None` without a result or for a
    /// result written before receipts were recorded.
    pub receipt: Option<String>,
}

/// Pairs each send with its result, in log order, beside the reports kept
/// local and the consent answers.
pub fn list_rows(entries: &[Entry]) -> Vec<ListRow> {
    let results: HashMap<u64, &Entry> = entries
        .iter()
        .filter(|entry| entry.event == "result")
        .filter_map(|entry| entry.of.map(|of| (of, entry)))
        .collect();
    entries
        .iter()
        .filter_map(|entry| match entry.event.as_str() {
            "send" | "forget" => Some(send_row(entry, results.get(&entry.seq).copied())),
            "local" => Some(ListRow {
                seq: entry.seq,
                time: entry.time.clone(),
                event: entry.event.clone(),
                url: String::new(),
                outcome: "local (not sent)".to_owned(),
                status: None,
                error: None,
                duration_ms: None,
                body_size: entry.body.as_ref().map_or(0, |body| body.get().len()),
                body_sha256: entry.body_sha256.clone().unwrap_or_default(),
                receipt: None,
            }),
            "consent" => Some(ListRow {
                seq: entry.seq,
                time: entry.time.clone(),
                event: entry.event.clone(),
                url: entry.url.clone().unwrap_or_default(),
                outcome: format!(
                    "consent: {}, schema {}, {} field(s)",
                    entry.mode.as_deref().unwrap_or("?"),
                    entry
                        .schema
                        .map_or_else(|| "?".to_owned(), |s| s.to_string()),
                    entry.fields.as_ref().map_or(0, Vec::len)
                ),
                status: None,
                error: None,
                duration_ms: None,
                body_size: 0,
                body_sha256: String::new(),
                receipt: None,
            }),
            _ => None,
        })
        .collect()
}

fn send_row(send: &Entry, result: Option<&Entry>) -> ListRow {
    {
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
            event: send.event.clone(),
            url: send.url.clone().unwrap_or_default(),
            outcome,
            status,
            error,
            duration_ms: result.and_then(|r| r.duration_ms),
            body_size: send.body.as_ref().map_or(0, |body| body.get().len()),
            body_sha256: send.body_sha256.clone().unwrap_or_default(),
            receipt: result.and_then(|r| r.receipt_state.clone()),
        }
    }
}

/// The rows of every send in the log at `path`.
pub fn list(path: &Path) -> Result<Vec<ListRow>, AuditError> {
    Ok(list_rows(&read_entries(path)?))
}
