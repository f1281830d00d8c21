//! What the daemon (`surveyd run`) and the collector (`surveyd-collector
//! serve`) share as systemd services and as programs: the sd_notify
//! protocol and the watchdog period ([`notify`]), the synchronous reload
//! hand-off for ExecReload ([`reload`]), the tokio runtime they run on
//! ([`Runtime`]), how a command or a service ends ([`Failure`], [`exit`]
//! codes from sysexits.h), and where their log lines go ([`logging`]).
//!
//! Both service loops split what goes wrong the same way, as routinator's
//! `Failed`/`RunFailed` do: an error that can pass without anyone acting
//! (a network, a disk, a peer) is logged, shown in STATUS and retried by
//! the loop; an error that only the admin (or a fix of surveyd) can end
//! becomes a [`Failure`]: the loop returns it, and [`end_service`] logs
//! it, says it in STATUS and exits with its code.

pub mod exit;
mod failure;
pub mod logging;
pub mod notify;
pub mod reload;
mod runtime;

pub use failure::{end_command, end_service, Failure};
pub use runtime::Runtime;

/// A write past RLIMIT_FSIZE raises SIGXFSZ, which kills silently; ignored,
/// the write fails with EFBIG instead and is reported like any other
/// failed audit write.
pub fn ignore_file_size_signal() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN runs no code in the handler, so nothing in this
    // process can be interrupted in an unsafe state.
    if let Err(err) = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) } {
        tracing::warn!("cannot ignore SIGXFSZ: {err}");
    }
}
