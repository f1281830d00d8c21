//! A collector stand-in on loopback (plain, TLS or unix socket) that records
//! every request byte for byte and answers as the test scripts it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::SUBMIT;

/// What the stand-in collector answers.
#[derive(Clone)]
pub enum Reply {
    Status(u16),
    /// Status plus raw extra header lines (`Retry-After: 5`).
    StatusWith(u16, String),
    /// Read the request, then never answer.
    Hang,
}

/// One request as it arrived on the wire.
#[derive(Clone, Debug)]
pub struct Received {
    pub raw: Vec<u8>,
}

impl Received {
    pub fn head(&self) -> String {
        let end = find(&self.raw, b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }

    pub fn body(&self) -> &[u8] {
        let end = find(&self.raw, b"\r\n\r\n").unwrap();
        &self.raw[end + 4..]
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head().lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A collector stand-in on loopback, in its own thread. It records every
/// request byte for byte and answers each with the next scripted reply
/// (the last one repeats). It stops with the test process.
pub struct StandIn {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub url: String,
    /// TLS handshakes that failed (for the ssl_verify tests).
    pub handshake_failures: Arc<Mutex<u32>>,
}

impl StandIn {
    /// `127.0.0.1:PORT` of a TCP stand-in, as a proxy variable names it.
    pub fn address(&self) -> String {
        self.url.split('/').nth(2).unwrap().to_string()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (bounded).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn reply_bytes(reply: &Reply) -> Option<Vec<u8>> {
    let (status, extra) = match reply {
        Reply::Status(s) => (*s, String::new()),
        Reply::StatusWith(s, extra) => (*s, format!("{extra}\r\n")),
        Reply::Hang => return None,
    };
    Some(
        format!(
            "HTTP/1.1 {status} Whatever\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// Reads one HTTP/1.1 request (head plus Content-Length body).
fn read_request(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                return Some(raw);
            }
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return (!raw.is_empty()).then_some(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn serve_one(
    stream: &mut (impl Read + Write),
    replies: &Mutex<Vec<Reply>>,
    received: &Mutex<Vec<Received>>,
) {
    let Some(raw) = read_request(stream) else {
        return;
    };
    received.lock().unwrap().push(Received { raw });
    let reply = {
        let mut replies = replies.lock().unwrap();
        if replies.len() > 1 {
            replies.remove(0)
        } else {
            replies[0].clone()
        }
    };
    match reply_bytes(&reply) {
        Some(bytes) => {
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
        }
        None => std::thread::sleep(Duration::from_secs(30)),
    }
}

/// Starts a stand-in on 127.0.0.1: plain HTTP when `tls` is None.
pub fn stand_in(tls: Option<Arc<rustls::ServerConfig>>, replies: Vec<Reply>) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(0));
    let replies = Arc::new(Mutex::new(replies));
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let received = received.clone();
        let failures = failures.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(stream) = stream else { continue };
                let (received, failures, replies, tls) = (
                    received.clone(),
                    failures.clone(),
                    replies.clone(),
                    tls.clone(),
                );
                std::thread::spawn(move || {
                    handle(stream, tls, &replies, &received, &failures);
                });
            }
        });
    }
    StandIn {
        received,
        url: format!("{scheme}://127.0.0.1:{port}{SUBMIT}"),
        handshake_failures: failures,
    }
}

fn handle(
    mut stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    replies: &Mutex<Vec<Reply>>,
    received: &Mutex<Vec<Received>>,
    failures: &Mutex<u32>,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tls {
        None => serve_one(&mut stream, replies, received),
        Some(config) => {
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            while conn.is_handshaking() {
                if conn.complete_io(&mut stream).is_err() {
                    *failures.lock().unwrap() += 1;
                    return;
                }
            }
            let mut tls = rustls::StreamOwned::new(conn, stream);
            serve_one(&mut tls, replies, received);
        }
    }
}

/// Starts a stand-in on a unix socket at `path`.
pub fn unix_stand_in(path: &Path, replies: Vec<Reply>) -> StandIn {
    let listener = UnixListener::bind(path).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let replies = Arc::new(Mutex::new(replies));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(mut stream) = stream else { continue };
                serve_one(&mut stream, &replies, &received);
            }
        });
    }
    StandIn {
        received,
        url: format!("unix:{}", path.display()),
        handshake_failures: Arc::new(Mutex::new(0)),
    }
}
