//! Hostile inputs against the real binary: FIFOs, devices, links, huge and
//! endless files, deep include chains, over-long values, endless or
//! lingering fact commands. Each must end in a clear message with the
//! service still answering systemd; none may hang, eat memory or follow a
//! link it should not. Fixed system paths (os-release) are replaced only
//! inside a private mount namespace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Address space allowed to a surveyd that meets an endless input: far
/// more than it needs, far less than reading /dev/zero or `yes` until the
/// timeout would take.
const MEMORY_LIMIT: &str = "--as=1073741824";

/// `surveyd ARGS` under the memory limit, killed if it outlives PATIENCE.
fn bounded(install: &Install, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg(PATIENCE.as_secs().to_string())
        .arg("prlimit")
        .arg(MEMORY_LIMIT)
        .arg(env!("CARGO_BIN_EXE_surveyd"))
        .arg("-c")
        .arg(install.config_path())
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC");
    cmd.output().unwrap()
}

fn payload(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `dir/f0.cfg` includes `f1.cfg`, which includes `f2.cfg`, ... `f{n}.cfg`.
fn include_chain(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("f{i}.cfg")),
            format!("k{i} = {i}\n!include f{}.cfg\n", i + 1),
        )
        .unwrap();
    }
    std::fs::write(dir.join(format!("f{n}.cfg")), "deepest = yes\n").unwrap();
    dir.join("f0.cfg")
}

/// Whether `pid` is gone (or a zombie nobody reaped yet), waiting a while.
fn becomes_dead(pid: i32) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[test]
fn a_fifo_as_machine_id_file_keeps_the_watchdog_and_sigterm_working() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    mkfifo(&install.path("machine-id"));
    install.write_config(&server.url, "surveyclient_start_delay = 0\n");

    let mut daemon = Daemon::start(&install);
    daemon.ready();
    assert_eq!(daemon.wait_for_requests(&server, 1), 1, "the report went");
    daemon.watchdog_pings(4);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("is a FIFO"), "{log}");
    let sent: serde_json::Value = serde_json::from_slice(server.requests()[0].body()).unwrap();
    assert!(sent["stats"].get("machine_id_hash").is_none(), "{sent}");

    let out = install.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    assert!(
        warnings.contains("surveyclient_machine_id_file")
            && warnings.contains("machine-id: is a FIFO, not a regular file"),
        "check-config names the FIFO: {warnings}"
    );
}

#[test]
fn dev_zero_as_machine_id_or_facts_file_is_refused_in_bounded_memory() {
    let install = Install::new();
    install.write_config(
        "http://127.0.0.1:9/x",
        "surveyclient_machine_id_file = /dev/zero\nsurveyclient_facts = file:/dev/zero\n",
    );
    let out = bounded(&install, &["preview"]);
    let sent = payload(&out);
    assert!(sent["stats"].get("machine_id_hash").is_none(), "{sent}");
    let log = stderr(&out);
    assert!(
        log.contains("cannot read the machine id: /dev/zero: is a character device"),
        "{log}"
    );
    assert!(
        log.contains("cannot read a facts file: /dev/zero: is a character device"),
        "{log}"
    );
}

