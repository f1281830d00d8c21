//! `surveyd preview` and `surveyd send` with the real binary against a
//! loopback collector stand-in: the bytes, the headers, TLS, unix sockets,
//! privacy, and what happens when the audit log cannot be written.

mod common;

use common::*;

fn preview(install: &Install) -> Vec<u8> {
    let out = install.run(&["preview"]);
    assert!(out.status.success(), "preview failed: {}", stderr(&out));
    let mut bytes = out.stdout;
    assert_eq!(bytes.pop(), Some(b'\n'), "preview ends with one newline");
    bytes
}

#[test]
fn preview_bytes_equal_the_bytes_an_https_collector_receives() {
    let pki = pki(false);
    let server = stand_in(Some(pki.server.clone()), vec![Reply::Status(204)]);
    let install = Install::new();
    let ca = install.path("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    install.write_config(
        &server.url,
        "user_plugin = ldap\nattachment_storage = files\n",
    );

    let previewed = preview(&install);
    let out = install
        .command(&["send"])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "send failed: {}", stderr(&out));

    let got = server.requests();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.body(), previewed.as_slice());
    assert!(request
        .head()
        .starts_with("POST /api/stats/v1/submit HTTP/1.1"));
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    assert_eq!(request.header("x-kopano-stats-request").unwrap(), "1");
    assert_eq!(
        request.header("user-agent").unwrap(),
        concat!("surveyd/", env!("CARGO_PKG_VERSION"))
    );

    let payload: serde_json::Value = serde_json::from_slice(&previewed).unwrap();
    assert_eq!(payload["version"], 2);
    let stats = &payload["stats"];
    assert_eq!(stats["userplugin"]["value"], "ldap");
    assert_eq!(stats["attachment_storage"]["value"], "files");
    assert_eq!(stats["program_name"]["value"], "kopano-server");
    assert_eq!(stats["id_scheme"]["value"], "app-v1");
    let uts = nix::sys::utsname::uname().unwrap();
    assert_eq!(
        stats["utsname"]["value"],
        format!(
            "{} {} {}",
            uts.sysname().to_string_lossy(),
            uts.machine().to_string_lossy(),
            uts.release().to_string_lossy()
        )
    );

    // The audit log's send entry holds the same bytes, hashed.
    let audit = install.audit_text();
    let send: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(send["event"], "send");
    assert_eq!(send["url"], server.url);
    assert_eq!(serde_json::to_vec(&send["body"]).unwrap(), previewed);
    assert_eq!(send["body_sha256"], sha256_hex(&previewed));
    let result: serde_json::Value = serde_json::from_str(audit.lines().nth(1).unwrap()).unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["status"], 204);
    assert_eq!(result["of"], send["seq"]);
}

#[test]
fn raw_identifiers_appear_in_no_received_byte_audit_line_or_log() {
    let server = stand_in(None, vec![Reply::Status(500), Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "");
    let mut logs = Vec::new();
    for args in [
        &["preview"][..],
        &["send"],
        &["send"],
        &["check-config"],
        &["audit"],
    ] {
        let out = install
            .command(args)
            .env("SURVEYD_LOG", "debug")
            .output()
            .unwrap();
        logs.extend_from_slice(&out.stdout);
        logs.extend_from_slice(&out.stderr);
    }
    let got = server.requests();
    assert_eq!(got.len(), 2);
    for request in &got {
        assert_no_raw_ids("a received request", &request.raw);
    }
    assert_no_raw_ids("the audit log", install.audit_text().as_bytes());
    assert_no_raw_ids("the program's output", &logs);
    // And the hashes that did go out are the expected ones.
    let body: serde_json::Value = serde_json::from_slice(got[1].body()).unwrap();
    assert_eq!(
        body["stats"]["machine_id_hash"]["value"],
        systemd_app_specific(RAW_MACHINE_ID, APP_ID)
    );
}

#[test]
fn app_hash_equals_what_systemd_id128_prints_for_the_machine_id() {
    let install = Install::new();
    let app_id = "0fe1c2d3b4a5968778695a4b3c2d1e0f";
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!("surveyclient_app_id = {app_id}\n"),
    );
    let payload: serde_json::Value = serde_json::from_slice(&preview(&install)).unwrap();
    let sent = payload["stats"]["machine_id_hash"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sent, systemd_app_specific(RAW_MACHINE_ID, app_id));

    // The tool itself reads /etc/machine-id: give it ours in a private
    // mount namespace.
    if !std::path::Path::new("/usr/bin/systemd-id128").exists() {
        return skip("systemd-id128 is not installed");
    }
    if !is_root() {
        return skip("comparing with systemd-id128 needs root for a mount namespace");
    }
    let script = format!(
        "mount --bind {} /etc/machine-id && exec systemd-id128 machine-id --app-specific={app_id}",
        install.path("machine-id").display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), sent);
}

