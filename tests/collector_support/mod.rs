//! Shared harness for the collector's integration tests: runs the real
//! `surveyd-collector` binary against SQLite and, when
//! SURVEYD_TEST_POSTGRES_URL is set, PostgreSQL (each test in its own
//! schema), speaks plain HTTP/1.1 to it, and builds payloads the way both
//! client generations write them.

#![allow(dead_code)] // each test crate uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_surveyd-collector");
pub const SUBMIT: &str = "/api/stats/v1/submit";
/// Upper bound for anything the harness waits on.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits (bounded) for `child` to exit by itself; if it does not, kills it
/// and fails saying `hang`. Returns its status and standard error.
pub fn wait_for_exit(mut child: Child, hang: &str) -> (ExitStatus, String) {
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{hang}");
        }
        std::thread::sleep(Duration::from_millis(20));
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

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Where one test's table lives.
pub enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { url: String, schema: String },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// The `database` setting for this backend.
    pub fn database(&self) -> String {
        match self {
            Backend::Sqlite { dir } => dir.path().join("surveys.db").display().to_string(),
            Backend::Postgres { url, schema } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self {
            Backend::Sqlite { dir } => Some(dir.path().join("surveys.db")),
            Backend::Postgres { .. } => None,
        }
    }

    /// Run SQL against this test's PostgreSQL schema.
    pub fn pg_query(&self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        let Backend::Postgres { .. } = self else {
            panic!("pg_query on {}", self.name())
        };
        let url = self.database();
        let sql = sql.to_owned();
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        pg_blocking(
            move |client| async move {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let rows = client.query(sql.as_str(), &refs).await.expect("pg query");
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<_, Option<String>>(i))
                            .collect()
                    })
                    .collect()
            },
            &url,
        )
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { url, schema } = self {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            pg_blocking(
                move |client| async move {
                    let _ = client.batch_execute(&sql).await;
                },
                &url.clone(),
            );
        }
    }
}

fn pg_blocking<F, Fut, T>(f: F, url: &str) -> T
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to SURVEYD_TEST_POSTGRES_URL");
        tokio::spawn(conn);
        f(client).await
    })
}

/// Run `case` once per available backend: always SQLite; PostgreSQL when
/// SURVEYD_TEST_POSTGRES_URL is set. Without it the PostgreSQL half is
/// skipped loudly, and under CI=true that is a failure.
pub fn for_each_backend(test: &str, case: impl Fn(Backend)) {
    case(Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    });
    match std::env::var("SURVEYD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "t_{}_{}",
                test.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(30)
                    .collect::<String>(),
                rand::random::<u32>()
            );
            let create = format!("CREATE SCHEMA {schema}");
            pg_blocking(
                move |client| async move {
                    client.batch_execute(&create).await.expect("create schema");
                },
                &url,
            );
            case(Backend::Postgres { url, schema });
        }
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but SURVEYD_TEST_POSTGRES_URL is not set: the PostgreSQL half of {test} cannot run");
            }
            eprintln!("SKIP: {test} on PostgreSQL: SURVEYD_TEST_POSTGRES_URL is not set (see .ci/postgres.sh)");
        }
    }
}

/// A running `surveyd-collector serve`.
pub struct Collector {
    child: Child,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    _config_dir: tempfile::TempDir,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub struct Options<'a> {
    /// Extra TOML appended to listen/database.
    pub extra: &'a str,
    pub env: Vec<(&'a str, String)>,
    /// Start under this RLIMIT_NOFILE (soft and hard), through prlimit(1).
    pub nofile: Option<u64>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            extra: "[rate_limit]\nenabled = false\n",
            env: vec![],
            nofile: None,
        }
    }
}

