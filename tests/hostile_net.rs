//! Peers that never answer, created without touching the machine's own
//! files or network: a collector address that drops every packet lives in
//! a network namespace of its own, and for a resolver that never answers
//! each daemon runs in a private mount namespace where
//! /etc/resolv.conf, /etc/nsswitch.conf and /etc/hosts are bind-mounted
//! copies, and the only nameserver is a 127.x address on which the test
//! holds a UDP socket that reads queries and never answers.
//!
//! The copies ask glibc for its longest waits (30 s per try, 5 tries), so a
//! lookup that is not bounded by surveyclient_timeout, or a shutdown that
//! waits for it, overruns every bound below by minutes.

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A host name that is in no hosts file, so only DNS could answer it.
const SILENT_HOST: &str = "collector.invalid-test";
/// Upper bound for waiting on an event that should come at once.
const PATIENCE: Duration = Duration::from_secs(20);
/// systemd's TimeoutStopSec= in the shipped unit: past it the service is
/// killed. A hang detector for the stop, not a timing check.
const STOP_BOUND: Duration = Duration::from_secs(10);
/// How long `send` with surveyclient_timeout = 2 may take at all before
/// the test calls it hung (an unbounded lookup takes minutes here).
const SEND_BOUND: Duration = Duration::from_secs(15);

/// A nameserver that takes every query and answers none.
struct SilentResolver {
    address: String,
    queries: Arc<AtomicUsize>,
}

