//! The collector's payload parser and validator (src/collector/ingest.rs,
//! `parse_report`), fed the raw request body exactly as the HTTP handler
//! passes it on.
//!
//! Besides "no panic" it checks what the collector promises: a raw
//! machine id or server GUID never appears in a stored report or in a
//! rejection (whose text goes back to the client and into the log), and
//! every accepted report obeys the limits and the flag rules.

use serde_json::Value;
use surveyd::collector::ingest::{
    installation_uid, parse_report, Value as Stored, FLAG_ID_APP_V1, FLAG_ID_SHA256,
    FLAG_NO_MACHINE_ID, FLAG_NO_SERVER_GUID, FLAG_UPSTREAM_RAW_IDS,
};
use surveyd::wire::{self, MAX_COUNT, MAX_TEXT_BYTES as MAX_STRING_BYTES};

/// Shorter values turn up in texts by coincidence ("id", a digit).
const SECRET_MIN_LEN: usize = 8;

/// The characters the collector's own rejection texts are made of. A raw
/// id made only of these could be one of our words by coincidence; one
/// with any other character can only be in a text if it was copied there.
fn is_message_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ._\"':=;,()[]{}`-+*/\\".contains(c)
}

/// The raw identifiers the body carries, as any JSON reader sees them,
/// that could not turn up in an output without being copied: long enough,
/// with a character our messages do not use, and not part of another
/// string of the body (which may legitimately be stored or named).
fn raw_identifiers(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let raw: Vec<String> = ["machine_id", "server_guid"]
        .iter()
        .filter_map(|name| value.pointer(&format!("/stats/{name}/value"))?.as_str())
        .map(str::to_owned)
        .collect();
    let mut others = Vec::new();
    collect_other_strings(&value, &mut others, false);
    raw.into_iter()
        .filter(|secret| secret.len() >= SECRET_MIN_LEN)
        .filter(|secret| !secret.chars().all(is_message_char))
        .filter(|secret| !others.iter().any(|other| other.contains(secret.as_str())))
        .collect()
}

/// Every key and string of `value` except the raw identifiers themselves.
fn collect_other_strings(value: &Value, out: &mut Vec<String>, in_raw_id: bool) {
    match value {
        Value::String(text) if !in_raw_id => out.push(text.clone()),
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_other_strings(item, out, false)),
        Value::Object(map) => {
            for (key, item) in map {
                out.push(key.clone());
                let raw = matches!(key.as_str(), "machine_id" | "server_guid");
                let raw_value = in_raw_id && key == "value";
                collect_other_strings(item, out, raw || raw_value);
            }
        }
        Value::Number(number) => out.push(number.to_string()),
        _ => {}
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Runs `data` through the payload parser and panics where the collector
/// breaks a promise.
pub fn check(data: &[u8]) {
    let secrets = raw_identifiers(data);
    let report = match parse_report(data) {
        Ok(report) => report,
        Err(rejection) => {
            for secret in &secrets {
                assert!(
                    !rejection.0.contains(secret.as_str()),
                    "rejection quotes a raw identifier: {}",
                    rejection.0
                );
            }
            return;
        }
    };
    let machine_id = report.text(&wire::MACHINE_ID_HASH);
    let server_guid = report.text(&wire::SERVER_GUID_HASH);
    let texts: Vec<&str> = report
        .values
        .iter()
        .flatten()
        .filter_map(|v| match v {
            Stored::Text(t) => Some(t.as_str()),
            Stored::Count(_) => None,
        })
        .collect();
    let stored: Vec<Option<&str>> = std::iter::once(Some(report.uid.as_str()))
        .chain(texts.iter().copied().map(Some))
        .collect();
    for secret in &secrets {
        assert!(
            !stored
                .iter()
                .flatten()
                .any(|text| text.contains(secret.as_str())),
            "report keeps a raw identifier: {report:?}"
        );
    }
    assert!(
        serde_json::from_slice::<Value>(data).is_ok(),
        "accepted a body that is not JSON"
    );

    assert!(machine_id.is_some() || server_guid.is_some(), "{report:?}");
    let scheme = report.flags & (FLAG_UPSTREAM_RAW_IDS | FLAG_ID_APP_V1 | FLAG_ID_SHA256);
    assert!(
        [FLAG_UPSTREAM_RAW_IDS, FLAG_ID_APP_V1, FLAG_ID_SHA256].contains(&scheme),
        "exactly one id scheme flag: {report:?}"
    );
    let id_len = if scheme == FLAG_ID_APP_V1 { 32 } else { 64 };
    for id in [machine_id, server_guid].into_iter().flatten() {
        assert!(is_hex(id, id_len), "{report:?}");
    }
    assert_eq!(
        report.flags & FLAG_NO_MACHINE_ID != 0,
        machine_id.is_none(),
        "{report:?}"
    );
    assert_eq!(
        report.flags & FLAG_NO_SERVER_GUID != 0,
        server_guid.is_none(),
        "{report:?}"
    );
    assert_eq!(
        report.uid,
        installation_uid(machine_id, server_guid, report.text(&wire::PROGRAM_NAME),)
    );
    for text in texts {
        assert!(text.len() <= MAX_STRING_BYTES, "{report:?}");
        assert!(!text.chars().any(char::is_control), "{report:?}");
    }
    for count in report.values.iter().flatten().filter_map(|v| match v {
        Stored::Count(n) => Some(*n),
        Stored::Text(_) => None,
    }) {
        assert!(
            u64::try_from(count).is_ok_and(|c| c <= MAX_COUNT),
            "{report:?}"
        );
    }
}
