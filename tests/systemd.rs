//! systemd/surveyd.service under real systemd: `systemd-analyze` checks of
//! the unit and its drop-ins, and the hardened unit itself (DynamicUser,
//! the whole sandbox, Type=notify, watchdog, ExecReload, LoadCredential)
//! run by a real `systemd --user` manager.
//!
//! The manager runs as root in private mount and cgroup namespaces
//! (DESIGN.md section 8), so its units get the same sandbox a system
//! service gets, and nothing of it is visible outside: its /run/systemd,
//! its XDG_RUNTIME_DIR (a tmpfs, like /run) and its cgroup tree are its
//! own. The test plays journald: it owns the journal sockets the manager
//! and the service log to. Units, configuration and the unit's
//! directories live in a scratch dir the sandbox does not hide (see
//! `scratch_parent`).
//!
//! These tests need root; elsewhere they SKIP, except under CI=true.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_no_raw_ids, is_root, skip, stand_in, Reply, StandIn, RAW_GUID, RAW_MACHINE_ID,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use surveyd::logging::REPORT_SENT_MESSAGE_ID;

const UNIT: &str = "surveyd.service";
/// The unit's binary path, replaced by the built binary in tests.
const INSTALLED_BINARY: &str = "/usr/bin/surveyd";
/// WatchdogSec= of the units under test.
const WATCHDOG: Duration = Duration::from_secs(2);
/// The most `systemd-analyze security` may report for the unit.
const MAX_EXPOSURE: f64 = 1.5;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_repo_file(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap()
}

/// The shipped unit text with its binary path pointing at `binary`.
fn unit_with_binary(binary: &Path) -> String {
    let text = read_repo_file("systemd/surveyd.service");
    assert_eq!(
        text.matches(INSTALLED_BINARY).count(),
        2,
        "ExecStart= and ExecReload= run {INSTALLED_BINARY}"
    );
    text.replace(INSTALLED_BINARY, &binary.display().to_string())
}

fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// systemd-analyze, or None (after saying SKIP) when it is not installed.
fn systemd_analyze() -> Option<Command> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => Some(Command::new("systemd-analyze")),
        _ => {
            skip("systemd-analyze is not installed (apt-get install systemd)");
            None
        }
    }
}

/// The major version of the installed systemd ("systemd 252 (252.38-1)").
fn systemd_version() -> u32 {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the systemd version from {text:?}"))
}

/// Runs `systemd-analyze verify` on `dir/surveyd.service` (and the drop-ins
/// in `dir/surveyd.service.d`). Man pages are not installed in a build tree,
/// so the Documentation= check is left to the package tests.
fn verify(dir: &Path) -> Output {
    let mut cmd = systemd_analyze().expect("checked by the caller");
    cmd.args(["verify", "--man=no"])
        .arg(dir.join(UNIT))
        .output()
        .unwrap()
}

