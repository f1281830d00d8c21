//! The collector's TOML configuration (`/etc/surveyd/collector.toml`):
//! its keys and defaults, loading with unknown keys rejected, the semantic
//! checks behind `check-config`, and the TLS material it points at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/surveyd/collector.toml";
/// The path every client, upstream or surveyd, posts to by default; it is
/// always accepted, `path` can add one more.
pub const STANDARD_PATH: &str = crate::wire::SUBMIT_PATH;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// The Ed25519 key (PKCS#8) that signs every receipt; created by
    /// `serve` on first start. Collectors sharing one database share it.
    #[serde(default = "default_receipt_key")]
    pub receipt_key: PathBuf,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most connections open at once, in all (kept below the open-file
    /// limit whatever is configured here).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one source address (IPv6: one
    /// /64), at most half of `max_connections`.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Most bytes of request bodies held at once, over all connections.
    #[serde(default = "default_max_body_memory_bytes")]
    pub max_body_memory_bytes: usize,
    /// Most reports the writer commits in one transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Days an installation row is kept after its last report; 0 keeps
    /// rows forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Groups of fewer installations are published as "other" (summary.json,
    /// export).
    #[serde(default = "default_min_group")]
    pub min_group: u64,
    /// The dashboard's listener; none without the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// A bearer token every admin request must carry; required when
    /// `listen` is not a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Shortest accepted admin token: guessing 16 random characters over the
/// network is out of reach, and a shorter one is likely a placeholder.
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tokens added per second to each source address's bucket.
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// Bucket size: how many requests a source may send back to back.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_database() -> String {
    "/var/lib/surveyd-collector/surveys.db".into()
}
fn default_path() -> String {
    STANDARD_PATH.into()
}
fn default_receipt_key() -> PathBuf {
    super::receipt_key::DEFAULT_PATH.into()
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
// One report is a short request once an hour; 8192 at once is far beyond
// any real load and still a bounded amount of memory.
fn default_max_connections() -> usize {
    8192
}
// An office of installations behind one NAT address reports at random
// moments; 128 concurrent requests from one address is still plenty.
fn default_max_connections_per_source() -> usize {
    128
}
// 512 bodies of the default 64 KiB limit; real reports are under 2 KiB,
// so that is tens of thousands of them in flight.
fn default_max_body_memory_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_min_group() -> u64 {
    crate::collector::summary::DEFAULT_MIN_GROUP
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_batch_size() -> usize {
    512
}
// The data-minimisation promise: a server that stopped reporting half a
// year ago is gone from the table (its counts stay in the history).
fn default_retention_days() -> u32 {
    180
}
fn yes() -> bool {
    true
}
// Clients report once an hour; a whole office of installations behind one
// NAT address still fits in 100 back to back and 10 a second after that.
fn default_per_second() -> f64 {
    10.0
}
fn default_burst() -> u32 {
    100
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_second: default_per_second(),
            burst: default_burst(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty config takes every default")
    }
}

/// Where the table lives, decided by the shape of `database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    pub fn parse(spec: &str) -> Database {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            Database::Postgres(spec.to_owned())
        } else {
            Database::Sqlite(PathBuf::from(spec))
        }
    }

    /// A form safe for logs and STATUS: a URL's password is masked.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(p) => format!("sqlite:{}", p.display()),
            Database::Postgres(u) => match url::Url::parse(u) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    url.to_string()
                }
                Err(_) => "postgres (unparsable URL)".into(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Read, parse and check the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parse and check; the error is a message naming the key and, for
    /// syntax and unknown keys, the line.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                match key_at(text, before) {
                    Some(key) => format!("line {line}: {key}: {}", e.message()),
                    None => format!("line {line}: {}", e.message()),
                }
            }
            None => e.message().to_owned(),
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.listen_addr()?;
        if self.database.trim().is_empty() {
            return Err("database: must be a file path or a postgres:// URL".into());
        }
        if let Database::Postgres(u) = self.database() {
            // Also reads sslrootcert, so a missing CA file is a
            // configuration error, not a failed start.
            super::store::tls::target(&u).map_err(|e| format!("database: {e}"))?;
        }
        if self.receipt_key.as_os_str().is_empty() {
            return Err("receipt_key: must be the path of the receipt key file".into());
        }
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            return Err(format!(
                "path: {:?} must be an absolute URL path without query",
                self.path
            ));
        }
        if self.path == crate::wire::DELETE_PATH {
            return Err(format!(
                "path: {:?} is where deletion requests go; choose another path for reports",
                self.path
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err("max_body_bytes: must be between 1024 and 16777216".into());
        }
        if self.max_connections < 2 {
            return Err("max_connections: must be at least 2".into());
        }
        if self.max_connections_per_source == 0 {
            return Err("max_connections_per_source: must be at least 1".into());
        }
        if self.max_body_memory_bytes < self.max_body_bytes
            || self.max_body_memory_bytes > 4 * 1024 * 1024 * 1024
        {
            return Err(format!(
                "max_body_memory_bytes: must be between max_body_bytes ({}) and 4294967296",
                self.max_body_bytes
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err("batch_size: must be between 1 and 10000".into());
        }
        if self.retention_days > 36_500 {
            return Err(
                "retention_days: must be at most 36500 (use 0 to keep rows forever)".into(),
            );
        }
        let rl = &self.rate_limit;
        if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
            return Err("rate_limit.per_second: must be a positive number".into());
        }
        if rl.burst == 0 {
            return Err("rate_limit.burst: must be at least 1".into());
        }
        if let Some(tls) = &self.tls {
            tls.server_config()?;
        }
        if self.min_group == 0 {
            return Err("min_group: must be at least 1".into());
        }
        if let Some(admin) = &self.admin {
            admin.check()?;
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "listen: {:?} is not an IP:port address (e.g. \"127.0.0.1:8080\")",
                self.listen
            )
        })
    }

    pub fn database(&self) -> Database {
        Database::parse(&self.database)
    }

    /// The effective configuration as TOML, with a database password and
    /// the admin token masked.
    pub fn effective_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(token) = shown.admin.as_mut().and_then(|a| a.token.as_mut()) {
            *token = "***".into();
        }
        shown.database = match self.database() {
            Database::Sqlite(p) => p.display().to_string(),
            db @ Database::Postgres(_) => db.display(),
        };
        toml::to_string(&shown).expect("config serialises")
    }
}