#[test]
fn sha256_scheme_sends_what_upstreams_collector_stores() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "surveyclient_id_hash = sha256\n");
    let payload: serde_json::Value = serde_json::from_slice(&preview(&install)).unwrap();
    let stats = &payload["stats"];
    assert_eq!(stats["id_scheme"]["value"], "sha256");
    assert_eq!(
        stats["machine_id_hash"]["value"],
        sha256_hex(RAW_MACHINE_ID)
    );
    assert_eq!(stats["server_guid_hash"]["value"], sha256_hex(RAW_GUID));
}

#[test]
fn missing_or_uninitialized_machine_id_is_left_out_with_a_warning() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "");
    for contents in ["", "uninitialized\n"] {
        std::fs::write(install.path("machine-id"), contents).unwrap();
        let out = install.run(&["preview"]);
        assert!(out.status.success());
        let payload: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(payload["stats"].get("machine_id_hash").is_none());
        assert!(
            stderr(&out).contains("machine_id_hash is left out"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn ssl_verify_yes_refuses_a_self_signed_collector_and_no_accepts_it() {
    let pki = pki(true);
    let server = stand_in(Some(pki.server.clone()), vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_ssl_verify = yes\n");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert!(
        server.requests().is_empty(),
        "no request over an unverified link"
    );
    assert_eq!(*server.handshake_failures.lock().unwrap(), 1);

    install.write_config(&server.url, "surveyclient_ssl_verify = no\n");
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not checked"), "a warning is logged");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn unix_socket_url_reaches_the_collector() {
    let install = Install::new();
    let server = unix_stand_in(&install.path("collector.sock"), vec![Reply::Status(200)]);
    install.write_config(&server.url, "");
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = server.requests();
    assert_eq!(got.len(), 1);
    assert!(got[0]
        .head()
        .starts_with("POST /api/stats/v1/submit HTTP/1.1"));
    assert_eq!(got[0].body(), preview(&install).as_slice());
}

#[test]
fn interval_zero_refuses_to_send_anything() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_interval = 0\n");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("surveyclient_interval is 0"));
    assert!(server.requests().is_empty());
    assert_eq!(install.audit_text(), "", "nothing is audited either");
}

#[test]
fn a_non_2xx_answer_exits_non_zero_and_is_audited() {
    let server = stand_in(None, vec![Reply::Status(503)]);
    let install = Install::new();
    install.write_config(&server.url, "");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let audit = install.audit_text();
    let result: serde_json::Value = serde_json::from_str(audit.lines().nth(1).unwrap()).unwrap();
    assert_eq!(result["status"], 503);
    assert!(result["error"].as_str().unwrap().contains("503"));
}

#[test]
fn a_refused_connection_and_a_hanging_collector_are_audited_errors() {
    let install = Install::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/submit", closed.local_addr().unwrap());
    drop(closed);
    install.write_config(&url, "");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69));

    let hanging = stand_in(None, vec![Reply::Hang]);
    install.write_config(&hanging.url, "surveyclient_timeout = 1\n");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(stderr(&out).contains("within 1 s"), "{}", stderr(&out));

    let results: Vec<serde_json::Value> = install
        .audit_text()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "result")
        .collect();
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| r["status"].is_null() && r["error"].is_string()));
}

