//! The collector under hostile clients, through the real binary: idle
//! connections from one address, a process out of file descriptors, big
//! bodies held open, compressed or duplicate-keyed payloads, formula and
//! bidi text, keep-alive clients refused early, a second collector on the
//! same SQLite file, and Kopano's GUID-less Go clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const RAW_MID: &str = "7c4d2e1f0a9b48c7b6a5f4e3d2c1b0a9";
const RAW_GUID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
/// BLAKE2b-256 of the empty string, what ksurveyclient-go sends without a GUID.
const GO_NO_GUID: &str = "0E5751C026E543B2E8AB2EB06099DAA1D1E5DF47778F7787FAAB45CDF12FE3A8";
/// How long a client waits for an answer before the test calls it a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fn with_timeout(stream: TcpStream) -> TcpStream {
    stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    stream
}

fn post_from(source: &str, c: &Collector, body: &str) -> Response {
    http_exchange(
        with_timeout(connect_from(source, c.addr)),
        "POST",
        SUBMIT,
        &[
            ("Content-Type", "application/json"),
            ("X-Kopano-Stats-Request", "1"),
        ],
        body.as_bytes(),
    )
}

fn report_body(n: usize) -> String {
    upstream_payload(&format!("{n:032x}"), RAW_GUID, 1)
}

/// Among `conns`, those that were answered (the collector shed them with a
/// 503 and closed); the rest are still held open. Only meaningful once
/// the collector has answered a connection made after all of them, as it
/// accepts in order and sheds at accept.
fn answered(conns: &mut [TcpStream]) -> (usize, usize) {
    let mut shed = 0;
    for conn in conns.iter_mut() {
        conn.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    text.starts_with("HTTP/1.1 503 ") && text.contains("Connection: close"),
                    "a shed connection gets a 503: {text:?}"
                );
                shed += 1;
            }
            Ok(_) => panic!("a connection was closed without an answer"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading a held connection: {e}"),
        }
    }
    (shed, conns.len() - shed)
}

#[test]
fn idle_connections_past_the_per_source_cap_are_shed_and_another_source_is_served() {
    let backend = Backend::sqlite();
    let c = Collector::start_with(
        &backend,
        Options {
            extra: "max_connections_per_source = 20\n[rate_limit]\nenabled = false\n",
            ..Options::default()
        },
    );
    let mut idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(c.addr).unwrap())
        .collect();
    let r = post_from("127.0.0.2", &c, &report_body(1));
    assert_eq!(r.status, 200, "another source is served: {r:?}");
    assert_eq!(answered(&mut idle), (40, 20), "(shed, held)");
    drop(idle);
    // The slots come back once the idle clients leave.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = post_from("127.0.0.1", &c, &report_body(2));
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.rows().len(), 2);
}

#[test]
fn with_few_file_descriptors_one_source_cannot_exhaust_them() {
    let backend = Backend::sqlite();
    // 160 descriptors: the caps are fitted to 96 in all, 48 per source.
    let c = Collector::start_with(
        &backend,
        Options {
            nofile: Some(160),
            ..Options::default()
        },
    );
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(c.addr).unwrap())
        .collect();
    let r = post_from("127.0.0.2", &c, &report_body(1));
    assert_eq!(r.status, 200, "another source is served: {r:?}");
    assert_eq!(answered(&mut idle), (252, 48), "(shed, held)");
    drop(idle);
    let (status, output) = c.stop();
    assert!(status.success());
    let log = String::from_utf8_lossy(&output);
    assert!(
        log.contains("max_connections lowered from 8192 to 96"),
        "the fitted cap is logged: {log}"
    );
    assert!(
        !log.contains("Too many open files") && !log.contains("accepting a connection failed"),
        "the collector never ran out of descriptors: {log}"
    );
}

