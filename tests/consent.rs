//! Consent with the real binaries: a fresh installation keeps its reports
//! local until `surveyd consent yes`, consent applies to the running
//! service without a restart, an upgrade that adds a field keeps sending
//! the acknowledged ones and holds the new one, `consent no` stops uploads,
//! `--fields` limits what is sent, and the collector refuses a field newer
//! than the schema its sender acknowledged.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use common::*;
use serde_json::Value;

/// One report per second, the first at once.
const EVERY_SECOND: &str = "surveyclient_start_delay = 0\nsurveyclient_interval = 1\n";

/// The fields of schema 2 that surveyd sends, as a consent file written by
/// the previous version lists them.
const V2_FIELDS: &[&str] = &[
    "machine_id_hash",
    "server_guid_hash",
    "id_scheme",
    "program_name",
    "program_version",
    "osrelease",
    "utsname",
    "userplugin",
    "attachment_storage",
    "usercnt_active",
    "usercnt_contact",
    "usercnt_equipment",
    "usercnt_na_user",
    "usercnt_nonactive",
    "usercnt_room",
];

/// An installation as the package leaves it: configured, never answered.
fn fresh_install(url: &str, extra: &str) -> Install {
    let install = Install::new();
    install.write_config(url, extra);
    std::fs::remove_file(install.path("state/consent")).unwrap();
    install
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn body_json(request: &Received) -> Value {
    serde_json::from_slice(request.body()).unwrap()
}

fn stat_names(body: &Value) -> BTreeSet<String> {
    body["stats"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_fresh_install_keeps_reports_local_until_consent_yes_starts_uploads_without_a_restart() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = fresh_install(&server.url, EVERY_SECOND);
    let state = json_of(&install.run(&["consent", "--json"]));
    assert_eq!(state["mode"], "local");
    assert_eq!(state["acknowledged"], serde_json::json!([]));
    assert!(state["pending"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "program_name" && f["example"] == "kopano-server"));

    let mut daemon = Daemon::start(&install);
    daemon.ready();
    // Three intervals, each ending in a report kept local.
    daemon.expect_status("report 3 recorded locally");
    assert!(
        server.requests().is_empty(),
        "a report left the machine without consent"
    );
    let listing = stdout(&install.run(&["audit"]));
    assert!(
        listing.matches("local (not sent)").count() >= 3,
        "{listing}"
    );
    let local: Vec<Value> = audit_events(&install)
        .into_iter()
        .filter(|e| e["event"] == "local")
        .collect();
    assert!(local.len() >= 3);
    // What was kept is what consent yes would send.
    let preview = stdout(&install.run(&["preview"]));
    let kept = serde_json::to_string(&local[0]["body"]).unwrap();
    let preview_value: Value = serde_json::from_str(preview.trim()).unwrap();
    assert_eq!(
        stat_names(&serde_json::from_str(&kept).unwrap()),
        stat_names(&preview_value)
    );
    let show = install.run(&["audit", "show", &local[0]["seq"].to_string()]);
    assert_eq!(stdout(&show).trim(), kept);
    let verify = install.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));

    let yes = install.run(&["consent", "yes"]);
    assert!(yes.status.success(), "{}", stderr(&yes));
    assert!(daemon.wait_for_requests(&server, 1) >= 1);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");

    let sent = server.requests();
    assert!(!sent.is_empty(), "no upload after consent yes");
    let body = body_json(&sent[0]);
    assert_eq!(body["acknowledged"], 3);
    assert_eq!(body["schema"], 3);
    assert_eq!(stat_names(&body), stat_names(&preview_value));
    for request in &sent {
        assert_no_raw_ids("an uploaded report", &request.raw);
    }
    assert_no_raw_ids("the audit log", install.audit_text().as_bytes());
    assert_no_raw_ids("the service's log", log.as_bytes());
    let events = audit_events(&install);
    let consent = events.iter().find(|e| e["event"] == "consent").unwrap();
    assert_eq!(consent["mode"], "upload");
    assert_eq!(consent["url"], server.url.as_str());
}