#[test]
fn facts_from_a_command_and_a_file_are_sent_and_omit_wins() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    let script = install.path("facts.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'usercnt_active = 42'\necho 'usercnt_room = 3'\necho 'usercnt_contact = 9'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = install.path("facts.json");
    std::fs::write(
        &file,
        r#"{"usercnt_equipment": 2, "osrelease": "Test OS 1"}"#,
    )
    .unwrap();
    install.write_config(
        &server.url,
        &format!(
            "surveyclient_facts = command:{} ; file:{}\nsurveyclient_omit = usercnt_contact utsname\n",
            script.display(),
            file.display()
        ),
    );
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(server.requests()[0].body()).unwrap();
    let stats = &body["stats"];
    assert_eq!(stats["usercnt_active"]["value"], 42);
    assert_eq!(stats["usercnt_room"]["value"], 3);
    assert_eq!(stats["usercnt_equipment"]["value"], 2);
    assert_eq!(stats["osrelease"]["value"], "Test OS 1");
    assert!(stats.get("usercnt_contact").is_none());
    assert!(stats.get("utsname").is_none());
}

#[test]
fn a_failing_facts_command_leaves_its_fields_out_and_the_report_goes() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(
        &server.url,
        "surveyclient_facts = command:/bin/false\nsurveyclient_timeout = 2\n",
    );
    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("facts command /bin/false failed"));
    let body: serde_json::Value = serde_json::from_slice(server.requests()[0].body()).unwrap();
    assert!(body["stats"].get("usercnt_active").is_none());

    // A command that hangs is killed at the timeout.
    install.write_config(
        &server.url,
        "surveyclient_facts = command:/bin/sleep 30\nsurveyclient_timeout = 1\n",
    );
    let out = install.run(&["preview"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("killed"), "{}", stderr(&out));
}

#[test]
fn bucketed_counts_are_sent_rounded() {
    let install = Install::new();
    let file = install.path("facts.json");
    std::fs::write(&file, r#"{"usercnt_active": 1234, "usercnt_room": 7}"#).unwrap();
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!(
            "surveyclient_facts = file:{}\nsurveyclient_bucket_counts = yes\n",
            file.display()
        ),
    );
    let payload: serde_json::Value = serde_json::from_slice(&preview(&install)).unwrap();
    assert_eq!(payload["stats"]["usercnt_active"]["value"], 1200);
    assert_eq!(payload["stats"]["usercnt_room"]["value"], 7);
}

#[test]
fn generated_server_guid_is_stable_across_reports() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "");
    // Drop the static GUID so one is generated in the state dir.
    let config = std::fs::read_to_string(install.config_path()).unwrap();
    std::fs::write(
        install.config_path(),
        config.replace(&format!("surveyclient_server_guid = {RAW_GUID}\n"), ""),
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_slice(&preview(&install)).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&preview(&install)).unwrap();
    let hash = &first["stats"]["server_guid_hash"]["value"];
    assert!(hash.is_string());
    assert_eq!(hash, &second["stats"]["server_guid_hash"]["value"]);
    let stored = std::fs::read_to_string(install.path("state/server-guid")).unwrap();
    let out = install.run(&["preview"]);
    assert!(!stdout(&out)
        .to_ascii_lowercase()
        .contains(&stored.trim().to_ascii_lowercase()));
}

