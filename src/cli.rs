//! The `surveyd` command line: argument definitions (also the source of the
//! man page and shell completions) and what each command does. Exit codes
//! follow sysexits.h, as admins' scripts expect from a daemon's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit;
use crate::exit;
use crate::report;
use crate::settings::Settings;

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/surveyd/surveyd.cfg";

#[derive(Debug, Parser)]
#[command(
    name = "surveyd",
    version,
    about = "Privacy-first usage-survey daemon for Kopano-style groupware servers",
    long_about = "surveyd reports a groupware server's usage statistics (program and version, \
OS, kernel, user counts) to its vendor, as kopano-server's built-in survey client does, \
but hashes every identifier on this machine first and writes each payload to a local, \
tamper-evident audit log before it is sent.\n\n\
It reads server.cfg-compatible options, so an existing /etc/kopano/server.cfg works \
as its configuration.",
    after_help = "Exit status follows sysexits.h: 0 success, 65 audit log failed \
verification, 69 collector did not accept the report, 73 audit log not writable \
(nothing sent), 74 I/O error, 78 configuration error.\n\n\
See surveyd(8) and surveyd.cfg(5)."
)]
pub struct Cli {
    /// Configuration file (server.cfg format)
    #[arg(
        short,
        long,
        global = true,
        value_name = "PATH",
        default_value = DEFAULT_CONFIG,
        env = "SURVEYD_CONFIG"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration and print every effective setting
    ///
    /// Prints each surveyclient_* setting (and the server.cfg keys surveyd
    /// reads) as `key = value`, like `sshd -T`; passwords are masked.
    /// Warnings go to standard error. Exits 78 on any error, naming the
    /// file and line.
    CheckConfig,
    /// Print exactly the bytes the next report would send
    ///
    /// Collects the facts, hashes the identifiers and prints the canonical
    /// JSON payload followed by a newline. Nothing is sent or logged.
    Preview,
    /// Send one report now
    ///
    /// Writes the payload to the audit log, then sends it. Exits 0 when the
    /// collector answers 2xx, 69 otherwise (the attempt is still audited),
    /// 73 if the audit log cannot be written (then nothing is sent), and 78
    /// when surveyclient_interval is 0 (reporting is switched off).
    Send,
    /// List, show and verify the audit log of sent payloads
    ///
    /// Without a subcommand, lists every report: time, URL, outcome, size
    /// and body hash.
    Audit {
        /// Print one JSON object per report instead of a table
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<AuditAction>,
    },
    /// Run the service (started by systemd)
    ///
    /// Sends a report at a random moment within surveyclient_start_delay,
    /// then every surveyclient_interval seconds; retries failures with
    /// backoff. Speaks the sd_notify protocol (READY, STATUS, WATCHDOG,
    /// RELOADING, STOPPING): SIGHUP reloads the configuration, SIGUSR1
    /// sends a report now, SIGTERM stops.
    Run,
    /// Make the running service reload its configuration, and wait
    ///
    /// Sends SIGHUP to the service (MAINPID, or --pid) and returns once it
    /// has applied the new configuration (exit 0) or rejected it and kept
    /// the running one (exit 78, with the reason). Used as the unit's
    /// ExecReload so that `systemctl reload surveyd` is synchronous on
    /// every systemd version.
    Reload {
        /// Process id of the service (default: $MAINPID)
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds to wait for the service to confirm
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Print the payload of report SEQ exactly as it was sent
    Show {
        /// Sequence number of the report's `send` entry
        seq: u64,
    },
    /// Verify the hash chain; names the first line that was changed,
    /// dropped or reordered
    Verify,
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init("surveyd", "SURVEYD_LOG");
    let code = match &cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Preview => with_settings(&cli.config, |settings| {
            let payload = runtime().block_on(report::prepare(&settings));
            println!("{}", String::from_utf8_lossy(payload.as_bytes()));
            exit::OK
        }),
        Command::Send => with_settings(&cli.config, send),
        Command::Audit { json, action } => with_settings(&cli.config, |settings| {
            if let Some(code) = no_audit_log_yet(&settings, action.as_ref()) {
                return code;
            }
            audit_command(&settings.audit_log, *json, action.as_ref())
        }),
        Command::Run => crate::service::run(&cli.config),
        Command::Reload { pid, wait } => {
            match crate::service::request_reload(*pid, std::time::Duration::from_secs(*wait)) {
                Ok(message) => {
                    println!("surveyd: {message}");
                    exit::OK
                }
                Err(message) => {
                    eprintln!("surveyd: reload failed: {message}");
                    exit::CONFIG
                }
            }
        }
    };
    ExitCode::from(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

/// Loads the settings, prints warnings, and runs `then`; a configuration
/// error ends the command with 78.
fn with_settings(path: &Path, then: impl FnOnce(Settings) -> u8) -> u8 {
    match Settings::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("surveyd: warning: {warning}");
            }
            then(loaded.settings)
        }
        Err(err) => {
            eprintln!("surveyd: {err}");
            exit::CONFIG
        }
    }
}

