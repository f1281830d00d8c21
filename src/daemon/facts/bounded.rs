//! Blocking file work for the facts, kept off the service loop.

use std::time::Duration;

use tracing::warn;

/// Runs blocking file work on tokio's blocking pool, bounded by `timeout`:
/// a file on a hung file system then ties up a pool thread, never the
/// service loop. `None` (with a warning naming `what`) when it took too long.
pub(super) async fn off_loop<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            warn!("reading {what} failed: {err}; left out");
            None
        }
        Err(_) => {
            warn!(
                "reading {what} took longer than surveyclient_timeout ({} s; a hung file system?); left out",
                timeout.as_secs()
            );
            None
        }
    }
}
