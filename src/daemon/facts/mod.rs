//! Facts: what a report says about this machine, gathered from the machine
//! id file, os-release, uname, the settings, the state dir (a server GUID
//! generated once) and the admin's extra sources (`surveyclient_facts`).
//! This file is the collection; [`system`] reads the machine itself,
//! [`sources`] runs the `command:` and `file:` sources, [`kopano_mysql`]
//! reads kopano-server's database.
//!
//! A source that fails is logged and its fields are left out; nothing is
//! ever made up. Fields named in `surveyclient_omit` are not even read.
//!
//! Every input is bounded: files are read with `safe_fs` (no link followed,
//! regular files only, a size limit per kind) on a blocking thread within
//! `surveyclient_timeout`, so neither a FIFO nor a hung file system can stop
//! the service loop; a command's output is capped and its whole process
//! group is killed when it is done, too slow or too talkative.

mod bounded;
pub mod kopano_mysql;
pub mod sources;
pub mod system;

use std::path::Path;

use tracing::warn;

use crate::daemon::cfgfile::ConfigError;
use crate::daemon::payload::{FactValue, Facts};
use crate::daemon::settings::{FactSource, Loaded, Settings};
use crate::daemon::state;
use crate::privacy::RawId;
use crate::safe_fs::{self, ReadError, ReadErrorKind};
use crate::wire;

use bounded::off_loop;
use sources::{SourceFacts, MAX_SOURCE_OUTPUT};
use system::{os_pretty_name, read_machine_id, MAX_MACHINE_ID_BYTES};

/// [`Settings::load`] plus a warning for each input file the settings name
/// that exists but would be refused when a report is built (a FIFO as the
/// machine id file, say), so that `check-config` names it instead of
/// calling the config fine, and the service logs it at start and reload.
pub fn load_settings(path: &Path) -> Result<Loaded, ConfigError> {
    let mut loaded = Settings::load(path)?;
    loaded
        .warnings
        .extend(input_file_problems(&loaded.settings));
    Ok(loaded)
}

/// Warnings for the input files the settings name that exist but would be
/// refused (a link, a FIFO, a device, too large), for `check-config` and
/// the service's start and reload. Only `lstat` is used: nothing is opened,
/// so a device named there is not even touched.
pub fn input_file_problems(settings: &Settings) -> Vec<String> {
    let mut files = Vec::new();
    if !settings.omit.contains(wire::MACHINE_ID_HASH.name) {
        files.push((
            "surveyclient_machine_id_file",
            settings.machine_id_file.as_path(),
            MAX_MACHINE_ID_BYTES,
            "machine_id_hash would be left out of every report",
        ));
    }
    for source in &settings.facts {
        if let FactSource::File(path) = source {
            files.push((
                "surveyclient_facts",
                path.as_path(),
                MAX_SOURCE_OUTPUT,
                "its facts would be left out of every report",
            ));
        }
    }
    if let Some(ca) = &settings.mysql.ssl_ca {
        files.push((
            "surveyclient_mysql_ssl_ca",
            ca.as_path(),
            kopano_mysql::MAX_CA_FILE_BYTES,
            "the kopano-mysql source would fail",
        ));
    }
    files
        .into_iter()
        .filter_map(|(key, path, limit, consequence)| {
            let kind = match std::fs::symlink_metadata(path) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
                Err(err) => ReadErrorKind::Io(err),
                Ok(meta) if meta.file_type().is_symlink() => ReadErrorKind::Symlink,
                Ok(meta) if !meta.is_file() => {
                    ReadErrorKind::NotRegular(safe_fs::describe_type(meta.file_type()))
                }
                Ok(meta) if meta.len() > limit => ReadErrorKind::TooLarge { limit },
                Ok(_) => return None,
            };
            let problem = ReadError {
                path: path.to_path_buf(),
                kind,
            };
            Some(format!("{key}: {problem}; {consequence}"))
        })
        .collect()
}

