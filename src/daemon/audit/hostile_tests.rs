//! The writer and readers against hostile logs: damage, links, FIFOs,
//! planted huge lines, cut ends, a removed lock or log, root's directory
//! policy.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::tests::{
    body, good_log, log_path, open, read_lines, rotated_of, write_lines, write_pairs, BIG, URL,
};
use super::writer::*;
use super::*;

#[test]
fn complete_last_line_that_is_not_json_is_damage_and_is_left_in_place() {
    let (_dir, path) = good_log();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"\0\0\0\0\n").unwrap();
    drop(file);
    let before = fs::read(&path).unwrap();

    let err = AuditLog::open(&path, BIG, 3).unwrap_err();
    assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("line 9"), "{err}");
    assert!(err.to_string().contains("new-chain"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before, "damage is never cut away");
    assert!(verify(&path, None).is_err());
}

/// The reproduction: the first byte of the last two complete lines
/// flipped used to be cut off as a "torn line" and the chain healed.
#[test]
fn flipped_first_bytes_of_the_last_two_lines_block_the_writer_until_a_new_chain() {
    let (dir, path) = good_log();
    let mut lines = read_lines(&path);
    for line in lines.iter_mut().rev().take(2) {
        line.replace_range(0..1, "X");
    }
    write_lines(&path, &lines);
    let before = fs::read(&path).unwrap();

    let err = AuditLog::open(&path, BIG, 3).unwrap_err();
    assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("line 7"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(matches!(
        verify(&path, None),
        Err(VerifyFailure::BadLine { line: 7, .. })
    ));

    let options = AuditOptions {
        max_size: BIG,
        keep: 3,
        ends: None,
        lock_wait: Duration::ZERO,
    };
    let (mut log, chain) =
        AuditLog::start_new_chain(LogDir::open(dir.path()).unwrap(), &path, options).unwrap();
    assert_eq!(chain.seq, 1);
    assert_eq!(chain.set_aside.len(), 1);
    assert_eq!(
        fs::read(&chain.set_aside[0]).unwrap(),
        before,
        "old chain kept"
    );
    assert_eq!(chain.old_last_seq, None, "the last line does not parse");
    assert_eq!(
        chain.old_last_hash.as_deref(),
        Some(sha256_hex(lines.last().unwrap().as_bytes()).as_str())
    );
    write_pairs(&mut log, 1);
    drop(log);
    let first: serde_json::Value = serde_json::from_str(&read_lines(&path)[0]).unwrap();
    assert_eq!(first["event"], "new-chain");
    assert_eq!(first["prev"], GENESIS_PREV);
    assert_eq!(verify(&path, None).unwrap().last_seq, Some(3));
}

#[test]
fn a_line_changed_while_the_writer_holds_the_log_stops_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    write_pairs(&mut log, 1);
    let mut lines = read_lines(&path);
    lines[1] = lines[1].replacen("204", "500", 1);
    write_lines(&path, &lines);
    let err = log.append_send(URL, &body(1)).unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert_eq!(read_lines(&path), lines, "nothing appended");
}

#[test]
fn a_log_removed_while_the_writer_holds_it_is_not_written_into() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    write_pairs(&mut log, 1);
    let held = File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    let err = log.append_send(URL, &body(1)).unwrap_err();
    assert!(matches!(err, AuditError::Replaced { .. }), "{err}");
    assert!(!path.exists(), "not silently recreated");
    let mut text = String::new();
    (&held).read_to_string(&mut text).unwrap();
    assert_eq!(text.lines().count(), 2, "the deleted inode got no line");
}

#[test]
fn a_removed_lock_file_does_not_let_a_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut first, _) = open(&path, BIG, 3);
    fs::remove_file(dir.path().join("audit.log.lock")).unwrap();
    let err = AuditLog::open_with_lock_wait(&path, BIG, 3, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    // The holder notices and locks the new file at that name.
    first.append_send(URL, &body(1)).unwrap();
    assert!(dir.path().join("audit.log.lock").exists());
}

