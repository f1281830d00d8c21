//! Transport: one HTTP POST of a payload to the collector, over HTTPS
//! (rustls), plain HTTP or a unix socket, through the proxy the environment
//! names (`https_proxy`, `http_proxy`, `no_proxy`), bounded by one timeout
//! from connect to the last byte.
//!
//! Each report opens its own connection: reports are an hour apart, so a
//! pool would only hold sockets open for nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    HeaderValue, CONTENT_TYPE, HOST, PROXY_AUTHORIZATION, RETRY_AFTER, USER_AGENT,
};
use hyper::{Request, Uri};
use hyper_rustls::ConfigBuilderExt;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tower_service::Service;

use crate::settings::Endpoint;

/// The header upstream's collector requires on every report.
pub const STATS_HEADER: &str = "X-Kopano-Stats-Request";

/// How much of a response body is read before the connection is dropped;
/// collectors answer with nothing or a one-line reason.
const MAX_RESPONSE_BODY: usize = 16 * 1024;

/// What the collector answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server's `Retry-After`, as a delay from now.
    pub retry_after: Option<Duration>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no complete answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("bad collector URL {0}")]
    Url(String),
}

/// The request that is about to go out.
pub struct Outgoing<'a> {
    pub endpoint: &'a Endpoint,
    pub body: Bytes,
    pub ssl_verify: bool,
    pub timeout: Duration,
}

/// Sends one report and waits, at most `timeout`, for the status line and
/// the (bounded) body.
pub async fn post(request: Outgoing<'_>) -> Result<Response, SendError> {
    let timeout = request.timeout;
    tokio::time::timeout(timeout, exchange(request))
        .await
        .unwrap_or(Err(SendError::Timeout(timeout)))
}

async fn exchange(request: Outgoing<'_>) -> Result<Response, SendError> {
    let body = request.body.clone();
    let url = match request.endpoint {
        Endpoint::Unix { socket, path } => {
            let stream = UnixStream::connect(socket)
                .await
                .map_err(|err| SendError::Connect {
                    target: socket.display().to_string(),
                    reason: err.to_string(),
                })?;
            return send_over(stream, path, "localhost", None, body).await;
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

    let proxy = Matcher::from_env().intercept(&uri);
    match (https, proxy) {
        (false, None) => {
            let tcp = connect_tcp(&host, port).await?;
            send_over(tcp, &origin_form, &authority, None, body).await
        }
        (false, Some(proxy)) => {
            // A plain-HTTP proxy gets the absolute URL as request target.
            let proxy_uri = proxy.uri();
            let proxy_host = proxy_uri.host().unwrap_or_default().to_string();
            let proxy_port = proxy_uri.port_u16().unwrap_or(80);
            let tcp = connect_tcp(&proxy_host, proxy_port).await?;
            let auth = proxy.basic_auth().cloned();
            send_over(tcp, url.as_str(), &authority, auth, body).await
        }
        (true, proxy) => {
            let tcp = match proxy {
                None => connect_tcp(&host, port).await?,
                Some(proxy) => {
                    let mut tunnel = Tunnel::new(proxy.uri().clone(), HttpConnector::new());
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    let io = tunnel
                        .call(uri.clone())
                        .await
                        .map_err(|err| SendError::Connect {
                            target: format!("{authority} through proxy {}", proxy.uri()),
                            reason: err.to_string(),
                        })?;
                    io.into_inner()
                }
            };
            let tls = tls_config(request.ssl_verify).map_err(|reason| SendError::Tls {
                host: host.clone(),
                reason,
            })?;
            let server_name = server_name(url)?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(server_name, tcp)
                .await
                .map_err(|err| SendError::Tls {
                    host: host.clone(),
                    reason: err.to_string(),
                })?;
            send_over(stream, &origin_form, &authority, None, body).await
        }
    }
}

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, SendError> {
    // url keeps IPv6 literals in brackets; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    TcpStream::connect((bare, port))
        .await
        .map_err(|err| SendError::Connect {
            target: format!("{host}:{port}"),
            reason: err.to_string(),
        })
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
    proxy_auth: Option<HeaderValue>,
    body: Bytes,
) -> Result<Response, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| SendError::Http(err.to_string()))?;
    let driver = AbortOnDrop(tokio::spawn(connection));

    let mut builder = Request::post(target)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .header(STATS_HEADER, "1")
        .header(USER_AGENT, concat!("surveyd/", env!("CARGO_PKG_VERSION")));
    if let Some(auth) = proxy_auth {
        builder = builder.header(PROXY_AUTHORIZATION, auth);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|err| SendError::Http(err.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| SendError::Http(err.to_string()))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    // Read (and bound) the body so the server sees a clean exchange; its
    // content does not matter.
    let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
        .collect()
        .await;
    drop(driver);
    Ok(Response {
        status,
        retry_after,
    })
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
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
