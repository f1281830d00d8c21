//! A scratch installation of surveyd (machine id, config, audit log, state
//! dir in a temp dir) and the real `surveyd` binary run against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{outside_systemd, stand_in, Reply, StandIn, RAW_GUID, RAW_MACHINE_ID};

/// The real `surveyd`, with none of the test runner's proxy, config or
/// systemd variables.
pub fn surveyd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_surveyd"));
    cmd.env_remove("SURVEYD_CONFIG")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    outside_systemd(&mut cmd);
    cmd
}

/// The upstream Kopano configuration files copied into tests/fixtures/kopano.
pub fn kopano_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kopano")
        .join(name)
}

/// A scratch installation in a temp dir.
pub struct Install {
    pub dir: tempfile::TempDir,
}

impl Install {
    pub fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("machine-id"), format!("{RAW_MACHINE_ID}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        Install { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("log/audit.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("surveyd.cfg")
    }

    /// Writes surveyd.cfg: the scratch paths, then `extra` lines.
    pub fn write_config(&self, url: &str, extra: &str) -> PathBuf {
        let text = format!(
            "surveyclient_url = {url}\n\
             surveyclient_machine_id_file = {}\n\
             surveyclient_audit_log = {}\n\
             surveyclient_state_dir = {}\n\
             surveyclient_server_guid = {RAW_GUID}\n\
             surveyclient_program_name = kopano-server\n\
             surveyclient_program_version = 8.7.80\n\
             surveyclient_timeout = 5\n\
             {extra}\n",
            self.path("machine-id").display(),
            self.audit_log().display(),
            self.path("state").display(),
        );
        std::fs::write(self.config_path(), text).unwrap();
        self.consent_to_upload(url);
        self.config_path()
    }

    /// The consent file `surveyd consent yes` writes, so that the tests of
    /// sending see uploads; tests/consent.rs removes it to start fresh.
    pub fn consent_to_upload(&self, url: &str) {
        let consent = serde_json::json!({
            "mode": "upload",
            "schema": surveyd::wire::SCHEMA,
            "fields": surveyd::daemon::payload::acknowledgeable(&Default::default()),
            "url": url,
            "time": "2026-01-01T00:00:00Z",
        });
        std::fs::create_dir_all(self.path("state")).unwrap();
        std::fs::write(self.path("state/consent"), format!("{consent}\n")).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = surveyd();
        cmd.arg("-c").arg(self.config_path()).args(args);
        cmd
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.audit_log()).unwrap_or_default()
    }
}

/// A FIFO at `path`, in place of whatever was there: a reader that opens
/// it blocks until a writer comes, which none ever does.
pub fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// An installation with `n` reports already sent and audited, and the
/// stand-in that received them.
pub fn install_with_reports(n: usize, extra: &str) -> (Install, StandIn) {
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    install.write_config(&server.url, extra);
    for _ in 0..n {
        let out = install.run(&["send"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    (install, server)
}

/// Tampers with the audit log: `change` edits its lines in place.
pub fn rewrite_lines(install: &Install, change: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = install.audit_text().lines().map(String::from).collect();
    change(&mut lines);
    std::fs::write(install.audit_log(), lines.join("\n") + "\n").unwrap();
}

/// Every audit log line, parsed.
pub fn audit_events(install: &Install) -> Vec<serde_json::Value> {
    install
        .audit_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The audit log's `result` events, oldest first.
pub fn audit_results(install: &Install) -> Vec<serde_json::Value> {
    audit_events(install)
        .into_iter()
        .filter(|e| e["event"] == "result")
        .collect()
}

impl Default for Install {
    fn default() -> Self {
        Self::new()
    }
}

/// What a finished `surveyd` printed, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