/// Headers and the first `sent` bytes of a `body` on a keep-alive
/// connection.
fn start_upload(c: &Collector, body: &[u8], sent: usize) -> TcpStream {
    let mut s = with_timeout(TcpStream::connect(c.addr).unwrap());
    let head = format!(
        "POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-Kopano-Stats-Request: 1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..sent]).unwrap();
    s
}

fn read_head(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            other => panic!(
                "no complete response head ({other:?}): {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    String::from_utf8(raw).unwrap()
}

#[test]
fn bodies_past_the_memory_budget_get_503_and_memory_stays_bounded() {
    let backend = Backend::sqlite();
    let c = Collector::start_with(
        &backend,
        Options {
            // Room for 16 bodies of the 64 KiB limit.
            extra: "max_body_memory_bytes = 1048576\n[rate_limit]\nenabled = false\n",
            ..Options::default()
        },
    );
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let mut b = report_body(i).into_bytes();
            b.resize(65536, b' ');
            b
        })
        .collect();
    let mut uploads: Vec<(usize, TcpStream)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (i, start_upload(&c, b, 1000)))
        .collect();
    for (_, s) in &uploads {
        s.set_nonblocking(true).unwrap();
    }
    // Wait until every upload the budget has no room for was refused.
    let mut refused = 0;
    let deadline = Instant::now() + PATIENCE;
    while refused < 24 {
        assert!(Instant::now() < deadline, "only {refused} refused");
        let mut still = Vec::new();
        for (i, mut s) in uploads {
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    assert!(text.starts_with("http/1.1 503 "), "{text}");
                    assert!(text.contains("retry-after: "), "{text}");
                    assert!(text.contains("connection: close"), "{text}");
                    refused += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still.push((i, s)),
                other => panic!("upload {i}: {other:?}"),
            }
        }
        uploads = still;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(uploads.len(), 16, "the budget holds 16 bodies");
    for (i, s) in &mut uploads {
        s.set_nonblocking(false).unwrap();
        s.write_all(&bodies[*i][1000..]).unwrap();
        let head = read_head(s);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    }
    assert_eq!(c.rows().len(), 16);
    let rss = c.rss_kib();
    assert!(rss < 96 * 1024, "VmRSS {rss} KiB");
    let r = c.post(&report_body(99));
    assert_eq!(r.status, 200, "the budget is free again: {r:?}");
}

#[test]
fn csv_defuses_formulas_and_bidi_text_is_refused() {
    for_each_backend("csv_formulas_bidi", |backend| {
        let c = Collector::start(&backend);
        let formula = "=HYPERLINK(\"http://evil.example/\",\"update\")";
        let body = upstream_payload(RAW_MID, RAW_GUID, 4)
            .replace("\"8.7.80\"", &serde_json::to_string(formula).unwrap());
        assert_eq!(c.post(&body).status, 200, "{}", backend.name());
        let csv = run_cli(&c.config_path, &["report", "--format", "csv"]);
        assert!(csv.status.success(), "{}", csv.stderr);
        assert!(
            csv.stdout
                .contains("\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"update\"\")\""),
            "{}: {}",
            backend.name(),
            csv.stdout
        );
        let before = c.rows();
        for bad in [
            "Debian \u{202E}gpj.exe",
            "Debian\u{2028}fake row",
            "Debian\u{2066}x",
        ] {
            let body = upstream_payload("0123456789abcdef0123456789abcdef", RAW_GUID, 4).replace(
                "\"Debian GNU/Linux 10 (buster)\"",
                &serde_json::to_string(bad).unwrap(),
            );
            let r = c.post(&body);
            assert_eq!(r.status, 400, "{}: {r:?}", backend.name());
            assert!(
                r.body.contains("stats.osrelease: contains control"),
                "{r:?}"
            );
        }
        assert_eq!(c.rows(), before, "{}: nothing stored", backend.name());
    });
}

