//! What `report` and `stats` print: the table as a MySQL-style box, as CSV
//! or as a JSON array of row objects, and the aggregates as text. Pure
//! functions from rows to text.
//!
//! Ingest refuses the characters [`wire::forbidden_char`] names, so new
//! rows never hold them; rows stored by older versions may, and every
//! output shows such a character as a visible `\u{...}` escape instead of
//! letting it break a line or reorder what the reader sees. CSV cells that
//! a spreadsheet would run as a formula get a leading `'` (OWASP).

use std::time::{Duration, UNIX_EPOCH};

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::wire::{self, Column};

use super::ingest::Value;
use super::store::{columns, Row, Stats};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

/// A cell as MySQL's client would show it: numbers right-aligned, NULL for
/// a missing value.
enum Cell {
    Text(String),
    Number(String),
    Null,
}

impl Cell {
    fn text(v: &Option<String>) -> Cell {
        v.as_ref()
            .map_or(Cell::Null, |s| Cell::Text(escaped(s).into_owned()))
    }
    fn as_str(&self) -> &str {
        match self {
            Cell::Text(s) | Cell::Number(s) => s,
            Cell::Null => "NULL",
        }
    }
}

/// `text` with every [`wire::forbidden_char`] written as `\u{hex}`.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(wire::forbidden_char) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if wire::forbidden_char(c) {
                    format!("\\u{{{:x}}}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// A spreadsheet opening the CSV would evaluate a cell starting with one
/// of these as a formula (`=HYPERLINK(...)`, `@SUM(...)`, DDE via `-`/`+`).
fn defuse_formula(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// RFC 3339 in UTC, e.g. `2024-05-01T12:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// MySQL's DATETIME rendering, in UTC: `2024-05-01 12:00:00`.
fn datetime(unix: i64) -> String {
    rfc3339(unix)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

fn cells(row: &Row, time: fn(i64) -> String) -> Vec<Cell> {
    wire::TABLE
        .iter()
        .map(|column| match column {
            Column::Uid => Cell::Text(row.report.uid.clone()),
            Column::FirstSeen => Cell::Text(time(row.first_seen)),
            Column::LastUpdate => Cell::Text(time(row.last_update)),
            Column::Flags => Cell::Number(row.report.flags.to_string()),
            Column::Field(f) => match row.report.value(f) {
                Some(Value::Text(t)) => Cell::Text(escaped(t).into_owned()),
                Some(Value::Count(n)) => Cell::Number(n.to_string()),
                None => Cell::Null,
            },
        })
        .collect()
}

/// Whether `report` aligns the column right, as mysql does numbers.
fn is_numeric(column: &Column) -> bool {
    match column {
        Column::Flags => true,
        Column::Field(f) => f.json_type == wire::JsonType::Int,
        Column::Uid | Column::FirstSeen | Column::LastUpdate => false,
    }
}

/// A box like the mysql client draws, followed by its row count line.
/// Like mysql, numeric columns are aligned right, their NULLs included.
fn boxed(header: &[&str], numeric: &[bool], body: &[Vec<Cell>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.as_str().chars().count());
        }
    }
    let rule: String = widths.iter().fold("+".to_owned(), |mut s, w| {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
        s
    });
    let line = |cells: &mut dyn Iterator<Item = &str>, right: &[bool]| {
        let mut s = "|".to_owned();
        for ((text, w), right) in cells.zip(&widths).zip(right) {
            if *right {
                s.push_str(&format!(" {text:>w$} |"));
            } else {
                s.push_str(&format!(" {text:<w$} |"));
            }
        }
        s
    };
    let mut out = vec![rule.clone()];
    out.push(line(
        &mut header.iter().copied(),
        &vec![false; header.len()],
    ));
    out.push(rule.clone());
    for row in body {
        out.push(line(&mut row.iter().map(Cell::as_str), numeric));
    }
    out.push(rule);
    out.join("\n") + "\n"
}

fn rows_in_set(n: usize) -> String {
    match n {
        0 => "Empty set\n".to_owned(),
        1 => "1 row in set\n".to_owned(),
        n => format!("{n} rows in set\n"),
    }
}

pub fn table(rows: &[Row]) -> String {
    if rows.is_empty() {
        return rows_in_set(0);
    }
    let body: Vec<Vec<Cell>> = rows.iter().map(|r| cells(r, datetime)).collect();
    let numeric: Vec<bool> = wire::TABLE.iter().map(is_numeric).collect();
    let header: Vec<&str> = columns().collect();
    boxed(&header, &numeric, &body) + &rows_in_set(rows.len())
}

/// RFC 4180 CSV with a header line; NULL is an empty field.
pub fn csv(rows: &[Row]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(columns()).expect("writing to memory");
    for row in rows {
        let record: Vec<String> = cells(row, rfc3339)
            .into_iter()
            .map(|c| match c {
                Cell::Text(s) => defuse_formula(s),
                Cell::Number(s) => s,
                Cell::Null => String::new(),
            })
            .collect();
        w.write_record(&record).expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("flushing to memory")).expect("CSV of UTF-8 is UTF-8")
}

/// A row as a JSON object, keyed by column name in table order.
struct JsonRow<'a>(&'a Row);

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Row {
            first_seen,
            last_update,
            report,
        } = self.0;
        let mut map = s.serialize_map(Some(wire::TABLE.len()))?;
        for column in wire::TABLE {
            let name = column.name();
            match column {
                Column::Uid => map.serialize_entry(name, &report.uid)?,
                Column::FirstSeen => map.serialize_entry(name, &rfc3339(*first_seen))?,
                Column::LastUpdate => map.serialize_entry(name, &rfc3339(*last_update))?,
                Column::Flags => map.serialize_entry(name, &report.flags)?,
                Column::Field(f) => match report.value(f) {
                    Some(Value::Text(t)) => map.serialize_entry(name, &escaped(t))?,
                    Some(Value::Count(n)) => map.serialize_entry(name, n)?,
                    None => map.serialize_entry(name, &())?,
                },
            }
        }
        map.end()
    }
}

