//! Facts: what a report says about this machine, gathered from the machine
//! id file, os-release, uname, the settings, the state dir (a server GUID
//! generated once) and the admin's extra sources (`surveyclient_facts`; the
//! `kopano-mysql` one lives in `kopano_mysql`).
//!
//! A source that fails is logged and its fields are left out; nothing is
//! ever made up. Fields named in `surveyclient_omit` are not even read.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use tracing::warn;

use crate::payload::{field_spec, FactValue, Facts, FieldType};
use crate::privacy::RawId;
use crate::settings::{FactSource, Settings};

/// Name of the file in the state dir that keeps the generated server GUID.
pub const SERVER_GUID_FILE: &str = "server-guid";

/// Largest output accepted from a fact source; more is a broken source.
const MAX_SOURCE_OUTPUT: usize = 64 * 1024;

/// Gathers every fact the settings allow. `os_root` is `/` except in tests,
/// which point it at a directory holding their own `etc/os-release`.
pub async fn collect(settings: &Settings, os_root: &Path) -> Facts {
    let wanted = |name: &str| !settings.omit.contains(name);
    let mut facts = Facts::default();

    if wanted("machine_id_hash") {
        facts.machine_id = read_machine_id(&settings.machine_id_file);
    }
    if wanted("osrelease") {
        if let Some(name) = os_pretty_name(os_root) {
            facts
                .values
                .insert("osrelease".into(), FactValue::Text(name));
        } else {
            warn!("no os-release, lsb-release or distribution release file found; osrelease is left out");
        }
    }
    if wanted("utsname") {
        match nix::sys::utsname::uname() {
            Ok(uts) => {
                let text = format!(
                    "{} {} {}",
                    uts.sysname().to_string_lossy(),
                    uts.machine().to_string_lossy(),
                    uts.release().to_string_lossy()
                );
                facts.values.insert("utsname".into(), FactValue::Text(text));
            }
            Err(err) => warn!("uname failed ({err}); utsname is left out"),
        }
    }

    let mut source_guid = None;
    for source in &settings.facts {
        let Some(found) = read_source(source, settings).await else {
            continue;
        };
        for (name, value) in found.values {
            if wanted(&name) {
                facts.values.insert(name, value);
            }
        }
        if found.server_guid.is_some() {
            source_guid = found.server_guid;
        }
    }

    let statics = [
        ("program_name", &settings.program_name),
        ("program_version", &settings.program_version),
        ("userplugin", &settings.user_plugin),
        ("attachment_storage", &settings.attachment_storage),
    ];
    for (name, value) in statics {
        if let (Some(value), true) = (value, wanted(name)) {
            facts
                .values
                .insert(name.into(), FactValue::Text(value.clone()));
        }
    }

    if wanted("server_guid_hash") {
        // With kopano-mysql the database holds the installation's GUID; a
        // generated one in its place (database down, row missing) would
        // make the collector count a second installation.
        let database_owns_guid = settings.facts.contains(&FactSource::KopanoMysql);
        facts.server_guid = match &settings.server_guid {
            Some(configured) => RawId::server_guid(configured),
            None if database_owns_guid => source_guid,
            None => source_guid.or_else(|| stored_server_guid(&settings.state_dir)),
        };
    }
    facts
}

/// Reads the machine id; an unusable one is left out with a warning that
/// says why without quoting it.
pub fn read_machine_id(path: &Path) -> Option<RawId> {
    match std::fs::read_to_string(path) {
        Ok(text) => match RawId::machine_id(&text) {
            Ok(id) => Some(id),
            Err(problem) => {
                warn!(
                    "machine id in {} not used: {problem}; machine_id_hash is left out",
                    path.display()
                );
                None
            }
        },
        Err(err) => {
            warn!(
                "cannot read machine id from {}: {err}; machine_id_hash is left out",
                path.display()
            );
            None
        }
    }
}

