//! The sd_notify protocol as both services speak it. Every function sends
//! one datagram; without NOTIFY_SOCKET (not under systemd) it does nothing.
//! A failed send is logged, never fatal: systemd that stopped listening is
//! no reason to stop serving.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {err}");
    }
}

/// READY=1 with the STATUS line: at start and after each reload.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS=, what `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// WATCHDOG=1: the service loop is alive and healthy.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// RELOADING=1 with MONOTONIC_USEC in the same datagram: systemd >= 253
/// (Type=notify-reload) ignores a RELOADING=1 without the timestamp.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1, with STATUS=stopping when the loop itself is stopping
/// (and not a thread that exits without it).
pub fn stopping(with_status: bool) {
    if with_status {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    } else {
        send(&[NotifyState::Stopping]);
    }
}

/// The watchdog period systemd asked for, with libsystemd's rules
/// (`sd_watchdog_enabled()`): `WATCHDOG_USEC` set and, if `WATCHDOG_PID`
/// is set too, naming this process. The sd-notify crate's helper insists
/// on WATCHDOG_PID, which libsystemd does not.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
