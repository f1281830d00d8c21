//! Transport: one HTTP POST of a payload to the collector, over HTTPS
//! (rustls), plain HTTP or a unix socket, through the proxy the environment
//! names (`https_proxy`, `http_proxy`, `no_proxy`), bounded by one deadline
//! from name resolution to the last byte read.
//!
//! Each report opens its own connection: reports are an hour apart, so a
//! pool would only hold sockets open for nothing.
//!
//! Every failure names the step that failed and the peer it failed with
//! (resolver, proxy, collector), in words an admin can act on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONTENT_TYPE, HOST, PROXY_AUTHORIZATION, RETRY_AFTER, USER_AGENT,
};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::ConfigBuilderExt;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::daemon::settings::Endpoint;
use crate::wire;

/// How much of a success's body is read before the connection is dropped:
/// collectors answer with nothing or a short receipt, and one byte more
/// than a receipt may have is enough to tell that it is not one.
const MAX_RESPONSE_BODY: usize = wire::receipt::MAX_RECEIPT_BYTES + 1;

/// How much of a refusal's body is kept as its reason: enough for a
/// sentence, little enough for a log line and an audit entry.
pub const MAX_REASON_BYTES: usize = 512;

/// What the collector answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server's `Retry-After`, as a delay from now.
    pub retry_after: Option<Duration>,
    /// Why a non-2xx answer refused the report: the start of its text
    /// body, on one line, control and bidi characters escaped.
    pub reason: Option<String>,
    /// The proxy (`http://host:port`) the answer came through, which may
    /// have written it itself (a 502 when it cannot reach the collector).
    pub proxy: Option<String>,
    /// A 2xx answer's body (the collector's receipt, if any) as far as it
    /// arrived within the deadline, cut at [`MAX_RESPONSE_BODY`] bytes.
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `HTTP 400: the reason`, naming the proxy when there was one.
    pub fn describe(&self) -> String {
        let mut text = format!("HTTP {}", self.status);
        if let Some(proxy) = &self.proxy {
            text.push_str(&format!(" via proxy {proxy}"));
        }
        if let Some(reason) = &self.reason {
            text.push_str(": ");
            text.push_str(reason);
        }
        text
    }
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no complete answer within {} s (surveyclient_timeout): {stage}", .limit.as_secs())]
    Timeout { limit: Duration, stage: Stage },
    #[error("cannot resolve the collector's name {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("{proxy} failed: {reason}; check the proxy, or list the collector in no_proxy")]
    Proxy { proxy: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("bad collector URL {0}")]
    Url(String),
}

/// The step an exchange was in when its deadline passed.
#[derive(Debug)]
pub enum Stage {
    Resolve(String),
    Connect(String),
    Proxy { proxy: String, step: String },
    Tls(String),
    Answer,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Resolve(host) => write!(
                f,
                "name resolution of {host} did not finish: no DNS server answered \
                 (check the nameservers in /etc/resolv.conf)"
            ),
            Stage::Connect(target) => write!(
                f,
                "connecting to {target} did not finish (is a firewall dropping the packets?)"
            ),
            Stage::Proxy { proxy, step } => write!(f, "{proxy}: {step}"),
            Stage::Tls(host) => write!(f, "the TLS handshake with {host} did not finish"),
            Stage::Answer => f.write_str("the collector took the request but did not answer"),
        }
    }
}

/// The request that is about to go out.
pub struct Outgoing<'a> {
    pub endpoint: &'a Endpoint,
    pub body: Bytes,
    pub ssl_verify: bool,
    pub timeout: Duration,
}

/// One deadline for the whole exchange; each step runs under it so that a
/// timeout says which step hung. A lookup on tokio's blocking pool that
/// outlives it is abandoned, not waited for.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    async fn bound<T>(
        self,
        stage: Stage,
        step: impl std::future::Future<Output = Result<T, SendError>>,
    ) -> Result<T, SendError> {
        tokio::time::timeout_at(self.at, step)
            .await
            .unwrap_or(Err(SendError::Timeout {
                limit: self.limit,
                stage,
            }))
    }
}

