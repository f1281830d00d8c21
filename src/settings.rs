//! surveyd's typed settings: every key of DESIGN.md section 3 with its
//! default, validated strictly (garbage is an error naming file:line, never
//! a silent default), plus the `check-config` rendering that feeds back into
//! the parser unchanged.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cfgfile::{CfgFile, ConfigError, Entry};
use crate::payload::FIELD_NAMES;
use crate::privacy::IdScheme;

/// Every key surveyd reads, in the order `Settings::effective` prints them.
pub const KNOWN_KEYS: &[&str] = &[
    "surveyclient_url",
    "surveyclient_interval",
    "surveyclient_ssl_verify",
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

/// Where reports go when nothing is configured (upstream's default).
pub const DEFAULT_URL: &str = "https://stats.kopano.io/api/stats/v1/submit";

/// The request path used on a `unix:` socket, the same as on the web.
pub const DEFAULT_SUBMIT_PATH: &str = "/api/stats/v1/submit";

/// surveyd's application id for `app` hashing; fixed so that the same
/// machine always yields the same hash across versions.
pub const DEFAULT_APP_ID: [u8; 16] = [
    0x18, 0x7f, 0x15, 0x74, 0x28, 0xb7, 0x48, 0x98, 0xa6, 0x29, 0x52, 0x11, 0x21, 0xfa, 0x9f, 0x49,
];

/// Smallest audit log size before rotation; below this, every report
/// (a few KiB with its result line) would rotate the log on its own.
pub const MIN_AUDIT_MAX_SIZE: u64 = 4096;

/// Upper bound for every duration setting (100 years). Larger values buy
/// nothing (`interval = 0` already means never) and would overflow the
/// scheduler's `Instant` arithmetic.
pub const MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// Longest value accepted for any key surveyd reads. The longest sensible
/// values are paths (Linux's PATH_MAX is 4096) and URLs, which collectors
/// and proxies cut at a few KiB anyway; a longer value is a mistake or an
/// attack, and it would end up in every audit line and status message.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Shown instead of a non-empty `mysql_password`.
const MASK: &str = "********";

/// Where reports are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Https(url::Url),
    Http(url::Url),
    /// A local socket, for a collector or proxy on the same machine;
    /// requests go to `path` on it.
    Unix {
        socket: PathBuf,
        path: String,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Https(url) | Endpoint::Http(url) => write!(f, "{url}"),
            Endpoint::Unix { socket, .. } => write!(f, "unix:{}", socket.display()),
        }
    }
}

/// One source of extra facts (`surveyclient_facts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactSource {
    /// Run `argv[0]` (an absolute path) with the rest as arguments, no shell.
    Command { argv: Vec<String> },
    /// Read facts from this file.
    File(PathBuf),
    /// Count users in Kopano's MySQL database, using the `mysql_*` keys.
    KopanoMysql,
}

impl fmt::Display for FactSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactSource::Command { argv } => write!(f, "command:{}", argv.join(" ")),
            FactSource::File(path) => write!(f, "file:{}", path.display()),
            FactSource::KopanoMysql => f.write_str("kopano-mysql"),
        }
    }
}

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

fn mask(password: &str) -> &'static str {
    if password.is_empty() {
        ""
    } else {
        MASK
    }
}

