use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::time::Instant;

use super::writer::*;
use super::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

pub(super) const URL: &str = "https://stats.example.org/api/stats/v1/submit";
pub(super) const BIG: u64 = 1 << 30;

/// A canonical payload like the real one, distinct per `n`.
pub(super) fn body(n: u32) -> Vec<u8> {
    format!(
        r#"{{"stats":{{"program_name":{{"desc":"Program name","type":"string","value":"kopano-server"}},"usercnt_active":{{"desc":"Active users","mode":"gauge","type":"int","value":{}}}}},"version":2}}"#,
        100 + n
    )
    .into_bytes()
}

fn rotated_path(path: &Path, index: u64) -> PathBuf {
    PathBuf::from(format!("{}.{index}", path.display()))
}

pub(super) fn rotated_of(path: &Path) -> Vec<(u64, std::ffi::OsString)> {
    let dir = LogDir::open(path.parent().unwrap()).unwrap();
    rotated_files(&dir, path.file_name().unwrap()).unwrap()
}

pub(super) fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.log")
}

pub(super) fn open(path: &Path, max_size: u64, keep: u64) -> (AuditLog, Option<Recovery>) {
    AuditLog::open(path, max_size, keep).expect("open audit log")
}

/// Appends `n` send/result pairs; returns the seqs of the sends.
pub(super) fn write_pairs(log: &mut AuditLog, n: u32) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let seq = log.append_send(URL, &body(i)).unwrap();
            log.append_result(seq, Some(204), None, Duration::from_millis(12))
                .unwrap();
            seq
        })
        .collect()
}

pub(super) fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub(super) fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn time_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["time"].as_str().unwrap().to_owned()
}

fn bad_line(result: Result<VerifyReport, VerifyFailure>) -> (PathBuf, usize, Option<u64>, Problem) {
    match result {
        Err(VerifyFailure::BadLine {
            path,
            line,
            seq,
            reason,
        }) => (path, line, seq, reason),
        other => panic!("expected a bad line, got {other:?}"),
    }
}

/// A log of 4 send/result pairs (lines 1..=8) written and closed.
pub(super) fn good_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    write_pairs(&mut log, 4);
    (dir, path)
}

#[test]
fn send_line_has_the_documented_fields_in_order_and_embeds_the_sent_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, recovery) = open(&path, BIG, 3);
    assert!(recovery.is_none());
    let sent = body(7);
    assert_eq!(log.append_send(URL, &sent).unwrap(), 1);

    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
    let line = text.trim_end_matches('\n');
    let time = time_of(line);
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "not RFC 3339 UTC with seconds: {time}"
    );
    let expected = format!(
        r#"{{"seq":1,"time":"{time}","event":"send","url":"{URL}","body":{},"body_sha256":"{}","prev":"{GENESIS_PREV}"}}"#,
        String::from_utf8(sent.clone()).unwrap(),
        sha256_hex(&sent),
    );
    assert_eq!(line, expected);

    let entries = read_entries(&path).unwrap();
    let stored = entries[0].body.as_ref().unwrap();
    assert_eq!(stored.get().as_bytes(), sent.as_slice());
    assert_eq!(entries[0].raw, line);
}

#[test]
fn result_line_has_the_documented_fields_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    let send = log.append_send(URL, &body(1)).unwrap();
    let result = log
        .append_result(
            send,
            None,
            Some("connection refused"),
            Duration::from_millis(1500),
        )
        .unwrap();
    assert_eq!(result, send + 1);

    let lines = read_lines(&path);
    let expected = format!(
        r#"{{"seq":2,"time":"{}","event":"result","of":1,"status":null,"error":"connection refused","duration_ms":1500,"prev":"{}"}}"#,
        time_of(&lines[1]),
        sha256_hex(lines[0].as_bytes()),
    );
    assert_eq!(lines[1], expected);
}

#[test]
fn body_that_is_not_canonical_json_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    for body in [
        &b"{\"version\":2"[..],
        b"{\"version\": 2}",
        b"{\"version\":2,\"stats\":{}}",
        b"{\"a\":1}\n",
        b"\xff",
    ] {
        let err = log.append_send(URL, body).unwrap_err();
        assert!(matches!(err, AuditError::BadBody { .. }), "{err}");
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(log.append_send(URL, &body(0)).unwrap(), 1);
}

