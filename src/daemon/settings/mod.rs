//! surveyd's typed settings: every key of DESIGN.md section 3 with its
//! default, validated strictly (garbage is an error naming file:line, never
//! a silent default). This file holds the keys, the [`Settings`] struct and
//! [`Settings::load`]; `values` parses each kind of value, and
//! `effective` renders the settings for `check-config` so that the output
//! feeds back into the parser unchanged.

mod effective;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon::cfgfile::{CfgFile, ConfigError, Entry};
use crate::privacy::IdScheme;
use crate::wire::receipt::PublicKey;

use values::{
    escape_controls, mask, optional, parse_absolute_path, parse_app_id, parse_audit_size,
    parse_bool, parse_collector_keys, parse_count, parse_endpoint, parse_facts, parse_id_hash,
    parse_omit, parse_port, parse_positive_seconds, parse_seconds, Problem,
};
pub use values::{
    Endpoint, FactSource, DEFAULT_SUBMIT_PATH, DEFAULT_URL, MAX_SECONDS, MAX_VALUE_BYTES,
    MIN_AUDIT_MAX_SIZE,
};

/// Every key surveyd reads, in the order `Settings::effective` prints them.
pub const KNOWN_KEYS: &[&str] = &[
    "surveyclient_url",
    "surveyclient_interval",
    "surveyclient_ssl_verify",
    "surveyclient_collector_key",
    "surveyclient_timeout",
    "surveyclient_start_delay",
    "surveyclient_error_delay",
    "surveyclient_audit_log",
    "surveyclient_audit_max_size",
    "surveyclient_audit_keep",
    "surveyclient_state_dir",
    "surveyclient_machine_id_file",
    "surveyclient_id_hash",
    "surveyclient_app_id",
    "surveyclient_omit",
    "surveyclient_bucket_counts",
    "surveyclient_facts",
    "surveyclient_program_name",
    "surveyclient_program_version",
    "surveyclient_server_guid",
    "user_plugin",
    "attachment_storage",
    "mysql_host",
    "mysql_port",
    "mysql_user",
    "mysql_password",
    "mysql_socket",
    "mysql_database",
    "surveyclient_mysql_ssl_ca",
];

/// surveyd's application id for `app` hashing; fixed so that the same
/// machine always yields the same hash across versions.
pub const DEFAULT_APP_ID: [u8; 16] = [
    0x18, 0x7f, 0x15, 0x74, 0x28, 0xb7, 0x48, 0x98, 0xa6, 0x29, 0x52, 0x11, 0x21, 0xfa, 0x9f, 0x49,
];

/// Kopano's database connection (server.cfg's own `mysql_*` keys, with
/// upstream's defaults), used by the `kopano-mysql` fact source.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// `None` when `mysql_socket` is empty: connect over TCP.
    pub socket: Option<PathBuf>,
    pub database: String,
    /// `surveyclient_mysql_ssl_ca`: when set, TCP connections to the
    /// database must use TLS with a certificate issued by this CA.
    pub ssl_ca: Option<PathBuf>,
}

impl Default for MysqlSettings {
    fn default() -> Self {
        MysqlSettings {
            host: "localhost".into(),
            port: 3306,
            user: "root".into(),
            password: String::new(),
            socket: None,
            database: "kopano".into(),
            ssl_ca: None,
        }
    }
}

// By hand so that a `{:?}` in a log line can never reveal the password.
impl fmt::Debug for MysqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &mask(&self.password))
            .field("socket", &self.socket)
            .field("database", &self.database)
            .field("ssl_ca", &self.ssl_ca)
            .finish()
    }
}

