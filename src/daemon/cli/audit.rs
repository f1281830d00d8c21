//! `surveyd audit`, `audit show` and `audit verify`: what the admin sees
//! of the audit log (the log itself lives in `crate::daemon::audit`).

use super::AuditAction;
use crate::daemon::audit::{self, ListRow};
use crate::daemon::settings::Settings;
use crate::daemon::state;
use crate::exit;
use crate::sys::Failure;

/// A fresh installation has no audit log: that is not an error, unless the
/// state dir says reports were attempted, in which case the log was removed.
pub(super) fn no_audit_log_yet(
    settings: &Settings,
    action: Option<&AuditAction>,
) -> Option<Result<(), Failure>> {
    let log = &settings.audit_log;
    let rotated = log.with_file_name(format!(
        "{}.1",
        log.file_name().unwrap_or_default().to_string_lossy()
    ));
    if log.symlink_metadata().is_ok() || rotated.symlink_metadata().is_ok() {
        return None;
    }
    if let Some(attempt) = state::last_attempt(&settings.state_dir) {
        return Some(Err(Failure::new(
            exit::DATAERR,
            format!(
                "audit log {} is missing, but {} records a report attempted at {}",
                log.display(),
                settings.state_dir.display(),
                humantime::format_rfc3339_seconds(attempt)
            ),
        )));
    }
    match action {
        Some(AuditAction::Show { seq }) => Some(Err(Failure::new(
            exit::DATAERR,
            format!("no report with sequence number {seq}: no report was sent yet"),
        ))),
        _ => {
            eprintln!(
                "surveyd: no report was sent yet (no audit log at {})",
                log.display()
            );
            Some(Ok(()))
        }
    }
}

pub(super) fn audit_command(
    settings: &Settings,
    json: bool,
    action: Option<&AuditAction>,
) -> Result<(), Failure> {
    let path = settings.audit_log.as_path();
    match action {
        None => match audit::list(path) {
            Ok(rows) => {
                if json {
                    print!("{}", format_json_lines(&rows));
                } else {
                    print!("{}", format_table(&rows));
                }
                Ok(())
            }
            Err(err) => Err(Failure::new(exit::IOERR, err)),
        },
        Some(AuditAction::NewChain) => super::new_chain(settings),
        Some(AuditAction::Show { seq }) => match audit::find_report(path, *seq) {
            Ok(Some(entry)) => {
                let body = entry.body.as_ref().map(|b| b.get()).unwrap_or("null");
                println!("{body}");
                Ok(())
            }
            Ok(None) => Err(Failure::new(
                exit::DATAERR,
                format!("no report with sequence number {seq} in {}", path.display()),
            )),
            Err(err) => Err(Failure::new(exit::IOERR, err)),
        },
        Some(AuditAction::Verify) => {
            let report = audit::verify(path, Some(&state::chain_ends_path(&settings.state_dir)))
                .map_err(|failure| {
                    Failure::new(
                        exit::DATAERR,
                        format!("audit log verification FAILED: {failure}"),
                    )
                })?;
            println!("{report}");
            let entries =
                audit::read_entries(path).map_err(|err| Failure::new(exit::IOERR, err))?;
            match audit::verify_receipts(&entries, &settings.collector_keys) {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(failure) => Err(Failure::new(
                    exit::DATAERR,
                    format!("receipt verification FAILED: {failure}"),
                )),
            }
        }
    }
}

/// The widest a table cell gets; longer text (a planted 64 KiB URL) is
/// cut in the middle, so both its start and its end stay visible.
const MAX_CELL: usize = 120;

/// A table for people: one send per line, hashes shortened to 12 digits,
/// very long fields shortened.
pub fn format_table(rows: &[ListRow]) -> String {
    let header = ["SEQ", "TIME", "URL", "OUTCOME", "SIZE", "SHA256", "RECEIPT"];
    let mut cells: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for row in rows {
        let outcome = match row.event.as_str() {
            "forget" => format!("deletion: {}", row.outcome),
            _ => row.outcome.clone(),
        };
        cells.push([
            row.seq.to_string(),
            shorten(&printable(&row.time)),
            shorten(&printable(&row.url)),
            shorten(&printable(&outcome)),
            row.body_size.to_string(),
            printable(&row.body_sha256.chars().take(12).collect::<String>()),
            printable(row.receipt.as_deref().unwrap_or("-")),
        ]);
    }
    let mut widths = [0usize; 7];
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
            line.push_str(cell);
            let padding = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', padding));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Every text cell comes from a file the service's user can write, and
/// error texts from the network: keep control, separator and bidirectional
/// formatting characters from forging rows or reaching the terminal.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if crate::wire::forbidden_char(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// `text` cut to [`MAX_CELL`] characters with `…` in the middle.
pub(super) fn shorten(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_CELL {
        return text.to_owned();
    }
    let keep = MAX_CELL - 1;
    let head: String = text.chars().take(keep - keep / 3).collect();
    let tail: String = text.chars().skip(count - keep / 3).collect();
    format!("{head}…{tail}")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, outcome: &str, status: Option<u16>, sha: &str) -> ListRow {
        ListRow {
            seq,
            time: "2026-01-01T00:00:00Z".into(),
            event: "send".into(),
            url: "https://stats.example.org/api/stats/v1/submit".into(),
            outcome: outcome.into(),
            status,
            error: None,
            duration_ms: Some(40),
            body_size: 10,
            body_sha256: sha.into(),
            receipt: status.map(|_| "valid".into()),
        }
    }

    #[test]
    fn table_shortens_hashes_and_flattens_control_characters_and_json_keeps_everything() {
        let sha = "ab".repeat(32);
        let rows = vec![
            row(1, "HTTP 204", Some(204), &sha),
            row(3, "error: timed out\nafter 30s", None, &sha),
            row(5, "no result", None, &sha),
        ];
        let table = format_table(&rows);
        let table_lines: Vec<&str> = table.lines().collect();
        assert_eq!(table_lines.len(), 4, "{table}");
        assert!(table_lines[0].starts_with("SEQ"));
        assert!(table_lines[1].contains("HTTP 204"));
        assert!(table_lines[1].contains(&sha[..12]));
        assert!(!table_lines[1].contains(&sha[..13]));
        assert!(table_lines[2].contains("error: timed out after 30s"));
        assert!(table_lines[3].contains("no result"));
        assert!(table_lines[0].ends_with("RECEIPT"));
        assert!(table_lines[1].ends_with("valid"));
        assert!(table_lines[3].ends_with(" -"));

        let json = format_json_lines(&rows);
        let parsed: Vec<serde_json::Value> = json
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0]["outcome"], "HTTP 204");
        assert_eq!(parsed[0]["status"], 204);
        assert_eq!(parsed[2]["status"], serde_json::Value::Null);
        assert_eq!(parsed[1]["body_sha256"], sha);
        assert_eq!(parsed[0]["receipt"], "valid");
        assert_eq!(parsed[2]["receipt"], serde_json::Value::Null);
    }
}
