//! Facts: what a report says about this machine, gathered from the machine
//! id file, os-release, uname, the settings, the state dir (a server GUID
//! generated once) and the admin's extra sources (`surveyclient_facts`; the
//! `kopano-mysql` one lives in `kopano_mysql`).
//!
//! A source that fails is logged and its fields are left out; nothing is
//! ever made up. Fields named in `surveyclient_omit` are not even read.

//!
//! Every input is bounded: files are read with `safe_fs` (no link followed,
//! regular files only, a size limit per kind) on a blocking thread within
//! `surveyclient_timeout`, so neither a FIFO nor a hung file system can stop
//! the service loop; a command's output is capped and its whole process
//! group is killed when it is done, too slow or too talkative.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tracing::warn;

use crate::payload::{field_spec, FactValue, Facts, FieldType};
use crate::privacy::RawId;
use crate::safe_fs::{self, ReadError, ReadErrorKind};
use crate::settings::{FactSource, Settings};

/// Name of the file in the state dir that keeps the generated server GUID.
pub const SERVER_GUID_FILE: &str = "server-guid";

/// Largest output accepted from a fact source (a command's stdout or a
/// `file:`); more is a broken source.
pub const MAX_SOURCE_OUTPUT: u64 = 64 * 1024;

/// Largest machine id file: 33 bytes in practice, with room for white space.
pub const MAX_MACHINE_ID_BYTES: u64 = 4096;

/// Largest os-release (or fallback) file; real ones are a few hundred bytes.
pub const MAX_OS_RELEASE_BYTES: u64 = 64 * 1024;

/// Largest stored server GUID file: 33 bytes as surveyd writes it.
pub const MAX_GUID_FILE_BYTES: u64 = 4096;

/// Warnings for the input files the settings name that exist but would be
/// refused (a link, a FIFO, a device, too large), for `check-config` and
/// the service's start and reload. Only `lstat` is used: nothing is opened,
/// so a device named there is not even touched.
pub fn input_file_problems(settings: &Settings) -> Vec<String> {
    let mut files = Vec::new();
    if !settings.omit.contains("machine_id_hash") {
        files.push((
            "surveyclient_machine_id_file",
            settings.machine_id_file.as_path(),
            MAX_MACHINE_ID_BYTES,
            "machine_id_hash would be left out of every report",
        ));
    }
    for source in &settings.facts {
        if let FactSource::File(path) = source {
            files.push((
                "surveyclient_facts",
                path.as_path(),
                MAX_SOURCE_OUTPUT,
                "its facts would be left out of every report",
            ));
        }
    }
    if let Some(ca) = &settings.mysql.ssl_ca {
        files.push((
            "surveyclient_mysql_ssl_ca",
            ca.as_path(),
            crate::kopano_mysql::MAX_CA_FILE_BYTES,
            "the kopano-mysql source would fail",
        ));
    }
    files
        .into_iter()
        .filter_map(|(key, path, limit, consequence)| {
            let kind = match std::fs::symlink_metadata(path) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
                Err(err) => ReadErrorKind::Io(err),
                Ok(meta) if meta.file_type().is_symlink() => ReadErrorKind::Symlink,
                Ok(meta) if !meta.is_file() => {
                    ReadErrorKind::NotRegular(safe_fs::describe_type(meta.file_type()))
                }
                Ok(meta) if meta.len() > limit => ReadErrorKind::TooLarge { limit },
                Ok(_) => return None,
            };
            let problem = ReadError {
                path: path.to_path_buf(),
                kind,
            };
            Some(format!("{key}: {problem}; {consequence}"))
        })
        .collect()
}

/// Runs blocking file work on tokio's blocking pool, bounded by `timeout`:
/// a file on a hung file system then ties up a pool thread, never the
/// service loop. `None` (with a warning naming `what`) when it took too long.
async fn off_loop<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            warn!("reading {what} failed: {err}; left out");
            None
        }
        Err(_) => {
            warn!(
                "reading {what} took longer than surveyclient_timeout ({} s; a hung file system?); left out",
                timeout.as_secs()
            );
            None
        }
    }
}

/// What the machine's own files say, read together in one bounded step.
struct LocalFiles {
    machine_id: Option<RawId>,
    os_name: Option<Option<String>>,
}

