//! The `kopano-mysql` facts source: the user counts and server GUID that
//! kopano-server itself reports, read from its MySQL/MariaDB database with
//! the connection settings of server.cfg (`mysql_*`).
//!
//! Each report opens one connection, reads inside a read-only transaction,
//! and closes it with COM_QUIT, all bounded by `surveyclient_timeout`. A
//! database that cannot be reached or read is a warning and its fields are
//! left out. The password is never put into a message (driver errors are
//! scrubbed too), and the raw GUID only ever leaves this module as a
//! [`RawId`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use tracing::{debug, warn};

use super::sources::SourceFacts;
use crate::daemon::payload::FactValue;
use crate::daemon::settings::{MysqlSettings, Settings};
use crate::privacy::RawId;
use crate::wire;

/// kopano-server's own count (ECUserManagement): objects with an external
/// id whose class is of the user type (upper 16 bits 0x0001), per class.
/// Rows without an external id (SYSTEM, EVERYONE) are Kopano's built-ins.
pub const USER_COUNT_QUERY: &str = "SELECT COUNT(*), objectclass FROM users \
     WHERE externid IS NOT NULL AND (objectclass & 4294901760) = 65536 \
     GROUP BY objectclass";

/// Where kopano-server keeps its GUID: 16 raw bytes.
pub const SERVER_GUID_QUERY: &str = "SELECT value FROM settings WHERE name = 'server_guid'";

/// Kopano's object classes of the user type (`objectclass_t`).
const ACTIVE_USER: i64 = 0x10001;
const NONACTIVE_USER: i64 = 0x10002;
const NONACTIVE_ROOM: i64 = 0x10003;
const NONACTIVE_EQUIPMENT: i64 = 0x10004;
const NONACTIVE_CONTACT: i64 = 0x10005;

/// The payload fields this source fills with counts.
pub const COUNT_FIELDS: [&str; 6] = [
    wire::USERCNT_ACTIVE.name,
    wire::USERCNT_NONACTIVE.name,
    wire::USERCNT_NA_USER.name,
    wire::USERCNT_ROOM.name,
    wire::USERCNT_EQUIPMENT.name,
    wire::USERCNT_CONTACT.name,
];

/// The unix sockets that the MySQL and MariaDB client libraries (which
/// kopano-server links) use for `localhost` when `mysql_socket` is empty:
/// Debian's and Ubuntu's, then Red Hat's and SUSE's, then upstream's.
pub const DEFAULT_SOCKETS: [&str; 4] = [
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/var/lib/mysql/mysql.sock",
    "/tmp/mysql.sock",
];

/// The largest packet accepted from the server. The answers are a handful
/// of short rows; anything bigger is not a Kopano database.
const MAX_PACKET: usize = 1024 * 1024;

/// Largest CA file accepted for `surveyclient_mysql_ssl_ca`: a whole
/// system bundle (about 220 KiB on Debian) fits several times over.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Shown in place of the password if a driver message ever contains it.
const MASK: &str = "********";

/// Where the database is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Socket(PathBuf),
    Tcp { host: String, port: u16 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Socket(path) => write!(f, "{}", path.display()),
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Where kopano-server itself would connect, following the C client
/// library it links: for `mysql_host = localhost` (upstream's default) or an
/// empty host, a unix socket, `mysql_socket` or else the first of
/// `default_sockets` that exists; for any other host, TCP to
/// `mysql_host:mysql_port`, and `mysql_socket` does not apply (server.cfg
/// says so). A database set up with `skip-networking`, or with grants for
/// socket logins only, thus works for surveyd exactly when it works for
/// Kopano.
pub fn target(mysql: &MysqlSettings, default_sockets: &[&Path]) -> Result<Target, String> {
    if mysql.host.is_empty() || mysql.host == "localhost" {
        if let Some(socket) = &mysql.socket {
            return Ok(Target::Socket(socket.clone()));
        }
        return default_sockets
            .iter()
            .find(|path| path.exists())
            .map(|path| Target::Socket(path.to_path_buf()))
            .ok_or_else(|| {
                let tried: Vec<String> = default_sockets
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!(
                    "mysql_host = localhost means the local server's unix socket, but none of {} exists; \
                     set mysql_socket to its path, or mysql_host = 127.0.0.1 to use TCP",
                    tried.join(", ")
                )
            });
    }
    Ok(Target::Tcp {
        host: mysql.host.clone(),
        port: mysql.port,
    })
}

/// User counts as kopano-server reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UserCounts {
    pub active: u64,
    pub na_user: u64,
    pub room: u64,
    pub equipment: u64,
    pub contact: u64,
}

