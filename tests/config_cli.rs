//! `surveyd check-config` with the real binary: the server.cfg rules, the
//! real Kopano files, and errors that name file and line.

mod common;

use common::*;

fn check(config: &std::path::Path) -> std::process::Output {
    surveyd()
        .arg("-c")
        .arg(config)
        .arg("check-config")
        .output()
        .unwrap()
}

fn effective(out: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn real_kopano_server_cfg_loads_with_upstream_defaults() {
    let out = check(&kopano_fixture("server-2018.cfg"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "the real file gives no warnings");
    let settings = effective(&out);
    assert_eq!(
        settings["surveyclient_url"],
        "https://stats.kopano.io/api/stats/v1/submit"
    );
    assert_eq!(settings["surveyclient_interval"], "3600");
    assert_eq!(settings["surveyclient_ssl_verify"], "yes");
    assert_eq!(settings["user_plugin"], "db");
    assert_eq!(settings["attachment_storage"], "files");
    assert_eq!(settings["surveyclient_id_hash"], "app");

    let out = check(&kopano_fixture("server-2021.cfg"));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn ldap_cfg_include_resolves_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    let ldap = std::fs::read_to_string(kopano_fixture("ldap-2018.cfg")).unwrap();
    assert!(ldap.contains("!include /usr/share/kopano/ldap.openldap.cfg"));
    std::fs::create_dir(dir.path().join("share")).unwrap();
    let mut included = std::fs::read_to_string(kopano_fixture("ldap.openldap.cfg")).unwrap();
    included.push_str("surveyclient_interval = 77\n");
    std::fs::write(dir.path().join("share/ldap.openldap.cfg"), included).unwrap();
    std::fs::write(
        dir.path().join("ldap.cfg"),
        ldap.replace(
            "!include /usr/share/kopano/ldap.openldap.cfg",
            "!include share/ldap.openldap.cfg",
        ),
    )
    .unwrap();
    let out = check(&dir.path().join("ldap.cfg"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(effective(&out)["surveyclient_interval"], "77");
}

#[test]
fn server_cfg_rules_comments_env_later_key_and_trimming() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.cfg");
    std::fs::write(
        &cfg,
        "# surveyclient_interval = 5\n\
         surveyclient_interval = 10\n\
         \tsurveyclient_interval\t=  20 \t\r\n\
         surveyclient_url = $SURVEY_URL\n\
         surveyclient_omit = utsname   osrelease\n\
         not a setting line\n\
         some_other_kopano_key = whatever\n",
    )
    .unwrap();
    let out = surveyd()
        .arg("-c")
        .arg(&cfg)
        .arg("check-config")
        .env("SURVEY_URL", "http://127.0.0.1:8080/submit")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let settings = effective(&out);
    assert_eq!(
        settings["surveyclient_interval"], "20",
        "later key wins, trimmed"
    );
    assert_eq!(settings["surveyclient_url"], "http://127.0.0.1:8080/submit");
    assert_eq!(settings["surveyclient_omit"], "osrelease utsname");
    assert!(!stdout(&out).contains("some_other_kopano_key"));
}

#[test]
fn errors_name_file_and_line_and_exit_78() {
    let cases = [
        ("surveyclient_interval = 1h\n", "surveyclient_interval"),
        (
            "surveyclient_ssl_verify = maybe\n",
            "surveyclient_ssl_verify",
        ),
        ("surveyclient_url = ftp://x/\n", "surveyclient_url"),
        ("surveyclient_id_hash = md5\n", "surveyclient_id_hash"),
        ("surveyclient_omit = nonsense\n", "surveyclient_omit"),
        (
            "surveyclient_facts = shell:rm -rf /\n",
            "surveyclient_facts",
        ),
        (
            "surveyclient_url = $SURVEYD_TEST_UNSET_VARIABLE\n",
            "SURVEYD_TEST_UNSET_VARIABLE",
        ),
    ];
    for (line, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad.cfg");
        std::fs::write(&cfg, format!("# comment\nuser_plugin = db\n{line}")).unwrap();
        let out = check(&cfg);
        assert_eq!(out.status.code(), Some(78), "{line}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}:3", cfg.display())),
            "{line}: error names file:line: {err}"
        );
        assert!(err.contains(named), "{line}: error names {named}: {err}");
        assert_eq!(stdout(&out), "", "nothing printed on error");
    }
}

#[test]
fn include_cycles_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.cfg"), "!include b.cfg\n").unwrap();
    std::fs::write(dir.path().join("b.cfg"), "x = 1\n!include a.cfg\n").unwrap();
    let out = check(&dir.path().join("a.cfg"));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("b.cfg:2"), "{}", stderr(&out));

    let out = check(&dir.path().join("missing.cfg"));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("missing.cfg"), "{}", stderr(&out));
}

#[test]
fn unknown_surveyclient_key_warns_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.cfg");
    std::fs::write(&cfg, "surveyclient_intervall = 5\n").unwrap();
    let out = check(&cfg);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("surveyclient_intervall"), "{err}");
    assert!(err.contains("did you mean surveyclient_interval"), "{err}");
    assert!(err.contains("s.cfg:1"), "{err}");
    assert_eq!(effective(&out)["surveyclient_interval"], "3600");
}

#[test]
fn help_and_version_describe_the_program() {
    let out = surveyd().arg("--version").output().unwrap();
    assert_eq!(
        stdout(&out).trim(),
        concat!("surveyd ", env!("CARGO_PKG_VERSION"))
    );
    let out = surveyd().arg("--help").output().unwrap();
    let help = stdout(&out);
    for command in ["check-config", "preview", "send", "audit", "run", "reload"] {
        assert!(help.contains(command), "--help lists {command}");
    }
    let out = surveyd().args(["send", "--help"]).output().unwrap();
    assert!(stdout(&out).contains("audit log"));
}