/// The server GUID kept in the state dir, generated on first use. Kopano
/// servers have one in their database; a machine without one still needs a
/// stable id per installation, and a random one reveals nothing.
pub fn stored_server_guid(state_dir: &Path) -> Option<RawId> {
    let path = state_dir.join(SERVER_GUID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return RawId::server_guid(&text).or_else(|| {
                warn!("{} is empty; server_guid_hash is left out", path.display());
                None
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            warn!(
                "cannot read {}: {err}; server_guid_hash is left out",
                path.display()
            );
            return None;
        }
    }
    let guid = hex::encode_upper(rand::random::<[u8; 16]>());
    match crate::safe_fs::write_atomically(&path, format!("{guid}\n").as_bytes()) {
        Ok(()) => RawId::server_guid(&guid),
        Err(err) => {
            warn!(
                "cannot store a new server GUID in {}: {err}; server_guid_hash is left out",
                path.display()
            );
            None
        }
    }
}

/// PRETTY_NAME from os-release, falling back as upstream does to NAME and
/// VERSION, lsb-release's DISTRIB_DESCRIPTION, and the older per-distribution
/// release files.
pub fn os_pretty_name(root: &Path) -> Option<String> {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    for file in ["etc/os-release", "usr/lib/os-release"] {
        if let Some(text) = read(file) {
            let vars = parse_shell_vars(&text);
            if let Some(pretty) = vars.get("PRETTY_NAME").filter(|v| !v.is_empty()) {
                return Some(pretty.clone());
            }
            if let Some(name) = vars.get("NAME") {
                return Some(match vars.get("VERSION") {
                    Some(version) => format!("{name} {version}"),
                    None => name.clone(),
                });
            }
        }
    }
    if let Some(text) = read("etc/lsb-release") {
        if let Some(desc) = parse_shell_vars(&text).remove("DISTRIB_DESCRIPTION") {
            return Some(desc);
        }
    }
    for file in ["etc/redhat-release", "etc/SuSE-release"] {
        if let Some(line) = read(file).and_then(|t| t.lines().next().map(str::to_string)) {
            if !line.trim().is_empty() {
                return Some(line.trim().to_string());
            }
        }
    }
    read("etc/debian_version").map(|v| format!("Debian GNU/Linux {}", v.trim()))
}

/// Parses the `KEY=value` shell-style assignments of os-release(5):
/// values may be quoted with `"` or `'`, and `\` escapes inside double quotes.
pub fn parse_shell_vars(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_string()
        } else {
            raw.to_string()
        };
        vars.insert(key.trim().to_string(), value);
    }
    vars
}

/// What one extra source contributed.
#[derive(Debug, Default, PartialEq)]
pub struct SourceFacts {
    pub values: BTreeMap<String, FactValue>,
    pub server_guid: Option<RawId>,
}

async fn read_source(source: &FactSource, settings: &Settings) -> Option<SourceFacts> {
    let (label, output) = match source {
        FactSource::Command { argv } => {
            let label = format!("facts command {}", argv[0]);
            match run_command(argv, settings.timeout).await {
                Ok(output) => (label, output),
                Err(why) => {
                    warn!("{label} failed: {why}; its facts are left out");
                    return None;
                }
            }
        }
        FactSource::File(path) => {
            let label = format!("facts file {}", path.display());
            match std::fs::read(path) {
                Ok(bytes) if bytes.len() <= MAX_SOURCE_OUTPUT => (label, bytes),
                Ok(_) => {
                    warn!(
                        "{label} is larger than {MAX_SOURCE_OUTPUT} bytes; its facts are left out"
                    );
                    return None;
                }
                Err(err) => {
                    warn!("cannot read {label}: {err}; its facts are left out");
                    return None;
                }
            }
        }
        FactSource::KopanoMysql => return crate::kopano_mysql::collect(settings).await,
    };
    match parse_source_output(&output) {
        Ok((facts, problems)) => {
            for problem in problems {
                warn!("{label}: {problem}");
            }
            Some(facts)
        }
        Err(why) => {
            warn!("{label} gave unusable output: {why}; its facts are left out");
            None
        }
    }
}

async fn run_command(argv: &[String], timeout: std::time::Duration) -> Result<Vec<u8>, String> {
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start it: {err}"))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("no answer within {} s, killed", timeout.as_secs()))?
        .map_err(|err| format!("waiting for it failed: {err}"))?;
    if !output.status.success() {
        return Err(format!("it exited with {}", output.status));
    }
    if output.stdout.len() > MAX_SOURCE_OUTPUT {
        return Err(format!("it printed more than {MAX_SOURCE_OUTPUT} bytes"));
    }
    Ok(output.stdout)
}