impl UserCounts {
    /// From the `(COUNT(*), objectclass)` rows of [`USER_COUNT_QUERY`].
    /// Other classes of the user type are not counted, as upstream.
    pub fn from_rows(rows: impl IntoIterator<Item = (u64, i64)>) -> UserCounts {
        let mut counts = UserCounts::default();
        for (count, class) in rows {
            let slot = match class {
                ACTIVE_USER => &mut counts.active,
                NONACTIVE_USER => &mut counts.na_user,
                NONACTIVE_ROOM => &mut counts.room,
                NONACTIVE_EQUIPMENT => &mut counts.equipment,
                NONACTIVE_CONTACT => &mut counts.contact,
                _ => continue,
            };
            *slot += count;
        }
        counts
    }

    /// Upstream's "total non-active objects": contacts are not in it.
    pub fn nonactive(&self) -> u64 {
        self.na_user + self.room + self.equipment
    }

    /// The payload fields, named as in [`COUNT_FIELDS`].
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        [
            (wire::USERCNT_ACTIVE.name, self.active),
            (wire::USERCNT_NONACTIVE.name, self.nonactive()),
            (wire::USERCNT_NA_USER.name, self.na_user),
            (wire::USERCNT_ROOM.name, self.room),
            (wire::USERCNT_EQUIPMENT.name, self.equipment),
            (wire::USERCNT_CONTACT.name, self.contact),
        ]
    }
}

/// Which of this source's facts are wanted (the rest is not even read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub counts: bool,
    pub server_guid: bool,
}

/// What one read of the database gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DatabaseFacts {
    pub counts: Option<UserCounts>,
    pub server_guid: Option<RawId>,
    /// Things read but not usable, for the log.
    pub problems: Vec<String>,
}

/// Why the database gave nothing. `Display` is the log line after
/// `kopano-mysql: `; it never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot connect to {target} as {user}: {why}")]
    Connect {
        target: Target,
        user: String,
        why: String,
    },
    #[error("{what} in database {database} at {target} failed: {why}")]
    Query {
        what: &'static str,
        database: String,
        target: Target,
        why: String,
    },
    #[error("no answer from {target} within {} s", .timeout.as_secs())]
    Timeout { target: Target, timeout: Duration },
}

/// The `kopano-mysql` source for a report: the wanted facts, or `None`
/// after a warning that says why.
pub async fn collect(settings: &Settings) -> Option<SourceFacts> {
    let wanted = Wanted {
        counts: COUNT_FIELDS
            .iter()
            .any(|field| !settings.omit.contains(*field)),
        // A configured surveyclient_server_guid wins over the database.
        server_guid: !settings.omit.contains("server_guid_hash") && settings.server_guid.is_none(),
    };
    if !wanted.counts && !wanted.server_guid {
        return Some(SourceFacts::default());
    }
    let sockets = DEFAULT_SOCKETS.map(Path::new);
    match read(&settings.mysql, settings.timeout, wanted, &sockets).await {
        Ok(found) => {
            for problem in &found.problems {
                warn!("kopano-mysql: {problem}");
            }
            let mut values = BTreeMap::new();
            if let Some(counts) = found.counts {
                for (name, count) in counts.fields() {
                    values.insert(name.to_string(), FactValue::Count(count));
                }
            }
            Some(SourceFacts {
                values,
                server_guid: found.server_guid,
            })
        }
        Err(err) => {
            warn!("kopano-mysql: {err}; its facts are left out");
            None
        }
    }
}

