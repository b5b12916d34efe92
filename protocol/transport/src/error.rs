//! The crate's error type for starting servers and opening client links. Shared by every
//! transport: add variants, do not remove them.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a server could not start or a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// A certificate, key or TLS configuration could not be loaded or used.
    #[error("tls configuration: {0}")]
    TlsConfig(String),
    /// A URL the client cannot use (bad syntax, unknown scheme, no host).
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A WebSocket server answered the upgrade with an HTTP status instead of 101.
    #[error("server refused the websocket upgrade with http status {status}")]
    Refused { status: u16 },
    /// The TLS or WebSocket handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A configuration value that cannot work (zero shards, a frame limit of 0, ...).
    #[error("invalid config: {0}")]
    Config(String),
    /// The peer closed or refused the link while it was being set up (ENet/DTLS client).
    #[error("link closed while connecting: {0:?}")]
    Closed(crate::link::CloseReason),
}
