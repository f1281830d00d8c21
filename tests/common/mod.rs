//! Shared test harness: a scratch installation (machine id, config, audit
//! log, state dir), the real `surveyd` binary, `surveyd run` against a fake
//! systemd, and a loopback collector stand-in that records every byte it
//! receives (plain, TLS or unix socket).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The raw machine id of the scratch installation: it must never leave it.
pub const RAW_MACHINE_ID: &str = "5e1f0c2a9b8d47e6a3c4b2d1f0e9a8b7";
/// A raw server GUID configured statically: it must never leave either.
pub const RAW_GUID: &str = "C0FFEE00DEADBEEF0123456789ABCDEF";
/// The default application id of the `app` scheme.
pub const APP_ID: &str = "187f157428b74898a629521121fa9f49";

pub fn surveyd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_surveyd"));
    cmd.env_remove("SURVEYD_CONFIG")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC");
    cmd
}

/// The upstream Kopano configuration files copied into tests/fixtures/kopano.
pub fn kopano_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kopano")
        .join(name)
}

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

/// A scratch installation in a temp dir.
pub struct Install {
    pub dir: tempfile::TempDir,
}

impl Install {
    pub fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("machine-id"), format!("{RAW_MACHINE_ID}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        Install { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("log/audit.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("surveyd.cfg")
    }

    /// Writes surveyd.cfg: the scratch paths, then `extra` lines.
    pub fn write_config(&self, url: &str, extra: &str) -> PathBuf {
        let text = format!(
            "surveyclient_url = {url}\n\
             surveyclient_machine_id_file = {}\n\
             surveyclient_audit_log = {}\n\
             surveyclient_state_dir = {}\n\
             surveyclient_server_guid = {RAW_GUID}\n\
             surveyclient_program_name = kopano-server\n\
             surveyclient_program_version = 8.7.80\n\
             surveyclient_timeout = 5\n\
             {extra}\n",
            self.path("machine-id").display(),
            self.audit_log().display(),
            self.path("state").display(),
        );
        std::fs::write(self.config_path(), text).unwrap();
        self.consent_to_upload(url);
        self.config_path()
    }

    /// The consent file `surveyd consent yes` writes, so that the tests of
    /// sending see uploads; tests/consent.rs removes it to start fresh.
    pub fn consent_to_upload(&self, url: &str) {
        let consent = serde_json::json!({
            "mode": "upload",
            "schema": surveyd::wire::SCHEMA,
            "fields": surveyd::daemon::payload::acknowledgeable(&Default::default()),
            "url": url,
            "time": "2026-01-01T00:00:00Z",
        });
        std::fs::create_dir_all(self.path("state")).unwrap();
        std::fs::write(self.path("state/consent"), format!("{consent}\n")).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = surveyd();
        cmd.arg("-c").arg(self.config_path()).args(args);
        cmd
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.audit_log()).unwrap_or_default()
    }
}