#[test]
fn compressed_bodies_are_answered_415() {
    let backend = Backend::sqlite();
    let c = Collector::start(&backend);
    let body = report_body(1);
    for encoding in ["gzip", "deflate", "br"] {
        let r = c.request(
            "POST",
            SUBMIT,
            &[
                ("Content-Type", "application/json"),
                ("X-Kopano-Stats-Request", "1"),
                ("Content-Encoding", encoding),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 415, "Content-Encoding: {encoding}: {r:?}");
    }
    let mut s = with_timeout(TcpStream::connect(c.addr).unwrap());
    let chunked = format!(
        "POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-Kopano-Stats-Request: 1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    s.write_all(chunked.as_bytes()).unwrap();
    let head = read_head(&mut s);
    assert!(
        head.starts_with("HTTP/1.1 415 "),
        "Transfer-Encoding: gzip: {head}"
    );
    let r = c.request(
        "POST",
        SUBMIT,
        &[
            ("Content-Type", "application/json"),
            ("X-Kopano-Stats-Request", "1"),
            ("Content-Encoding", "identity"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "identity is no encoding: {r:?}");
    assert_eq!(c.rows().len(), 1);
}

#[test]
fn duplicate_keys_anywhere_are_refused_and_nothing_is_stored() {
    for_each_backend("duplicate_keys", |backend| {
        let c = Collector::start(&backend);
        let mid = format!(r#""machine_id":{{"type":"string","value":"{RAW_MID}"}}"#);
        for body in [
            // Inside one stat entry: last-wins would store "8.7.80".
            format!(
                r#"{{"version":2,"stats":{{{mid},"program_version":{{"type":"string","value":"1","value":"8.7.80"}}}}}}"#
            ),
            format!(r#"{{"version":2,"stats":{{{mid},"x":{{}},"x":{{}}}}}}"#),
            format!(r#"{{"version":2,"version":2,"stats":{{{mid}}}}}"#),
            format!(r#"{{"version":2,"stats":{{{mid}}},"stats":{{{mid}}}}}"#),
        ] {
            let r = c.post(&body);
            assert_eq!(r.status, 400, "{}: {body}: {r:?}", backend.name());
            assert!(r.body.contains("duplicate key"), "{r:?}");
        }
        assert!(c.rows().is_empty(), "{}: nothing stored", backend.name());
    });
}

#[test]
fn refusals_before_the_body_tell_keep_alive_clients_the_connection_closes() {
    let backend = Backend::sqlite();
    let c = Collector::start_with(
        &backend,
        Options {
            extra: "max_body_bytes = 2048\n[rate_limit]\nenabled = false\n",
            ..Options::default()
        },
    );
    for (what, head, want) in [
        (
            "wrong path",
            "POST /elsewhere HTTP/1.1\r\nContent-Length: 5000\r\n",
            404,
        ),
        (
            "too large",
            "POST /api/stats/v1/submit HTTP/1.1\r\nContent-Type: application/json\r\n\
             X-Kopano-Stats-Request: 1\r\nContent-Length: 5000\r\n",
            413,
        ),
        (
            "no marker",
            "POST /api/stats/v1/submit HTTP/1.1\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n",
            400,
        ),
        (
            "wrong type",
            "POST /api/stats/v1/submit HTTP/1.1\r\nContent-Type: text/plain\r\n\
             X-Kopano-Stats-Request: 1\r\nContent-Length: 100\r\n",
            415,
        ),
    ] {
        let mut s = with_timeout(TcpStream::connect(c.addr).unwrap());
        s.write_all(format!("{head}Host: x\r\n\r\n").as_bytes())
            .unwrap();
        let answer = read_head(&mut s);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want} ")),
            "{what}: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{what}: {answer}"
        );
    }
}

#[test]
fn a_second_collector_on_the_same_sqlite_file_exits_with_a_clear_message() {
    let backend = Backend::sqlite();
    let first = Collector::start(&backend);
    let second = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&first.config_path)
        .arg("serve")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = wait_for_exit(
        second,
        "a second collector kept running on the same database",
    );
    assert_eq!(status.code(), Some(69), "EX_UNAVAILABLE: {err}");
    assert!(
        err.contains("is in use by another running `surveyd-collector serve`"),
        "{err}"
    );
    assert_eq!(
        first.post(&report_body(1)).status,
        200,
        "the first keeps serving"
    );
    let (status, _) = first.stop();
    assert!(status.success());
    // Once the first has stopped, the file is free again.
    let again = Collector::start(&backend);
    assert_eq!(again.rows().len(), 1);
}

#[test]
fn go_clients_placeholder_guid_is_stored_as_no_guid() {
    for_each_backend("go_no_guid", |backend| {
        let c = Collector::start(&backend);
        let r = c.post(&upstream_payload(RAW_MID, GO_NO_GUID, 3));
        assert_eq!(r.status, 200, "{}: {r:?}", backend.name());
        let rows = c.rows();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row["server_guid_sha256"], serde_json::Value::Null);
        assert_eq!(row["flags"], 1 | 16, "upstream raw ids, no server GUID");
        assert_eq!(row["uid"], installation_uid(&sha256_hex(RAW_MID), ""));
        assert_ne!(
            row["server_guid_sha256"],
            sha256_hex(GO_NO_GUID),
            "{}",
            backend.name()
        );
    });
}