/// Everything surveyd is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: Endpoint,
    /// Time between reports; zero turns reporting off.
    pub interval: Duration,
    pub ssl_verify: bool,
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

    /// Reads and validates the config file at `path` (with its includes),
    /// and warns about input files that exist but will be refused when a
    /// report is built (a FIFO as the machine id file, say), so that
    /// `check-config` names them instead of calling the config fine.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let mut loaded = Self::from_cfg(&CfgFile::load(path)?)?;
        loaded
            .warnings
            .extend(crate::facts::input_file_problems(&loaded.settings));
        Ok(loaded)
    }

    /// Validates an already parsed file. Keys not given keep their default.
    pub fn from_cfg(cfg: &CfgFile) -> Result<Loaded, ConfigError> {
        let d = Settings::default();
        let settings = Settings {
            url: read(cfg, "surveyclient_url", d.url, parse_endpoint)?,
            interval: read(cfg, "surveyclient_interval", d.interval, parse_seconds)?,
            ssl_verify: read(cfg, "surveyclient_ssl_verify", d.ssl_verify, parse_bool)?,
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

    /// Every effective setting as `(key, value)`, in `KNOWN_KEYS` order, for
    /// `check-config`. Writing them back as `key = value` lines yields the
    /// same settings, except that a non-empty `mysql_password` and a static
    /// `surveyclient_server_guid` (a raw identifier) are masked, and a value
    /// that itself begins with `$` (only possible through a `$VAR`
    /// substitution) would be substituted again. Control characters (a
    /// newline from a `$VAR`, say) are shown escaped, as `\n`, so that one
    /// setting is always one line and cannot fake others.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        self.effective_raw()
            .into_iter()
            .map(|(key, value)| (key, escape_controls(&value)))
            .collect()
    }

    fn effective_raw(&self) -> Vec<(&'static str, String)> {
        let seconds = |d: Duration| d.as_secs().to_string();
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let facts: Vec<String> = self.facts.iter().map(FactSource::to_string).collect();
        let omit: Vec<&str> = self.omit.iter().map(String::as_str).collect();
        vec![
            ("surveyclient_url", self.url.to_string()),
            ("surveyclient_interval", seconds(self.interval)),
            ("surveyclient_ssl_verify", yes_no(self.ssl_verify)),
            ("surveyclient_timeout", seconds(self.timeout)),
            ("surveyclient_start_delay", seconds(self.start_delay)),
            ("surveyclient_error_delay", seconds(self.error_delay)),
            (
                "surveyclient_audit_log",
                self.audit_log.display().to_string(),
            ),
            (
                "surveyclient_audit_max_size",
                self.audit_max_size.to_string(),
            ),
            ("surveyclient_audit_keep", self.audit_keep.to_string()),
            (
                "surveyclient_state_dir",
                self.state_dir.display().to_string(),
            ),
            (
                "surveyclient_machine_id_file",
                self.machine_id_file.display().to_string(),
            ),
            (
                "surveyclient_id_hash",
                self.id_hash.config_name().to_string(),
            ),
            ("surveyclient_app_id", hex::encode(self.app_id)),
            ("surveyclient_omit", omit.join(" ")),
            ("surveyclient_bucket_counts", yes_no(self.bucket_counts)),
            ("surveyclient_facts", facts.join("; ")),
            ("surveyclient_program_name", text(&self.program_name)),
            ("surveyclient_program_version", text(&self.program_version)),
            (
                "surveyclient_server_guid",
                // A raw identifier is never printed, not even to the admin:
                // check-config output ends up in tickets and pastebins.
                match &self.server_guid {
                    Some(_) => "(set, not shown)".to_string(),
                    None => String::new(),
                },
            ),
            ("user_plugin", text(&self.user_plugin)),
            ("attachment_storage", text(&self.attachment_storage)),
            ("mysql_host", self.mysql.host.clone()),
            ("mysql_port", self.mysql.port.to_string()),
            ("mysql_user", self.mysql.user.clone()),
            ("mysql_password", mask(&self.mysql.password).to_string()),
            (
                "mysql_socket",
                self.mysql
                    .socket
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("mysql_database", self.mysql.database.clone()),
            (
                "surveyclient_mysql_ssl_ca",
                self.mysql
                    .ssl_ca
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ]
    }
}

/// `value` with control characters and the Unicode line and paragraph
/// separators written as Rust escapes (`\n`, `\u{2028}`); everything else,
/// backslashes included, unchanged, so ordinary values print as written.
fn escape_controls(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Why a value was refused and how to fix it; `read` adds key, value and
/// location to make a `ConfigError::Invalid`.
struct Problem {
    /// The offending part of the value (a single word of a list, say).
    value: Option<String>,
    problem: String,
    hint: String,
}

impl Problem {
    fn new(problem: impl Into<String>, hint: impl Into<String>) -> Self {
        Problem {
            value: None,
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    fn about(mut self, part: &str) -> Self {
        self.value = Some(part.to_string());
        self
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

fn optional(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn parse_bool(value: &str) -> Result<bool, Problem> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(Problem::new(
            "is not a boolean",
            "write yes or no (also true/false, on/off, 1/0)",
        )),
    }
}

/// Plain decimal digits only: upstream's atoui reads "1h" as 0, which would
/// silently turn reporting off.
fn is_plain_number(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

fn parse_number(value: &str, unit: &str) -> Result<u64, Problem> {
    if !is_plain_number(value) {
        return Err(Problem::new(
            format!("is not a number of {unit}"),
            "write plain digits",
        ));
    }
    value
        .parse()
        .map_err(|_| Problem::new("is too large", format!("write a smaller number of {unit}")))
}

fn parse_seconds(value: &str) -> Result<Duration, Problem> {
    let seconds = parse_number(value, "seconds").map_err(|mut p| {
        if !is_plain_number(value) {
            // "1h", "30 min", ... are what people write; tell them the number.
            p.hint = match humantime::parse_duration(value) {
                Ok(d) if d.subsec_nanos() == 0 && d.as_secs() <= MAX_SECONDS => {
                    format!("write {}", d.as_secs())
                }
                _ => "write a whole number of seconds, e.g. 3600".to_string(),
            };
        }
        p
    })?;
    if seconds > MAX_SECONDS {
        return Err(Problem::new(
            format!("is more than {MAX_SECONDS} seconds (100 years)"),
            "write a smaller number; 0 turns reporting off",
        ));
    }
    Ok(Duration::from_secs(seconds))
}

fn parse_positive_seconds(value: &str) -> Result<Duration, Problem> {
    let duration = parse_seconds(value)?;
    if duration.is_zero() {
        return Err(Problem::new("must be at least 1 second", "write e.g. 30"));
    }
    Ok(duration)
}

fn parse_audit_size(value: &str) -> Result<u64, Problem> {
    let bytes = parse_number(value, "bytes").map_err(|mut p| {
        // kopano-server accepts k/m/g suffixes on its size settings.
        if let Some(bytes) = size_with_suffix(value) {
            p.hint = format!("write {bytes}");
        }
        p
    })?;
    if bytes < MIN_AUDIT_MAX_SIZE {
        return Err(Problem::new(
            format!("is below the minimum of {MIN_AUDIT_MAX_SIZE} bytes"),
            format!("write at least {MIN_AUDIT_MAX_SIZE}, e.g. 16777216"),
        ));
    }
    Ok(bytes)
}

/// Reads `16M`-style sizes as upstream's GetSize would, only to suggest the
/// plain number.
fn size_with_suffix(value: &str) -> Option<u64> {
    let mut chars = value.chars();
    let shift = match chars.next_back()?.to_ascii_lowercase() {
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    let digits = chars.as_str().trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn parse_count(value: &str) -> Result<u32, Problem> {
    let n = parse_number(value, "files")?;
    u32::try_from(n)
        .map_err(|_| Problem::new("is too large", format!("write at most {}", u32::MAX)))
}

fn parse_port(value: &str) -> Result<u16, Problem> {
    let n = parse_number(value, "a TCP port").map_err(|mut p| {
        p.problem = "is not a TCP port number".into();
        p.hint = "write e.g. 3306".into();
        p
    })?;
    u16::try_from(n).map_err(|_| {
        Problem::new(
            "is not a TCP port number",
            "write a number up to 65535, e.g. 3306",
        )
    })
}

/// The daemon runs with `/` as its working directory, so a relative path
/// would silently mean something else under systemd than in a shell.
fn parse_absolute_path(value: &str) -> Result<PathBuf, Problem> {
    if !value.starts_with('/') {
        return Err(Problem::new(
            "is not an absolute path",
            "write a path starting with /",
        ));
    }
    Ok(PathBuf::from(value))
}

fn parse_endpoint(value: &str) -> Result<Endpoint, Problem> {
    let lower = value.to_ascii_lowercase();
    if let Some(socket) = value.strip_prefix("unix:") {
        if !socket.starts_with('/') {
            return Err(Problem::new(
                "does not name an absolute socket path",
                "write unix:/path/to.sock",
            ));
        }
        return Ok(Endpoint::Unix {
            socket: PathBuf::from(socket),
            path: DEFAULT_SUBMIT_PATH.to_string(),
        });
    }
    let https = lower.starts_with("https://");
    if !https && !lower.starts_with("http://") {
        return Err(Problem::new(
            "is not an https://, http:// or unix: URL",
            format!("write e.g. {DEFAULT_URL}"),
        ));
    }
    let url = url::Url::parse(value).map_err(|e| {
        Problem::new(
            format!("is not a valid URL ({e})"),
            format!("write e.g. {DEFAULT_URL}"),
        )
    })?;
    Ok(if https {
        Endpoint::Https(url)
    } else {
        Endpoint::Http(url)
    })
}

fn parse_id_hash(value: &str) -> Result<IdScheme, Problem> {
    match value.to_ascii_lowercase().as_str() {
        "app" => Ok(IdScheme::App),
        "sha256" => Ok(IdScheme::Sha256),
        _ => Err(Problem::new(
            "is not a hashing scheme",
            "write app or sha256",
        )),
    }
}

/// 32 hex digits, or the UUID form with dashes where a UUID has them, as
/// `systemd-id128` accepts; any case.
fn parse_app_id(value: &str) -> Result<[u8; 16], Problem> {
    let uuid_form = value.len() == 36
        && value
            .char_indices()
            .all(|(i, c)| (c == '-') == matches!(i, 8 | 13 | 18 | 23));
    let digits: String = if uuid_form {
        value.chars().filter(|&c| c != '-').collect()
    } else {
        value.to_string()
    };
    let mut id = [0u8; 16];
    match hex::decode_to_slice(&digits, &mut id) {
        Ok(()) => Ok(id),
        Err(_) => Err(Problem::new(
            "is not a 128-bit id",
            "write 32 hex digits (dashes allowed in UUID form), e.g. from `systemd-id128 new`",
        )),
    }
}

fn parse_omit(value: &str) -> Result<BTreeSet<String>, Problem> {
    value
        .split_whitespace()
        .map(|name| {
            if FIELD_NAMES.contains(&name) {
                Ok(name.to_string())
            } else {
                Err(Problem::new(
                    "is not a field name",
                    format!("valid names are: {}", FIELD_NAMES.join(" ")),
                )
                .about(name))
            }
        })
        .collect()
}

/// `source; source; ...`, each `command:/abs/path arg...` (split on white
/// space, run without a shell), `file:/abs/path` or `kopano-mysql`. Empty
/// items (a trailing `;`) are skipped.
fn parse_facts(value: &str) -> Result<Vec<FactSource>, Problem> {
    const HINT: &str = "write sources separated by `;`, each `command:/abs/path arg...`, `file:/abs/path` or `kopano-mysql`";
    let mut sources = Vec::new();
    for item in value.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let source = if item == "kopano-mysql" {
            FactSource::KopanoMysql
        } else if let Some(command) = item.strip_prefix("command:") {
            let argv: Vec<String> = command.split_whitespace().map(str::to_string).collect();
            if !argv.first().is_some_and(|program| program.starts_with('/')) {
                return Err(
                    Problem::new("does not name a program by absolute path", HINT).about(item),
                );
            }
            FactSource::Command { argv }
        } else if let Some(path) = item.strip_prefix("file:") {
            let path = path.trim();
            if !path.starts_with('/') {
                return Err(Problem::new("does not name a file by absolute path", HINT).about(item));
            }
            FactSource::File(PathBuf::from(path))
        } else {
            return Err(Problem::new("is not a fact source", HINT).about(item));
        };
        sources.push(source);
    }
    Ok(sources)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn kopano_testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kopano")
            .join(name)
    }

    fn from_text(text: &str) -> Result<Loaded, ConfigError> {
        Settings::from_cfg(&CfgFile::parse_str(text, Path::new("/etc/x.cfg"), &no_env)?)
    }

    fn settings(text: &str) -> Settings {
        from_text(text).unwrap_or_else(|e| panic!("{e}")).settings
    }

    /// The error message for `text`, checked to name its line.
    fn error(text: &str, line: usize) -> String {
        let err = from_text(text).expect_err("config should be refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("/etc/x.cfg:{line}")),
            "no location in: {msg}"
        );
        msg
    }

    #[test]
    fn defaults_match_design() {
        let s = Settings::default();
        assert_eq!(s.url.to_string(), DEFAULT_URL);
        assert!(matches!(s.url, Endpoint::Https(_)));
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert!(s.enabled());
        assert!(s.ssl_verify);
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.start_delay, Duration::from_secs(60));
        assert_eq!(s.error_delay, Duration::from_secs(60));
        assert_eq!(s.audit_log, Path::new("/var/log/surveyd/audit.log"));
        assert_eq!(s.audit_max_size, 16777216);
        assert_eq!(s.audit_keep, 10);
        assert_eq!(s.state_dir, Path::new("/var/lib/surveyd"));
        assert_eq!(s.machine_id_file, Path::new("/etc/machine-id"));
        assert_eq!(s.id_hash, IdScheme::App);
        assert_eq!(hex::encode(s.app_id), "187f157428b74898a629521121fa9f49");
        assert!(s.omit.is_empty() && s.facts.is_empty() && !s.bucket_counts);
        assert_eq!(
            (s.program_name, s.program_version, s.server_guid),
            (None, None, None)
        );
        assert_eq!((s.user_plugin, s.attachment_storage), (None, None));
        let m = s.mysql;
        assert_eq!(
            (m.host.as_str(), m.port, m.user.as_str()),
            ("localhost", 3306, "root")
        );
        assert_eq!(
            (m.password.as_str(), m.socket, m.database.as_str()),
            ("", None, "kopano")
        );
    }

    #[test]
    fn empty_file_gives_defaults_without_warnings() {
        let loaded = from_text("").unwrap();
        assert_eq!(loaded.settings, Settings::default());
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn every_key_is_read() {
        let s = settings(
            "surveyclient_url = http://127.0.0.1:8080/submit\n\
             surveyclient_interval = 0\n\
             surveyclient_ssl_verify = off\n\
             surveyclient_timeout = 5\n\
             surveyclient_start_delay = 0\n\
             surveyclient_error_delay = 7\n\
             surveyclient_audit_log = /tmp/a.log\n\
             surveyclient_audit_max_size = 4096\n\
             surveyclient_audit_keep = 0\n\
             surveyclient_state_dir = /tmp/state\n\
             surveyclient_machine_id_file = /tmp/mid\n\
             surveyclient_id_hash = sha256\n\
             surveyclient_app_id = 00112233-4455-6677-8899-AABBCCDDEEFF\n\
             surveyclient_omit = osrelease  utsname\tusercnt_room\n\
             surveyclient_bucket_counts = TRUE\n\
             surveyclient_facts = kopano-mysql; file:/etc/facts\n\
             surveyclient_program_name = kopano-server\n\
             surveyclient_program_version = 8.7.0\n\
             surveyclient_server_guid = 0123456789abcdef0123456789abcdef\n\
             user_plugin = ldap\n\
             attachment_storage = s3\n\
             mysql_host = db.example\n\
             mysql_port = 3307\n\
             mysql_user = kopano\n\
             mysql_password = pw\n\
             mysql_socket = /run/mysqld/mysqld.sock\n\
             mysql_database = kc\n",
        );
        assert_eq!(
            s.url,
            Endpoint::Http(url::Url::parse("http://127.0.0.1:8080/submit").unwrap())
        );
        assert!(!s.enabled());
        assert!(!s.ssl_verify);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.start_delay, Duration::ZERO);
        assert_eq!(s.error_delay, Duration::from_secs(7));
        assert_eq!(s.audit_log, Path::new("/tmp/a.log"));
        assert_eq!((s.audit_max_size, s.audit_keep), (4096, 0));
        assert_eq!(s.state_dir, Path::new("/tmp/state"));
        assert_eq!(s.machine_id_file, Path::new("/tmp/mid"));
        assert_eq!(s.id_hash, IdScheme::Sha256);
        assert_eq!(hex::encode(s.app_id), "00112233445566778899aabbccddeeff");
        assert_eq!(
            s.omit.iter().collect::<Vec<_>>(),
            ["osrelease", "usercnt_room", "utsname"]
        );
        assert!(s.bucket_counts);
        assert_eq!(
            s.facts,
            [
                FactSource::KopanoMysql,
                FactSource::File("/etc/facts".into())
            ]
        );
        assert_eq!(s.program_name.as_deref(), Some("kopano-server"));
        assert_eq!(s.program_version.as_deref(), Some("8.7.0"));
        assert_eq!(
            s.server_guid.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(s.user_plugin.as_deref(), Some("ldap"));
        assert_eq!(s.attachment_storage.as_deref(), Some("s3"));
        assert_eq!(s.mysql.host, "db.example");
        assert_eq!(s.mysql.port, 3307);
        assert_eq!(s.mysql.user, "kopano");
        assert_eq!(s.mysql.password, "pw");
        assert_eq!(
            s.mysql.socket.as_deref(),
            Some(Path::new("/run/mysqld/mysqld.sock"))
        );
        assert_eq!(s.mysql.database, "kc");
    }

    #[test]
    fn booleans_accept_every_documented_spelling_in_any_case() {
        for (word, expected) in [
            ("yes", true),
            ("YES", true),
            ("true", true),
            ("On", true),
            ("1", true),
            ("no", false),
            ("No", false),
            ("FALSE", false),
            ("off", false),
            ("0", false),
        ] {
            let s = settings(&format!("surveyclient_bucket_counts = {word}\n"));
            assert_eq!(s.bucket_counts, expected, "{word}");
        }
    }

    #[test]
    fn boolean_garbage_is_an_error_not_a_default() {
        for word in ["y", "enabled", "", "2", "yes please"] {
            let msg = error(&format!("\nsurveyclient_ssl_verify = {word}\n"), 2);
            assert!(
                msg.contains("surveyclient_ssl_verify") && msg.contains("yes or no"),
                "{msg}"
            );
        }
    }

    #[test]
    fn numbers_reject_units_signs_spaces_and_overflow() {
        for bad in [
            "1h",
            "-1",
            "+5",
            " ",
            "",
            "1 2",
            "3600.0",
            "0x10",
            "99999999999999999999999",
        ] {
            let msg = error(&format!("a = b\nsurveyclient_interval = {bad}\n"), 2);
            assert!(msg.contains("surveyclient_interval"), "{msg}");
        }
    }

    #[test]
    fn number_error_reads_like_the_example_and_suggests_seconds() {
        let msg = error("x = 1\ny = 2\nsurveyclient_interval = 1h\n", 3);
        assert_eq!(
            msg,
            "surveyclient_interval: \"1h\" is not a number of seconds (at /etc/x.cfg:3); write 3600"
        );
        let msg = error("surveyclient_timeout = 2m 30s\n", 1);
        assert!(msg.ends_with("write 150"), "{msg}");
    }

    #[test]
    fn durations_above_a_century_are_refused() {
        let msg = error(&format!("surveyclient_interval = {}\n", MAX_SECONDS + 1), 1);
        assert!(msg.contains("100 years"), "{msg}");
        assert_eq!(
            settings(&format!("surveyclient_interval = {MAX_SECONDS}\n"))
                .interval
                .as_secs(),
            MAX_SECONDS
        );
    }

    #[test]
    fn timeout_and_error_delay_must_be_positive_but_start_delay_may_be_zero() {
        error("surveyclient_timeout = 0\n", 1);
        error("surveyclient_error_delay = 0\n", 1);
        assert_eq!(
            settings("surveyclient_start_delay = 0\n").start_delay,
            Duration::ZERO
        );
    }

    #[test]
    fn interval_zero_disables_reporting() {
        assert!(!settings("surveyclient_interval = 0\n").enabled());
        assert!(settings("surveyclient_interval = 1\n").enabled());
    }

    #[test]
    fn audit_max_size_below_4096_is_refused_and_suffixes_get_a_hint() {
        let msg = error("surveyclient_audit_max_size = 4095\n", 1);
        assert!(msg.contains("4096"), "{msg}");
        let msg = error("surveyclient_audit_max_size = 16M\n", 1);
        assert!(msg.ends_with("write 16777216"), "{msg}");
        assert_eq!(
            settings("surveyclient_audit_max_size = 4096\n").audit_max_size,
            4096
        );
    }

    #[test]
    fn audit_keep_overflowing_u32_is_refused() {
        error("surveyclient_audit_keep = 4294967296\n", 1);
        assert_eq!(
            settings("surveyclient_audit_keep = 4294967295\n").audit_keep,
            u32::MAX
        );
    }

    #[test]
    fn paths_must_be_absolute() {
        for key in [
            "surveyclient_audit_log",
            "surveyclient_state_dir",
            "surveyclient_machine_id_file",
        ] {
            let msg = error(&format!("{key} = relative/path\n"), 1);
            assert!(msg.contains("absolute"), "{msg}");
            error(&format!("{key} =\n"), 1);
        }
    }

    #[test]
    fn url_accepts_https_http_and_unix_socket() {
        let s = settings("surveyclient_url = https://stats.example/api\n");
        assert!(matches!(&s.url, Endpoint::Https(u) if u.host_str() == Some("stats.example")));
        let s = settings("surveyclient_url = http://[::1]:8080/x\n");
        assert!(matches!(&s.url, Endpoint::Http(u) if u.port() == Some(8080)));
        let s = settings("surveyclient_url = unix:/run/surveyd/collector.sock\n");
        assert_eq!(
            s.url,
            Endpoint::Unix {
                socket: "/run/surveyd/collector.sock".into(),
                path: DEFAULT_SUBMIT_PATH.into()
            }
        );
        assert_eq!(s.url.to_string(), "unix:/run/surveyd/collector.sock");
    }

    #[test]
    fn url_with_other_scheme_or_relative_socket_is_an_error() {
        for bad in [
            "ftp://x/y",
            "stats.kopano.io/api",
            "unix:run/x.sock",
            "unix:",
            "https://",
            "http://exa mple/",
            "",
            "file:///etc/passwd",
        ] {
            let msg = error(&format!("\n\nsurveyclient_url = {bad}\n"), 3);
            assert!(msg.starts_with("surveyclient_url:"), "{msg}");
        }
    }

    #[test]
    fn id_hash_accepts_app_and_sha256_only() {
        assert_eq!(
            settings("surveyclient_id_hash = SHA256\n").id_hash,
            IdScheme::Sha256
        );
        let msg = error("surveyclient_id_hash = md5\n", 1);
        assert!(msg.contains("app or sha256"), "{msg}");
    }

    #[test]
    fn app_id_accepts_plain_and_uuid_form_in_any_case() {
        let plain = settings("surveyclient_app_id = 00112233445566778899AABBCCDDEEFF\n").app_id;
        let uuid = settings("surveyclient_app_id = 00112233-4455-6677-8899-aabbccddeeff\n").app_id;
        assert_eq!(plain, uuid);
        assert_eq!(plain[0], 0x00);
        assert_eq!(plain[15], 0xff);
    }

    #[test]
    fn app_id_refuses_wrong_length_bad_digits_and_misplaced_dashes() {
        for bad in [
            "187f157428b74898a629521121fa9f4",
            "187f157428b74898a629521121fa9f4900",
            "187f157428b74898a629521121fa9f4g",
            "187f1574-28b7-4898-a629-521121fa9f4-9",
            "187f15742-8b7-4898-a629-521121fa9f49",
            "",
        ] {
            error(&format!("surveyclient_app_id = {bad}\n"), 1);
        }
    }

    #[test]
    fn omit_accepts_field_names_and_lists_valid_ones_on_error() {
        let s = settings("surveyclient_omit = userplugin userplugin attachment_storage\n");
        assert_eq!(s.omit.len(), 2);
        let msg = error("\nsurveyclient_omit = osrelease hostname\n", 2);
        assert!(msg.contains("\"hostname\""), "{msg}");
        for name in FIELD_NAMES {
            assert!(msg.contains(name), "{name} missing from {msg}");
        }
    }

    #[test]
    fn facts_syntax_parses_commands_files_and_kopano_mysql() {
        let s = settings("surveyclient_facts = command:/usr/bin/kopano-facts --json  -v ;file:/etc/f.txt; kopano-mysql;\n");
        assert_eq!(
            s.facts,
            [
                FactSource::Command {
                    argv: vec!["/usr/bin/kopano-facts".into(), "--json".into(), "-v".into()]
                },
                FactSource::File("/etc/f.txt".into()),
                FactSource::KopanoMysql,
            ]
        );
    }

    #[test]
    fn facts_refuse_relative_paths_and_unknown_sources() {
        for bad in [
            "command:kopano-facts",
            "command:",
            "file:facts.txt",
            "mysql",
            "kopano-mysql extra",
            "shell:/bin/x",
        ] {
            let msg = error(&format!("surveyclient_facts = kopano-mysql; {bad}\n"), 1);
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }

    #[test]
    fn empty_static_facts_and_server_cfg_keys_are_none() {
        let s = settings(
            "surveyclient_program_name =\nuser_plugin =\nattachment_storage = \nmysql_socket =\n",
        );
        assert_eq!(
            (s.program_name, s.user_plugin, s.attachment_storage),
            (None, None, None)
        );
        assert_eq!(s.mysql.socket, None);
    }

    #[test]
    fn empty_mysql_port_means_default_but_garbage_is_an_error() {
        assert_eq!(settings("mysql_port =\n").mysql.port, 3306);
        error("mysql_port = 70000\n", 1);
        error("mysql_port = abc\n", 1);
    }

    #[test]
    fn mysql_ssl_ca_is_an_absolute_path_and_empty_means_no_tls() {
        let s = settings("surveyclient_mysql_ssl_ca = /etc/mysql/ca.pem\n");
        assert_eq!(
            s.mysql.ssl_ca.as_deref(),
            Some(Path::new("/etc/mysql/ca.pem"))
        );
        assert_eq!(settings("surveyclient_mysql_ssl_ca =\n").mysql.ssl_ca, None);
        assert_eq!(Settings::default().mysql.ssl_ca, None);
        let msg = error("\nsurveyclient_mysql_ssl_ca = ca.pem\n", 2);
        assert!(
            msg.starts_with("surveyclient_mysql_ssl_ca:") && msg.contains("absolute"),
            "{msg}"
        );
        // A misspelling is caught like every other surveyclient_ key.
        let loaded = from_text("surveyclient_mysql_ssl_cafile = /x\n").unwrap();
        assert!(
            loaded.warnings[0].ends_with("did you mean surveyclient_mysql_ssl_ca?"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn a_value_over_the_length_limit_is_an_error_naming_file_line() {
        let long = format!("https://stats.example/{}", "a".repeat(MAX_VALUE_BYTES));
        let msg = error(&format!("\nsurveyclient_url = {long}\n"), 2);
        assert!(
            msg.starts_with("surveyclient_url:") && msg.contains("limit of 4096"),
            "{msg}"
        );
        assert!(msg.len() < 400, "the value is not quoted whole: {msg}");
        let facts = format!(
            "surveyclient_facts = file:/{}\n",
            "f".repeat(MAX_VALUE_BYTES)
        );
        error(&facts, 1);
        let password = format!("mysql_password = {}\n", "s3cret".repeat(1000));
        let msg = error(&password, 1);
        assert!(!msg.contains("s3cret"), "{msg}");
        let fits = format!(
            "surveyclient_program_name = {}\n",
            "p".repeat(MAX_VALUE_BYTES)
        );
        assert!(settings(&fits).program_name.is_some());
    }

    #[test]
    fn effective_shows_control_characters_escaped_on_one_line() {
        let env = |name: &str| {
            (name == "NAME").then(|| "kopano\nsurveyclient_interval = 0\r\u{2028}".to_string())
        };
        let cfg = CfgFile::parse_str(
            "surveyclient_program_name = $NAME\n",
            Path::new("x.cfg"),
            &env,
        )
        .unwrap();
        let s = Settings::from_cfg(&cfg).unwrap().settings;
        let effective = s.effective();
        let name = &effective
            .iter()
            .find(|(k, _)| *k == "surveyclient_program_name")
            .unwrap()
            .1;
        assert_eq!(name, "kopano\\nsurveyclient_interval = 0\\r\\u{2028}");
        assert_eq!(
            escape_controls(r"C:\path\tab"),
            r"C:\path\tab",
            "backslashes are left alone"
        );
    }

    #[test]
    fn later_key_wins_for_settings() {
        let s = settings("surveyclient_interval = 60\nsurveyclient_interval = 120\n");
        assert_eq!(s.interval, Duration::from_secs(120));
    }

    #[test]
    fn misspelt_surveyclient_key_warns_with_location_and_suggestion() {
        let loaded = from_text("a = 1\nb = 2\nsurveyclient_intervall = 60\n").unwrap();
        assert_eq!(
            loaded.warnings,
            ["unknown key surveyclient_intervall at /etc/x.cfg:3; did you mean surveyclient_interval?"]
        );
        // The misspelt key has no effect.
        assert_eq!(loaded.settings.interval, Duration::from_secs(3600));
        let loaded = from_text("SurveyClient_SSL_Verify = no\n").unwrap();
        assert!(
            loaded.warnings[0].ends_with("did you mean surveyclient_ssl_verify?"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn an_unknown_key_with_control_characters_is_shown_escaped() {
        let loaded = from_text("surveyclient_x\u{1b}[2J = 1\n").unwrap();
        assert!(
            loaded.warnings[0].starts_with("unknown key surveyclient_x\\u{1b}[2J at"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn other_unknown_keys_pass_silently() {
        let loaded =
            from_text("server_listen = *:236\nthreads = 8\nsurveyclientinterval = 1\n").unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn file_warnings_are_passed_on() {
        let loaded = from_text("garbage line\n").unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("/etc/x.cfg:1"));
    }

    #[test]
    fn effective_lists_known_keys_in_order_and_masks_password() {
        let s = settings("mysql_password = hunter2\n");
        let keys: Vec<_> = s.effective().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, KNOWN_KEYS);
        let effective = s.effective();
        let password = effective
            .iter()
            .find(|(k, _)| *k == "mysql_password")
            .unwrap();
        assert_eq!(password.1, "********");
        assert!(!format!("{effective:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        let empty = Settings::default().effective();
        assert_eq!(
            empty
                .iter()
                .find(|(k, _)| *k == "mysql_password")
                .unwrap()
                .1,
            ""
        );
    }

    #[test]
    fn effective_renders_defaults_as_documented() {
        let effective = Settings::default().effective();
        let get = |key: &str| effective.iter().find(|(k, _)| *k == key).unwrap().1.clone();
        assert_eq!(get("surveyclient_url"), DEFAULT_URL);
        assert_eq!(get("surveyclient_interval"), "3600");
        assert_eq!(get("surveyclient_ssl_verify"), "yes");
        assert_eq!(
            get("surveyclient_app_id"),
            "187f157428b74898a629521121fa9f49"
        );
        assert_eq!(get("surveyclient_bucket_counts"), "no");
        assert_eq!(get("surveyclient_facts"), "");
    }

    fn round_trip(s: &Settings) -> Settings {
        let text: String = s
            .effective()
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        settings(&text)
    }

    #[test]
    fn effective_output_parses_back_to_the_same_settings() {
        assert_eq!(round_trip(&Settings::default()), Settings::default());
        let s = settings(
            "surveyclient_url = unix:/run/c.sock\nsurveyclient_interval = 0\nsurveyclient_ssl_verify = 0\n\
             surveyclient_app_id = 00112233-4455-6677-8899-aabbccddeeff\nsurveyclient_omit = utsname osrelease\n\
             surveyclient_facts = command:/bin/f a  b; file:/x;kopano-mysql\n\
             surveyclient_id_hash = sha256\nuser_plugin = ldap\nmysql_port = 1\nmysql_socket = /s\n\
             surveyclient_mysql_ssl_ca = /etc/mysql/ca.pem\n",
        );
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn effective_output_never_shows_a_static_server_guid() {
        let s = settings("surveyclient_server_guid = 0A1B2C3D4E5F60718293A4B5C6D7E8F9\n");
        let shown: Vec<_> = s.effective();
        let guid = shown
            .iter()
            .find(|(k, _)| *k == "surveyclient_server_guid")
            .unwrap();
        assert_eq!(guid.1, "(set, not shown)");
        assert!(!format!("{shown:?}").contains("0A1B2C3D"));
    }

    #[test]
    fn real_kopano_server_2018_cfg_gives_its_plugin_storage_and_mysql_settings() {
        let path = kopano_testdata("server-2018.cfg");
        let loaded = Settings::load(&path).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.settings;
        assert_eq!(s.user_plugin.as_deref(), Some("db"));
        assert_eq!(s.attachment_storage.as_deref(), Some("files"));
        assert_eq!(s.mysql, MysqlSettings::default());
        // The 2018 file predates the survey options, so upstream's defaults
        // apply: every surveyclient_* setting is ours by default.
        let defaults = Settings {
            user_plugin: s.user_plugin.clone(),
            attachment_storage: s.attachment_storage.clone(),
            ..Settings::default()
        };
        assert_eq!(s, defaults);
        assert!(s.enabled());
    }

    #[test]
    fn real_kopano_server_2021_cfg_leaves_plugin_unset() {
        let path = kopano_testdata("server-2021.cfg");
        let loaded = Settings::load(&path).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.settings, Settings::default());
    }

    #[test]
    fn server_cfg_with_survey_options_appended_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = fs::read_to_string(kopano_testdata("server-2018.cfg")).unwrap();
        text.push_str("surveyclient_interval\t= 0\nsurveyclient_ssl_verify = no \n");
        let path = dir.path().join("server.cfg");
        fs::write(&path, text).unwrap();
        let s = Settings::load(&path).unwrap().settings;
        assert!(!s.enabled());
        assert!(!s.ssl_verify);
    }

    #[test]
    fn env_substitution_feeds_settings() {
        let env = |name: &str| (name == "SURVEY_URL").then(|| "unix:/run/s.sock".to_string());
        let cfg = CfgFile::parse_str("surveyclient_url = $SURVEY_URL\n", Path::new("x.cfg"), &env)
            .unwrap();
        let s = Settings::from_cfg(&cfg).unwrap().settings;
        assert_eq!(s.url.to_string(), "unix:/run/s.sock");
    }
}
