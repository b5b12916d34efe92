//! ENet inside DTLS 1.2 on one UDP socket, wire-compatible with Godot 4's `ENetConnection` +
//! `dtls_client_setup`: the server ([`EnetServer`], one task for every link) and the client
//! ([`EnetClient`], one task per link), plus plaintext ENet behind a loopback-only dev flag.
//!
//! Layout:
//! - `server`: the owner task: UDP socket → DTLS session table → ENet hosts → link events, and
//!   back; caps, timers, shutdown.
//! - `cookie`: the stateless HelloVerifyRequest front in front of the session table, so that a
//!   spoofed source creates no state.
//! - `client`: the same stack for one link (tests, bench).
//! - `shared`: per-link counters and the bounded command channel behind [`crate::LinkSink`].
//! - `wire`: the in-memory socket between ENet and DTLS, and the ENet header reader.
//! - `io`: the two functions every datagram passes through (where a link conditioner hooks in).

mod client;
mod cookie;
mod io;
mod server;
mod shared;
mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use client::EnetClient;
pub use server::{EnetServer, EnetServerStats};

use crate::cert::ServerIdentity;
use crate::conditioner::ConditionerConfig;

/// ENet channel carrying reliable messages.
pub const RELIABLE_CHANNEL: u8 = 0;
/// ENet channel carrying unreliable (sequenced) messages.
pub const UNRELIABLE_CHANNEL: u8 = 1;

/// The ENet MTU for links inside DTLS: 1280 (IPv6 minimum) − 40 (IPv6) − 8 (UDP) − 37 (DTLS 1.2
/// record with AES-GCM: 13 header + 8 explicit nonce + 16 tag; ChaCha20-Poly1305 needs 29), so a
/// full ENet datagram crosses any IPv6 path unfragmented. Peers use the smaller of both sides'
/// MTU, so Godot clients (1392) adopt it at connect.
pub const DTLS_ENET_MTU: u16 = 1195;

/// The default ENet peers per host, chosen by measurement: a rusty_enet service pass walks every
/// peer of the host at about 24 ns per peer (idle pass: 6 µs at 256 peers, 24 µs at 1024, 116 µs
/// at 4095), and a pass that delivers one message costs about two walks (15 µs at 256, 52 µs at
/// 1024, 197 µs at 4095). Only hosts that received something are serviced per wake-up, so small
/// hosts keep a lightly loaded server's per-message cost low, while the timer pass over all
/// hosts costs the same whatever the split. 256 keeps a wake-up under ~20 µs and needs only 391
/// hosts for 100k links.
pub const DEFAULT_PEERS_PER_HOST: usize = 256;

/// Configuration of an [`EnetServer`].
#[derive(Clone, Debug)]
pub struct EnetConfig {
    /// The UDP address to bind.
    pub bind: SocketAddr,
    /// The DTLS certificate; `None` only together with `plaintext_dev`.
    pub identity: Option<ServerIdentity>,
    /// Plaintext ENet, for local development only: refused unless `bind` is a loopback address.
    pub plaintext_dev: bool,
    /// ENet peers per ENet host. ENet walks every peer of a host on each service pass, so a
    /// server holds its links in several hosts of this size behind the one socket (measured:
    /// see `DEFAULT_PEERS_PER_HOST`). At most 4095.
    pub peers_per_host: usize,
    /// The most DTLS sessions (pending, unbound or linked) held at once.
    pub max_sessions: usize,
    /// The most sessions from one IP address.
    pub max_sessions_per_ip: usize,
    /// The most sessions still in their handshake; past it the oldest pending one is evicted, so
    /// a flood of ClientHellos from spoofed addresses cannot lock real clients out.
    pub max_pending_handshakes: usize,
    /// A session that binds no ENet peer within this time is dropped (Godot uses 8 s).
    pub unbound_session_timeout: Duration,
    /// How often the HelloVerifyRequest cookie secret is replaced. A cookie is honoured for at
    /// least one and at most two periods after it was issued; clients echo it within a round trip.
    pub cookie_rotation: Duration,
    /// The ENet MTU of the server's hosts.
    pub mtu: u16,
    /// The largest message sent or accepted; larger incoming messages close the link.
    pub max_frame_bytes: usize,
    /// A link with more bytes than this waiting to be sent or acknowledged is closed with
    /// `CloseReason::SlowConsumer`.
    pub max_queued_bytes_per_link: usize,
    /// ENet channels: 0 reliable, 1 unreliable.
    pub channels: usize,
    /// How often ENet hosts are serviced when no traffic wakes them (retransmits, pings, timeouts).
    pub service_interval: Duration,
    /// Capacity of the one command channel from senders to the owner task.
    pub command_capacity: usize,
    /// On shutdown, how long peers get to receive what is queued before they are cut.
    pub shutdown_grace: Duration,
    /// Tests only: put every datagram the server sends and reads through a seeded link
    /// conditioner (latency, jitter, loss, reordering).
    pub conditioner: Option<ConditionerConfig>,
}

