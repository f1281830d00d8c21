//! Receipts and deletion through the real `surveyd-collector`, on SQLite
//! and PostgreSQL: every stored report and every deletion is answered with
//! a receipt that verifies under the key `surveyd-collector key` prints;
//! the key is made once and kept, and an unsafe key file stops the
//! service; only the installation's own secret deletes its row, and
//! neither the uid nor the secret reaches the collector's log.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use surveyd::collector::report::rfc3339;
use surveyd::wire::receipt::{Kind, PublicKey};

const APP_MID: &str = "0f1e2d3c4b5a49788796a5b4c3d2e1f0";
const APP_GUID: &str = "a1b2c3d4e5f647089a1b2c3d4e5f6a7b";
const RAW_MID: &str = "3d12f0c1a9b84e6d8c7b6a5f4e3d2c1b";
const RAW_GUID: &str = "5b7e9c1d-2f3a-4b5c-8d6e-7f8091a2b3c4";

fn delete(c: &Collector, body: &str) -> Response {
    c.request(
        "POST",
        "/api/stats/v1/delete",
        &[
            ("Content-Type", "application/json"),
            ("X-Kopano-Stats-Request", "1"),
        ],
        body.as_bytes(),
    )
}

fn deletion_body(uid: &str, secret: &str) -> String {
    format!("{{\"uid\":\"{uid}\",\"secret\":\"{secret}\"}}")
}

/// `serve` with `config`, expected to refuse to start: exit code, stderr.
fn failed_serve(config: &Path) -> (Option<i32>, String) {
    let child = Command::new(BIN)
        .arg("-c")
        .arg(config)
        .arg("serve")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = wait_for_exit(child, "serve kept running with an unusable receipt key");
    (status.code(), err)
}

#[test]
fn a_report_gets_a_receipt_for_its_body_and_uid_under_the_published_key() {
    for_each_backend("report_receipt", |backend| {
        let c = Collector::start(&backend);
        let body = surveyd_payload("app-v1", APP_MID, APP_GUID, "10.0.1", 12);
        let r = c.post(&body);
        let signed = c.assert_receipt(&r, Kind::Stored, body.as_bytes());
        let uid = installation_uid(APP_MID, APP_GUID);
        assert_eq!(signed.receipt.uid, uid, "{}", backend.name());
        assert_eq!(signed.receipt.body_sha256, sha256_hex(&body));
        let rows = c.rows();
        assert_eq!(
            rows[0]["last_update"],
            rfc3339(signed.receipt.time as i64),
            "the row's time"
        );

        // The text form is what a vendor publishes.
        let out = run_cli(&c.config_path, &["key"]);
        assert!(out.status.success(), "{}", out.stderr);
        let mut lines = out.stdout.lines();
        let key = PublicKey::parse(lines.next().unwrap()).unwrap();
        assert_eq!(key, c.public_key());
        assert!(
            lines.next().unwrap().contains(&signed.receipt.key_id),
            "{}",
            out.stdout
        );
        // The same key in another receipt cannot vouch for another body.
        assert!(signed
            .verify(&key, Kind::Stored, &sha256_hex("{}"), Some(&uid))
            .is_err());
    });
}

#[test]
fn the_key_is_generated_once_and_survives_a_restart() {
    let backend = Backend::sqlite();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("state/receipt-key.pk8");
    let extra = format!("receipt_key = {key_file:?}\n[rate_limit]\nenabled = false\n");
    let opts = || Options {
        extra: &extra,
        ..Options::default()
    };
    let first = Collector::start_with(&backend, opts());
    let key = first.public_key();
    let (_, log) = first.stop();
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("generated the receipt key") && log.contains(&key.to_string()),
        "the new public key is logged once: {log}"
    );
    let mode = std::fs::metadata(&key_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let second = Collector::start_with(&backend, opts());
    assert_eq!(second.public_key(), key, "same key after a restart");
    let body = upstream_payload(RAW_MID, RAW_GUID, 3);
    let signed = second.assert_receipt(&second.post(&body), Kind::Stored, body.as_bytes());
    assert_eq!(signed.receipt.key_id, key.key_id());
    let (_, log) = second.stop();
    assert!(!String::from_utf8_lossy(&log).contains("generated the receipt key"));
}

