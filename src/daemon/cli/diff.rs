//! `surveyd diff`: the next report (what `surveyd preview` prints) against
//! the last one the collector accepted, key by key, so an admin sees what
//! changed before it goes. Reads only: the audit log through its bounded,
//! link-refusing reader, never a write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use super::audit::{printable, shorten};
use crate::daemon::audit::{self, Entry};
use crate::daemon::report;
use crate::daemon::settings::Settings;
use crate::daemon::state;
use crate::exit;
use crate::sys::{Failure, Runtime};

/// The report the collector accepted last, as the audit log recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upload {
    pub seq: u64,
    pub time: String,
    pub url: String,
    #[serde(skip)]
    pub body: Value,
}

/// Where in the payload a key lives: the top-level envelope (`version`,
/// `schema`, ...) or one of the facts under `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Envelope,
    Field,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
}

impl Change {
    fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// One key of either report. For a field, `last` and `next` are its whole
/// stat entry (`desc`, `type`, `mode`, `value`), so a changed description
/// counts as a change too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub part: Part,
    pub name: String,
    pub change: Change,
    pub last: Option<Value>,
    pub next: Option<Value>,
}

/// `surveyd diff [--json]`.
pub(super) fn diff_command(settings: &Settings, json: bool) -> Result<(), Failure> {
    let last = last_upload(settings)?;
    let payload = Runtime::current_thread()?.block_on(report::prepare(settings));
    let next: Value = serde_json::from_slice(payload.as_bytes()).map_err(|err| {
        Failure::new(
            exit::SOFTWARE,
            format!("the next report is not JSON: {err}"),
        )
    })?;
    let differences = compare(last.as_ref().map(|upload| &upload.body), &next);
    if json {
        println!("{}", format_json(last.as_ref(), &differences));
    } else {
        print!(
            "{}",
            format_table(last.as_ref(), &settings.url.to_string(), &differences)
        );
    }
    Ok(())
}

/// The last `send` whose `result` says the collector accepted it (2xx, no
/// error), or `None` when the log holds no such report. A log that is
/// missing although the state dir records an accepted report is an error:
/// the comparison would claim "nothing uploaded" when something was.
fn last_upload(settings: &Settings) -> Result<Option<Upload>, Failure> {
    let path = &settings.audit_log;
    let unreadable = |err: audit::AuditError| Failure::new(exit::IOERR, err);
    if !audit::exists(path).map_err(unreadable)? {
        if let Some(success) = state::last_success(&settings.state_dir) {
            return Err(Failure::new(
                exit::DATAERR,
                format!(
                    "audit log {} is missing, but {} records a report accepted at {}; \
                     without the log there is nothing to compare with",
                    path.display(),
                    settings.state_dir.display(),
                    humantime::format_rfc3339_seconds(success)
                ),
            ));
        }
        return Ok(None);
    }
    // A line at a time: memory for the sends awaiting their result, not
    // for the whole log and its rotated files.
    let mut last = LastUpload::default();
    audit::for_each_entry(path, |entry| {
        last.add(entry);
        Ok(())
    })
    .map_err(unreadable)?;
    Ok(last.upload)
}

/// The pure half of [`last_upload`]: pairs results with their sends and
/// keeps the last accepted one whose body is still in the log.
pub fn find_last_upload(entries: &[Entry]) -> Option<Upload> {
    let mut last = LastUpload::default();
    for entry in entries {
        last.add(entry.clone());
    }
    last.upload
}

/// Reads the log in order: the last send the collector accepted whose
/// body parses is the last upload.
#[derive(Default)]
struct LastUpload {
    pairs: audit::SendResults,
    upload: Option<Upload>,
}

impl LastUpload {
    fn add(&mut self, entry: Entry) {
        let Some((send, result)) = self.pairs.add(entry) else {
            return;
        };
        if !result.is_accepted() {
            return;
        }
        let body = send.body.as_ref().map(|b| serde_json::from_str(b.get()));
        if let Some(Ok(body)) = body {
            self.upload = Some(Upload {
                seq: send.seq,
                time: send.time,
                url: send.url.unwrap_or_default(),
                body,
            });
        }
    }
}

/// Every key of either payload, envelope first, each part in name order.
/// Without a last report every key of the next one is `added`.
pub fn compare(last: Option<&Value>, next: &Value) -> Vec<Difference> {
    let (last_envelope, last_stats) = split(last);
    let (next_envelope, next_stats) = split(Some(next));
    let mut differences = keyed(Part::Envelope, &last_envelope, &next_envelope);
    differences.extend(keyed(Part::Field, &last_stats, &next_stats));
    differences
}

