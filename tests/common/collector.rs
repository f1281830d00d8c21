//! The real `surveyd-collector` against SQLite and, when
//! SURVEYD_TEST_POSTGRES_URL is set, PostgreSQL (each test in its own
//! schema): its configuration, `serve` with its output captured, the CLI,
//! and what landed in its table.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use surveyd::wire::receipt::{Kind, PublicKey, Signed};

use super::{
    block_on, exit_within_patience, http_exchange, outside_systemd, skip, Response, PATIENCE,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_surveyd-collector");
pub const SUBMIT: &str = "/api/stats/v1/submit";

/// Where one test's table lives.
pub enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { url: String, schema: String },
}

impl Backend {
    /// A SQLite database in a temp dir of its own.
    pub fn sqlite() -> Backend {
        Backend::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

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
    block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to SURVEYD_TEST_POSTGRES_URL");
        tokio::spawn(conn);
        f(client).await
    })
}

/// Run `case` once per available backend: always SQLite; PostgreSQL when
/// SURVEYD_TEST_POSTGRES_URL is set. Without it the PostgreSQL half is
/// skipped loudly, and under CI=true that is a failure (see `skip`).
pub fn for_each_backend(test: &str, case: impl Fn(Backend)) {
    case(Backend::sqlite());
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
        _ => skip(&format!(
            "{test} on PostgreSQL: SURVEYD_TEST_POSTGRES_URL is not set (see .ci/postgres.sh)"
        )),
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

/// A configuration in `dir`, with the receipt key beside it (never the
/// system's default path) unless `extra` names one.
pub fn write_config(dir: &Path, backend: &Backend, extra: &str) -> PathBuf {
    let path = dir.join("collector.toml");
    let key = if extra.contains("receipt_key") {
        String::new()
    } else {
        format!("receipt_key = {:?}\n", dir.join("receipt-key.pk8"))
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\n{key}{extra}",
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
        outside_systemd(&mut cmd)
            .arg("-c")
            .arg(&config_path)
            .arg("serve")
            .env("RUST_LOG", "debug")
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
        let status = exit_within_patience(&mut self.child, || {
            std::thread::sleep(Duration::from_millis(20))
        })
        .expect("collector did not stop");
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        (status, self.output())
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

    /// The public key `surveyd-collector key --json` prints for this
    /// collector's configuration.
    pub fn public_key(&self) -> PublicKey {
        let out = run_cli(&self.config_path, &["key", "--json"]);
        assert!(out.status.success(), "key failed: {}", out.stderr);
        let shown: Value = serde_json::from_str(&out.stdout).unwrap();
        PublicKey::parse(shown["public_key"].as_str().unwrap()).unwrap()
    }

    /// Asserts that `resp` is a 200 whose JSON body is a `kind` receipt
    /// signed by this collector's key for exactly `body`, and returns it.
    pub fn assert_receipt(&self, resp: &Response, kind: Kind, body: &[u8]) -> Signed {
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(
            resp.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{resp:?}"
        );
        let signed = Signed::parse(resp.body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {resp:?}"))
            .expect("a receipt in the answer");
        let sha = surveyd::wire::sha256_hex(body);
        signed
            .verify(&self.public_key(), kind, &sha, None)
            .unwrap_or_else(|e| panic!("{e}: {resp:?}"));
        signed
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
    let out = outside_systemd(&mut Command::new(BIN))
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run surveyd-collector");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
