//! The collector reaches PostgreSQL over TLS, libpq style: a throwaway
//! cluster with `ssl = on` and a certificate from a test CA (rcgen) that
//! accepts TCP clients over TLS only (`hostssl`). With the right CA in
//! `sslrootcert` the real `serve` connects (verify-full by default) and
//! stores a report over TLS; with another CA it refuses to start and says
//! what to do; `sslmode=disable` is turned away by the server.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

use common::*;

const APP_MID: &str = "0f1e2d3c4b5a49788796a5b4c3d2e1f0";
const APP_GUID: &str = "a1b2c3d4e5f647089a1b2c3d4e5f6a7b";

/// A PostgreSQL cluster of this test's own, stopped and deleted on drop.
struct TlsCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
}

fn as_postgres(bindir: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
    c
}

fn must(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsCluster {
    fn start(pki: &Pki) -> TlsCluster {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (.ci/postgres.sh installs it)")
            .map(|e| e.unwrap().path().join("bin"))
            .max()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let chown = |p: &Path| {
            must(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(p),
                "chown",
            )
        };
        chown(dir.path());
        must(
            as_postgres(&bindir, "initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ]),
            "initdb",
        );
        std::fs::write(data.join("server.crt"), &pki.cert_pem).unwrap();
        std::fs::write(data.join("server.key"), &pki.key_pem).unwrap();
        // TCP only over TLS: a plaintext client is refused by the server.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        chown(&data);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        for _ in 0..20 {
            let port = 20_000 + rand::random::<u16>() % 40_000;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
                 -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
                dir.path().display()
            );
            let started = as_postgres(&bindir, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-w", "-t", "30", "-o", &options, "start"])
                .output()
                .unwrap();
            if started.status.success() {
                return TlsCluster { dir, bindir, port };
            }
        }
        panic!("could not start a PostgreSQL cluster with TLS");
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?application_name=history_tls&{query}",
            self.port
        )
    }

    /// Whether the collector's session (by application_name) uses TLS,
    /// asked over the cluster's unix socket.
    fn collector_uses_tls(&self) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bindir.join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-At", "-c"])
            .arg(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'history_tls'",
            )
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn config(dir: &Path, database: &str) -> PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\ndatabase = {database:?}\n"),
    )
    .unwrap();
    path
}

fn serve(config: &Path) -> Child {
    outside_systemd(&mut Command::new(BIN))
        .arg("-c")
        .arg(config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The address `serve` listens on, once it says so; None if it exited.
fn listening(child: &mut Child) -> Option<SocketAddr> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            if let Some(addr) = addr {
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(PATIENCE).ok()
}

fn stop(mut child: Child) -> ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    exit_within_patience(&mut child, || {
        std::thread::sleep(std::time::Duration::from_millis(20))
    })
    .expect("collector stops on SIGTERM")
}

#[test]
fn postgres_over_tls_verifies_the_server_and_refuses_a_wrong_ca() {
    if !is_root() {
        skip("a PostgreSQL cluster of its own needs root (runuser postgres)");
        return;
    }
    let pki = pki(false);
    let cluster = TlsCluster::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let right_ca = dir.path().join("ca.pem");
    std::fs::write(&right_ca, &pki.ca_pem).unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, pki_other_ca()).unwrap();

    // The right CA: verify-full, the default with sslrootcert.
    let url = cluster.url(&format!("sslrootcert={}", right_ca.display()));
    let cfg = config(dir.path(), &url);
    let mut child = serve(&cfg);
    let addr = listening(&mut child).expect("serve starts with the right CA");
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let body = surveyd_payload("app-v1", APP_MID, APP_GUID, "10.0.1", 12);
    let r = http_exchange(
        stream,
        "POST",
        SUBMIT,
        &[
            ("Content-Type", "application/json"),
            ("X-Kopano-Stats-Request", "1"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(cluster.collector_uses_tls(), "t", "the session is TLS");
    assert!(stop(child).success());
    let out = run_cli(&cfg, &["report", "--format", "json"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains(&installation_uid(APP_MID, APP_GUID)));

    // Another CA: refused at start, with the reason and what to do.
    let cfg = config(
        dir.path(),
        &cluster.url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            wrong_ca.display()
        )),
    );
    let (status, err) = wait_for_exit(serve(&cfg), "serve with the wrong CA did not exit");
    assert_eq!(status.code(), Some(69), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("sslrootcert=PATH"), "says what to do: {err}");

    // Plaintext is refused by this server (hostssl only): sslmode=disable
    // really does not use TLS.
    let cfg = config(dir.path(), &cluster.url("sslmode=disable"));
    let (status, err) = wait_for_exit(serve(&cfg), "serve without TLS did not exit");
    assert_eq!(status.code(), Some(69), "{err}");
    assert!(err.contains("no encryption"), "{err}");
}

/// A CA that signed nothing this server holds.
fn pki_other_ca() -> String {
    pki(false).ca_pem
}
