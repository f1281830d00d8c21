//! The HTTP side of ingest: the accept loop (plain or TLS, HTTP/1.1 with
//! keep-alive, graceful close on shutdown) and the request handler that
//! turns a POST into a stored report or a deletion, answered with a signed
//! receipt, or into a precise 4xx. Handlers log nothing about a request:
//! no address, no body, no identifier, no secret.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    TRANSFER_ENCODING,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::config::{Config, STANDARD_PATH};
use super::dashboard::serve::{Listener, Pages};
use super::ingest::{is_lower_hex64, parse_report, Rejection};
use super::limits::{BodyBudget, ConnectionCaps, Connections, Shed, Slot};
use super::ratelimit::RateLimiter;
use super::receipt_key::ReceiptKey;
use super::store::{Deletion, Done, Work, WriterHandle};
use crate::wire::{self, receipt::Kind};

/// A client that opens a connection must finish its headers, its TLS
/// handshake and its body within these.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish their request on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's per-connection read buffer grows up to this: request heads are
/// well under 1 KiB, and bodies pass through in chunks, so this bounds
/// what a connection that never finishes its head can make us hold.
const MAX_READ_BUFFER: usize = 16 * 1024;
/// Accept failures (out of file descriptors and the like) pause accepting
/// for 10 ms, doubling up to this, instead of spinning on the error.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// What a shed connection is told, if its socket takes it at once.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 10\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\n\r\n\
too many connections; try again later\n";

/// The limits a SIGHUP may change while connections stay open.
pub struct Limits {
    paths: Vec<String>,
    max_body_bytes: usize,
    rate: Option<RateLimiter>,
    caps: ConnectionCaps,
}

impl Limits {
    /// The limits `config` asks for, with the connection caps fitted to
    /// `nofile` (the open-file limit); each cap that had to be lowered is
    /// logged.
    pub fn from_config(config: &Config, nofile: u64) -> Limits {
        let (caps, notes) = ConnectionCaps::fit(
            config.max_connections,
            config.max_connections_per_source,
            nofile,
        );
        for note in notes {
            tracing::warn!("{note}");
        }
        let mut paths = vec![STANDARD_PATH.to_owned()];
        if config.path != STANDARD_PATH {
            paths.push(config.path.clone());
        }
        let rl = &config.rate_limit;
        Limits {
            paths,
            max_body_bytes: config.max_body_bytes,
            rate: rl
                .enabled
                .then(|| RateLimiter::new(rl.per_second, rl.burst)),
            caps,
        }
    }
}

/// State shared by every connection.
pub struct Ingest {
    limits: RwLock<Arc<Limits>>,
    tls: RwLock<Option<TlsAcceptor>>,
    writer: WriterHandle,
    pub connections: Arc<Connections>,
    bodies: BodyBudget,
    /// Signs every answer to a stored report or a deletion.
    key: ReceiptKey,
    pub stored: AtomicU64,
    pub deleted: AtomicU64,
    pub refused: AtomicU64,
    /// The dashboard and summary.json, when the service serves them.
    pub pages: Option<Arc<Pages>>,
}

impl Ingest {
    pub fn new(
        config: &Config,
        limits: Limits,
        tls: Option<TlsAcceptor>,
        writer: WriterHandle,
        key: ReceiptKey,
    ) -> Ingest {
        Ingest {
            limits: RwLock::new(Arc::new(limits)),
            tls: RwLock::new(tls),
            writer,
            connections: Connections::new(),
            bodies: BodyBudget::new(config.max_body_memory_bytes),
            key,
            stored: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            pages: None,
        }
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().expect("limits lock") = Arc::new(limits);
    }

    /// Swap in a new certificate; TLS can only be replaced, not switched
    /// on or off, while listening.
    pub fn set_tls(&self, acceptor: TlsAcceptor) {
        let mut tls = self.tls.write().expect("tls lock");
        if tls.is_some() {
            *tls = Some(acceptor);
        }
    }

    /// Give freed heap back to the system if a burst of bodies has passed.
    pub fn trim_if_idle(&self) {
        self.bodies.trim_if_idle();
    }

    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }
}