#[test]
fn verify_passes_on_a_good_log_with_several_send_result_pairs() {
    let (_dir, path) = good_log();
    let report = verify(&path, None).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            lines: 8,
            files: 1,
            first_seq: Some(1),
            last_seq: Some(8),
            starts_at_genesis: true,
            ends_checked: false,
        }
    );
}

#[test]
fn verify_names_the_line_whose_body_had_a_byte_flipped() {
    let (_dir, path) = good_log();
    let mut lines = read_lines(&path);
    // Line 5 is the third send; its count is 102. Still valid JSON.
    assert!(lines[4].contains(r#""value":102"#));
    lines[4] = lines[4].replacen(r#""value":102"#, r#""value":112"#, 1);
    write_lines(&path, &lines);

    let (file, line, seq, reason) = bad_line(verify(&path, None));
    assert_eq!((file, line, seq), (path, 5, Some(5)));
    assert_eq!(reason, Problem::BodyMismatch);
    assert_eq!(reason.to_string(), "body does not match body_sha256");
}

#[test]
fn verify_names_the_line_after_a_deleted_line() {
    let (_dir, path) = good_log();
    let mut lines = read_lines(&path);
    lines.remove(3);
    write_lines(&path, &lines);

    let (file, line, seq, reason) = bad_line(verify(&path, None));
    assert_eq!((file, line, seq), (path, 4, Some(5)));
    assert_eq!(reason.to_string(), "seq 5 follows 3");
}

#[test]
fn verify_names_the_first_of_two_swapped_lines() {
    let (_dir, path) = good_log();
    let mut lines = read_lines(&path);
    lines.swap(5, 6);
    write_lines(&path, &lines);

    let (file, line, seq, reason) = bad_line(verify(&path, None));
    assert_eq!((file, line, seq), (path, 6, Some(7)));
    assert_eq!(
        reason,
        Problem::SeqGap {
            previous: 5,
            found: 7
        }
    );
}

#[test]
fn verify_names_the_line_whose_prev_was_altered() {
    let (_dir, path) = good_log();
    let mut lines = read_lines(&path);
    let real_prev = sha256_hex(lines[2].as_bytes());
    lines[3] = lines[3].replace(&real_prev, &sha256_hex(b"forged"));
    write_lines(&path, &lines);

    let (file, line, seq, reason) = bad_line(verify(&path, None));
    assert_eq!((file, line, seq), (path, 4, Some(4)));
    assert_eq!(
        reason.to_string(),
        "prev does not match the hash of the line before"
    );
}

#[test]
fn verify_names_a_line_that_is_not_json_and_a_torn_last_line() {
    let (_dir, path) = good_log();
    let mut lines = read_lines(&path);
    lines[1] = "{\"seq\":2,".to_owned();
    write_lines(&path, &lines);
    let (_, line, seq, reason) = bad_line(verify(&path, None));
    assert_eq!((line, seq, reason), (2, None, Problem::NotJson));

    let (_dir, path) = good_log();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"seq\":9,\"ti").unwrap();
    let (_, line, _, reason) = bad_line(verify(&path, None));
    assert_eq!((line, reason), (9, Problem::Torn));
}

#[test]
fn torn_last_line_is_set_aside_and_recorded_when_the_log_is_opened() {
    let (dir, path) = good_log();
    let intact = fs::read(&path).unwrap();
    let torn = br#"{"seq":9,"time":"2024-05-01T10:00:00Z","event":"send","url":"https://x","bo"#;
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(torn).unwrap();
    drop(file);

    let (mut log, recovery) = open(&path, BIG, 3);
    let recovery = recovery.expect("torn line must be recovered");
    assert_eq!(recovery.torn_bytes, torn.len() as u64);
    assert_eq!(recovery.seq, 9);
    assert_eq!(recovery.saved_to.parent(), Some(dir.path()));
    assert!(recovery
        .saved_to
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("audit.log.torn-"));
    assert_eq!(fs::read(&recovery.saved_to).unwrap(), torn);

    let now = fs::read(&path).unwrap();
    assert_eq!(
        &now[..intact.len()],
        intact.as_slice(),
        "older lines changed"
    );
    let entries = read_entries(&path).unwrap();
    let recovered = &entries[8];
    assert_eq!(recovered.seq, 9);
    assert_eq!(recovered.event, "recovered");
    assert_eq!(recovered.torn_bytes, Some(torn.len() as u64));
    assert_eq!(
        recovered.saved_to.as_deref(),
        Some(recovery.saved_to.to_str().unwrap())
    );

    assert_eq!(log.append_send(URL, &body(9)).unwrap(), 10);
    assert_eq!(verify(&path, None).unwrap().last_seq, Some(10));
}

#[test]
fn reopening_continues_seq_and_chain() {
    let (_dir, path) = good_log();
    let (mut log, recovery) = open(&path, BIG, 3);
    assert!(recovery.is_none());
    assert_eq!(log.last_seq(), 8);
    assert_eq!(log.append_send(URL, &body(5)).unwrap(), 9);
    drop(log);

    let lines = read_lines(&path);
    let entry: Entry = serde_json::from_str(&lines[8]).unwrap();
    assert_eq!(entry.prev, sha256_hex(lines[7].as_bytes()));
    assert_eq!(verify(&path, None).unwrap().lines, 9);
}

#[test]
fn rotation_continues_the_chain_across_files_and_keeps_only_keep_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let keep = 2;
    // About three lines per file.
    let (mut log, _) = open(&path, 1000, keep);
    write_pairs(&mut log, 12);

    let rotated = rotated_of(&path);
    let numbers: Vec<u64> = rotated.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![2, 1], "only `keep` rotated files remain");
    for file in [&path, &rotated_path(&path, 1), &rotated_path(&path, 2)] {
        let size = fs::metadata(file).unwrap().len();
        assert!(size <= 1000, "{} has {size} bytes", file.display());
    }

    let older = read_lines(&rotated_path(&path, 1));
    let newer = read_lines(&path);
    let last_old: Entry = serde_json::from_str(older.last().unwrap()).unwrap();
    let first_new: Entry = serde_json::from_str(&newer[0]).unwrap();
    assert_eq!(first_new.seq, last_old.seq + 1);
    assert_eq!(first_new.prev, sha256_hex(older.last().unwrap().as_bytes()));

    let report = verify(&path, None).unwrap();
    assert_eq!(report.files, 3);
    assert_eq!(report.last_seq, Some(24));
    assert!(!report.starts_at_genesis, "seq 1 was rotated away");
    assert_eq!(
        report.lines,
        report.last_seq.unwrap() - report.first_seq.unwrap() + 1
    );
}

