//! Ingest end to end through the real binary, on SQLite and PostgreSQL:
//! both client generations land rows, raw identifiers are stored and
//! logged nowhere, upserts keep first_seen, every refusal changes nothing,
//! the rate limit answers 429, and TLS works.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use surveyd::collector::report::rfc3339;
use surveyd::wire::receipt::Kind;

const APP_MID: &str = "0f1e2d3c4b5a49788796a5b4c3d2e1f0";
const APP_GUID: &str = "a1b2c3d4e5f647089a1b2c3d4e5f6a7b";
// As kopano-server reads them: /etc/machine-id and its server GUID.
const RAW_MID: &str = "3d12f0c1a9b84e6d8c7b6a5f4e3d2c1b";
const RAW_GUID: &str = "5b7e9c1d-2f3a-4b5c-8d6e-7f8091a2b3c4";

#[test]
fn surveyd_payload_lands_a_row() {
    for_each_backend("surveyd_payload_lands_a_row", |backend| {
        let c = Collector::start(&backend);
        let body = surveyd_payload("app-v1", APP_MID, APP_GUID, "10.0.1", 12);
        let r = c.post(&body);
        let receipt = c.assert_receipt(&r, Kind::Stored, body.as_bytes());
        let rows = c.rows();
        assert_eq!(rows.len(), 1, "{}", backend.name());
        let row = &rows[0];
        assert_eq!(row["uid"], installation_uid(APP_MID, APP_GUID));
        assert_eq!(row["uid"], receipt.receipt.uid.as_str());
        assert_eq!(row["last_update"], rfc3339(receipt.receipt.time as i64));
        assert_eq!(row["machine_id_sha256"], APP_MID);
        assert_eq!(row["server_guid_sha256"], APP_GUID);
        assert_eq!(row["flags"], 2, "app-v1 ids are flagged");
        assert_eq!(row["usercnt_active"], 12);
        assert_eq!(row["usercnt_room"], 4);
        assert_eq!(row["program_version"], "10.0.1");
        assert_eq!(row["attachment_storage"], "files");
        assert_eq!(row["first_seen"], row["last_update"]);
        let (status, _) = c.stop();
        assert!(status.success());
    });
}

#[test]
fn upstream_raw_payload_is_hashed_and_stored_nowhere_raw() {
    for_each_backend("upstream_raw_payload", |backend| {
        let c = Collector::start(&backend);
        let body = upstream_payload(RAW_MID, RAW_GUID, 21);
        assert!(
            body.contains("\t\"stats\" : \n\t{"),
            "written as jsoncpp does"
        );
        let r = c.post(&body);
        let receipt = c.assert_receipt(&r, Kind::Stored, body.as_bytes());
        let rows = c.rows();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row["uid"], receipt.receipt.uid.as_str());
        assert_eq!(row["machine_id_sha256"], sha256_hex(RAW_MID));
        assert_eq!(row["server_guid_sha256"], sha256_hex(RAW_GUID));
        assert_eq!(
            row["uid"],
            installation_uid(&sha256_hex(RAW_MID), &sha256_hex(RAW_GUID))
        );
        assert_eq!(row["flags"], 1, "upstream raw ids hashed on ingest");
        assert_eq!(row["usercnt_active"], 21);

        let raw = [RAW_MID, RAW_GUID];
        let search = |what: &str, bytes: &[u8]| {
            for needle in raw {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{}: raw identifier found in {what}",
                    backend.name()
                );
            }
        };
        let scan_files = |when: &str| {
            if let Some(db) = backend.sqlite_path() {
                let mut seen = 0;
                for suffix in ["", "-wal", "-shm"] {
                    let path = format!("{}{suffix}", db.display());
                    if let Ok(bytes) = std::fs::read(&path) {
                        seen += 1;
                        search(&format!("{path} {when}"), &bytes);
                    }
                }
                assert!(seen >= 1, "database file exists");
            }
        };
        scan_files("while running");
        if let Backend::Postgres { .. } = backend {
            for needle in raw {
                let hits = backend.pg_query(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM installations t \
                     WHERE CAST(t AS TEXT) LIKE '%' || $1 || '%'",
                    &[needle],
                );
                assert_eq!(
                    hits[0][0].as_deref(),
                    Some("0"),
                    "raw id in a PostgreSQL row"
                );
            }
        }
        let (status, output) = c.stop();
        assert!(status.success());
        search("the collector's stdout/stderr (RUST_LOG=debug)", &output);
        scan_files("after stop");
    });
}