/// Accept connections until `shutdown` turns true, then give open ones
/// [`DRAIN_TIMEOUT`] to finish their current request. Both listeners share
/// the caps and the rate limit; `which` says what this one serves.
pub async fn accept_loop(
    listener: TcpListener,
    which: Listener,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if failures > 0 {
                        tracing::info!("accepting connections again after {failures} failures");
                        failures = 0;
                    }
                    let caps = ingest.limits.read().expect("limits lock").caps;
                    let tls = ingest.tls.read().expect("tls lock").clone();
                    match ingest.connections.admit(peer.ip(), caps) {
                        Ok(slot) => {
                            let _ = stream.set_nodelay(true);
                            // The admin listener speaks plain HTTP on
                            // loopback or behind the vendor's own proxy.
                            let tls = tls.filter(|_| which == Listener::Public);
                            connections.spawn(serve_connection(
                                stream,
                                slot,
                                tls,
                                which,
                                ingest.clone(),
                                peer.ip(),
                                shutdown.clone(),
                            ));
                        }
                        Err(why) => shed(stream, why, tls.is_some()),
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause, longer
                    // while it lasts, instead of spinning on the error;
                    // open connections keep being served meanwhile. One
                    // line per episode, not one per attempt.
                    if failures == 0 {
                        tracing::warn!(
                            "accepting a connection failed: {e}; pausing accepts until it works again"
                        );
                    }
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(10 << failures.min(7)).min(MAX_ACCEPT_BACKOFF);
                    tokio::time::sleep(pause).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "closing {} connections that did not finish in time",
            connections.len()
        );
        connections.shutdown().await;
    }
}

/// Turn away a connection over a cap at once: a plain-HTTP client gets a
/// 503 if its socket takes the bytes without waiting, then the connection
/// is closed. The source address is not logged.
fn shed(stream: TcpStream, why: Shed, tls: bool) {
    tracing::debug!("connection shed: {why:?} connection cap reached");
    if !tls {
        let _ = stream.try_write(SHED_RESPONSE);
    }
}

