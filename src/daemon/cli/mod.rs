//! The `surveyd` command line: argument definitions (also the source of the
//! man page and shell completions) and what each command does. Exit codes
//! follow sysexits.h, as admins' scripts expect from a daemon's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::audit::{audit_command, no_audit_log_yet};

pub mod audit;
pub mod consent;
pub mod diff;

use crate::daemon::audit::{self as audit_log, AuditError, AuditLog, LogDir, RootWrite};
use crate::daemon::facts;
use crate::daemon::report::{self, Mode};
use crate::daemon::settings::Settings;
use crate::exit;
use crate::sys::{self, Failure, Runtime};

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
Nothing leaves the machine before the admin says yes: without consent each report is \
only built and recorded in the audit log (local mode); `surveyd consent yes` allows \
uploads of the fields it lists, and a field a later version adds waits for the next \
`surveyd consent yes`. `surveyd consent` shows the state.\n\n\
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
    /// Print exactly the bytes a report would send after `surveyd consent yes`
    ///
    /// Collects every current fact, hashes the identifiers and prints the
    /// canonical JSON payload followed by a newline: what a report carries
    /// once the admin acknowledges the current fields, and what a report
    /// kept local records. Nothing is sent or logged.
    Preview,
    /// Compare the next report with the last one uploaded
    ///
    /// Builds the next report exactly as `surveyd preview` does and sets it
    /// against the last report the collector accepted (the newest audited
    /// send with a 2xx result), key by key: each fact and each envelope key
    /// (version, schema, ...) is added, removed, changed (old and new value
    /// shown) or unchanged. Without an accepted report yet, says so and
    /// shows every key as added. Reads the audit log only; writes nothing.
    Diff {
        /// Print one JSON object (`uploaded`, `differences`, `summary`)
        #[arg(long)]
        json: bool,
    },
    /// Send one report now (or, without consent, record it locally)
    ///
    /// With consent to upload (`surveyd consent yes`), writes the payload
    /// (the acknowledged fields only) to the audit log, then sends it.
    /// Exits 0 when the collector answers 2xx, 69 otherwise (the attempt is
    /// still audited), 73 if the audit log cannot be written or is damaged
    /// (then nothing is sent), and 78 when surveyclient_interval is 0
    /// (reporting is switched off).
    ///
    /// Without consent (local mode), records the report in the audit log
    /// as `local`, sends nothing, says so and exits 0: the command did all
    /// the admin allowed. Scripts that must know whether anything left read
    /// `surveyd consent --json` (its "mode").
    ///
    /// Root never writes into a directory another user can write: when the
    /// log's directory belongs to the service's user (DynamicUser=), the
    /// payload is collected first, then surveyd switches to that user for
    /// good and writes the log as them; a directory every user (or a
    /// non-root group) can write is refused. The running service itself
    /// sends on `systemctl kill -s USR1 surveyd`.
    Send,
    /// List, show and verify the audit log of sent payloads
    ///
    /// Without a subcommand, lists every report and deletion request:
    /// time, URL, outcome, size, body hash and the state of the
    /// collector's signed receipt (valid, unchecked without
    /// surveyclient_collector_key, none, missing or invalid).
    Audit {
        /// Print one JSON object per report instead of a table
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<AuditAction>,
    },
    /// Ask the collector to delete this installation's data, with proof
    ///
    /// For an installation being decommissioned (or that no longer wants
    /// to be counted): sends a deletion request for every row its reports
    /// went under, proven with a secret derived from the machine id that
    /// only this machine can compute (each report carried a commitment to
    /// it). Each request is written to the audit log (a `forget` line,
    /// without the secret) before it goes out, and the collector's signed
    /// tombstone receipt is recorded after it. Exits 0 only when every
    /// request was answered 200 (with a tombstone that verifies under
    /// surveyclient_collector_key, when set), 69 otherwise, 73 if the
    /// audit log cannot be written (nothing is sent), 65 if the machine id
    /// cannot be read. Works with surveyclient_interval = 0 too. Stop the
    /// service first (or turn reporting off), or its next report stores
    /// the row again.
    ///
    /// As root in a log directory the service's user owns, acts as that
    /// user, like `send`.
    Forget,
    /// Show what may leave this machine, or answer: consent yes / consent no
    ///
    /// Reports are in one of three states. Off: surveyclient_interval = 0,
    /// nothing is collected or sent. Local (the default, and after
    /// `consent no`): on schedule each report is built and recorded in the
    /// audit log as `local` (`surveyd audit` lists it, `surveyd audit show`
    /// prints it), and nothing leaves the machine. Upload (after
    /// `consent yes`): reports are sent, with the acknowledged fields only.
    ///
    /// Without an answer, shows the state: the mode, the destination URL,
    /// the fields acknowledged and when, and the fields this version would
    /// send that are not acknowledged (after an upgrade adds one), each with
    /// its description and this machine's value. Those pending fields are
    /// not sent until `consent yes`; reports keep flowing without them.
    ///
    /// Each answer is recorded in the audit log (while the service runs, it
    /// holds the log and records the answer itself before its next report)
    /// and kept in the state dir (file `consent`), where the running
    /// service reads it before every report: no restart needed. As root, in a state dir and log directory
    /// owned by the service's user (DynamicUser=), it writes as that user.
    ///
    /// Exit status: 0 done, 64 an unknown name in --fields, 73 the audit
    /// log or the state dir cannot be written (the consent is unchanged),
    /// 78 configuration error.
    Consent {
        /// Print JSON instead of text
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        answer: Option<ConsentAnswer>,
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
pub enum ConsentAnswer {
    /// Allow uploads of the current fields (or only those in --fields)
    ///
    /// Acknowledges every field this version sends (except those in
    /// surveyclient_omit) at the current schema. A field a later upgrade
    /// adds is not covered: it waits until the next `consent yes`.
    Yes {
        /// Acknowledge only these fields (comma-separated wire names, as
        /// `surveyd consent` lists them); id_scheme comes with a hashed id
        #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
        fields: Option<Vec<String>>,
    },
    /// Withdraw consent: record reports locally, send nothing, delete what was uploaded
    ///
    /// When the consent withdrawn allowed uploads, also asks the collector
    /// to delete this installation's data, as `surveyd forget` does (the
    /// running service asks before its next report when it holds the audit
    /// log). An installation that never uploaded contacts nobody. Exit 69
    /// when a deletion was not confirmed (the consent is withdrawn all the
    /// same; run `surveyd forget` again).
    No,
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
    ///
    /// Also compares the oldest and newest lines with the chain's ends
    /// recorded in the state dir, so lines cut off the start or the end
    /// are found too. Then re-checks every recorded receipt under
    /// surveyclient_collector_key against the logged body: a forged,
    /// replayed or missing receipt fails, naming the report's seq. Without
    /// a key it says that receipts were not checked. Reads only; never
    /// writes.
    Verify,
    /// Set a damaged log aside and start a new chain, on purpose
    ///
    /// A complete line that does not verify stops every write (and so
    /// every report) until an admin looks. This renames every file of the
    /// log to NAME.old-chain-<time>[.N] (kept, for investigation) and
    /// starts a new chain whose first line records what was set aside and
    /// the old chain's last hash. Like `send`, it never writes as root into
    /// a directory another user owns: there it acts as that user.
    NewChain,
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init("surveyd", "SURVEYD_LOG");
    sys::ignore_file_size_signal();
    let result = match &cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Preview => with_settings(&cli.config, |settings| {
            let payload = Runtime::current_thread()?.block_on(report::prepare(&settings));
            println!("{}", String::from_utf8_lossy(payload.as_bytes()));
            Ok(())
        }),
        Command::Diff { json } => {
            with_settings(&cli.config, |settings| diff::diff_command(&settings, *json))
        }
        Command::Send => with_settings(&cli.config, send),
        Command::Forget => with_settings(&cli.config, forget),
        Command::Audit {
            action: Some(AuditAction::NewChain),
            ..
        } => with_settings(&cli.config, |settings| new_chain(&settings)),
        Command::Audit { json, action } => with_settings(&cli.config, |settings| {
            if let Some(result) = no_audit_log_yet(&settings, action.as_ref()) {
                return result;
            }
            audit_command(&settings, *json, action.as_ref())
        }),
        Command::Consent { json, answer } => with_settings(&cli.config, |settings| match answer {
            None => consent::show(&settings, *json),
            Some(ConsentAnswer::Yes { fields }) => {
                consent::yes(&settings, fields.as_deref(), *json)
            }
            Some(ConsentAnswer::No) => consent::no(&settings, *json),
        }),
        Command::Run => return sys::end_service(crate::daemon::service::run(&cli.config)),
        Command::Reload { pid, wait } => {
            sys::reload::request(*pid, std::time::Duration::from_secs(*wait))
                .map(|message| println!("surveyd: {message}"))
                .map_err(|message| Failure::new(exit::CONFIG, format!("reload failed: {message}")))
        }
    };
    sys::end_command("surveyd", result)
}

