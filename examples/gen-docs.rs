//! Generates the packages' documentation from the code, so that it cannot
//! drift from what the programs do: the man pages surveyd(8) and
//! surveyd-collector(8) and the bash, zsh and fish completions from the
//! clap definitions, and surveyd.cfg(5) from the commented configuration
//! file etc/surveyd.cfg (the package's conffile), which is first checked
//! against the settings code: every key surveyd reads must be documented
//! there, with the default surveyd really uses.
//!
//! ```text
//! cargo run --example gen-docs -- OUTDIR
//! ```
//!
//! writes `OUTDIR/man/{surveyd.8,surveyd.cfg.5,...}` and
//! `OUTDIR/completions/{bash,zsh,fish}/...`; packaging/build.sh runs it
//! before building the packages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use surveyd::daemon::cli::DEFAULT_CONFIG;
use surveyd::daemon::settings::{Settings, KNOWN_KEYS};
use surveyd::exit;
use surveyd::logging::REPORT_SENT_MESSAGE_ID;
use surveyd::sys::reload::RELOAD_STATUS_FILE;

/// The commented conffile, relative to the crate root.
const CONFFILE_SOURCE: &str = "etc/surveyd.cfg";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: gen-docs OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(out)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gen-docs: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One program: its clap definition and the man page sections that the
/// definition cannot give.
struct Program {
    command: Command,
    section: &'static str,
    extra_sections: Roff,
}

/// The programs documented.
fn programs() -> Vec<Program> {
    vec![surveyd_program(), collector_program()]
}

fn generate(out: &Path) -> Result<Vec<PathBuf>, String> {
    let conffile = Path::new(env!("CARGO_MANIFEST_DIR")).join(CONFFILE_SOURCE);
    let text = fs::read_to_string(&conffile)
        .map_err(|err| format!("cannot read {}: {err}", conffile.display()))?;
    let doc = ConfDoc::parse(&text).map_err(|err| format!("{}: {err}", conffile.display()))?;
    doc.check_against_settings(&conffile)
        .map_err(|err| format!("{}: {err}", conffile.display()))?;

    let mut written = Vec::new();
    let mut write = |rel: String, bytes: Vec<u8>| -> Result<(), String> {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        }
        fs::write(&path, bytes).map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        written.push(path);
        Ok(())
    };

    write("man/surveyd.cfg.5".into(), conffile_page(&doc))?;
    for program in programs() {
        let name = program.command.get_name().to_string();
        write(
            format!("man/{name}.{}", program.section),
            command_page(&program),
        )?;
        for (shell, rel) in [
            (Shell::Bash, format!("completions/bash/{name}")),
            (Shell::Zsh, format!("completions/zsh/_{name}")),
            (Shell::Fish, format!("completions/fish/{name}.fish")),
        ] {
            let mut script = Vec::new();
            let mut command = program.command.clone();
            clap_complete::generate(shell, &mut command, &name, &mut script);
            write(rel, script)?;
        }
    }
    Ok(written)
}

// ---------------------------------------------------------------------------
// Command pages
// ---------------------------------------------------------------------------

fn source() -> String {
    format!("surveyd {}", env!("CARGO_PKG_VERSION"))
}

/// NAME, SYNOPSIS, DESCRIPTION and OPTIONS as clap_mangen renders them, then
/// every subcommand with its own synopsis, text and options (one page
/// instead of one per subcommand: an admin reads one), then the extras.
fn command_page(program: &Program) -> Vec<u8> {
    let man = Man::new(program.command.clone())
        .title(program.command.get_name().to_uppercase())
        .section(program.section)
        .source(source())
        .manual("System Administration");
    let mut page = Vec::new();
    for render in [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ] {
        render(&man, &mut page).expect("writing to a Vec cannot fail");
    }
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let name = program.command.get_name().to_string();
    subcommands(&mut roff, &program.command, &name);
    page.extend(roff.to_roff().into_bytes());
    page.extend(program.extra_sections.to_roff().into_bytes());
    page
}