/// Runs `surveyd send` with the audit dir made unwritable in a way root
/// cannot bypass: a read-only bind mount, or a full tmpfs.
fn send_with_broken_audit_dir(fill: bool) {
    if !is_root() {
        return skip("read-only and full mounts need root (mount namespace)");
    }
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "");
    let log_dir = install.path("log");
    let setup = if fill {
        format!(
            "mount -t tmpfs -o size=16k tmpfs {d} && (dd if=/dev/zero of={d}/filler bs=4k count=64 2>/dev/null; true)",
            d = log_dir.display()
        )
    } else {
        format!(
            "mount --bind {d} {d} && mount -o remount,bind,ro {d}",
            d = log_dir.display()
        )
    };
    let script = format!(
        "{setup} && exec {} -c {} send",
        env!("CARGO_BIN_EXE_surveyd"),
        install.config_path().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was sent"),
        "{}",
        stderr(&out)
    );
    // send waits for its answer, so anything sent has arrived by now.
    assert!(
        server.requests().is_empty(),
        "no request may reach the collector"
    );
}

#[test]
fn read_only_audit_directory_means_nothing_is_sent() {
    send_with_broken_audit_dir(false);
}

#[test]
fn full_audit_directory_means_nothing_is_sent() {
    send_with_broken_audit_dir(true);
}

/// `surveyd send` with the proxy variable `variable` set to `proxy`.
fn send_via_proxy(install: &Install, variable: &str, proxy: &str) -> std::process::Output {
    install
        .command(&["send"])
        .env(variable, proxy)
        .output()
        .unwrap()
}

#[test]
fn http_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it() {
    let proxy = stand_in(None, vec![Reply::Status(204)]);
    let proxy_addr = proxy.address();
    let install = Install::new();
    install.write_config("http://collector.invalid/api/stats/v1/submit", "");
    let out = send_via_proxy(&install, "http_proxy", &format!("http://{proxy_addr}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = proxy.requests();
    assert_eq!(got.len(), 1);
    assert!(
        got[0]
            .head()
            .starts_with("POST http://collector.invalid/api/stats/v1/submit HTTP/1.1"),
        "absolute-form request to the proxy: {}",
        got[0].head()
    );
    assert_eq!(got[0].header("host").unwrap(), "collector.invalid");

    // no_proxy sends straight to the collector.
    let direct = stand_in(None, vec![Reply::Status(204)]);
    install.write_config(&direct.url, "");
    let out = install
        .command(&["send"])
        .env("http_proxy", format!("http://{proxy_addr}"))
        .env("no_proxy", "127.0.0.1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(direct.requests().len(), 1);
    assert_eq!(proxy.requests().len(), 1, "the proxy saw nothing more");
}

#[test]
fn https_through_a_proxy_opens_a_connect_tunnel() {
    // The stand-in answers CONNECT with 403, so the tunnel is refused and
    // nothing but the CONNECT line reaches it: the payload is never sent in
    // clear to a proxy.
    let proxy = stand_in(None, vec![Reply::Status(403)]);
    let proxy_addr = proxy.address();
    let install = Install::new();
    install.write_config("https://collector.invalid/api/stats/v1/submit", "");
    let out = send_via_proxy(&install, "https_proxy", &format!("http://{proxy_addr}"));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "proxy http://{proxy_addr} (from https_proxy) failed: it refused the tunnel to \
             collector.invalid:443 with HTTP 403 Forbidden"
        )),
        "the proxy and its answer are named: {err}"
    );
    let got = proxy.requests();
    assert_eq!(got.len(), 1);
    assert!(
        got[0]
            .head()
            .starts_with("CONNECT collector.invalid:443 HTTP/1.1"),
        "{}",
        got[0].head()
    );
    assert!(got[0].body().is_empty());
}

/// A collector with a certificate made for the case: `names` it is valid
/// for, signed by a fresh CA (or the CA certificate itself as the server
/// certificate), optionally long expired. Returns the stand-in and the
/// CA's PEM for SSL_CERT_FILE.
fn tls_collector(names: &[&str], ca_as_server: bool, expired: bool) -> (StandIn, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "surveyd test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let (cert, key) = if ca_as_server {
        (ca.der().clone(), ca_key.serialize_der())
    } else {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.der().clone(), key.serialize_der())
    };
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    (
        stand_in(Some(std::sync::Arc::new(config)), vec![Reply::Status(204)]),
        ca.pem(),
    )
}

