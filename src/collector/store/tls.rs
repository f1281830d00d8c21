//! TLS to PostgreSQL over rustls, configured as libpq users expect: the
//! `sslmode` and `sslrootcert` options of the `postgres://` URL.
//!
//! | sslmode | TLS | server checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default without `sslrootcert`) | when the server offers it | chain and host name, against the system's CA store |
//! | `require` | always | nothing (as libpq); with `sslrootcert`: the chain |
//! | `verify-ca` | always | the chain, against `sslrootcert` or the system's store |
//! | `verify-full` (default with `sslrootcert`) | always | chain and host name |
//!
//! `prefer` is stricter than libpq's (which never checks): a server that
//! offers TLS with a certificate nothing vouches for is refused rather than
//! trusted, so a connection is plaintext (server without TLS) or verified,
//! never silently unverified. `sslrootcert=system` names the system store.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::safe_fs;

/// A CA bundle larger than this is not a CA bundle.
const MAX_ROOT_CERT_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A database URL taken apart: what tokio-postgres is given, and how TLS
/// is done.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub mode: Mode,
    pub connector: MakeRustls,
}

/// Parse `url`, read `sslrootcert` and build the TLS client. Errors say
/// which option is wrong and what to do.
pub fn target(url: &str) -> Result<Target, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        match key {
            "sslmode" => mode = Some(parse_mode(&decoded())?),
            "sslrootcert" => root_cert = Some(decoded()),
            _ => rest.push(pair),
        }
    }
    let mode = mode.unwrap_or(match root_cert {
        Some(_) => Mode::VerifyFull,
        None => Mode::Prefer,
    });
    let plain = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: tokio_postgres::Config = plain
        .parse()
        .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    });
    let roots = match root_cert.as_deref() {
        None | Some("system") => None,
        Some(path) => Some(read_roots(Path::new(path))?),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (Mode::Require, None) | (Mode::Disable, _) => Arc::new(Unchecked::new(true)),
        (Mode::Require | Mode::VerifyCa, Some(roots)) => Arc::new(ChainOnly(webpki(roots)?)),
        (Mode::VerifyCa, None) => Arc::new(ChainOnly(webpki(system_roots()?)?)),
        (Mode::Prefer | Mode::VerifyFull, Some(roots)) => webpki(roots)?,
        (Mode::VerifyFull, None) => webpki(system_roots()?)?,
        // Without a CA store a server that offers TLS cannot be verified
        // and is refused; one without TLS is still reached, as before.
        (Mode::Prefer, None) => match system_roots() {
            Ok(roots) => webpki(roots)?,
            Err(_) => Arc::new(Unchecked::new(false)),
        },
    };
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Target {
        config,
        mode,
        connector: MakeRustls(Arc::new(client)),
    })
}

fn parse_mode(value: &str) -> Result<Mode, String> {
    Ok(match value {
        "disable" => Mode::Disable,
        "prefer" => Mode::Prefer,
        "require" => Mode::Require,
        "verify-ca" => Mode::VerifyCa,
        "verify-full" => Mode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = safe_fs::read_regular(path, MAX_ROOT_CERT_BYTES)
        .map_err(|e| format!("sslrootcert={shown}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("sslrootcert={shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert={shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert={shown}: no PEM certificate in it (give the CA that signed the server's certificate)"
        ));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(
            "no CA certificates in the system store to verify PostgreSQL's certificate with; \
             install ca-certificates, or give sslrootcert=PATH or sslmode=disable"
                .into(),
        );
    }
    Ok(roots)
}

fn webpki(roots: RootCertStore) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))
}

/// `verify-ca`: the chain must verify, the name need not match.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A verifier that does not look at the chain: `require` without
/// `sslrootcert`, as libpq (accept: encrypted, the certificate not
/// checked; the handshake signatures still are), or `prefer` on a machine
/// without a CA store (refuse: nothing could vouch for it).
#[derive(Debug)]
struct Unchecked {
    provider: Arc<rustls::crypto::CryptoProvider>,
    accept: bool,
}

impl Unchecked {
    fn new(accept: bool) -> Unchecked {
        Unchecked {
            provider: provider(),
            accept,
        }
    }
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accept {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS hook, over tokio-rustls.
#[derive(Clone)]
pub struct MakeRustls(Arc<ClientConfig>);

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} cannot be checked against a certificate: {e}"),
            )
        })?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            connector
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_options_are_taken_out_of_the_url_and_defaults_follow_sslrootcert() {
        let t = target("postgres://u@127.0.0.1:5432/db?application_name=x").unwrap();
        assert_eq!(t.mode, Mode::Prefer);
        assert_eq!(t.config.get_application_name(), Some("x"));
        let t = target("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(
            (t.mode, t.config.get_ssl_mode()),
            (Mode::Disable, SslMode::Disable)
        );
        let t = target("postgres://u@h/db?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!(
            (t.mode, t.config.get_ssl_mode()),
            (Mode::VerifyCa, SslMode::Require)
        );
    }

    #[test]
    fn bad_ssl_options_say_what_to_do() {
        let e = target("postgres://h/db?sslmode=allow").err().unwrap();
        assert!(e.contains("sslmode=allow is not one of"), "{e}");
        let e = target("postgres://h/db?sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(e.starts_with("sslrootcert=/nonexistent/ca.pem: "), "{e}");
    }
}