/// The proxy the environment names for this request.
struct Proxy {
    host: String,
    port: u16,
    auth: Option<HeaderValue>,
    /// `proxy http://host:port (from https_proxy)`: never the credentials.
    name: String,
    /// `http://host:port`.
    address: String,
}

impl Proxy {
    fn new(intercept: &Intercept, https: bool) -> Proxy {
        let uri = intercept.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(80);
        let scheme = uri.scheme_str().unwrap_or("http");
        let address = format!("{scheme}://{host}:{port}");
        Proxy {
            name: format!("proxy {address} (from {})", proxy_variable(https)),
            address,
            host,
            port,
            auth: intercept.basic_auth().cloned(),
        }
    }

    fn failed(&self, reason: impl std::fmt::Display) -> SendError {
        SendError::Proxy {
            proxy: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The variable hyper-util's matcher took the proxy from, in its order.
fn proxy_variable(https: bool) -> &'static str {
    let specific: [&'static str; 2] = if https {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    specific
        .into_iter()
        .chain(["ALL_PROXY", "all_proxy"])
        .find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        .unwrap_or(if https { "https_proxy" } else { "http_proxy" })
}

/// Sends one report and waits, at most `timeout` from the first lookup,
/// for the status line and the (bounded) body.
pub async fn post(request: Outgoing<'_>) -> Result<Response, SendError> {
    let deadline = Deadline {
        at: Instant::now() + request.timeout,
        limit: request.timeout,
    };
    exchange(request, deadline).await
}

async fn exchange(request: Outgoing<'_>, deadline: Deadline) -> Result<Response, SendError> {
    let body = request.body.clone();
    let url = match request.endpoint {
        Endpoint::Unix { socket, path } => {
            let target = socket.display().to_string();
            let stream = deadline
                .bound(Stage::Connect(target.clone()), async {
                    UnixStream::connect(socket)
                        .await
                        .map_err(|err| SendError::Connect {
                            target,
                            reason: err.to_string(),
                        })
                })
                .await?;
            return send_over(stream, path, "localhost", None, body, deadline).await;
        }
        Endpoint::Http(url) | Endpoint::Https(url) => url,
    };
    let https = url.scheme() == "https";
    let uri: Uri = url
        .as_str()
        .parse()
        .map_err(|_| SendError::Url(url.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| SendError::Url(url.to_string()))?
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| SendError::Url(url.to_string()))?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let origin_form = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };

    let proxy = Matcher::from_env()
        .intercept(&uri)
        .map(|intercept| Proxy::new(&intercept, https));
    match (https, proxy) {
        (false, None) => {
            let tcp = connect_tcp(&host, port, deadline).await?;
            send_over(tcp, &origin_form, &authority, None, body, deadline).await
        }
        (false, Some(proxy)) => {
            // A plain-HTTP proxy gets the absolute URL as request target.
            let tcp = connect_tcp(&proxy.host, proxy.port, deadline)
                .await
                .map_err(|err| in_proxy_terms(err, &proxy))?;
            send_over(tcp, url.as_str(), &authority, Some(&proxy), body, deadline).await
        }
        (true, proxy) => {
            let target = format!("{host}:{port}");
            let tls = tls_config(request.ssl_verify).map_err(|reason| SendError::Tls {
                host: host.clone(),
                reason,
            })?;
            let server_name = server_name(url)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
            let io: Box<dyn Io> = match &proxy {
                None => Box::new(connect_tcp(&host, port, deadline).await?),
                Some(proxy) => Box::new(open_tunnel(proxy, &target, deadline).await?),
            };
            let stream = deadline
                .bound(Stage::Tls(host.clone()), async {
                    connector
                        .connect(server_name, io)
                        .await
                        .map_err(|err| SendError::Tls {
                            host: host.clone(),
                            reason: explain_tls_failure(&err),
                        })
                })
                .await?;
            send_over(stream, &origin_form, &authority, None, body, deadline).await
        }
    }
}

/// A byte stream TLS can run over: a TCP connection or a proxy's tunnel.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Resolves `host` (bounded: the lookup runs on a blocking thread that is
/// abandoned at the deadline) and connects to the first address that
/// accepts.
async fn connect_tcp(host: &str, port: u16, deadline: Deadline) -> Result<TcpStream, SendError> {
    // url keeps IPv6 literals in brackets; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = deadline
        .bound(Stage::Resolve(host.to_string()), async {
            tokio::net::lookup_host((bare, port))
                .await
                .map(Iterator::collect)
                .map_err(|err| SendError::Resolve {
                    host: host.to_string(),
                    reason: err.to_string(),
                })
        })
        .await?;
    let target = format!("{host}:{port}");
    deadline
        .bound(Stage::Connect(target.clone()), async {
            TcpStream::connect(addresses.as_slice())
                .await
                .map_err(|err| SendError::Connect {
                    target,
                    reason: err.to_string(),
                })
        })
        .await
}

/// Re-words a failure to reach the proxy so that the proxy, not the
/// collector, is named.
fn in_proxy_terms(err: SendError, proxy: &Proxy) -> SendError {
    match err {
        SendError::Timeout { limit, stage } => SendError::Timeout {
            limit,
            stage: Stage::Proxy {
                proxy: proxy.name.clone(),
                step: match stage {
                    Stage::Resolve(_) => "resolving its name did not finish".into(),
                    _ => "connecting to it did not finish".into(),
                },
            },
        },
        SendError::Resolve { reason, .. } => {
            proxy.failed(format_args!("cannot resolve its name: {reason}"))
        }
        SendError::Connect { reason, .. } => {
            proxy.failed(format_args!("cannot connect to it: {reason}"))
        }
        other => other,
    }
}

/// `CONNECT target` through the proxy; the tunnel then carries TLS
/// end-to-end, so the proxy never sees the payload.
async fn open_tunnel(
    proxy: &Proxy,
    target: &str,
    deadline: Deadline,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, SendError> {
    let tcp = connect_tcp(&proxy.host, proxy.port, deadline)
        .await
        .map_err(|err| in_proxy_terms(err, proxy))?;
    let stage = Stage::Proxy {
        proxy: proxy.name.clone(),
        step: format!("opening a tunnel to {target} did not finish"),
    };
    deadline
        .bound(stage, async {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|err| proxy.failed(err))?;
            let _driver = AbortOnDrop(tokio::spawn(connection.with_upgrades()));
            let mut builder = Request::connect(target).header(HOST, target);
            if let Some(auth) = &proxy.auth {
                builder = builder.header(PROXY_AUTHORIZATION, auth);
            }
            let request = builder
                .body(Empty::<Bytes>::new())
                .map_err(|err| SendError::Http(err.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| proxy.failed(format_args!("no answer to CONNECT: {err}")))?;
            let status = response.status();
            if !status.is_success() {
                let hint = if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
                    " (it wants credentials: give them in the proxy URL, \
                     http://user:password@host:port)"
                } else {
                    ""
                };
                return Err(proxy.failed(format_args!(
                    "it refused the tunnel to {target} with HTTP {}{hint}",
                    status_text(status)
                )));
            }
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|err| proxy.failed(format_args!("the tunnel broke: {err}")))?;
            Ok(TokioIo::new(upgraded))
        })
        .await
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn server_name(url: &url::Url) -> Result<ServerName<'static>, SendError> {
    let name = match url.host() {
        Some(url::Host::Domain(domain)) => ServerName::try_from(domain.to_string()).ok(),
        Some(url::Host::Ipv4(ip)) => Some(ServerName::IpAddress(std::net::IpAddr::V4(ip).into())),
        Some(url::Host::Ipv6(ip)) => Some(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
        None => None,
    };
    name.ok_or_else(|| SendError::Url(url.to_string()))
}

async fn send_over<S>(
    io: S,
    target: &str,
    host: &str,
    proxy: Option<&Proxy>,
    body: Bytes,
    deadline: Deadline,
) -> Result<Response, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = deadline
        .bound(Stage::Answer, async {
            hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|err| SendError::Http(err.to_string()))
        })
        .await?;
    let _driver = AbortOnDrop(tokio::spawn(connection));