#[test]
fn a_huge_sparse_include_is_refused_with_file_line_in_bounded_memory() {
    let install = Install::new();
    std::fs::File::create(install.path("huge.cfg"))
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    install.write_config("http://127.0.0.1:9/x", "!include huge.cfg\n");
    let out = bounded(&install, &["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains(&format!("{}:9", install.config_path().display()))
            && log.contains("larger than the limit of 1048576 bytes"),
        "{log}"
    );
}

#[test]
fn a_linked_config_is_followed_but_linked_machine_id_and_facts_files_are_not() {
    let install = Install::new();
    std::fs::rename(install.path("machine-id"), install.path("real-machine-id")).unwrap();
    std::os::unix::fs::symlink("real-machine-id", install.path("machine-id")).unwrap();
    std::fs::write(install.path("real-facts"), "usercnt_active = 42\n").unwrap();
    std::os::unix::fs::symlink("real-facts", install.path("facts")).unwrap();
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!(
            "surveyclient_facts = file:{}\n",
            install.path("facts").display()
        ),
    );
    // The admin's link to the config file is followed (the documented
    // exception); what it points at is still checked.
    std::fs::rename(install.config_path(), install.path("real.cfg")).unwrap();
    std::os::unix::fs::symlink("real.cfg", install.config_path()).unwrap();

    let out = install.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    assert!(
        warnings.contains("surveyclient_machine_id_file:") && warnings.contains("symbolic link"),
        "{warnings}"
    );

    let out = install.run(&["preview"]);
    let sent = payload(&out);
    assert!(sent["stats"].get("machine_id_hash").is_none(), "{sent}");
    assert!(sent["stats"].get("usercnt_active").is_none(), "{sent}");
    let log = stderr(&out);
    assert!(
        log.contains("machine-id: is a symbolic link, which is not followed"),
        "{log}"
    );
    assert!(
        log.contains("facts: is a symbolic link, which is not followed"),
        "{log}"
    );
    assert_no_raw_ids("preview output", &out.stdout);
    assert_no_raw_ids("preview log", &out.stderr);
}

#[test]
fn yes_as_a_facts_command_is_capped_and_the_report_goes_without_it() {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(
        &server.url,
        "surveyclient_facts = command:/usr/bin/yes usercnt_active=1\n",
    );
    let out = bounded(&install, &["send"]);
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("facts command /usr/bin/yes failed: it printed more than 65536 bytes"),
        "{log}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent: serde_json::Value = serde_json::from_slice(requests[0].body()).unwrap();
    assert!(sent["stats"].get("usercnt_active").is_none(), "{sent}");
    assert!(sent["stats"].get("machine_id_hash").is_some(), "{sent}");
}

#[test]
fn a_facts_command_grandchild_holding_stdout_is_killed_at_the_timeout() {
    let install = Install::new();
    let pid_file = install.path("grandchild.pid");
    let script = install.path("facts.sh");
    std::fs::write(
        &script,
        format!(
            "sleep 1000 &\necho $! > {}\necho usercnt_active=1\n",
            pid_file.display()
        ),
    )
    .unwrap();
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!(
            "surveyclient_timeout = 1\nsurveyclient_facts = command:/bin/sh {}\n",
            script.display()
        ),
    );
    let out = bounded(&install, &["preview"]);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = becomes_dead(pid);
    if !gone {
        // Our own test's process: do not leave it behind.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let sent = payload(&out);
    assert!(sent["stats"].get("usercnt_active").is_none(), "{sent}");
    let log = stderr(&out);
    assert!(
        log.contains("no answer within 1 s") && log.contains("process group were killed"),
        "{log}"
    );
    assert!(gone, "the grandchild {pid} survived its facts command");
}

#[test]
fn an_include_chain_of_9000_files_is_refused_with_file_line_and_exit_78() {
    let install = Install::new();
    let chain = include_chain(&install.path("chain"), 9000);
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!("!include {}\n", chain.display()),
    );
    let out = bounded(&install, &["check-config"]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    let log = stderr(&out);
    // The main file is level 0, f0.cfg level 1, ... f63.cfg level 64.
    assert!(
        log.contains("chain/f63.cfg:2: !include") && log.contains("more than 64 levels"),
        "{log}"
    );
}

#[test]
fn reload_with_a_9000_include_chain_is_rejected_and_the_service_keeps_running() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "surveyclient_start_delay = 3600\n");
    let mut daemon = Daemon::start(&install);
    daemon.ready();

    let chain = include_chain(&install.path("chain"), 9000);
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!(
            "surveyclient_start_delay = 3600\n!include {}\n",
            chain.display()
        ),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect("RELOADING=1", |d| d.lines().any(|l| l == "RELOADING=1"));
    let ready = daemon.ready();
    let status = status_of(&ready);
    assert!(
        status.contains("reload rejected") && status.contains("f63.cfg:2"),
        "{status}"
    );
    daemon.watchdog_pings(3);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("more than 64 levels"), "{log}");
}

