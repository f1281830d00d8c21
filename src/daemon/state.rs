//! The state dir (`surveyclient_state_dir`, `/var/lib/surveyd` by default):
//! every file surveyd keeps there, its format and who writes it.
//!
//! | file               | format                                   | written by |
//! |--------------------|------------------------------------------|------------|
//! | `server-guid`      | 32 upper-case hex digits and a newline    | [`stored_server_guid`], once, when neither the settings, a facts source nor kopano-mysql gives the installation's GUID |
//! | `last-success`     | seconds since the epoch and a newline    | [`record_success`], after the collector accepted a report |
//! | `last-attempt`     | seconds since the epoch and a newline    | [`record_attempt`], after a report is audited and before it is sent |
//! | `audit-chain-ends` | one JSON object (the log's path, its oldest and last seq and hash) and a newline | the audit writer (`crate::daemon::audit`) after every write, rotation and prune |
//!
//! The service's user can write this directory, so a file here may be a
//! link, a FIFO, a device or huge. Every file is read with `safe_fs` (no
//! link followed, regular files only, a size limit per file) and written
//! with `safe_fs::write_atomically`; a file that cannot be read that way
//! counts as missing. The chain-ends file is the one exception in
//! mechanics, not in rules: the audit writer reaches it through a directory
//! handle opened before it gives up root (see `audit::EndsFile`), with the
//! same no-link, regular-only, bounded reads.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

#[cfg(test)]
mod tests {
    use super::*;

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
