//! `surveyd diff` with the real binaries: a report sent to a real
//! `surveyd-collector`, then a fact changed on the machine, and the diff
//! names exactly that change; no upload yet (only local reports, or
//! refused ones) shows every key as added; the command reads only, and refuses a planted
//! audit log without hanging.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// An installation that sent one report to a real collector (SQLite),
/// with counts from a `file:` fact source it can change afterwards.
struct Uploaded {
    install: Install,
    _collector: Collector,
    _backend: Backend,
    url: String,
}

fn uploaded(program_version: &str) -> Uploaded {
    let backend = Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let collector = Collector::start(&backend);
    let install = Install::new();
    write_counts(&install, 42);
    let url = format!("http://{}/api/stats/v1/submit", collector.addr);
    configure(&install, &url, program_version);
    consent_yes(&install);
    let out = install.run(&["send"]);
    assert!(out.status.success(), "send: {}", stderr(&out));
    assert_eq!(collector.rows().len(), 1, "the collector stored the report");
    Uploaded {
        install,
        _collector: collector,
        _backend: backend,
        url,
    }
}

fn consent_yes(install: &Install) {
    let out = install.run(&["consent", "yes"]);
    assert!(out.status.success(), "consent yes: {}", stderr(&out));
}

fn write_counts(install: &Install, active: u64) {
    std::fs::write(
        install.path("facts.json"),
        format!(r#"{{"usercnt_active": {active}, "usercnt_contact": 7}}"#),
    )
    .unwrap();
}

fn configure(install: &Install, url: &str, program_version: &str) {
    install.write_config(
        url,
        &format!(
            "surveyclient_facts = file:{}\nsurveyclient_program_version = {program_version}\n",
            install.path("facts.json").display()
        ),
    );
}

fn diff_json(install: &Install) -> Value {
    let out = install.run(&["diff", "--json"]);
    assert!(out.status.success(), "diff --json: {}", stderr(&out));
    assert_no_raw_ids("surveyd diff --json", &out.stdout);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `(part, name, change)` of every difference that is not `unchanged`.
fn changes(diff: &Value) -> Vec<(String, String, String)> {
    diff["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["change"] != "unchanged")
        .map(|d| {
            (
                d["part"].as_str().unwrap().to_owned(),
                d["name"].as_str().unwrap().to_owned(),
                d["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn difference<'a>(diff: &'a Value, name: &str) -> &'a Value {
    diff["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {diff}"))
}

#[test]
fn diff_after_an_upload_shows_exactly_the_fact_that_changed() {
    let uploaded = uploaded("8.7.80");
    let install = &uploaded.install;

    let same = diff_json(install);
    assert_eq!(changes(&same), vec![], "nothing changed yet: {same}");
    let send_seq = audit_events(install)
        .iter()
        .find(|e| e["event"] == "send")
        .map(|e| e["seq"].clone())
        .unwrap();
    assert_eq!(same["uploaded"]["seq"], send_seq);
    assert_eq!(same["uploaded"]["url"], uploaded.url.as_str());

    write_counts(install, 43);
    let diff = diff_json(install);
    assert_eq!(
        changes(&diff),
        vec![(
            "field".to_owned(),
            "usercnt_active".to_owned(),
            "changed".to_owned()
        )],
        "{diff}"
    );
    let active = difference(&diff, "usercnt_active");
    assert_eq!(active["last"]["value"], 42);
    assert_eq!(active["next"]["value"], 43);
    assert_eq!(difference(&diff, "usercnt_contact")["change"], "unchanged");
    assert_eq!(difference(&diff, "version")["part"], "envelope");
    assert_eq!(difference(&diff, "version")["change"], "unchanged");
    let unchanged = diff["summary"]["unchanged"].as_u64().unwrap();
    assert!(unchanged >= 6, "{diff}");
    assert_eq!(diff["summary"]["changed"], 1);
}

#[test]
fn diff_table_shows_old_and_new_value_of_a_changed_setting() {
    let uploaded = uploaded("8.7.80");
    let install = &uploaded.install;
    configure(install, &uploaded.url, "8.7.81");

    let out = install.run(&["diff"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_no_raw_ids("surveyd diff", table.as_bytes());
    let send_seq = audit_events(install)
        .iter()
        .find(|e| e["event"] == "send")
        .map(|e| e["seq"].clone())
        .unwrap();
    assert!(
        table.starts_with(&format!(
            "the next report compared with report {send_seq}, accepted by {} (sent ",
            uploaded.url
        )),
        "{table}"
    );
    let changed: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("changed"))
        .collect();
    assert_eq!(changed.len(), 1, "{table}");
    let row: Vec<&str> = changed[0].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "changed",
            "field",
            "program_version",
            r#""8.7.80""#,
            r#""8.7.81""#
        ],
        "{table}"
    );
    let totals = table.lines().last().unwrap();
    assert!(
        totals.starts_with("0 added, 1 changed, 0 removed, "),
        "{table}"
    );
}

#[test]
fn diff_without_an_accepted_upload_says_so_and_shows_every_key_as_added() {
    let refusing = stand_in(None, vec![Reply::Status(503)]);
    let install = Install::new();
    install.write_config(&refusing.url, "");
    // No consent: the state of a fresh installation.
    std::fs::remove_file(install.path("state/consent")).unwrap();

    let fresh = diff_json(&install);
    assert_eq!(fresh["uploaded"], Value::Null);
    assert!(!install.audit_log().exists(), "diff created the audit log");

    let out = install.run(&["send"]);
    assert!(out.status.success(), "local send: {}", stderr(&out));
    assert!(
        audit_events(&install).iter().any(|e| e["event"] == "local"),
        "without consent the report is recorded locally"
    );
    let local = diff_json(&install);

    consent_yes(&install);
    let out = install.run(&["send"]);
    assert!(!out.status.success(), "the stand-in refused the report");
    assert_eq!(refusing.requests().len(), 1);

    for diff in [fresh, local, diff_json(&install)] {
        assert_eq!(diff["uploaded"], Value::Null, "{diff}");
        let differences = diff["differences"].as_array().unwrap();
        assert!(differences.len() >= 5, "{diff}");
        assert!(
            differences
                .iter()
                .all(|d| d["change"] == "added" && d["last"].is_null() && !d["next"].is_null()),
            "{diff}"
        );
        assert!(differences.iter().any(|d| d["name"] == "machine_id_hash"));
    }
    let out = install.run(&["diff"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("no report was uploaded yet"),
        "{}",
        stdout(&out)
    );
}

/// Every file under `dir` with its bytes, to see that nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn diff_writes_nothing_to_the_audit_log_or_the_state_dir() {
    let uploaded = uploaded("8.7.80");
    let install = &uploaded.install;
    let before = (
        snapshot(&install.path("log")),
        snapshot(&install.path("state")),
    );
    write_counts(install, 50);
    for args in [&["diff"][..], &["diff", "--json"]] {
        let out = install.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let after = (
        snapshot(&install.path("log")),
        snapshot(&install.path("state")),
    );
    assert_eq!(before, after, "surveyd diff changed a file");
}

/// Runs `surveyd diff` and waits for it, failing the test (and killing
/// it) if it hangs.
fn bounded_diff(install: &Install) -> (Option<i32>, String) {
    let mut child = install
        .command(&["diff"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.code(), String::from_utf8_lossy(&out.stderr).into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("surveyd diff hangs on a planted audit log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn diff_refuses_an_audit_log_that_is_a_fifo_or_a_link_without_hanging() {
    let uploaded = uploaded("8.7.80");
    let install = &uploaded.install;
    let log = install.audit_log();
    let kept = install.path("kept-audit.log");
    std::fs::rename(&log, &kept).unwrap();

    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, err) = bounded_diff(install);
    assert_eq!(code, Some(74), "{err}");
    assert!(err.contains(&log.display().to_string()), "{err}");

    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&kept, &log).unwrap();
    let (code, err) = bounded_diff(install);
    assert_eq!(code, Some(74), "{err}");
    assert!(err.contains(&log.display().to_string()), "{err}");
}

#[test]
fn diff_with_the_audit_log_gone_but_an_upload_recorded_is_an_error() {
    let uploaded = uploaded("8.7.80");
    let install = &uploaded.install;
    std::fs::remove_file(install.audit_log()).unwrap();
    let out = install.run(&["diff"]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("is missing"), "{}", stderr(&out));
}