/// The dotted key assigned on the line where `before` ends, for messages
/// such as toml's type errors that point at a value but do not name it.
fn key_at(text: &str, before: &str) -> Option<String> {
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = before.lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')?.strip_suffix(']')
    });
    Some(match table {
        Some(t) => format!("{}.{key}", t.trim()),
        None => key.to_owned(),
    })
}

impl AdminConfig {
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "admin.listen: {:?} is not an IP:port address (e.g. \"127.0.0.1:8081\")",
                self.listen
            )
        })
    }

    fn check(&self) -> Result<(), String> {
        let addr = self.listen_addr()?;
        match &self.token {
            Some(token) if token.chars().count() < MIN_TOKEN_CHARS => Err(format!(
                "admin.token: must be at least {MIN_TOKEN_CHARS} characters \
                 (e.g. the output of `openssl rand -hex 32`)"
            )),
            Some(token) if !token.bytes().all(|b| b.is_ascii_graphic()) => Err(
                "admin.token: must be printable ASCII without spaces (it travels in a header)"
                    .into(),
            ),
            None if !addr.ip().is_loopback() => Err(format!(
                "admin.token: required because admin.listen = {:?} is reachable from other \
                 hosts; set a token (e.g. `openssl rand -hex 32`) or listen on loopback",
                self.listen
            )),
            _ => Ok(()),
        }
    }
}

impl TlsConfig {
    /// Load the certificate chain and key into a rustls server config.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| format!("tls.{what}: cannot read {}: {e}", p.display()))
        };
        let cert_pem = read(&self.cert, "cert")?;
        let key_pem = read(&self.key, "key")?;
        let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.cert: {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert: {}: no PEM certificate found",
                self.cert.display()
            ));
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| format!("tls.key: {}: {e}", self.key.display()))?
            .ok_or_else(|| format!("tls.key: {}: no PEM private key found", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("tls: certificate and key do not fit: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(
            c.database(),
            Database::Sqlite("/var/lib/surveyd-collector/surveys.db".into())
        );
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(
            c.receipt_key,
            Path::new("/var/lib/surveyd-collector/receipt-key.pk8")
        );
        assert_eq!(c.retention_days, 180);
        assert!(c.rate_limit.enabled);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = Config::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(e.contains("listen_port") && e.contains("line 2"), "{e}");
        let e = Config::from_toml("[rate_limit]\nburstt = 3\n").unwrap_err();
        assert!(e.contains("burstt"), "{e}");
    }

    #[test]
    fn postgres_url_selects_postgres_and_masks_password() {
        let c = Config::from_toml("database = \"postgres://u:secret@db.example/s\"").unwrap();
        let Database::Postgres(_) = c.database() else {
            panic!()
        };
        assert!(!c.database().display().contains("secret"));
        assert!(!c.effective_toml().contains("secret"));
    }

    #[test]
    fn admin_listener_is_loopback_by_default_and_needs_a_token_elsewhere() {
        assert_eq!(Config::from_toml("").unwrap().admin, None);
        let c = Config::from_toml("[admin]\n").unwrap();
        assert_eq!(c.admin.unwrap().listen, "127.0.0.1:8081");
        let token = "0123456789abcdef0123";
        let c = Config::from_toml(&format!(
            "[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"{token}\"\n"
        ))
        .unwrap();
        assert!(
            !c.effective_toml().contains(token),
            "{}",
            c.effective_toml()
        );
        assert_eq!(c.min_group, 10);
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("listen = \"localhost\"", "listen"),
            ("max_body_bytes = 10", "max_body_bytes"),
            ("[rate_limit]\nper_second = 0.0", "rate_limit.per_second"),
            (
                "[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"",
                "tls.cert",
            ),
            ("path = \"api\"", "path"),
            ("path = \"/api/stats/v1/delete\"", "path"),
            ("max_connections = 1", "max_connections"),
            (
                "max_connections_per_source = 0",
                "max_connections_per_source",
            ),
            ("max_body_memory_bytes = 2048", "max_body_memory_bytes"),
            ("min_group = 0", "min_group"),
            ("[admin]\nlisten = \"0.0.0.0:8081\"", "admin.token"),
            ("[admin]\nlisten = \"[::]:8081\"", "admin.token"),
            ("[admin]\ntoken = \"short\"", "admin.token"),
            (
                "[admin]\ntoken = \"has a space in it, sixteen+\"",
                "admin.token",
            ),
            ("[admin]\nlisten = \"localhost:8081\"", "admin.listen"),
        ] {
            let e = Config::from_toml(text).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }
}