/// Everything surveyd is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: Endpoint,
    /// Time between reports; zero turns reporting off.
    pub interval: Duration,
    pub ssl_verify: bool,
    /// The collector's receipt keys (`surveyclient_collector_key`): with
    /// any, a report counts only when its receipt verifies under one.
    pub collector_keys: Vec<PublicKey>,
    /// One request, connect to last byte; never zero.
    pub timeout: Duration,
    pub start_delay: Duration,
    /// First retry delay after a failure; never zero.
    pub error_delay: Duration,
    pub audit_log: PathBuf,
    pub audit_max_size: u64,
    pub audit_keep: u32,
    pub state_dir: PathBuf,
    pub machine_id_file: PathBuf,
    pub id_hash: IdScheme,
    pub app_id: [u8; 16],
    /// Field names (from `payload::FIELD_NAMES`) never collected or sent.
    pub omit: BTreeSet<String>,
    pub bucket_counts: bool,
    pub facts: Vec<FactSource>,
    pub program_name: Option<String>,
    pub program_version: Option<String>,
    pub server_guid: Option<String>,
    /// server.cfg's `user_plugin`, sent as `userplugin`.
    pub user_plugin: Option<String>,
    pub attachment_storage: Option<String>,
    pub mysql: MysqlSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: Endpoint::Https(url::Url::parse(DEFAULT_URL).expect("DEFAULT_URL is a valid URL")),
            interval: Duration::from_secs(3600),
            ssl_verify: true,
            collector_keys: Vec::new(),
            timeout: Duration::from_secs(30),
            start_delay: Duration::from_secs(60),
            error_delay: Duration::from_secs(60),
            audit_log: PathBuf::from("/var/log/surveyd/audit.log"),
            audit_max_size: 16 * 1024 * 1024,
            audit_keep: 10,
            state_dir: PathBuf::from("/var/lib/surveyd"),
            machine_id_file: PathBuf::from("/etc/machine-id"),
            id_hash: IdScheme::App,
            app_id: DEFAULT_APP_ID,
            omit: BTreeSet::new(),
            bucket_counts: false,
            facts: Vec::new(),
            program_name: None,
            program_version: None,
            server_guid: None,
            user_plugin: None,
            attachment_storage: None,
            mysql: MysqlSettings::default(),
        }
    }
}

/// Settings together with the warnings met on the way, for the caller to
/// print (stderr for `check-config`, the log for the daemon).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Whether reports are sent at all (`surveyclient_interval` is not 0).
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    /// Reads and validates the config file at `path` (with its includes).
    /// The service and `check-config` go through `facts::load_settings`,
    /// which adds warnings about the input files the settings name.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        Self::from_cfg(&CfgFile::load(path)?)
    }

    /// Validates an already parsed file. Keys not given keep their default.
    pub fn from_cfg(cfg: &CfgFile) -> Result<Loaded, ConfigError> {
        let d = Settings::default();
        let settings = Settings {
            url: read(cfg, "surveyclient_url", d.url, parse_endpoint)?,
            interval: read(cfg, "surveyclient_interval", d.interval, parse_seconds)?,
            ssl_verify: read(cfg, "surveyclient_ssl_verify", d.ssl_verify, parse_bool)?,
            collector_keys: read(
                cfg,
                "surveyclient_collector_key",
                d.collector_keys,
                parse_collector_keys,
            )?,
            timeout: read(
                cfg,
                "surveyclient_timeout",
                d.timeout,
                parse_positive_seconds,
            )?,
            start_delay: read(
                cfg,
                "surveyclient_start_delay",
                d.start_delay,
                parse_seconds,
            )?,
            error_delay: read(
                cfg,
                "surveyclient_error_delay",
                d.error_delay,
                parse_positive_seconds,
            )?,
            audit_log: read(
                cfg,
                "surveyclient_audit_log",
                d.audit_log,
                parse_absolute_path,
            )?,
            audit_max_size: read(
                cfg,
                "surveyclient_audit_max_size",
                d.audit_max_size,
                parse_audit_size,
            )?,
            audit_keep: read(cfg, "surveyclient_audit_keep", d.audit_keep, parse_count)?,
            state_dir: read(
                cfg,
                "surveyclient_state_dir",
                d.state_dir,
                parse_absolute_path,
            )?,
            machine_id_file: read(
                cfg,
                "surveyclient_machine_id_file",
                d.machine_id_file,
                parse_absolute_path,
            )?,
            id_hash: read(cfg, "surveyclient_id_hash", d.id_hash, parse_id_hash)?,
            app_id: read(cfg, "surveyclient_app_id", d.app_id, parse_app_id)?,
            omit: read(cfg, "surveyclient_omit", d.omit, parse_omit)?,
            bucket_counts: read(
                cfg,
                "surveyclient_bucket_counts",
                d.bucket_counts,
                parse_bool,
            )?,
            facts: read(cfg, "surveyclient_facts", d.facts, parse_facts)?,
            program_name: read(cfg, "surveyclient_program_name", d.program_name, |v| {
                Ok(optional(v))
            })?,
            program_version: read(
                cfg,
                "surveyclient_program_version",
                d.program_version,
                |v| Ok(optional(v)),
            )?,
            server_guid: read(cfg, "surveyclient_server_guid", d.server_guid, |v| {
                Ok(optional(v))
            })?,
            user_plugin: read(cfg, "user_plugin", d.user_plugin, |v| Ok(optional(v)))?,
            attachment_storage: read(cfg, "attachment_storage", d.attachment_storage, |v| {
                Ok(optional(v))
            })?,
            mysql: MysqlSettings {
                host: read(cfg, "mysql_host", d.mysql.host, |v| Ok(v.to_string()))?,
                // Empty means "the default port" to kopano-server (atoi gives 0,
                // which MySQL's client reads as 3306), so it is not an error.
                port: read(cfg, "mysql_port", d.mysql.port, |v| {
                    if v.is_empty() {
                        Ok(d.mysql.port)
                    } else {
                        parse_port(v)
                    }
                })?,
                user: read(cfg, "mysql_user", d.mysql.user, |v| Ok(v.to_string()))?,
                password: read(cfg, "mysql_password", d.mysql.password, |v| {
                    Ok(v.to_string())
                })?,
                socket: read(cfg, "mysql_socket", d.mysql.socket, |v| {
                    Ok(optional(v).map(PathBuf::from))
                })?,
                database: read(cfg, "mysql_database", d.mysql.database, |v| {
                    Ok(v.to_string())
                })?,
                ssl_ca: read(cfg, "surveyclient_mysql_ssl_ca", d.mysql.ssl_ca, |v| {
                    if v.is_empty() {
                        Ok(None)
                    } else {
                        parse_absolute_path(v).map(Some)
                    }
                })?,
            },
        };
        let mut warnings = cfg.warnings().to_vec();
        warnings.extend(cfg.entries().iter().filter_map(unknown_key_warning));
        Ok(Loaded { settings, warnings })
    }
}

