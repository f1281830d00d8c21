//! The state dir (`surveyclient_state_dir`, `/var/lib/surveyd` by default):
//! every file surveyd keeps there, its format and who writes it.
//!
//! | file               | format                                   | written by |
//! |--------------------|------------------------------------------|------------|
//! | `server-guid`      | 32 upper-case hex digits and a newline    | [`stored_server_guid`], once, when neither the settings, a facts source nor kopano-mysql gives the installation's GUID |
//! | `last-success`     | seconds since the epoch and a newline    | [`record_success`], after the collector accepted a report |
//! | `last-attempt`     | seconds since the epoch and a newline    | [`record_attempt`], after a report is audited and before it is sent |
//! | `audit-chain-ends` | one JSON object (the log's path, its oldest and last seq and hash) and a newline | the audit writer (`crate::daemon::audit`) after every write, rotation and prune |
//! | `consent`          | one JSON object ([`Consent`]) and a newline | `surveyd consent yes` and `surveyd consent no` (`crate::daemon::cli`) |
//!
//! The service's user can write this directory, so a file here may be a
//! link, a FIFO, a device or huge. Every file is read with `safe_fs` (no
//! link followed, regular files only, a size limit per file) and written
//! with `safe_fs::write_atomically`; a file that cannot be read that way
//! counts as missing. The chain-ends file is the one exception in
//! mechanics, not in rules: the audit writer reaches it through a directory
//! handle opened before it gives up root (see `audit::EndsFile`), with the
//! same no-link, regular-only, bounded reads. The consent file is written
//! the same way, through a handle on the state dir opened before
//! `surveyd consent` becomes the directory's owner; its format is here.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::privacy::RawId;
use crate::safe_fs;

/// The generated server GUID.
pub const SERVER_GUID_FILE: &str = "server-guid";

/// The last success, so a restart does not send before the interval is up.
pub const LAST_SUCCESS_FILE: &str = "last-success";

/// The start of the last attempt, so a crash-restart loop waits the error
/// delay instead of re-sending.
pub const LAST_ATTEMPT_FILE: &str = "last-attempt";

/// The audit log's chain ends; its format and logic live in `crate::daemon::audit`.
pub const CHAIN_ENDS_FILE: &str = "audit-chain-ends";

/// The admin's answer to `surveyd consent`, kept across upgrades.
pub const CONSENT_FILE: &str = "consent";

/// Largest consent file read: the field list of a few dozen names is well
/// under 4 KiB, so anything near this was planted.
pub const MAX_CONSENT_FILE_BYTES: u64 = 64 * 1024;

/// Largest stored server GUID file: 33 bytes as surveyd writes it.
pub const MAX_GUID_FILE_BYTES: u64 = 4096;

/// Largest time file: a number of seconds and a newline.
const MAX_TIME_FILE_BYTES: u64 = 64;

/// Where the audit log's chain ends are kept.
pub fn chain_ends_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CHAIN_ENDS_FILE)
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
    match safe_fs::write_atomically(&path, format!("{guid}\n").as_bytes()) {
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

/// Records the moment a report was accepted.
pub fn record_success(state_dir: &Path, when: SystemTime) -> std::io::Result<()> {
    record_time(state_dir, LAST_SUCCESS_FILE, when)
}

/// Records the moment a report attempt started.
pub fn record_attempt(state_dir: &Path, when: SystemTime) -> std::io::Result<()> {
    record_time(state_dir, LAST_ATTEMPT_FILE, when)
}

/// The last successful report, if one was recorded and is readable.
pub fn last_success(state_dir: &Path) -> Option<SystemTime> {
    read_time(state_dir, LAST_SUCCESS_FILE)
}

/// The start of the last attempt, successful or not.
pub fn last_attempt(state_dir: &Path) -> Option<SystemTime> {
    read_time(state_dir, LAST_ATTEMPT_FILE)
}

fn record_time(state_dir: &Path, file: &str, when: SystemTime) -> std::io::Result<()> {
    let secs = when
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    safe_fs::write_atomically(&state_dir.join(file), format!("{secs}\n").as_bytes())
}

fn read_time(state_dir: &Path, file: &str) -> Option<SystemTime> {
    let text = safe_fs::read_regular_text(&state_dir.join(file), MAX_TIME_FILE_BYTES).ok()?;
    let secs: u64 = text.trim().parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Whether the admin allowed uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentMode {
    /// `surveyd consent yes`: reports are uploaded, with `fields` only.
    Upload,
    /// `surveyd consent no`: reports are built and audited, never sent.
    Local,
}

impl ConsentMode {
    pub fn name(self) -> &'static str {
        match self {
            ConsentMode::Upload => "upload",
            ConsentMode::Local => "local",
        }
    }
}

/// The consent file: what the admin acknowledged, for which destination,
/// and when. Keys a later version adds are ignored, so a downgrade keeps
/// the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub mode: ConsentMode,
    /// The wire schema (`crate::wire::SCHEMA`) when the admin said yes: a
    /// field introduced later is not covered.
    pub schema: u32,
    /// The acknowledged fields by wire name; empty after `consent no`.
    pub fields: Vec<String>,
    /// The destination shown to the admin when they answered.
    pub url: String,
    /// When they answered, RFC 3339 UTC.
    pub time: String,
}

