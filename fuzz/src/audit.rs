//! The audit log's readers (src/daemon/audit/): `read_entries` and the
//! `surveyd audit` table and JSON lines built from it, and `verify`, the
//! way `surveyd audit verify` runs it.
//!
//! The input is split at NUL bytes (a byte no log line holds): the first
//! part becomes audit.log, the next up to three become the rotated files
//! audit.log.1 (newest) .. audit.log.3, all in the given directory. A file
//! whose part is missing is removed.

use std::path::Path;

use surveyd::daemon::audit::{list_rows, read_entries, verify};
use surveyd::daemon::cli::audit::{format_json_lines, format_table};

use crate::files::put_file;

const ROTATED: [&str; 3] = ["audit.log.1", "audit.log.2", "audit.log.3"];

/// Runs `data` through the audit log readers in `dir` (empty but for what
/// earlier calls wrote) and panics where surveyd breaks a promise.
pub fn check(dir: &Path, data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).take(1 + ROTATED.len()).collect();
    put_file(dir, "audit.log", Some(parts[0]));
    for (index, name) in ROTATED.iter().enumerate() {
        put_file(dir, name, parts.get(index + 1).copied());
    }
    let path = dir.join("audit.log");

    let entries = read_entries(&path);
    if let Ok(entries) = &entries {
        let rows = list_rows(entries);
        let table = format_table(&rows);
        // One header line and one line per send: a field that brought its
        // own line break would let a log line forge rows in `surveyd audit`.
        assert_eq!(
            table.lines().count(),
            rows.len() + 1,
            "table rows do not match sends:\n{table}"
        );
        let json = format_json_lines(&rows);
        assert_eq!(json.lines().count(), rows.len(), "{json}");
    }

    // A log that verifies is one that `surveyd audit` can read, entry for
    // entry.
    if let Ok(report) = verify(&path, None) {
        let entries = entries.unwrap_or_else(|error| {
            panic!("verify passed ({report}) but read_entries failed: {error}")
        });
        assert_eq!(report.lines, entries.len() as u64, "{report}");
        assert_eq!(report.first_seq, entries.first().map(|e| e.seq), "{report}");
        assert_eq!(report.last_seq, entries.last().map(|e| e.seq), "{report}");
        assert_eq!(report.files, parts.len(), "{report}");
    }
}