#[test]
fn rotation_with_keep_zero_deletes_rotated_files_and_verify_starts_at_the_oldest_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, 1000, 0);
    write_pairs(&mut log, 5);
    assert!(rotated_of(&path).is_empty());

    let report = verify(&path, None).unwrap();
    assert_eq!((report.files, report.last_seq), (1, Some(10)));
    assert!(report.first_seq.unwrap() > 1);
    assert!(!report.starts_at_genesis);
    assert!(report.to_string().contains("rotated away"));
}

#[test]
fn a_line_larger_than_max_size_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, 10, 5);
    log.append_send(URL, &body(0)).unwrap();
    assert!(rotated_of(&path).is_empty(), "empty file rotated");
    log.append_send(URL, &body(1)).unwrap();
    assert_eq!(read_lines(&path).len(), 1);
    assert_eq!(read_lines(&rotated_path(&path, 1)).len(), 1);
    assert_eq!(verify(&path, None).unwrap().files, 2);
}

#[test]
fn empty_current_file_continues_the_chain_from_the_newest_rotated_file() {
    // As after a crash between rotating and writing the new file's
    // first line.
    let (_dir, path) = good_log();
    fs::rename(&path, rotated_path(&path, 1)).unwrap();
    File::create(&path).unwrap();

    let (mut log, recovery) = open(&path, BIG, 3);
    assert!(recovery.is_none());
    assert_eq!(log.append_send(URL, &body(1)).unwrap(), 9);
    let report = verify(&path, None).unwrap();
    assert_eq!((report.files, report.lines), (2, 9));
    assert!(report.starts_at_genesis);
}