/// An array of objects keyed by column name, times in RFC 3339.
pub fn json(rows: &[Row]) -> String {
    let out: Vec<JsonRow> = rows.iter().map(JsonRow).collect();
    serde_json::to_string_pretty(&out).expect("rows serialise") + "\n"
}

pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Table => table(rows),
        Format::Csv => csv(rows),
        Format::Json => json(rows),
    }
}

pub fn stats(s: &Stats) -> String {
    let opt = |v: &Option<String>| Cell::text(v);
    let mut out = format!(
        "installations seen in the last 24 hours: {}\n\
         installations seen in the last 7 days:   {}\n\
         installations seen in the last 30 days:  {}\n\
         installations ever seen:                 {}\n\
         active users (installations seen in the last 30 days): {}\n",
        s.seen_24h, s.seen_7d, s.seen_30d, s.total, s.active_users_30d
    );
    let (name, version, os) = (
        Column::Field(&wire::PROGRAM_NAME).name(),
        Column::Field(&wire::PROGRAM_VERSION).name(),
        Column::Field(&wire::OSRELEASE).name(),
    );
    out.push_str(&format!(
        "\nby {version} (installations seen in the last 30 days):\n"
    ));
    let body: Vec<Vec<Cell>> = s
        .by_version
        .iter()
        .map(|(name, version, n)| vec![opt(name), opt(version), Cell::Number(n.to_string())])
        .collect();
    out.push_str(&boxed(
        &[name, version, "installations"],
        &[false, false, true],
        &body,
    ));
    out.push_str(&format!(
        "\nby {os} (installations seen in the last 30 days):\n"
    ));
    let body: Vec<Vec<Cell>> = s
        .by_osrelease
        .iter()
        .map(|(os, n)| vec![opt(os), Cell::Number(n.to_string())])
        .collect();
    out.push_str(&boxed(&[os, "installations"], &[false, true], &body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::ingest::Report;

    fn row() -> Row {
        let mut report = Report {
            uid: "u1".into(),
            flags: 1,
            values: vec![None; wire::stored_fields().count()],
        };
        set(&mut report, &wire::MACHINE_ID_HASH, Value::Text("m".into()));
        set(&mut report, &wire::USERCNT_ACTIVE, Value::Count(12));
        set(&mut report, &wire::USERPLUGIN, Value::Text("ldap".into()));
        set(
            &mut report,
            &wire::OSRELEASE,
            Value::Text("Debian, \"bookworm\"".into()),
        );
        Row {
            first_seen: 0,
            last_update: 86_400,
            report,
        }
    }

    fn set(report: &mut Report, field: &wire::Field, value: Value) {
        report.values[wire::stored_index(field).unwrap()] = Some(value);
    }

    #[test]
    fn table_is_a_mysql_box() {
        let t = table(&[row()]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("+-----+"));
        assert!(lines[1].starts_with("| uid | machine_id_sha256 |"));
        assert!(lines[3].contains("| 1970-01-02 00:00:00 |"));
        assert!(lines[3].contains("|             12 |"), "{}", lines[3]);
        assert!(lines[3].contains("| NULL "));
        assert!(lines[3].contains("|            NULL |"), "{}", lines[3]);
        assert_eq!(lines[5], "1 row in set");
        assert_eq!(table(&[]), "Empty set\n");
    }

    #[test]
    fn formulas_and_invisible_characters_are_defused_in_every_output() {
        let mut r = row();
        let hyperlink = "=HYPERLINK(\"http://x.example/\",\"click\")";
        set(
            &mut r.report,
            &wire::PROGRAM_NAME,
            Value::Text(hyperlink.into()),
        );
        set(
            &mut r.report,
            &wire::PROGRAM_VERSION,
            Value::Text("@SUM(A1)".into()),
        );
        set(&mut r.report, &wire::USERPLUGIN, Value::Text("-2+3".into()));
        let os = "Debian \u{202E}txt.exe\u{2028}next";
        set(&mut r.report, &wire::OSRELEASE, Value::Text(os.into()));
        let c = csv(&[r.clone()]);
        assert!(
            c.contains("\"'=HYPERLINK(\"\"http://x.example/\"\",\"\"click\"\")\""),
            "{c}"
        );
        assert!(c.contains(",'@SUM(A1),"), "{c}");
        assert!(c.contains(",'-2+3,"), "{c}");
        assert!(c.contains(",12,"), "numbers are left alone: {c}");
        let escaped_os = "Debian \\u{202e}txt.exe\\u{2028}next";
        for (format, out) in [
            ("csv", c),
            ("table", table(&[r.clone()])),
            ("json", json(&[r])),
        ] {
            assert!(
                !out.contains('\u{202E}') && !out.contains('\u{2028}'),
                "{format}: {out}"
            );
            let want = if format == "json" {
                escaped_os.replace('\\', "\\\\")
            } else {
                escaped_os.to_owned()
            };
            assert!(out.contains(&want), "{format}: {out}");
        }
    }

    #[test]
    fn csv_quotes_and_json_keys() {
        let c = csv(&[row()]);
        assert!(c.starts_with("uid,machine_id_sha256,"));
        assert!(c.contains("\"Debian, \"\"bookworm\"\"\""));
        let j: serde_json::Value = serde_json::from_str(&json(&[row()])).unwrap();
        assert_eq!(j[0]["last_update"], "1970-01-02T00:00:00Z");
        assert_eq!(j[0]["server_guid_sha256"], serde_json::Value::Null);
    }
}
