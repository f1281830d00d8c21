//! `surveyd consent`: what the admin has allowed to leave the machine, and
//! their answer. Without an answer it shows the state: the mode (off,
//! local, upload), the destination, the fields acknowledged and when, and
//! the fields this version would add that are not acknowledged, each with
//! its description and this machine's value. `yes` acknowledges every
//! current field (or the `--fields` subset), `no` withdraws. An answer is
//! recorded in the audit log first, then in the state dir's consent file
//! (`crate::daemon::state`), which the service reads before every report.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::daemon::audit::{AuditError, AuditLog, LogDir};
use crate::daemon::payload;
use crate::daemon::report::{self, Mode};
use crate::daemon::settings::Settings;
use crate::daemon::state::{self, Consent, ConsentMode};
use crate::daemon::{facts, forget};
use crate::exit;
use crate::sys::{Failure, Runtime};
use crate::wire;
use crate::wire::SURVEYD_FIELD_NAMES as FIELD_NAMES;

use super::act_as_owner_of;

/// The hashed identifiers: `id_scheme`, which says how they were hashed,
/// is sent whenever one is, since the collector cannot read one without it.
const HASHED_IDS: &[&str] = &[wire::MACHINE_ID_HASH.name, wire::SERVER_GUID_HASH.name];

/// How long to wait for the audit log's lock before leaving the record to
/// its holder: the running service holds it for good, a `surveyd send`
/// for one request.
const SERVICE_LOCK_WAIT: Duration = Duration::from_secs(1);

/// `surveyd consent` without an answer.
pub(super) fn show(settings: &Settings, as_json: bool) -> Result<(), Failure> {
    let consent = state::read_consent(&settings.state_dir);
    let mode = report::mode(settings, consent.clone());
    let acknowledged: Vec<&'static wire::Field> = match &mode {
        Mode::Upload(consent) => {
            let held = payload::not_acknowledged(&consent.fields, consent.schema);
            sendable_fields()
                .filter(|f| !held.contains(f.name))
                .collect()
        }
        Mode::Off | Mode::Local => Vec::new(),
    };
    let pending: Vec<&'static wire::Field> = payload::acknowledgeable(&settings.omit)
        .iter()
        .filter_map(|name| wire::field(name))
        .filter(|f| !acknowledged.iter().any(|a| a.name == f.name))
        .collect();
    // Collected only to show the admin what each pending field would say.
    let examples = if pending.is_empty() {
        serde_json::Map::new()
    } else {
        Runtime::current_thread()?
            .block_on(report::prepare(settings))
            .stats()
    };
    let example = |name: &str| examples.get(name).map(|entry| entry["value"].clone());
    let given = consent
        .as_ref()
        .filter(|c| c.mode == ConsentMode::Upload)
        .cloned();
    let url = settings.url.to_string();

    if as_json {
        let fields = |list: &[&'static wire::Field], with_example: bool| -> Vec<Value> {
            list.iter()
                .map(|f| {
                    let mut entry =
                        json!({"name": f.name, "description": f.desc, "since": f.since});
                    if with_example {
                        entry["example"] = example(f.name).unwrap_or(Value::Null);
                    }
                    entry
                })
                .collect()
        };
        let document = json!({
            "mode": mode.name(),
            "url": url,
            "schema": wire::SCHEMA,
            "acknowledged_schema": given.as_ref().map(|c| c.schema),
            "acknowledged_time": given.as_ref().map(|c| c.time.clone()),
            "acknowledged_url": given.as_ref().map(|c| c.url.clone()),
            "withdrawn_time": consent
                .as_ref()
                .filter(|c| c.mode == ConsentMode::Local)
                .map(|c| c.time.clone()),
            "acknowledged": fields(&acknowledged, false),
            "pending": fields(&pending, true),
        });
        println!("{document}");
        return Ok(());
    }

    let mut out = String::new();
    out.push_str(&match &mode {
        Mode::Off => "mode: off (surveyclient_interval = 0): nothing is collected or sent\n".into(),
        Mode::Local => "mode: local: each report is built on schedule and recorded in the audit \
                        log (`surveyd audit`), nothing is sent\n"
            .to_string(),
        Mode::Upload(_) => {
            "mode: upload: reports are sent with the acknowledged fields only\n".to_string()
        }
    });
    out.push_str(&format!("destination: {url}\n"));
    match (&given, &consent) {
        (Some(c), _) => {
            out.push_str(&format!(
                "acknowledged: schema {} on {}, {} field(s):\n",
                c.schema,
                c.time,
                acknowledged.len()
            ));
            if c.url != url {
                out.push_str(&format!(
                    "  note: the consent was given for {}; the configuration now names {url}\n",
                    c.url
                ));
            }
            for f in &acknowledged {
                out.push_str(&format!("  {:<20} {}\n", f.name, f.desc));
            }
        }
        (None, Some(c)) => out.push_str(&format!(
            "acknowledged: nothing (consent withdrawn on {})\n",
            c.time
        )),
        (None, None) => out.push_str("acknowledged: nothing (no answer given yet)\n"),
    }
    if pending.is_empty() {
        out.push_str("pending: none; every field this version sends is acknowledged\n");
    } else {
        out.push_str(&format!(
            "pending (not sent until `surveyd consent yes`; schema {}), with this machine's \
             value:\n",
            wire::SCHEMA
        ));
        let described: Vec<String> = pending
            .iter()
            .map(|f| format!("{} (schema {})", f.desc, f.since))
            .collect();
        let width = described.iter().map(String::len).max().unwrap_or(0);
        for (f, description) in pending.iter().zip(&described) {
            let value = match example(f.name) {
                Some(Value::String(text)) => printable(&text),
                Some(other) => other.to_string(),
                None => "(none on this machine)".to_string(),
            };
            out.push_str(&format!(
                "  {:<20} {description:<width$}  {value}\n",
                f.name
            ));
        }
    }
    out.push_str("`surveyd preview` prints the whole report `surveyd consent yes` would allow.\n");
    print!("{out}");
    Ok(())
}