/// Parses what a source printed: a JSON object, or `key = value` lines (the
/// server.cfg format). Known fields are kept; a value of the wrong type or an
/// unknown name is reported and skipped, never guessed at.
pub fn parse_source_output(bytes: &[u8]) -> Result<(SourceFacts, Vec<String>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_string())?;
    let mut pairs: Vec<(String, FactValue)> = Vec::new();
    if text.trim_start().starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
        for (key, value) in object {
            let value = match value {
                serde_json::Value::String(s) => FactValue::Text(s),
                serde_json::Value::Number(n) => match n.as_u64() {
                    Some(n) => FactValue::Count(n),
                    None => FactValue::Text(n.to_string()),
                },
                other => FactValue::Text(other.to_string()),
            };
            pairs.push((key, value));
        }
    } else {
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                pairs.push((key.trim().into(), FactValue::Text(value.trim().into())));
            }
        }
    }

    let mut facts = SourceFacts::default();
    let mut problems = Vec::new();
    for (key, value) in pairs {
        if key == "server_guid" {
            match value {
                FactValue::Text(text) => facts.server_guid = RawId::server_guid(&text),
                FactValue::Count(_) => problems.push("server_guid must be a string".into()),
            }
            continue;
        }
        let spec = match key.as_str() {
            "machine_id_hash" | "server_guid_hash" | "id_scheme" => None,
            _ => field_spec(&key),
        };
        let Some((kind, _)) = spec else {
            problems.push(format!("unknown fact {key:?} ignored"));
            continue;
        };
        match (kind, value) {
            (FieldType::Text, FactValue::Text(text)) => {
                facts.values.insert(key, FactValue::Text(text));
            }
            (FieldType::Text, FactValue::Count(n)) => {
                facts.values.insert(key, FactValue::Text(n.to_string()));
            }
            (FieldType::Count, FactValue::Count(n)) => {
                facts.values.insert(key, FactValue::Count(n));
            }
            (FieldType::Count, FactValue::Text(text)) => match text.parse::<u64>() {
                Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => {
                    facts.values.insert(key, FactValue::Count(n));
                }
                _ => problems.push(format!("{key} is not a count: {text:?}; left out")),
            },
        }
    }
    Ok((facts, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoting_and_fallbacks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        assert_eq!(os_pretty_name(dir.path()), None);
        std::fs::write(dir.path().join("etc/debian_version"), "12.8\n").unwrap();
        assert_eq!(os_pretty_name(dir.path()).unwrap(), "Debian GNU/Linux 12.8");
        std::fs::write(
            dir.path().join("etc/lsb-release"),
            "DISTRIB_ID=Ubuntu\nDISTRIB_DESCRIPTION=\"Ubuntu 22.04.4 LTS\"\n",
        )
        .unwrap();
        assert_eq!(os_pretty_name(dir.path()).unwrap(), "Ubuntu 22.04.4 LTS");
        std::fs::write(
            dir.path().join("etc/os-release"),
            "NAME='Debian GNU/Linux'\nVERSION=\"12 (bookworm)\"\n",
        )
        .unwrap();
        assert_eq!(
            os_pretty_name(dir.path()).unwrap(),
            "Debian GNU/Linux 12 (bookworm)"
        );
        std::fs::write(
            dir.path().join("etc/os-release"),
            "# comment\nPRETTY_NAME=\"Say \\\"hi\\\" OS\"\nNAME=x\n",
        )
        .unwrap();
        assert_eq!(os_pretty_name(dir.path()).unwrap(), "Say \"hi\" OS");
    }

    #[test]
    fn source_output_as_key_value_lines() {
        let (facts, problems) = parse_source_output(
            b"# from a script\nusercnt_active = 42\nprogram_name = kopano-server\nusercnt_room = many\nfoo = 1\nserver_guid = 0A1B\n",
        )
        .unwrap();
        assert_eq!(facts.values["usercnt_active"], FactValue::Count(42));
        assert_eq!(
            facts.values["program_name"],
            FactValue::Text("kopano-server".into())
        );
        assert!(!facts.values.contains_key("usercnt_room"));
        assert!(facts.server_guid.is_some());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn source_output_as_json_object() {
        let (facts, problems) = parse_source_output(
            br#"{"usercnt_contact": 7, "usercnt_room": "3", "osrelease": "X"}"#,
        )
        .unwrap();
        assert!(problems.is_empty());
        assert_eq!(facts.values["usercnt_contact"], FactValue::Count(7));
        assert_eq!(facts.values["usercnt_room"], FactValue::Count(3));
        assert!(parse_source_output(b"{not json").is_err());
        let (facts, problems) = parse_source_output(br#"{"usercnt_room": -3}"#).unwrap();
        assert!(facts.values.is_empty());
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn a_source_cannot_forge_hashes() {
        let (facts, problems) =
            parse_source_output(b"machine_id_hash = 00\nid_scheme = none\n").unwrap();
        assert!(facts.values.is_empty());
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn generated_server_guid_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = stored_server_guid(&state).unwrap();
        let second = stored_server_guid(&state).unwrap();
        assert_eq!(first, second);
        let stored = std::fs::read_to_string(state.join(SERVER_GUID_FILE)).unwrap();
        assert_eq!(stored.trim().len(), 32);
    }
}