/// An installation with `n` reports already sent and audited, and the
/// stand-in that received them.
pub fn install_with_reports(n: usize, extra: &str) -> (Install, StandIn) {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, extra);
    for _ in 0..n {
        let out = install.run(&["send"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    (install, server)
}

/// Tampers with the audit log: `change` edits its lines in place.
pub fn rewrite_lines(install: &Install, change: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = install.audit_text().lines().map(String::from).collect();
    change(&mut lines);
    std::fs::write(install.audit_log(), lines.join("\n") + "\n").unwrap();
}

/// Every audit log line, parsed.
pub fn audit_events(install: &Install) -> Vec<serde_json::Value> {
    install
        .audit_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The audit log's `result` events, oldest first.
pub fn audit_results(install: &Install) -> Vec<serde_json::Value> {
    audit_events(install)
        .into_iter()
        .filter(|e| e["event"] == "result")
        .collect()
}

impl Default for Install {
    fn default() -> Self {
        Self::new()
    }
}

/// `sd_id128_get_app_specific()` as systemd computes it, for checking
/// what surveyd sent.
pub fn systemd_app_specific(id_hex: &str, app_id_hex: &str) -> String {
    use hmac::{Hmac, Mac};
    let key = hex::decode(id_hex.replace('-', "")).unwrap();
    let app = hex::decode(app_id_hex).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(&app);
    let mut id = mac.finalize().into_bytes()[..16].to_vec();
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    hex::encode(id)
}

/// Fails if any form of a raw identifier occurs in `bytes`.
pub fn assert_no_raw_ids(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let dashed = |id: &str| {
        let id = id.to_ascii_lowercase();
        format!(
            "{}-{}-{}-{}-{}",
            &id[0..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..32]
        )
    };
    for raw in [RAW_MACHINE_ID, RAW_GUID] {
        let raw_lower = raw.to_ascii_lowercase();
        assert!(
            !text.contains(&raw_lower),
            "{what} contains a raw identifier"
        );
        assert!(
            !text.contains(&dashed(raw)),
            "{what} contains a raw identifier (UUID form)"
        );
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Upper bound for any single wait on the daemon: a hang detector, not a
/// timing check. Private so it cannot clash with the collector harness's
/// `PATIENCE` in tests that use both.
const DAEMON_PATIENCE: Duration = Duration::from_secs(30);

/// Watchdog period given to the daemon; it pings every half of it.
pub const WATCHDOG_USEC: u64 = 400_000;

/// `surveyd run` against a fake systemd: a NOTIFY_SOCKET bound by the test
/// that records every datagram. Dropping it kills the daemon by its pid.
pub struct Daemon {
    /// `surveyd run`, or the harness that started it.
    child: Child,
    /// The surveyd process itself.
    pid: Pid,
    socket: UnixDatagram,
    /// Every datagram received so far, in order.
    pub seen: Vec<String>,
    /// Once `child` is reaped its pid may be reused: never signal it then.
    exited: bool,
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
        let socket_path = install.path("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut child = cmd
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = match pid_file {
            None => child.id() as i32,
            Some(path) => {
                let deadline = Instant::now() + DAEMON_PATIENCE;
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
            socket,
            seen: Vec::new(),
            exited: false,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid, signal).unwrap();
    }

    /// Reads datagrams until one satisfies `want`; returns it.
    pub fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DAEMON_PATIENCE;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(datagram.clone());
                if want(&datagram) {
                    return datagram;
                }
            }
        }
        panic!("no datagram with {what}; saw {:?}", self.seen);
    }

    /// The next datagram with exactly `line` among its lines.
    pub fn expect_line(&mut self, line: &str) -> String {
        self.expect(line, |d| d.lines().any(|l| l == line))
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

    /// Counts watchdog pings until `n` more have arrived, returning every
    /// other datagram seen meanwhile.
    pub fn watchdog_pings(&mut self, n: usize) -> Vec<String> {
        let mut others = Vec::new();
        let mut pings = 0;
        let deadline = Instant::now() + DAEMON_PATIENCE;
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
        let deadline = Instant::now() + DAEMON_PATIENCE;
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
        let deadline = Instant::now() + DAEMON_PATIENCE;
        loop {
            if let Some(code) = self.exit_code() {
                return (code, self.take_stderr());
            }
            assert!(Instant::now() < deadline, "{hang}; saw {:?}", self.seen);
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn exit_code(&mut self) -> Option<i32> {
        let status = self.child.try_wait().unwrap()?;
        self.exited = true;
        Some(status.code().unwrap_or(-1))
    }

    fn take_stderr(&mut self) -> String {
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
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

/// The STATUS= text of a notify datagram, empty when it has none.
pub fn status_of(datagram: &str) -> String {
    datagram
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_default()
        .to_string()
}

/// What the stand-in collector answers.
#[derive(Clone)]
pub enum Reply {
    Status(u16),
    /// Status plus raw extra header lines (`Retry-After: 5`).
    StatusWith(u16, String),
    /// Read the request, then never answer.
    Hang,
}

/// One request as it arrived on the wire.
#[derive(Clone, Debug)]
pub struct Received {
    pub raw: Vec<u8>,
}

impl Received {
    pub fn head(&self) -> String {
        let end = find(&self.raw, b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }

    pub fn body(&self) -> &[u8] {
        let end = find(&self.raw, b"\r\n\r\n").unwrap();
        &self.raw[end + 4..]
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head().lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A collector stand-in on loopback, in its own thread. It records every
/// request byte for byte and answers each with the next scripted reply
/// (the last one repeats). It stops with the test process.
pub struct StandIn {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub url: String,
    /// TLS handshakes that failed (for the ssl_verify tests).
    pub handshake_failures: Arc<Mutex<u32>>,
}

impl StandIn {
    /// `127.0.0.1:PORT` of a TCP stand-in, as a proxy variable names it.
    pub fn address(&self) -> String {
        self.url.split('/').nth(2).unwrap().to_string()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (bounded).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Throwaway PKI: a CA the client can trust, and a server cert it signed.
pub struct Pki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    /// The server certificate and key as PEM, for servers that read files.
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn pki(self_signed: bool) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "surveyd test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server_cert = if self_signed {
        server_params.self_signed(&server_key).unwrap()
    } else {
        server_params.signed_by(&server_key, &ca, &ca_key).unwrap()
    };
    let cert_pem = server_cert.pem();
    let key_pem = server_key.serialize_pem();
    let chain = vec![server_cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(config),
        cert_pem,
        key_pem,
    }
}

fn reply_bytes(reply: &Reply) -> Option<Vec<u8>> {
    let (status, extra) = match reply {
        Reply::Status(s) => (*s, String::new()),
        Reply::StatusWith(s, extra) => (*s, format!("{extra}\r\n")),
        Reply::Hang => return None,
    };
    Some(
        format!(
            "HTTP/1.1 {status} Whatever\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// Reads one HTTP/1.1 request (head plus Content-Length body).
fn read_request(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                return Some(raw);
            }
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return (!raw.is_empty()).then_some(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn serve_one(
    stream: &mut (impl Read + Write),
    replies: &Mutex<Vec<Reply>>,
    received: &Mutex<Vec<Received>>,
) {
    let Some(raw) = read_request(stream) else {
        return;
    };
    received.lock().unwrap().push(Received { raw });
    let reply = {
        let mut replies = replies.lock().unwrap();
        if replies.len() > 1 {
            replies.remove(0)
        } else {
            replies[0].clone()
        }
    };
    match reply_bytes(&reply) {
        Some(bytes) => {
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
        }
        None => std::thread::sleep(Duration::from_secs(30)),
    }
}

/// Starts a stand-in on 127.0.0.1: plain HTTP when `tls` is None.
pub fn stand_in(tls: Option<Arc<rustls::ServerConfig>>, replies: Vec<Reply>) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(0));
    let replies = Arc::new(Mutex::new(replies));
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let received = received.clone();
        let failures = failures.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(stream) = stream else { continue };
                let (received, failures, replies, tls) = (
                    received.clone(),
                    failures.clone(),
                    replies.clone(),
                    tls.clone(),
                );
                std::thread::spawn(move || {
                    handle(stream, tls, &replies, &received, &failures);
                });
            }
        });
    }
    StandIn {
        received,
        url: format!("{scheme}://127.0.0.1:{port}/api/stats/v1/submit"),
        handshake_failures: failures,
    }
}

fn handle(
    mut stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    replies: &Mutex<Vec<Reply>>,
    received: &Mutex<Vec<Received>>,
    failures: &Mutex<u32>,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tls {
        None => serve_one(&mut stream, replies, received),
        Some(config) => {
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            while conn.is_handshaking() {
                if conn.complete_io(&mut stream).is_err() {
                    *failures.lock().unwrap() += 1;
                    return;
                }
            }
            let mut tls = rustls::StreamOwned::new(conn, stream);
            serve_one(&mut tls, replies, received);
        }
    }
}

/// Starts a stand-in on a unix socket at `path`.
pub fn unix_stand_in(path: &Path, replies: Vec<Reply>) -> StandIn {
    let listener = UnixListener::bind(path).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let replies = Arc::new(Mutex::new(replies));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(mut stream) = stream else { continue };
                serve_one(&mut stream, &replies, &received);
            }
        });
    }
    StandIn {
        received,
        url: format!("unix:{}", path.display()),
        handshake_failures: Arc::new(Mutex::new(0)),
    }
}
