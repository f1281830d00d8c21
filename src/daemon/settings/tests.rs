//! The settings' tests: every key, every value parser, the check-config
//! rendering and its round trip, and real Kopano server.cfg files.

use super::*;
use crate::wire::SURVEYD_FIELD_NAMES as FIELD_NAMES;
use std::fs;

fn no_env(_: &str) -> Option<String> {
    None
}

fn kopano_testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kopano")
        .join(name)
}

fn from_text(text: &str) -> Result<Loaded, ConfigError> {
    Settings::from_cfg(&CfgFile::parse_str(text, Path::new("/etc/x.cfg"), &no_env)?)
}

fn settings(text: &str) -> Settings {
    from_text(text).unwrap_or_else(|e| panic!("{e}")).settings
}

/// The error message for `text`, checked to name its line.
fn error(text: &str, line: usize) -> String {
    let err = from_text(text).expect_err("config should be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("/etc/x.cfg:{line}")),
        "no location in: {msg}"
    );
    msg
}

#[test]
fn defaults_match_design() {
    let s = Settings::default();
    assert_eq!(s.url.to_string(), DEFAULT_URL);
    assert!(matches!(s.url, Endpoint::Https(_)));
    assert_eq!(s.interval, Duration::from_secs(3600));
    assert!(s.enabled());
    assert!(s.ssl_verify);
    assert_eq!(s.timeout, Duration::from_secs(30));
    assert_eq!(s.start_delay, Duration::from_secs(60));
    assert_eq!(s.error_delay, Duration::from_secs(60));
    assert_eq!(s.audit_log, Path::new("/var/log/surveyd/audit.log"));
    assert_eq!(s.audit_max_size, 16777216);
    assert_eq!(s.audit_keep, 10);
    assert_eq!(s.state_dir, Path::new("/var/lib/surveyd"));
    assert_eq!(s.machine_id_file, Path::new("/etc/machine-id"));
    assert_eq!(s.id_hash, IdScheme::App);
    assert_eq!(hex::encode(s.app_id), "187f157428b74898a629521121fa9f49");
    assert!(s.omit.is_empty() && s.facts.is_empty() && !s.bucket_counts);
    assert_eq!(
        (s.program_name, s.program_version, s.server_guid),
        (None, None, None)
    );
    assert_eq!((s.user_plugin, s.attachment_storage), (None, None));
    let m = s.mysql;
    assert_eq!(
        (m.host.as_str(), m.port, m.user.as_str()),
        ("localhost", 3306, "root")
    );
    assert_eq!(
        (m.password.as_str(), m.socket, m.database.as_str()),
        ("", None, "kopano")
    );
}

#[test]
fn empty_file_gives_defaults_without_warnings() {
    let loaded = from_text("").unwrap();
    assert_eq!(loaded.settings, Settings::default());
    assert!(loaded.warnings.is_empty());
}