/// Gathers every fact the settings allow. `os_root` is `/` except in tests,
/// which point it at a directory holding their own `etc/os-release`.
pub async fn collect(settings: &Settings, os_root: &Path) -> Facts {
    let wanted = |name: &str| !settings.omit.contains(name);
    let mut facts = Facts::default();

    let local = {
        let machine_id_file = wanted("machine_id_hash").then(|| settings.machine_id_file.clone());
        let os_root = wanted("osrelease").then(|| os_root.to_path_buf());
        off_loop(
            "the machine id and os-release",
            settings.timeout,
            move || LocalFiles {
                machine_id: machine_id_file.and_then(|path| read_machine_id(&path)),
                os_name: os_root.map(|root| os_pretty_name(&root)),
            },
        )
        .await
    };
    if let Some(local) = local {
        facts.machine_id = local.machine_id;
        match local.os_name {
            Some(Some(name)) => {
                facts
                    .values
                    .insert("osrelease".into(), FactValue::Text(name));
            }
            Some(None) => warn!(
                "no usable os-release, lsb-release or distribution release file found; osrelease is left out"
            ),
            None => {}
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
            None => match source_guid {
                Some(guid) => Some(guid),
                None => {
                    let state_dir = settings.state_dir.clone();
                    off_loop("the stored server GUID", settings.timeout, move || {
                        stored_server_guid(&state_dir)
                    })
                    .await
                    .flatten()
                }
            },
        };
    }
    facts
}

/// Reads the machine id; an unusable one is left out with a warning that
/// says why without quoting it.
pub fn read_machine_id(path: &Path) -> Option<RawId> {
    match safe_fs::read_regular_text(path, MAX_MACHINE_ID_BYTES) {
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
            warn!("cannot read the machine id: {err}; machine_id_hash is left out");
            None
        }
    }
}

