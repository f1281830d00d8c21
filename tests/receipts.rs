//! Signed receipts and deletion with proof, with the real `surveyd` against
//! a loopback collector stand-in that signs receipts with a test key
//! (Ed25519 through ring, the message built here from the contract, not
//! from surveyd's own code): valid, forged, replayed, foreign, missing and
//! oversized receipts, with and without `surveyclient_collector_key`, what
//! `surveyd audit` and `audit verify` make of them, and `surveyd forget`.

mod common;

use std::sync::Arc;

use common::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

const DELETE: &str = "/api/stats/v1/delete";
/// The contract's application id for deletion secrets.
const DELETION_APP_ID: &str = "5a1d0c8e3b7f4e2a9c6d1f0e8b4a7c3d";

fn key_pair() -> Arc<Ed25519KeyPair> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Arc::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
}

/// The key as `surveyclient_collector_key` takes it.
fn key_text(pair: &Ed25519KeyPair) -> String {
    format!("ed25519:{}", hex::encode(pair.public_key().as_ref()))
}

fn key_setting(pair: &Ed25519KeyPair) -> String {
    format!("surveyclient_collector_key = {}\n", key_text(pair))
}

/// A receipt as the contract spells it, signed by `pair`.
fn signed(pair: &Ed25519KeyPair, kind: &str, uid: &str, body_sha256: &str) -> Value {
    let key_id = &sha256_hex(pair.public_key().as_ref())[..16];
    let time = unix_now();
    let message = format!("surveyd-receipt-v1\n{kind}\n{uid}\n{body_sha256}\n{time}\n{key_id}");
    json!({
        "receipt": {"kind": kind, "uid": uid, "body_sha256": body_sha256, "time": time, "key_id": key_id},
        "sig": hex::encode(pair.sign(message.as_bytes()).as_ref()),
    })
}

/// What a request asks the receipt to name: its kind, its installation
/// (computed as the collector does) and the hash of the bytes received.
fn attested(request: &Received) -> (&'static str, String, String) {
    let body: Value = serde_json::from_slice(request.body()).unwrap();
    let sha = sha256_hex(request.body());
    if request.head().starts_with(&format!("POST {DELETE} ")) {
        return ("deleted", body["uid"].as_str().unwrap().to_string(), sha);
    }
    let stat = |name: &str| body["stats"][name]["value"].as_str().unwrap().to_string();
    let uid = installation_uid(&stat("machine_id_hash"), &stat("server_guid_hash"));
    ("stored", uid, sha)
}

/// How the stand-in gets its receipt wrong.
#[derive(Clone, Copy)]
enum Receipt {
    Honest,
    /// A field changed after signing.
    Forged,
    /// A valid signature over another body's hash (a replay).
    OtherBody,
    /// A valid receipt, but signed by another key.
    OtherKey,
    /// 200 with an empty body.
    Missing,
    /// 200 with a body far larger than any receipt.
    Huge,
    /// An unsigned receipt whose key id smuggles sd_notify variables.
    Injecting,
}

fn collector(pair: &Arc<Ed25519KeyPair>, receipt: Receipt) -> StandIn {
    let pair = pair.clone();
    let other = key_pair();
    let answer: Answer = Arc::new(move |request: &Received| {
        let (kind, uid, sha) = attested(request);
        let body = match receipt {
            Receipt::Honest => signed(&pair, kind, &uid, &sha),
            Receipt::Forged => {
                let mut forged = signed(&pair, kind, &uid, &sha);
                forged["receipt"]["time"] = json!(0);
                forged
            }
            Receipt::OtherBody => signed(&pair, kind, &uid, &sha256_hex(b"an earlier report")),
            Receipt::OtherKey => signed(&other, kind, &uid, &sha),
            Receipt::Missing => return (200, Vec::new()),
            Receipt::Huge => return (200, vec![b'x'; 1 << 20]),
            Receipt::Injecting => {
                let mut lying = signed(&pair, kind, &uid, &sha);
                lying["receipt"]["key_id"] = json!("x\nMAINPID=1\nSTATUS=receipt OK\nREADY=1");
                lying
            }
        };
        (200, serde_json::to_vec(&body).unwrap())
    });
    stand_in(None, vec![Reply::Json(answer)])
}

fn verify(install: &Install) -> std::process::Output {
    install.run(&["audit", "verify"])
}

