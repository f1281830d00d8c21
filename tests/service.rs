//! `surveyd run` against a fake systemd (a NOTIFY_SOCKET bound by the test)
//! and a loopback collector stand-in: the exact sd_notify datagrams, the
//! schedule, backoff, reload and stop.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Upper bound for any single wait: a hang detector, not a timing check.
const PATIENCE: Duration = Duration::from_secs(20);

const FAST: &str = "surveyclient_start_delay = 0\nsurveyclient_error_delay = 1\n";

#[test]
fn ready_then_watchdog_then_stopping_on_sigterm() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "surveyclient_start_delay = 3600\n");
    let mut daemon = Daemon::start(&install);
    let ready = daemon.ready();
    assert!(status_of(&ready).contains("next report at"), "{ready}");
    daemon.watchdog_pings(3);
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
    assert!(install.audit_text().is_empty(), "no report was due");
}

#[test]
fn reports_follow_the_interval_and_are_all_audited() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, &format!("{FAST}surveyclient_interval = 1\n"));
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    let got = daemon.wait_for_requests(&server, 3);
    assert!(got >= 3, "{got} reports; saw {:?}", daemon.seen);
    let status = daemon.expect("STATUS after a report", |d| {
        status_of(d).contains("accepted")
    });
    assert!(status_of(&status).contains("last: report"), "{status}");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    let events = audit_events(&install);
    let sends = events.iter().filter(|e| e["event"] == "send").count();
    assert_eq!(sends, server.requests().len(), "every request was audited");
    assert!(audit_results(&install).iter().all(|r| r["status"] == 204));
}

#[test]
fn failures_back_off_and_retry_after_is_honoured() {
    let server = stand_in(
        None,
        vec![
            Reply::Status(500),
            Reply::StatusWith(429, "Retry-After: 3".into()),
            Reply::Status(204),
        ],
    );
    let install = Install::new();
    install.write_config(
        &server.url,
        &format!("{FAST}surveyclient_interval = 3600\n"),
    );
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    let after_429 = daemon.expect("STATUS after the 429", |d| {
        status_of(d).contains("HTTP 429")
    });
    let wait: u64 = status_of(&after_429)
        .split("(in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(wait >= 2, "Retry-After: 3 is obeyed: {after_429}");
    daemon.expect("STATUS after success", |d| {
        status_of(d).contains("HTTP 204")
    });
    let statuses: Vec<_> = audit_results(&install)
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, [500, 429, 204]);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn watchdog_keeps_pinging_while_a_request_hangs_and_refused_connections_are_retried() {
    let hanging = stand_in(None, vec![Reply::Hang]);
    let install = Install::new();
    install.write_config(
        &hanging.url,
        &format!("{FAST}surveyclient_timeout = 2\nsurveyclient_interval = 3600\n"),
    );
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    assert_eq!(daemon.wait_for_requests(&hanging, 1), 1);
    // The request hangs for 2 s; the loop keeps feeding the watchdog.
    daemon.watchdog_pings(4);
    daemon.expect("STATUS after the timeout", |d| {
        status_of(d).contains("within 2 s")
    });
    assert!(
        daemon.wait_for_requests(&hanging, 2) >= 2,
        "retried after the timeout"
    );

    // Now point it at a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/submit", closed.local_addr().unwrap());
    drop(closed);
    install.write_config(&url, &format!("{FAST}surveyclient_interval = 3600\n"));
    daemon.signal(Signal::SIGHUP);
    daemon.expect("a refused attempt", |d| {
        status_of(d).contains("Connection refused")
    });
    daemon.watchdog_pings(2);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    let errors: Vec<_> = audit_results(&install)
        .iter()
        .map(|r| r["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("within 2 s")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("refused")), "{errors:?}");
}

#[test]
fn sighup_sends_reloading_with_monotonic_usec_in_one_datagram_then_ready() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "surveyclient_start_delay = 3600\n");
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    install.write_config(
        "http://127.0.0.1:9/x",
        "surveyclient_start_delay = 3600\nsurveyclient_interval = 0\n",
    );
    daemon.signal(Signal::SIGHUP);
    let reloading = daemon.expect("RELOADING=1", |d| d.contains("RELOADING=1"));
    let lines: Vec<&str> = reloading.lines().collect();
    assert!(lines.contains(&"RELOADING=1"), "{reloading}");
    let usec = lines
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the same datagram");
    let usec: u64 = usec.parse().unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(
        usec <= now_usec && usec > now_usec - 60_000_000,
        "CLOCK_MONOTONIC"
    );
    let ready = daemon.ready();
    assert!(status_of(&ready).contains("reporting off"), "{ready}");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn reload_with_bad_config_keeps_running_config_and_says_so() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, &format!("{FAST}surveyclient_interval = 1\n"));
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    daemon.wait_for_requests(&server, 1);
    install.write_config(&server.url, "surveyclient_interval = 1h\n");
    daemon.signal(Signal::SIGHUP);
    daemon.expect("RELOADING=1", |d| d.contains("RELOADING=1"));
    let ready = daemon.ready();
    let status = status_of(&ready);
    assert!(status.contains("reload rejected"), "{status}");
    assert!(
        status.contains(&format!("{}:", install.config_path().display())),
        "STATUS names the file and line: {status}"
    );
    // Still sending every second with the running configuration.
    let before = server.requests().len();
    assert!(daemon.wait_for_requests(&server, before + 2) >= before + 2);
    let (code, err) = daemon.stop();
    assert_eq!(code, 0);
    assert!(err.contains("reload rejected"), "logged: {err}");
}

