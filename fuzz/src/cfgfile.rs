//! The server.cfg reader (src/daemon/cfgfile.rs) and the settings built from it
//! (src/daemon/settings/), the way `surveyd check-config` runs them, with
//! `!include` live.
//!
//! The input is split at NUL bytes (no config line can hold one): the first
//! part becomes main.cfg, the next up to four become a.cfg .. d.cfg, all in
//! the given directory, and main.cfg is loaded from there with
//! `CfgFile::load_with_env`. A file whose part is missing is removed, so
//! `!include` of it fails the same way every time.

use std::path::Path;

use surveyd::daemon::cfgfile::{process_env, CfgFile};
use surveyd::daemon::settings::Settings;

use crate::files::put_file;

const INCLUDES: [&str; 4] = ["a.cfg", "b.cfg", "c.cfg", "d.cfg"];

/// `$SET...` is always set (to the rest of its name); any other name is
/// looked up in the real environment through the guard the daemon uses.
fn env(name: &str) -> Option<String> {
    match name.strip_prefix("SET") {
        Some(rest) => Some(rest.to_string()),
        None => process_env(name),
    }
}

/// Keys whose `check-config` value is masked, so it does not read back.
const MASKED: [&str; 2] = ["mysql_password", "surveyclient_server_guid"];

/// What `check-config` prints, minus the masked keys.
fn shown(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut shown = settings.effective();
    shown.retain(|(key, _)| !MASKED.contains(key));
    shown
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// A directive with a `/` could name any file on this machine (/proc/kcore
/// is a "regular file" of 128 TiB); without one every `!include` resolves
/// inside the scratch directory, which keeps the target hermetic.
fn leaves_scratch(part: &[u8]) -> bool {
    part.split(|&b| b == b'\n')
        .any(|line| line.first() == Some(&b'!') && line.contains(&b'/'))
}

/// Runs `data` through the config loader in `dir` (empty but for what
/// earlier calls wrote) and panics where surveyd breaks a promise. False
/// when the input was skipped because it could read outside `dir`.
pub fn check(dir: &Path, data: &[u8]) -> bool {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).take(1 + INCLUDES.len()).collect();
    if parts.iter().any(|part| leaves_scratch(part)) {
        return false;
    }
    put_file(dir, "main.cfg", Some(parts[0]));
    for (index, name) in INCLUDES.iter().enumerate() {
        put_file(dir, name, parts.get(index + 1).copied());
    }

    let cfg = match CfgFile::load_with_env(&dir.join("main.cfg"), &env) {
        Ok(cfg) => cfg,
        Err(error) => {
            // Every error names its file, and its line when it has one.
            let message = error.to_string();
            assert!(
                message.contains("main.cfg") || message.contains(".cfg:"),
                "{message}"
            );
            if let Some(location) = error.location() {
                assert!(location.line >= 1, "{message}");
            }
            return true;
        }
    };
    for entry in cfg.entries() {
        assert!(!entry.key.is_empty(), "{entry:?}");
        assert!(entry.location.line >= 1, "{entry:?}");
        assert!(
            cfg.files().contains(&entry.location.file),
            "{entry:?} comes from a file not listed in {:?}",
            cfg.files()
        );
        assert_eq!(
            cfg.get(&entry.key).map(|last| &last.key),
            Some(&entry.key),
            "get() must find every key read"
        );
    }
    let loaded = match Settings::from_cfg(&cfg) {
        Ok(loaded) => loaded,
        Err(error) => {
            let message = error.to_string();
            assert!(
                error.location().is_some(),
                "a settings error names file:line: {message}"
            );
            return true;
        }
    };
    // Settings::effective promises that its lines, written back as a
    // config file, give the same settings (values starting with `$` aside).
    let effective = loaded.settings.effective();
    if effective.iter().any(|(_, value)| value.starts_with('$')) {
        return true;
    }
    let text: String = effective
        .iter()
        .filter(|(key, _)| !MASKED.contains(key))
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    let again = CfgFile::parse_str(&text, &dir.join("effective.cfg"), &no_env)
        .and_then(|cfg| Settings::from_cfg(&cfg))
        .unwrap_or_else(|error| panic!("check-config output does not load again: {error}\n{text}"));
    assert_eq!(
        shown(&loaded.settings),
        shown(&again.settings),
        "check-config output reads back as different settings:\n{text}"
    );
    true
}