    let mut builder = Request::post(target)
        .header(HOST, host)
        .header(CONTENT_TYPE, wire::CONTENT_TYPE)
        .header(wire::STATS_REQUEST_HEADER, wire::STATS_REQUEST_VALUE)
        .header(USER_AGENT, concat!("surveyd/", env!("CARGO_PKG_VERSION")));
    if let Some(auth) = proxy.and_then(|proxy| proxy.auth.as_ref()) {
        builder = builder.header(PROXY_AUTHORIZATION, auth);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|err| SendError::Http(err.to_string()))?;
    let waiting = match proxy {
        Some(proxy) => Stage::Proxy {
            proxy: proxy.name.clone(),
            step: "no answer came from it (or from the collector behind it)".into(),
        },
        None => Stage::Answer,
    };
    let response = deadline
        .bound(waiting, async {
            sender
                .send_request(request)
                .await
                .map_err(|err| match proxy {
                    Some(proxy) => proxy.failed(format_args!("no answer: {err}")),
                    None => SendError::Http(err.to_string()),
                })
        })
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    let textual = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_textual);
    let success = (200..300).contains(&status);
    // The status is in: whatever part of the body arrives before the
    // deadline is all that is read, and never more than a bounded prefix,
    // so an endless or trickling body costs neither memory nor time.
    let limit = if success {
        MAX_RESPONSE_BODY
    } else {
        MAX_REASON_BYTES + 1
    };
    let mut prefix = Vec::new();
    let _ = tokio::time::timeout_at(
        deadline.at,
        read_prefix(response.into_body(), limit, &mut prefix),
    )
    .await;
    let reason = (!success && textual)
        .then(|| reason_line(&prefix))
        .flatten();
    Ok(Response {
        status,
        retry_after,
        reason,
        proxy: proxy.map(|proxy| proxy.address.clone()),
        body: if success { prefix } else { Vec::new() },
    })
}

