//! Tavern's links: ENet inside DTLS on one UDP socket, and WebSocket, behind one link
//! abstraction shared by the GCS, the instance servers, the bench and the Godot addon's tests.
//!
//! Layout:
//! - [`link`]: the link abstraction (events, the `Links` command handle, stats, close reasons).
//! - [`error`]: [`TransportError`], why a server could not start or a client could not connect.
//! - [`ws`]: the WebSocket server (sharded, optional TLS) and client.
//! - [`enet`]: ENet inside DTLS 1.2 on one UDP socket (Godot-compatible), server and client;
//!   [`cert`]: the DTLS server identity (ECDSA P-256); `dtls`: the internal DTLS session type.
//! - [`client`]: [`Client`], a client link of either kind speaking typed protocol messages with
//!   bounded waits (tests, the bench, tools).
//! - [`service_link`]: the framed, token-authenticated TCP link between services (GCS ↔
//!   matchmaker, instance → matchmaker), server and reconnecting client.
//! - [`conditioner`]: a deterministic, seeded link conditioner for tests (latency, jitter, loss,
//!   reordering, duplication), sans-IO with an async adapter.

pub mod cert;
pub mod client;
pub mod conditioner;
mod dtls;
pub mod enet;
pub mod error;
pub mod link;
pub mod service_link;
pub mod ws;

pub use cert::ServerIdentity;
pub use client::{Client, ClientError};
pub use enet::{ClientTrust, EnetClient, EnetClientConfig, EnetConfig, EnetServer, EnetServerStats};
pub use conditioner::{AsyncConditioner, BurstLoss, Conditioner, ConditionerConfig};
pub use error::TransportError;
pub use link::{ClientEvent, CloseReason, Delivery, LinkEvent, LinkId, LinkKind, LinkSink, LinkStats, Links, PeerInfo, SendError};
pub use ws::{WsClient, WsClientConfig, WsClientTrust, WsConfig, WsServer, WsTls};