#[test]
fn unit_and_credential_drop_in_pass_systemd_analyze_verify() {
    if systemd_analyze().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify insists that ExecStart= exists: point it at the built binary.
    let binary = Path::new(env!("CARGO_BIN_EXE_surveyd"));
    std::fs::write(dir.path().join(UNIT), unit_with_binary(binary)).unwrap();
    let out = verify(dir.path());
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(out.stderr.is_empty(), "warnings: {}", output_text(&out));

    let drop_ins = dir.path().join("surveyd.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    let credential = read_repo_file("systemd/kopano-server-cfg.conf")
        .replace(INSTALLED_BINARY, &binary.display().to_string());
    std::fs::write(drop_ins.join("kopano-server-cfg.conf"), credential).unwrap();
    let out = verify(dir.path());
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(out.stderr.is_empty(), "warnings: {}", output_text(&out));
}

#[test]
fn notify_reload_drop_in_is_valid_for_systemd_253_and_later() {
    if systemd_analyze().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_surveyd"));
    std::fs::write(dir.path().join(UNIT), unit_with_binary(binary)).unwrap();
    let drop_ins = dir.path().join("surveyd.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::copy(
        repo_file("systemd/notify-reload.conf"),
        drop_ins.join("notify-reload.conf"),
    )
    .unwrap();
    let out = verify(dir.path());
    assert!(out.status.success(), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if systemd_version() >= 253 {
        assert!(stderr.is_empty(), "warnings: {}", output_text(&out));
    } else {
        // 252 knows neither setting; anything else it complains about is
        // a mistake in the drop-in.
        for line in stderr.lines() {
            assert!(
                line.contains("notify-reload") || line.contains("'ReloadSignal'"),
                "unexpected complaint about the drop-in: {line}"
            );
        }
        eprintln!(
            "systemd {} predates Type=notify-reload: checked only that the drop-in's \
             other lines parse",
            systemd_version()
        );
    }
}

#[test]
fn offline_security_exposure_is_at_most_1_5() {
    let Some(mut cmd) = systemd_analyze() else {
        return;
    };
    let out = cmd
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo_file("systemd/surveyd.service"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for surveyd.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    eprintln!("systemd-analyze security --offline=true: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}:\n{stdout}"
    );
}

// ---------------------------------------------------------------------
// A real systemd user manager
// ---------------------------------------------------------------------

/// One journal record: its fields.
type Record = BTreeMap<String, String>;

/// Stands in for journald: receives native-protocol datagrams (from the
/// manager and from the daemon's tracing-journald layer) and the lines of
/// services' stdout streams.
#[derive(Clone, Default)]
struct Journal {
    records: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
}

impl Journal {
    /// Binds `dir/socket` and `dir/stdout`, world-writable like journald's:
    /// the service runs as a transient user.
    fn listen(dir: &Path) -> Journal {
        let journal = Journal::default();
        let datagrams = UnixDatagram::bind(dir.join("socket")).unwrap();
        datagrams
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let streams = UnixListener::bind(dir.join("stdout")).unwrap();
        for name in ["socket", "stdout"] {
            std::fs::set_permissions(dir.join(name), PermissionsExt::from_mode(0o666)).unwrap();
        }
        {
            let journal = journal.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !journal.stop.load(Ordering::Relaxed) {
                    // Empty datagrams are clients checking that we listen.
                    if let Ok(n @ 1..) = datagrams.recv(&mut buf) {
                        journal.push(parse_native(&buf[..n]));
                    }
                }
            });
        }
        {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for stream in streams.incoming() {
                    if journal.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let journal = journal.clone();
                    std::thread::spawn(move || journal.read_stream(stream));
                }
            });
        }
        journal
    }

    fn push(&self, record: Record) {
        self.records.lock().unwrap().push(record);
    }

    /// A stdout stream: a header (identifier, unit, priority, level prefix,
    /// forward to syslog, kmsg, console), then one message per line.
    fn read_stream(&self, stream: UnixStream) {
        let mut lines = BufReader::new(stream).lines();
        let header: Vec<String> = lines.by_ref().take(7).map_while(Result::ok).collect();
        let identifier = header.first().cloned().unwrap_or_default();
        let unit = header.get(1).cloned().unwrap_or_default();
        for line in lines.map_while(Result::ok) {
            self.push(Record::from([
                ("SYSLOG_IDENTIFIER".to_string(), identifier.clone()),
                ("_STREAM_UNIT".to_string(), unit.clone()),
                ("MESSAGE".to_string(), line),
            ]));
        }
    }

    fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// Records about `unit` logged by the manager (user managers say
    /// USER_UNIT=, the system manager UNIT=).
    fn about_unit(&self, unit: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| {
                r.get("USER_UNIT").map(String::as_str) == Some(unit)
                    || r.get("UNIT").map(String::as_str) == Some(unit)
            })
            .collect()
    }

    fn dump(&self) -> String {
        self.records()
            .iter()
            .map(|r| {
                let who = r
                    .get("SYSLOG_IDENTIFIER")
                    .map(String::as_str)
                    .unwrap_or("?");
                let message = r.get("MESSAGE").map(String::as_str).unwrap_or("");
                format!("{who}: {message}\n")
            })
            .collect()
    }
}

