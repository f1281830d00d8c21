//! `surveyclient_facts = kopano-mysql` against a real MariaDB: each test
//! starts its own server (Debian's mariadb-server-core, installed by
//! .ci/mariadb.sh) in a temp dir, on 127.0.0.1 and a unix socket, with
//! Kopano's `users` and `settings` tables, and stops it by pid. What is
//! checked is what an admin sees: `surveyd preview`/`send`/`run`, stderr,
//! the audit log, the collector's bytes, and the server's own query log.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The Kopano database user's password: it must never leave the config.
const PASSWORD: &str = "Pw-kq7Zr2xW9m";
/// The server GUID stored in the database as 16 raw bytes.
const GUID_HEX: &str = "3A7F0C19E4B25D86A1C03F9E7B2D4C58";
/// Upper bound for any single wait: a hang detector, not a timing check.
const PATIENCE: Duration = Duration::from_secs(60);

/// The counts the fixture rows must give, as upstream computes them.
const EXPECTED: [(&str, u64); 6] = [
    ("usercnt_active", 4),
    ("usercnt_nonactive", 10),
    ("usercnt_na_user", 3),
    ("usercnt_room", 2),
    ("usercnt_equipment", 5),
    ("usercnt_contact", 6),
];

/// Kopano's tables as kopano-server creates them (Z_TABLEDEF_USERS and
/// Z_TABLEDEF_SETTINGS), its two built-in rows (EVERYONE, SYSTEM: no
/// external id), then objects of every user class, groups, companies, and
/// user-class rows without an external id, which upstream does not count.
/// The init file takes one statement per line.
fn schema_sql() -> String {
    let mut rows = vec![
        "(1, NULL, 196610, '', 0)".to_string(),
        "(2, NULL, 65537, '', 0)".to_string(),
    ];
    let classes: [(u32, usize); 11] = [
        (0x10001, 4), // ACTIVE_USER
        (0x10002, 3), // NONACTIVE_USER
        (0x10003, 2), // NONACTIVE_ROOM
        (0x10004, 5), // NONACTIVE_EQUIPMENT
        (0x10005, 6), // NONACTIVE_CONTACT
        (0x30001, 2), // DISTLIST_GROUP
        (0x30002, 3), // DISTLIST_SECURITY
        (0x30003, 1), // DISTLIST_DYNAMIC
        (0x40001, 2), // CONTAINER_COMPANY
        (0x40002, 1), // CONTAINER_ADDRESSLIST
        (0x50001, 1), // not a user type either
    ];
    let mut id = 10;
    for (class, n) in classes {
        for _ in 0..n {
            id += 1;
            rows.push(format!("({id}, 'ext-{id}', {class}, '', 0)"));
        }
    }
    for class in [0x10001, 0x10002, 0x10005] {
        id += 1;
        rows.push(format!("({id}, NULL, {class}, '', 0)"));
    }
    [
        "CREATE DATABASE IF NOT EXISTS kopano".to_string(),
        "USE kopano".to_string(),
        "CREATE TABLE IF NOT EXISTS `users` (`id` int(11) unsigned NOT NULL auto_increment, `externid` blob, `objectclass` int(11) NOT NULL default '0', `signature` varbinary(255) NOT NULL default '0', `company` int(11) unsigned NOT NULL default '0', PRIMARY KEY (`id`), UNIQUE KEY externid (`externid`(255), `objectclass`)) ENGINE=InnoDB CHARACTER SET utf8mb4".to_string(),
        "CREATE TABLE IF NOT EXISTS settings (`name` varchar(185) BINARY NOT NULL, `value` blob NOT NULL, PRIMARY KEY (`name`)) ENGINE=InnoDB CHARACTER SET utf8mb4".to_string(),
        format!("INSERT IGNORE INTO `users` (`id`, `externid`, `objectclass`, `signature`, `company`) VALUES {}", rows.join(", ")),
        format!("INSERT IGNORE INTO `settings` VALUES ('source_key_auto_increment', CHAR(0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00)), ('imapseq', '3'), ('charset', 'utf8mb4'), ('server_guid', 0x{GUID_HEX})"),
        format!("CREATE USER IF NOT EXISTS 'kopano'@'localhost' IDENTIFIED BY '{PASSWORD}'"),
        format!("CREATE USER IF NOT EXISTS 'kopano'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'"),
        format!("CREATE USER IF NOT EXISTS 'kopano_tls'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL"),
        "GRANT ALL ON kopano.* TO 'kopano'@'localhost', 'kopano'@'127.0.0.1', 'kopano_tls'@'127.0.0.1'".to_string(),
        // A database the account may use that is not Kopano's.
        "CREATE DATABASE IF NOT EXISTS other".to_string(),
        "GRANT ALL ON other.* TO 'kopano'@'127.0.0.1'".to_string(),
    ]
    .join(";\n")
        + ";\n"
}

