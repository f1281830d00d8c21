//! The vendor's commands through the real binary: `report` in its three
//! formats, `stats`, and `check-config` on good and bad files (exit 78,
//! message naming file and problem).

mod common;

use common::*;

fn two_installations(c: &Collector) {
    let a = surveyd_payload(
        "sha256",
        &sha256_hex("mid-a"),
        &sha256_hex("guid-a"),
        "10.0.1",
        12,
    );
    let b = surveyd_payload(
        "app-v1",
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
        "8.7.80",
        30,
    );
    assert_eq!(c.post(&a).status, 200);
    assert_eq!(c.post(&b).status, 200);
}

#[test]
fn report_prints_table_csv_and_json() {
    for_each_backend("report_formats", |backend| {
        let c = Collector::start(&backend);
        two_installations(&c);
        let table = run_cli(&c.config_path, &["report"]);
        assert!(table.status.success(), "{}", table.stderr);
        let lines: Vec<&str> = table.stdout.lines().collect();
        assert!(
            lines[0].starts_with("+--") && lines[0].ends_with("-+"),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("| uid "), "{}", lines[1]);
        let header: Vec<&str> = lines[1]
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(
            &header[..3],
            ["uid", "machine_id_sha256", "server_guid_sha256"]
        );
        assert_eq!(header[15], "flags");
        assert_eq!(lines.len(), 7, "{}", table.stdout);
        assert_eq!(lines[6], "2 rows in set");

        let csv = run_cli(&c.config_path, &["report", "--format", "csv"]);
        assert!(csv.status.success());
        let lines: Vec<&str> = csv.stdout.lines().collect();
        assert!(lines[0].starts_with(
            "uid,machine_id_sha256,server_guid_sha256,first_seen,last_update,usercnt_active,"
        ));
        assert_eq!(lines.len(), 3);

        let rows = c.rows();
        assert_eq!(rows.len(), 2);
        let versions: Vec<&str> = rows
            .iter()
            .map(|r| r["program_version"].as_str().unwrap())
            .collect();
        assert!(versions.contains(&"10.0.1") && versions.contains(&"8.7.80"));

        let bad = run_cli(&c.config_path, &["report", "--format", "xml"]);
        assert_eq!(bad.status.code(), Some(64), "usage error: {}", bad.stderr);
    });
}

#[test]
fn stats_counts_installations_versions_and_users() {
    for_each_backend("stats_counts", |backend| {
        let c = Collector::start(&backend);
        two_installations(&c);
        let out = run_cli(&c.config_path, &["stats"]);
        assert!(out.status.success(), "{}", out.stderr);
        let text = out.stdout;
        for want in [
            "installations seen in the last 24 hours: 2",
            "installations seen in the last 7 days:   2",
            "installations seen in the last 30 days:  2",
            "active users (installations seen in the last 30 days): 42",
            "| kopano-server | 10.0.1          |             1 |",
            "| Debian GNU/Linux 12 (bookworm) |             2 |",
        ] {
            assert!(
                text.contains(want),
                "{}: missing {want:?} in\n{text}",
                backend.name()
            );
        }
    });
}

#[test]
fn report_on_a_missing_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\n",
            dir.path().join("none.db").display().to_string()
        ),
    )
    .unwrap();
    let out = run_cli(&config, &["report"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(
        !dir.path().join("none.db").exists(),
        "report must not create a database"
    );
}

#[test]
fn check_config_accepts_a_good_file_and_prints_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:9000\"\ndatabase = \"postgres://collector:s3cret@127.0.0.1/surveys\"\n[rate_limit]\nburst = 5\n",
    )
    .unwrap();
    let out = run_cli(&config, &["check-config"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("listen = \"127.0.0.1:9000\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("burst = 5"));
    assert!(
        out.stdout.contains("max_body_bytes = 65536"),
        "defaults are shown"
    );
    assert!(
        !out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"),
        "password masked"
    );
}

#[test]
fn check_config_rejects_bad_files_with_exit_78_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    for (text, names) in [
        (
            "listen = \"127.0.0.1:8080\"\nlisten_addr = \"x\"\n",
            vec!["listen_addr", "line 2"],
        ),
        (
            "[rate_limit]\nper_second = -1.0\n",
            vec!["rate_limit.per_second"],
        ),
        ("listen = \"everywhere\"\n", vec!["listen", "everywhere"]),
        (
            "[rate_limit]\nburst = \"many\"\n",
            vec!["line 2", "rate_limit.burst"],
        ),
        (
            "max_body_bytes = \"big\"\n",
            vec!["line 1", "max_body_bytes"],
        ),
        (
            "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
            vec!["tls.cert", "/nonexistent/cert.pem"],
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = run_cli(&config, &["check-config"]);
        assert_eq!(out.status.code(), Some(78), "{text}: {}", out.stderr);
        assert!(
            out.stderr.contains(&config.display().to_string()),
            "names the file: {}",
            out.stderr
        );
        for name in names {
            assert!(
                out.stderr.contains(name),
                "{text}: {name} not in {}",
                out.stderr
            );
        }
    }
    let missing = run_cli(&dir.path().join("absent.toml"), &["check-config"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(missing.stderr.contains("absent.toml"), "{}", missing.stderr);
}
