//! The WebSocket client for tests, the bench and tools (the Godot addon uses Godot's own
//! `WebSocketPeer`). One link per client, driven by one spawned task running the same connection
//! driver as the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::http::Uri;

use super::driver::{CloseRequest, Driver, DriverConfig, LinkShared};
use super::io::{Io, client_config};
use crate::conditioner::ConditionerConfig;
use crate::error::TransportError;
use crate::link::{ClientEvent, CloseReason, Delivery, LinkId, LinkStats, SendError};

/// The certificates a `wss://` client trusts: a CA, or the server's self-signed certificate
/// (pinning). PEM, one or more certificates.
#[derive(Clone, Debug)]
pub struct WsClientTrust {
    pub ca_pem: Vec<u8>,
}

/// Everything a client can be told. `Default` matches the server's defaults.
#[derive(Clone, Debug)]
pub struct WsClientConfig {
    /// Required for `wss://`: this crate carries no public root store.
    pub trust: Option<WsClientTrust>,
    /// How long the TCP connect, TLS and WebSocket handshakes together may take.
    pub timeout: Duration,
    pub max_frame_bytes: usize,
    /// Bytes that may wait to be sent before [`WsClient::send`] fails with `SlowConsumer` and
    /// the link closes.
    pub max_queued_bytes: usize,
    /// Received messages buffered for [`WsClient::recv`]; when full, the client stops reading
    /// the socket.
    pub event_capacity: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
    pub read_buffer_bytes: usize,
    /// Conditions the link's incoming and outgoing messages (tests only).
    pub conditioner: Option<ConditionerConfig>,
}

impl Default for WsClientConfig {
    fn default() -> Self {
        WsClientConfig {
            trust: None,
            timeout: Duration::from_secs(5),
            max_frame_bytes: protocol::MAX_FRAME_BYTES,
            max_queued_bytes: 512 * 1024,
            event_capacity: 256,
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            close_timeout: Duration::from_secs(2),
            read_buffer_bytes: 16 * 1024,
            conditioner: None,
        }
    }
}

/// One client link. Dropping it closes the link with code 0.
pub struct WsClient {
    link: Arc<LinkShared>,
    events: mpsc::Receiver<ClientEvent>,
    driver: Option<JoinHandle<CloseReason>>,
    /// Why the link ended, once known; `recv` reports it after the buffered messages.
    reason: Option<CloseReason>,
    reported: bool,
    local_addr: SocketAddr,
    cipher_suite: Option<String>,
}

impl WsClient {
    /// Connects to `ws://host:port/path` or `wss://…` (which needs `trust`).
    pub async fn connect(url: &str, trust: Option<WsClientTrust>, timeout: Duration) -> Result<WsClient, TransportError> {
        Self::connect_with(url, WsClientConfig { trust, timeout, ..WsClientConfig::default() }).await
    }

    pub async fn connect_with(url: &str, config: WsClientConfig) -> Result<WsClient, TransportError> {
        let target = Target::parse(url)?;
        let tls = match (&config.trust, target.tls) {
            (Some(trust), true) => Some(TlsConnector::from(client_config(&trust.ca_pem)?)),
            (None, true) => {
                return Err(TransportError::TlsConfig(format!("{url}: wss needs a trusted certificate")));
            }
            (_, false) => None,
        };
        let ws_config = super::tungstenite_config(config.max_frame_bytes, config.read_buffer_bytes);
        let connect = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
            // Small envelopes must not wait for Nagle; failure only costs latency.
            let _ = tcp.set_nodelay(true);
            let local_addr = tcp.local_addr()?;
            let io = match tls {
                Some(connector) => {
                    let name = ServerName::try_from(target.host.clone())
                        .map_err(|e| TransportError::InvalidUrl { url: url.to_owned(), reason: e.to_string() })?;
                    let stream = connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| TransportError::Handshake(format!("tls: {e}")))?;
                    Io::Tls(Box::new(tokio_rustls::TlsStream::Client(stream)))
                }
                None => Io::Plain(tcp),
            };
            let (ws, _response) = tokio_tungstenite::client_async_with_config(url, io, Some(ws_config))
                .await
                .map_err(|e| match e {
                    WsError::Http(response) => TransportError::Refused { status: response.status().as_u16() },
                    other => TransportError::Handshake(other.to_string()),
                })?;
            Ok::<_, TransportError>((ws, local_addr))
        };
        let (ws, local_addr) = tokio::time::timeout(config.timeout, connect)
            .await
            .map_err(|_| TransportError::Timeout(config.timeout))??;
        let cipher_suite = ws.get_ref().cipher_suite();
        let link = Arc::new(LinkShared::new(LinkId(0), config.max_frame_bytes, config.max_queued_bytes));
        let (tx, rx) = mpsc::channel(config.event_capacity.max(1));
        let driver_config = DriverConfig {
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            close_timeout: config.close_timeout,
            is_client: true,
            conditioner: config.conditioner,
        };
        // The driver holds the only sender: when it ends, `recv` sees the channel close.
        let driver = Driver::new(ws, link.clone(), tx, make_event, driver_config);
        let driver = tokio::spawn(driver);
        Ok(WsClient {
            link,
            events: rx,
            driver: Some(driver),
            reason: None,
            reported: false,
            local_addr,
            cipher_suite,
        })
    }

    /// Queues `data` without blocking. `delivery` is ignored: WebSocket is always reliable.
    pub fn send(&mut self, data: Bytes, _delivery: Delivery) -> Result<(), SendError> {
        self.link.send(data)
    }

    /// The next message, then [`ClientEvent::Closed`] once the link has ended, then `None`.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        if let Some(event) = self.events.recv().await {
            return Some(event);
        }
        if self.reported {
            return None;
        }
        self.reported = true;
        Some(ClientEvent::Closed(self.finish().await))
    }

    /// Flushes what is queued, closes with `code` (see the close code table in [`crate::ws`])
    /// and waits for the close handshake (at most `close_timeout`). Messages that arrived before
    /// stay readable with [`WsClient::recv`].
    pub async fn close(&mut self, code: u16) {
        self.link.request_close(CloseRequest::Local(code));
        self.finish().await;
    }

    pub fn stats(&self) -> LinkStats {
        self.link.stats()
    }

    /// The negotiated TLS cipher suite for `wss://`.
    pub fn cipher_suite(&self) -> Option<&str> {
        self.cipher_suite.as_deref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn finish(&mut self) -> CloseReason {
        if let Some(driver) = self.driver.take() {
            let reason = driver
                .await
                .unwrap_or_else(|e| CloseReason::Protocol(format!("client driver failed: {e}")));
            self.reason = Some(reason);
        }
        self.reason.clone().unwrap_or(CloseReason::Local { code: 0 })
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        // The driver task sees this, sends a normal close and ends by itself.
        self.link.request_close(CloseRequest::Local(0));
    }
}

fn make_event(_link: LinkId, data: Bytes) -> ClientEvent {
    ClientEvent::Message { data, delivery: Delivery::Reliable }
}

/// Where a URL points.
struct Target {
    tls: bool,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Target, TransportError> {
        let invalid = |reason: &str| TransportError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        let uri: Uri = url.parse().map_err(|e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| invalid(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("scheme must be ws or wss")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        // An IPv6 literal comes bracketed; sockets and rustls want it bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { tls, host, port })
    }
}