/// The server GUID kept in the state dir, generated on first use. Kopano
/// servers have one in their database; a machine without one still needs a
/// stable id per installation, and a random one reveals nothing.
pub fn stored_server_guid(state_dir: &Path) -> Option<RawId> {
    let path = state_dir.join(SERVER_GUID_FILE);
    match safe_fs::read_regular_text(&path, MAX_GUID_FILE_BYTES) {
        Ok(text) => {
            return RawId::server_guid(&text).or_else(|| {
                warn!("{} is empty; server_guid_hash is left out", path.display());
                None
            })
        }
        Err(err) if err.is_not_found() => {}
        Err(err) => {
            warn!("cannot read the stored server GUID: {err}; server_guid_hash is left out");
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
/// release files. A file that cannot be read safely counts as missing, with
/// a warning unless it is simply absent.
pub fn os_pretty_name(root: &Path) -> Option<String> {
    let read = |rel: &str| match read_resolved(&root.join(rel), MAX_OS_RELEASE_BYTES) {
        Ok(text) => Some(text),
        Err(err) if err.is_not_found() => None,
        Err(err) => {
            warn!("{err}; trying the next source of osrelease");
            None
        }
    };
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

/// Reads a bounded regular text file after resolving links. os-release(5)
/// asks for `/etc/os-release` to be a link to `../usr/lib/os-release`, so
/// these system files are the one place where links are followed; the
/// target is still opened with `safe_fs` (regular, non-blocking, bounded).
fn read_resolved(path: &Path, limit: u64) -> Result<String, ReadError> {
    let target = path.canonicalize().map_err(|err| ReadError {
        path: path.to_path_buf(),
        kind: ReadErrorKind::Io(err),
    })?;
    safe_fs::read_regular_text(&target, limit)
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
            let file = path.clone();
            let read = off_loop(&label, settings.timeout, move || {
                safe_fs::read_regular(&file, MAX_SOURCE_OUTPUT)
            });
            match read.await? {
                Ok(bytes) => (label, bytes),
                Err(err) => {
                    warn!("cannot read a facts file: {err}; its facts are left out");
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

/// Runs a facts command in a process group of its own, reads at most
/// [`MAX_SOURCE_OUTPUT`] bytes of its stdout within `timeout`, and kills
/// the whole group when done: a background job it started (which may hold
/// stdout open forever) dies with it.
async fn run_command(argv: &[String], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start it: {err}"))?;
    // Declared after `child`, so dropped first: when the report is cancelled
    // mid-command, the group is killed while the child is not yet reaped.
    let _group = child.id().map(ProcessGroup);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let finished = tokio::time::timeout(timeout, async {
        let mut output = Vec::new();
        (&mut stdout)
            .take(MAX_SOURCE_OUTPUT + 1)
            .read_to_end(&mut output)
            .await
            .map_err(|err| format!("reading its output failed: {err}"))?;
        if output.len() as u64 > MAX_SOURCE_OUTPUT {
            return Err(format!(
                "it printed more than {MAX_SOURCE_OUTPUT} bytes; it and its process group were killed"
            ));
        }
        let status = child
            .wait()
            .await
            .map_err(|err| format!("waiting for it failed: {err}"))?;
        Ok((output, status))
    })
    .await
    .map_err(|_| {
        format!(
            "no answer within {} s (surveyclient_timeout); it and its process group were killed",
            timeout.as_secs()
        )
    })??;
    let (output, status) = finished;
    if !status.success() {
        return Err(format!("it exited with {status}"));
    }
    Ok(output)
}

/// A command's process group, killed with SIGKILL when dropped. After a
/// clean exit this hits only leftovers: the id stays reserved while any
/// member lives, and once none does, Linux's cyclic pid allocation makes a
/// new group with the same id within that moment practically impossible.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0 as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
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
    fn machine_id_from_a_fifo_device_link_or_huge_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, "3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let huge = dir.path().join("huge");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        for path in [&fifo, Path::new("/dev/zero"), &link, &huge] {
            assert!(read_machine_id(path).is_none(), "{}", path.display());
        }
        assert!(read_machine_id(&real).is_some());
    }

    #[test]
    fn os_release_follows_its_link_but_refuses_devices_and_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        std::fs::write(
            dir.path().join("usr/lib/os-release"),
            "PRETTY_NAME=\"Linked OS\"\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", dir.path().join("etc/os-release"))
            .unwrap();
        assert_eq!(os_pretty_name(dir.path()).unwrap(), "Linked OS");

        std::fs::remove_file(dir.path().join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("etc/os-release")).unwrap();
        std::fs::remove_file(dir.path().join("usr/lib/os-release")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("usr/lib/os-release"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/debian_version"), "12.8\n").unwrap();
        assert_eq!(os_pretty_name(dir.path()).unwrap(), "Debian GNU/Linux 12.8");
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[tokio::test]
    async fn endless_command_output_is_capped_and_the_command_killed() {
        let err = run_command(&argv(&["/usr/bin/yes"]), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(err.contains("more than 65536 bytes"), "{err}");
    }

    #[tokio::test]
    async fn output_of_exactly_the_cap_is_accepted() {
        let script = format!("head -c {MAX_SOURCE_OUTPUT} /dev/zero | tr '\\0' x");
        let out = run_command(&argv(&["/bin/sh", "-c", &script]), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out.len() as u64, MAX_SOURCE_OUTPUT);
    }

    /// Whether `pid` is gone (or a zombie nobody has reaped yet).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_dead(pid: i32) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if dead(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[tokio::test]
    async fn a_background_job_holding_stdout_is_killed_with_its_group_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "sleep 1000 & echo $! > {}; echo usercnt_active=1",
            pid_file.display()
        );
        let err = run_command(&argv(&["/bin/sh", "-c", &script]), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("process group were killed"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = wait_dead(pid);
        if !gone {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(gone, "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn leftovers_of_a_command_that_finished_are_killed_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "sleep 1000 >/dev/null & echo $! > {}; echo usercnt_active=1",
            pid_file.display()
        );
        let out = run_command(&argv(&["/bin/sh", "-c", &script]), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out, b"usercnt_active=1\n");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = wait_dead(pid);
        if !gone {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(gone, "the background sleep {pid} survived");
    }

    #[test]
    fn check_config_warnings_name_refused_input_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let settings = Settings {
            machine_id_file: fifo.clone(),
            facts: vec![
                FactSource::File("/dev/zero".into()),
                FactSource::File(dir.path().join("missing")),
            ],
            ..Settings::default()
        };
        let problems = input_file_problems(&settings);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("surveyclient_machine_id_file: ")
                && problems[0].contains("is a FIFO"),
            "{problems:?}"
        );
        assert!(problems[1].contains("/dev/zero: is a character device"));
    }

    #[test]
    fn a_linked_server_guid_file_is_not_followed_or_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "root:secret\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(SERVER_GUID_FILE)).unwrap();
        assert!(stored_server_guid(dir.path()).is_none());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
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