/// Loads the settings, prints warnings, and runs `then`; a configuration
/// error ends the command with 78.
fn with_settings(
    path: &Path,
    then: impl FnOnce(Settings) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let loaded = facts::load_settings(path).map_err(|err| Failure::new(exit::CONFIG, err))?;
    for warning in &loaded.warnings {
        eprintln!("surveyd: warning: {warning}");
    }
    then(loaded.settings)
}

fn check_config(path: &Path) -> Result<(), Failure> {
    with_settings(path, |settings| {
        for warning in crate::daemon::payload::static_fact_warnings(&settings) {
            eprintln!("surveyd: warning: {warning}");
        }
        for (key, value) in settings.effective() {
            println!("{key} = {value}");
        }
        Ok(())
    })
}

fn send(settings: Settings) -> Result<(), Failure> {
    if !settings.enabled() {
        return Err(Failure::new(
            exit::CONFIG,
            "surveyclient_interval is 0, which switches reporting off; nothing was sent",
        ));
    }
    let rt = Runtime::current_thread()?;
    // Read and collected before any change of user, with the invoking
    // user's access.
    let mode = report::mode(&settings, rt.block_on(report::read_consent(&settings)));
    let payload = match &mode {
        Mode::Upload(consent) => rt.block_on(report::prepare_consented(&settings, consent)),
        Mode::Local | Mode::Off => rt.block_on(report::prepare(&settings)),
    };
    let opened = report::audit_options(&settings, audit_log::LOCK_WAIT).and_then(|options| {
        let dir = writable_log_dir(&settings)?;
        report::open_audit_in(dir, &settings, options)
    });
    let not_sent = |err| Failure::new(exit::CANTCREAT, format!("{err}; nothing was sent"));
    let mut log = opened.map_err(not_sent)?;
    if !matches!(mode, Mode::Upload(_)) {
        let attempt = report::keep_local(&mut log, &payload).map_err(not_sent)?;
        println!(
            "report {} recorded in the audit log as local; nothing was sent: there is no \
             consent to upload (`surveyd consent` shows the state, `surveyd consent yes` allows \
             uploads)",
            attempt.seq
        );
        return Ok(());
    }
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
            Ok(())
        }
        Ok(attempt) => Err(Failure::new(
            exit::UNAVAILABLE,
            format!(
                "report {} not accepted: {}",
                attempt.seq,
                attempt.outcome.describe()
            ),
        )),
        Err(err) => Err(not_sent(err)),
    }
}