#[test]
fn key_without_a_key_file_says_how_to_make_one_and_generate_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("receipt-key.pk8");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\nreceipt_key = {key_file:?}\n",
            dir.path().join("s.db")
        ),
    )
    .unwrap();

    let absent = run_cli(&config, &["key"]);
    assert_eq!(absent.status.code(), Some(78), "{}", absent.stderr);
    assert!(
        absent.stderr.contains("key --generate") && absent.stderr.contains("serve"),
        "{}",
        absent.stderr
    );
    assert!(!key_file.exists(), "`key` alone creates nothing");

    let made = run_cli(&config, &["key", "--generate", "--json"]);
    assert!(made.status.success(), "{}", made.stderr);
    let shown: serde_json::Value = serde_json::from_str(&made.stdout).unwrap();
    let key = PublicKey::parse(shown["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(shown["key_id"], key.key_id());
    let bytes = std::fs::read(&key_file).unwrap();

    let again = run_cli(&config, &["key", "--generate"]);
    assert_eq!(again.status.code(), Some(73), "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(std::fs::read(&key_file).unwrap(), bytes, "left alone");

    let shown = run_cli(&config, &["key", "--json"]);
    assert!(shown.stdout.contains(&key.to_string()), "{}", shown.stdout);

    // A rotation prepares the next key in a file of its own.
    let next = dir.path().join("next.pk8");
    let out = run_cli(
        &config,
        &["key", "--generate", "--file", next.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stdout.contains(&key.to_string()), "a new key");
}

#[test]
fn an_unsafe_key_file_stops_serve_with_exit_78_and_is_left_alone() {
    let backend = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &backend, "");
    let key_file = dir.path().join("receipt-key.pk8");
    let made = run_cli(&config, &["key", "--generate"]);
    assert!(made.status.success(), "{}", made.stderr);

    // Readable by the group: the key may have leaked.
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let (code, err) = failed_serve(&config);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("0640") && err.contains("chmod 600"), "{err}");

    // A link to the real key is not followed.
    let real = dir.path().join("real.pk8");
    std::fs::rename(&key_file, &real).unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, &key_file).unwrap();
    let (code, err) = failed_serve(&config);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(std::fs::symlink_metadata(&key_file)
        .unwrap()
        .file_type()
        .is_symlink());

    // A FIFO would block a reader forever: refused at once.
    std::fs::remove_file(&key_file).unwrap();
    mkfifo(&key_file);
    let (code, err) = failed_serve(&config);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    // Junk is not replaced by a new key: daemons trust the old one.
    std::fs::remove_file(&key_file).unwrap();
    std::fs::write(&key_file, b"junk").unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (code, err) = failed_serve(&config);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("not an Ed25519 PKCS#8 key"), "{err}");
    assert_eq!(std::fs::read(&key_file).unwrap(), b"junk");
}

#[test]
fn deleting_an_unknown_uid_answers_a_tombstone_and_bad_requests_change_nothing() {
    for_each_backend("delete_unknown", |backend| {
        let c = Collector::start(&backend);
        let uid = sha256_hex("nobody");
        let secret = "ab".repeat(32);
        let body = deletion_body(&uid, &secret);
        let signed = c.assert_receipt(&delete(&c, &body), Kind::Deleted, body.as_bytes());
        assert_eq!(signed.receipt.uid, uid, "{}", backend.name());
        let again = delete(&c, &body);
        c.assert_receipt(&again, Kind::Deleted, body.as_bytes());

        let report = upstream_payload(RAW_MID, RAW_GUID, 3);
        c.assert_receipt(&c.post(&report), Kind::Stored, report.as_bytes());
        for (bad, names) in [
            (format!("{{\"uid\":\"{uid}\"}}"), "a deletion request is"),
            (
                format!("{{\"uid\":\"{uid}\",\"secret\":\"{secret}\",\"x\":1}}"),
                "a deletion request is",
            ),
            (
                format!("{{\"uid\":\"{uid}\",\"uid\":\"{uid}\",\"secret\":\"{secret}\"}}"),
                "a deletion request is",
            ),
            (deletion_body(&uid.to_uppercase(), &secret), "uid:"),
            (deletion_body(&uid, &secret[2..]), "secret:"),
            (deletion_body(&uid, &"zz".repeat(32)), "secret:"),
            (
                format!("{{\"uid\":5,\"secret\":\"{secret}\"}}"),
                "a deletion request is",
            ),
        ] {
            let r = delete(&c, &bad);
            assert_eq!(r.status, 400, "{bad}: {r:?}");
            assert!(r.body.contains(names), "{bad}: {r:?}");
            assert!(
                !r.body.contains(&secret[..16]),
                "the secret is not echoed: {r:?}"
            );
        }
        let r = c.request(
            "POST",
            "/api/stats/v1/delete",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "the stats header is required: {r:?}");
        let r = c.request("GET", "/api/stats/v1/delete", &[], b"");
        assert_eq!(r.status, 405, "{r:?}");
        assert_eq!(c.rows().len(), 1, "{}", backend.name());
    });
}