#[test]
fn verify_names_the_rotated_file_holding_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, 1000, 5);
    write_pairs(&mut log, 6);
    let older = rotated_path(&path, 1);
    let mut lines = read_lines(&older);
    lines.remove(0);
    write_lines(&older, &lines);

    let (file, line, _, reason) = bad_line(verify(&path, None));
    assert_eq!((file, line), (older, 1));
    assert!(matches!(reason, Problem::SeqGap { .. }), "{reason}");
}

#[test]
fn open_creates_the_directory_0750_and_the_file_0640() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/log/surveyd/audit.log");
    let _ = open(&path, BIG, 3);
    let dir_mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    let file_mode = fs::metadata(&path).unwrap().permissions().mode();
    // The umask may take bits away but never adds any.
    assert_eq!(dir_mode & 0o777 & !0o750, 0, "{dir_mode:o}");
    assert_eq!(file_mode & 0o777 & !0o640, 0, "{file_mode:o}");
    assert_ne!(file_mode & 0o600, 0);
}

#[test]
fn open_fails_clearly_when_the_directory_cannot_exist() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let err = AuditLog::open(&blocker.join("audit.log"), BIG, 3).unwrap_err();
    assert!(matches!(err, AuditError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn second_writer_waits_then_fails_clearly_while_the_lock_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (first, _) = open(&path, BIG, 3);
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    let err = AuditLog::open_with_lock_wait(&path, BIG, 3, wait).unwrap_err();
    assert!(started.elapsed() >= wait);
    match &err {
        AuditError::Locked { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
        other => panic!("expected Locked, got {other}"),
    }
    assert!(err
        .to_string()
        .contains("in use by another surveyd process"));

    drop(first);
    AuditLog::open_with_lock_wait(&path, BIG, 3, wait).expect("lock released on drop");
}

const CHILD_DIR_ENV: &str = "SURVEYD_AUDIT_TEST_CHILD_DIR";

/// Root ignores file permissions but not RLIMIT_FSIZE, so the failing
/// write happens in a copy of this test binary run under `prlimit`:
/// the kernel writes part of the line, then refuses, like a full disk.
#[test]
fn failed_write_leaves_the_log_consistent_and_uses_up_no_seq() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        return append_past_file_size_limit(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    write_pairs(&mut log, 1);
    drop(log);
    let before = fs::read(&path).unwrap();

    let test_name = concat!(
        module_path!(),
        "::failed_write_leaves_the_log_consistent_and_uses_up_no_seq"
    );
    let test_name = test_name.split_once("::").unwrap().1;
    let output = Command::new("prlimit")
        .arg(format!("--fsize={}", before.len() + 250))
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .expect("run prlimit (util-linux)");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let after = fs::read(&path).unwrap();
    assert!(after.starts_with(&before));
    let report = verify(&path, None).unwrap();
    assert_eq!((report.lines, report.last_seq), (3, Some(3)));
    let (_log, recovery) = open(&path, BIG, 3);
    assert!(recovery.is_none(), "the failed write left a torn line");
}

fn append_past_file_size_limit(dir: &Path) {
    // Get EFBIG instead of being killed by SIGXFSZ.
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in
    // signal context.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .unwrap();
    let path = dir.join("audit.log");
    let (mut log, _) = open(&path, BIG, 3);
    let len = fs::metadata(&path).unwrap().len();
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(600));

    let err = log.append_send(URL, huge.as_bytes()).unwrap_err();
    assert!(matches!(err, AuditError::Write { .. }), "{err}");
    assert!(err.to_string().contains("free disk space"), "{err}");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        len,
        "partial line left behind"
    );

    // A short line still fits, with the seq the failed send did not use.
    let seq = log.append_result(1, None, Some("audit log full"), Duration::ZERO);
    assert_eq!(seq.unwrap(), 3);
}

#[test]
fn list_pairs_each_send_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    let ok = log.append_send(URL, &body(1)).unwrap();
    let failed = log.append_send(URL, &body(2)).unwrap();
    log.append_result(ok, Some(204), None, Duration::from_millis(40))
        .unwrap();
    log.append_result(
        failed,
        None,
        Some("timed out\nafter 30s"),
        Duration::from_secs(30),
    )
    .unwrap();
    let pending = log.append_send(URL, &body(3)).unwrap();

    let rows = list(&path).unwrap();
    let outcomes: Vec<(u64, &str)> = rows.iter().map(|r| (r.seq, r.outcome.as_str())).collect();
    assert_eq!(
        outcomes,
        vec![
            (ok, "HTTP 204"),
            (failed, "error: timed out\nafter 30s"),
            (pending, "no result")
        ]
    );
    assert_eq!(rows[0].body_size, body(1).len());
    assert_eq!(rows[0].body_sha256, sha256_hex(&body(1)));
    assert_eq!(rows[0].duration_ms, Some(40));
}

