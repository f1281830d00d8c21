//! The value parsers of the settings: one per kind of value (booleans,
//! numbers, durations, sizes, paths, URLs, ids, field lists, fact sources),
//! each refusing garbage with a [`Problem`] that says what is wrong and what
//! to write instead, and the value types they produce. Also how a value is
//! shown safely: control characters escaped, the password masked.
//!
//! Nothing here knows the keys or the file; `settings` ties them together.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::privacy::IdScheme;
use crate::wire::SURVEYD_FIELD_NAMES as FIELD_NAMES;

/// Where reports go when nothing is configured (upstream's default).
/// Longest value accepted for any key surveyd reads. The longest sensible
/// values are paths (Linux's PATH_MAX is 4096) and URLs, which collectors
/// and proxies cut at a few KiB anyway; a longer value is a mistake or an
/// attack, and it would end up in every audit line and status message.
pub const MAX_VALUE_BYTES: usize = 4096;

pub const DEFAULT_URL: &str = "https://stats.kopano.io/api/stats/v1/submit";

/// The request path used on a `unix:` socket, the same as on the web.
pub const DEFAULT_SUBMIT_PATH: &str = crate::wire::SUBMIT_PATH;

/// Smallest audit log size before rotation; below this, every report
/// (a few KiB with its result line) would rotate the log on its own.
pub const MIN_AUDIT_MAX_SIZE: u64 = 4096;

/// Upper bound for every duration setting (100 years). Larger values buy
/// nothing (`interval = 0` already means never) and would overflow the
/// scheduler's `Instant` arithmetic.
pub const MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;

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

/// How `mysql_password` is shown: masked, unless it is empty.
pub(super) fn mask(password: &str) -> &'static str {
    if password.is_empty() {
        ""
    } else {
        MASK
    }
}

/// `value` with control characters and the Unicode line and paragraph
/// separators written as Rust escapes (`\n`, `\u{2028}`); everything else,
/// backslashes included, unchanged, so ordinary values print as written.
pub(super) fn escape_controls(value: &str) -> String {
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
pub(super) struct Problem {
    /// The offending part of the value (a single word of a list, say).
    pub(super) value: Option<String>,
    pub(super) problem: String,
    pub(super) hint: String,
}

impl Problem {
    pub(super) fn new(problem: impl Into<String>, hint: impl Into<String>) -> Self {
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

pub(super) fn optional(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

pub(super) fn parse_bool(value: &str) -> Result<bool, Problem> {
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
pub(super) fn is_plain_number(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn parse_number(value: &str, unit: &str) -> Result<u64, Problem> {
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

pub(super) fn parse_seconds(value: &str) -> Result<Duration, Problem> {
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

pub(super) fn parse_positive_seconds(value: &str) -> Result<Duration, Problem> {
    let duration = parse_seconds(value)?;
    if duration.is_zero() {
        return Err(Problem::new("must be at least 1 second", "write e.g. 30"));
    }
    Ok(duration)
}

pub(super) fn parse_audit_size(value: &str) -> Result<u64, Problem> {
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
pub(super) fn size_with_suffix(value: &str) -> Option<u64> {
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

pub(super) fn parse_count(value: &str) -> Result<u32, Problem> {
    let n = parse_number(value, "files")?;
    u32::try_from(n)
        .map_err(|_| Problem::new("is too large", format!("write at most {}", u32::MAX)))
}

pub(super) fn parse_port(value: &str) -> Result<u16, Problem> {
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
pub(super) fn parse_absolute_path(value: &str) -> Result<PathBuf, Problem> {
    if !value.starts_with('/') {
        return Err(Problem::new(
            "is not an absolute path",
            "write a path starting with /",
        ));
    }
    Ok(PathBuf::from(value))
}

pub(super) fn parse_endpoint(value: &str) -> Result<Endpoint, Problem> {
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
    // The URL is used (and shown by check-config) as written out again,
    // with characters percent-encoded: that form must fit the limit too, or
    // check-config would print a setting that does not load (a fuzz
    // finding: tests/fuzz_regressions.rs).
    if url.as_str().len() > MAX_VALUE_BYTES {
        return Err(Problem::new(
            format!(
                "is {} bytes long once percent-encoded as a URL, more than the limit of \
                 {MAX_VALUE_BYTES}",
                url.as_str().len()
            ),
            "write a shorter URL, with non-ASCII characters percent-encoded",
        ));
    }
    Ok(if https {
        Endpoint::Https(url)
    } else {
        Endpoint::Http(url)
    })
}

pub(super) fn parse_id_hash(value: &str) -> Result<IdScheme, Problem> {
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
pub(super) fn parse_app_id(value: &str) -> Result<[u8; 16], Problem> {
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

pub(super) fn parse_omit(value: &str) -> Result<BTreeSet<String>, Problem> {
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
pub(super) fn parse_facts(value: &str) -> Result<Vec<FactSource>, Problem> {
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