/// Parses a datagram of journald's native protocol: `KEY=value` lines, or
/// `KEY`, a little-endian u64 length and that many bytes, for values that
/// hold newlines.
fn parse_native(mut data: &[u8]) -> Record {
    let mut record = Record::new();
    while let Some(end) = data.iter().position(|&b| b == b'\n') {
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            record.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[end + 1..];
        } else {
            let rest = &data[end + 1..];
            let Some(len) = rest.get(..8) else { break };
            let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
            let Some(value) = rest.get(8..8 + len) else {
                break;
            };
            record.insert(
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
            data = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    record
}

/// Unit properties as `systemctl show` prints them.
type Props = BTreeMap<String, String>;

/// Distinguishes the cgroups of managers started by this process.
static MANAGERS: AtomicUsize = AtomicUsize::new(0);

/// Sets up the private namespaces and runs the manager; runs as
/// `sh -c OUTER sh INNER`. The cgroup move has to happen before the
/// cgroup namespace is made, so that the namespace's root is that cgroup.
const OUTER: &str = r#"echo $$ > "$SURVEYD_TEST_CGROUP/cgroup.procs" && exec unshare --mount --cgroup --propagation private sh -ec "$1""#;

/// Inside the namespaces: the manager sees only its own cgroup subtree,
/// its own /run/systemd (the `system` dir that says systemd runs, the
/// "inaccessible" nodes systemd masks paths with, the test's journal
/// sockets), and a tmpfs as its runtime dir (searchable by the unit's
/// transient user, who needs its RuntimeDirectory in there), shared so
/// that mounts made for units (credentials) reach it. /run is made a mount point, as on
/// any systemd machine: otherwise the API file systems that ProtectProc=
/// and friends imply would include an empty tmpfs on /run for the unit.
const INNER: &str = r#"
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind /run /run
[ -d /run/systemd ] || mkdir /run/systemd
mount --bind "$SURVEYD_TEST_DIR/run-systemd" /run/systemd
mount -t tmpfs -o mode=0711 tmpfs "$XDG_RUNTIME_DIR"
mount --make-shared "$XDG_RUNTIME_DIR"
unset SURVEYD_TEST_DIR SURVEYD_TEST_CGROUP
exec /lib/systemd/systemd --user --log-target=journal
"#;

/// A `systemd --user` manager with its own HOME, runtime dir and cgroup.
/// Dropping it stops the manager and kills whatever it left behind.
struct UserManager {
    dir: tempfile::TempDir,
    manager: Child,
    cgroup: PathBuf,
    journal: Journal,
}

impl UserManager {
    /// Starts a manager, or says why it cannot (SKIP, or a failure in CI).
    fn start() -> Option<UserManager> {
        if !is_root() {
            skip("the systemd tests need root (mount and cgroup namespaces)");
            return None;
        }
        for tool in ["/lib/systemd/systemd", "/usr/bin/systemctl"] {
            if !Path::new(tool).exists() {
                skip(&format!("{tool} is missing (apt-get install systemd)"));
                return None;
            }
        }
        for tool in ["unshare", "nsenter"] {
            if Command::new(tool).arg("--version").output().is_err() {
                skip(&format!("{tool} is missing (apt-get install util-linux)"));
                return None;
            }
        }
        let Some(cgroup_root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("cgroup.controllers").exists())
        else {
            skip("no cgroup2 hierarchy is mounted");
            return None;
        };

        let dir = tempfile::Builder::new()
            .prefix("surveyd-systemd-test-")
            .tempdir_in(scratch_parent())
            .unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        for sub in [
            "home/.config/systemd/user",
            "runtime",
            "bin",
            "run-systemd/system",
            "run-systemd/journal",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let cgroup = cgroup_root.join(format!(
            "surveyd-test-{}-{}",
            std::process::id(),
            MANAGERS.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(err) = std::fs::create_dir(&cgroup) {
            skip(&format!(
                "cannot create the cgroup {}: {err}",
                cgroup.display()
            ));
            return None;
        }
        make_inaccessible_nodes(&dir.path().join("run-systemd/inaccessible"));
        let journal = Journal::listen(&dir.path().join("run-systemd/journal"));

        // A copy, so that another build in the shared target dir cannot
        // swap the binary under a running test.
        let binary = dir.path().join("bin/surveyd");
        std::fs::copy(env!("CARGO_BIN_EXE_surveyd"), &binary).unwrap();

        let manager = Command::new("sh")
            .args(["-c", OUTER, "sh", INNER])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", dir.path().join("runtime"))
            .env("SURVEYD_TEST_DIR", dir.path())
            .env("SURVEYD_TEST_CGROUP", &cgroup)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("manager.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut manager = UserManager {
            dir,
            manager,
            cgroup,
            journal,
        };
        manager.wait_until_listening();
        Some(manager)
    }

    fn pid(&self) -> u32 {
        self.manager.id()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn binary(&self) -> PathBuf {
        self.path("bin/surveyd")
    }

    /// A path in the manager's runtime dir, seen through its mount
    /// namespace.
    fn runtime_path(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root{}",
            self.pid(),
            self.path("runtime").join(rel).display()
        ))
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.runtime_path("systemd/private").exists() {
            if let Ok(Some(status)) = self.manager.try_wait() {
                panic!(
                    "systemd --user exited ({status}) before it was ready:\n{}\n{}",
                    std::fs::read_to_string(self.path("manager.stderr")).unwrap_or_default(),
                    self.journal.dump()
                );
            }
            assert!(
                Instant::now() < deadline,
                "systemd --user did not open its control socket within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A user manager's notify socket is writable by its own user only;
        // the system manager's is writable by all, and the unit runs as a
        // DynamicUser.
        let notify = self.runtime_path("systemd/notify");
        std::fs::set_permissions(notify, PermissionsExt::from_mode(0o777)).unwrap();
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .args(["--", "systemctl", "--user", "--no-pager"])
            .args(args)
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            .env("HOME", self.path("home"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .output()
            .unwrap()
    }

    fn systemctl_ok(&self, args: &[&str]) {
        let out = self.systemctl(args);
        assert!(
            out.status.success(),
            "systemctl --user {}: {}\njournal:\n{}",
            args.join(" "),
            output_text(&out),
            self.journal.dump()
        );
    }

    fn show(&self, props: &[&str]) -> Props {
        let out = self.systemctl(&["show", UNIT, "-p", &props.join(",")]);
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Polls `props` until `done` holds; fails after `limit`, saying what
    /// was awaited and what was last seen.
    fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        props: &[&str],
        mut done: impl FnMut(&Props) -> bool,
    ) -> Props {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.show(props);
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; last seen {seen:?}\njournal:\n{}",
                self.journal.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Installs the shipped unit, running the test's copy of the binary,
    /// with `drop_in` as `test.conf`.
    fn install_unit(&self, drop_in: &str) {
        let units = self.path("home/.config/systemd/user");
        std::fs::write(units.join(UNIT), unit_with_binary(&self.binary())).unwrap();
        self.install_drop_in("test.conf", drop_in);
    }

    fn install_drop_in(&self, name: &str, text: &str) {
        let dir = self.path("home/.config/systemd/user/surveyd.service.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// The standard test drop-in: configuration from `config`, the audit
    /// log in the unit's LogsDirectory, the admin's `surveyd consent yes`
    /// (run as the unit's own user, in its sandbox, before it starts; `-`:
    /// a configuration it cannot read is left for the service to report),
    /// a short watchdog and restart delay, no core dump from the
    /// watchdog's SIGABRT.
    fn test_drop_in(&self, config: &Path) -> String {
        format!(
            "[Service]\n\
             Environment=SURVEYD_CONFIG={} \"SURVEYD_AUDIT_LOG=%L/surveyd/audit.log\"\n\
             ExecStartPre=-{} consent yes\n\
             WatchdogSec={}\n\
             RestartSec=1\n\
             LimitCORE=0\n",
            config.display(),
            self.binary().display(),
            WATCHDOG.as_secs()
        )
    }

    /// Where the unit's audit log is, as systemd expanded %L.
    fn audit_log(&self) -> PathBuf {
        let env = self.show(&["Environment"]);
        let value = env["Environment"]
            .split_whitespace()
            .find_map(|assignment| assignment.strip_prefix("SURVEYD_AUDIT_LOG="))
            .expect("the test drop-in sets SURVEYD_AUDIT_LOG")
            .to_string();
        PathBuf::from(value)
    }

    fn write_file(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.path(rel);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
        path
    }

    /// A facts command in the scratch dir: the daemon must fork and exec it
    /// inside the sandbox.
    fn facts_command(&self) -> PathBuf {
        self.write_file("facts.sh", "#!/bin/sh\necho 'usercnt_active = 42'\n", 0o755)
    }

    /// surveyd's settings for this scratch installation, then `extra`.
    fn config_text(&self, url: &str, extra: &str) -> String {
        std::fs::write(self.path("machine-id"), format!("{RAW_MACHINE_ID}\n")).unwrap();
        format!(
            "surveyclient_url = {url}\n\
             surveyclient_machine_id_file = {}\n\
             surveyclient_audit_log = $SURVEYD_AUDIT_LOG\n\
             surveyclient_state_dir = $STATE_DIRECTORY\n\
             surveyclient_server_guid = {RAW_GUID}\n\
             surveyclient_program_name = kopano-server\n\
             surveyclient_program_version = 8.7.80\n\
             surveyclient_facts = command:{}\n\
             surveyclient_timeout = 5\n\
             surveyclient_start_delay = 0\n\
             {extra}\n",
            self.path("machine-id").display(),
            self.facts_command().display(),
        )
    }

    fn write_config(&self, url: &str, extra: &str) -> PathBuf {
        self.write_file("surveyd.cfg", &self.config_text(url, extra), 0o644)
    }

    /// Runs the test's copy of surveyd on the host, as root, with the
    /// unit's directories in the environment the configuration refers to.
    fn surveyd_on_host(&self, args: &[&str]) -> Output {
        Command::new(self.binary())
            .arg("-c")
            .arg(self.path("surveyd.cfg"))
            .args(args)
            .env("SURVEYD_AUDIT_LOG", self.audit_log())
            // Read by the settings, not used by the audit commands.
            .env("STATE_DIRECTORY", self.path("host-state"))
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SIGTERM: the manager stops its units and exits.
        let pid = Pid::from_raw(self.pid() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(self.manager.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.manager.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = self.manager.wait();
        }
        // Anything still in its cgroup tree was started by it: kill each by
        // pid, then remove the (then empty) cgroups, deepest first.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = cgroup_pids(&self.cgroup);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut dirs = cgroup_dirs(&self.cgroup);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
        self.journal.stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(self.path("run-systemd/journal/stdout"));
    }
}

/// Where scratch dirs go: the service must reach them through its sandbox
/// (PrivateTmp= hides /tmp and /var/tmp, ProtectHome= hides /home, /root
/// and /run/user) as a transient user, so every parent must be searchable
/// by others. Cargo's target dir usually is; else /var/lib.
fn scratch_parent() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let hidden = ["/tmp", "/var/tmp", "/home", "/root", "/run/user"];
    let reachable = !hidden.iter().any(|dir| target.starts_with(dir))
        && target.ancestors().all(|dir| {
            std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
        });
    if reachable {
        target
    } else {
        PathBuf::from("/var/lib")
    }
}

fn cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        i += 1;
    }
    dirs
}

fn cgroup_pids(root: &Path) -> Vec<i32> {
    cgroup_dirs(root)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The nodes systemd bind-mounts over paths a unit must not reach
/// (ProtectHome=, ProtectKernelLogs=, ...); the system manager keeps them
/// in /run/systemd/inaccessible.
fn make_inaccessible_nodes(dir: &Path) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    std::fs::create_dir(dir).unwrap();
    std::fs::create_dir(dir.join("dir")).unwrap();
    std::fs::write(dir.join("reg"), "").unwrap();
    nix::unistd::mkfifo(&dir.join("fifo"), Mode::empty()).unwrap();
    mknod(
        &dir.join("chr"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    mknod(
        &dir.join("blk"),
        SFlag::S_IFBLK,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    drop(UnixListener::bind(dir.join("sock")).unwrap());
    for node in ["dir", "reg", "fifo", "chr", "blk", "sock"] {
        std::fs::set_permissions(dir.join(node), PermissionsExt::from_mode(0o000)).unwrap();
    }
}

/// The seconds in STATUS's "next report at ... (in N s)".
fn next_report_in(status: &str) -> Option<u64> {
    let (_, rest) = status.split_once("(in ")?;
    rest.split_once(" s)")?.0.parse().ok()
}

/// Waits for the collector's count of requests to reach `n`, returning
/// when that happened.
fn wait_for_report(collector: &StandIn, n: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if collector.requests().len() >= n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "report {n} did not reach the collector within {limit:?} (got {})",
            collector.requests().len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stats(body: &[u8]) -> serde_json::Value {
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
    payload["stats"].clone()
}

#[test]
fn hardened_unit_runs_reloads_and_stops_under_a_real_systemd() {
    let Some(manager) = UserManager::start() else {
        return;
    };
    let collector = stand_in(None, vec![Reply::Status(204)]);
    let config = manager.write_config(&collector.url, "surveyclient_interval = 3600");
    manager.install_unit(&manager.test_drop_in(&config));

    // Type=notify: start returns once the daemon said READY=1.
    manager.systemctl_ok(&["start", UNIT]);
    let started = manager.show(&["ActiveState", "SubState", "MainPID"]);
    assert_eq!(started["ActiveState"], "active", "{started:?}");
    assert_eq!(started["SubState"], "running", "{started:?}");
    let main_pid = started["MainPID"].clone();

    // The first report, with start delay 0, through the whole sandbox:
    // /etc/os-release and uname read, the facts command forked and run.
    wait_for_report(&collector, 1, Duration::from_secs(10));
    let first = &collector.requests()[0];
    assert_no_raw_ids("the report", &first.raw);
    let sent = stats(first.body());
    assert_eq!(sent["usercnt_active"]["value"], 42, "{sent}");
    assert!(sent["osrelease"]["value"].is_string(), "{sent}");
    assert!(sent["utsname"]["value"].is_string(), "{sent}");

    // Pinging at half the period keeps it alive: three watchdog periods,
    // the same process, no restart.
    let observed = Instant::now();
    while observed.elapsed() < 3 * WATCHDOG + Duration::from_millis(500) {
        let now = manager.show(&["ActiveState", "MainPID", "NRestarts"]);
        assert_eq!(now["ActiveState"], "active", "{now:?}");
        assert_eq!(now["MainPID"], main_pid, "{now:?}");
        assert_eq!(now["NRestarts"], "0", "{now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let hourly = manager.show(&["StatusText"])["StatusText"].clone();
    assert!(
        next_report_in(&hourly).is_some_and(|s| s > 3000),
        "STATUS before the reload: {hourly}"
    );

    // The report's journal record carries its MESSAGE_ID: systemd gave
    // the daemon a journal stream and it logged natively.
    let records = manager.journal.records();
    assert!(
        records.iter().any(|r| {
            r.get("MESSAGE_ID").map(String::as_str) == Some(REPORT_SENT_MESSAGE_ID)
                && r.get("SYSLOG_IDENTIFIER").map(String::as_str) == Some("surveyd")
        }),
        "no report record with MESSAGE_ID {REPORT_SENT_MESSAGE_ID}:\n{}",
        manager.journal.dump()
    );

    // A shorter interval is in force when `systemctl reload` returns.
    manager.write_config(&collector.url, "surveyclient_interval = 2");
    let before = collector.requests().len();
    manager.systemctl_ok(&["reload", UNIT]);
    let reloaded = manager.show(&["StatusText", "MainPID", "ActiveState"]);
    let status = &reloaded["StatusText"];
    assert!(
        status.contains("sending a report") || next_report_in(status).is_some_and(|s| s <= 2),
        "STATUS right after the reload still shows the old schedule: {status}"
    );
    assert_eq!(reloaded["MainPID"], main_pid, "a reload is not a restart");
    // ... and reports follow every 2 s, not hourly. The waits are bounds
    // for a loaded CI machine, not timings: the upper bound on the gap
    // only has to tell 2 s from the old 3600 s.
    let one = wait_for_report(&collector, before + 1, Duration::from_secs(30));
    let two = wait_for_report(&collector, before + 2, Duration::from_secs(30));
    let gap = two - one;
    assert!(
        gap > Duration::from_millis(1500) && gap < Duration::from_secs(30),
        "reports {gap:?} apart with a 2 s interval"
    );

    // A broken configuration: reload fails, the daemon runs on with the
    // configuration it had, and says so.
    manager.write_config(&collector.url, "surveyclient_interval = 2 minutes");
    let out = manager.systemctl(&["reload", UNIT]);
    assert!(!out.status.success(), "reload of a bad config succeeded");
    let kept = manager.show(&["ActiveState", "SubState", "MainPID", "StatusText"]);
    assert_eq!(kept["ActiveState"], "active", "{kept:?}");
    assert_eq!(kept["SubState"], "running", "{kept:?}");
    assert_eq!(kept["MainPID"], main_pid, "{kept:?}");
    assert!(
        kept["StatusText"].contains("reload rejected")
            && kept["StatusText"].contains(&format!("{}:", config.display())),
        "STATUS after the bad reload: {}",
        kept["StatusText"]
    );
    let count = collector.requests().len();
    wait_for_report(&collector, count + 1, Duration::from_secs(30));

    // Stop: SIGTERM, a clean exit well within TimeoutStopSec=, the runtime
    // dir (reload-status) removed. An inactive unit is unloaded at once,
    // so its exit status is read from what systemd logged: a main process
    // that exited non-zero or by a signal is logged with its status and
    // the unit's failed result (a clean exit only at debug level).
    assert!(manager.runtime_path("surveyd/reload-status").exists());
    let logged_before_stop = manager.journal.about_unit(UNIT).len();
    let stopping = Instant::now();
    manager.systemctl_ok(&["stop", UNIT]);
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        stopping.elapsed()
    );
    let after = manager.show(&["ActiveState"]);
    assert_eq!(after["ActiveState"], "inactive", "{after:?}");
    let stop_records = manager
        .journal
        .about_unit(UNIT)
        .split_off(logged_before_stop);
    assert!(
        stop_records.iter().any(|r| {
            r.get("JOB_TYPE").map(String::as_str) == Some("stop")
                && r.get("JOB_RESULT").map(String::as_str) == Some("done")
        }),
        "no completed stop job in the journal:\n{}",
        manager.journal.dump()
    );
    assert!(
        !stop_records
            .iter()
            .any(|r| r.contains_key("UNIT_RESULT") || r.contains_key("EXIT_STATUS")),
        "the stop was not clean:\n{}",
        manager.journal.dump()
    );
    assert!(!manager.runtime_path("surveyd").exists());

    // Every report was audited in the LogsDirectory, the chain holds, and
    // no raw identifier reached the audit log or the journal.
    manager.write_config(&collector.url, "surveyclient_interval = 2");
    let verify = manager.surveyd_on_host(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", output_text(&verify));
    let audit = std::fs::read_to_string(manager.audit_log()).unwrap();
    let sends = audit
        .lines()
        .filter(|l| l.contains(r#""event":"send""#))
        .count();
    assert_eq!(sends, collector.requests().len(), "{audit}");
    assert_no_raw_ids("the audit log", audit.as_bytes());
    assert_no_raw_ids("the journal", manager.journal.dump().as_bytes());
}

#[test]
fn frozen_daemon_is_killed_by_the_watchdog_and_restarted() {
    let Some(manager) = UserManager::start() else {
        return;
    };
    let collector = stand_in(None, vec![Reply::Status(204)]);
    // By name: the resolver works inside the sandbox too.
    let url = collector.url.replace("127.0.0.1", "localhost");
    let config = manager.write_config(&url, "surveyclient_interval = 3600");
    manager.install_unit(&manager.test_drop_in(&config));
    manager.systemctl_ok(&["start", UNIT]);
    wait_for_report(&collector, 1, Duration::from_secs(10));
    // Frozen only after the success is on disk (else the restart would,
    // rightly, retry soon).
    manager.wait_for(
        "first report recorded",
        Duration::from_secs(10),
        &["StatusText"],
        |p| p["StatusText"].contains("accepted"),
    );
    let frozen = manager.show(&["MainPID", "NRestarts"]);
    assert_eq!(frozen["NRestarts"], "0");
    let frozen_pid: i32 = frozen["MainPID"].parse().unwrap();

    kill(Pid::from_raw(frozen_pid), Signal::SIGSTOP).unwrap();
    let mut saw_watchdog = false;
    let restarted = manager.wait_for(
        "restart after the watchdog fired",
        3 * WATCHDOG + Duration::from_secs(10),
        &[
            "ActiveState",
            "Result",
            "NRestarts",
            "MainPID",
            "StatusText",
        ],
        |p| {
            saw_watchdog |= p["Result"] == "watchdog";
            p["NRestarts"] == "1" && p["ActiveState"] == "active"
        },
    );
    let about = manager.journal.about_unit(UNIT);
    saw_watchdog |= about
        .iter()
        .any(|r| r.get("UNIT_RESULT").map(String::as_str) == Some("watchdog"));
    assert!(
        saw_watchdog,
        "the unit never showed Result=watchdog:\n{}",
        manager.journal.dump()
    );
    assert_ne!(restarted["MainPID"], frozen["MainPID"]);
    assert_eq!(
        kill(Pid::from_raw(frozen_pid), None),
        Err(nix::errno::Errno::ESRCH),
        "the frozen daemon is gone"
    );
    // The restarted daemon remembers the last success: no early report.
    let next = next_report_in(&restarted["StatusText"]);
    assert!(
        next.is_some_and(|s| s > 3000),
        "STATUS after the restart: {}",
        restarted["StatusText"]
    );
    assert_eq!(collector.requests().len(), 1);
}

#[test]
fn root_only_server_cfg_is_read_through_load_credential() {
    let Some(manager) = UserManager::start() else {
        return;
    };
    let collector = stand_in(None, vec![Reply::Status(204)]);
    // Kopano's server.cfg, as root-only as on a real server, with the
    // survey settings added.
    let kopano = std::fs::read_to_string(common::kopano_fixture("server-2018.cfg")).unwrap();
    let server_cfg = manager.write_file(
        "server.cfg",
        &format!(
            "{kopano}\n{}",
            manager.config_text(&collector.url, "surveyclient_interval = 3600")
        ),
        0o600,
    );
    manager.install_unit(&manager.test_drop_in(&server_cfg));

    // The daemon runs as a transient user: it cannot read the file itself.
    // A configuration error is not restarted (RestartPreventExitStatus=).
    let out = manager.systemctl(&["start", UNIT]);
    assert!(!out.status.success(), "started with a root-only config");
    let failed = manager.show(&["ActiveState", "ExecMainStatus", "NRestarts", "StatusText"]);
    assert_eq!(failed["ActiveState"], "failed", "{failed:?}");
    assert_eq!(failed["ExecMainStatus"], "78", "{failed:?}");
    assert_eq!(failed["NRestarts"], "0", "{failed:?}");
    assert!(
        failed["StatusText"].contains("Permission denied"),
        "{failed:?}"
    );
    manager.systemctl_ok(&["reset-failed", UNIT]);

    // The shipped drop-in hands it over as a credential.
    let drop_in = read_repo_file("systemd/kopano-server-cfg.conf")
        .replace(INSTALLED_BINARY, &manager.binary().display().to_string())
        .replace("/etc/kopano/server.cfg", &server_cfg.display().to_string());
    manager.install_drop_in("kopano-server-cfg.conf", &drop_in);
    manager.install_drop_in(
        "zz-consent-from-credential.conf",
        &format!(
            "[Service]\nExecStartPre=\nExecStartPre={} -c %d/server.cfg consent yes\n",
            manager.binary().display()
        ),
    );
    manager.systemctl_ok(&["daemon-reload"]);
    manager.systemctl_ok(&["start", UNIT]);
    wait_for_report(&collector, 1, Duration::from_secs(10));
    let sent = stats(collector.requests()[0].body());
    assert_eq!(sent["userplugin"]["value"], "db", "{sent}");
    assert_eq!(sent["attachment_storage"]["value"], "files", "{sent}");
    assert_no_raw_ids("the report", &collector.requests()[0].raw);
    manager.systemctl_ok(&["reload", UNIT]);
    manager.systemctl_ok(&["stop", UNIT]);
}
