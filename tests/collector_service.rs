//! The collector as systemd sees it, through a fake NOTIFY_SOCKET set on
//! the child only: READY once listening, WATCHDOG pings, SIGHUP reload of
//! the limits (RELOADING + MONOTONIC_USEC in one datagram, then READY; a bad
//! file keeps the running limits and says so in STATUS), SIGTERM with
//! STOPPING and exit 0.

mod collector_support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use collector_support::*;
use nix::sys::signal::Signal;

struct FakeSystemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl FakeSystemd {
    fn new() -> FakeSystemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        FakeSystemd {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// Datagrams until one satisfies `want`; returns that one.
    fn wait_for(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = vec![0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "no {what} from the collector");
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if want(&msg) {
                return msg;
            }
        }
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn notifies_ready_watchdog_reload_and_stopping() {
    let backend = Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let systemd = FakeSystemd::new();
    let c = Collector::start_with(
        &backend,
        Options {
            extra: "max_body_bytes = 65536\n[rate_limit]\nenabled = false\n",
            env: vec![
                ("NOTIFY_SOCKET", systemd.path.clone()),
                ("WATCHDOG_USEC", "400000".into()),
            ],
            ..Options::default()
        },
    );
    let ready = systemd.wait_for("READY=1", |m| has_line(m, "READY=1"));
    let status = ready.lines().find(|l| l.starts_with("STATUS=")).unwrap();
    assert!(
        status.contains(&c.addr.to_string()),
        "STATUS names the address: {status}"
    );
    systemd.wait_for("WATCHDOG=1", |m| has_line(m, "WATCHDOG=1"));

    // A body of 3000 bytes is fine under the 64 KiB limit...
    let padded = format!("{}{}", " ".repeat(3000), upstream_payload("aa", "bb", 1));
    assert_eq!(c.post(&padded).status, 204);

    // ...and refused after a reload that lowers the limit.
    let config = std::fs::read_to_string(&c.config_path).unwrap();
    let lowered = config.replace("max_body_bytes = 65536", "max_body_bytes = 2048");
    std::fs::write(&c.config_path, &lowered).unwrap();
    c.signal(Signal::SIGHUP);
    let reloading = systemd.wait_for("RELOADING=1", |m| has_line(m, "RELOADING=1"));
    let monotonic = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the RELOADING datagram");
    assert!(monotonic.parse::<u64>().unwrap() > 0);
    systemd.wait_for("READY=1 after reload", |m| has_line(m, "READY=1"));
    assert_eq!(c.post(&padded).status, 413);

    // A broken file keeps the running limits and says so.
    std::fs::write(&c.config_path, format!("{lowered}\nbogus_key = 1\n")).unwrap();
    c.signal(Signal::SIGHUP);
    systemd.wait_for("RELOADING=1", |m| has_line(m, "RELOADING=1"));
    let ready = systemd.wait_for("READY=1 after failed reload", |m| has_line(m, "READY=1"));
    assert!(
        ready.contains("STATUS=reload failed") && ready.contains("bogus_key"),
        "{ready}"
    );
    assert_eq!(
        c.post(&padded).status,
        413,
        "the previous limits still apply"
    );
    let small = upstream_payload("cc", "dd", 1);
    assert_eq!(c.post(&small).status, 204, "still serving");

    c.signal(Signal::SIGTERM);
    systemd.wait_for("STOPPING=1", |m| has_line(m, "STOPPING=1"));
    let (status, output) = c.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output)
    );
}

#[test]
fn sigterm_lets_an_inflight_connection_finish_and_commits_it() {
    let backend = Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let c = Collector::start(&backend);
    // Headers sent, body not yet: the request is in flight at SIGTERM.
    use std::io::{Read, Write};
    let body = upstream_payload("ee", "ff", 3);
    let mut s = std::net::TcpStream::connect(c.addr).unwrap();
    write!(
        s,
        "POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-Kopano-Stats-Request: 1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    // The collector must have read the headers before the signal: wait
    // until it has logged both requests (this one and a complete one).
    assert_eq!(c.post(&upstream_payload("11", "22", 1)).status, 204);
    let deadline = Instant::now() + PATIENCE;
    while String::from_utf8_lossy(&c.output())
        .matches("request POST")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the in-flight request never reached the handler"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.signal(Signal::SIGTERM);
    s.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer:?}");
    let (status, _) = c.wait_exit();
    assert!(status.success());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &backend, "");
    let out = run_cli(&config, &["report", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        2,
        "the in-flight report was committed"
    );
}

/// `serve` with `config` under the fake systemd, expected to fail at
/// start: its exit code, its standard error, and the STATUS it left.
fn failed_serve(config: &std::path::Path) -> (Option<i32>, String, String) {
    let systemd = FakeSystemd::new();
    let child = std::process::Command::new(BIN)
        .arg("-c")
        .arg(config)
        .arg("serve")
        .env("NOTIFY_SOCKET", &systemd.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let failed = systemd.wait_for("STATUS=failed", |m| m.contains("STATUS=failed: "));
    let (status, err) = wait_for_exit(
        child,
        &format!("the collector did not exit after saying {failed}"),
    );
    let status_line = failed
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap()
        .to_string();
    (status.code(), err, status_line)
}

#[test]
fn a_bad_configuration_at_start_is_in_status_and_exits_78() {
    let backend = Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &backend, "bogus_key = 1\n");
    let (code, err, status) = failed_serve(&config);
    assert_eq!(code, Some(78), "{err}");
    assert!(status.contains("bogus_key"), "{status}");
    assert!(err.contains("bogus_key"), "{err}");
}

#[test]
fn an_address_already_in_use_is_in_status_and_exits_71() {
    let backend = Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &backend, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&config, text).unwrap();
    let (code, err, status) = failed_serve(&config);
    assert_eq!(code, Some(71), "{err}");
    assert!(
        status.contains(&format!("cannot listen on {addr}")),
        "{status}"
    );
}

#[test]
fn a_database_that_cannot_be_opened_is_in_status_and_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    // The database's directory is a regular file: SQLite cannot create it.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let backend = Backend::Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let config = write_config(dir.path(), &backend, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &backend.database(),
        &blocker.join("collector.db").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let (code, err, status) = failed_serve(&config);
    assert_eq!(code, Some(69), "{err}");
    assert!(status.contains("not-a-dir"), "{status}");
}