#[test]
fn second_report_keeps_first_seen_and_moves_last_update() {
    for_each_backend("second_report_keeps_first_seen", |backend| {
        let c = Collector::start(&backend);
        assert_eq!(c.post(&upstream_payload(RAW_MID, RAW_GUID, 5)).status, 200);
        let first = c.rows()[0].clone();
        // Timestamps have one-second resolution: wait for the clock to
        // pass the stored second before the next report.
        let stored = first_seen_unix(&first);
        let deadline = Instant::now() + PATIENCE;
        while unix_now() <= stored {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(c.post(&upstream_payload(RAW_MID, RAW_GUID, 6)).status, 200);
        let rows = c.rows();
        assert_eq!(rows.len(), 1, "{}: still one installation", backend.name());
        let second = &rows[0];
        assert_eq!(second["first_seen"], first["first_seen"]);
        assert!(
            second["last_update"].as_str().unwrap() > first["last_update"].as_str().unwrap(),
            "{first} -> {second}"
        );
        assert_eq!(
            second["usercnt_active"], 6,
            "facts follow the latest report"
        );
    });
}

fn first_seen_unix(row: &serde_json::Value) -> i64 {
    let t = humantime::parse_rfc3339(row["first_seen"].as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn every_refused_request_leaves_the_table_unchanged() {
    for_each_backend("refused_requests_change_nothing", |backend| {
        let c = Collector::start_with(
            &backend,
            Options {
                extra: "max_body_bytes = 2048\n[rate_limit]\nenabled = false\n",
                ..Options::default()
            },
        );
        assert_eq!(c.post(&upstream_payload(RAW_MID, RAW_GUID, 5)).status, 200);
        let before = c.rows();
        let json = ("Content-Type", "application/json");
        let marker = ("X-Kopano-Stats-Request", "1");
        let other = upstream_payload("ffffffffffffffffffffffffffffffff", RAW_GUID, 9);
        let too_many = other.replace("\"value\" : 9", "\"value\" : 1000000001");
        let wrong_version = other.replace("\"version\" : 2", "\"version\" : 3");
        let big = format!("{}{}", " ".repeat(4096), other);
        let case =
            |what, want, method, path, headers: &[(&'static str, &'static str)], body: String| {
                Refusal {
                    what,
                    want,
                    method,
                    path,
                    headers: headers.to_vec(),
                    body,
                }
            };
        let cases = [
            case(
                "malformed JSON",
                400,
                "POST",
                SUBMIT,
                &[json, marker],
                other[..other.len() / 2].to_owned(),
            ),
            case(
                "missing X-Kopano-Stats-Request",
                400,
                "POST",
                SUBMIT,
                &[json],
                other.clone(),
            ),
            case(
                "wrong version",
                400,
                "POST",
                SUBMIT,
                &[json, marker],
                wrong_version,
            ),
            case(
                "count out of range",
                400,
                "POST",
                SUBMIT,
                &[json, marker],
                too_many,
            ),
            case("GET", 405, "GET", SUBMIT, &[marker], String::new()),
            case(
                "wrong path",
                404,
                "POST",
                "/api/stats/v2/submit",
                &[json, marker],
                other.clone(),
            ),
            case(
                "wrong content type",
                415,
                "POST",
                SUBMIT,
                &[("Content-Type", "text/plain"), marker],
                other.clone(),
            ),
            case("too large", 413, "POST", SUBMIT, &[json, marker], big),
        ];
        for Refusal {
            what,
            want,
            method,
            path,
            headers,
            body,
        } in cases
        {
            let r = c.request(method, path, &headers, body.as_bytes());
            assert_eq!(r.status, want, "{} {what}: {r:?}", backend.name());
            if want == 400 {
                assert_eq!(r.body.trim().lines().count(), 1, "one-line reason: {r:?}");
            }
            assert_eq!(
                c.rows(),
                before,
                "{} {what} changed the table",
                backend.name()
            );
        }
        let r = c.request(
            "POST",
            SUBMIT,
            &[json, marker],
            &upstream_payload(RAW_MID, RAW_GUID, 1_000_000_001).into_bytes(),
        );
        assert!(
            r.body.contains("usercnt_active"),
            "reason names the field: {r:?}"
        );
    });
}

struct Refusal {
    what: &'static str,
    want: u16,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    for_each_backend("rate_limit_answers_429", |backend| {
        let c = Collector::start_with(
            &backend,
            Options {
                extra: "[rate_limit]\nper_second = 0.01\nburst = 2\n",
                ..Options::default()
            },
        );
        let body = surveyd_payload(
            "sha256",
            &sha256_hex(RAW_MID),
            &sha256_hex(RAW_GUID),
            "1",
            1,
        );
        assert_eq!(c.post(&body).status, 200);
        assert_eq!(c.post(&body).status, 200);
        let r = c.post(&body);
        assert_eq!(r.status, 429, "{r:?}");
        assert!(
            r.headers.to_ascii_lowercase().contains("retry-after: "),
            "{r:?}"
        );
        assert_eq!(c.rows().len(), 1);
    });
}

#[test]
fn tls_listener_accepts_reports() {
    let backend = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let extra = format!(
        "[rate_limit]\nenabled = false\n[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let c = Collector::start_with(
        &backend,
        Options {
            extra: &extra,
            ..Options::default()
        },
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(c.addr).unwrap();
    let body = surveyd_payload("app-v1", APP_MID, APP_GUID, "1", 1);
    let r = http_exchange(
        rustls::StreamOwned::new(conn, tcp),
        "POST",
        SUBMIT,
        &[
            ("Content-Type", "application/json"),
            ("X-Kopano-Stats-Request", "1"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(c.rows().len(), 1);
}
