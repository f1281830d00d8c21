use super::*;
use std::fs;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> CfgFile {
    CfgFile::parse_str(text, Path::new("/nonexistent/test.cfg"), &no_env).unwrap()
}

fn value<'a>(cfg: &'a CfgFile, key: &str) -> &'a str {
    &cfg.get(key)
        .unwrap_or_else(|| panic!("{key} missing"))
        .value
}

fn kopano_testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kopano")
        .join(name)
}

#[test]
fn splits_at_first_equals_and_trims_space_tab_cr() {
    let cfg = parse("a = b=c\n\tkey\t=\t two words \t\r\nempty =\n");
    assert_eq!(value(&cfg, "a"), "b=c");
    assert_eq!(value(&cfg, "key"), "two words");
    assert_eq!(value(&cfg, "empty"), "");
    assert!(cfg.warnings().is_empty());
}

#[test]
fn quotes_and_hashes_inside_values_are_kept() {
    let cfg = parse("a = \"quoted\" # not a comment\nb='x'\n");
    assert_eq!(value(&cfg, "a"), "\"quoted\" # not a comment");
    assert_eq!(value(&cfg, "b"), "'x'");
}

#[test]
fn hash_in_first_column_is_a_comment() {
    let cfg = parse("#a = 1\n# b = 2\n#!include nowhere\nc = 3\n");
    assert!(cfg.get("a").is_none() && cfg.get("#a").is_none());
    assert_eq!(cfg.entries().len(), 1);
    assert!(cfg.warnings().is_empty());
}

// Upstream checks only the first byte for `#`, so an indented `# x = 1`
// is the key "# x". The real Kopano files have no indented lines, so being
// faithful costs nothing there and keeps every file meaning what it meant
// to kopano-server; a warning points out the surprise.
#[test]
fn indented_hash_is_not_a_comment_and_warns() {
    let cfg = parse("  # x = 1\n\t# just text\n");
    assert_eq!(value(&cfg, "# x"), "1");
    assert_eq!(cfg.warnings().len(), 2);
    assert!(
        cfg.warnings()[0].contains("test.cfg:1"),
        "{:?}",
        cfg.warnings()
    );
    assert!(
        cfg.warnings()[1].contains("test.cfg:2"),
        "{:?}",
        cfg.warnings()
    );
    assert!(cfg.warnings()[1].contains("first column"));
}

#[test]
fn blank_lines_are_silent_and_lines_without_equals_warn_with_location() {
    let cfg = parse("\n   \n\t\r\nno equals here\nk = v\n");
    assert_eq!(cfg.warnings().len(), 1, "{:?}", cfg.warnings());
    assert!(cfg.warnings()[0].starts_with("/nonexistent/test.cfg:4:"));
    assert_eq!(value(&cfg, "k"), "v");
}

#[test]
fn empty_key_is_ignored_with_warning() {
    let cfg = parse(" = v\n");
    assert!(cfg.entries().is_empty());
    assert!(cfg.warnings()[0].contains("test.cfg:1"));
}

#[test]
fn later_key_wins_and_all_entries_are_kept() {
    let cfg = parse("k = first\nother = x\nk = second\n");
    assert_eq!(value(&cfg, "k"), "second");
    assert_eq!(cfg.get("k").unwrap().location.line, 3);
    let all: Vec<_> = cfg.entries().iter().map(|e| e.value.as_str()).collect();
    assert_eq!(all, ["first", "x", "second"]);
}

#[test]
fn location_displays_as_file_colon_line() {
    let cfg = parse("\n\nk = v\n");
    assert_eq!(
        cfg.get("k").unwrap().location.to_string(),
        "/nonexistent/test.cfg:3"
    );
}

#[test]
fn dollar_value_comes_from_environment() {
    let env = |name: &str| (name == "DB_PASS").then(|| "s3cret".to_string());
    let cfg = CfgFile::parse_str("pw = $DB_PASS\nplain = a$b\n", Path::new("x.cfg"), &env).unwrap();
    assert_eq!(value(&cfg, "pw"), "s3cret");
    assert_eq!(value(&cfg, "plain"), "a$b");
}

#[test]
fn unset_environment_variable_is_an_error_naming_file_line_and_variable() {
    let err = CfgFile::parse_str(
        "\npw = $NOT_SET_ANYWHERE\n",
        Path::new("/etc/s.cfg"),
        &no_env,
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::UnsetVariable { .. }));
    let msg = err.to_string();
    assert!(msg.contains("/etc/s.cfg:2"), "{msg}");
    assert!(msg.contains("NOT_SET_ANYWHERE"), "{msg}");
    assert_eq!(err.location().unwrap().line, 2);
}