async fn serve_connection(
    stream: TcpStream,
    _slot: Slot,
    tls: Option<TlsAcceptor>,
    which: Listener,
    ingest: Arc<Ingest>,
    peer: IpAddr,
    shutdown: watch::Receiver<bool>,
) {
    match tls {
        None => serve_http(TokioIo::new(stream), which, ingest, peer, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_http(TokioIo::new(stream), which, ingest, peer, shutdown).await
                }
                // A failed handshake is the client's problem and says
                // nothing the vendor could act on.
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<I>(
    io: I,
    which: Listener,
    ingest: Arc<Ingest>,
    peer: IpAddr,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(ingest.clone(), which, peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}

/// A refusal sent before the request body was read: the connection closes
/// after it (hyper cannot reuse it with a body still unread), and says so,
/// so that a keep-alive client does not write its next request into a
/// closed socket.
fn early(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut resp = text(status, reason);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn text(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    ingest: Arc<Ingest>,
    which: Listener,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // The peer address stays out of the log: addresses are never recorded.
    tracing::debug!("request {} {}", req.method(), req.uri().path());
    if Pages::serves(which, req.uri().path()) {
        return Ok(respond_page(&ingest, which, peer, req).await);
    }
    let limits = ingest.limits.read().expect("limits lock").clone();
    let path = req.uri().path();
    let route = if limits.paths.iter().any(|p| p == path) {
        Some(Route::Submit)
    } else if path == wire::DELETE_PATH {
        Some(Route::Delete)
    } else {
        None
    };
    let resp = match route {
        Some(route) => respond(&ingest, &limits, route, peer, req).await,
        None => early(StatusCode::NOT_FOUND, "not found"),
    };
    let counter = match route {
        _ if resp.status() != StatusCode::OK => &ingest.refused,
        Some(Route::Delete) => &ingest.deleted,
        _ => &ingest.stored,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(resp)
}

/// The dashboard and summary.json, rate limited like reports; the body of
/// such a request is never read.
async fn respond_page(
    ingest: &Ingest,
    which: Listener,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(pages) = &ingest.pages else {
        return early(StatusCode::NOT_FOUND, "not found");
    };
    let limits = ingest.limits.read().expect("limits lock").clone();
    if let Some(resp) = rate_limited(&limits, peer) {
        return resp;
    }
    let mut resp = pages
        .respond(which, req.method(), req.uri(), req.headers())
        .await;
    if req.headers().contains_key(CONTENT_LENGTH) || req.headers().contains_key(TRANSFER_ENCODING) {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// 429 with Retry-After when `peer` is over its rate.
fn rate_limited(limits: &Limits, peer: IpAddr) -> Option<Response<Full<Bytes>>> {
    let wait = limits.rate.as_ref()?.check(peer, Instant::now()).err()?;
    let mut resp = early(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    let secs = wait.0.as_secs() + u64::from(wait.0.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    Some(resp)
}

/// What a request asks for: a report to store, or an installation's row
/// to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Submit,
    Delete,
}

/// Both routes share every check up to the body: method, rate limit,
/// header, content type, size, memory budget and time.
async fn respond(
    ingest: &Ingest,
    limits: &Limits,
    route: Route,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut resp = early(StatusCode::METHOD_NOT_ALLOWED, "only POST is allowed here");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    if let Some(resp) = rate_limited(limits, peer) {
        return resp;
    }
    if req
        .headers()
        .get(wire::STATS_REQUEST_HEADER)
        .is_none_or(|v| v.as_bytes() != wire::STATS_REQUEST_VALUE.as_bytes())
    {
        return early(
            StatusCode::BAD_REQUEST,
            "missing header X-Kopano-Stats-Request: 1",
        );
    }
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return early(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    // A compressed body would be parsed as if it were the JSON itself.
    if !codings_are(req.headers().get_all(CONTENT_ENCODING), &["identity"]) {
        return early(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding is not supported; send the JSON uncompressed",
        );
    }
    if !codings_are(req.headers().get_all(TRANSFER_ENCODING), &["chunked"]) {
        return early(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Transfer-Encoding other than chunked is not supported; send the JSON uncompressed",
        );
    }
    let too_large = || {
        early(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {} bytes", limits.max_body_bytes),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large();
    }
    // Memory for the body is reserved before a byte of it is read.
    let want = declared.map_or(limits.max_body_bytes, |n| n as usize);
    let Some(reservation) = ingest.bodies.reserve(want) else {
        let mut resp = early(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many request bodies in flight; try again later",
        );
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    };
    let body = Limited::new(req.into_body(), want);
    let body = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(_)) => return early(StatusCode::BAD_REQUEST, "could not read the request body"),
        Err(_) => return early(StatusCode::REQUEST_TIMEOUT, "request body too slow"),
    };
    // The receipt names the exact bytes received.
    let body_sha256 = wire::sha256_hex(&body);
    let parsed = match route {
        Route::Submit => parse_report(&body).map(Work::Store),
        Route::Delete => parse_deletion(&body).map(Work::Delete),
    };
    drop(body);
    drop(reservation);
    ingest.bodies.trim_if_idle();
    let work = match parsed {
        Ok(work) => work,
        Err(reason) => return text(StatusCode::BAD_REQUEST, &reason.0),
    };
    let uid = match &work {
        Work::Store(report) => report.uid.clone(),
        Work::Delete(deletion) => deletion.uid.clone(),
    };
    let (kind, time) = match ingest.writer.run(work).await {
        Ok(Done::Stored { time }) => (Kind::Stored, time),
        Ok(Done::Deleted { time }) => (Kind::Deleted, time),
        Ok(Done::NotProven) => {
            return text(
                StatusCode::FORBIDDEN,
                "the secret does not match this installation",
            )
        }
        Err(_) => {
            // The writer already logged why; the client retries later.
            let what = match route {
                Route::Submit => "the report could not be stored",
                Route::Delete => "the deletion could not be carried out",
            };
            let mut resp = text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{what}; try again later"),
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("60"));
            return resp;
        }
    };
    // Unix time from the writer's clock: never before 1970 on a running
    // system, and 0 rather than a panic if it were.
    let time = u64::try_from(time).unwrap_or(0);
    let signed = ingest.key.sign(kind, &uid, &body_sha256, time);
    let mut resp = Response::new(Full::new(Bytes::from(signed.to_json())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(wire::CONTENT_TYPE));
    resp
}

/// A deletion request's body: exactly `{"uid":HEX64,"secret":HEX64}`. The
/// refusal never quotes the body: it may hold a real secret.
fn parse_deletion(body: &[u8]) -> Result<Deletion, Rejection> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        uid: String,
        secret: String,
    }
    let shape =
        || Rejection("a deletion request is {\"uid\":HEX64,\"secret\":HEX64}, nothing else".into());
    let request: Request = serde_json::from_slice(body).map_err(|_| shape())?;
    if !is_lower_hex64(&request.uid) {
        return Err(Rejection("uid: must be 64 lowercase hex digits".into()));
    }
    let mut secret = [0u8; 32];
    if !is_lower_hex64(&request.secret)
        || hex::decode_to_slice(&request.secret, &mut secret).is_err()
    {
        return Err(Rejection("secret: must be 64 lowercase hex digits".into()));
    }
    Ok(Deletion {
        uid: request.uid,
        commitment: wire::deletion_commitment(&secret),
    })
}

/// Every coding listed in these headers is one of `allowed` (any case).
fn codings_are(values: hyper::header::GetAll<HeaderValue>, allowed: &[&str]) -> bool {
    values.iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .all(|c| allowed.iter().any(|a| c.eq_ignore_ascii_case(a)))
        })
    })
}

/// `application/json`, any case, parameters such as charset allowed.
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = v.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(wire::CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let ok = |s: &'static str| is_json(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
        assert!(!is_json(None));
    }
}
