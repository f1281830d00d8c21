//! The audit log under hostile conditions, with the real binary: links and
//! FIFOs planted under the log's names, damaged and truncated chains, a
//! removed lock file or log while the service holds them, a service-owned
//! directory written to by root, a file size limit, planted huge lines and
//! fields. Every victim file is a temporary copy; nothing touches a real
//! system file.

mod common;

use std::os::unix::fs::{symlink, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// What a planted link points at: a stand-in for /etc/passwd.
const VICTIM_TEXT: &[u8] =
    b"root:x:0:0:root:/root:/bin/bash\nsurveyd:x:999:999::/:/usr/sbin/nologin\n";

/// Runs `cmd` to completion, failing (and killing it) if it hangs.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("hung; killed; stderr: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn plant_victim(install: &Install, name: &str) -> PathBuf {
    let victim = install.path(name);
    std::fs::write(&victim, VICTIM_TEXT).unwrap();
    victim
}

/// The same process as `cmd`, but with a resource limit set in the child.
fn with_limit(cmd: &mut Command, resource: Resource, limit: u64) {
    let resource = match resource {
        Resource::FileSize => nix::libc::RLIMIT_FSIZE,
        Resource::AddressSpace => nix::libc::RLIMIT_AS,
    };
    let limit = nix::libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: only async-signal-safe setrlimit runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::setrlimit(resource, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

#[derive(Clone, Copy)]
enum Resource {
    FileSize,
    AddressSpace,
}

#[test]
fn links_planted_under_the_logs_names_are_refused_by_every_command_and_targets_stay_untouched() {
    for planted in ["audit.log", "audit.log.lock", "audit.log.1"] {
        let (install, server) = install_with_reports(1, "");
        let victim = plant_victim(&install, "passwd-copy");
        let target = install.path("log").join(planted);
        let _ = std::fs::remove_file(&target);
        symlink(&victim, &target).unwrap();

        let out = run_bounded(install.command(&["send"]));
        assert_eq!(out.status.code(), Some(73), "{planted}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("symbolic link"),
            "{planted}: {}",
            stderr(&out)
        );
        assert_eq!(server.requests().len(), 1, "{planted}: nothing sent");

        let out = run_bounded(install.command(&["run"]));
        assert_eq!(out.status.code(), Some(73), "{planted}: {}", stderr(&out));

        if planted != "audit.log.lock" {
            for args in [
                &["audit"][..],
                &["audit", "verify"],
                &["audit", "show", "1"],
            ] {
                let out = run_bounded(install.command(args));
                assert!(!out.status.success(), "{planted} {args:?}");
                assert!(
                    stderr(&out).contains("symbolic link"),
                    "{planted} {args:?}: {}",
                    stderr(&out)
                );
            }
        }
        assert_eq!(std::fs::read(&victim).unwrap(), VICTIM_TEXT, "{planted}");
        assert!(symlink_is_still_there(&target), "{planted}");
    }
}

fn symlink_is_still_there(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn a_fifo_as_the_audit_log_is_refused_by_every_command_without_hanging() {
    let (install, server) = install_with_reports(1, "");
    std::fs::remove_file(install.audit_log()).unwrap();
    mkfifo(&install.audit_log());
    for args in [&["send"][..], &["run"], &["audit"], &["audit", "verify"]] {
        let out = run_bounded(install.command(args));
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("a FIFO, not a regular file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(server.requests().len(), 1, "nothing more was sent");
}

#[test]
fn damaged_complete_lines_stop_send_until_an_admin_starts_a_new_chain() {
    let (install, server) = install_with_reports(2, "");
    rewrite_lines(&install, |lines| {
        for line in lines.iter_mut().rev().take(2) {
            line.replace_range(0..1, "[");
        }
    });
    let damaged = install.audit_text();

    for _ in 0..2 {
        let out = install.run(&["send"]);
        assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("damaged") && err.contains("line 3"), "{err}");
        assert!(err.contains("surveyd audit new-chain"), "{err}");
        assert!(err.contains("nothing was sent"), "{err}");
        assert_eq!(server.requests().len(), 2, "no request went out");
        assert_eq!(install.audit_text(), damaged, "the damage is not healed");
        let out = install.run(&["audit", "verify"]);
        assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
        assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    }

    let out = install.run(&["audit", "new-chain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("old-chain"), "{said}");
    let aside: Vec<PathBuf> = std::fs::read_dir(install.path("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("audit.log.old-chain-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), damaged);

    let out = install.run(&["send"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 3);
    let first: serde_json::Value =
        serde_json::from_str(install.audit_text().lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "new-chain");
    assert_eq!(
        first["set_aside"][0],
        aside[0].file_name().unwrap().to_str().unwrap()
    );
    let out = install.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn deleting_the_first_line_of_a_never_rotated_log_fails_verify() {
    let (install, _server) = install_with_reports(3, "");
    rewrite_lines(&install, |lines| {
        lines.remove(0);
    });
    let out = install.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(65), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("removed from the start of the log"),
        "{}",
        stderr(&out)
    );
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
}

#[test]
fn cutting_lines_off_the_end_fails_verify() {
    let (install, server) = install_with_reports(3, "");
    rewrite_lines(&install, |lines| lines.truncate(4));
    let out = install.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(65), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("removed from (or changed at) the end"),
        "{}",
        stderr(&out)
    );
    let out = install.run(&["send"]);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 3, "nothing sent after the cut");
}

#[test]
fn a_result_line_that_cannot_be_written_says_the_report_was_sent() {
    let (install, server) = install_with_reports(1, "");
    let size = std::fs::metadata(install.audit_log()).unwrap().len();
    let send_line = install.audit_text().lines().next().unwrap().len() as u64 + 1;
    // Room for the next send line, not for its result line after it: the
    // disk fills between the request going out and its result.
    let mut cmd = install.command(&["send"]);
    with_limit(&mut cmd, Resource::FileSize, size + send_line + 40);
    let out = run_bounded(cmd);
    let err = stderr(&out);
    assert_eq!(server.requests().len(), 2, "the report went out: {err}");
    assert!(err.contains("WAS sent"), "{err}");
    assert!(err.contains("could not be recorded"), "{err}");
    assert!(!err.contains("nothing was sent"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_write_past_the_file_size_limit_is_an_audit_error_not_a_silent_kill() {
    let (install, server) = install_with_reports(1, "");
    let size = std::fs::metadata(install.audit_log()).unwrap().len();
    // The next write starts at the limit: the kernel refuses it whole and
    // raises SIGXFSZ, which kills unless ignored.
    let mut cmd = install.command(&["send"]);
    with_limit(&mut cmd, Resource::FileSize, size);
    let out = run_bounded(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(73), "killed by a signal? {err}");
    assert!(
        err.contains("File too large") || err.contains("file size limit"),
        "{err}"
    );
    assert!(err.contains("nothing was sent"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_planted_multi_gigabyte_line_is_refused_with_its_place_and_bounded_memory() {
    let (install, server) = install_with_reports(1, "");
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(install.audit_log())
        .unwrap();
    // Sparse: 3 GiB of zeros without a newline after the two good lines.
    let len = file.metadata().unwrap().len();
    file.set_len(len + (3 << 30)).unwrap();
    drop(file);
    for args in [&["audit"][..], &["audit", "verify"], &["send"]] {
        let mut cmd = install.command(args);
        // Reading the line whole would need 3 GiB; allow far less.
        with_limit(&mut cmd, Resource::AddressSpace, 1 << 30);
        let out = run_bounded(cmd);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("line 3") && err.contains("longer than"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_field_wider_than_65535_characters_is_listed_shortened() {
    let install = Install::new();
    install.write_config("http://127.0.0.1:9/x", "");
    let url = format!("https://stats.example.org/{}", "a".repeat(65_536));
    let (mut log, _) =
        surveyd::daemon::audit::AuditLog::open(&install.audit_log(), 1 << 30, 3).unwrap();
    let seq = log.append_send(&url, b"{\"version\":2}").unwrap();
    log.append_result(seq, None, Some(&"e".repeat(70_000)), Duration::ZERO)
        .unwrap();
    drop(log);
    let out = install.run(&["audit"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.lines().all(|l| l.chars().count() < 400), "{table}");
    assert!(table.contains("https://stats.example.org/aaa"), "{table}");
    assert!(table.contains('…'), "{table}");
    let out = install.run(&["audit", "--json"]);
    assert!(stdout(&out).contains(&url), "JSON keeps the whole field");
}

/// A service-owned log directory (DynamicUser's), with links planted by
/// that user under the log's names: root's `send` must not write through
/// them. Root-only: it needs another uid.
#[test]
fn root_send_into_a_directory_the_service_user_owns_never_writes_as_root() {
    if !is_root() {
        return skip("needs root to own files as another uid");
    }
    let (install, server) = install_with_reports(0, "");
    // Like DynamicUser's /var/log/private: the owner cannot reach its
    // directory by path, only through the handle root opened.
    std::fs::set_permissions(
        install.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let log_dir = install.path("log");
    let owner = nix::unistd::Uid::from_raw(65534);
    let group = nix::unistd::Gid::from_raw(65534);
    // LogsDirectory= and StateDirectory= both belong to DynamicUser's user.
    let state_dir = install.path("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    for dir in [&log_dir, &state_dir] {
        nix::unistd::chown(dir, Some(owner), Some(group)).unwrap();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let victim = plant_victim(&install, "passwd-copy");
    let victim2 = plant_victim(&install, "shadow-copy");
    symlink(&victim, log_dir.join("audit.log")).unwrap();
    symlink(&victim2, log_dir.join("audit.log.lock")).unwrap();

    let out = run_bounded(install.command(&["send"]));
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(stderr(&out).contains("not as root"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), VICTIM_TEXT);
    assert_eq!(std::fs::read(&victim2).unwrap(), VICTIM_TEXT);
    assert!(server.requests().is_empty());

    // Without the links it works, and every file it made is the owner's.
    std::fs::remove_file(log_dir.join("audit.log")).unwrap();
    std::fs::remove_file(log_dir.join("audit.log.lock")).unwrap();
    let out = run_bounded(install.command(&["send"]));
    assert!(out.status.success(), "{}", stderr(&out));
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.metadata().unwrap().uid(), 65534, "{:?}", entry.path());
    }
    // Reading commands work for root there and write nothing.
    let before: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = install.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after);

    // The service itself refuses to run as root there.
    let out = run_bounded(install.command(&["run"]));
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );
}

const IDLE: &str = "surveyclient_start_delay = 3600\n";

#[test]
fn a_removed_lock_file_does_not_let_a_concurrent_send_in_while_run_holds_the_log() {
    let (install, server) = install_with_reports(1, IDLE);
    let mut daemon = Daemon::start(&install);
    daemon.expect_line("READY=1");
    std::fs::remove_file(install.path("log/audit.log.lock")).unwrap();

    let out = run_bounded(install.command(&["send"]));
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use by another surveyd process"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.requests().len(), 1, "the second writer sent nothing");

    // The service notices its lock file is gone, locks a new one, sends.
    daemon.signal(Signal::SIGUSR1);
    daemon.expect_status("accepted");
    assert_eq!(server.requests().len(), 2);
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("locked it again"), "{err}");
    let out = install.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_log_deleted_while_run_holds_it_is_not_written_into_and_new_chain_recovers() {
    let (install, server) = install_with_reports(1, IDLE);
    let mut daemon = Daemon::start(&install);
    daemon.expect_line("READY=1");
    let held = std::fs::File::open(install.audit_log()).unwrap();
    let before = std::fs::read(install.audit_log()).unwrap();
    std::fs::remove_file(install.audit_log()).unwrap();

    daemon.signal(Signal::SIGUSR1);
    let status = daemon.expect_status("not sent");
    assert!(status.contains("removed or replaced"), "{status}");
    let mut now = Vec::new();
    use std::io::Read;
    (&held).read_to_end(&mut now).unwrap();
    assert_eq!(now, before, "nothing written into the deleted inode");
    assert_eq!(server.requests().len(), 1);

    // Still refused on the next try: an emptied log does not restart a chain.
    daemon.signal(Signal::SIGUSR1);
    let status = daemon.expect_status("not sent");
    assert!(status.contains("damaged"), "{status}");
    assert_eq!(server.requests().len(), 1);

    // The service let go of the log, so the admin can start a new chain.
    let out = run_bounded(install.command(&["audit", "new-chain"]));
    assert!(out.status.success(), "{}", stderr(&out));
    daemon.signal(Signal::SIGUSR1);
    daemon.expect_status("accepted");
    assert_eq!(server.requests().len(), 2);
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
    let out = install.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn reload_changing_only_the_audit_limits_applies_them_without_reopening() {
    let (install, server) = install_with_reports(1, IDLE);
    let mut daemon = Daemon::start(&install);
    daemon.expect_line("READY=1");
    install.write_config(
        &server.url,
        &format!("{IDLE}surveyclient_audit_keep = 1\nsurveyclient_audit_max_size = 4096\n"),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_line("RELOADING=1");
    daemon.expect_line("READY=1");
    for _ in 0..3 {
        daemon.expect_line("WATCHDOG=1");
    }
    // The new limits are in force on the open log: it rotates at 4096
    // bytes and keeps one rotated file.
    for n in 2..=5 {
        daemon.signal(Signal::SIGUSR1);
        daemon.expect_status(&format!("report {} accepted", 2 * n - 1));
    }
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("in use by another"), "{err}");
    assert!(!err.contains("keeping the previous audit log"), "{err}");
    assert!(install.path("log/audit.log.1").exists());
    assert!(!install.path("log/audit.log.2").exists());
    let out = install.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_damaged_log_at_start_keeps_the_service_running_says_so_and_sends_nothing() {
    let (install, server) = install_with_reports(2, IDLE);
    rewrite_lines(&install, |lines| lines[1].replace_range(0..1, "["));
    let damaged = install.audit_text();
    let mut daemon = Daemon::start(&install);
    let ready = daemon.expect_line("READY=1");
    assert!(
        ready.contains("damaged") && ready.contains("line 2"),
        "{ready}"
    );
    daemon.signal(Signal::SIGUSR1);
    let status = daemon.expect_status("not sent");
    assert!(status.contains("new-chain"), "{status}");
    for _ in 0..3 {
        daemon.expect_line("WATCHDOG=1");
    }
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.requests().len(), 2, "nothing sent");
    assert_eq!(
        install.audit_text(),
        damaged,
        "the damage is left for the admin"
    );
}

#[test]
fn the_service_past_the_file_size_limit_logs_an_audit_error_and_keeps_running() {
    let (install, server) = install_with_reports(1, IDLE);
    let size = std::fs::metadata(install.audit_log()).unwrap().len();
    let mut daemon = Daemon::start_with(&install, |cmd| {
        with_limit(cmd, Resource::FileSize, size);
    });
    daemon.expect_line("READY=1");
    daemon.signal(Signal::SIGUSR1);
    let status = daemon.expect_status("not sent");
    assert!(status.contains("File too large"), "{status}");
    for _ in 0..3 {
        daemon.expect_line("WATCHDOG=1");
    }
    let (code, err) = daemon.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("report not sent"), "{err}");
    assert_eq!(server.requests().len(), 1);
}