fn subcommands(roff: &mut Roff, parent: &Command, path: &str) {
    for command in parent
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        let path = format!("{path} {}", command.get_name());
        roff.control("SS", [path.as_str()]);
        if own_args(command).next().is_some() || command.has_subcommands() {
            let mut synopsis = vec![bold(path.clone())];
            for arg in own_args(command) {
                synopsis.push(roman(" "));
                synopsis.extend(arg_synopsis(arg, true));
            }
            if command.has_subcommands() {
                synopsis.push(roman(" ["));
                synopsis.push(italic("COMMAND"));
                synopsis.push(roman("]"));
            }
            roff.text(synopsis);
        }
        let about = command
            .get_long_about()
            .or_else(|| command.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        for paragraph in paragraphs(&about) {
            roff.control("PP", []);
            roff.text(inline_code(&paragraph));
        }
        for arg in own_args(command) {
            roff.control("TP", []);
            roff.text(arg_synopsis(arg, false));
            let mut text = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(|help| help.to_string().replace('\n', " "))
                .unwrap_or_default();
            // clap's one-line helps carry no final stop; more sentences follow.
            if !text.is_empty() && !text.ends_with('.') {
                text.push('.');
            }
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !possible.is_empty() {
                text.push_str(&format!(" One of: {}.", possible.join(", ")));
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() && arg.get_action().takes_values() {
                text.push_str(&format!(" Default: {}.", defaults.join(", ")));
            }
            roff.text(inline_code(text.trim()));
        }
        subcommands(roff, command, &path);
    }
}

/// The arguments a subcommand declares itself (not the global ones it
/// inherits, nor clap's help flag).
fn own_args(command: &Command) -> impl Iterator<Item = &Arg> {
    command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
}

/// `--flag VALUE` (or `VALUE` for a positional); in a synopsis, optional
/// flags are bracketed.
fn arg_synopsis(arg: &Arg, in_synopsis: bool) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(ToString::to_string)
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    if arg.is_positional() {
        return vec![italic(value)];
    }
    let flag = match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => unreachable!("a non-positional argument has a flag"),
    };
    let mut parts = vec![bold(flag)];
    if arg.get_action().takes_values() {
        parts.push(roman(" "));
        parts.push(italic(value));
    }
    if in_synopsis && !arg.is_required_set() {
        parts.insert(0, roman("["));
        parts.push(roman("]"));
    }
    parts
}

/// Splits doc-comment text into paragraphs, joining wrapped lines.
fn paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// `code` in doc comments becomes bold; the rest is roman.
fn inline_code(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(
            |(i, part)| {
                if i % 2 == 1 {
                    bold(part)
                } else {
                    roman(part)
                }
            },
        )
        .collect()
}

/// A section of plain paragraphs.
fn section(roff: &mut Roff, title: &str, text: &[&str]) {
    roff.control("SH", [title]);
    for (i, paragraph) in text.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text(inline_code(paragraph));
    }
}

/// A section of `.TP` items: (term, explanation).
fn list_section(roff: &mut Roff, title: &str, intro: Option<&str>, items: &[(String, String)]) {
    roff.control("SH", [title]);
    if let Some(intro) = intro {
        roff.text(inline_code(intro));
    }
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(term.as_str())]);
        roff.text(inline_code(text));
    }
}