/// `surveyd consent yes [--fields a,b]`.
pub(super) fn yes(
    settings: &Settings,
    subset: Option<&[String]>,
    as_json: bool,
) -> Result<(), Failure> {
    let fields = match subset {
        None => payload::acknowledgeable(&settings.omit),
        Some(names) => chosen_fields(names)?,
    };
    for name in fields.iter().filter(|name| settings.omit.contains(*name)) {
        eprintln!(
            "surveyd: warning: {name} is acknowledged but surveyclient_omit keeps it out of \
             every report"
        );
    }
    let consent = Consent {
        mode: ConsentMode::Upload,
        schema: wire::SCHEMA,
        fields,
        url: settings.url.to_string(),
        time: now(),
    };
    let (recorded, _) = record(settings, &consent)?;
    if as_json {
        println!("{}", answer_json(&consent, recorded));
    } else {
        println!(
            "consent recorded ({}): reports to {} carry these {} field(s) of schema {}: {}",
            recorded.describe(),
            consent.url,
            consent.fields.len(),
            consent.schema,
            consent.fields.join(", ")
        );
        if settings.enabled() {
            println!("the running service uploads from its next report on; no restart needed");
        } else {
            println!(
                "reporting is off (surveyclient_interval = 0): nothing is sent until it is set"
            );
        }
    }
    Ok(())
}