fn forget(settings: Settings) -> Result<(), Failure> {
    let rt = Runtime::current_thread()?;
    // Collected before any change of user, with the invoking user's access.
    let facts = rt.block_on(facts::collect(&settings, Path::new("/")));
    let requests = crate::daemon::forget::deletion_requests(&settings, &facts)
        .map_err(|err| Failure::new(exit::DATAERR, format!("{err}; nothing was sent")))?;
    let opened = report::audit_options(&settings, audit_log::LOCK_WAIT).and_then(|options| {
        let dir = writable_log_dir(&settings)?;
        report::open_audit_in(dir, &settings, options)
    });
    let not_sent = |err| Failure::new(exit::CANTCREAT, format!("{err}; nothing was sent"));
    let mut log = opened.map_err(not_sent)?;
    let deletions = rt
        .block_on(crate::daemon::forget::forget(
            &settings, &mut log, &requests,
        ))
        .map_err(not_sent)?;
    confirm_deletions(&deletions)
}

/// Prints each confirmed deletion; any unconfirmed one fails the command
/// with 69 (the admin runs `surveyd forget` again: deleting twice is
/// harmless).
fn confirm_deletions(deletions: &[crate::daemon::forget::Deletion]) -> Result<(), Failure> {
    let mut failed = Vec::new();
    for deletion in deletions {
        let line = format!(
            "deletion request {} for installation {}: {}",
            deletion.seq,
            deletion.uid,
            deletion.describe()
        );
        if deletion.is_success() {
            println!("{line}");
        } else {
            failed.push(line);
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        exit::UNAVAILABLE,
        format!(
            "not confirmed: {}; run `surveyd forget` again",
            failed.join("; ")
        ),
    ))
}

