//! Bounded waits: every wait in the harness ends at PATIENCE, which
//! detects a hang and is never a timing check.

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for any single wait of the harness.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `child` until it exits, calling `meanwhile` between polls (to
/// drain a pipe or socket the child might block on); None if it has not
/// exited within PATIENCE (the caller decides what to kill).
pub fn exit_within_patience(child: &mut Child, mut meanwhile: impl FnMut()) -> Option<ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        meanwhile();
    }
}

/// Waits (bounded) for `child` to exit by itself; if it does not, kills it
/// and fails saying `hang`. Returns its status and standard error.
pub fn wait_for_exit(mut child: Child, hang: &str) -> (ExitStatus, String) {
    let Some(status) =
        exit_within_patience(&mut child, || std::thread::sleep(Duration::from_millis(20)))
    else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{hang}");
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

/// Runs `future` to completion on a runtime of its own, for the few test
/// steps that need tokio (PostgreSQL, binding a socket's source address).
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