fn audit_json(install: &Install) -> Vec<Value> {
    let out = install.run(&["audit", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_valid_receipt_is_recorded_shown_and_rechecked_by_verify() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Honest);
    let install = Install::new();
    install.write_config(&server.url, &key_setting(&pair));

    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let sent = &server.requests()[0];
    let result = &audit_results(&install)[0];
    assert_eq!(result["receipt_state"], "valid", "{result}");
    assert_eq!(result["receipt"]["receipt"]["kind"], "stored");
    assert_eq!(
        result["receipt"]["receipt"]["body_sha256"],
        sha256_hex(sent.body())
    );
    assert!(result["error"].is_null());
    assert!(install.path("state/last-success").exists());

    let table = stdout(&install.run(&["audit"]));
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("RECEIPT"), "{table}");
    assert!(table.lines().nth(1).unwrap().ends_with("valid"), "{table}");
    assert_eq!(audit_json(&install)[0]["receipt"], "valid");

    let out = verify(&install);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("receipts OK: 1 verify"),
        "{}",
        stdout(&out)
    );

    // The same log checked under a rotated key set: still valid with the
    // old key listed beside a new one, not valid under the new one alone.
    let newer = key_pair();
    install.write_config(
        &server.url,
        &format!(
            "surveyclient_collector_key = {} {}\n",
            key_text(&newer),
            key_text(&pair)
        ),
    );
    assert!(verify(&install).status.success());
    install.write_config(&server.url, &key_setting(&newer));
    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("report 1 (result 2)"),
        "{}",
        stderr(&out)
    );
}

/// With a key set, a receipt that proves nothing fails the report (exit
/// 69, no last-success, the reason in the result) and `audit verify`
/// (exit 65, naming the report's seq).
fn refused_with_key(receipt: Receipt, why: &str) {
    let pair = key_pair();
    let server = collector(&pair, receipt);
    let install = Install::new();
    install.write_config(&server.url, &key_setting(&pair));

    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
    assert!(!install.path("state/last-success").exists());
    let result = &audit_results(&install)[0];
    assert_eq!(result["status"], 200);
    assert!(result["error"].as_str().unwrap().contains(why), "{result}");
    assert!(
        matches!(
            result["receipt_state"].as_str(),
            Some("invalid" | "missing")
        ),
        "{result}"
    );
    assert_eq!(audit_json(&install)[0]["receipt"], result["receipt_state"]);

    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("receipt verification FAILED: report 1 (result 2)"),
        "{err}"
    );
}

#[test]
fn a_forged_receipt_fails_the_report_and_verify() {
    refused_with_key(Receipt::Forged, "signature does not verify");
}

#[test]
fn a_replayed_receipt_for_another_body_fails_the_report_and_verify() {
    refused_with_key(Receipt::OtherBody, "the body sent hashes to");
}

#[test]
fn a_receipt_signed_by_another_key_fails_the_report_and_verify() {
    refused_with_key(
        Receipt::OtherKey,
        "not by the configured surveyclient_collector_key",
    );
}

#[test]
fn a_missing_receipt_fails_the_report_and_verify_when_a_key_is_set() {
    refused_with_key(Receipt::Missing, "without a receipt");
}

#[test]
fn an_oversized_answer_is_cut_at_the_receipt_limit_and_fails_the_report() {
    refused_with_key(Receipt::Huge, "more than the 4096 a receipt may have");
}

#[test]
fn without_a_key_receipts_are_recorded_unchecked_and_verify_says_so() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Forged);
    let install = Install::new();
    install.write_config(&server.url, "");

    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = &audit_results(&install)[0];
    assert_eq!(result["receipt_state"], "unchecked", "{result}");
    assert_eq!(result["receipt"]["receipt"]["time"], 0);

    let out = verify(&install);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("receipts NOT checked"),
        "{}",
        stdout(&out)
    );

    // Setting the key later re-checks what was recorded: the forgery shows.
    install.write_config(&server.url, &key_setting(&pair));
    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("report 1"), "{}", stderr(&out));
}

#[test]
fn a_receipt_smuggling_notify_variables_stays_on_the_status_line() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Injecting);
    let install = Install::new();
    install.write_config(
        &server.url,
        &format!(
            "{}surveyclient_start_delay = 0\nsurveyclient_interval = 3600\n",
            key_setting(&pair)
        ),
    );
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    let status = daemon.expect("STATUS after the unproven report", |d| {
        status_of(d).contains("failed")
    });
    assert!(status_of(&status).contains("\\nMAINPID=1"), "{status}");
    let seen = daemon.seen.clone();
    let (code, log) = daemon.stop();
    assert_eq!(code, 0);
    for datagram in &seen {
        assert!(
            !datagram
                .lines()
                .any(|l| l == "MAINPID=1" || l == "STATUS=receipt OK"),
            "a peer's bytes became a notify variable: {datagram:?}"
        );
    }
    assert!(
        !log.contains("\nMAINPID=1"),
        "the journal line is one line: {log}"
    );
    let result = &audit_results(&install)[0];
    assert!(!result["receipt_problem"].as_str().unwrap().contains('\n'));

    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    assert!(!stderr(&out).contains("\nMAINPID=1"), "{}", stderr(&out));
}