/// A throwaway MariaDB server.
struct MariaDb {
    dir: tempfile::TempDir,
    mariadbd: PathBuf,
    port: u16,
    tls: bool,
    child: Option<Child>,
}

/// The server's own certificate and the CA that signed it.
struct ServerPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn server_pki() -> ServerPki {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let (ca, ca_key) = new_ca("surveyd test database CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    ServerPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn new_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// `name` on PATH or in the sbin directories, where Debian puts mariadbd.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file());
    found
}

impl MariaDb {
    /// A fresh server with the Kopano schema, ready for connections; `None`
    /// (after a loud SKIP, or a failure under CI) when MariaDB is not
    /// installed.
    fn start(pki: Option<&ServerPki>) -> Option<MariaDb> {
        let (Some(mariadbd), Some(install_db)) =
            (find_program("mariadbd"), find_program("mariadb-install-db"))
        else {
            skip("mariadbd or mariadb-install-db not found; run .ci/mariadb.sh to install MariaDB");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // Its own tmpdir too: the server's scratch files stay with it.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(server_tuning());
        if is_root() {
            install.arg("--user=root");
        }
        let out = install.output().unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::fs::write(dir.path().join("init.sql"), schema_sql()).unwrap();
        if let Some(pki) = pki {
            std::fs::write(dir.path().join("server.pem"), &pki.cert_pem).unwrap();
            std::fs::write(dir.path().join("server.key"), &pki.key_pem).unwrap();
        }
        let mut db = MariaDb {
            dir,
            mariadbd,
            port: free_port(),
            tls: pki.is_some(),
            child: None,
        };
        db.run();
        Some(db)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("mysqld.sock")
    }

    /// Starts mariadbd on the existing data dir and waits until it greets
    /// a client on its socket.
    fn run(&mut self) {
        let mut cmd = Command::new(&self.mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.path("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--tmpdir={}", self.path("tmp").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            // Grants name 127.0.0.1 and localhost literally.
            .arg("--skip-name-resolve")
            .arg(format!(
                "--pid-file={}",
                self.path("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", self.path("error.log").display()))
            .arg("--general-log=1")
            .arg(format!(
                "--general-log-file={}",
                self.path("general.log").display()
            ))
            .arg(format!("--init-file={}", self.path("init.sql").display()))
            .args(server_tuning())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.tls {
            cmd.arg(format!("--ssl-cert={}", self.path("server.pem").display()))
                .arg(format!("--ssl-key={}", self.path("server.key").display()));
        }
        if is_root() {
            cmd.arg("--user=root");
        }
        // If the test thread dies without unwinding, the server goes too.
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe
        // and allocates nothing, as pre_exec requires.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        self.child = Some(cmd.spawn().unwrap());
        self.wait_ready();
    }

    /// Ready means the server sent its handshake (protocol version 10) on
    /// the socket, which it does only after the init file has run.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mariadbd exited with {status}: {}",
                    std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
                );
            }
            if let Ok(mut stream) = UnixStream::connect(self.socket()) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut greeting = [0u8; 5];
                if stream.read_exact(&mut greeting).is_ok() && greeting[4] == 10 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready: {}",
                std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server by its pid and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + PATIENCE;
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn general_log(&self) -> String {
        std::fs::read_to_string(self.path("general.log")).unwrap_or_default()
    }

    /// `mysql_*` lines for TCP to this server.
    fn tcp_lines(&self, user: &str, password: &str) -> String {
        format!(
            "mysql_host = 127.0.0.1\nmysql_port = {}\nmysql_user = {user}\nmysql_password = {password}\nmysql_database = kopano\n",
            self.port
        )
    }

    /// `mysql_*` lines for the unix socket, the way Kopano is usually set up.
    fn socket_lines(&self) -> String {
        format!(
            "mysql_host = localhost\nmysql_socket = {}\nmysql_user = kopano\nmysql_password = {PASSWORD}\nmysql_database = kopano\n",
            self.socket().display()
        )
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Small and quick: a test server holds a few dozen rows.
fn server_tuning() -> [&'static str; 3] {
    [
        "--innodb-buffer-pool-size=16M",
        "--innodb-log-file-size=4M",
        "--innodb-flush-log-at-trx-commit=0",
    ]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// surveyd.cfg for a Kopano host: the scratch paths, the database as the
/// facts source and no static GUID, so the database's one is used.
fn write_config(install: &Install, url: &str, extra: &str) {
    let text = format!(
        "surveyclient_url = {url}\n\
         surveyclient_machine_id_file = {}\n\
         surveyclient_audit_log = {}\n\
         surveyclient_state_dir = {}\n\
         surveyclient_program_name = kopano-server\n\
         surveyclient_timeout = 10\n\
         surveyclient_start_delay = 0\n\
         surveyclient_facts = kopano-mysql\n\
         {extra}",
        install.path("machine-id").display(),
        install.audit_log().display(),
        install.path("state").display(),
    );
    std::fs::write(install.config_path(), text).unwrap();
    install.consent_to_upload(url);
}

/// Runs `surveyd preview` (debug logging), which must succeed; returns the
/// payload and everything the program wrote.
fn preview(install: &Install) -> (serde_json::Value, String) {
    let out = install
        .command(&["preview"])
        .env("SURVEYD_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success(), "preview failed: {}", stderr(&out));
    let payload = serde_json::from_slice(&out.stdout).unwrap();
    (payload, format!("{}{}", stdout(&out), stderr(&out)))
}

fn assert_database_facts(payload: &serde_json::Value) {
    let stats = &payload["stats"];
    for (name, count) in EXPECTED {
        assert_eq!(stats[name]["value"], count, "{name} in {stats}");
        assert_eq!(stats[name]["type"], "int", "{name}");
        assert_eq!(stats[name]["mode"], "gauge", "{name}");
    }
    assert_eq!(
        stats["server_guid_hash"]["value"],
        systemd_app_specific(GUID_HEX, APP_ID)
    );
}

fn assert_no_database_facts(payload: &serde_json::Value) {
    let stats = payload["stats"].as_object().unwrap();
    for (name, _) in EXPECTED {
        assert!(!stats.contains_key(name), "{name} is in {stats:?}");
    }
    assert!(
        !stats.contains_key("server_guid_hash"),
        "a made-up server GUID replaced the database's: {stats:?}"
    );
    // The rest of the report still goes out.
    assert!(stats.contains_key("machine_id_hash"), "{stats:?}");
    assert_eq!(stats["program_name"]["value"], "kopano-server");
}

/// Fails if the password or any form of the raw GUID occurs in `bytes`,
/// besides the machine id and the other raw ids of the harness.
fn assert_no_secrets(what: &str, bytes: &[u8]) {
    assert_no_raw_ids(what, bytes);
    assert_no_id(what, bytes, GUID_HEX, "the raw server GUID");
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    assert!(
        !text.contains(&PASSWORD.to_ascii_lowercase()),
        "{what} contains the database password"
    );
}

/// One client session in the server's general query log.
#[derive(Debug, Default)]
struct Session {
    connect: String,
    queries: Vec<String>,
    quit: bool,
}

/// The sessions of `user`, parsed from MariaDB's general log
/// (`[time\t]  ID Command\tArgument`).
fn sessions_of(log: &str, user: &str) -> Vec<Session> {
    let mut sessions: Vec<(String, Session)> = Vec::new();
    for line in log.lines() {
        let mut fields = line.split('\t').skip_while(|f| {
            let f = f.trim();
            f.is_empty() || f.split_whitespace().count() == 2 && f.contains(':')
        });
        let Some(head) = fields.next() else { continue };
        let argument = fields.collect::<Vec<_>>().join("\t");
        let mut words = head.split_whitespace();
        let (Some(id), Some(command)) = (words.next(), words.next()) else {
            continue;
        };
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match command {
            "Connect" if argument.starts_with(&format!("{user}@")) => {
                sessions.push((
                    id.to_string(),
                    Session {
                        connect: argument,
                        ..Session::default()
                    },
                ));
            }
            "Query" | "Quit" => {
                if let Some((_, session)) = sessions.iter_mut().rev().find(|(i, _)| i == id) {
                    if command == "Quit" {
                        session.quit = true;
                    } else {
                        session.queries.push(argument.trim().to_string());
                    }
                }
            }
            _ => {}
        }
    }
    sessions.into_iter().map(|(_, s)| s).collect()
}

#[test]
fn preview_shows_upstreams_counts_and_the_hashed_guid_over_tcp_and_socket() {
    let Some(db) = MariaDb::start(None) else {
        return;
    };
    let install = Install::new();
    for lines in [db.tcp_lines("kopano", PASSWORD), db.socket_lines()] {
        write_config(&install, "http://127.0.0.1:9/x", &lines);
        let (payload, output) = preview(&install);
        assert_database_facts(&payload);
        assert!(!output.contains("kopano-mysql:"), "{output}");
        assert_no_secrets("preview output", output.as_bytes());
    }
    // No GUID was generated in the state dir: the database has one.
    assert!(!install.path("state/server-guid").exists());
    let log = db.general_log();
    let via: Vec<String> = sessions_of(&log, "kopano")
        .into_iter()
        .map(|s| s.connect.rsplit(" using ").next().unwrap().to_string())
        .collect();
    assert_eq!(via, ["TCP/IP", "Socket"], "{log}");

    // Under `sha256` the hash is the one upstream's collector stores for
    // the GUID upstream sends: 32 uppercase hex digits.
    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &format!("{}surveyclient_id_hash = sha256\n", db.socket_lines()),
    );
    let (payload, output) = preview(&install);
    assert_eq!(
        payload["stats"]["server_guid_hash"]["value"],
        sha256_hex(GUID_HEX)
    );
    assert_no_secrets("preview output", output.as_bytes());
}

#[test]
fn each_report_reads_in_one_read_only_session_and_closes_it() {
    let Some(db) = MariaDb::start(None) else {
        return;
    };
    let install = Install::new();
    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &db.tcp_lines("kopano", PASSWORD),
    );
    preview(&install);
    preview(&install);

    // What is omitted is not even read: no GUID query ...
    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &format!(
            "{}surveyclient_omit = server_guid_hash\n",
            db.tcp_lines("kopano", PASSWORD)
        ),
    );
    let (payload, _) = preview(&install);
    assert_eq!(payload["stats"]["usercnt_active"]["value"], 4);
    assert!(payload["stats"].get("server_guid_hash").is_none());
    // ... and no connection at all when nothing from the database is wanted.
    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &format!(
            "{}surveyclient_omit = server_guid_hash {}\n",
            db.tcp_lines("kopano", PASSWORD),
            EXPECTED.map(|(name, _)| name).join(" ")
        ),
    );
    preview(&install);

    let log = db.general_log();
    let sessions = sessions_of(&log, "kopano");
    assert_eq!(sessions.len(), 3, "{log}");
    let full = [
        "START TRANSACTION READ ONLY",
        surveyd::daemon::facts::kopano_mysql::USER_COUNT_QUERY,
        surveyd::daemon::facts::kopano_mysql::SERVER_GUID_QUERY,
        "COMMIT",
    ];
    for (session, expected) in
        sessions
            .iter()
            .zip([&full[..], &full[..], &[full[0], full[1], full[3]]])
    {
        assert!(session.connect.contains("on kopano"), "{session:?}");
        assert_eq!(session.queries, expected, "{log}");
        assert!(session.quit, "connection not closed with COM_QUIT: {log}");
    }
    assert_eq!(
        surveyd::daemon::facts::kopano_mysql::USER_COUNT_QUERY,
        "SELECT COUNT(*), objectclass FROM users WHERE externid IS NOT NULL AND (objectclass & 4294901760) = 65536 GROUP BY objectclass"
    );
    assert_no_secrets("the server's query log", log.as_bytes());
}

#[test]
fn refused_login_or_missing_tables_are_logged_and_the_report_goes_out_without_database_facts() {
    let Some(db) = MariaDb::start(None) else {
        return;
    };
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    let wrong = "Wrong-pw-4Tz8";
    write_config(&install, &server.url, &db.tcp_lines("kopano", wrong));

    let (payload, output) = preview(&install);
    assert_no_database_facts(&payload);
    let expected = format!(
        "kopano-mysql: cannot connect to 127.0.0.1:{} as kopano: Access denied for user 'kopano'@'127.0.0.1' (using password: YES) (MySQL error 1045); its facts are left out",
        db.port
    );
    assert!(output.contains(&expected), "{output}");

    let out = install.run(&["send"]);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    let got = server.requests();
    assert_eq!(got.len(), 1);
    let sent: serde_json::Value = serde_json::from_slice(got[0].body()).unwrap();
    assert_no_database_facts(&sent);
    let audit = install.audit_text();
    let entry: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(entry["body"], sent);
    for (what, bytes) in [
        ("preview output", output.as_bytes()),
        ("send output", &[out.stdout, out.stderr].concat()[..]),
        ("the request", &got[0].raw[..]),
        ("the audit log", audit.as_bytes()),
    ] {
        assert_no_secrets(what, bytes);
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(wrong), "{what} contains the wrong password");
    }
    assert!(!install.path("state/server-guid").exists());

    // A database that is not Kopano's: the query fails, and says so.
    write_config(
        &install,
        &server.url,
        &format!(
            "{}mysql_database = other\n",
            db.tcp_lines("kopano", PASSWORD)
        ),
    );
    let (payload, output) = preview(&install);
    assert_no_database_facts(&payload);
    let expected = format!(
        "kopano-mysql: reading the user counts in database other at 127.0.0.1:{} failed: Table 'other.users' doesn't exist (MySQL error 1146); its facts are left out",
        db.port
    );
    assert!(output.contains(&expected), "{output}");
    assert_no_secrets("preview output", output.as_bytes());
}

#[test]
fn stopped_database_is_logged_and_the_daemon_keeps_reporting() {
    let Some(mut db) = MariaDb::start(None) else {
        return;
    };
    let server = stand_in(None, vec![Reply::Status(204)]);
    let install = Install::new();
    write_config(
        &install,
        &server.url,
        &format!(
            "{}surveyclient_interval = 1\n",
            db.tcp_lines("kopano", PASSWORD)
        ),
    );
    let stderr_path = install.path("daemon.err");
    let mut daemon = install
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let body = |i: usize| -> serde_json::Value {
        serde_json::from_slice(server.requests()[i].body()).unwrap()
    };
    // Waits for a report after the first `after` whose database facts are
    // present (or absent); returns its index.
    let wait_report = |after: usize, with_facts: bool| -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = server.requests().len();
            if let Some(i) = (after..got)
                .find(|&i| body(i)["stats"].get("usercnt_active").is_some() == with_facts)
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no such report among {got}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let first = wait_report(0, true);
    assert_database_facts(&body(first));

    db.stop();
    let seen = server.requests().len();
    let without = wait_report(seen, false);
    assert_no_database_facts(&body(without));
    // A one-shot preview says the same, and still succeeds.
    let (payload, output) = preview(&install);
    assert_no_database_facts(&payload);
    let refused = format!(
        "kopano-mysql: cannot connect to 127.0.0.1:{} as kopano: Connection refused",
        db.port
    );
    assert!(output.contains(&refused), "{output}");

    db.run();
    let seen = server.requests().len();
    let again = wait_report(seen.max(without + 1), true);
    assert_database_facts(&body(again));

    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM).unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read(&stderr_path).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains(&refused),
        "{}",
        String::from_utf8_lossy(&log)
    );
    assert_no_secrets("the daemon's log", &log);
    assert_no_secrets("the audit log", install.audit_text().as_bytes());
    for request in server.requests() {
        assert_no_secrets("a request", &request.raw);
    }
}

