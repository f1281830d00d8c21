//! Inputs that the fuzz targets (fuzz/, docs/fuzzing.md) found to break a
//! promise, kept so each stays fixed. Every test replays its input through
//! the very check the fuzzer ran: the check modules of fuzz/src/ are
//! compiled into this file as they are, and each test also states the
//! broken promise directly.

mod common;
// The check modules write their input with `crate::files::put_file`.
#[path = "../fuzz/src/files.rs"]
mod files;
#[path = "../fuzz/src/audit.rs"]
mod fuzz_audit;
#[path = "../fuzz/src/ingest.rs"]
mod fuzz_ingest;

use common::*;
use surveyd::collector::ingest::parse_report;

/// audit target, 10-minute run with the dictionary of 2026-12-02: a
/// log line's `time` went into the `surveyd audit` table as it was, so a
/// `\n` in it (escaped in the JSON, raw once parsed) started a new table
/// row, and an ESC would reach the admin's terminal. Only `url` and the
/// outcome were cleaned of control characters. The fuzzer's input,
/// trimmed to its first line.
#[test]
fn audit_table_shows_no_control_character_from_a_logged_time() {
    let found: &[u8] = b"{\"seq\":1,\"time\":\"2026-12-01T\\n:00:01Z\",\"event\":\"send\",\"url\":\"https://sur/submit\",\"ror\":\"Connection refused\",\"duration_ms\":\t2,\"prev\":\"86b0305b689b505418750A854d68e0805418750a85c3a0ec81776d869cb5f\"}\n";
    let scratch = tempfile::tempdir().unwrap();
    fuzz_audit::check(scratch.path(), found);

    // The same through the real binary, with a terminal escape as well.
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/", "");
    let forged = String::from_utf8(found.to_vec())
        .unwrap()
        .replace(":00:01Z", "\\u001b[2J:00:01Z");
    std::fs::write(install.audit_log(), forged).unwrap();
    let out = install.run(&["audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_eq!(table.lines().count(), 2, "one send, one row:\n{table}");
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "control character in the table: {table:?}"
    );
}

/// ingest target, both 10-minute runs of 2026-12-02 (all 153 crash
/// inputs): serde_json checks UTF-8 and `\u` escapes only in the strings
/// it reads, not in those it skips, so a byte that is not UTF-8 (151
/// inputs) or a lone surrogate escape (2) in anything the collector does
/// not look at (an unknown stat, an unknown key in a stat, an unknown
/// top-level key) got the body accepted (the HTTP handler stores what
/// parse_report accepts) although the same fault in a field it reads is
/// refused as malformed JSON. Minimised by hand.
#[test]
fn body_with_invalid_text_where_the_parser_skips_is_rejected() {
    let bodies: [&[u8]; 5] = [
        b"{\"version\":2,\"stats\":{\"server_guid\":{\"type\":\"string\",\"value\":\"g\"},\"x\":\"\xee\"}}",
        b"{\"version\":2,\"stats\":{\"server_guid\":{\"type\":\"string\",\"value\":\"g\",\"note\":\"\xee\"}}}",
        b"{\"version\":2,\"stats\":{\"server_guid\":{\"type\":\"string\",\"value\":\"g\"}},\"extra\":\"\xee\"}",
        b"{\"version\":2,\"stats\":{\"server_guid\":{\"type\":\"string\",\"value\":\"g\"},\"x\":\"\\ud800\"}}",
        b"{\"version\":2,\"stats\":{\"server_guid\":{\"type\":\"string\",\"value\":\"g\",\"t\\ude00\":1}}}",
    ];
    for body in bodies {
        assert!(
            parse_report(body).is_err(),
            "accepted a body that is not valid JSON text: {}",
            String::from_utf8_lossy(body)
        );
        fuzz_ingest::check(body);
    }
}

/// cfgfile target, 150-second run on the merged code of 2026-12-02 (19
/// inputs): a `surveyclient_url` within the 4 KiB value limit as written,
/// but longer once percent-encoded (the form check-config prints), made
/// `check-config` print a setting that does not load again. The URL's
/// encoded form is held to the limit too; one just inside it round-trips.
#[test]
fn check_config_prints_only_urls_that_load_again() {
    let install = Install::new();
    let too_long = format!("https://stats.example/{}", "é".repeat(1500));
    assert!(
        too_long.len() <= 4096,
        "the written form is within the limit"
    );
    let config = install.write_config(&too_long, "");
    let out = install.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("percent-encoded") && err.contains(&format!("{}:1", config.display())),
        "{err}"
    );

    let fits = format!("https://stats.example/{}", "é".repeat(600));
    install.write_config(&fits, "");
    let first = install.run(&["check-config"]);
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::write(install.config_path(), &first.stdout).unwrap();
    let again = install.run(&["check-config"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&first));
}