#[test]
fn process_env_refuses_names_the_os_cannot_hold() {
    assert_eq!(process_env(""), None);
    assert_eq!(process_env("A=B"), None);
    assert_eq!(process_env("A\0B"), None);
    assert!(process_env("PATH").is_some());
}

#[test]
fn unknown_directive_warns_and_propmap_is_ignored() {
    let cfg = parse("!frobnicate x\n!propmap /does/not/exist.cfg\nk = v\n");
    assert_eq!(cfg.warnings().len(), 1, "{:?}", cfg.warnings());
    assert!(cfg.warnings()[0].contains("test.cfg:1"));
    assert!(cfg.warnings()[0].contains("!frobnicate"));
    assert_eq!(cfg.files().len(), 1);
}

#[test]
fn include_is_relative_to_including_file_and_spliced_in_order() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(
        dir.path().join("main.cfg"),
        "k = before\n!include sub/inc.cfg\nafter = 1\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("sub/inc.cfg"),
        "k = included\n!include deeper.cfg\n",
    )
    .unwrap();
    fs::write(dir.path().join("sub/deeper.cfg"), "deep = yes\n").unwrap();
    let cfg = CfgFile::load_with_env(&dir.path().join("main.cfg"), &no_env).unwrap();
    assert_eq!(value(&cfg, "k"), "included");
    assert_eq!(value(&cfg, "deep"), "yes");
    let keys: Vec<_> = cfg.entries().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["k", "k", "deep", "after"]);
    let inc = &cfg.get("k").unwrap().location;
    assert!(inc.file.ends_with("sub/inc.cfg") && inc.line == 1, "{inc}");
    assert_eq!(cfg.files().len(), 3);
}

#[test]
fn parse_str_resolves_includes_against_origin_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("inc.cfg"), "x = 1\n").unwrap();
    let cfg = CfgFile::parse_str(
        "!include inc.cfg\n",
        &dir.path().join("virtual.cfg"),
        &no_env,
    )
    .unwrap();
    assert_eq!(value(&cfg, "x"), "1");
}

#[test]
fn include_cycle_is_an_error_naming_file_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.cfg"), "x = 1\n!include b.cfg\n").unwrap();
    fs::write(dir.path().join("b.cfg"), "\n\n!include a.cfg\n").unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("a.cfg"), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::IncludeCycle { .. }), "{err}");
    assert!(err.to_string().contains("b.cfg:3"), "{err}");
}

#[test]
fn file_including_itself_is_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.cfg"), "!include ./a.cfg\n").unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("a.cfg"), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::IncludeCycle { .. }), "{err}");
    assert!(err.to_string().contains("a.cfg:1"), "{err}");
}

#[test]
fn same_file_included_twice_is_an_error_naming_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.cfg"), "!include c.cfg\n!include b.cfg\n").unwrap();
    // Reached through a different spelling: identity is the real path.
    fs::write(
        dir.path().join("b.cfg"),
        "!include ../{}/c.cfg\n".replace("{}", dir.path().file_name().unwrap().to_str().unwrap()),
    )
    .unwrap();
    fs::write(dir.path().join("c.cfg"), "x = 1\n").unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("a.cfg"), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::IncludedTwice { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("b.cfg:1"), "{msg}");
    assert!(msg.contains("a.cfg:1"), "{msg}");
}

#[test]
fn missing_include_names_line_path_and_os_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.cfg"), "k = v\n!include missing.cfg\n").unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("a.cfg"), &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("a.cfg:2") && msg.contains("missing.cfg"),
        "{msg}"
    );
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn include_without_path_is_an_error() {
    let err = CfgFile::parse_str("!include\t \n", Path::new("x.cfg"), &no_env).unwrap_err();
    assert!(
        matches!(err, ConfigError::IncludeWithoutPath { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("x.cfg:1"));
}

#[test]
fn including_a_directory_or_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for target in [".", "/dev/zero"] {
        let err = CfgFile::parse_str(
            &format!("!include {target}\n"),
            &dir.path().join("x.cfg"),
            &no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}

/// `chain/f0.cfg` includes `f1.cfg`, ... up to `f{n}.cfg`, which sets a key.
fn include_chain(dir: &Path, n: usize) -> PathBuf {
    for i in 0..n {
        fs::write(
            dir.join(format!("f{i}.cfg")),
            format!("k{i} = {i}\n!include f{}.cfg\n", i + 1),
        )
        .unwrap();
    }
    fs::write(dir.join(format!("f{n}.cfg")), "last = yes\n").unwrap();
    dir.join("f0.cfg")
}

#[test]
fn includes_nest_up_to_the_limit_and_one_more_is_an_error_naming_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = include_chain(dir.path(), MAX_INCLUDE_DEPTH);
    let cfg = CfgFile::load_with_env(&main, &no_env).unwrap();
    assert_eq!(value(&cfg, "last"), "yes");

    let dir = tempfile::tempdir().unwrap();
    let main = include_chain(dir.path(), MAX_INCLUDE_DEPTH + 1);
    let err = CfgFile::load_with_env(&main, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::IncludeTooDeep { .. }), "{err}");
    let msg = err.to_string();
    let culprit = format!("f{}.cfg:2", MAX_INCLUDE_DEPTH);
    assert!(msg.contains(&culprit), "{msg}");
    assert!(msg.contains("more than 64 levels"), "{msg}");
    assert_eq!(err.location().unwrap().line, 2);
}

#[test]
fn a_config_file_or_include_over_the_size_limit_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    // Sparse: claims 4 GiB without using the disk.
    let huge = dir.path().join("huge.cfg");
    fs::File::create(&huge).unwrap().set_len(4 << 30).unwrap();
    let err = CfgFile::load_with_env(&huge, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("larger than the limit of 1048576 bytes"),
        "{err}"
    );
    fs::write(dir.path().join("main.cfg"), "a = 1\n!include huge.cfg\n").unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("main.cfg"), &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("main.cfg:2") && msg.contains("1048576"),
        "{msg}"
    );
}

