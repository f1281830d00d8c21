//! The HTTP side of ingest: the accept loop (plain or TLS, HTTP/1.1 with
//! keep-alive, graceful close on shutdown) and the request handler that
//! turns a POST into a stored report or a precise 4xx. Handlers log nothing
//! about a request: no address, no body, no identifier.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::config::{Config, STANDARD_PATH};
use super::ingest::parse_report;
use super::ratelimit::RateLimiter;
use super::store::WriterHandle;

/// A client that opens a connection must finish its headers, its TLS
/// handshake and its body within these.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish their request on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits a SIGHUP may change while connections stay open.
pub struct Limits {
    paths: Vec<String>,
    max_body_bytes: usize,
    rate: Option<RateLimiter>,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
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
        }
    }
}

/// State shared by every connection.
pub struct Ingest {
    limits: RwLock<Arc<Limits>>,
    tls: RwLock<Option<TlsAcceptor>>,
    writer: WriterHandle,
    pub stored: AtomicU64,
    pub refused: AtomicU64,
}

impl Ingest {
    pub fn new(config: &Config, tls: Option<TlsAcceptor>, writer: WriterHandle) -> Ingest {
        Ingest {
            limits: RwLock::new(Arc::new(Limits::from_config(config))),
            tls: RwLock::new(tls),
            writer,
            stored: AtomicU64::new(0),
            refused: AtomicU64::new(0),
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

    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }
}

/// Accept connections until `shutdown` turns true, then give open ones
/// [`DRAIN_TIMEOUT`] to finish their current request.
pub async fn accept_loop(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let tls = ingest.tls.read().expect("tls lock").clone();
                    connections.spawn(serve_connection(
                        stream,
                        tls,
                        ingest.clone(),
                        peer.ip(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
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

async fn serve_connection(
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    ingest: Arc<Ingest>,
    peer: IpAddr,
    shutdown: watch::Receiver<bool>,
) {
    match tls {
        None => serve_http(TokioIo::new(stream), ingest, peer, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_http(TokioIo::new(stream), ingest, peer, shutdown).await,
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
    ingest: Arc<Ingest>,
    peer: IpAddr,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(ingest.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
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
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // The peer address stays out of the log: addresses are never recorded.
    tracing::debug!("request {} {}", req.method(), req.uri().path());
    let resp = respond(&ingest, peer, req).await;
    let counter = if resp.status() == StatusCode::NO_CONTENT {
        &ingest.stored
    } else {
        &ingest.refused
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(resp)
}

async fn respond(ingest: &Ingest, peer: IpAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let limits = ingest.limits.read().expect("limits lock").clone();
    if !limits.paths.iter().any(|p| p == req.uri().path()) {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::POST {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only POST is allowed here");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    if let Some(rate) = &limits.rate {
        if let Err(wait) = rate.check(peer, Instant::now()) {
            let mut resp = text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
            let secs = wait.0.as_secs() + u64::from(wait.0.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
    }
    if req
        .headers()
        .get("x-kopano-stats-request")
        .is_none_or(|v| v.as_bytes() != b"1")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "missing header X-Kopano-Stats-Request: 1",
        );
    }
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let too_large = || {
        text(
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
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    let body = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "could not read the request body"),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body too slow"),
    };
    let report = match parse_report(&body) {
        Ok(r) => r,
        Err(reason) => return text(StatusCode::BAD_REQUEST, &reason.0),
    };
    drop(body);
    match ingest.writer.submit(report).await {
        Ok(()) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Err(_) => {
            // The writer already logged why; the client retries later.
            let mut resp = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the report could not be stored; try again later",
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("60"));
            resp
        }
    }
}

/// `application/json`, any case, parameters such as charset allowed.
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = v.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
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
