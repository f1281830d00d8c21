//! The one test harness for both programs, compiled into every integration
//! test binary. Rooms: a scratch installation and the real `surveyd`
//! (install), `surveyd run` under a fake systemd (daemon, notify), the real
//! `surveyd-collector` and its database (collector), loopback collector
//! stand-ins (stand_in), TLS and an HTTP client (net), report bodies
//! (payloads), the raw identifiers that must never leave (privacy), and
//! bounded waits (wait).
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

mod collector;
mod daemon;
mod install;
mod net;
mod notify;
mod payloads;
mod privacy;
mod stand_in;
mod wait;

// Whatever a test binary does not use of a room is fine, as above.
#[allow(unused_imports)]
pub use self::{
    collector::*, daemon::*, install::*, net::*, notify::*, payloads::*, privacy::*, stand_in::*,
    wait::*,
};

/// Running as root (needed for mount namespaces and a real systemd).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Says SKIP loudly, or fails when CI must run everything.
pub fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test must run in CI but cannot: {reason}");
    }
    eprintln!("SKIP: {reason}");
}