/// A payload's top-level keys other than `stats`, and the entries of `stats`.
fn split(payload: Option<&Value>) -> (Map<String, Value>, Map<String, Value>) {
    let Some(Value::Object(document)) = payload else {
        return (Map::new(), Map::new());
    };
    let mut envelope = document.clone();
    let stats = match envelope.remove("stats") {
        Some(Value::Object(stats)) => stats,
        _ => Map::new(),
    };
    (envelope, stats)
}

fn keyed(part: Part, last: &Map<String, Value>, next: &Map<String, Value>) -> Vec<Difference> {
    let names: BTreeSet<&String> = last.keys().chain(next.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let (last, next) = (last.get(name), next.get(name));
            let change = match (last, next) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                (Some(old), Some(new)) if old == new => Change::Unchanged,
                _ => Change::Changed,
            };
            Difference {
                part,
                name: name.clone(),
                change,
                last: last.cloned(),
                next: next.cloned(),
            }
        })
        .collect()
}

/// How many keys had each kind of change, in a fixed order.
fn counts(differences: &[Difference]) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = [
        Change::Added,
        Change::Removed,
        Change::Changed,
        Change::Unchanged,
    ]
    .into_iter()
    .map(|change| (change.word(), 0))
    .collect();
    for difference in differences {
        *counts.entry(difference.change.word()).or_default() += 1;
    }
    counts
}

/// One JSON object: the report compared with (`null` if none was
/// uploaded), every difference, and how many of each kind.
pub fn format_json(last: Option<&Upload>, differences: &[Difference]) -> String {
    serde_json::json!({
        "uploaded": last,
        "differences": differences,
        "summary": counts(differences),
    })
    .to_string()
}