#[test]
fn an_upgrade_keeps_sending_the_acknowledged_fields_and_holds_the_new_one_until_consent_yes() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = fresh_install(&server.url, "");
    // What the previous version (schema 2) left behind after `consent yes`.
    let v2 = serde_json::json!({
        "mode": "upload", "schema": 2, "fields": V2_FIELDS,
        "url": server.url, "time": "2025-06-01T10:00:00Z",
    });
    std::fs::write(install.path("state/consent"), format!("{v2}\n")).unwrap();

    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = body_json(&server.requests()[0]);
    assert_eq!(first["acknowledged"], 2, "the sender says what it may send");
    assert_eq!(first["schema"], 3);
    assert!(!first["stats"]
        .as_object()
        .unwrap()
        .contains_key("cpu_count"));
    assert!(
        stat_names(&first).contains("usercnt_active")
            || stat_names(&first).contains("program_name")
    );

    // Still upload mode: no re-prompt, the new field is listed as pending.
    let state = json_of(&install.run(&["consent", "--json"]));
    assert_eq!(state["mode"], "upload");
    assert_eq!(state["acknowledged_schema"], 2);
    let pending = state["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["name"], "cpu_count");
    assert_eq!(pending[0]["since"], 3);
    assert!(pending[0]["example"].as_u64().unwrap() >= 1);
    let text = stdout(&install.run(&["consent"]));
    assert!(
        text.contains("cpu_count") && text.contains("Number of CPUs"),
        "{text}"
    );

    let yes = install.run(&["consent", "yes"]);
    assert!(yes.status.success(), "{}", stderr(&yes));
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = body_json(&server.requests()[1]);
    assert_eq!(second["acknowledged"], 3);
    assert!(second["stats"]["cpu_count"]["value"].as_u64().unwrap() >= 1);
    let state = json_of(&install.run(&["consent", "--json"]));
    assert_eq!(state["pending"], serde_json::json!([]));
}

#[test]
fn consent_no_stops_the_running_services_uploads() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, EVERY_SECOND);
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    assert!(daemon.wait_for_requests(&server, 1) >= 1);

    let no = install.run(&["consent", "no", "--json"]);
    let answer = json_of(&no);
    assert_eq!(answer["mode"], "local");
    assert_eq!(answer["fields"], serde_json::json!([]));
    // A report in flight may still finish; after the first one kept local
    // nothing more is sent.
    daemon.expect_status("recorded locally");
    let uploaded = server.requests().len();
    daemon.expect_status("recorded locally");
    daemon.expect_status("recorded locally");
    assert_eq!(server.requests().len(), uploaded);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    let state = json_of(&install.run(&["consent", "--json"]));
    assert_eq!(state["mode"], "local");
    assert!(state["withdrawn_time"].is_string());
    let consent: Value =
        serde_json::from_slice(&std::fs::read(install.path("state/consent")).unwrap()).unwrap();
    assert_eq!(consent["mode"], "local");
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("nothing was sent"),
        "{}",
        stdout(&out)
    );
    assert_eq!(server.requests().len(), uploaded);
}