#[test]
fn links_and_fifos_under_the_logs_names_are_refused_and_their_targets_untouched() {
    for planted in ["audit.log", "audit.log.lock", "audit.log.1"] {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let victim = dir.path().join("victim");
        fs::write(&victim, b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(planted)).unwrap();
        let opened = AuditLog::open(&path, 1, 3).and_then(|(mut log, _)| {
            log.append_send(URL, &body(1))?;
            log.append_send(URL, &body(2))
        });
        let err = opened.unwrap_err();
        assert!(
            err.to_string().contains("symbolic link"),
            "{planted}: {err}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"root:x:0:0::/root:/bin/sh\n");
        assert!(read_entries(&path).is_err() || planted == "audit.log.lock");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let err = AuditLog::open(&path, BIG, 3).unwrap_err();
    assert!(
        err.to_string().contains("a FIFO, not a regular file"),
        "{err}"
    );
    assert!(verify(&path, None).is_err());

    // A device is refused by its name, before it is opened (making one
    // takes root).
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the device case needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let err = AuditLog::open(&path, BIG, 3).unwrap_err();
    assert!(err.to_string().contains("a character device"), "{err}");
}

#[test]
fn a_planted_huge_line_is_refused_by_readers_without_reading_it_whole() {
    let (_dir, path) = good_log();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
    file.write_all(b"\n").unwrap();
    drop(file);
    let err = read_entries(&path).unwrap_err();
    assert!(err.to_string().contains("line 9"), "{err}");
    assert!(err.to_string().contains("longer than"), "{err}");
    let failure = verify(&path, None).unwrap_err();
    assert!(failure.to_string().contains("line 9"), "{failure}");
}

#[test]
fn cut_head_or_tail_fails_verify_against_the_recorded_ends() {
    for cut_head in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let ends = dir
            .path()
            .join("state")
            .join(crate::daemon::state::CHAIN_ENDS_FILE);
        let options = || AuditOptions {
            max_size: BIG,
            keep: 3,
            ends: Some(EndsFile::open(&ends).unwrap()),
            lock_wait: Duration::ZERO,
        };
        let (mut log, _) =
            AuditLog::open_in(LogDir::for_log(&path).unwrap(), &path, options()).unwrap();
        write_pairs(&mut log, 3);
        drop(log);
        assert!(verify(&path, Some(&ends)).unwrap().ends_checked);
        let mut lines = read_lines(&path);
        if cut_head {
            lines.remove(0);
        } else {
            lines.truncate(4);
        }
        write_lines(&path, &lines);
        assert!(verify(&path, None).is_ok(), "the chain alone cannot tell");
        let failure = verify(&path, Some(&ends)).unwrap_err();
        let expected = if cut_head {
            "from the start"
        } else {
            "from (or changed at) the end"
        };
        assert!(failure.to_string().contains(expected), "{failure}");
        let err = AuditLog::open_in(LogDir::for_log(&path).unwrap(), &path, options()).unwrap_err();
        assert!(err.is_damage(), "the writer refuses too: {err}");
    }
}

#[test]
fn new_rotation_limits_apply_to_the_open_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (mut log, _) = open(&path, BIG, 3);
    write_pairs(&mut log, 2);
    log.set_limits(600, 1);
    write_pairs(&mut log, 3);
    assert_eq!(rotated_of(&path).len(), 1, "keep 1 applied");
    assert!(fs::metadata(&path).unwrap().len() <= 600);
    drop(log);
    assert!(verify(&path, None).is_ok());
}

#[test]
fn root_writes_only_where_no_other_user_can_and_acts_as_the_owner_of_a_service_dir() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the policy applies to root only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let case = |mode: u32, owner: u32, group: u32| {
        let path = dir.path().join(format!("d{mode:o}-{owner}-{group}"));
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(
            &path,
            Some(nix::unistd::Uid::from_raw(owner)),
            Some(nix::unistd::Gid::from_raw(group)),
        )
        .unwrap();
        LogDir::open(&path).unwrap().root_write()
    };
    assert_eq!(case(0o750, 0, 0).unwrap(), RootWrite::Allowed);
    assert_eq!(case(0o770, 0, 0).unwrap(), RootWrite::Allowed);
    assert_eq!(
        case(0o700, 65534, 65534).unwrap(),
        RootWrite::AsOwner {
            uid: 65534,
            gid: 65534
        }
    );
    for (mode, owner, group) in [(0o1777, 0, 0), (0o770, 0, 65534), (0o707, 65534, 0)] {
        let err = case(mode, owner, group).unwrap_err();
        assert!(matches!(err, AuditError::UnsafeDir { .. }), "{err}");
    }
}

#[test]
fn verify_beside_a_busy_writer_never_reports_a_cut_that_did_not_happen() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let ends = dir
        .path()
        .join("state")
        .join(crate::daemon::state::CHAIN_ENDS_FILE);
    let options = AuditOptions {
        max_size: 4096,
        keep: 1,
        ends: Some(EndsFile::open(&ends).unwrap()),
        lock_wait: Duration::ZERO,
    };
    let (mut log, _) = AuditLog::open_in(LogDir::for_log(&path).unwrap(), &path, options).unwrap();
    write_pairs(&mut log, 1);
    let writer = std::thread::spawn(move || write_pairs(&mut log, 60));
    let mut checked = 0;
    while !writer.is_finished() {
        // Other failures can come from reading a file mid-rotation; a cut
        // head or tail must never be reported.
        if let Err(VerifyFailure::Truncated(what)) = verify(&path, Some(&ends)) {
            panic!("false alarm after {checked} checks: {what}");
        }
        checked += 1;
    }
    writer.join().unwrap();
    assert!(verify(&path, Some(&ends)).unwrap().ends_checked);
}
