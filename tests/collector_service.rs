//! The collector as systemd sees it, through a fake NOTIFY_SOCKET set on
//! the child only: READY once listening, WATCHDOG pings, SIGHUP reload of
//! the limits (RELOADING + MONOTONIC_USEC in one datagram, then READY; a bad
//! file keeps the running limits and says so in STATUS), SIGTERM with
//! STOPPING and exit 0.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn notifies_ready_watchdog_reload_and_stopping() {
    let backend = Backend::sqlite();
    let mut systemd = NotifySocket::new();
    let c = Collector::start_with(
        &backend,
        Options {
            extra: "max_body_bytes = 65536\n[rate_limit]\nenabled = false\n",
            env: vec![
                ("NOTIFY_SOCKET", systemd.path.display().to_string()),
                ("WATCHDOG_USEC", WATCHDOG_USEC.to_string()),
            ],
            ..Options::default()
        },
    );
    let ready = systemd.expect_line("READY=1");
    let status = ready.lines().find(|l| l.starts_with("STATUS=")).unwrap();
    assert!(
        status.contains(&c.addr.to_string()),
        "STATUS names the address: {status}"
    );
    systemd.expect_line("WATCHDOG=1");

    // A body of 3000 bytes is fine under the 64 KiB limit...
    let padded = format!("{}{}", " ".repeat(3000), upstream_payload("aa", "bb", 1));
    assert_eq!(c.post(&padded).status, 200);

    // ...and refused after a reload that lowers the limit.
    let config = std::fs::read_to_string(&c.config_path).unwrap();
    let lowered = config.replace("max_body_bytes = 65536", "max_body_bytes = 2048");
    std::fs::write(&c.config_path, &lowered).unwrap();
    c.signal(Signal::SIGHUP);
    let reloading = systemd.expect_line("RELOADING=1");
    let monotonic = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the RELOADING datagram");
    assert!(monotonic.parse::<u64>().unwrap() > 0);
    systemd.expect("READY=1 after reload", |m| has_line(m, "READY=1"));
    assert_eq!(c.post(&padded).status, 413);

    // A broken file keeps the running limits and says so.
    std::fs::write(&c.config_path, format!("{lowered}\nbogus_key = 1\n")).unwrap();
    c.signal(Signal::SIGHUP);
    systemd.expect_line("RELOADING=1");
    let ready = systemd.expect("READY=1 after failed reload", |m| has_line(m, "READY=1"));
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
    assert_eq!(c.post(&small).status, 200, "still serving");

    c.signal(Signal::SIGTERM);
    systemd.expect_line("STOPPING=1");
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
    let backend = Backend::sqlite();
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
    assert_eq!(c.post(&upstream_payload("11", "22", 1)).status, 200);
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
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
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
    let mut systemd = NotifySocket::new();
    let child = std::process::Command::new(BIN)
        .arg("-c")
        .arg(config)
        .arg("serve")
        .env("NOTIFY_SOCKET", &systemd.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let failed = systemd.expect("STATUS=failed", |m| m.contains("STATUS=failed: "));
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
    let backend = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &backend, "bogus_key = 1\n");
    let (code, err, status) = failed_serve(&config);
    assert_eq!(code, Some(78), "{err}");
    assert!(status.contains("bogus_key"), "{status}");
    assert!(err.contains("bogus_key"), "{err}");
}

#[test]
fn an_address_already_in_use_is_in_status_and_exits_71() {
    let backend = Backend::sqlite();
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
    let backend = Backend::sqlite();
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
