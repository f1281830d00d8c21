//! The facts the machine itself gives: its machine id, its os-release, its
//! uname, and the static facts the settings state about it.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::warn;

use crate::daemon::settings::Settings;
use crate::privacy::RawId;
use crate::safe_fs::{self, ReadError, ReadErrorKind};
use crate::wire;

/// Largest machine id file: 33 bytes in practice, with room for white space.
pub const MAX_MACHINE_ID_BYTES: u64 = 4096;

/// Largest os-release (or fallback) file; real ones are a few hundred bytes.
pub const MAX_OS_RELEASE_BYTES: u64 = 64 * 1024;

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

/// The kernel as `sysname machine release`; `None` after a warning.
pub fn utsname() -> Option<String> {
    match nix::sys::utsname::uname() {
        Ok(uts) => Some(format!(
            "{} {} {}",
            uts.sysname().to_string_lossy(),
            uts.machine().to_string_lossy(),
            uts.release().to_string_lossy()
        )),
        Err(err) => {
            warn!("uname failed ({err}); utsname is left out");
            None
        }
    }
}

/// How many CPUs surveyd may use (its affinity mask and cgroup quota
/// count), as the standard library works it out; `None` after a warning.
pub fn cpu_count() -> Option<u64> {
    match std::thread::available_parallelism() {
        Ok(n) => Some(n.get() as u64),
        Err(err) => {
            warn!("cannot tell how many CPUs there are ({err}); cpu_count is left out");
            None
        }
    }
}

/// The facts the admin states in the settings rather than surveyd reading
/// them: the server program, its user plugin and attachment storage.
pub fn static_facts(settings: &Settings) -> Vec<(&'static str, String)> {
    [
        (wire::PROGRAM_NAME.name, &settings.program_name),
        (wire::PROGRAM_VERSION.name, &settings.program_version),
        (wire::USERPLUGIN.name, &settings.user_plugin),
        (wire::ATTACHMENT_STORAGE.name, &settings.attachment_storage),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value.clone()?)))
    .collect()
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
}