impl Default for EnetConfig {
    fn default() -> Self {
        EnetConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            identity: None,
            plaintext_dev: false,
            peers_per_host: DEFAULT_PEERS_PER_HOST,
            max_sessions: 100_000,
            max_sessions_per_ip: 64,
            max_pending_handshakes: 4096,
            unbound_session_timeout: Duration::from_secs(8),
            cookie_rotation: Duration::from_secs(60),
            mtu: DTLS_ENET_MTU,
            max_frame_bytes: protocol::MAX_FRAME_BYTES,
            max_queued_bytes_per_link: 512 * 1024,
            channels: 2,
            service_interval: Duration::from_millis(10),
            command_capacity: 65_536,
            shutdown_grace: Duration::from_millis(500),
            conditioner: None,
        }
    }
}

/// How a client trusts the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTrust {
    /// Chain to one of these PEM certificates (a self-signed server certificate may be its own
    /// CA), with the server name checked against the leaf.
    CaPem(String),
    /// Accept exactly the leaf certificate with this SHA-256 ([`ServerIdentity::cert_sha256`]).
    PinSha256([u8; 32]),
    /// No DTLS: plaintext ENet, only to a loopback server.
    PlaintextDev,
}

/// Configuration of an [`EnetClient`].
#[derive(Clone, Debug)]
pub struct EnetClientConfig {
    pub server: SocketAddr,
    /// The name checked against the server certificate (DNS name or IP literal).
    pub server_name: String,
    pub trust: ClientTrust,
    /// The client's ENet MTU; the link uses the smaller of both sides'.
    pub mtu: u16,
    /// Local address to bind; `None` binds the unspecified address of the server's family.
    pub bind: Option<SocketAddr>,
    pub channels: usize,
    pub max_frame_bytes: usize,
    pub max_queued_bytes: usize,
    /// Capacity of the event channel [`EnetClient::recv`] reads; when it is full the client stops
    /// reading the network, which the server sees as a slow consumer.
    pub event_capacity: usize,
    pub service_interval: Duration,
    /// Tests only: put every datagram the client sends and reads through a seeded link
    /// conditioner.
    pub conditioner: Option<ConditionerConfig>,
}

impl EnetClientConfig {
    /// A client of `server` with the defaults: name `localhost`, ENet MTU 1392 like Godot.
    pub fn new(server: SocketAddr, trust: ClientTrust) -> Self {
        EnetClientConfig {
            server,
            server_name: "localhost".to_owned(),
            trust,
            mtu: rusty_enet::consts::HOST_DEFAULT_MTU as u16,
            bind: None,
            channels: 2,
            max_frame_bytes: protocol::MAX_FRAME_BYTES,
            max_queued_bytes: 512 * 1024,
            event_capacity: 1024,
            service_interval: Duration::from_millis(10),
            conditioner: None,
        }
    }
}