/// Reads the body into `into` until it holds `limit` bytes, the body ends
/// or fails; what arrived stays in `into` if the caller gives up waiting.
async fn read_prefix(mut body: Incoming, limit: usize, into: &mut Vec<u8>) {
    while into.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = limit - into.len();
                    into.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// Plain text and JSON are shown as a reason; an HTML error page is not.
fn is_textual(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        media.as_str(),
        "text/plain" | "application/json" | "application/problem+json"
    )
}

/// The first [`MAX_REASON_BYTES`] of a refusal's body as one line that is
/// safe in a log, a terminal and the audit log: control characters,
/// bidi overrides and line separators are escaped (`\n`, `\u{202e}`), and
/// a longer body ends in `…`.
pub fn reason_line(body: &[u8]) -> Option<String> {
    let cut = body.len() > MAX_REASON_BYTES;
    let mut kept = &body[..body.len().min(MAX_REASON_BYTES)];
    if cut {
        // Do not end on half a character.
        if let Err(err) = std::str::from_utf8(kept) {
            if err.error_len().is_none() {
                kept = &kept[..err.valid_up_to()];
            }
        }
    }
    let text = String::from_utf8_lossy(kept);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut line = one_line(text);
    if cut {
        line.push('…');
    }
    Some(line)
}