#[test]
fn consent_to_some_fields_sends_only_those_and_an_unknown_name_changes_nothing() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = fresh_install(&server.url, "");

    let out = install.run(&["consent", "yes", "--fields", "program_name,no_such_field"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("no_such_field"), "{}", stderr(&out));
    assert!(!install.path("state/consent").exists());

    let out = install.run(&["consent", "yes", "--fields", "program_name,machine_id_hash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = body_json(&server.requests()[0]);
    let expected: BTreeSet<String> = ["id_scheme", "machine_id_hash", "program_name"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(stat_names(&body), expected);
    assert_eq!(
        body["stats"]["machine_id_hash"]["value"],
        systemd_app_specific(RAW_MACHINE_ID, APP_ID)
    );
    assert_no_raw_ids("the uploaded report", &server.requests()[0].raw);
    let state = json_of(&install.run(&["consent", "--json"]));
    assert_eq!(state["acknowledged"].as_array().unwrap().len(), 3);
    assert!(state["pending"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "usercnt_active"));
}

#[test]
fn a_planted_consent_file_is_no_consent_and_nothing_leaves() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = fresh_install(&server.url, "");
    let elsewhere = install.path("elsewhere-consent");
    std::fs::write(
        &elsewhere,
        serde_json::json!({"mode":"upload","schema":3,"fields":V2_FIELDS,"url":server.url,"time":"x"})
            .to_string(),
    )
    .unwrap();
    let consent = install.path("state/consent");
    for plant in ["link", "fifo", "garbage"] {
        let _ = std::fs::remove_file(&consent);
        match plant {
            "link" => std::os::unix::fs::symlink(&elsewhere, &consent).unwrap(),
            "fifo" => mkfifo(&consent),
            _ => std::fs::write(&consent, "{\"mode\":\"upload\"").unwrap(),
        }
        let out = install.run(&["send"]);
        assert!(out.status.success(), "{plant}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("treating it as no consent"),
            "{plant}: {}",
            stderr(&out)
        );
        assert!(server.requests().is_empty(), "{plant}: a report was sent");
    }
}

/// DynamicUser's directories belong to the service's user: root's
/// `consent yes` writes there as that user, and a link planted under the
/// consent file's name is replaced, never written through.
#[test]
fn root_answers_in_the_service_users_state_dir_as_that_user() {
    if !is_root() {
        return skip("needs root to own files as another uid");
    }
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = fresh_install(&server.url, "");
    let owner = nix::unistd::Uid::from_raw(65534);
    let group = nix::unistd::Gid::from_raw(65534);
    for dir in [install.path("log"), install.path("state")] {
        nix::unistd::chown(&dir, Some(owner), Some(group)).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
    }
    let victim = install.path("victim");
    std::fs::write(&victim, "root:secret\n").unwrap();
    std::os::unix::fs::symlink(&victim, install.path("state/consent")).unwrap();

    let out = install.run(&["consent", "yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not as root"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
    let meta = std::fs::symlink_metadata(install.path("state/consent")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.uid(), 65534);
    let log = std::fs::metadata(install.audit_log()).unwrap();
    assert_eq!(log.uid(), 65534);
    let state = json_of(&install.run(&["consent", "--json"]));
    assert_eq!(state["mode"], "upload");
}

#[test]
fn the_collector_refuses_a_field_newer_than_the_schema_its_sender_acknowledged() {
    let backend = Backend::sqlite();
    let collector = Collector::start(&backend);
    let hashed = systemd_app_specific(RAW_MACHINE_ID, APP_ID);
    let body = |acknowledged: Option<u32>| {
        let mut body = serde_json::json!({
            "version": 2,
            "schema": 3,
            "stats": {
                "machine_id_hash": {"type": "string", "value": hashed},
                "id_scheme": {"type": "string", "value": "app-v1"},
                "program_name": {"type": "string", "value": "kopano-server"},
                "cpu_count": {"type": "int", "mode": "gauge", "value": 8},
            },
        });
        if let Some(n) = acknowledged {
            body["acknowledged"] = n.into();
        }
        body.to_string()
    };
    let refused = collector.post(&body(Some(2)));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("cpu_count"), "{refused:?}");
    let upstream_style = collector.post(&body(None));
    assert_eq!(upstream_style.status, 400, "{upstream_style:?}");
    assert!(collector.rows().is_empty(), "a refused report was stored");

    let accepted = collector.post(&body(Some(3)));
    assert!((200..300).contains(&accepted.status), "{accepted:?}");
    let rows = collector.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cpu_count"], 8);

    // A sender newer than the collector: its unknown stat is skipped, the
    // known ones are still held to what it acknowledged.
    let mut newer: Value = serde_json::from_str(&body(Some(9))).unwrap();
    newer["schema"] = 9.into();
    newer["stats"]["field_of_schema_9"] = serde_json::json!({"type": "int", "value": 1});
    let accepted = collector.post(&newer.to_string());
    assert!((200..300).contains(&accepted.status), "{accepted:?}");
    newer["acknowledged"] = 2.into();
    let refused = collector.post(&newer.to_string());
    assert_eq!(refused.status, 400, "{refused:?}");
}

#[test]
fn consent_no_deletes_the_uploaded_row_with_a_tombstone_that_verifies() {
    for_each_backend("consent_no_deletes", |backend| {
        let name = backend.name();
        let collector = Collector::start(&backend);
        let url = format!("http://{}{SUBMIT}", collector.addr);
        let key = format!("surveyclient_collector_key = {}\n", collector.public_key());

        // No service: `consent no` itself asks, with the log it holds.
        let install = Install::new();
        install.write_config(&url, &key);
        assert!(install.run(&["send"]).status.success(), "{name}");
        assert_eq!(collector.rows().len(), 1, "{name}");
        let answer = json_of(&install.run(&["consent", "no", "--json"]));
        assert_eq!(answer["mode"], "local", "{name}");
        assert_eq!(answer["deletion"]["state"], "confirmed", "{name}: {answer}");
        assert!(collector.rows().is_empty(), "{name}: the row is gone");
        let verify = install.run(&["audit", "verify"]);
        assert!(verify.status.success(), "{name}: {}", stderr(&verify));
        assert!(
            stdout(&verify).contains("receipts OK: 2 verify"),
            "{name}: {}",
            stdout(&verify)
        );
        // Saying no again asks nothing more: nothing was uploaded since.
        let again = json_of(&install.run(&["consent", "no", "--json"]));
        assert_eq!(again["deletion"]["state"], "not-needed", "{name}");

        // The service running: it holds the log, so it asks itself, before
        // the first report the withdrawal governs.
        let install = Install::new();
        install.write_config(&url, &format!("{key}{EVERY_SECOND}"));
        let mut daemon = Daemon::start(&install);
        daemon.ready();
        // Waiting on the service's STATUS also drains its notify socket,
        // which a real systemd reads at once.
        daemon.expect_status("accepted (HTTP 200)");
        assert_eq!(collector.rows().len(), 1, "{name}: no upload");
        let answer = json_of(&install.run(&["consent", "no", "--json"]));
        assert_eq!(
            answer["deletion"]["state"], "by-service",
            "{name}: {answer}"
        );
        // The service asks for the deletion before the report it keeps local.
        daemon.expect_status("recorded locally");
        assert!(collector.rows().is_empty(), "{name}: row not deleted");
        daemon.expect_status("recorded locally");
        let (code, log) = daemon.stop();
        assert_eq!(code, 0, "{log}");
        assert_eq!(collector.rows().len(), 0, "{name}: nothing uploaded after");
        let forgets: Vec<Value> = audit_events(&install)
            .into_iter()
            .filter(|e| e["event"] == "forget")
            .collect();
        assert_eq!(forgets.len(), 1, "{name}");
        let verify = install.run(&["audit", "verify"]);
        assert!(verify.status.success(), "{name}: {}", stderr(&verify));
        assert_no_raw_ids("the audit log", install.audit_text().as_bytes());
        assert_no_raw_ids("the service log", log.as_bytes());
    });
}

#[test]
fn consent_no_on_an_installation_that_never_uploaded_contacts_nobody() {
    let server = stand_in(None, vec![Reply::Status(200)]);
    let install = fresh_install(&server.url, "");
    let answer = json_of(&install.run(&["consent", "no", "--json"]));
    assert_eq!(answer["deletion"]["state"], "not-needed", "{answer}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // Local reports are not uploads either.
    assert!(install.run(&["send"]).status.success());
    let answer = json_of(&install.run(&["consent", "no", "--json"]));
    assert_eq!(answer["deletion"]["state"], "not-needed", "{answer}");
    assert!(server.requests().is_empty());
}