impl Consent {
    /// The file's bytes: one JSON object and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("strings and numbers always serialise");
        bytes.push(b'\n');
        bytes
    }
}

/// The consent on record, `None` when there is none: no file, or one that
/// cannot be trusted (a link, a FIFO, too large, not a consent record),
/// which is logged and counts as "no consent", so nothing is uploaded on
/// the strength of a file someone planted or broke.
pub fn read_consent(state_dir: &Path) -> Option<Consent> {
    let path = state_dir.join(CONSENT_FILE);
    let bytes = match safe_fs::read_regular(&path, MAX_CONSENT_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(err) if err.is_not_found() => return None,
        Err(err) => {
            warn!(
                "cannot read the consent file: {err}; treating it as no consent (reports stay \
                 local); run `surveyd consent yes` or `surveyd consent no` to write it again"
            );
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(consent) => Some(consent),
        Err(err) => {
            warn!(
                "{} is not a consent record ({err}); treating it as no consent (reports stay \
                 local); run `surveyd consent yes` or `surveyd consent no` to write it again",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent() -> Consent {
        Consent {
            mode: ConsentMode::Upload,
            schema: 2,
            fields: vec!["program_name".into(), "usercnt_active".into()],
            url: "https://stats.example.org/api/stats/v1/submit".into(),
            time: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn consent_round_trips_in_the_contract_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_consent(dir.path()), None);
        let bytes = consent().to_bytes();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "{\"mode\":\"upload\",\"schema\":2,\"fields\":[\"program_name\",\"usercnt_active\"],\
             \"url\":\"https://stats.example.org/api/stats/v1/submit\",\"time\":\"2026-01-01T00:00:00Z\"}\n"
        );
        safe_fs::write_atomically(&dir.path().join(CONSENT_FILE), &bytes).unwrap();
        assert_eq!(read_consent(dir.path()), Some(consent()));
    }

    #[test]
    fn a_linked_fifo_huge_or_garbage_consent_file_is_no_consent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONSENT_FILE);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, consent().to_bytes()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(read_consent(dir.path()), None, "link");
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(read_consent(dir.path()), None, "FIFO");
        std::fs::remove_file(&path).unwrap();
        let mut huge = consent().to_bytes();
        huge.resize(MAX_CONSENT_FILE_BYTES as usize + 1, b' ');
        std::fs::write(&path, huge).unwrap();
        assert_eq!(read_consent(dir.path()), None, "too large");
        std::fs::write(&path, b"{\"mode\":\"upload\"}").unwrap();
        assert_eq!(read_consent(dir.path()), None, "incomplete");
        std::fs::write(&path, b"yes\n").unwrap();
        assert_eq!(read_consent(dir.path()), None, "garbage");
    }

    #[test]
    fn last_success_round_trips_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_success(dir.path()), None);
        let when = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        record_success(dir.path(), when).unwrap();
        assert_eq!(last_success(dir.path()), Some(when));
        assert_eq!(last_attempt(dir.path()), None);
    }

    #[test]
    fn a_fifo_or_link_as_a_time_file_reads_as_never_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "1800000000\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LAST_SUCCESS_FILE)).unwrap();
        let fifo = dir.path().join(LAST_ATTEMPT_FILE);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(last_success(dir.path()), None);
        assert_eq!(last_attempt(dir.path()), None);
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
