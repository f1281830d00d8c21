//! `surveyd audit`, `audit show` and `audit verify` with the real binary on
//! logs written by real sends: tampering is found and named, a torn line
//! is recovered, and the chain survives rotation.

mod common;

use common::*;

fn verify(install: &Install) -> std::process::Output {
    install.run(&["audit", "verify"])
}

#[test]
fn verify_passes_on_a_good_log() {
    let (install, _server) = install_with_reports(3, "");
    let out = verify(&install);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains('6'),
        "reports 6 lines: {}",
        stdout(&out)
    );
}

#[test]
fn verify_names_the_line_with_a_flipped_byte() {
    let (install, _server) = install_with_reports(3, "");
    rewrite_lines(&install, |lines| {
        lines[2] = lines[2].replacen("\"version\":2", "\"version\":3", 1);
    });
    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    let err = stderr(&out);
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn verify_names_the_line_after_a_deleted_one() {
    let (install, _server) = install_with_reports(3, "");
    rewrite_lines(&install, |lines| {
        lines.remove(1);
    });
    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}

#[test]
fn verify_names_the_first_of_two_swapped_lines() {
    let (install, _server) = install_with_reports(3, "");
    rewrite_lines(&install, |lines| lines.swap(3, 4));
    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("line 4"), "{}", stderr(&out));
}

#[test]
fn a_torn_last_line_is_recovered_and_older_lines_stay() {
    let (install, server) = install_with_reports(2, "");
    let before = install.audit_text();
    let mut torn = before.clone();
    torn.push_str("{\"seq\":5,\"time\":\"2026-");
    std::fs::write(install.audit_log(), &torn).unwrap();

    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65), "verify reports the torn line");

    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("torn"), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 3);

    let after = install.audit_text();
    assert!(after.starts_with(&before), "older lines are untouched");
    let events: Vec<serde_json::Value> = after
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[4]["event"], "recovered");
    assert_eq!(events[5]["event"], "send");
    let out = verify(&install);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_chain_continues_across_rotation() {
    let (install, server) = install_with_reports(
        12,
        "surveyclient_audit_max_size = 4096\nsurveyclient_audit_keep = 20\n",
    );
    assert_eq!(server.requests().len(), 12);
    let rotated = install.path("log/audit.log.1");
    assert!(rotated.exists(), "the log rotated at 4096 bytes");
    let out = verify(&install);
    assert!(out.status.success(), "{}", stderr(&out));

    let newest: serde_json::Value =
        serde_json::from_str(install.audit_text().lines().next().unwrap()).unwrap();
    let old = std::fs::read_to_string(&rotated).unwrap();
    let last_old = old.lines().last().unwrap();
    assert_eq!(
        newest["prev"],
        sha256_hex(last_old),
        "first line of the new file chains to the last of the old"
    );

    // Tampering inside a rotated file is still found.
    std::fs::write(
        &rotated,
        old.replacen("\"status\":204", "\"status\":200", 1),
    )
    .unwrap();
    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("audit.log.1"), "{}", stderr(&out));
}

#[test]
fn audit_lists_and_shows_the_payloads_sent() {
    let (install, server) = install_with_reports(2, "");
    let out = install.run(&["audit"]);
    assert!(out.status.success());
    let table = stdout(&out);
    assert!(table.contains(&server.url), "{table}");
    assert!(table.contains("HTTP 204"), "{table}");

    let out = install.run(&["audit", "--json"]);
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let seq = rows[1]["seq"].as_u64().unwrap();

    let out = install.run(&["audit", "show", &seq.to_string()]);
    assert!(out.status.success());
    let shown = stdout(&out);
    assert_eq!(shown.trim_end().as_bytes(), server.requests()[1].body());

    let out = install.run(&["audit", "show", "999"]);
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn a_fresh_install_has_nothing_to_list_but_a_removed_log_fails_verify() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "");
    for args in [&["audit"][..], &["audit", "verify"]] {
        let out = install.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no report was sent yet"));
    }

    // Once an attempt is recorded, a missing log is evidence of tampering.
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69));
    std::fs::remove_file(install.audit_log()).unwrap();
    let out = install.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("is missing"), "{}", stderr(&out));
}