/// A table for people: a line saying what is compared, one row per key
/// with the value from each report, and the totals. A field whose value
/// is the same but whose entry changed (its description, say) shows the
/// whole entry instead of the value.
pub fn format_table(last: Option<&Upload>, url: &str, differences: &[Difference]) -> String {
    let mut out = String::new();
    match last {
        Some(upload) => {
            let _ = writeln!(
                out,
                "the next report compared with report {}, accepted by {} (sent {})",
                upload.seq,
                shorten(&printable(&upload.url)),
                printable(&upload.time)
            );
            if upload.url != url {
                let _ = writeln!(
                    out,
                    "note: the next report goes to {}",
                    shorten(&printable(url))
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "no report was uploaded yet: every key of the next report is new"
            );
        }
    }
    let header = ["CHANGE", "PART", "NAME", "LAST UPLOADED", "NEXT"].map(str::to_owned);
    let mut rows = vec![header];
    for difference in differences {
        let (last, next) = shown_values(difference);
        let part = match difference.part {
            Part::Envelope => "envelope",
            Part::Field => "field",
        };
        rows.push([
            difference.change.word().to_owned(),
            part.to_owned(),
            shorten(&printable(&difference.name)),
            last,
            next,
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let totals: Vec<String> = counts(differences)
        .iter()
        .map(|(word, n)| format!("{n} {word}"))
        .collect();
    let _ = writeln!(out, "{}", totals.join(", "));
    out
}

/// The two cells of a row: compact JSON (strings keep their quotes, so
/// `""` and a missing key look different), `-` for a missing key.
fn shown_values(difference: &Difference) -> (String, String) {
    let value_of = |entry: &Value| match (difference.part, entry) {
        (Part::Field, Value::Object(stat)) => stat.get("value").cloned().unwrap_or(Value::Null),
        _ => entry.clone(),
    };
    let only_the_entry_changed = difference.change == Change::Changed
        && matches!(
            (&difference.last, &difference.next),
            (Some(old), Some(new)) if value_of(old) == value_of(new)
        );
    let cell = |entry: &Option<Value>| match entry {
        None => "-".to_owned(),
        Some(entry) if only_the_entry_changed => shorten(&printable(&entry.to_string())),
        Some(entry) => shorten(&printable(&value_of(entry).to_string())),
    };
    (cell(&difference.last), cell(&difference.next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stat(value: Value) -> Value {
        json!({"desc": "Program version", "type": "string", "value": value})
    }

    fn entry(line: Value) -> Entry {
        let raw = line.to_string();
        let mut entry: Entry = serde_json::from_str(&raw).unwrap();
        entry.raw = raw;
        entry
    }

    fn send(seq: u64, version: &str) -> Entry {
        entry(json!({
            "seq": seq, "time": "2026-01-01T00:00:00Z", "event": "send",
            "url": "http://127.0.0.1/api/stats/v1/submit",
            "body": {"stats": {"program_version": stat(json!(version))}, "version": 2},
            "body_sha256": "00", "prev": "00",
        }))
    }

    fn result(seq: u64, of: u64, status: Option<u16>, error: Option<&str>) -> Entry {
        entry(json!({
            "seq": seq, "time": "2026-01-01T00:00:01Z", "event": "result", "of": of,
            "status": status, "error": error, "duration_ms": 3, "prev": "00",
        }))
    }

    fn version_of(upload: &Upload) -> &Value {
        &upload.body["stats"]["program_version"]["value"]
    }

    #[test]
    fn the_last_upload_is_the_last_send_the_collector_accepted() {
        let entries = vec![
            send(1, "1.0"),
            result(2, 1, Some(204), None),
            send(3, "2.0"),
            result(4, 3, Some(200), None),
            send(5, "3.0"),
            result(6, 5, Some(503), Some("collector answered 503")),
            send(7, "4.0"),
            result(8, 7, None, Some("timed out")),
            send(9, "5.0"),
            result(10, 9, Some(200), Some("receipt does not verify")),
            send(11, "6.0"),
        ];
        let upload = find_last_upload(&entries).unwrap();
        assert_eq!(upload.seq, 3);
        assert_eq!(version_of(&upload), "2.0");
    }

    #[test]
    fn a_log_without_an_accepted_send_has_no_upload() {
        let entries = vec![send(1, "1.0"), result(2, 1, Some(400), Some("refused"))];
        assert_eq!(find_last_upload(&entries), None);
        assert_eq!(find_last_upload(&[]), None);
    }

    #[test]
    fn compare_names_every_key_of_both_reports_with_its_change() {
        let last = json!({
            "version": 2,
            "stats": {
                "program_version": stat(json!("1.0")),
                "osrelease": stat(json!("Debian 12")),
                "userplugin": stat(json!("db")),
            },
        });
        let next = json!({
            "version": 2,
            "schema": 3,
            "stats": {
                "program_version": stat(json!("1.1")),
                "osrelease": stat(json!("Debian 12")),
                "usercnt_active": {"desc": "Number of active users", "type": "int", "mode": "gauge", "value": 5},
            },
        });
        let differences = compare(Some(&last), &next);
        let got: Vec<(Part, &str, Change)> = differences
            .iter()
            .map(|d| (d.part, d.name.as_str(), d.change))
            .collect();
        assert_eq!(
            got,
            vec![
                (Part::Envelope, "schema", Change::Added),
                (Part::Envelope, "version", Change::Unchanged),
                (Part::Field, "osrelease", Change::Unchanged),
                (Part::Field, "program_version", Change::Changed),
                (Part::Field, "usercnt_active", Change::Added),
                (Part::Field, "userplugin", Change::Removed),
            ]
        );
    }

    #[test]
    fn without_a_last_report_every_key_is_added() {
        let next = json!({"version": 2, "stats": {"osrelease": stat(json!("Debian 12"))}});
        let differences = compare(None, &next);
        assert_eq!(differences.len(), 2);
        assert!(differences.iter().all(|d| d.change == Change::Added));
        let table = format_table(None, "http://x", &differences);
        assert!(table.starts_with("no report was uploaded yet"), "{table}");
        assert!(table.ends_with("2 added, 0 changed, 0 removed, 0 unchanged\n"));
    }

    #[test]
    fn the_table_shows_values_and_flattens_control_characters() {
        let last = json!({"version": 2, "stats": {"program_version": stat(json!("1.0"))}});
        let next =
            json!({"version": 2, "stats": {"program_version": stat(json!("1.1\n\u{202E}x"))}});
        let upload = Upload {
            seq: 7,
            time: "2026-01-01T00:00:00Z".into(),
            url: "http://a".into(),
            body: last.clone(),
        };
        let table = format_table(Some(&upload), "http://b", &compare(Some(&last), &next));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("report 7"), "{table}");
        assert!(lines[1].contains("next report goes to http://b"), "{table}");
        let row = lines
            .iter()
            .find(|line| line.contains("program_version"))
            .unwrap();
        assert!(row.starts_with("changed"), "{row}");
        assert!(row.contains(r#""1.0""#), "{row}");
        assert!(!table.contains('\u{202E}'));
        assert_eq!(lines.len(), 6, "{table}");
    }

    #[test]
    fn a_changed_description_with_the_same_value_shows_the_whole_entry() {
        let last = json!({"version": 2, "stats": {"osrelease": {"desc": "OS", "type": "string", "value": "x"}}});
        let next = json!({"version": 2, "stats": {"osrelease": {"desc": "OS release", "type": "string", "value": "x"}}});
        let differences = compare(Some(&last), &next);
        assert_eq!(differences[1].change, Change::Changed);
        let (old, new) = shown_values(&differences[1]);
        assert!(old.contains(r#""desc":"OS""#), "{old}");
        assert!(new.contains(r#""desc":"OS release""#), "{new}");
    }
}
