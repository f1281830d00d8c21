//! The admin's extra facts sources (`surveyclient_facts`): `command:` runs
//! a program, `file:` reads a file; both print JSON or `key = value` lines.
//! [`SourceFacts`] is what any source contributes, `kopano-mysql` included.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tracing::warn;

use super::bounded::off_loop;
use crate::daemon::payload::{field_spec, FactValue, FieldType};
use crate::privacy::RawId;
use crate::safe_fs;
use crate::wire;

/// Largest output accepted from a fact source (a command's stdout or a
/// `file:`); more is a broken source.
pub const MAX_SOURCE_OUTPUT: u64 = 64 * 1024;

/// What one extra source contributed.
#[derive(Debug, Default, PartialEq)]
pub struct SourceFacts {
    pub values: BTreeMap<String, FactValue>,
    pub server_guid: Option<RawId>,
}

/// Runs a `command:` source; `None` after a warning saying why.
pub(super) async fn from_command(argv: &[String], timeout: Duration) -> Option<SourceFacts> {
    let label = format!("facts command {}", argv[0]);
    match run_command(argv, timeout).await {
        Ok(output) => parsed(&label, &output),
        Err(why) => {
            warn!("{label} failed: {why}; its facts are left out");
            None
        }
    }
}

/// Reads a `file:` source; `None` after a warning saying why.
pub(super) async fn from_file(path: &Path, timeout: Duration) -> Option<SourceFacts> {
    let label = format!("facts file {}", path.display());
    let file = path.to_path_buf();
    let read = off_loop(&label, timeout, move || {
        safe_fs::read_regular(&file, MAX_SOURCE_OUTPUT)
    });
    match read.await? {
        Ok(bytes) => parsed(&label, &bytes),
        Err(err) => {
            warn!("cannot read a facts file: {err}; its facts are left out");
            None
        }
    }
}

/// What a source printed, its problems logged under `label`.
fn parsed(label: &str, output: &[u8]) -> Option<SourceFacts> {
    match parse_source_output(output) {
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
        // Hashes and their scheme are surveyd's to compute, never a source's.
        let computed = [
            wire::MACHINE_ID_HASH,
            wire::SERVER_GUID_HASH,
            wire::ID_SCHEME,
        ];
        let spec = if computed.iter().any(|f| f.name == key) {
            None
        } else {
            field_spec(&key)
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

    /// The background `sleep` whose pid the script wrote must be dead (and
    /// is killed here if not, so a failing test leaves nothing behind).
    fn assert_background_sleep_is_gone(pid_file: &std::path::Path) {
        let pid: i32 = std::fs::read_to_string(pid_file)
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
        assert_background_sleep_is_gone(&pid_file);
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
        assert_background_sleep_is_gone(&pid_file);
    }
}