/// What the machine's own files say, read together in one bounded step.
struct LocalFiles {
    machine_id: Option<RawId>,
    os_name: Option<Option<String>>,
}

/// Gathers every fact the settings allow. `os_root` is `/` except in tests,
/// which point it at a directory holding their own `etc/os-release`.
pub async fn collect(settings: &Settings, os_root: &Path) -> Facts {
    let wanted = |name: &str| !settings.omit.contains(name);
    let mut facts = Facts::default();

    let local = {
        let machine_id_file =
            wanted(wire::MACHINE_ID_HASH.name).then(|| settings.machine_id_file.clone());
        let os_root = wanted(wire::OSRELEASE.name).then(|| os_root.to_path_buf());
        off_loop(
            "the machine id and os-release",
            settings.timeout,
            move || LocalFiles {
                machine_id: machine_id_file.and_then(|path| read_machine_id(&path)),
                os_name: os_root.map(|root| os_pretty_name(&root)),
            },
        )
        .await
    };
    if let Some(local) = local {
        facts.machine_id = local.machine_id;
        match local.os_name {
            Some(Some(name)) => {
                facts
                    .values
                    .insert(wire::OSRELEASE.name.into(), FactValue::Text(name));
            }
            Some(None) => warn!(
                "no usable os-release, lsb-release or distribution release file found; osrelease is left out"
            ),
            None => {}
        }
    }
    if wanted(wire::UTSNAME.name) {
        if let Some(text) = system::utsname() {
            facts
                .values
                .insert(wire::UTSNAME.name.into(), FactValue::Text(text));
        }
    }
    if wanted(wire::CPU_COUNT.name) {
        if let Some(n) = system::cpu_count() {
            facts
                .values
                .insert(wire::CPU_COUNT.name.into(), FactValue::Count(n));
        }
    }

    let mut source_guid = None;
    for source in &settings.facts {
        let Some(found) = read_source(source, settings).await else {
            continue;
        };
        for (name, value) in found.values {
            if wanted(&name) {
                facts.values.insert(name, value);
            }
        }
        if found.server_guid.is_some() {
            source_guid = found.server_guid;
        }
    }

    for (name, value) in system::static_facts(settings) {
        if wanted(name) {
            facts.values.insert(name.into(), FactValue::Text(value));
        }
    }

    if wanted(wire::SERVER_GUID_HASH.name) {
        // With kopano-mysql the database holds the installation's GUID; a
        // generated one in its place (database down, row missing) would
        // make the collector count a second installation.
        let database_owns_guid = settings.facts.contains(&FactSource::KopanoMysql);
        facts.server_guid = match &settings.server_guid {
            Some(configured) => RawId::server_guid(configured),
            None if database_owns_guid => source_guid,
            None => match source_guid {
                Some(guid) => Some(guid),
                None => {
                    let state_dir = settings.state_dir.clone();
                    off_loop("the stored server GUID", settings.timeout, move || {
                        state::stored_server_guid(&state_dir)
                    })
                    .await
                    .flatten()
                }
            },
        };
    }
    facts
}

/// One extra source's facts, `None` after a warning saying why.
async fn read_source(source: &FactSource, settings: &Settings) -> Option<SourceFacts> {
    match source {
        FactSource::Command { argv } => sources::from_command(argv, settings.timeout).await,
        FactSource::File(path) => sources::from_file(path, settings.timeout).await,
        FactSource::KopanoMysql => kopano_mysql::collect(settings).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_warnings_name_refused_input_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let settings = Settings {
            machine_id_file: fifo.clone(),
            facts: vec![
                FactSource::File("/dev/zero".into()),
                FactSource::File(dir.path().join("missing")),
            ],
            ..Settings::default()
        };
        let problems = input_file_problems(&settings);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("surveyclient_machine_id_file: ")
                && problems[0].contains("is a FIFO"),
            "{problems:?}"
        );
        assert!(problems[1].contains("/dev/zero: is a character device"));
    }
}