fn surveyd_program() -> Program {
    let defaults = Settings::default();
    let mut extra = Roff::new();
    section(
        &mut extra,
        "THE SERVICE",
        &[
            "The package runs `surveyd run` as the systemd service surveyd.service, \
             enabled and started on installation. `systemctl status surveyd` shows \
             its state and when the next report is due.",
            "`systemctl reload surveyd` re-reads the configuration and returns once \
             the service has applied it, or has rejected it and kept the running \
             configuration; then the reload fails and `systemctl status surveyd` \
             says why, with file and line. A new interval takes effect at once; a \
             new URL is used by the next report.",
            "The service logs to the journal. Each report sent is one record with \
             a fixed message id, so that the reports sent are listed by:",
        ],
    );
    extra.control("sp", []);
    extra.control("RS", []);
    extra.control("nf", []);
    extra.text([roman(format!(
        "journalctl -u surveyd MESSAGE_ID={REPORT_SENT_MESSAGE_ID}"
    ))]);
    extra.control("fi", []);
    extra.control("RE", []);
    extra.control("PP", []);
    extra.text(inline_code(
        "The service runs as an unprivileged user with no capabilities, \
         a read-only view of the system and a system call filter; \
         `systemd-analyze security surveyd` shows the sandbox.",
    ));
    list_section(
        &mut extra,
        "EXIT STATUS",
        Some("Codes follow sysexits.h, as admins' scripts expect from a daemon's tools:"),
        &[
            (exit::OK.to_string(), "Success.".into()),
            (
                "2".into(),
                "The command line was not understood.".into(),
            ),
            (
                exit::DATAERR.to_string(),
                "The audit log failed verification, or has no report with the sequence number given."
                    .into(),
            ),
            (
                exit::UNAVAILABLE.to_string(),
                "The collector did not accept the report (the attempt is still in the audit log)."
                    .into(),
            ),
            (exit::SOFTWARE.to_string(), "Internal error.".into()),
            (
                exit::CANTCREAT.to_string(),
                "The audit log could not be written; nothing was sent.".into(),
            ),
            (exit::IOERR.to_string(), "The audit log could not be read.".into()),
            (
                exit::CONFIG.to_string(),
                "The configuration is invalid (the message names file and line), \
                 a reload was rejected, or reporting is switched off \
                 (`surveyclient_interval = 0`) for `send`."
                    .into(),
            ),
        ],
    );
    list_section(
        &mut extra,
        "ENVIRONMENT",
        None,
        &[
            (
                "SURVEYD_CONFIG".into(),
                "The configuration file, when `-c` is not given.".into(),
            ),
            (
                "SURVEYD_LOG".into(),
                "Log level or tracing filter: `error`, `warn`, `info` (the default) or `debug`."
                    .into(),
            ),
            (
                "https_proxy, http_proxy, no_proxy".into(),
                "The proxy used for reports, as curl reads them.".into(),
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM".into(),
                "Set by systemd for `surveyd run`: readiness and watchdog \
                 notifications, and logging to the journal."
                    .into(),
            ),
            (
                "MAINPID, RUNTIME_DIRECTORY".into(),
                "Set by systemd for `surveyd reload` (the unit's ExecReload): \
                 the service to signal and where it confirms the reload."
                    .into(),
            ),
        ],
    );
    list_section(
        &mut extra,
        "FILES",
        None,
        &[
            (
                DEFAULT_CONFIG.into(),
                "The configuration; see surveyd.cfg(5).".into(),
            ),
            (
                defaults.audit_log.display().to_string(),
                "The audit log of every payload sent (`surveyclient_audit_log`); \
                 rotated files beside it. Kept when the package is removed, \
                 deleted when it is purged."
                    .into(),
            ),
            (
                defaults.state_dir.display().to_string(),
                "The time of the last successful report and the generated server \
                 GUID (`surveyclient_state_dir`)."
                    .into(),
            ),
            (
                format!("/run/surveyd/{RELOAD_STATUS_FILE}"),
                "Where the service confirms each reload for `surveyd reload`.".into(),
            ),
        ],
    );
    section(
        &mut extra,
        "SEE ALSO",
        &[
            "surveyd.cfg(5), surveyd-collector(8), systemctl(1), journalctl(1), \
           systemd-id128(1), systemd.exec(5)",
        ],
    );
    Program {
        command: surveyd::daemon::cli::Cli::command(),
        section: "8",
        extra_sections: extra,
    }
}

