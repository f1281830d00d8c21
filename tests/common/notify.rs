//! A fake systemd for either service: the NOTIFY_SOCKET the test binds and
//! gives the child, recording every datagram it receives.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::PATIENCE;

pub struct NotifySocket {
    socket: UnixDatagram,
    /// What NOTIFY_SOCKET must name.
    pub path: PathBuf,
    /// Every datagram received so far, in order.
    pub seen: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl NotifySocket {
    /// A socket in a temp dir of its own.
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let mut notify = NotifySocket::bind(&dir.path().join("notify.sock"));
        notify._dir = Some(dir);
        notify
    }

    /// A socket at `path`, replacing one a previous run left there.
    pub fn bind(path: &Path) -> NotifySocket {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path).unwrap();
        // Short, so callers can also watch the process while they wait.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            socket,
            path: path.to_path_buf(),
            seen: Vec::new(),
            _dir: None,
        }
    }

    /// The next datagram if one arrives within the socket's short timeout.
    pub fn receive(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(datagram.clone());
        Some(datagram)
    }

    /// Reads datagrams until one satisfies `want`; returns it.
    pub fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(datagram) = self.receive() {
                if want(&datagram) {
                    return datagram;
                }
            }
        }
        panic!("no datagram with {what}; saw {:?}", self.seen);
    }

    /// The next datagram with exactly `line` among its lines.
    pub fn expect_line(&mut self, line: &str) -> String {
        self.expect(line, |d| has_line(d, line))
    }

    /// The next datagram whose STATUS= contains `part`.
    pub fn expect_status(&mut self, part: &str) -> String {
        self.expect(part, |d| {
            d.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains(part))
        })
    }

    pub fn ready(&mut self) -> String {
        self.expect_line("READY=1")
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `datagram` has exactly `line` among its lines.
pub fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

/// The STATUS= text of a notify datagram, empty when it has none.
pub fn status_of(datagram: &str) -> String {
    datagram
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_default()
        .to_string()
}

/// `cmd` without the systemd variables the test runner itself may have
/// (a test that wants a fake systemd sets them again).
pub fn outside_systemd(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
}