fn check_config(path: &Path) -> u8 {
    with_settings(path, |settings| {
        for warning in crate::payload::static_fact_warnings(&settings) {
            eprintln!("surveyd: warning: {warning}");
        }
        for (key, value) in settings.effective() {
            println!("{key} = {value}");
        }
        exit::OK
    })
}

fn send(settings: Settings) -> u8 {
    if !settings.enabled() {
        eprintln!(
            "surveyd: surveyclient_interval is 0, which switches reporting off; nothing was sent"
        );
        return exit::CONFIG;
    }
    let mut log = match report::open_audit(&settings) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("surveyd: {err}; nothing was sent");
            return exit::CANTCREAT;
        }
    };
    let rt = runtime();
    let payload = rt.block_on(report::prepare(&settings));
    match rt.block_on(report::send(
        &settings,
        &mut log,
        &payload,
        std::future::pending(),
    )) {
        Ok(attempt) if attempt.outcome.is_success() => {
            println!(
                "report {} sent: {}",
                attempt.seq,
                attempt.outcome.describe()
            );
            exit::OK
        }
        Ok(attempt) => {
            eprintln!(
                "surveyd: report {} not accepted: {}",
                attempt.seq,
                attempt.outcome.describe()
            );
            exit::UNAVAILABLE
        }
        Err(err) => {
            eprintln!("surveyd: {err}; nothing was sent");
            exit::CANTCREAT
        }
    }
}

/// A fresh installation has no audit log: that is not an error, unless the
/// state dir says reports were attempted, in which case the log was removed.
fn no_audit_log_yet(settings: &Settings, action: Option<&AuditAction>) -> Option<u8> {
    let log = &settings.audit_log;
    let rotated = log.with_file_name(format!(
        "{}.1",
        log.file_name().unwrap_or_default().to_string_lossy()
    ));
    if log.exists() || rotated.exists() {
        return None;
    }
    if let Some(attempt) = report::last_attempt(&settings.state_dir) {
        eprintln!(
            "surveyd: audit log {} is missing, but {} records a report attempted at {}",
            log.display(),
            settings.state_dir.display(),
            humantime::format_rfc3339_seconds(attempt)
        );
        return Some(exit::DATAERR);
    }
    match action {
        Some(AuditAction::Show { seq }) => {
            eprintln!("surveyd: no report with sequence number {seq}: no report was sent yet");
            Some(exit::DATAERR)
        }
        _ => {
            eprintln!(
                "surveyd: no report was sent yet (no audit log at {})",
                log.display()
            );
            Some(exit::OK)
        }
    }
}

fn audit_command(path: &Path, json: bool, action: Option<&AuditAction>) -> u8 {
    match action {
        None => match audit::list(path) {
            Ok(rows) => {
                if json {
                    print!("{}", audit::format_json_lines(&rows));
                } else {
                    print!("{}", audit::format_table(&rows));
                }
                exit::OK
            }
            Err(err) => {
                eprintln!("surveyd: {err}");
                exit::IOERR
            }
        },
        Some(AuditAction::Show { seq }) => match audit::find_send(path, *seq) {
            Ok(Some(entry)) => {
                let body = entry.body.as_ref().map(|b| b.get()).unwrap_or("null");
                println!("{body}");
                exit::OK
            }
            Ok(None) => {
                eprintln!(
                    "surveyd: no report with sequence number {seq} in {}",
                    path.display()
                );
                exit::DATAERR
            }
            Err(err) => {
                eprintln!("surveyd: {err}");
                exit::IOERR
            }
        },
        Some(AuditAction::Verify) => match audit::verify(path) {
            Ok(report) => {
                println!("{report}");
                exit::OK
            }
            Err(failure) => {
                eprintln!("surveyd: audit log verification FAILED: {failure}");
                exit::DATAERR
            }
        },
    }
}