#[test]
fn a_row_without_a_commitment_cannot_be_deleted() {
    for_each_backend("delete_uncommitted", |backend| {
        let c = Collector::start(&backend);
        // Upstream clients send no commitment: nobody can prove the row.
        let report = upstream_payload(RAW_MID, RAW_GUID, 3);
        c.assert_receipt(&c.post(&report), Kind::Stored, report.as_bytes());
        let uid = c.rows()[0]["uid"].as_str().unwrap().to_owned();
        let r = delete(&c, &deletion_body(&uid, &"cd".repeat(32)));
        assert_eq!(r.status, 403, "{}: {r:?}", backend.name());
        assert!(
            r.body
                .contains("the secret does not match this installation"),
            "{r:?}"
        );
        assert_eq!(c.rows().len(), 1, "nothing changed");
        let (_, log) = c.stop();
        let log = String::from_utf8_lossy(&log);
        assert!(!log.contains(&uid), "the uid is not logged: {log}");
    });
}

/// A surveyd report carrying `commitment` in its envelope, as surveyd
/// sends it beside `version` and `stats`.
fn committed_payload(commitment: Option<&str>, active: i64) -> String {
    let mut body: serde_json::Value = serde_json::from_str(&surveyd_payload(
        "app-v1", APP_MID, APP_GUID, "10.0.1", active,
    ))
    .unwrap();
    if let Some(c) = commitment {
        body["commitment"] = c.into();
    }
    body.to_string()
}

/// A deletion secret and its commitment, as surveyd derives and sends them.
fn secret_and_commitment(byte: u8) -> (String, String) {
    let secret = [byte; 32];
    (
        hex::encode(secret),
        surveyd::wire::deletion_commitment(&secret),
    )
}

#[test]
fn the_right_secret_deletes_the_row_with_a_tombstone_and_again_changes_nothing() {
    for_each_backend("delete_proven", |backend| {
        let c = Collector::start(&backend);
        let (secret, commitment) = secret_and_commitment(7);
        let report = committed_payload(Some(&commitment), 5);
        c.assert_receipt(&c.post(&report), Kind::Stored, report.as_bytes());
        let rows = c.rows();
        assert_eq!(rows[0]["deletion_commitment"], commitment.as_str());
        let uid = installation_uid(APP_MID, APP_GUID);

        let body = deletion_body(&uid, &secret);
        let tombstone = c.assert_receipt(&delete(&c, &body), Kind::Deleted, body.as_bytes());
        assert_eq!(tombstone.receipt.uid, uid, "{}", backend.name());
        assert!(c.rows().is_empty(), "{}: the row is gone", backend.name());

        let again = c.assert_receipt(&delete(&c, &body), Kind::Deleted, body.as_bytes());
        assert_eq!(again.receipt.uid, uid);
        assert!(c.rows().is_empty(), "deleting twice records nothing");

        let (_, log) = c.stop();
        let log = String::from_utf8_lossy(&log);
        for (what, value) in [
            ("uid", &uid),
            ("secret", &secret),
            ("commitment", &commitment),
        ] {
            assert!(
                !log.contains(value.as_str()),
                "the {what} is in the log: {log}"
            );
        }
    });
}