#[test]
fn a_value_over_4_kib_is_refused_with_file_line() {
    let install = Install::new();
    let long = format!("https://stats.example/{}", "a".repeat(5000));
    install.write_config(&long, "");
    let out = install.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains(&format!("{}:1", install.config_path().display()))
            && log.contains("more than the limit of 4096"),
        "{log}"
    );
    assert!(log.len() < 1000, "the value is not repeated whole: {log}");

    let facts = format!(
        "surveyclient_facts = command:/bin/true {}\n",
        "x ".repeat(3000)
    );
    install.write_config("http://127.0.0.1:9/x", &facts);
    let out = install.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("surveyclient_facts:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_prints_a_dollar_var_with_newlines_on_one_line() {
    let install = Install::new();
    install.write_config(
        "http://127.0.0.1:9/x",
        "surveyclient_program_name = $FAKE\n",
    );
    let out = install
        .command(&["check-config"])
        .env(
            "FAKE",
            "x\nsurveyclient_interval = 0\nsurveyclient_url = http://evil/",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "surveyclient_program_name = x\\nsurveyclient_interval = 0\\nsurveyclient_url = http://evil/\n"
        ),
        "{text}"
    );
    let intervals: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("surveyclient_interval = "))
        .collect();
    assert_eq!(intervals, ["surveyclient_interval = 3600"]);
    assert!(!text
        .lines()
        .any(|l| l.starts_with("surveyclient_url = http://evil")));
}

#[test]
fn an_all_zero_machine_id_is_left_out_with_a_warning_not_hashed() {
    let install = Install::new();
    std::fs::write(
        install.path("machine-id"),
        "00000000000000000000000000000000\n",
    )
    .unwrap();
    install.write_config("http://127.0.0.1:9/x", "");
    let out = install.run(&["preview"]);
    let sent = payload(&out);
    assert!(sent["stats"].get("machine_id_hash").is_none(), "{sent}");
    let log = stderr(&out);
    assert!(
        log.contains("all zeros") && log.contains("machine_id_hash is left out"),
        "{log}"
    );
}

/// Runs `surveyd preview` with /usr/lib/os-release (where /etc/os-release
/// points) replaced by `replacement` in a private mount namespace.
fn preview_with_os_release(install: &Install, replacement: &Path) -> Output {
    let script = format!(
        "mount --bind {} /usr/lib/os-release && exec timeout {} prlimit {MEMORY_LIMIT} {} -c {} preview",
        replacement.display(),
        PATIENCE.as_secs(),
        env!("CARGO_BIN_EXE_surveyd"),
        install.config_path().display()
    );
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .unwrap()
}

#[test]
fn os_release_as_dev_zero_or_fifo_falls_back_in_bounded_memory() {
    if !is_root() {
        return skip("replacing os-release needs root (private mount namespace)");
    }
    if !Path::new("/usr/lib/os-release").is_file() {
        return skip("this system has no /usr/lib/os-release to replace");
    }
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "");
    let fifo = install.path("os-release.fifo");
    mkfifo(&fifo);
    let fallback = std::fs::read_to_string("/etc/debian_version")
        .ok()
        .map(|v| format!("Debian GNU/Linux {}", v.trim()));
    for replacement in [Path::new("/dev/zero"), fifo.as_path()] {
        let out = preview_with_os_release(&install, replacement);
        let sent = payload(&out);
        assert_eq!(
            sent["stats"]["osrelease"]["value"]
                .as_str()
                .map(str::to_string),
            fallback,
            "{}: {sent}",
            replacement.display()
        );
        assert!(
            stderr(&out).contains("/usr/lib/os-release: is a"),
            "{}",
            stderr(&out)
        );
    }
}

/// The config of `reloading_from_a_hung_file_system` before its reload.
const HUNG_RELOAD_BASE: &str = "surveyclient_start_delay = 3600\nsurveyclient_timeout = 2\n";

/// A daemon over a hung file system, idle and ready, then reloading a
/// config that includes a file on it: its RELOADING=1 has arrived.
fn reloading_from_a_hung_file_system() -> (Install, Daemon) {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", HUNG_RELOAD_BASE);
    let mut daemon = Daemon::start_over_hung_file_system(&install);
    daemon.ready();
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!(
            "{HUNG_RELOAD_BASE}!include {}\n",
            install.path("slow/extra.cfg").display()
        ),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_line("RELOADING=1");
    (install, daemon)
}