#[test]
fn tls_to_the_database_trusts_exactly_the_configured_ca() {
    let pki = server_pki();
    let Some(db) = MariaDb::start(Some(&pki)) else {
        return;
    };
    let install = Install::new();
    let ca = install.path("db-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (other_ca, _) = new_ca("somebody else's CA");
    let other = install.path("other-ca.pem");
    std::fs::write(&other, other_ca.pem()).unwrap();
    let tls_user = db.tcp_lines("kopano_tls", PASSWORD);

    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &format!("{tls_user}surveyclient_mysql_ssl_ca = {}\n", ca.display()),
    );
    let (payload, output) = preview(&install);
    assert_database_facts(&payload);
    assert_no_secrets("preview output", output.as_bytes());
    let out = install.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("surveyclient_mysql_ssl_ca = {}\n", ca.display())),
        "{}",
        stdout(&out)
    );

    // The account requires TLS, so the read above was encrypted: without
    // the setting the server refuses it.
    write_config(&install, "http://127.0.0.1:9/x", &tls_user);
    let (payload, output) = preview(&install);
    assert_no_database_facts(&payload);
    assert!(
        output.contains("as kopano_tls: Access denied for user 'kopano_tls'@'127.0.0.1'"),
        "{output}"
    );

    // A certificate from another CA is refused before the password is sent.
    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &format!(
            "{tls_user}surveyclient_mysql_ssl_ca = {}\n",
            other.display()
        ),
    );
    let (payload, output) = preview(&install);
    assert_no_database_facts(&payload);
    assert!(
        output.contains(&format!(
            "kopano-mysql: cannot connect to 127.0.0.1:{} as kopano_tls: TLS: ",
            db.port
        )) && output.contains("UnknownIssuer"),
        "{output}"
    );
    assert_no_secrets("preview output", output.as_bytes());

    // The server saw one encrypted session that read, one plain login it
    // refused, and nothing from the client that distrusted it.
    let log = db.general_log();
    let sessions = sessions_of(&log, "kopano_tls");
    assert_eq!(sessions.len(), 2, "{log}");
    assert!(sessions[0].connect.ends_with("using SSL/TLS"), "{log}");
    assert_eq!(sessions[0].queries.len(), 4, "{log}");
    assert!(sessions[1].connect.ends_with("using TCP/IP"), "{log}");
    assert!(sessions[1].queries.is_empty(), "{log}");
}