/// Connects, reads what is wanted in a read-only transaction, and closes
/// the connection, all within `timeout`.
pub async fn read(
    mysql: &MysqlSettings,
    timeout: Duration,
    wanted: Wanted,
    default_sockets: &[&Path],
) -> Result<DatabaseFacts, DatabaseError> {
    let target = target(mysql, default_sockets).map_err(DatabaseError::Setup)?;
    let deadline = tokio::time::Instant::now() + timeout;
    // Building the options reads the CA file: on a blocking thread, so a
    // file on a hung file system cannot stall the service loop, and within
    // the same deadline as the queries.
    let opts = {
        let (settings, to) = (mysql.clone(), target.clone());
        let build = tokio::task::spawn_blocking(move || options(&settings, &to, timeout));
        match tokio::time::timeout_at(deadline, build).await {
            Ok(Ok(opts)) => opts?,
            Ok(Err(err)) => {
                return Err(DatabaseError::Setup(format!(
                    "preparing the connection failed: {err}"
                )))
            }
            Err(_) => {
                return Err(DatabaseError::Timeout {
                    target: target.clone(),
                    timeout,
                })
            }
        }
    };
    let work = async {
        let mut conn = Conn::new(opts)
            .await
            .map_err(|err| DatabaseError::Connect {
                target: target.clone(),
                user: mysql.user.clone(),
                why: describe(&err, &mysql.password),
            })?;
        let query_error = |what: &'static str| {
            let target = target.clone();
            move |err: mysql_async::Error| DatabaseError::Query {
                what,
                database: mysql.database.clone(),
                target,
                why: describe(&err, &mysql.password),
            }
        };
        // Read-only, so that no bug here can ever change Kopano's data,
        // and one snapshot for both answers.
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(query_error("starting a read-only transaction"))?;
        let mut facts = DatabaseFacts::default();
        if wanted.counts {
            let rows: Vec<(u64, i64)> = conn
                .query(USER_COUNT_QUERY)
                .await
                .map_err(query_error("reading the user counts"))?;
            facts.counts = Some(UserCounts::from_rows(rows));
        }
        if wanted.server_guid {
            let value: Option<Vec<u8>> = conn
                .query_first(SERVER_GUID_QUERY)
                .await
                .map_err(query_error("reading the server GUID"))?;
            match server_guid(value) {
                Ok(guid) => facts.server_guid = Some(guid),
                Err(problem) => facts.problems.push(problem),
            }
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(query_error("ending the transaction"))?;
        // COM_QUIT, so the server counts a clean logout, not an aborted
        // client; the answers are in hand either way.
        if let Err(err) = conn.disconnect().await {
            debug!(
                "kopano-mysql: closing the connection to {target} failed: {}",
                describe(&err, &mysql.password)
            );
        }
        Ok(facts)
    };
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(DatabaseError::Timeout {
                target: target.clone(),
                timeout,
            })
        })
}

/// The GUID as upstream sends it (32 uppercase hex digits), to be hashed.
fn server_guid(value: Option<Vec<u8>>) -> Result<RawId, String> {
    let bytes = value.ok_or_else(|| {
        "the settings table has no server_guid (has kopano-server never started on this database?); \
         server_guid_hash is left out"
            .to_string()
    })?;
    if bytes.len() != 16 {
        return Err(format!(
            "the server_guid in the settings table is {} bytes long, not 16; server_guid_hash is left out",
            bytes.len()
        ));
    }
    RawId::server_guid(&hex::encode_upper(bytes))
        .ok_or_else(|| "the server_guid is empty; server_guid_hash is left out".to_string())
}

