//! The whole chain with both real binaries: `surveyd send` over HTTPS to a
//! real `surveyd-collector` (SQLite, and PostgreSQL when available) lands
//! one row per installation, and no raw identifier reaches the wire's other
//! end, its database files or its logs.

mod common;

use common::*;

#[test]
fn surveyd_send_over_https_lands_a_row_in_the_real_collector() {
    for_each_backend("e2e_send", |backend| {
        let pki = pki(false);
        let install = Install::new();
        let (cert, key, ca) = (
            install.path("cert.pem"),
            install.path("key.pem"),
            install.path("ca.pem"),
        );
        std::fs::write(&cert, &pki.cert_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let extra = format!(
            "[rate_limit]\nenabled = false\n[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let collector = Collector::start_with(
            &backend,
            Options {
                extra: &extra,
                ..Options::default()
            },
        );
        let facts = install.path("facts.json");
        std::fs::write(
            &facts,
            r#"{"usercnt_active": 42, "usercnt_contact": 7, "usercnt_room": 2, "usercnt_equipment": 1, "usercnt_na_user": 3, "usercnt_nonactive": 6}"#,
        )
        .unwrap();
        install.write_config(
            &format!(
                "https://127.0.0.1:{}/api/stats/v1/submit",
                collector.addr.port()
            ),
            &format!(
                "surveyclient_facts = file:{}\nuser_plugin = ldap\nattachment_storage = files\n",
                facts.display()
            ),
        );
        for _ in 0..2 {
            let out = install
                .command(&["send"])
                .env("SSL_CERT_FILE", &ca)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}: {}", backend.name(), stderr(&out));
        }

        let rows = collector.rows();
        assert_eq!(
            rows.len(),
            1,
            "{}: one row per installation",
            backend.name()
        );
        let row = &rows[0];
        assert_eq!(
            row["machine_id_sha256"],
            systemd_app_specific(RAW_MACHINE_ID, APP_ID)
        );
        assert_eq!(
            row["server_guid_sha256"],
            systemd_app_specific(RAW_GUID, APP_ID)
        );
        assert_eq!(row["program_name"], "kopano-server");
        assert_eq!(row["program_version"], "8.7.80");
        assert_eq!(row["userplugin"], "ldap");
        assert_eq!(row["usercnt_active"], 42);
        assert_eq!(row["usercnt_contact"], 7);
        assert_eq!(row["usercnt_room"], 2);
        assert_eq!(row["usercnt_nonactive"], 6);
        assert_eq!(row["flags"], 2, "app-v1 ids");

        let (status, output) = collector.stop();
        assert!(status.success());
        assert_no_raw_ids("the collector's output", &output);
        assert_no_raw_ids("the audit log", install.audit_text().as_bytes());
        if let Some(db) = backend.sqlite_path() {
            for suffix in ["", "-wal", "-shm"] {
                let path = format!("{}{suffix}", db.display());
                if let Ok(bytes) = std::fs::read(&path) {
                    assert_no_raw_ids(&path, &bytes);
                }
            }
        }
    });
}

/// Values the collector would refuse (a tab in program_name, a 300-byte
/// program_version, an os-release name over the limit with a bidi
/// override) are fitted to the wire contract by surveyd before they are
/// audited: `check-config` warns, `send` warns and is accepted, and the
/// row holds exactly what the audit log says was sent.
#[test]
fn values_the_collector_would_refuse_are_fitted_before_they_are_audited_and_sent() {
    for_each_backend("e2e_fitted_values", |backend| {
        let collector = Collector::start(&backend);
        let install = Install::new();
        let facts = install.path("facts.json");
        let long_os = format!("Debian \u{202E}{}", "x".repeat(300));
        std::fs::write(
            &facts,
            serde_json::json!({"osrelease": long_os, "usercnt_active": 3}).to_string(),
        )
        .unwrap();
        let version = "9".repeat(300);
        install.write_config(
            &format!(
                "http://127.0.0.1:{}/api/stats/v1/submit",
                collector.addr.port()
            ),
            &format!(
                "surveyclient_program_name = kopano\tserver\n\
                 surveyclient_program_version = {version}\n\
                 surveyclient_facts = file:{}\n",
                facts.display()
            ),
        );
        let check = install.run(&["check-config"]);
        assert!(check.status.success(), "{}", stderr(&check));
        let warnings = stderr(&check);
        for key in ["surveyclient_program_name", "surveyclient_program_version"] {
            assert!(
                warnings.contains(&format!("warning: {key}: the value")),
                "check-config does not warn about {key}: {warnings}"
            );
        }

        let out = install.run(&["send"]);
        assert!(
            out.status.success(),
            "{}: a fitted report is accepted: {}",
            backend.name(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("program_version: the value"),
            "{}",
            stderr(&out)
        );
        let rows = collector.rows();
        assert_eq!(rows.len(), 1, "{}", backend.name());
        let row = &rows[0];
        assert_eq!(row["program_name"], "kopano server");
        assert_eq!(row["program_version"], "9".repeat(256));
        let os = row["osrelease"].as_str().unwrap();
        assert_eq!(os.len(), 256);
        assert!(
            os.starts_with("Debian x") && !os.contains('\u{202E}'),
            "{os:?}"
        );

        let audit = install.audit_text();
        let send: serde_json::Value = audit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == "send")
            .expect("a send line");
        let stats = &send["body"]["stats"];
        assert_eq!(stats["program_name"]["value"], row["program_name"]);
        assert_eq!(stats["program_version"]["value"], row["program_version"]);
        assert_eq!(stats["osrelease"]["value"], row["osrelease"]);
    });
}