impl SilentResolver {
    /// Binds port 53 on a 127.x address of its own: tests run in
    /// parallel, and other test processes may hold some addresses already.
    fn start(slot: u8) -> SilentResolver {
        let pid = std::process::id();
        let (address, socket) = (0..200u32)
            .find_map(|step| {
                let third = (pid + step) % 250 + 1;
                let address = format!("127.53.{third}.{slot}");
                let socket = UdpSocket::bind((address.as_str(), 53)).ok()?;
                Some((address, socket))
            })
            .expect("a free 127.53.x.y:53");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while socket.recv_from(&mut buf).is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        SilentResolver { address, queries }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn wait_for_a_query(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.queries() == 0 {
            assert!(
                Instant::now() < deadline,
                "the daemon never asked the resolver"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes the files the namespace mounts over /etc and returns the
    /// mount commands.
    fn namespace_setup(&self, install: &Install) -> String {
        let files = [
            (
                "resolv.conf",
                format!(
                    "nameserver {}\noptions timeout:30 attempts:5\n",
                    self.address
                ),
                "/etc/resolv.conf",
            ),
            (
                "nsswitch.conf",
                "hosts: files dns\n".to_string(),
                "/etc/nsswitch.conf",
            ),
            (
                "hosts",
                "127.0.0.1 localhost\n::1 localhost\n".to_string(),
                "/etc/hosts",
            ),
        ];
        files
            .iter()
            .map(|(name, text, target)| {
                let copy = install.path(name);
                std::fs::write(&copy, text).unwrap();
                format!("mount --bind {} {target}", copy.display())
            })
            .collect::<Vec<_>>()
            .join(" && ")
    }
}

/// `surveyd ARGS` in a private mount namespace with the silent resolver.
fn surveyd_in_namespace(install: &Install, resolver: &SilentResolver, args: &[&str]) -> Command {
    let script = format!(
        "{} && exec \"$0\" \"$@\"",
        resolver.namespace_setup(install)
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_surveyd"))
        .arg("-c")
        .arg(install.config_path())
        .args(args);
    for var in [
        "SURVEYD_CONFIG",
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Waits for `child` to exit; kills it (by its pid) and fails past `bound`.
fn wait_bounded(child: &mut Child, bound: Duration, what: &str) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `cmd` with standard error read on a thread of its own, so a
/// chatty child never blocks on a full pipe while the test waits on it.
fn spawn_reading_stderr(mut cmd: Command) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    (child, reader)
}

fn needs_root() -> bool {
    if is_root() {
        return true;
    }
    skip("a silent resolver needs a private mount namespace (root)");
    false
}

#[test]
fn send_with_a_silent_resolver_times_out_naming_name_resolution() {
    if !needs_root() {
        return;
    }
    let resolver = SilentResolver::start(1);
    let install = Install::new();
    install.write_config(
        &format!("http://{SILENT_HOST}/api/stats/v1/submit"),
        "surveyclient_timeout = 2\n",
    );
    let (mut child, reader) =
        spawn_reading_stderr(surveyd_in_namespace(&install, &resolver, &["send"]));
    let (status, took) = wait_bounded(&mut child, SEND_BOUND, "surveyd send");
    let err = reader.join().unwrap();
    eprintln!("MEASURED: send with a silent resolver and surveyclient_timeout = 2 took {took:?}");

    assert_eq!(status.code(), Some(69), "{err}");
    assert!(
        resolver.queries() > 0,
        "the lookup went to the silent resolver"
    );
    assert!(
        err.contains(&format!("name resolution of {SILENT_HOST} did not finish"))
            && err.contains("within 2 s"),
        "{err}"
    );
    let results = audit_results(&install);
    assert_eq!(results.len(), 1, "the attempt is audited");
    assert!(results[0]["status"].is_null());
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("name resolution"),
        "{}",
        results[0]
    );
}

#[test]
fn sigterm_during_a_silent_lookup_stops_the_service_at_once() {
    if !needs_root() {
        return;
    }
    let resolver = SilentResolver::start(2);
    let install = Install::new();
    // A timeout far beyond the stop bound: only cancellation can end the
    // attempt in time.
    install.write_config(
        &format!("https://{SILENT_HOST}/api/stats/v1/submit"),
        "surveyclient_timeout = 60\nsurveyclient_start_delay = 0\n",
    );
    let socket_path = install.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut run = surveyd_in_namespace(&install, &resolver, &["run"]);
    run.env("NOTIFY_SOCKET", &socket_path);
    let (mut child, reader) = spawn_reading_stderr(run);

    let mut seen = Vec::new();
    let mut expect = |what: &str| {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(datagram.clone());
                if datagram.lines().any(|line| line == what) {
                    return;
                }
            }
        }
        panic!("no {what}; saw {seen:?}");
    };
    expect("READY=1");
    // The report is now waiting for the lookup that will never be answered.
    resolver.wait_for_a_query();

    let signalled = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    expect("STOPPING=1");
    let (status, _) = wait_bounded(&mut child, STOP_BOUND, "surveyd run after SIGTERM");
    let took = signalled.elapsed();
    let err = reader.join().unwrap();
    eprintln!("MEASURED: run exited {took:?} after SIGTERM during a silent lookup");

    assert_eq!(status.code(), Some(0), "{err}");
    let results = audit_results(&install);
    assert_eq!(results.len(), 1, "the cancelled attempt is audited: {err}");
    assert!(
        results[0]["error"].as_str().unwrap().contains("cancelled"),
        "{}",
        results[0]
    );
    assert!(err.contains("surveyd stopped"), "{err}");
}

#[test]
fn a_collector_address_that_drops_every_packet_is_named_at_the_timeout() {
    if !is_root() {
        return skip("a network namespace with a link that drops everything needs root");
    }
    // In a network namespace of its own, 10.77.0.2 sits behind a veth link
    // whose far end takes every frame and answers none: the SYN is never
    // acknowledged, as behind a firewall that drops.
    let install = Install::new();
    install.write_config(
        "http://10.77.0.2/api/stats/v1/submit",
        "surveyclient_timeout = 2\n",
    );
    let setup = "ip link add v0 type veth peer name v1 && ip addr add 10.77.0.1/24 dev v0 \
                 && ip link set v0 up && ip link set v1 up \
                 && ip neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev v0";
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &format!("{setup} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_surveyd"))
        .arg("-c")
        .arg(install.config_path())
        .arg("send")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("within 2 s") && err.contains("connecting to 10.77.0.2:80 did not finish"),
        "{err}"
    );
}