/// `surveyd consent no`: uploads stop from the next report on, and when
/// the consent it replaces allowed uploads, the collector is asked to
/// delete what it holds (by this command when it can write the audit log,
/// else by the running service before its next report).
pub(super) fn no(settings: &Settings, as_json: bool) -> Result<(), Failure> {
    let previous = state::read_consent(&settings.state_dir);
    let rt = Runtime::current_thread()?;
    // Collected before any change of user, with the invoking user's access.
    let facts = rt.block_on(facts::collect(settings, Path::new("/")));
    let requests = forget::withdrawal_requests(settings, &facts, previous.as_ref());
    let consent = Consent {
        mode: ConsentMode::Local,
        schema: wire::SCHEMA,
        fields: Vec::new(),
        url: settings.url.to_string(),
        time: now(),
    };
    let (recorded, log) = record(settings, &consent)?;
    if !as_json {
        println!(
            "consent withdrawn ({}): reports are recorded in the audit log only, nothing is \
             sent from the next report on",
            recorded.describe()
        );
    }
    let deletion = match (requests, log) {
        (Ok(requests), _) if requests.is_empty() => Deletion::NotNeeded,
        (Ok(requests), Some(mut log)) => {
            let deletions = rt
                .block_on(forget::forget(settings, &mut log, &requests))
                .map_err(|err| {
                    Failure::new(
                        exit::CANTCREAT,
                        format!(
                            "consent withdrawn, but the deletion request could not be audited: \
                             {err}; nothing was sent; run `surveyd forget`"
                        ),
                    )
                })?;
            Deletion::Done(deletions)
        }
        (Ok(_), None) => Deletion::ByService,
        (Err(err), _) => Deletion::Impossible(err.to_string()),
    };
    if as_json {
        let mut answer = answer_json(&consent, recorded);
        answer["deletion"] = deletion.json();
        println!("{answer}");
    } else {
        match &deletion {
            Deletion::NotNeeded => println!(
                "nothing was uploaded under the consent this replaces, so nothing is asked \
                 of {}",
                consent.url
            ),
            Deletion::ByService => println!(
                "the running service asks {} to delete this installation's data before its \
                 next report (`surveyd audit` shows the deletion request and its tombstone)",
                consent.url
            ),
            Deletion::Done(_) | Deletion::Impossible(_) => {}
        }
    }
    match deletion {
        Deletion::Done(deletions) if as_json => {
            if deletions.iter().all(forget::Deletion::is_success) {
                Ok(())
            } else {
                Err(Failure::new(
                    exit::UNAVAILABLE,
                    "consent withdrawn, but the collector did not confirm every deletion; \
                     run `surveyd forget` again",
                ))
            }
        }
        Deletion::Done(deletions) => super::confirm_deletions(&deletions),
        Deletion::Impossible(why) => Err(Failure::new(
            exit::DATAERR,
            format!("consent withdrawn, but no deletion could be asked for: {why}"),
        )),
        Deletion::NotNeeded | Deletion::ByService => Ok(()),
    }
}

/// What `consent no` did about the data already uploaded.
enum Deletion {
    /// The replaced consent allowed no uploads.
    NotNeeded,
    /// The running service holds the audit log and asks itself.
    ByService,
    Done(Vec<forget::Deletion>),
    /// No machine id: no deletion can be proven.
    Impossible(String),
}

impl Deletion {
    fn json(&self) -> Value {
        match self {
            Deletion::NotNeeded => json!({"state": "not-needed"}),
            Deletion::ByService => json!({"state": "by-service"}),
            Deletion::Done(deletions) => json!({
                "state": if deletions.iter().all(forget::Deletion::is_success) {
                    "confirmed"
                } else {
                    "failed"
                },
                "requests": deletions.iter().map(|d| json!({
                    "seq": d.seq,
                    "uid": d.uid,
                    "confirmed": d.is_success(),
                    "outcome": d.describe(),
                })).collect::<Vec<_>>(),
            }),
            Deletion::Impossible(why) => json!({"state": "impossible", "why": why}),
        }
    }
}