#[test]
fn includes_together_are_bounded_too() {
    let dir = tempfile::tempdir().unwrap();
    let files = (MAX_TOTAL_BYTES / MAX_FILE_BYTES) as usize + 1;
    let mut main = String::new();
    let filler = "#".repeat(MAX_FILE_BYTES as usize - 1) + "\n";
    for i in 0..files {
        fs::write(dir.path().join(format!("part{i}.cfg")), &filler).unwrap();
        main.push_str(&format!("!include part{i}.cfg\n"));
    }
    fs::write(dir.path().join("main.cfg"), &main).unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("main.cfg"), &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::TooMuchConfig { .. }), "{msg}");
    assert!(
        msg.contains("main.cfg:") && msg.contains("16777216"),
        "{msg}"
    );
}

#[test]
fn a_symlinked_config_or_include_is_followed_to_a_regular_file_only() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("real.cfg"), "k = from-target\n").unwrap();
    std::os::unix::fs::symlink("real.cfg", dir.path().join("server.cfg")).unwrap();
    let cfg = CfgFile::load_with_env(&dir.path().join("server.cfg"), &no_env).unwrap();
    assert_eq!(value(&cfg, "k"), "from-target");

    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("fifo", dir.path().join("to-fifo.cfg")).unwrap();
    fs::write(dir.path().join("main.cfg"), "!include to-fifo.cfg\n").unwrap();
    let err = CfgFile::load_with_env(&dir.path().join("main.cfg"), &no_env).unwrap_err();
    assert!(
        err.to_string().contains("is a FIFO, not a regular file"),
        "{err}"
    );
    let err = CfgFile::load_with_env(&fifo, &no_env).unwrap_err();
    assert!(err.to_string().contains("is a FIFO"), "{err}");
}

#[test]
fn missing_file_error_names_path_and_os_error() {
    let err = CfgFile::load(Path::new("/nonexistent/surveyd.cfg")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/surveyd.cfg"), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert!(err.location().is_none());
}

#[test]
fn invalid_utf8_is_decoded_lossily_with_warning_but_not_in_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.cfg");
    fs::write(&path, b"# Gr\xfc\xdfe\nname = M\xfcller\n").unwrap();
    let cfg = CfgFile::load_with_env(&path, &no_env).unwrap();
    assert_eq!(value(&cfg, "name"), "M\u{fffd}ller");
    assert_eq!(cfg.warnings().len(), 1);
    assert!(
        cfg.warnings()[0].contains("latin1.cfg:2"),
        "{:?}",
        cfg.warnings()
    );
}

#[test]
fn real_kopano_server_2018_cfg_loads_with_upstream_values() {
    let cfg = CfgFile::load(&kopano_testdata("server-2018.cfg")).unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    // The README counts 89 active settings.
    assert_eq!(cfg.entries().len(), 89);
    assert_eq!(value(&cfg, "server_listen"), "*:236");
    assert_eq!(value(&cfg, "threads"), "8"); // tabs on both sides of `=`
    assert_eq!(value(&cfg, "attachment_storage"), "files"); // trailing space
    assert_eq!(value(&cfg, "hide_system"), "yes"); // trailing space
    assert_eq!(value(&cfg, "mysql_password"), ""); // `= ` and nothing else
    assert_eq!(
        value(&cfg, "server_ssl_ciphers"),
        "ALL:!LOW:!SSLv2:!EXP:!aNULL"
    );
    assert_eq!(value(&cfg, "user_plugin"), "db");
    assert_eq!(cfg.get("user_plugin").unwrap().location.line, 344);
}