#[test]
fn every_key_is_read() {
    let s = settings(
        "surveyclient_url = http://127.0.0.1:8080/submit\n\
         surveyclient_interval = 0\n\
         surveyclient_ssl_verify = off\n\
         surveyclient_timeout = 5\n\
         surveyclient_start_delay = 0\n\
         surveyclient_error_delay = 7\n\
         surveyclient_audit_log = /tmp/a.log\n\
         surveyclient_audit_max_size = 4096\n\
         surveyclient_audit_keep = 0\n\
         surveyclient_state_dir = /tmp/state\n\
         surveyclient_machine_id_file = /tmp/mid\n\
         surveyclient_id_hash = sha256\n\
         surveyclient_app_id = 00112233-4455-6677-8899-AABBCCDDEEFF\n\
         surveyclient_omit = osrelease  utsname\tusercnt_room\n\
         surveyclient_bucket_counts = TRUE\n\
         surveyclient_facts = kopano-mysql; file:/etc/facts\n\
         surveyclient_program_name = kopano-server\n\
         surveyclient_program_version = 8.7.0\n\
         surveyclient_server_guid = 0123456789abcdef0123456789abcdef\n\
         user_plugin = ldap\n\
         attachment_storage = s3\n\
         mysql_host = db.example\n\
         mysql_port = 3307\n\
         mysql_user = kopano\n\
         mysql_password = pw\n\
         mysql_socket = /run/mysqld/mysqld.sock\n\
         mysql_database = kc\n",
    );
    assert_eq!(
        s.url,
        Endpoint::Http(url::Url::parse("http://127.0.0.1:8080/submit").unwrap())
    );
    assert!(!s.enabled());
    assert!(!s.ssl_verify);
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert_eq!(s.start_delay, Duration::ZERO);
    assert_eq!(s.error_delay, Duration::from_secs(7));
    assert_eq!(s.audit_log, Path::new("/tmp/a.log"));
    assert_eq!((s.audit_max_size, s.audit_keep), (4096, 0));
    assert_eq!(s.state_dir, Path::new("/tmp/state"));
    assert_eq!(s.machine_id_file, Path::new("/tmp/mid"));
    assert_eq!(s.id_hash, IdScheme::Sha256);
    assert_eq!(hex::encode(s.app_id), "00112233445566778899aabbccddeeff");
    assert_eq!(
        s.omit.iter().collect::<Vec<_>>(),
        ["osrelease", "usercnt_room", "utsname"]
    );
    assert!(s.bucket_counts);
    assert_eq!(
        s.facts,
        [
            FactSource::KopanoMysql,
            FactSource::File("/etc/facts".into())
        ]
    );
    assert_eq!(s.program_name.as_deref(), Some("kopano-server"));
    assert_eq!(s.program_version.as_deref(), Some("8.7.0"));
    assert_eq!(
        s.server_guid.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(s.user_plugin.as_deref(), Some("ldap"));
    assert_eq!(s.attachment_storage.as_deref(), Some("s3"));
    assert_eq!(s.mysql.host, "db.example");
    assert_eq!(s.mysql.port, 3307);
    assert_eq!(s.mysql.user, "kopano");
    assert_eq!(s.mysql.password, "pw");
    assert_eq!(
        s.mysql.socket.as_deref(),
        Some(Path::new("/run/mysqld/mysqld.sock"))
    );
    assert_eq!(s.mysql.database, "kc");
}

#[test]
fn booleans_accept_every_documented_spelling_in_any_case() {
    for (word, expected) in [
        ("yes", true),
        ("YES", true),
        ("true", true),
        ("On", true),
        ("1", true),
        ("no", false),
        ("No", false),
        ("FALSE", false),
        ("off", false),
        ("0", false),
    ] {
        let s = settings(&format!("surveyclient_bucket_counts = {word}\n"));
        assert_eq!(s.bucket_counts, expected, "{word}");
    }
}

#[test]
fn boolean_garbage_is_an_error_not_a_default() {
    for word in ["y", "enabled", "", "2", "yes please"] {
        let msg = error(&format!("\nsurveyclient_ssl_verify = {word}\n"), 2);
        assert!(
            msg.contains("surveyclient_ssl_verify") && msg.contains("yes or no"),
            "{msg}"
        );
    }
}

#[test]
fn numbers_reject_units_signs_spaces_and_overflow() {
    for bad in [
        "1h",
        "-1",
        "+5",
        " ",
        "",
        "1 2",
        "3600.0",
        "0x10",
        "99999999999999999999999",
    ] {
        let msg = error(&format!("a = b\nsurveyclient_interval = {bad}\n"), 2);
        assert!(msg.contains("surveyclient_interval"), "{msg}");
    }
}

#[test]
fn number_error_reads_like_the_example_and_suggests_seconds() {
    let msg = error("x = 1\ny = 2\nsurveyclient_interval = 1h\n", 3);
    assert_eq!(
        msg,
        "surveyclient_interval: \"1h\" is not a number of seconds (at /etc/x.cfg:3); write 3600"
    );
    let msg = error("surveyclient_timeout = 2m 30s\n", 1);
    assert!(msg.ends_with("write 150"), "{msg}");
}

#[test]
fn durations_above_a_century_are_refused() {
    let msg = error(&format!("surveyclient_interval = {}\n", MAX_SECONDS + 1), 1);
    assert!(msg.contains("100 years"), "{msg}");
    assert_eq!(
        settings(&format!("surveyclient_interval = {MAX_SECONDS}\n"))
            .interval
            .as_secs(),
        MAX_SECONDS
    );
}

#[test]
fn timeout_and_error_delay_must_be_positive_but_start_delay_may_be_zero() {
    error("surveyclient_timeout = 0\n", 1);
    error("surveyclient_error_delay = 0\n", 1);
    assert_eq!(
        settings("surveyclient_start_delay = 0\n").start_delay,
        Duration::ZERO
    );
}

#[test]
fn interval_zero_disables_reporting() {
    assert!(!settings("surveyclient_interval = 0\n").enabled());
    assert!(settings("surveyclient_interval = 1\n").enabled());
}

#[test]
fn audit_max_size_below_4096_is_refused_and_suffixes_get_a_hint() {
    let msg = error("surveyclient_audit_max_size = 4095\n", 1);
    assert!(msg.contains("4096"), "{msg}");
    let msg = error("surveyclient_audit_max_size = 16M\n", 1);
    assert!(msg.ends_with("write 16777216"), "{msg}");
    assert_eq!(
        settings("surveyclient_audit_max_size = 4096\n").audit_max_size,
        4096
    );
}

#[test]
fn audit_keep_overflowing_u32_is_refused() {
    error("surveyclient_audit_keep = 4294967296\n", 1);
    assert_eq!(
        settings("surveyclient_audit_keep = 4294967295\n").audit_keep,
        u32::MAX
    );
}

#[test]
fn paths_must_be_absolute() {
    for key in [
        "surveyclient_audit_log",
        "surveyclient_state_dir",
        "surveyclient_machine_id_file",
    ] {
        let msg = error(&format!("{key} = relative/path\n"), 1);
        assert!(msg.contains("absolute"), "{msg}");
        error(&format!("{key} =\n"), 1);
    }
}

#[test]
fn url_accepts_https_http_and_unix_socket() {
    let s = settings("surveyclient_url = https://stats.example/api\n");
    assert!(matches!(&s.url, Endpoint::Https(u) if u.host_str() == Some("stats.example")));
    let s = settings("surveyclient_url = http://[::1]:8080/x\n");
    assert!(matches!(&s.url, Endpoint::Http(u) if u.port() == Some(8080)));
    let s = settings("surveyclient_url = unix:/run/surveyd/collector.sock\n");
    assert_eq!(
        s.url,
        Endpoint::Unix {
            socket: "/run/surveyd/collector.sock".into(),
            path: DEFAULT_SUBMIT_PATH.into()
        }
    );
    assert_eq!(s.url.to_string(), "unix:/run/surveyd/collector.sock");
}

#[test]
fn url_with_other_scheme_or_relative_socket_is_an_error() {
    for bad in [
        "ftp://x/y",
        "stats.kopano.io/api",
        "unix:run/x.sock",
        "unix:",
        "https://",
        "http://exa mple/",
        "",
        "file:///etc/passwd",
    ] {
        let msg = error(&format!("\n\nsurveyclient_url = {bad}\n"), 3);
        assert!(msg.starts_with("surveyclient_url:"), "{msg}");
    }
}

#[test]
fn id_hash_accepts_app_and_sha256_only() {
    assert_eq!(
        settings("surveyclient_id_hash = SHA256\n").id_hash,
        IdScheme::Sha256
    );
    let msg = error("surveyclient_id_hash = md5\n", 1);
    assert!(msg.contains("app or sha256"), "{msg}");
}

#[test]
fn app_id_accepts_plain_and_uuid_form_in_any_case() {
    let plain = settings("surveyclient_app_id = 00112233445566778899AABBCCDDEEFF\n").app_id;
    let uuid = settings("surveyclient_app_id = 00112233-4455-6677-8899-aabbccddeeff\n").app_id;
    assert_eq!(plain, uuid);
    assert_eq!(plain[0], 0x00);
    assert_eq!(plain[15], 0xff);
}

#[test]
fn app_id_refuses_wrong_length_bad_digits_and_misplaced_dashes() {
    for bad in [
        "187f157428b74898a629521121fa9f4",
        "187f157428b74898a629521121fa9f4900",
        "187f157428b74898a629521121fa9f4g",
        "187f1574-28b7-4898-a629-521121fa9f4-9",
        "187f15742-8b7-4898-a629-521121fa9f49",
        "",
    ] {
        error(&format!("surveyclient_app_id = {bad}\n"), 1);
    }
}

#[test]
fn omit_accepts_field_names_and_lists_valid_ones_on_error() {
    let s = settings("surveyclient_omit = userplugin userplugin attachment_storage\n");
    assert_eq!(s.omit.len(), 2);
    let msg = error("\nsurveyclient_omit = osrelease hostname\n", 2);
    assert!(msg.contains("\"hostname\""), "{msg}");
    for name in FIELD_NAMES {
        assert!(msg.contains(name), "{name} missing from {msg}");
    }
}

#[test]
fn facts_syntax_parses_commands_files_and_kopano_mysql() {
    let s = settings("surveyclient_facts = command:/usr/bin/kopano-facts --json  -v ;file:/etc/f.txt; kopano-mysql;\n");
    assert_eq!(
        s.facts,
        [
            FactSource::Command {
                argv: vec!["/usr/bin/kopano-facts".into(), "--json".into(), "-v".into()]
            },
            FactSource::File("/etc/f.txt".into()),
            FactSource::KopanoMysql,
        ]
    );
}

#[test]
fn facts_refuse_relative_paths_and_unknown_sources() {
    for bad in [
        "command:kopano-facts",
        "command:",
        "file:facts.txt",
        "mysql",
        "kopano-mysql extra",
        "shell:/bin/x",
    ] {
        let msg = error(&format!("surveyclient_facts = kopano-mysql; {bad}\n"), 1);
        assert!(msg.contains(&format!("{bad:?}")), "{msg}");
    }
}

#[test]
fn empty_static_facts_and_server_cfg_keys_are_none() {
    let s = settings(
        "surveyclient_program_name =\nuser_plugin =\nattachment_storage = \nmysql_socket =\n",
    );
    assert_eq!(
        (s.program_name, s.user_plugin, s.attachment_storage),
        (None, None, None)
    );
    assert_eq!(s.mysql.socket, None);
}

#[test]
fn empty_mysql_port_means_default_but_garbage_is_an_error() {
    assert_eq!(settings("mysql_port =\n").mysql.port, 3306);
    error("mysql_port = 70000\n", 1);
    error("mysql_port = abc\n", 1);
}

#[test]
fn mysql_ssl_ca_is_an_absolute_path_and_empty_means_no_tls() {
    let s = settings("surveyclient_mysql_ssl_ca = /etc/mysql/ca.pem\n");
    assert_eq!(
        s.mysql.ssl_ca.as_deref(),
        Some(Path::new("/etc/mysql/ca.pem"))
    );
    assert_eq!(settings("surveyclient_mysql_ssl_ca =\n").mysql.ssl_ca, None);
    assert_eq!(Settings::default().mysql.ssl_ca, None);
    let msg = error("\nsurveyclient_mysql_ssl_ca = ca.pem\n", 2);
    assert!(
        msg.starts_with("surveyclient_mysql_ssl_ca:") && msg.contains("absolute"),
        "{msg}"
    );
    // A misspelling is caught like every other surveyclient_ key.
    let loaded = from_text("surveyclient_mysql_ssl_cafile = /x\n").unwrap();
    assert!(
        loaded.warnings[0].ends_with("did you mean surveyclient_mysql_ssl_ca?"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn a_value_over_the_length_limit_is_an_error_naming_file_line() {
    let long = format!("https://stats.example/{}", "a".repeat(MAX_VALUE_BYTES));
    let msg = error(&format!("\nsurveyclient_url = {long}\n"), 2);
    assert!(
        msg.starts_with("surveyclient_url:") && msg.contains("limit of 4096"),
        "{msg}"
    );
    assert!(msg.len() < 400, "the value is not quoted whole: {msg}");
    let facts = format!(
        "surveyclient_facts = file:/{}\n",
        "f".repeat(MAX_VALUE_BYTES)
    );
    error(&facts, 1);
    let password = format!("mysql_password = {}\n", "s3cret".repeat(1000));
    let msg = error(&password, 1);
    assert!(!msg.contains("s3cret"), "{msg}");
    let fits = format!(
        "surveyclient_program_name = {}\n",
        "p".repeat(MAX_VALUE_BYTES)
    );
    assert!(settings(&fits).program_name.is_some());
}

#[test]
fn effective_shows_control_characters_escaped_on_one_line() {
    let env = |name: &str| {
        (name == "NAME").then(|| "kopano\nsurveyclient_interval = 0\r\u{2028}".to_string())
    };
    let cfg = CfgFile::parse_str(
        "surveyclient_program_name = $NAME\n",
        Path::new("x.cfg"),
        &env,
    )
    .unwrap();
    let s = Settings::from_cfg(&cfg).unwrap().settings;
    let effective = s.effective();
    let name = &effective
        .iter()
        .find(|(k, _)| *k == "surveyclient_program_name")
        .unwrap()
        .1;
    assert_eq!(name, "kopano\\nsurveyclient_interval = 0\\r\\u{2028}");
    assert_eq!(
        escape_controls(r"C:\path\tab"),
        r"C:\path\tab",
        "backslashes are left alone"
    );
}

#[test]
fn later_key_wins_for_settings() {
    let s = settings("surveyclient_interval = 60\nsurveyclient_interval = 120\n");
    assert_eq!(s.interval, Duration::from_secs(120));
}

#[test]
fn misspelt_surveyclient_key_warns_with_location_and_suggestion() {
    let loaded = from_text("a = 1\nb = 2\nsurveyclient_intervall = 60\n").unwrap();
    assert_eq!(
        loaded.warnings,
        ["unknown key surveyclient_intervall at /etc/x.cfg:3; did you mean surveyclient_interval?"]
    );
    // The misspelt key has no effect.
    assert_eq!(loaded.settings.interval, Duration::from_secs(3600));
    let loaded = from_text("SurveyClient_SSL_Verify = no\n").unwrap();
    assert!(
        loaded.warnings[0].ends_with("did you mean surveyclient_ssl_verify?"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn an_unknown_key_with_control_characters_is_shown_escaped() {
    let loaded = from_text("surveyclient_x\u{1b}[2J = 1\n").unwrap();
    assert!(
        loaded.warnings[0].starts_with("unknown key surveyclient_x\\u{1b}[2J at"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn other_unknown_keys_pass_silently() {
    let loaded =
        from_text("server_listen = *:236\nthreads = 8\nsurveyclientinterval = 1\n").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn file_warnings_are_passed_on() {
    let loaded = from_text("garbage line\n").unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("/etc/x.cfg:1"));
}

#[test]
fn effective_lists_known_keys_in_order_and_masks_password() {
    let s = settings("mysql_password = hunter2\n");
    let keys: Vec<_> = s.effective().iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, KNOWN_KEYS);
    let effective = s.effective();
    let password = effective
        .iter()
        .find(|(k, _)| *k == "mysql_password")
        .unwrap();
    assert_eq!(password.1, "********");
    assert!(!format!("{effective:?}").contains("hunter2"));
    assert!(!format!("{s:?}").contains("hunter2"));
    let empty = Settings::default().effective();
    assert_eq!(
        empty
            .iter()
            .find(|(k, _)| *k == "mysql_password")
            .unwrap()
            .1,
        ""
    );
}

#[test]
fn effective_renders_defaults_as_documented() {
    let effective = Settings::default().effective();
    let get = |key: &str| effective.iter().find(|(k, _)| *k == key).unwrap().1.clone();
    assert_eq!(get("surveyclient_url"), DEFAULT_URL);
    assert_eq!(get("surveyclient_interval"), "3600");
    assert_eq!(get("surveyclient_ssl_verify"), "yes");
    assert_eq!(
        get("surveyclient_app_id"),
        "187f157428b74898a629521121fa9f49"
    );
    assert_eq!(get("surveyclient_bucket_counts"), "no");
    assert_eq!(get("surveyclient_facts"), "");
}

fn round_trip(s: &Settings) -> Settings {
    let text: String = s
        .effective()
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    settings(&text)
}

#[test]
fn effective_output_parses_back_to_the_same_settings() {
    assert_eq!(round_trip(&Settings::default()), Settings::default());
    let s = settings(
        "surveyclient_url = unix:/run/c.sock\nsurveyclient_interval = 0\nsurveyclient_ssl_verify = 0\n\
         surveyclient_app_id = 00112233-4455-6677-8899-aabbccddeeff\nsurveyclient_omit = utsname osrelease\n\
         surveyclient_facts = command:/bin/f a  b; file:/x;kopano-mysql\n\
         surveyclient_id_hash = sha256\nuser_plugin = ldap\nmysql_port = 1\nmysql_socket = /s\n\
         surveyclient_mysql_ssl_ca = /etc/mysql/ca.pem\n",
    );
    assert_eq!(round_trip(&s), s);
}

#[test]
fn effective_output_never_shows_a_static_server_guid() {
    let s = settings("surveyclient_server_guid = 0A1B2C3D4E5F60718293A4B5C6D7E8F9\n");
    let shown: Vec<_> = s.effective();
    let guid = shown
        .iter()
        .find(|(k, _)| *k == "surveyclient_server_guid")
        .unwrap();
    assert_eq!(guid.1, "(set, not shown)");
    assert!(!format!("{shown:?}").contains("0A1B2C3D"));
}

#[test]
fn real_kopano_server_2018_cfg_gives_its_plugin_storage_and_mysql_settings() {
    let path = kopano_testdata("server-2018.cfg");
    let loaded = Settings::load(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = loaded.settings;
    assert_eq!(s.user_plugin.as_deref(), Some("db"));
    assert_eq!(s.attachment_storage.as_deref(), Some("files"));
    assert_eq!(s.mysql, MysqlSettings::default());
    // The 2018 file predates the survey options, so upstream's defaults
    // apply: every surveyclient_* setting is ours by default.
    let defaults = Settings {
        user_plugin: s.user_plugin.clone(),
        attachment_storage: s.attachment_storage.clone(),
        ..Settings::default()
    };
    assert_eq!(s, defaults);
    assert!(s.enabled());
}

#[test]
fn real_kopano_server_2021_cfg_leaves_plugin_unset() {
    let path = kopano_testdata("server-2021.cfg");
    let loaded = Settings::load(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.settings, Settings::default());
}

#[test]
fn server_cfg_with_survey_options_appended_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = fs::read_to_string(kopano_testdata("server-2018.cfg")).unwrap();
    text.push_str("surveyclient_interval\t= 0\nsurveyclient_ssl_verify = no \n");
    let path = dir.path().join("server.cfg");
    fs::write(&path, text).unwrap();
    let s = Settings::load(&path).unwrap().settings;
    assert!(!s.enabled());
    assert!(!s.ssl_verify);
}

#[test]
fn env_substitution_feeds_settings() {
    let env = |name: &str| (name == "SURVEY_URL").then(|| "unix:/run/s.sock".to_string());
    let cfg =
        CfgFile::parse_str("surveyclient_url = $SURVEY_URL\n", Path::new("x.cfg"), &env).unwrap();
    let s = Settings::from_cfg(&cfg).unwrap().settings;
    assert_eq!(s.url.to_string(), "unix:/run/s.sock");
}
