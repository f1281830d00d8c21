//! Logging: to journald through its native protocol when systemd connected
//! our stderr to the journal (so fields such as MESSAGE_ID survive), else
//! human-readable lines on stderr.
//!
//! No raw identifier is ever passed to a log macro: facts and privacy code
//! log what failed and where, never the value read.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// `MESSAGE_ID` of the journal record written for every report sent, so
/// `journalctl MESSAGE_ID=...` lists them.
pub const REPORT_SENT_MESSAGE_ID: &str = "8c3f5a0e2b6d4b1f9a7e3c2d1b0a9f8e";

/// Installs the global subscriber for both programs. `identifier` is the
/// journal's SYSLOG_IDENTIFIER; `level_env` names the variable that
/// chooses the level (`debug`, `info`, `warn`, ...), default info.
pub fn init(identifier: &str, level_env: &str) {
    let filter = EnvFilter::try_from_env(level_env)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // tokio-postgres logs every statement's parameters at debug: the
        // collector's uids and deletion commitments, which no log keeps,
        // whatever level is asked for.
        .add_directive(
            "tokio_postgres=info"
                .parse()
                .expect("a valid tracing directive"),
        );
    if stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            // No prefix, so `message_id` becomes the journal's MESSAGE_ID.
            let journald = journald
                .with_syslog_identifier(identifier.to_string())
                .with_field_prefix(None);
            tracing_subscriber::registry()
                .with(filter)
                .with(journald)
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for the stream it connected;
/// it only counts if our stderr is still that stream (a shell redirect
/// inherits the variable but not the stream).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, inode)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(inode)) = (dev.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) {
        Ok(stat) => stat.st_dev == dev && stat.st_ino == inode,
        Err(_) => false,
    }
}