/// Connection options, built field by field: a URL would carry the
/// password, and the driver quotes URLs in its errors.
fn options(
    mysql: &MysqlSettings,
    target: &Target,
    timeout: Duration,
) -> Result<OptsBuilder, DatabaseError> {
    let builder = OptsBuilder::default()
        .user(Some(&mysql.user))
        .pass((!mysql.password.is_empty()).then_some(&mysql.password))
        .db_name((!mysql.database.is_empty()).then_some(&mysql.database))
        // Connect exactly where kopano-server does, never to a socket the
        // server names (the driver's default).
        .prefer_socket(false)
        // Known up front, so the driver does not ask the server for them.
        .max_allowed_packet(Some(MAX_PACKET))
        .wait_timeout(Some(timeout.as_secs().max(1) as usize));
    Ok(match target {
        Target::Socket(path) => {
            let path = path.to_str().ok_or_else(|| {
                DatabaseError::Setup(format!("the socket path {} is not UTF-8", path.display()))
            })?;
            builder.socket(Some(path))
        }
        Target::Tcp { host, port } => {
            let builder = builder.ip_or_hostname(host.as_str()).tcp_port(*port);
            match &mysql.ssl_ca {
                Some(ca) => builder.ssl_opts(tls_options(ca)?),
                None => builder,
            }
        }
    })
}

/// TLS that trusts exactly the configured CA (not the built-in web roots:
/// a database certificate comes from the admin's own CA) and checks the
/// host name against `mysql_host`.
fn tls_options(ca: &Path) -> Result<SslOpts, DatabaseError> {
    let setup = |why: String| {
        DatabaseError::Setup(format!("surveyclient_mysql_ssl_ca {}: {why}", ca.display()))
    };
    // No link is followed, and a FIFO or device there is refused without
    // blocking the service loop this runs on.
    let pem = crate::safe_fs::read_regular(ca, MAX_CA_FILE_BYTES)
        .map_err(|err| setup(format!("cannot read it: {err}")))?;
    let certificates = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| setup(format!("it is not PEM: {err}")))?;
    if certificates.is_empty() {
        return Err(setup("it holds no PEM certificate".into()));
    }
    Ok(SslOpts::default()
        .with_disable_built_in_roots(true)
        .with_root_certs(vec![pem.into()]))
}

/// A driver error as one readable clause, with the password masked in case
/// a server or driver ever echoes it.
fn describe(err: &mysql_async::Error, password: &str) -> String {
    use mysql_async::{DriverError, Error, IoError};
    let text = match err {
        Error::Server(server) => format!("{} (MySQL error {})", server.message, server.code),
        // The TLS handshake reports certificate problems as I/O errors.
        Error::Io(IoError::Io(io))
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            format!("TLS: {io}")
        }
        Error::Io(IoError::Io(io)) => io.to_string(),
        Error::Io(IoError::Tls(tls)) => format!("TLS: {tls}"),
        Error::Driver(DriverError::NoClientSslFlagFromServer) => {
            "the server does not offer TLS, which surveyclient_mysql_ssl_ca requires".to_string()
        }
        Error::Driver(driver) => driver.to_string(),
        other => other.to_string(),
    };
    mask_password(&text, password)
}