/// `surveyd audit new-chain`.
fn new_chain(settings: &Settings) -> Result<(), Failure> {
    let started = report::audit_options(settings, audit_log::LOCK_WAIT).and_then(|options| {
        let dir = writable_log_dir(settings)?;
        AuditLog::start_new_chain(dir, &settings.audit_log, options)
    });
    match started {
        Ok((_log, chain)) => {
            let set_aside: Vec<String> = chain
                .set_aside
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            println!(
                "started a new audit chain in {}: entry {} records that the old chain \
                 (last seq {}, sha256 {}) was set aside as: {}",
                settings.audit_log.display(),
                chain.seq,
                chain
                    .old_last_seq
                    .map_or_else(|| "unknown".to_owned(), |seq| seq.to_string()),
                chain.old_last_hash.as_deref().unwrap_or("none"),
                if set_aside.is_empty() {
                    "nothing (there was no log)".to_owned()
                } else {
                    set_aside.join(", ")
                }
            );
            Ok(())
        }
        Err(err) => Err(Failure::new(
            exit::CANTCREAT,
            format!("cannot start a new audit chain: {err}"),
        )),
    }
}

/// Opens the log's directory for a one-shot writer (`send`, `audit
/// new-chain`). Root in a directory another user owns becomes that user,
/// irreversibly (the command ends after this one write), instead of
/// writing there as root; the directory stays open across the switch, so
/// a path the owner could not traverse (DynamicUser's /var/log/private)
/// still works.
fn writable_log_dir(settings: &Settings) -> Result<LogDir, AuditError> {
    let dir = LogDir::for_log(&settings.audit_log)?;
    act_as_owner_of(&[&dir])?;
    Ok(dir)
}

/// Root about to write into these open directories becomes their owner
/// when another user owns them (irreversibly: the command ends after its
/// write). They must all be root's or all one user's: after the switch a
/// root-only directory could not be written, and before it the other
/// user's could not be written safely.
fn act_as_owner_of(dirs: &[&LogDir]) -> Result<(), AuditError> {
    let mut owners = Vec::new();
    for dir in dirs {
        owners.push((dir, dir.root_write()?));
    }
    let Some((first, owner)) = owners.first().copied() else {
        return Ok(());
    };
    if let Some((other, _)) = owners.iter().find(|(_, o)| *o != owner) {
        return Err(AuditError::UnsafeDir {
            path: other.path().to_owned(),
            why: format!(
                "it does not belong to the same user as {}; give both to the service's user",
                first.path().display()
            ),
        });
    }
    if let RootWrite::AsOwner { uid, gid } = owner {
        act_as(uid, gid).map_err(|err| AuditError::UnsafeDir {
            path: first.path().to_owned(),
            why: format!("it belongs to uid {uid}, and switching to that user failed: {err}"),
        })?;
        let paths: Vec<String> = dirs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        eprintln!(
            "surveyd: {} belong(s) to uid {uid}: writing as that user, not as root",
            paths.join(" and ")
        );
    }
    Ok(())
}

/// Drops every privilege of root for good: supplementary groups, then
/// group, then user (in that order, while still allowed to).
fn act_as(uid: u32, gid: u32) -> nix::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let gid = Gid::from_raw(gid);
    let uid = Uid::from_raw(uid);
    setgroups(&[gid])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)
}
