//! `systemctl reload` that returns once the reload is done, on every
//! systemd: the service records each reload's outcome in a file of its
//! `$RUNTIME_DIRECTORY`, and `surveyd reload` (the unit's ExecReload)
//! signals it and waits for that record. systemd >= 253 can use
//! `Type=notify-reload` instead (the RELOADING datagram in [`super::notify`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File in `$RUNTIME_DIRECTORY` where each finished reload is recorded as
/// `PID GENERATION ok` or `PID GENERATION failed: WHY`.
pub const RELOAD_STATUS_FILE: &str = "reload-status";

/// Records the outcome of the service's reload number `generation`
/// (`ok` or `failed: WHY`) where `surveyd reload` waits for it; outside
/// systemd (no `$RUNTIME_DIRECTORY`) nobody waits, and nothing is written.
pub fn record(generation: u64, outcome: &str) {
    let Some(dir) = runtime_directory() else {
        return;
    };
    let path = dir.join(RELOAD_STATUS_FILE);
    let line = format!("{} {generation} {outcome}\n", std::process::id());
    if let Err(err) = crate::safe_fs::write_atomically(&path, line.as_bytes()) {
        tracing::warn!("cannot write {}: {err}", path.display());
    }
}

/// systemd's `$RUNTIME_DIRECTORY` (the first one, if several).
pub fn runtime_directory() -> Option<PathBuf> {
    let value = std::env::var_os("RUNTIME_DIRECTORY")?;
    let first = value.to_string_lossy().split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// A reload outcome as written by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStatus {
    pub pid: u32,
    pub generation: u64,
    pub outcome: String,
}

/// Far more than one status line (pid, generation, an error naming a
/// file and line) ever needs.
const MAX_STATUS_BYTES: u64 = 64 * 1024;

impl ReloadStatus {
    /// The runtime directory belongs to the service's user and `surveyd
    /// reload` may run as root: a link, FIFO or endless file planted there
    /// is refused (read as "no status yet"), never followed or waited on.
    pub fn read(dir: &Path) -> Option<ReloadStatus> {
        let text =
            crate::safe_fs::read_regular_text(&dir.join(RELOAD_STATUS_FILE), MAX_STATUS_BYTES)
                .ok()?;
        let mut parts = text.trim_end().splitn(3, ' ');
        Some(ReloadStatus {
            pid: parts.next()?.parse().ok()?,
            generation: parts.next()?.parse().ok()?,
            outcome: parts.next()?.to_string(),
        })
    }
}

/// `surveyd reload`: signals the running service and waits until it has
/// applied or rejected its configuration (systemd 252 has no
/// `Type=notify-reload`, and `kill -HUP` alone would return at once).
pub fn request(pid: Option<u32>, wait: Duration) -> Result<String, String> {
    let dir = runtime_directory()
        .ok_or("RUNTIME_DIRECTORY is not set: run this as the unit's ExecReload")?;
    let pid = match pid {
        Some(pid) => pid,
        None => std::env::var("MAINPID")
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or("MAINPID is not set: run this as the unit's ExecReload, or pass --pid")?,
    };
    let before = ReloadStatus::read(&dir)
        .filter(|s| s.pid == pid)
        .map(|s| s.generation)
        .unwrap_or(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|err| format!("cannot signal process {pid}: {err}"))?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = ReloadStatus::read(&dir) {
            if status.pid == pid && status.generation > before {
                return if status.outcome == "ok" {
                    Ok("configuration reloaded".to_string())
                } else {
                    Err(format!(
                        "{} (the running configuration is kept)",
                        status.outcome
                    ))
                };
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "process {pid} did not confirm the reload within {} s",
                wait.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_status_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RELOAD_STATUS_FILE),
            "42 3 failed: bad value at /etc/x.cfg:7\n",
        )
        .unwrap();
        assert_eq!(
            ReloadStatus::read(dir.path()).unwrap(),
            ReloadStatus {
                pid: 42,
                generation: 3,
                outcome: "failed: bad value at /etc/x.cfg:7".into()
            }
        );
    }

    #[test]
    fn a_planted_link_fifo_or_huge_file_reads_as_no_status_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RELOAD_STATUS_FILE);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "42 3 ok\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(ReloadStatus::read(dir.path()), None);

        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(ReloadStatus::read(dir.path()), None);

        std::fs::remove_file(&path).unwrap();
        let huge = std::fs::File::create(&path).unwrap();
        huge.set_len(MAX_STATUS_BYTES + 1).unwrap();
        assert_eq!(ReloadStatus::read(dir.path()), None);
    }
}