fn watchdog_count(datagrams: &[String]) -> usize {
    datagrams
        .iter()
        .filter(|d| d.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

#[test]
fn a_reload_reading_from_a_hung_file_system_keeps_the_loop_alive_and_is_rejected() {
    if !is_root() {
        return skip("a FUSE mount needs root (private mount namespace)");
    }
    let (_install, mut daemon) = reloading_from_a_hung_file_system();
    let reloading_at = daemon.seen.len();
    let ready = daemon.ready();
    let during = watchdog_count(&daemon.seen[reloading_at..]);
    assert!(
        during >= 3,
        "the loop kept feeding the watchdog while the config was read ({during} pings)"
    );
    let status = status_of(&ready);
    assert!(
        status.contains("reload rejected")
            && status.contains("took longer than surveyclient_timeout (2 s)"),
        "{status}"
    );
    daemon.watchdog_pings(2);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert_main_thread_ended_despite_the_hung_read(&log);
}

/// SIGTERM ended the loop and the main thread although a blocking thread
/// was still waiting on the file system. (A FUSE read already handed to its
/// server cannot be interrupted by the kernel at all, so the process can
/// only be reaped once the harness drops the connection, as it does then.)
fn assert_main_thread_ended_despite_the_hung_read(log: &str) {
    assert!(log.contains("surveyd stopped"), "{log}");
    assert!(
        log.contains("slowfs: the main thread exited while a read was still hung"),
        "{log}"
    );
}

#[test]
fn a_machine_id_on_a_hung_file_system_is_left_out_and_the_loop_stays_alive() {
    if !is_root() {
        return skip("a FUSE mount needs root (private mount namespace)");
    }
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(
        &server.url,
        &format!(
            "surveyclient_start_delay = 0\nsurveyclient_timeout = 2\n\
             surveyclient_machine_id_file = {}\n",
            install.path("slow/machine-id").display()
        ),
    );
    let mut daemon = Daemon::start_over_hung_file_system(&install);
    daemon.ready();
    assert_eq!(daemon.wait_for_requests(&server, 1), 1, "the report went");
    assert!(
        watchdog_count(&daemon.seen) >= 3,
        "the watchdog was fed while the machine id hung: {:?}",
        daemon.seen
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert_main_thread_ended_despite_the_hung_read(&log);
    assert!(
        log.contains("took longer than surveyclient_timeout (2 s"),
        "{log}"
    );
    let sent: serde_json::Value = serde_json::from_slice(server.requests()[0].body()).unwrap();
    assert!(sent["stats"].get("machine_id_hash").is_none(), "{sent}");
    assert_eq!(sent["stats"]["program_name"]["value"], "kopano-server");
}

#[test]
fn a_second_sighup_during_a_hung_reload_reads_the_config_again_and_applies_it() {
    if !is_root() {
        return skip("a FUSE mount needs root (private mount namespace)");
    }
    let (install, mut daemon) = reloading_from_a_hung_file_system();
    let hung = install.path("surveyd.pid.hung-read");
    let deadline = Instant::now() + PATIENCE;
    while !hung.exists() {
        assert!(
            Instant::now() < deadline,
            "the reload never reached the slow file"
        );
        daemon.expect("anything", |_| true);
    }
    // The admin fixes the file and reloads again while the first reload hangs.
    install.write_config(
        "http://127.0.0.1:9/x",
        &format!("{HUNG_RELOAD_BASE}surveyclient_interval = 0\n"),
    );
    daemon.signal(Signal::SIGHUP);
    let reloading_at = daemon.seen.len();
    let ready = daemon.ready();
    let status = status_of(&ready);
    assert!(
        status.contains("reporting off") && !status.contains("reload rejected"),
        "the second reload's file is in force: {status}"
    );
    assert!(
        !daemon.seen[reloading_at..]
            .iter()
            .any(|d| d.contains("RELOADING=1")),
        "one reload, one RELOADING: {:?}",
        daemon.seen
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("SIGHUP during a reload"), "{log}");
}