/// The `--fields` list checked against the fields this version sends,
/// in the wire contract's order; `id_scheme` comes with a hashed id.
fn chosen_fields(names: &[String]) -> Result<Vec<String>, Failure> {
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match FIELD_NAMES.iter().find(|known| **known == name) {
            Some(known) => {
                chosen.insert(known);
            }
            None => {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "--fields: {name:?} is not a field surveyd sends; valid names are: {}",
                        FIELD_NAMES.join(" ")
                    ),
                ))
            }
        }
    }
    if chosen.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            "--fields names no field; to send nothing, answer `surveyd consent no`",
        ));
    }
    if HASHED_IDS.iter().any(|id| chosen.contains(id)) {
        chosen.insert(wire::ID_SCHEME.name);
    }
    Ok(FIELD_NAMES
        .iter()
        .filter(|name| chosen.contains(**name))
        .map(|name| name.to_string())
        .collect())
}

/// Records the answer: first in the audit log (so the log shows every
/// change of consent, even one whose file write then fails), then in the
/// consent file. While the service runs it holds the log; then only the
/// file is written here, and the service records the answer before the
/// first report it governs. As root, in directories the service's user
/// owns, both are written as that user, never as root.
fn record(settings: &Settings, consent: &Consent) -> Result<(Recorded, Option<AuditLog>), Failure> {
    let cannot = |err: &dyn std::fmt::Display| {
        Failure::new(
            exit::CANTCREAT,
            format!("{err}; the consent was not changed"),
        )
    };
    let state_dir = LogDir::for_log(&settings.state_dir.join(state::CONSENT_FILE))
        .map_err(|err| cannot(&err))?;
    let options = report::audit_options(settings, SERVICE_LOCK_WAIT).map_err(|err| cannot(&err))?;
    let log_dir = LogDir::for_log(&settings.audit_log).map_err(|err| cannot(&err))?;
    act_as_owner_of(&[&state_dir, &log_dir]).map_err(|err| cannot(&err))?;
    let (recorded, log) = match report::open_audit_in(log_dir, settings, options) {
        Ok(mut log) => {
            let seq = report::record_consent(&mut log, consent).map_err(|err| cannot(&err))?;
            (Recorded::InLog(seq), Some(log))
        }
        Err(AuditError::Locked { holder, .. }) => (Recorded::ByService(holder), None),
        Err(err) => return Err(cannot(&err)),
    };
    state_dir
        .replace(OsStr::new(state::CONSENT_FILE), &consent.to_bytes())
        .map_err(|source| {
            Failure::new(
                exit::CANTCREAT,
                format!(
                    "cannot write the consent file {}: {source}; {}, but it is not in force; \
                     fix the state dir and answer again",
                    settings.state_dir.join(state::CONSENT_FILE).display(),
                    match recorded {
                        Recorded::InLog(seq) => format!("audit entry {seq} records the answer"),
                        Recorded::ByService(_) => "the audit log does not record it".into(),
                    }
                ),
            )
        })?;
    Ok((recorded, log))
}

/// Where the answer went into the audit log.
#[derive(Debug, Clone, Copy)]
enum Recorded {
    /// This command appended it, as this entry.
    InLog(u64),
    /// Another process (the running service) holds the log: the service
    /// appends the answer before its next report, which is the first one
    /// the answer governs.
    ByService(Option<u32>),
}

impl Recorded {
    fn describe(self) -> String {
        match self {
            Recorded::InLog(seq) => format!("audit entry {seq}"),
            Recorded::ByService(holder) => format!(
                "the running service{} records it in the audit log before its next report",
                holder
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default()
            ),
        }
    }

    fn seq(self) -> Option<u64> {
        match self {
            Recorded::InLog(seq) => Some(seq),
            Recorded::ByService(_) => None,
        }
    }
}

fn answer_json(consent: &Consent, recorded: Recorded) -> Value {
    json!({
        "mode": consent.mode.name(),
        "schema": consent.schema,
        "fields": consent.fields,
        "url": consent.url,
        "time": consent.time,
        "audit_seq": recorded.seq(),
    })
}

fn sendable_fields() -> impl Iterator<Item = &'static wire::Field> {
    FIELD_NAMES.iter().filter_map(|name| wire::field(name))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A value from a fact source, shown on the admin's terminal: no control,
/// separator or bidirectional formatting character reaches it.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if wire::forbidden_char(c) { ' ' } else { c })
        .collect()
}