#[test]
fn a_wrong_secret_is_refused_with_403_and_the_row_stays() {
    for_each_backend("delete_wrong_secret", |backend| {
        let c = Collector::start(&backend);
        let (_, commitment) = secret_and_commitment(7);
        let (wrong, _) = secret_and_commitment(8);
        let report = committed_payload(Some(&commitment), 5);
        c.assert_receipt(&c.post(&report), Kind::Stored, report.as_bytes());
        let before = c.rows();

        let uid = installation_uid(APP_MID, APP_GUID);
        let r = delete(&c, &deletion_body(&uid, &wrong));
        assert_eq!(r.status, 403, "{}: {r:?}", backend.name());
        assert!(r
            .body
            .contains("the secret does not match this installation"));
        // The commitment itself is no secret: sending it instead of the
        // secret proves nothing.
        let r = delete(&c, &deletion_body(&uid, &commitment));
        assert_eq!(r.status, 403, "{r:?}");
        assert_eq!(c.rows(), before, "nothing changed");
    });
}

#[test]
fn the_first_commitment_stays_whatever_later_reports_carry() {
    for_each_backend("first_commitment", |backend| {
        let c = Collector::start(&backend);
        let (secret, commitment) = secret_and_commitment(7);
        let (other_secret, other) = secret_and_commitment(9);
        for (n, body) in [
            committed_payload(Some(&commitment), 1),
            // An upstream-style report without one cannot erase it...
            committed_payload(None, 2),
            // ...and another machine's cannot take it over.
            committed_payload(Some(&other), 3),
        ]
        .iter()
        .enumerate()
        {
            c.assert_receipt(&c.post(body), Kind::Stored, body.as_bytes());
            let rows = c.rows();
            assert_eq!(rows[0]["usercnt_active"], n as i64 + 1, "the report landed");
            assert_eq!(
                rows[0]["deletion_commitment"],
                commitment.as_str(),
                "{}: after report {n}",
                backend.name()
            );
        }
        let uid = installation_uid(APP_MID, APP_GUID);
        let r = delete(&c, &deletion_body(&uid, &other_secret));
        assert_eq!(r.status, 403, "{r:?}");
        let body = deletion_body(&uid, &secret);
        c.assert_receipt(&delete(&c, &body), Kind::Deleted, body.as_bytes());
        assert!(c.rows().is_empty());
    });
}

#[test]
fn a_malformed_commitment_refuses_the_report() {
    let backend = Backend::sqlite();
    let c = Collector::start(&backend);
    let (_, commitment) = secret_and_commitment(7);
    for bad in [
        serde_json::json!(commitment.to_uppercase()),
        serde_json::json!(&commitment[1..]),
        serde_json::json!(format!("{}g", &commitment[1..])),
        serde_json::json!(5),
        serde_json::json!(null),
    ] {
        let mut body: serde_json::Value =
            serde_json::from_str(&committed_payload(None, 1)).unwrap();
        body["commitment"] = bad.clone();
        let r = c.post(&body.to_string());
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(
            r.body.contains("\"commitment\" must be 64 lowercase hex"),
            "{r:?}"
        );
    }
    assert!(c.rows().is_empty());
}

#[test]
fn deletion_requests_meet_the_same_size_limit_and_rate_limit_as_reports() {
    let backend = Backend::sqlite();
    let c = Collector::start_with(
        &backend,
        Options {
            extra: "max_body_bytes = 2048\n[rate_limit]\nper_second = 0.001\nburst = 2\n",
            ..Options::default()
        },
    );
    let huge = format!(
        "{{\"uid\":\"{}\",\"secret\":\"{}\",\"pad\":\"{}\"}}",
        "0".repeat(64),
        "1".repeat(64),
        "x".repeat(4096)
    );
    let r = delete(&c, &huge);
    assert_eq!(r.status, 413, "{r:?}");
    let body = deletion_body(&"0".repeat(64), &"1".repeat(64));
    c.assert_receipt(&delete(&c, &body), Kind::Deleted, body.as_bytes());
    let r = delete(&c, &body);
    assert_eq!(r.status, 429, "the bucket is shared with reports: {r:?}");
    assert!(
        r.headers.to_ascii_lowercase().contains("retry-after:"),
        "{r:?}"
    );
    let report = upstream_payload(RAW_MID, RAW_GUID, 1);
    assert_eq!(c.post(&report).status, 429, "and reports wait too");
}