#[test]
fn real_kopano_server_2021_cfg_loads_with_its_two_settings() {
    let cfg = CfgFile::load(&kopano_testdata("server-2021.cfg")).unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    let keys: Vec<_> = cfg.entries().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["server_listen", "local_admin_users"]);
    assert_eq!(value(&cfg, "server_listen"), "*%lo:236");
    assert_eq!(value(&cfg, "local_admin_users"), "root kopano");
}

#[test]
fn real_propmap_file_parses_hex_keys() {
    let cfg = CfgFile::load(&kopano_testdata("ldap.propmap.cfg")).unwrap();
    assert_eq!(value(&cfg, "0x67B3101E"), "kopanoEnabledFeatures");
    assert_eq!(value(&cfg, "0x6788001E"), "");
}

/// ldap-2018.cfg includes `/usr/share/kopano/ldap.openldap.cfg`, an
/// absolute path, so the test copies both into a temp dir and points the
/// include at the copy. Upstream's ldap.openldap.cfg has every setting
/// commented out (its only active line is `!propmap`), so the copy gets
/// one appended line to prove its keys arrive, in order, and that the
/// including file's later `ldap_host` overrides it as upstream intends.
fn ldap_with_relative_include(ldap_file: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ldap = fs::read_to_string(kopano_testdata(ldap_file)).unwrap();
    let absolute = "!include /usr/share/kopano/ldap.openldap.cfg";
    assert!(ldap.contains(absolute));
    let ldap = ldap.replacen(absolute, "!include openldap/ldap.openldap.cfg", 1);
    fs::write(dir.path().join("ldap.cfg"), ldap).unwrap();
    fs::create_dir(dir.path().join("openldap")).unwrap();
    let mut included = fs::read_to_string(kopano_testdata("ldap.openldap.cfg")).unwrap();
    included.push_str("ldap_host = from-included-file\nldap_only_in_include = 1\n");
    fs::write(dir.path().join("openldap/ldap.openldap.cfg"), included).unwrap();
    let main = dir.path().join("ldap.cfg");
    (dir, main)
}

#[test]
fn real_kopano_ldap_2018_cfg_reads_its_include() {
    let (_dir, main) = ldap_with_relative_include("ldap-2018.cfg");
    let cfg = CfgFile::load_with_env(&main, &no_env).unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    assert_eq!(cfg.files().len(), 2);
    let from_include = cfg.get("ldap_only_in_include").unwrap();
    assert_eq!(from_include.value, "1");
    assert!(from_include
        .location
        .file
        .ends_with("openldap/ldap.openldap.cfg"));
    // ldap_host = localhost at line 13 comes after the include at line 9.
    let host = cfg.get("ldap_host").unwrap();
    assert_eq!((host.value.as_str(), host.location.line), ("localhost", 13));
    let hosts: Vec<_> = cfg
        .entries()
        .iter()
        .filter(|e| e.key == "ldap_host")
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(hosts, ["from-included-file", "localhost"]);
    assert_eq!(value(&cfg, "ldap_bind_user"), "");
}

#[test]
fn real_kopano_ldap_2021_cfg_reads_its_include() {
    let (_dir, main) = ldap_with_relative_include("ldap-2021.cfg");
    let cfg = CfgFile::load_with_env(&main, &no_env).unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    assert_eq!(value(&cfg, "ldap_only_in_include"), "1");
    assert_eq!(value(&cfg, "ldap_uri"), "");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn config_text() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "=",
            "#",
            "!include ",
            "!propmap ",
            "!",
            "$",
            "$HOME",
            "$UNSET_X",
            "\n",
            "\r",
            "\t",
            " ",
            "a.cfg",
            "b.cfg",
            "sub/",
            "../",
            "/",
            ".",
            "surveyclient_interval",
            "surveyclient_url",
            "key",
            "1",
            "ü",
            "\u{0}",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_bytes_load_without_panic(a in prop::collection::vec(any::<u8>(), 0..512),
                                               b in prop::collection::vec(any::<u8>(), 0..128)) {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("a.cfg"), &a).unwrap();
            fs::write(dir.path().join("b.cfg"), &b).unwrap();
            let _ = CfgFile::load(&dir.path().join("a.cfg"));
            let _ = crate::daemon::settings::Settings::load(&dir.path().join("a.cfg"));
        }

        #[test]
        fn arbitrary_config_text_loads_without_panic(a in config_text(), b in config_text()) {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("sub")).unwrap();
            fs::write(dir.path().join("a.cfg"), &a).unwrap();
            fs::write(dir.path().join("b.cfg"), &b).unwrap();
            fs::write(dir.path().join("sub/a.cfg"), &b).unwrap();
            let _ = CfgFile::load(&dir.path().join("a.cfg"));
            let _ = crate::daemon::settings::Settings::load(&dir.path().join("a.cfg"));
        }
    }
}