#[test]
fn the_service_retries_a_report_whose_receipt_is_missing_and_says_why() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Missing);
    let install = Install::new();
    install.write_config(
        &server.url,
        &format!(
            "{}surveyclient_start_delay = 0\nsurveyclient_error_delay = 1\nsurveyclient_interval = 3600\n",
            key_setting(&pair)
        ),
    );
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    let status = daemon.expect("STATUS after the unproven report", |d| {
        status_of(d).contains("failed")
    });
    assert!(status_of(&status).contains("without a receipt"), "{status}");
    let got = daemon.wait_for_requests(&server, 2);
    assert!(got >= 2, "the report was retried; saw {:?}", daemon.seen);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    assert!(!install.path("state/last-success").exists());
}

/// The deletion secret as the contract defines it, computed here.
fn deletion_secret() -> String {
    use hmac::{Hmac, Mac};
    let key = hex::decode(RAW_MACHINE_ID).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(&hex::decode(DELETION_APP_ID).unwrap());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn forget_audits_first_proves_with_the_secret_and_records_a_tombstone_that_verifies() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Honest);
    let install = Install::new();
    install.write_config(&server.url, &key_setting(&pair));
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = install.run(&["forget"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("tombstone valid"), "{}", stdout(&out));

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one report, one deletion request");
    let report: Value = serde_json::from_slice(requests[0].body()).unwrap();
    let deletion = &requests[1];
    assert!(deletion
        .head()
        .starts_with(&format!("POST {DELETE} HTTP/1.1")));
    assert_eq!(deletion.header("x-kopano-stats-request").unwrap(), "1");
    assert_eq!(deletion.header("content-type").unwrap(), "application/json");
    let asked: Value = serde_json::from_slice(deletion.body()).unwrap();
    let secret = deletion_secret();
    assert_eq!(asked["secret"], secret);
    assert_eq!(
        report["commitment"],
        sha256_hex(hex::decode(&secret).unwrap()),
        "the report committed to the secret the deletion reveals"
    );
    let (_, uid, _) = attested(&requests[0]);
    assert_eq!(asked["uid"], uid, "the row the report went under");
    for request in &requests {
        assert_no_raw_ids("a request", &request.raw);
    }

    let events = audit_events(&install);
    let forget = &events[2];
    assert_eq!(forget["event"], "forget");
    assert_eq!(forget["uid"], uid);
    assert_eq!(forget["body_sha256"], sha256_hex(deletion.body()));
    assert!(forget["url"].as_str().unwrap().ends_with(DELETE));
    let result = &events[3];
    assert_eq!(
        (result["event"].clone(), result["of"].clone()),
        ("result".into(), forget["seq"].clone())
    );
    assert_eq!(result["receipt_state"], "valid");
    assert_eq!(result["receipt"]["receipt"]["kind"], "deleted");
    assert!(
        !install.audit_text().contains(&secret),
        "the secret is never logged"
    );
    assert_no_raw_ids("the audit log", install.audit_text().as_bytes());

    let rows = audit_json(&install);
    assert_eq!(rows[1]["event"], "forget");
    assert_eq!(rows[1]["receipt"], "valid");
    let out = verify(&install);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("receipts OK: 2 verify"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn forget_with_a_forged_tombstone_exits_69_and_verify_names_the_deletion() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Forged);
    let install = Install::new();
    install.write_config(&server.url, &key_setting(&pair));

    let out = install.run(&["forget"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("not confirmed"), "{}", stderr(&out));
    let events = audit_events(&install);
    assert_eq!(events[0]["event"], "forget");
    assert_eq!(events[1]["receipt_state"], "invalid");

    let out = verify(&install);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("deletion request 1 (result 2)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn forget_without_a_machine_id_sends_nothing_and_exits_65() {
    let pair = key_pair();
    let server = collector(&pair, Receipt::Honest);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_omit = machine_id_hash\n");

    let out = install.run(&["forget"]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("machine id"), "{}", stderr(&out));
    assert!(server.requests().is_empty());
    assert!(install.audit_text().is_empty());
}

/// Root's `surveyd forget` in a log directory the service's user owns
/// (DynamicUser's) acts as that user, like `send`: a link that user planted
/// under the log's name is never written through, and nothing is sent.
#[test]
fn root_forget_in_a_directory_the_service_user_owns_never_writes_as_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_root() {
        return skip("needs root to own files as another uid");
    }
    let pair = key_pair();
    let server = collector(&pair, Receipt::Honest);
    let install = Install::new();
    install.write_config(&server.url, &key_setting(&pair));
    std::fs::set_permissions(install.dir.path(), PermissionsExt::from_mode(0o700)).unwrap();
    let (owner, group) = (
        nix::unistd::Uid::from_raw(65534),
        nix::unistd::Gid::from_raw(65534),
    );
    let log_dir = install.path("log");
    let state_dir = install.path("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    for dir in [&log_dir, &state_dir] {
        nix::unistd::chown(dir, Some(owner), Some(group)).unwrap();
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o700)).unwrap();
    }
    // A copy standing in for a file root must never write.
    let victim = install.path("passwd-copy");
    std::fs::write(&victim, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::os::unix::fs::symlink(&victim, log_dir.join("audit.log")).unwrap();

    let out = install.run(&["forget"]);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(stderr(&out).contains("not as root"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root:x:0:0:root:/root:/bin/bash\n"
    );
    assert!(server.requests().is_empty(), "nothing unaudited goes out");

    std::fs::remove_file(log_dir.join("audit.log")).unwrap();
    let out = install.run(&["forget"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 1);
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.metadata().unwrap().uid(), 65534, "{:?}", entry.path());
    }
}