#[test]
fn find_send_returns_the_payload_of_that_seq_only() {
    let (_dir, path) = good_log();
    let send = find_send(&path, 3).unwrap().expect("seq 3 is a send");
    assert_eq!(send.body.unwrap().get().as_bytes(), body(1).as_slice());
    assert!(find_send(&path, 4).unwrap().is_none(), "seq 4 is a result");
    assert!(find_send(&path, 99).unwrap().is_none());
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[ -~\n\t\u{0}]{0,200}".prop_map(String::into_bytes),
        r#"(\{"seq":[0-9]{1,20},"time":"x","event":"(send|result|x)","prev":"[0-9a-f]{0,64}"\}\n?|[{}\[\]",:0-9\n]{0,20}){0,4}"#
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn garbage_after_a_valid_log_is_recovered_or_refused_never_panics(garbage in garbage()) {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let (mut log, _) = open(&path, BIG, 3);
        write_pairs(&mut log, 1);
        drop(log);
        let intact = fs::read(&path).unwrap();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage).unwrap();

        let opened = AuditLog::open(&path, BIG, 3);
        let _ = verify(&path, None);
        if let Ok((mut log, _)) = opened {
            prop_assert!(fs::read(&path).unwrap().starts_with(&intact), "older lines changed");
            let _ = log.append_send(URL, &body(1));
            let _ = verify(&path, None);
        }
    }
}

#[test]
fn local_and_consent_lines_have_the_documented_fields_verify_and_list_and_a_changed_local_body_is_named(
) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    let kept = body(1);
    assert_eq!(log.append_local(&kept).unwrap(), 1);
    let fields = vec!["program_name".to_owned(), "usercnt_active".to_owned()];
    assert_eq!(log.append_consent("upload", 3, &fields, URL).unwrap(), 2);
    write_pairs(&mut log, 1);
    drop(log);

    let lines = read_lines(&path);
    let expected = format!(
        r#"{{"seq":1,"time":"{}","event":"local","body":{},"body_sha256":"{}","prev":"{GENESIS_PREV}"}}"#,
        time_of(&lines[0]),
        String::from_utf8(kept.clone()).unwrap(),
        sha256_hex(&kept),
    );
    assert_eq!(lines[0], expected);
    let expected = format!(
        r#"{{"seq":2,"time":"{}","event":"consent","mode":"upload","schema":3,"fields":["program_name","usercnt_active"],"url":"{URL}","prev":"{}"}}"#,
        time_of(&lines[1]),
        sha256_hex(lines[0].as_bytes()),
    );
    assert_eq!(lines[1], expected);
    assert!(verify(&path, None).is_ok());

    let rows = list(&path).unwrap();
    let outcomes: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.event.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("local", "local (not sent)"),
            ("consent", "consent: upload, schema 3, 2 field(s)"),
            ("send", "HTTP 204"),
        ]
    );
    assert_eq!(
        find_report(&path, 1).unwrap().unwrap().body.unwrap().get(),
        std::str::from_utf8(&kept).unwrap()
    );

    let mut tampered = lines.clone();
    tampered[0] = tampered[0].replacen(r#""value":101"#, r#""value":111"#, 1);
    write_lines(&path, &tampered);
    let (_, line, seq, reason) = bad_line(verify(&path, None));
    assert_eq!((line, seq, reason), (1, Some(1), Problem::BodyMismatch));

    let mut incomplete = lines;
    incomplete[1] = incomplete[1].replacen(r#""schema":3,"#, "", 1);
    write_lines(&path, &incomplete);
    let (_, line, _, reason) = bad_line(verify(&path, None));
    assert_eq!(line, 2);
    assert!(
        reason
            .to_string()
            .contains("consent event without `schema`"),
        "{reason}"
    );
}