pub fn write_config(dir: &Path, backend: &Backend, extra: &str) -> PathBuf {
    let path = dir.join("collector.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\n{extra}",
        backend.database()
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Collector {
    pub fn start(backend: &Backend) -> Collector {
        Collector::start_with(backend, Options::default())
    }

    pub fn start_with(backend: &Backend, opts: Options) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), backend, opts.extra);
        let mut cmd = match opts.nofile {
            // prlimit execs the collector, so the child's pid is its pid.
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("-c")
            .arg(&config_path)
            .arg("serve")
            .env("RUST_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn surveyd-collector");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let lines_tx = lines_tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    output.lock().unwrap().extend_from_slice(&line);
                    let _ = lines_tx.send(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                }
            }));
        }
        drop(lines_tx);
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap();
                        break addr.parse().expect("listening address");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    panic!(
                        "collector did not start ({status}):\n{}",
                        String::from_utf8_lossy(&output.lock().unwrap())
                    );
                }
            }
        };
        Collector {
            child,
            addr,
            config_path,
            _config_dir: dir,
            output,
            readers,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// Everything the collector printed so far, stdout and stderr.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn stop(self) -> (ExitStatus, Vec<u8>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    /// Wait (bounded) for the exit; returns everything it printed.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<u8>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    reader.join().unwrap();
                }
                return (status, self.output());
            }
            assert!(Instant::now() < deadline, "collector did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn post(&self, body: &str) -> Response {
        self.request(
            "POST",
            SUBMIT,
            &[
                ("Content-Type", "application/json"),
                ("X-Kopano-Stats-Request", "1"),
            ],
            body.as_bytes(),
        )
    }

    /// VmRSS of the collector process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let stream = TcpStream::connect(self.addr).unwrap();
        http_exchange(stream, method, path, headers, body)
    }

    /// `report --format json` with this collector's configuration.
    pub fn rows(&self) -> Vec<Value> {
        let out = run_cli(&self.config_path, &["report", "--format", "json"]);
        assert!(out.status.success(), "report failed: {}", out.stderr);
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_cli(config: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run surveyd-collector");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// A TCP connection to `addr` from the local address `source` (another
/// loopback address stands for another client).
pub fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// One request with `Connection: close` over any byte stream.
pub fn http_exchange<S: Read + Write>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; what arrived is enough.
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A payload as surveyd sends it: canonical, hashed identifiers.
pub fn surveyd_payload(
    scheme: &str,
    machine_hash: &str,
    guid_hash: &str,
    version: &str,
    active: i64,
) -> String {
    let s = |v: &str| serde_json::json!({"desc": "", "type": "string", "value": v});
    let n = |v: i64| serde_json::json!({"desc": "", "mode": "gauge", "type": "int", "value": v});
    serde_json::json!({
        "version": 2,
        "stats": {
            "id_scheme": s(scheme),
            "machine_id_hash": s(machine_hash),
            "server_guid_hash": s(guid_hash),
            "program_name": s("kopano-server"),
            "program_version": s(version),
            "osrelease": s("Debian GNU/Linux 12 (bookworm)"),
            "utsname": s("Linux x86_64 6.1.0-18-amd64"),
            "userplugin": s("ldap"),
            "attachment_storage": s("files"),
            "usercnt_active": n(active),
            "usercnt_contact": n(3),
            "usercnt_equipment": n(1),
            "usercnt_na_user": n(0),
            "usercnt_nonactive": n(2),
            "usercnt_room": n(4),
        }
    })
    .to_string()
}

/// A payload as kopano-server's jsoncpp StreamWriter writes it: tab
/// indentation, ` : ` separators, raw machine id and server GUID.
pub fn upstream_payload(raw_machine_id: &str, raw_guid: &str, active: i64) -> String {
    let string = |name: &str, desc: &str, value: &str| {
        format!("\t\t\"{name}\" : \n\t\t{{\n\t\t\t\"desc\" : \"{desc}\",\n\t\t\t\"type\" : \"string\",\n\t\t\t\"value\" : \"{value}\"\n\t\t}}")
    };
    let int = |name: &str, desc: &str, value: i64| {
        format!("\t\t\"{name}\" : \n\t\t{{\n\t\t\t\"desc\" : \"{desc}\",\n\t\t\t\"mode\" : \"counter\",\n\t\t\t\"type\" : \"int\",\n\t\t\t\"value\" : {value}\n\t\t}}")
    };
    let entries = [
        string("machine_id", "", raw_machine_id),
        string(
            "osrelease",
            "Pretty operating system name",
            "Debian GNU/Linux 10 (buster)",
        ),
        string("program_name", "Program name", "kopano-server"),
        string("program_version", "Program version", "8.7.80"),
        string("server_guid", "Server GUID", raw_guid),
        string("userplugin", "User plugin", "db"),
        int("usercnt_active", "Active users", active),
        int("usercnt_contact", "Contacts", 7),
        int("usercnt_equipment", "Equipment", 0),
        int("usercnt_na_user", "Non-active users", 1),
        int("usercnt_nonactive", "Total non-active objects", 5),
        int("usercnt_room", "Rooms", 2),
        string(
            "utsname",
            "Pretty platform name",
            "Linux x86_64 4.19.0-6-amd64",
        ),
    ];
    format!(
        "{{\n\t\"stats\" : \n\t{{\n{}\n\t}},\n\t\"version\" : 2\n}}",
        entries.join(",\n")
    )
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