/// The value of `key` parsed by `parse`, or `default` when the key is absent.
fn read<T>(
    cfg: &CfgFile,
    key: &'static str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, Problem>,
) -> Result<T, ConfigError> {
    let Some(Entry {
        value, location, ..
    }) = cfg.get(key)
    else {
        return Ok(default);
    };
    if value.len() > MAX_VALUE_BYTES {
        // The start identifies the line; a secret is not quoted at all.
        let shown = match key {
            "mysql_password" | "surveyclient_server_guid" => "(not shown)".to_string(),
            _ => format!("{}...", value.chars().take(40).collect::<String>()),
        };
        return Err(ConfigError::Invalid {
            location: location.clone(),
            key,
            value: shown,
            problem: format!(
                "is {} bytes long, more than the limit of {MAX_VALUE_BYTES}",
                value.len()
            ),
            hint: format!("write a value of at most {MAX_VALUE_BYTES} bytes"),
        });
    }
    parse(value).map_err(|p| ConfigError::Invalid {
        location: location.clone(),
        key,
        value: p.value.unwrap_or_else(|| value.clone()),
        problem: p.problem,
        hint: p.hint,
    })
}

/// A warning for a key that looks meant for surveyd but is not one of
/// ours; server.cfg's hundreds of other keys pass silently.
fn unknown_key_warning(entry: &Entry) -> Option<String> {
    const PREFIX: &str = "surveyclient_";
    let key = entry.key.as_str();
    let looks_ours = key.len() >= PREFIX.len()
        && key.as_bytes()[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes());
    if !looks_ours || KNOWN_KEYS.contains(&key) {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    let nearest = KNOWN_KEYS
        .iter()
        .filter(|k| k.starts_with(PREFIX))
        .min_by_key(|k| strsim::levenshtein(&lower, k))?;
    Some(format!(
        "unknown key {} at {}; did you mean {nearest}?",
        escape_controls(key),
        entry.location
    ))
}