/// `surveyd send` against `server` trusting `ca_pem` (or only the system's
/// CAs) must be refused before any request crosses the unverified link,
/// and both stderr and the audited error must contain every one of
/// `explanation`, with no debug output.
fn assert_tls_refusal_explained(server: &StandIn, ca_pem: Option<&str>, explanation: &[&str]) {
    let install = Install::new();
    install.write_config(&server.url, "");
    let mut cmd = install.command(&["send"]);
    if let Some(pem) = ca_pem {
        let ca = install.path("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        cmd.env("SSL_CERT_FILE", &ca);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(server.requests().is_empty(), "nothing crossed the link");
    let audited = audit_results(&install)[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    let err = stderr(&out);
    assert!(
        !err.contains("Other(") && !err.contains("InvalidCertificate"),
        "no debug output: {err}"
    );
    for text in [&err, &audited] {
        for part in explanation {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
    }
}

#[test]
fn an_untrusted_ca_is_explained_with_what_to_do() {
    let (server, _ca) = tls_collector(&["127.0.0.1"], false, false);
    assert_tls_refusal_explained(
        &server,
        None,
        &[
            "not signed by a CA this machine trusts",
            "install that CA",
            "surveyclient_ssl_verify = no",
        ],
    );
}

#[test]
fn a_certificate_for_another_name_is_explained_with_both_names() {
    let (server, ca) = tls_collector(&["collector.example"], false, false);
    assert_tls_refusal_explained(
        &server,
        Some(&ca),
        &["not valid for the name 127.0.0.1 (it names collector.example)"],
    );
}

#[test]
fn a_ca_certificate_used_as_the_server_certificate_is_explained() {
    let (server, ca) = tls_collector(&["127.0.0.1"], true, false);
    assert_tls_refusal_explained(
        &server,
        Some(&ca),
        &[
            "presents a CA certificate as its own",
            "server certificate signed by that CA",
        ],
    );
}

#[test]
fn an_expired_certificate_is_explained_with_its_end_date() {
    let (server, ca) = tls_collector(&["127.0.0.1"], false, true);
    assert_tls_refusal_explained(
        &server,
        Some(&ca),
        &["certificate expired at 2002-01-01", "renewed certificate"],
    );
}

#[test]
fn a_collector_silent_during_the_tls_handshake_is_named_at_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://{}/api/stats/v1/submit",
        listener.local_addr().unwrap()
    );
    // Accepts and then says nothing, holding the connection until the
    // client hangs up.
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let install = Install::new();
    install.write_config(&url, "surveyclient_timeout = 1\n");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("within 1 s")
            && stderr(&out).contains("the TLS handshake with 127.0.0.1 did not finish"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_refusing_http_proxy_is_named_not_the_collector() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = closed.local_addr().unwrap();
    drop(closed);
    let install = Install::new();
    install.write_config("http://collector.invalid/api/stats/v1/submit", "");
    let out = send_via_proxy(
        &install,
        "http_proxy",
        &format!("http://user:secret@{proxy_addr}"),
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let audit = install.audit_text();
    for text in [stderr(&out), audit] {
        assert!(
            text.contains(&format!(
                "proxy http://{proxy_addr} (from http_proxy) failed: cannot connect to it"
            )),
            "{text}"
        );
        assert!(!text.contains("secret"), "no proxy password: {text}");
    }
}

#[test]
fn a_silent_http_proxy_is_named_at_the_timeout() {
    let proxy = stand_in(None, vec![Reply::Hang]);
    let proxy_addr = proxy.address();
    let install = Install::new();
    install.write_config(
        "http://collector.invalid/api/stats/v1/submit",
        "surveyclient_timeout = 1\n",
    );
    let out = send_via_proxy(&install, "http_proxy", &format!("http://{proxy_addr}"));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "within 1 s (surveyclient_timeout): proxy http://{proxy_addr} (from http_proxy): \
             no answer came from it"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_error_answer_through_an_http_proxy_names_the_proxy() {
    let proxy = stand_in(None, vec![Reply::Status(502)]);
    let proxy_addr = proxy.address();
    let install = Install::new();
    install.write_config("http://collector.invalid/api/stats/v1/submit", "");
    let out = send_via_proxy(&install, "http_proxy", &format!("http://{proxy_addr}"));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let named = format!("HTTP 502 via proxy http://{proxy_addr}");
    assert!(stderr(&out).contains(&named), "{}", stderr(&out));
    assert!(install.audit_text().contains(&named));
}

/// A one-connection-at-a-time HTTP server on loopback that reads each
/// request and then hands the stream to `respond`. Counts the responses
/// it could not finish because the client hung up.
struct RawServer {
    url: String,
    hung_up: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn raw_server(
    respond: impl Fn(&mut std::net::TcpStream) -> std::io::Result<()> + Send + 'static,
) -> RawServer {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/stats/v1/submit",
        listener.local_addr().unwrap()
    );
    let hung_up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hung_up.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            // The request: head and body arrive together from surveyd.
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            while !String::from_utf8_lossy(&seen).contains("\"version\":2") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            if respond(&mut stream).is_err() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    RawServer { url, hung_up }
}

fn audited_errors(install: &Install) -> Vec<String> {
    let out = install.run(&["audit", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|row| row["error"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_400_with_a_reason_is_logged_and_audited_with_control_characters_escaped() {
    use std::io::Write;
    let reason = "stats.osrelease: longer than 256 bytes\u{1b}[2J\u{202e}\n";
    let server = raw_server(move |stream| {
        write!(
            stream,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{reason}",
            reason.len()
        )
    });
    let install = Install::new();
    install.write_config(&server.url, "");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let shown = "stats.osrelease: longer than 256 bytes\\u{1b}[2J\\u{202e}";
    let err = stderr(&out);
    assert!(
        err.contains(&format!("collector answered HTTP 400: {shown}")),
        "the log carries the reason: {err}"
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{202e}'),
        "{err}"
    );
    assert_eq!(
        audited_errors(&install),
        vec![format!("collector answered HTTP 400: {shown}")]
    );
}

#[test]
fn an_endless_refusal_body_is_cut_at_its_first_bytes() {
    use std::io::Write;
    let server = raw_server(|stream| {
        stream.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )?;
        // Chunks until the client stops reading: an endless reason.
        let chunk = format!("{:x}\r\n{}\r\n", 1024, "x".repeat(1024));
        loop {
            stream.write_all(chunk.as_bytes())?;
        }
    });
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_timeout = 30\n");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let errors = audited_errors(&install);
    let expected = format!("collector answered HTTP 413: {}…", "x".repeat(512));
    assert_eq!(errors, vec![expected]);
    // surveyd stopped reading: the server's writes failed once the socket
    // buffers were full, long before the 30 s timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.hung_up.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the body is still read"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_refusal_whose_body_stalls_keeps_its_status_and_the_reason_so_far() {
    use std::io::{Read, Write};
    let server = raw_server(|stream| {
        stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
              Transfer-Encoding: chunked\r\n\r\n10\r\nstats.osrelease:\r\n",
        )?;
        // Then nothing more, until surveyd gives up and hangs up.
        let _ = stream.read(&mut [0u8; 1]);
        Ok(())
    });
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_timeout = 2\n");
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert_eq!(
        audited_errors(&install),
        vec!["collector answered HTTP 400: stats.osrelease:".to_string()]
    );
}

#[test]
fn the_real_collectors_refusal_reason_reaches_the_log_and_the_audit() {
    let backend = Backend::sqlite();
    let collector = Collector::start(&backend);
    let install = Install::new();
    // A path the collector does not serve: its 404 carries a text reason.
    install.write_config(
        &format!("http://{}/api/stats/v0/submit", collector.addr),
        "",
    );
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("collector answered HTTP 404: not found"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        audited_errors(&install),
        vec!["collector answered HTTP 404: not found".to_string()]
    );
    collector.stop();
}