/// Text from the peer, made safe to show: control characters, bidi
/// overrides and line separators escaped (`\n`, `\u{202e}`).
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() || is_invisible_override(c) {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// webpki lists a certificate's names as `DnsName("example.org")` and
/// `IpAddress(192.0.2.1)`; the admin wants `example.org, 192.0.2.1`.
fn certificate_names(presented: &[String]) -> String {
    if presented.is_empty() {
        return "no name at all".to_string();
    }
    presented
        .iter()
        .map(|name| {
            let bare = name
                .strip_prefix("DnsName(\"")
                .and_then(|rest| rest.strip_suffix("\")"))
                .or_else(|| {
                    name.strip_prefix("IpAddress(")
                        .and_then(|rest| rest.strip_suffix(')'))
                })
                .unwrap_or(name);
            one_line(bare)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Characters that reorder or break the text around them when shown.
fn is_invisible_override(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `Retry-After` is either seconds or an HTTP date (RFC 9110 10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handshake failure in words: what is wrong with the certificate and
/// what the admin can do about it.
fn explain_tls_failure(err: &std::io::Error) -> String {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert)) => explain_certificate(cert),
        Some(other) => other.to_string(),
        None => err.to_string(),
    }
}

const VERIFY_HINT: &str = "or, to accept any certificate, set surveyclient_ssl_verify = no";

fn explain_certificate(error: &CertificateError) -> String {
    let when = |time: &UnixTime| {
        humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(time.as_secs()),
        )
    };
    match error {
        CertificateError::UnknownIssuer => format!(
            "the collector's certificate is not signed by a CA this machine trusts: \
             install that CA (for example in /usr/local/share/ca-certificates, then run \
             update-ca-certificates, or name it in SSL_CERT_FILE), {VERIFY_HINT}"
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the collector's certificate is not valid for the name {} (it names {}): use \
             one of those names in surveyclient_url or have the certificate reissued, \
             {VERIFY_HINT}",
            expected.to_str(),
            certificate_names(presented)
        ),
        CertificateError::NotValidForName => format!(
            "the collector's certificate is not valid for the host name in \
             surveyclient_url: use a name the certificate lists, {VERIFY_HINT}"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the collector's certificate expired at {} (this machine's clock says {}): the \
             collector needs a renewed certificate; if the clock is wrong, fix it",
            when(not_after),
            when(time)
        ),
        CertificateError::Expired => "the collector's certificate has expired (or this \
             machine's clock is wrong): the collector needs a renewed certificate"
            .to_string(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the collector's certificate is valid only from {} on (this machine's clock \
             says {}): check this machine's clock",
            when(not_before),
            when(time)
        ),
        CertificateError::NotValidYet => "the collector's certificate is not valid yet: \
             check this machine's clock"
            .to_string(),
        CertificateError::Revoked => "the collector's certificate has been revoked: the \
             collector needs a new one"
            .to_string(),
        CertificateError::BadSignature => "the signature on the collector's certificate \
             does not verify: the certificate chain it sends is wrong or tampered with"
            .to_string(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the collector's certificate is not meant for a TLS server (extended key \
             usage): the collector needs a server certificate"
                .to_string()
        }
        CertificateError::BadEncoding => "the collector sent a malformed certificate".to_string(),
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => format!(
                "the collector presents a CA certificate as its own: it must use a server \
                 certificate signed by that CA, not the CA certificate itself ({VERIFY_HINT})"
            ),
            Some(webpki::Error::EndEntityUsedAsCa) => "the collector's certificate was \
                 signed by a certificate that is not a CA: the collector's chain is wrong"
                .to_string(),
            _ => format!("the collector's certificate was rejected: {other}, {VERIFY_HINT}"),
        },
        other => format!("the collector's certificate was rejected ({other:?}), {VERIFY_HINT}"),
    }
}

fn tls_config(verify: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let mut config = if verify {
        builder
            .with_native_roots()
            .map_err(|err| format!("cannot load the system's CA certificates: {err}"))?
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `surveyclient_ssl_verify = no`: the certificate chain and host name are
/// not checked, but the handshake is still real, so the server must hold
/// the key of the certificate it shows and the link stays encrypted.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