fn collector_program() -> Program {
    use surveyd::collector::{self, config, ingest, receipt_key};
    let mut extra = Roff::new();
    let service = format!(
        "The package runs `surveyd-collector serve` as the systemd service \
         surveyd-collector.service, enabled and started on installation. It \
         accepts reports with `POST` on `{}` (and on the configured `path`) and \
         answers 200 with a signed receipt once the report is committed; a bad \
         request gets a 4xx answer and changes nothing. Client addresses are kept \
         in memory for the rate limit only, never stored.",
        config::STANDARD_PATH
    );
    let receipts = format!(
        "Every stored report and every deletion is answered with a JSON receipt \
         signed with the collector's Ed25519 key: the kind (`stored` or `deleted`), \
         the installation's uid, the SHA-256 of the request body, the time and the \
         key id. The key lives in `receipt_key` (default `{}`, mode 0600); `serve` \
         creates it on first start and logs its public key, `surveyd-collector key` \
         prints it: publish it, installations set it as `surveyclient_collector_key`. \
         A key file that is a link, not a regular file, readable by group or others, \
         or not an Ed25519 PKCS#8 key stops the service (exit 78) and is never \
         replaced. Collectors sharing one database share the key file.",
        receipt_key::DEFAULT_PATH
    );
    let deletion = format!(
        "`POST {}` with `{{\"uid\":HEX64,\"secret\":HEX64}}` deletes an installation's \
         row if the SHA-256 of the secret equals the commitment its reports carried \
         (the first one stored is kept); it answers 200 with a `deleted` receipt, \
         also when there is no such row (deleting twice is harmless), and 403 with \
         nothing changed when the secret does not match or the row has no \
         commitment. Neither the uid nor the secret is logged.",
        surveyd::wire::DELETE_PATH
    );
    section(
        &mut extra,
        "THE SERVICE",
        &[
            &service,
            "`systemctl reload surveyd-collector` re-reads the extra submit path, \
             the body size limit, the rate limit and the TLS certificate; other \
             settings need a restart. The service logs to the journal: \
             `journalctl -u surveyd-collector`.",
        ],
    );
    section(
        &mut extra,
        "RECEIPTS AND DELETION",
        &[
            &receipts,
            &deletion,
            "To rotate the key: `surveyd-collector key --generate --file NEW` prints \
             the new public key; publish both keys (installations accept either); \
             point `receipt_key` at NEW and restart the collectors; later publish \
             the new key alone.",
        ],
    );
    list_section(
        &mut extra,
        "FLAGS",
        Some("The `flags` column of the report records how a row arrived, as the sum of:"),
        &[
            (
                ingest::FLAG_UPSTREAM_RAW_IDS.to_string(),
                "sent by kopano-server with raw identifiers, hashed with SHA-256 on ingest".into(),
            ),
            (
                ingest::FLAG_ID_APP_V1.to_string(),
                "identifiers hashed by surveyd with the app-specific scheme (`app-v1`)".into(),
            ),
            (
                ingest::FLAG_ID_SHA256.to_string(),
                "identifiers hashed by surveyd with plain SHA-256".into(),
            ),
            (
                ingest::FLAG_NO_MACHINE_ID.to_string(),
                "the report had no machine id".into(),
            ),
            (
                ingest::FLAG_NO_SERVER_GUID.to_string(),
                "the report had no server GUID".into(),
            ),
        ],
    );
    list_section(
        &mut extra,
        "EXIT STATUS",
        Some("Codes follow sysexits.h:"),
        &[
            ("0".into(), "Success.".into()),
            (
                exit::USAGE.to_string(),
                "The command line was not understood.".into(),
            ),
            (
                exit::UNAVAILABLE.to_string(),
                "The database could not be reached.".into(),
            ),
            (exit::SOFTWARE.to_string(), "Internal error.".into()),
            (
                exit::OSERR.to_string(),
                "The listening socket or another system resource could not be had.".into(),
            ),
            (
                exit::CANTCREAT.to_string(),
                "The receipt key could not be created (or `key --generate` found one \
                 already there)."
                    .into(),
            ),
            (
                exit::CONFIG.to_string(),
                "The configuration is invalid, or the receipt key is missing (for `key`), \
                 unsafe or unreadable; the message says where."
                    .into(),
            ),
        ],
    );
    list_section(
        &mut extra,
        "ENVIRONMENT",
        None,
        &[(
            "RUST_LOG".into(),
            "Log level or tracing filter: `error`, `warn`, `info` (the default) or `debug` \
             (each request, without its address)."
                .into(),
        )],
    );
    list_section(
        &mut extra,
        "FILES",
        None,
        &[
            (
                config::DEFAULT_CONFIG_PATH.into(),
                "The configuration (TOML); every key is explained in the file as installed.".into(),
            ),
            (
                "/var/lib/surveyd-collector/surveys.db".into(),
                "The default SQLite database of installations. Kept when the \
                 package is removed, deleted when it is purged."
                    .into(),
            ),
            (
                receipt_key::DEFAULT_PATH.into(),
                "The default receipt key (Ed25519, PKCS#8, mode 0600). Kept when the \
                 package is removed, deleted when it is purged."
                    .into(),
            ),
        ],
    );
    section(
        &mut extra,
        "SEE ALSO",
        &["surveyd(8), surveyd.cfg(5), systemctl(1), journalctl(1)"],
    );
    Program {
        command: collector::Cli::command(),
        section: "8",
        extra_sections: extra,
    }
}

// ---------------------------------------------------------------------------
// The conffile and surveyd.cfg(5)
// ---------------------------------------------------------------------------