#[test]
fn reload_to_interval_zero_stops_all_sending() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, &format!("{FAST}surveyclient_interval = 1\n"));
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    daemon.wait_for_requests(&server, 1);
    install.write_config(&server.url, &format!("{FAST}surveyclient_interval = 0\n"));
    daemon.signal(Signal::SIGHUP);
    let ready = daemon.ready();
    assert!(status_of(&ready).contains("reporting off"));
    // A report in flight at the reload may still finish; none may start.
    daemon.watchdog_pings(2);
    let settled = audit_events(&install)
        .iter()
        .filter(|e| e["event"] == "send")
        .count();
    // Ten watchdog periods are five old intervals.
    daemon.watchdog_pings(10);
    let sends = audit_events(&install)
        .iter()
        .filter(|e| e["event"] == "send")
        .count();
    assert_eq!(sends, settled, "no report starts after a reload to 0");
    assert_eq!(server.requests().len(), settled);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn sigterm_cancels_an_in_flight_request_and_audits_it() {
    let hanging = stand_in(None, vec![Reply::Hang]);
    let install = Install::new();
    install.write_config(&hanging.url, &format!("{FAST}surveyclient_timeout = 60\n"));
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    assert_eq!(daemon.wait_for_requests(&hanging, 1), 1);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    let results = audit_results(&install);
    assert_eq!(results.len(), 1);
    assert!(results[0]["error"].as_str().unwrap().contains("cancelled"));
    let out = install.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn restart_does_not_send_early() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_start_delay = 0\n");
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    daemon.expect("a success", |d| status_of(d).contains("accepted"));
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);

    let mut daemon = Daemon::start(&install);
    let ready = daemon.ready();
    let status = status_of(&ready);
    let wait: u64 = status
        .split("(in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        wait > 3000,
        "next report an interval after the last: {status}"
    );
    daemon.watchdog_pings(5);
    assert_eq!(server.requests().len(), 1);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn sigusr1_sends_a_report_now() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_start_delay = 3600\n");
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    daemon.watchdog_pings(2);
    assert!(server.requests().is_empty(), "nothing due for an hour");
    daemon.signal(Signal::SIGUSR1);
    assert_eq!(daemon.wait_for_requests(&server, 1), 1);
    if !daemon
        .seen
        .iter()
        .any(|d| status_of(d).contains("accepted"))
    {
        daemon.expect("STATUS after the report", |d| {
            status_of(d).contains("accepted")
        });
    }
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn bad_config_at_start_exits_78_and_names_the_line() {
    let install = Install::new();
    install.write_config(
        "http://127.0.0.1:9/x",
        "surveyclient_ssl_verify = perhaps\n",
    );
    let out = install.run(&["run"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(&format!("{}:", install.config_path().display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sigterm_stops_the_service_even_while_a_read_blocks_its_loop() {
    let install = Install::new();
    let fifo = install.path("facts.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!("{FAST}surveyclient_facts = file:{}\n", fifo.display()),
    );
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    // A writer that never writes: its open returns once the daemon has
    // opened the FIFO to read facts, which then blocks until EOF.
    let (opened, writer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&fifo) {
            let _ = opened.send(file);
        }
    });
    // However the facts are read, the report has started by the time the
    // daemon opened the FIFO or recorded a result without it.
    let deadline = Instant::now() + PATIENCE;
    let _writer = loop {
        if let Ok(file) = writer.recv_timeout(Duration::from_millis(20)) {
            break Some(file);
        }
        if !audit_results(&install).is_empty() {
            break None;
        }
        assert!(Instant::now() < deadline, "the report never started");
    };
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
}

/// Starts a daemon with nothing due, then moves its audit log by reload to
/// `log_dir` and asks for a report: the log is opened there first.
fn report_into_moved_log(log_dir: &std::path::Path) -> (Install, StandIn, Daemon) {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, "surveyclient_start_delay = 3600\n");
    let mut daemon = Daemon::start(&install);
    daemon.ready();
    let moved = log_dir.join("audit.log");
    let config = std::fs::read_to_string(install.config_path()).unwrap();
    let config = config.replace(
        &install.audit_log().display().to_string(),
        &moved.display().to_string(),
    );
    std::fs::write(install.config_path(), config).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.expect("RELOADING=1", |d| d.lines().any(|l| l == "RELOADING=1"));
    daemon.ready();
    daemon.signal(Signal::SIGUSR1);
    (install, server, daemon)
}

#[test]
fn an_audit_log_in_a_directory_every_user_can_write_ends_the_service_with_73() {
    if !is_root() {
        skip("root is refused a directory every user can write; only root sees it");
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let open_dir = outside.path().join("everyone");
    std::fs::create_dir(&open_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    let (_install, server, mut daemon) = report_into_moved_log(&open_dir);
    let failed = daemon.expect("STATUS=failed", |d| status_of(d).starts_with("failed:"));
    assert!(
        status_of(&failed).contains("refusing to write as root"),
        "{failed}"
    );
    let (code, err) = daemon.exited();
    assert_eq!(code, 73, "{err}");
    assert!(err.contains("every user can write it"), "{err}");
    assert!(server.requests().is_empty(), "nothing was sent");
    assert_eq!(
        std::fs::read_dir(&open_dir).unwrap().count(),
        0,
        "nothing written there"
    );
}

#[test]
fn an_audit_log_with_no_chain_to_continue_ends_the_service_with_73() {
    let outside = tempfile::tempdir().unwrap();
    // An emptied log whose rotated file holds no entry either: the chain
    // cannot go on without the admin moving the files aside.
    std::fs::write(outside.path().join("audit.log"), "").unwrap();
    std::fs::write(outside.path().join("audit.log.1"), "").unwrap();

    let (_install, server, mut daemon) = report_into_moved_log(outside.path());
    let failed = daemon.expect("STATUS=failed", |d| status_of(d).starts_with("failed:"));
    assert!(status_of(&failed).contains("no readable entry"), "{failed}");
    let (code, err) = daemon.exited();
    assert_eq!(code, 73, "{err}");
    assert!(err.contains("move"), "the log says what to do: {err}");
    assert!(server.requests().is_empty(), "nothing was sent");
}
