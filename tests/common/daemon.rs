//! `surveyd run` against the fake systemd, stopped by its pid.

use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{exit_within_patience, stderr, Install, NotifySocket, StandIn, PATIENCE};

/// Watchdog period given to the daemon; it pings every half of it.
pub const WATCHDOG_USEC: u64 = 400_000;

/// `surveyd run` with NOTIFY_SOCKET set to a socket the test reads; the
/// notify methods (`expect`, `ready`, `seen`...) are the socket's.
/// Dropping it kills the daemon by its pid.
pub struct Daemon {
    /// `surveyd run`, or the harness that started it.
    child: Child,
    /// The surveyd process itself.
    pid: Pid,
    notify: NotifySocket,
    /// Once `child` is reaped its pid may be reused: never signal it then.
    exited: bool,
}

impl Deref for Daemon {
    type Target = NotifySocket;
    fn deref(&self) -> &NotifySocket {
        &self.notify
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut NotifySocket {
        &mut self.notify
    }
}

impl Daemon {
    pub fn start(install: &Install) -> Daemon {
        Daemon::start_with(install, |_| {})
    }

    /// `surveyd run` after `adjust` changed its command (limits, env).
    pub fn start_with(install: &Install, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let mut command = install.command(&["run"]);
        adjust(&mut command);
        Daemon::spawn(install, &mut command, None)
    }

    /// `surveyd run` in a private mount namespace where `install/slow` is
    /// a file system whose every file opens but never answers a read (a
    /// hung NFS server, as far as the reader can tell): tests/fixtures/
    /// slowfs.py speaks the FUSE protocol and starts surveyd under it.
    pub fn start_over_hung_file_system(install: &Install) -> Daemon {
        std::fs::create_dir_all(install.path("slow")).unwrap();
        let pid_file = install.path("surveyd.pid");
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "python3"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slowfs.py"))
            .arg(install.path("slow"))
            .arg(&pid_file)
            .arg(env!("CARGO_BIN_EXE_surveyd"))
            .arg("-c")
            .arg(install.config_path())
            .arg("run")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("JOURNAL_STREAM");
        Daemon::spawn(install, &mut cmd, Some(&pid_file))
    }

    /// Starts `cmd` with the fake systemd's environment; when surveyd is
    /// not `cmd` itself, its pid is read from `pid_file`.
    fn spawn(install: &Install, cmd: &mut Command, pid_file: Option<&Path>) -> Daemon {
        let notify = NotifySocket::bind(&install.path("notify.sock"));
        let mut child = cmd
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = match pid_file {
            None => child.id() as i32,
            Some(path) => {
                let deadline = Instant::now() + PATIENCE;
                loop {
                    if let Ok(pid) = std::fs::read_to_string(path) {
                        break pid.trim().parse().unwrap();
                    }
                    if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                        let _ = child.kill();
                        let out = child.wait_with_output().unwrap();
                        panic!("the FUSE harness did not start surveyd: {}", stderr(&out));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        Daemon {
            child,
            pid: Pid::from_raw(pid),
            notify,
            exited: false,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid, signal).unwrap();
    }

    /// Counts watchdog pings until `n` more have arrived, returning every
    /// other datagram seen meanwhile.
    pub fn watchdog_pings(&mut self, n: usize) -> Vec<String> {
        let mut others = Vec::new();
        let mut pings = 0;
        let deadline = Instant::now() + PATIENCE;
        while pings < n {
            assert!(
                Instant::now() < deadline,
                "only {pings} of {n} watchdog pings; saw {:?}",
                self.seen
            );
            let datagram = self.expect("WATCHDOG=1 or anything", |_| true);
            if datagram.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            } else {
                others.push(datagram);
            }
        }
        others
    }

    /// Waits until the stand-in has `n` requests, draining datagrams
    /// meanwhile (a full notify socket would block the daemon, as it would
    /// with a real systemd that stopped reading).
    pub fn wait_for_requests(&mut self, server: &StandIn, n: usize) -> usize {
        let deadline = Instant::now() + PATIENCE;
        while server.requests().len() < n && Instant::now() < deadline {
            self.expect("anything", |_| true);
        }
        server.requests().len()
    }

    /// SIGTERM, STOPPING=1, then the exit code and everything logged.
    pub fn stop(mut self) -> (i32, String) {
        self.signal(Signal::SIGTERM);
        self.expect_line("STOPPING=1");
        self.wait_for_exit("daemon did not exit after SIGTERM")
    }

    /// Waits for the daemon to exit by itself; returns its exit code and
    /// standard error.
    pub fn exited(mut self) -> (i32, String) {
        self.wait_for_exit("daemon did not exit by itself")
    }

    /// Drains datagrams (a full notify socket would block the daemon's
    /// exit path) until the daemon exits; fails saying `hang` if it never
    /// does.
    fn wait_for_exit(&mut self, hang: &str) -> (i32, String) {
        let notify = &mut self.notify;
        let status = exit_within_patience(&mut self.child, || {
            notify.receive();
        });
        let Some(status) = status else {
            panic!("{hang}; saw {:?}", self.notify.seen);
        };
        self.exited = true;
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.exited {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