/// The documentation in etc/surveyd.cfg: after the file's own header,
/// `## Title` lines start sections; in a section, `# ` comment lines
/// explain the `#key = default` lines right below them (a lone `#` starts
/// a new paragraph, `#   ` an indented verbatim line), and a blank line
/// ends the entry.
#[derive(Debug)]
struct ConfDoc {
    sections: Vec<ConfSection>,
}

#[derive(Debug)]
struct ConfSection {
    title: String,
    entries: Vec<ConfEntry>,
}

#[derive(Debug, Default)]
struct ConfEntry {
    text: Vec<Block>,
    /// (key, default as written)
    keys: Vec<(String, String)>,
}

#[derive(Debug)]
enum Block {
    Paragraph(String),
    Verbatim(Vec<String>),
}

impl ConfDoc {
    fn parse(text: &str) -> Result<ConfDoc, String> {
        let mut sections: Vec<ConfSection> = Vec::new();
        let mut entry = ConfEntry::default();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if let Some(title) = line.strip_prefix("## ") {
                close_entry(&mut sections, &mut entry, number)?;
                sections.push(ConfSection {
                    title: title.trim().to_string(),
                    entries: Vec::new(),
                });
                continue;
            }
            if sections.is_empty() {
                // The file's own header, addressed to whoever edits it.
                continue;
            }
            if line.trim().is_empty() {
                close_entry(&mut sections, &mut entry, number)?;
                continue;
            }
            let Some(comment) = line.strip_prefix('#') else {
                return Err(format!(
                    "line {number}: every setting must stay commented out, showing its default"
                ));
            };
            if let Some((key, value)) = comment
                .split_once('=')
                .filter(|_| comment.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
            {
                entry
                    .keys
                    .push((key.trim().to_string(), value.trim().to_string()));
                continue;
            }
            if !entry.keys.is_empty() {
                return Err(format!(
                    "line {number}: explanation after the key lines; separate entries with a blank line"
                ));
            }
            if comment.is_empty() {
                entry.text.push(Block::Paragraph(String::new()));
            } else if let Some(verbatim) = comment.strip_prefix("   ") {
                match entry.text.last_mut() {
                    Some(Block::Verbatim(lines)) => lines.push(verbatim.to_string()),
                    _ => entry.text.push(Block::Verbatim(vec![verbatim.to_string()])),
                }
            } else if let Some(words) = comment.strip_prefix(' ') {
                match entry.text.last_mut() {
                    Some(Block::Paragraph(p)) => {
                        if !p.is_empty() {
                            p.push(' ');
                        }
                        p.push_str(words.trim());
                    }
                    _ => entry.text.push(Block::Paragraph(words.trim().to_string())),
                }
            } else {
                return Err(format!(
                    "line {number}: write \"# text\" or \"#key = value\""
                ));
            }
        }
        close_entry(&mut sections, &mut entry, text.lines().count() + 1)?;
        Ok(ConfDoc { sections })
    }

    fn keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.sections
            .iter()
            .flat_map(|s| &s.entries)
            .flat_map(|e| &e.keys)
    }

    /// Every key surveyd reads is documented once, with its real default,
    /// and the file as shipped gives exactly the default settings.
    fn check_against_settings(&self, path: &Path) -> Result<(), String> {
        let effective = Settings::default().effective();
        let mut seen = Vec::new();
        for (key, value) in self.keys() {
            if seen.contains(&key.as_str()) {
                return Err(format!("{key} is documented twice"));
            }
            seen.push(key.as_str());
            let Some((_, default)) = effective.iter().find(|(k, _)| k == key) else {
                return Err(format!("{key} is not a key surveyd reads"));
            };
            if value != default {
                return Err(format!(
                    "{key} is shown as {value:?}, but its default is {default:?}"
                ));
            }
        }
        let missing: Vec<&str> = KNOWN_KEYS
            .iter()
            .copied()
            .filter(|k| !seen.contains(k))
            .collect();
        if !missing.is_empty() {
            return Err(format!("undocumented keys: {}", missing.join(" ")));
        }
        let loaded = Settings::load(path).map_err(|err| err.to_string())?;
        if !loaded.warnings.is_empty() {
            return Err(loaded.warnings.join("; "));
        }
        if loaded.settings != Settings::default() {
            return Err("the file as shipped does not give the default settings".into());
        }
        Ok(())
    }
}