fn mask_password(text: &str, password: &str) -> String {
    if password.is_empty() {
        text.to_string()
    } else {
        text.replace(password, MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(host: &str, socket: Option<&str>) -> MysqlSettings {
        MysqlSettings {
            host: host.into(),
            port: 3307,
            socket: socket.map(PathBuf::from),
            ..MysqlSettings::default()
        }
    }

    #[test]
    fn counts_follow_upstreams_classes_and_leave_contacts_out_of_nonactive() {
        let counts = UserCounts::from_rows([
            (7, ACTIVE_USER),
            (3, NONACTIVE_USER),
            (2, NONACTIVE_ROOM),
            (1, NONACTIVE_EQUIPMENT),
            (5, NONACTIVE_CONTACT),
            // A user-type class upstream does not report.
            (9, 0x10000),
        ]);
        assert_eq!(
            counts.fields(),
            [
                (wire::USERCNT_ACTIVE.name, 7),
                (wire::USERCNT_NONACTIVE.name, 6),
                (wire::USERCNT_NA_USER.name, 3),
                (wire::USERCNT_ROOM.name, 2),
                (wire::USERCNT_EQUIPMENT.name, 1),
                (wire::USERCNT_CONTACT.name, 5),
            ]
        );
        let names: Vec<&str> = counts.fields().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, COUNT_FIELDS);
        for name in COUNT_FIELDS {
            assert!(crate::daemon::payload::field_spec(name).is_some(), "{name}");
        }
    }

    #[test]
    fn no_rows_means_zero_counts_not_missing_ones() {
        assert_eq!(UserCounts::from_rows([]).fields().map(|(_, n)| n), [0; 6]);
    }

    #[test]
    fn socket_setting_applies_to_localhost_only_as_upstream_documents() {
        let dir = tempfile::tempdir().unwrap();
        let found = dir.path().join("mysqld.sock");
        std::fs::write(&found, "").unwrap();
        for host in ["localhost", ""] {
            assert_eq!(
                target(&mysql(host, Some("/s.sock")), &[&found]).unwrap(),
                Target::Socket("/s.sock".into())
            );
        }
        assert_eq!(
            target(&mysql("db.example", Some("/s.sock")), &[&found]).unwrap(),
            Target::Tcp {
                host: "db.example".into(),
                port: 3307
            }
        );
    }

    #[test]
    fn localhost_means_the_first_default_socket_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("run/mysqld/mysqld.sock");
        let found = dir.path().join("mysql.sock");
        std::fs::write(&found, "").unwrap();
        for host in ["localhost", ""] {
            assert_eq!(
                target(&mysql(host, None), &[&missing, &found]).unwrap(),
                Target::Socket(found.clone())
            );
        }
        let err = target(&mysql("localhost", None), &[&missing]).unwrap_err();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("127.0.0.1"),
            "{err}"
        );
    }

    #[test]
    fn other_hosts_use_tcp_with_the_port() {
        for host in ["127.0.0.1", "db.example", "LOCALHOST", "::1"] {
            assert_eq!(
                target(&mysql(host, None), &[]).unwrap(),
                Target::Tcp {
                    host: host.into(),
                    port: 3307
                }
            );
        }
        let v6 = Target::Tcp {
            host: "::1".into(),
            port: 3306,
        };
        assert_eq!(v6.to_string(), "[::1]:3306");
    }

    #[test]
    fn server_guid_is_sixteen_bytes_sent_as_uppercase_hex() {
        let bytes: Vec<u8> = (0xf0..=0xff).collect();
        let guid = server_guid(Some(bytes)).unwrap();
        assert_eq!(guid.expose(), "F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF");
        let short = server_guid(Some(vec![1; 15])).unwrap_err();
        assert!(short.contains("15 bytes"), "{short}");
        assert!(server_guid(None).unwrap_err().contains("no server_guid"));
    }

    #[test]
    fn the_password_is_masked_wherever_it_appears() {
        assert_eq!(
            mask_password("Access denied for hunter2 (hunter2)", "hunter2"),
            "Access denied for ******** (********)"
        );
        assert_eq!(mask_password("no secret here", ""), "no secret here");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = tls_options(&ca).unwrap_err().to_string();
        assert!(
            err.starts_with("surveyclient_mysql_ssl_ca ") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = tls_options(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read it"), "{err}");
    }

    #[test]
    fn a_fifo_or_link_as_ca_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ca.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = tls_options(&fifo).unwrap_err().to_string();
        assert!(err.contains("is a FIFO, not a regular file"), "{err}");
        let link = dir.path().join("ca.link");
        std::os::unix::fs::symlink("/etc/ssl/certs/ca-certificates.crt", &link).unwrap();
        let err = tls_options(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
