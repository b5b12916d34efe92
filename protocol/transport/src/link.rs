//! The one link abstraction every service programs against, whatever carries the bytes:
//! ENet inside DTLS, plaintext ENet (dev only) or WebSocket.
//!
//! A server hands its owner a stream of [`LinkEvent`]s (connected, message, disconnected) on one
//! bounded channel, and a cloneable [`Links`] handle to send, close and read stats. Several
//! servers (ENet/DTLS and WebSocket for one GCS) share one event channel and one [`Links`]: the
//! [`LinkId`] says which server owns a link.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

/// Identifies one link for the lifetime of the process: the server that owns it (high 16 bits)
/// and a sequence number within that server (low 48 bits), never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl LinkId {
    /// Packs a server index and a per-server sequence number.
    pub fn new(server: u16, seq: u64) -> Self {
        LinkId((u64::from(server) << 48) | (seq & 0xFFFF_FFFF_FFFF))
    }

    /// The index of the server that owns this link in its [`Links`].
    pub fn server(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The sequence number within the server.
    pub fn seq(self) -> u64 {
        self.0 & 0xFFFF_FFFF_FFFF
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.server(), self.seq())
    }
}

/// How a message travels. WebSocket delivers everything reliably and in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Retransmitted until acknowledged, in order (ENet reliable on channel 0).
    Reliable,
    /// Sent once, may be lost, never delivered out of order (ENet unreliable sequenced on channel 1).
    Unreliable,
}

/// What carries a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkKind {
    EnetDtls,
    /// Plaintext ENet: only behind the explicit dev flag and only on loopback.
    EnetPlain,
    WebSocket,
    WebSocketTls,
}

impl LinkKind {
    /// A low-cardinality label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            LinkKind::EnetDtls => "enet_dtls",
            LinkKind::EnetPlain => "enet_plain",
            LinkKind::WebSocket => "ws",
            LinkKind::WebSocketTls => "wss",
        }
    }
}

/// Who is on the other end of a new link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub link: LinkId,
    pub remote: SocketAddr,
    pub kind: LinkKind,
    /// The negotiated DTLS or TLS cipher suite, when the link is encrypted.
    pub cipher_suite: Option<String>,
}

/// Why a link ended. `code` values are `protocol::ErrorCode` numbers, or 0 for a normal close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it.
    Local { code: u16 },
    /// The peer closed it (ENet disconnect data, WebSocket close code mapped back).
    Remote { code: u16 },
    /// No sign of life from the peer within the timeout.
    Timeout,
    /// The outgoing queue passed its limit; the link was closed rather than grow memory.
    SlowConsumer,
    /// The peer broke the transport's rules (bad record, oversize frame, handshake failure).
    Protocol(String),
    /// The server is shutting down.
    Shutdown,
}

/// Per-link figures, read on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkStats {
    /// Smoothed round-trip time; 0 when the transport does not measure it.
    pub rtt_ms: u32,
    /// Fraction of packets lost (0–1); 0 when the transport does not measure it.
    pub loss: f32,
    /// Bytes waiting to be sent.
    pub queued_bytes: usize,
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// What a server reports to its owner.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkEvent {
    Connected(PeerInfo),
    Message { link: LinkId, data: Bytes, delivery: Delivery },
    Disconnected { link: LinkId, reason: CloseReason },
}

/// What a client link reports to its owner (the client side has one link, so no [`LinkId`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    Message { data: Bytes, delivery: Delivery },
    /// The link ended; nothing follows.
    Closed(CloseReason),
}

/// Why a send was refused. None of these panics or blocks; the caller decides what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("link {0} is closed or unknown")]
    Closed(LinkId),
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge { len: usize, max: usize },
    #[error("link {0} cannot keep up; it is being closed")]
    SlowConsumer(LinkId),
}

/// The command side of one server, implemented by each transport.
pub trait LinkSink: Send + Sync + 'static {
    /// Queues `data` for `link` without blocking. A link whose queue passes its limit is closed
    /// with [`CloseReason::SlowConsumer`] and the send fails with [`SendError::SlowConsumer`].
    fn send(&self, link: LinkId, data: Bytes, delivery: Delivery) -> Result<(), SendError>;
    /// Closes `link`, telling the peer `code`; a [`LinkEvent::Disconnected`] follows.
    fn close(&self, link: LinkId, code: u16);
    /// The link's current figures, or `None` if it is gone.
    fn stats(&self, link: LinkId) -> Option<LinkStats>;
}

/// A cloneable handle over every server of a process, routing by [`LinkId::server`].
#[derive(Clone, Default)]
pub struct Links {
    servers: Vec<Arc<dyn LinkSink>>,
}

impl Links {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a server and returns the index its link ids must carry.
    pub fn add(&mut self, sink: Arc<dyn LinkSink>) -> u16 {
        self.servers.push(sink);
        u16::try_from(self.servers.len() - 1).unwrap_or(u16::MAX)
    }

    /// The index the next [`Links::add`] will return.
    pub fn next_index(&self) -> u16 {
        u16::try_from(self.servers.len()).unwrap_or(u16::MAX)
    }

    pub fn send(&self, link: LinkId, data: Bytes, delivery: Delivery) -> Result<(), SendError> {
        self.sink(link).ok_or(SendError::Closed(link))?.send(link, data, delivery)
    }

    pub fn close(&self, link: LinkId, code: u16) {
        if let Some(s) = self.sink(link) {
            s.close(link, code);
        }
    }

    pub fn stats(&self, link: LinkId) -> Option<LinkStats> {
        self.sink(link)?.stats(link)
    }

    fn sink(&self, link: LinkId) -> Option<&Arc<dyn LinkSink>> {
        self.servers.get(usize::from(link.server()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_pack_server_and_sequence() {
        let id = LinkId::new(3, 42);
        assert_eq!((id.server(), id.seq()), (3, 42));
        assert_eq!(id.to_string(), "3.42");
        let max = LinkId::new(u16::MAX, u64::MAX);
        assert_eq!((max.server(), max.seq()), (u16::MAX, 0xFFFF_FFFF_FFFF));
    }

    #[test]
    fn unknown_server_is_closed() {
        let links = Links::new();
        let id = LinkId::new(0, 1);
        assert_eq!(links.send(id, Bytes::from_static(b"x"), Delivery::Reliable), Err(SendError::Closed(id)));
        assert_eq!(links.stats(id), None);
    }
}