fn close_entry(
    sections: &mut [ConfSection],
    entry: &mut ConfEntry,
    number: usize,
) -> Result<(), String> {
    let entry = std::mem::take(entry);
    if entry.keys.is_empty() {
        if entry.text.is_empty() {
            return Ok(());
        }
        return Err(format!(
            "before line {number}: an explanation that no \"#key = default\" line follows"
        ));
    }
    let section = sections
        .last_mut()
        .expect("entries are only collected inside a section");
    section.entries.push(entry);
    Ok(())
}

fn conffile_page(doc: &ConfDoc) -> Vec<u8> {
    let mut roff = Roff::new();
    let source = source();
    roff.control(
        "TH",
        [
            "SURVEYD.CFG",
            "5",
            "",
            source.as_str(),
            "File Formats Manual",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "surveyd.cfg - configuration of surveyd, the usage-survey reporter",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold(DEFAULT_CONFIG)]);
    section(
        &mut roff,
        "DESCRIPTION",
        &[
            "surveyd(8) reads its settings from this file, or from the file given \
             with `-c`. The format is that of kopano-server's server.cfg. On a Kopano \
             server, `!include /etc/kopano/server.cfg` in this file gives surveyd the \
             keys it shares with kopano-server (user_plugin, attachment_storage, \
             mysql_*); set surveyd's own keys after the include, since the later key \
             wins and kopano-server reads the same surveyclient_* keys for its own \
             reports.",
            "Each line is `key = value`, split at the first `=`, both sides trimmed. \
             A `#` in the first column starts a comment; there are no inline comments \
             and no quoting. `!include PATH` reads another file (relative to the \
             including one; cycles are an error). A value that starts with `$` is taken \
             from that environment variable. A key given twice takes the later value.",
            "Keys surveyd does not know are ignored, since server.cfg has hundreds; an \
             unknown key starting with `surveyclient_` is a warning that suggests the \
             nearest known key. Booleans are yes/no, true/false, on/off or 1/0, in any \
             case; numbers are plain digits. Anything else is an error naming file and \
             line, never a silent default.",
            "`surveyd check-config` prints every effective setting, and \
             `systemctl reload surveyd` applies a changed file to the running service.",
        ],
    );
    roff.control("SH", ["OPTIONS"]);
    roff.text([roman(
        "The file installed by the package shows every key with its default value, \
         commented out.",
    )]);
    for conf_section in &doc.sections {
        roff.control("SS", [conf_section.title.as_str()]);
        for entry in &conf_section.entries {
            for (i, (key, default)) in entry.keys.iter().enumerate() {
                roff.control(if i == 0 { "TP" } else { "TQ" }, []);
                let shown = if default.is_empty() {
                    italic("(empty)")
                } else {
                    italic(default.as_str())
                };
                roff.text([bold(key.as_str()), roman(" = "), shown]);
            }
            let mut first = true;
            for block in &entry.text {
                match block {
                    Block::Paragraph(text) if text.is_empty() => {}
                    Block::Paragraph(text) => {
                        if !first {
                            roff.control("IP", []);
                        }
                        roff.text(quoted_as_bold(text));
                    }
                    Block::Verbatim(lines) => {
                        roff.control("IP", []);
                        roff.control("nf", []);
                        for line in lines {
                            roff.text([roman(line.as_str())]);
                        }
                        roff.control("fi", []);
                    }
                }
                first = false;
            }
        }
    }
    roff.control("SH", ["EXAMPLE"]);
    roff.text([roman(
        "Reports to an in-house surveyd-collector, with rounded counts and without \
         the user plugin:",
    )]);
    roff.control("sp", []);
    roff.control("RS", []);
    roff.control("nf", []);
    for line in [
        "surveyclient_url = https://stats.example.com/api/stats/v1/submit",
        "surveyclient_bucket_counts = yes",
        "surveyclient_omit = userplugin",
    ] {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
    section(
        &mut roff,
        "SEE ALSO",
        &["surveyd(8), surveyd-collector(8), systemd-id128(1)"],
    );
    roff.to_roff().into_bytes()
}

/// The conffile puts literal values in double quotes ("surveyd audit");
/// on the man page they become bold.
fn quoted_as_bold(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let Some(len) = rest[start + 1..].find('"') else {
            break;
        };
        if start > 0 {
            out.push(roman(&rest[..start]));
        }
        out.push(bold(&rest[start + 1..start + 1 + len]));
        rest = &rest[start + 2 + len..];
    }
    if !rest.is_empty() {
        out.push(roman(rest));
    }
    out
}
