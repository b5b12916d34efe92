//! The byte stream under a WebSocket (plain TCP or rustls over TCP) and the rustls
//! configurations for both ends, built from PEM.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use crate::error::TransportError;

/// One connection's stream, so server and client drivers are one non-generic type.
#[derive(Debug)]
pub(crate) enum Io {
    Plain(TcpStream),
    /// Boxed: a TLS stream is a few hundred bytes, a plain link should not pay for it.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Io {
    /// The negotiated TLS cipher suite, by its IANA-style name (`TLS13_AES_128_GCM_SHA256`).
    pub(crate) fn cipher_suite(&self) -> Option<String> {
        match self {
            Io::Plain(_) => None,
            Io::Tls(tls) => tls.get_ref().1.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The crypto provider, named explicitly: the process-wide default depends on which rustls
/// features other crates in the build turn on, and must not decide ours.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain and a PEM private key (PKCS#8, SEC1 or
/// PKCS#1). TLS 1.2 and 1.3, rustls's safe defaults (AEAD suites only).
pub(crate) fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TransportError> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::TlsConfig(format!("cannot read certificate pem: {e}")))?;
    if certs.is_empty() {
        return Err(TransportError::TlsConfig("no certificate in the certificate pem".into()));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TransportError::TlsConfig(format!("cannot read key pem: {e}")))?
        .ok_or_else(|| TransportError::TlsConfig("no private key in the key pem".into()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::TlsConfig(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TransportError::TlsConfig(format!("certificate and key do not work together: {e}")))?;
    // Browsers offer h2 and http/1.1; a WebSocket upgrade needs HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts exactly the certificates in `ca_pem` (a CA, or the
/// server's own self-signed certificate, which is how clients pin the embedded default).
pub(crate) fn client_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| TransportError::TlsConfig(format!("cannot read trusted pem: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TransportError::TlsConfig(format!("cannot trust certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TransportError::TlsConfig("no certificate in the trusted pem".into()));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