/// A collector that answers 200 and then sends its body one byte and no
/// more, keeping the connection open: the receipt never completes.
fn trickling_collector() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/stats/v1/submit",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
                );
                // Holds the connection open, silent, until the test ends.
                let _ = stream.read(&mut buf);
                std::thread::sleep(std::time::Duration::from_secs(60));
            });
        }
    });
    url
}

#[test]
fn a_receipt_that_never_finishes_arriving_ends_at_the_deadline_and_fails_the_report() {
    let pair = key_pair();
    let install = Install::new();
    install.write_config(
        &trickling_collector(),
        &format!("{}surveyclient_timeout = 1\n", key_setting(&pair)),
    );
    let child = install
        .command(&["send"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = wait_for_exit(child, "send hung on a receipt that never finishes");
    assert_eq!(status.code(), Some(69), "{err}");
    assert!(err.contains("the receipt is malformed"), "{err}");
    let result = &audit_results(&install)[0];
    assert_eq!(result["receipt_state"], "invalid", "{result}");
}

#[test]
fn forget_against_a_silent_collector_ends_at_the_deadline_audited_and_exits_69() {
    let server = stand_in(None, vec![Reply::Hang]);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_timeout = 1\n");
    let child = install
        .command(&["forget"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = wait_for_exit(child, "forget hung on a silent collector");
    assert_eq!(status.code(), Some(69), "{err}");
    assert!(err.contains("within 1 s"), "{err}");
    let events = audit_events(&install);
    assert_eq!(events[0]["event"], "forget");
    assert_eq!(events[1]["of"], events[0]["seq"]);
    assert!(events[1]["status"].is_null());
    assert!(
        events[1].get("receipt_state").is_none(),
        "no answer, no receipt"
    );
    assert_eq!(server.requests().len(), 1);
}

/// Both real binaries: the receipt of a report sent by `surveyd send`
/// verifies under the key `surveyd-collector key` prints; a deletion with
/// a wrong secret changes nothing; `surveyd forget` removes the row and
/// its tombstone verifies; asking again is harmless.
#[test]
fn with_the_real_collector_receipts_verify_and_forget_removes_the_row() {
    for_each_backend("e2e_receipts", |backend| {
        let name = backend.name();
        let collector = Collector::start(&backend);
        let key = collector.public_key().to_string();
        let install = Install::new();
        install.write_config(
            &format!("http://{}/api/stats/v1/submit", collector.addr),
            &format!("surveyclient_collector_key = {key}\n"),
        );

        let out = install.run(&["send"]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            audit_results(&install)[0]["receipt_state"],
            "valid",
            "{name}"
        );
        assert_eq!(collector.rows().len(), 1, "{name}");

        let sent: Value =
            serde_json::from_value(audit_events(&install)[0]["body"].clone()).unwrap();
        let stat = |n: &str| sent["stats"][n]["value"].as_str().unwrap().to_string();
        let uid = installation_uid(&stat("machine_id_hash"), &stat("server_guid_hash"));
        let wrong = collector.request(
            "POST",
            DELETE,
            &[
                ("Content-Type", "application/json"),
                ("X-Kopano-Stats-Request", "1"),
            ],
            format!(r#"{{"uid":"{uid}","secret":"{}"}}"#, "00".repeat(32)).as_bytes(),
        );
        assert_eq!(wrong.status, 403, "{name}: {wrong:?}");
        assert_eq!(
            collector.rows().len(),
            1,
            "{name}: a wrong secret deletes nothing"
        );

        let out = install.run(&["forget"]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("tombstone valid"),
            "{name}: {}",
            stdout(&out)
        );
        assert!(collector.rows().is_empty(), "{name}: the row is gone");

        let out = install.run(&["forget"]);
        assert!(
            out.status.success(),
            "{name}: deleting twice is harmless: {}",
            stderr(&out)
        );
        let out = verify(&install);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("receipts OK: 3 verify"),
            "{name}: {}",
            stdout(&out)
        );
    });
}