#[test]
fn real_kopano_server_2018_cfg_works_with_only_its_mysql_lines_changed() {
    let Some(db) = MariaDb::start(None) else {
        return;
    };
    let install = Install::new();
    let original = std::fs::read_to_string(kopano_fixture("server-2018.cfg")).unwrap();
    // mysql_host stays `localhost`, upstream's default: Kopano reaches its
    // database through mysql_socket.
    let replacements = [
        ("mysql_socket", db.socket().display().to_string()),
        ("mysql_user", "kopano".to_string()),
        ("mysql_password", PASSWORD.to_string()),
    ];
    let mut replaced = 0;
    let mut text: String = original
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            match replacements.iter().find(|(k, _)| *k == key) {
                Some((k, v)) => {
                    replaced += 1;
                    format!("{k}\t\t= {v}\n")
                }
                None => format!("{line}\n"),
            }
        })
        .collect();
    assert_eq!(replaced, replacements.len(), "the fixture changed");
    text.push_str(&format!(
        "surveyclient_url = http://127.0.0.1:9/x\n\
         surveyclient_machine_id_file = {}\n\
         surveyclient_audit_log = {}\n\
         surveyclient_state_dir = {}\n\
         surveyclient_facts = kopano-mysql\n",
        install.path("machine-id").display(),
        install.audit_log().display(),
        install.path("state").display(),
    ));
    std::fs::write(install.config_path(), text).unwrap();

    let out = install.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "warnings for a real server.cfg");
    let shown = stdout(&out);
    for line in [
        "mysql_host = localhost\n",
        "mysql_password = ********\n",
        "surveyclient_facts = kopano-mysql\n",
    ] {
        assert!(shown.contains(line), "{line:?} not in {shown}");
    }
    assert_no_secrets("check-config output", &out.stdout);

    let (payload, output) = preview(&install);
    assert_database_facts(&payload);
    let log = db.general_log();
    let sessions = sessions_of(&log, "kopano");
    assert_eq!(sessions.len(), 1, "{log}");
    assert!(sessions[0].connect.ends_with("using Socket"), "{log}");
    assert_eq!(payload["stats"]["userplugin"]["value"], "db");
    assert_eq!(payload["stats"]["attachment_storage"]["value"], "files");
    assert_no_secrets("preview output", output.as_bytes());
}

#[test]
fn a_database_that_never_answers_costs_at_most_surveyclient_timeout() {
    // Accepts connections and never says a word, like a hung server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                held.lock().unwrap().push(stream);
            }
        });
    }
    let install = Install::new();
    write_config(
        &install,
        "http://127.0.0.1:9/x",
        &format!(
            "mysql_host = 127.0.0.1\nmysql_port = {port}\nmysql_user = kopano\n\
             mysql_password = {PASSWORD}\nsurveyclient_timeout = 1\n"
        ),
    );
    let started = Instant::now();
    let (payload, output) = preview(&install);
    let took = started.elapsed();
    assert_no_database_facts(&payload);
    assert!(
        output.contains(&format!(
            "kopano-mysql: no answer from 127.0.0.1:{port} within 1 s; its facts are left out"
        )),
        "{output}"
    );
    assert!(took < Duration::from_secs(5), "preview took {took:?}");
    assert_eq!(held.lock().unwrap().len(), 1, "one connection per report");
    assert_no_secrets("preview output", output.as_bytes());
}
