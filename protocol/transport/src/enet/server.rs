//! The ENet-over-DTLS server: one tokio task owns the UDP socket, the table of DTLS sessions
//! keyed by remote address, and the ENet hosts, and drives them sans-IO (datagram → DTLS → ENet
//! → link events; ENet output → DTLS → datagram; one timer for ENet service, DTLS retransmits
//! and session expiry). There is no task or channel per link: senders reach the task through one
//! bounded command channel, and read per-link counters from a shared map.
//!
//! Session rules: for an unknown address, a ClientHello without a cookie is answered with a
//! HelloVerifyRequest and creates nothing (the stateless `cookie` front); only a ClientHello
//! echoing a valid cookie (or, in plaintext dev mode, an ENet CONNECT) creates state, within the
//! total, per-IP and pending-handshake caps. A session carries one ENet connection; a session
//! that binds no ENet peer within `unbound_session_timeout` is dropped; an ENet disconnect drops
//! the DTLS session and a DTLS close or fatal alert resets the ENet peer. A new ClientHello from
//! a known address goes through the same cookie exchange, then runs beside the old session and
//! replaces it only once its handshake completes (RFC 6347 §4.2.8), so a forged ClientHello
//! cannot cut a link.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use protocol::ErrorCode;
use rusty_enet::{EventNoRef, Host, HostSettings, Packet, PacketKind, PeerID, PeerState};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cookie::{CookieFront, Verdict};
use super::io::Wire;
use super::shared::{CloseKind, Command, Commands, EnetSink, LinkShared};
use super::wire::{Bridge, enet_clock, is_enet_connect, scan};
use super::{EnetConfig, RELIABLE_CHANNEL, UNRELIABLE_CHANNEL};
use crate::dtls::{self, COOKIE_LEN, DtlsConfig, DtlsEvent, DtlsSession, ReadError};
use crate::error::TransportError;
use crate::link::{CloseReason, Delivery, LinkEvent, LinkId, LinkKind, LinkSink, PeerInfo};

/// Datagrams read per wake-up before ENet is serviced, so a flood cannot starve timers.
const READ_BUDGET: usize = 1024;
/// Commands taken per wake-up.
const COMMAND_BUDGET: usize = 1024;
/// Events waiting for the owner before the task stops reading the network and commands.
const EVENT_HIGH_WATER: usize = 8192;
/// How often per-link RTT and loss are copied out of ENet for `LinkSink::stats`.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// A running ENet server. Dropping it does not stop it: cancel the shutdown token.
pub struct EnetServer {
    local_addr: SocketAddr,
    sink: Arc<EnetSink>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

/// Figures of a running server, for tests, logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnetServerStats {
    /// DTLS sessions held (pending, unbound and linked).
    pub sessions: usize,
    /// Sessions still in their handshake.
    pub pending_handshakes: usize,
    /// Links (sessions with a connected ENet peer).
    pub links: usize,
    /// ENet hosts behind the socket.
    pub hosts: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams that created nothing: not a ClientHello from an unknown address, garbage on a
    /// session, or refused by a cap.
    pub datagrams_dropped: u64,
    /// New sessions refused by the total or per-IP cap.
    pub sessions_refused: u64,
    /// Pending handshakes evicted to make room under the pending cap.
    pub handshakes_evicted: u64,
    /// Sessions dropped because they bound no ENet peer in time.
    pub sessions_expired: u64,
    /// ClientHellos without a cookie answered with a HelloVerifyRequest (keeping no state).
    pub hello_verify_requests: u64,
    /// ClientHellos dropped for a cookie this server did not issue to their address, or one
    /// whose secret has rotated out (also counted in `datagrams_dropped`).
    pub cookies_refused: u64,
}

#[derive(Default)]
struct Counters {
    sessions: AtomicUsize,
    pending: AtomicUsize,
    links: AtomicUsize,
    hosts: AtomicUsize,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
    hello_verify: AtomicU64,
    cookies_refused: AtomicU64,
}

impl EnetServer {
    /// Binds the UDP socket and spawns the one task that owns the socket, the DTLS session table
    /// and the ENet hosts. Link ids carry `server_index`; events go to `events`; cancelling
    /// `shutdown` disconnects every peer with `ErrorCode::ShuttingDown`, flushes, reports each
    /// link `Disconnected { Shutdown }` and ends the task.
    pub async fn start(
        config: EnetConfig,
        server_index: u16,
        events: mpsc::Sender<LinkEvent>,
        shutdown: CancellationToken,
    ) -> Result<EnetServer, TransportError> {
        validate(&config)?;
        let dtls_config = if config.plaintext_dev {
            if config.identity.is_some() {
                tracing::warn!("plaintext_dev is set: the DTLS identity is ignored");
            }
            None
        } else {
            let identity = config.identity.as_ref().ok_or_else(|| {
                TransportError::Config("an ENet/DTLS server needs an identity (certificate and key)".into())
            })?;
            Some(dtls::server_config(identity)?)
        };
        let cookies = match dtls_config {
            Some(_) => Some(
                CookieFront::new(crate::cert::provider()?, config.cookie_rotation, Instant::now())
                    .map_err(|e| TransportError::TlsConfig(format!("dtls cookie secret: {e}")))?,
            ),
            None => None,
        };
        let mut wire = Wire::bind(config.bind, Some(super::io::SERVER_SOCKET_BUFFER)).await?;
        wire.set_conditioner(config.conditioner.clone());
        let local_addr = wire.local_addr();
        if config.plaintext_dev && !local_addr.ip().is_loopback() {
            return Err(plaintext_refused(local_addr));
        }
        let (commands, commands_rx) = Commands::new(config.command_capacity);
        let links = Arc::new(DashMap::new());
        let sink = Arc::new(EnetSink {
            commands: commands.clone(),
            links: links.clone(),
            max_frame_bytes: config.max_frame_bytes,
            max_queued_bytes: config.max_queued_bytes_per_link,
        });
        let counters = Arc::new(Counters::default());
        let kind = if dtls_config.is_some() { LinkKind::EnetDtls } else { LinkKind::EnetPlain };
        let mut server = Server {
            config,
            server_index,
            kind,
            wire,
            dtls: dtls_config,
            cookies,
            sessions: HashMap::new(),
            per_ip: HashMap::new(),
            pending: HashSet::new(),
            pending_order: VecDeque::new(),
            replacing: HashSet::new(),
            expiry: VecDeque::new(),
            hosts: Vec::new(),
            links: HashMap::new(),
            shared_links: links,
            commands,
            events_out: VecDeque::new(),
            events,
            next_link_seq: 1,
            next_serial: 1,
            counters: counters.clone(),
            scratch: Vec::new(),
            accepting: true,
            last_stats: Instant::now(),
        };
        server.add_host()?;
        tracing::info!(addr = %local_addr, kind = kind.label(), "enet server listening");
        let task = tokio::spawn(server.run(commands_rx, shutdown));
        Ok(EnetServer { local_addr, sink, counters, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The command side: send, close and stats for this server's links.
    pub fn sink(&self) -> Arc<dyn LinkSink> {
        self.sink.clone()
    }

    pub fn stats(&self) -> EnetServerStats {
        let c = &self.counters;
        EnetServerStats {
            sessions: c.sessions.load(Ordering::Relaxed),
            pending_handshakes: c.pending.load(Ordering::Relaxed),
            links: c.links.load(Ordering::Relaxed),
            hosts: c.hosts.load(Ordering::Relaxed),
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: c.datagrams_out.load(Ordering::Relaxed),
            datagrams_dropped: c.dropped.load(Ordering::Relaxed),
            sessions_refused: c.refused.load(Ordering::Relaxed),
            handshakes_evicted: c.evicted.load(Ordering::Relaxed),
            sessions_expired: c.expired.load(Ordering::Relaxed),
            hello_verify_requests: c.hello_verify.load(Ordering::Relaxed),
            cookies_refused: c.cookies_refused.load(Ordering::Relaxed),
        }
    }

    /// Waits for the task to end (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "enet server task failed");
        }
    }
}

fn plaintext_refused(addr: SocketAddr) -> TransportError {
    TransportError::Config(format!(
        "plaintext ENet refused on {addr}: plaintext_dev only works on a loopback address"
    ))
}

fn validate(c: &EnetConfig) -> Result<(), TransportError> {
    let bad = |m: String| Err(TransportError::Config(m));
    if c.plaintext_dev && !c.bind.ip().is_loopback() {
        return Err(plaintext_refused(c.bind));
    }
    if c.peers_per_host == 0 || c.peers_per_host > rusty_enet::consts::PROTOCOL_MAXIMUM_PEER_ID as usize {
        return bad(format!("peers_per_host {} is not within 1..=4095", c.peers_per_host));
    }
    if c.channels == 0 || c.channels > 255 {
        return bad(format!("channels {} is not within 1..=255", c.channels));
    }
    let mtu = usize::from(c.mtu);
    if !(rusty_enet::consts::PROTOCOL_MINIMUM_MTU..=rusty_enet::consts::PROTOCOL_MAXIMUM_MTU).contains(&mtu) {
        return bad(format!("mtu {} is not within 576..=4096", c.mtu));
    }
    if c.max_frame_bytes == 0 || c.max_sessions == 0 || c.max_sessions_per_ip == 0 || c.max_pending_handshakes == 0 {
        return bad("max_frame_bytes and the session caps must be at least 1".into());
    }
    if c.service_interval.is_zero() {
        return bad("service_interval must be above zero".into());
    }
    if c.cookie_rotation.is_zero() {
        return bad("cookie_rotation must be above zero".into());
    }
    Ok(())
}

/// One remote address: its DTLS session (none in plaintext mode) and the ENet peer it carries.
struct Session {
    /// Distinguishes this session from an earlier one at the same address in the FIFOs.
    serial: u64,
    host: usize,
    dtls: Option<DtlsSession>,
    /// A new handshake from the same address, replacing `dtls` once it completes.
    replacement: Option<(DtlsSession, Instant)>,
    established: bool,
    /// The connect id of the one ENet connection this session carries.
    connect_id: Option<u32>,
    peer: Option<PeerID>,
    link: Option<Arc<LinkShared>>,
    /// Why this side is closing the link, once it asked ENet to disconnect.
    closing: Option<CloseReason>,
    /// Set when the peer sent an ENet DISCONNECT, to tell a close from a timeout.
    remote_disconnect: bool,
    cipher: Option<String>,
}

struct HostSlot {
    host: Host<Bridge>,
    sessions: usize,
    /// Received datagrams: needs `service`.
    dirty: bool,
    /// Queued packets: needs at least `flush`.
    flush: bool,
}

/// What happens to the ENet peer when a session is dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerFate {
    /// Reset it (no notice to the remote).
    Reset,
    /// ENet already reset it (disconnect event, or `disconnect_now`).
    Gone,
}

struct Server {
    config: EnetConfig,
    server_index: u16,
    kind: LinkKind,
    wire: Wire,
    dtls: Option<DtlsConfig>,
    /// The stateless HelloVerifyRequest front (DTLS only).
    cookies: Option<CookieFront>,
    sessions: HashMap<SocketAddr, Session>,
    per_ip: HashMap<IpAddr, usize>,
    /// Sessions whose handshake has not completed.
    pending: HashSet<SocketAddr>,
    /// Pending sessions oldest first, for eviction; stale entries are skipped.
    pending_order: VecDeque<(SocketAddr, u64)>,
    /// Sessions with a replacement handshake running.
    replacing: HashSet<SocketAddr>,
    /// (deadline, address, serial) of every session, oldest first: unbound ones expire.
    expiry: VecDeque<(Instant, SocketAddr, u64)>,
    hosts: Vec<HostSlot>,
    links: HashMap<LinkId, SocketAddr>,
    shared_links: Arc<DashMap<LinkId, Arc<LinkShared>>>,
    commands: Arc<Commands>,
    events_out: VecDeque<LinkEvent>,
    events: mpsc::Sender<LinkEvent>,
    next_link_seq: u64,
    next_serial: u64,
    counters: Arc<Counters>,
    scratch: Vec<DtlsEvent>,
    accepting: bool,
    last_stats: Instant,
}

enum Wake {
    Shutdown,
    EventsClosed,
    Work,
}

impl Server {
    async fn run(mut self, mut commands_rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let interval = self.config.service_interval;
        let mut next_tick = Instant::now() + interval;
        let mut batch = Vec::with_capacity(COMMAND_BUDGET);
        loop {
            // The select only waits for something to do; every pass below then reads, takes
            // commands and runs due timers within budgets, so a flood on one source can neither
            // starve the others nor the timers.
            let open = self.events_out.len() < EVENT_HIGH_WATER;
            let due = self.wire.next_due();
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Wake::Shutdown,
                permit = self.events.reserve(), if !self.events_out.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.events_out.pop_front() {
                            permit.send(event);
                        }
                        Wake::Work
                    }
                    Err(_) => Wake::EventsClosed,
                },
                _ = self.wire.readable(), if open => Wake::Work,
                _ = commands_rx.recv_many(&mut batch, COMMAND_BUDGET), if open => Wake::Work,
                _ = self.wire.writable(), if self.wire.has_backlog() => Wake::Work,
                _ = sleep_until_due(due), if due.is_some() => Wake::Work,
                _ = tokio::time::sleep_until(next_tick.into()) => Wake::Work,
            };
            match wake {
                Wake::Shutdown => break,
                Wake::EventsClosed => {
                    tracing::warn!("enet server: the link event receiver is gone; shutting down");
                    break;
                }
                Wake::Work => {}
            }
            let now = Instant::now();
            for command in batch.drain(..) {
                self.command(now, command);
            }
            if open {
                self.read_datagrams(now);
                for _ in 0..COMMAND_BUDGET {
                    let Ok(command) = commands_rx.try_recv() else { break };
                    self.command(now, command);
                }
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + interval;
            }
            self.pump(now);
            if self.events.is_closed() {
                break;
            }
        }
        self.shutdown(commands_rx).await;
    }

    /// Services what changed, sends what ENet and DTLS produced, hands events over.
    fn pump(&mut self, now: Instant) {
        for (parked_link, kind) in self.commands.take_parked() {
            self.command(now, Command::Close { link: parked_link, kind });
        }
        for h in 0..self.hosts.len() {
            let (dirty, flush) = match self.hosts.get(h) {
                Some(slot) => (slot.dirty, slot.flush),
                None => continue,
            };
            if dirty {
                self.service_host(now, h);
            } else if flush && let Some(slot) = self.hosts.get_mut(h) {
                slot.host.flush();
            }
            if let Some(slot) = self.hosts.get_mut(h) {
                slot.dirty = false;
                slot.flush = false;
            }
            self.route_host_outbound(now, h);
        }
        self.wire.release_due(now);
        self.wire.flush_backlog();
        self.publish_counters();
        while let Some(event) = self.events_out.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) | Err(mpsc::error::TrySendError::Closed(event)) => {
                    self.events_out.push_front(event);
                    break;
                }
            }
        }
    }

    fn publish_counters(&self) {
        let c = &self.counters;
        c.sessions.store(self.sessions.len(), Ordering::Relaxed);
        c.pending.store(self.pending.len(), Ordering::Relaxed);
        c.links.store(self.links.len(), Ordering::Relaxed);
        c.hosts.store(self.hosts.len(), Ordering::Relaxed);
        c.datagrams_in.store(self.wire.datagrams_in, Ordering::Relaxed);
        c.datagrams_out.store(self.wire.datagrams_out, Ordering::Relaxed);
    }

    fn read_datagrams(&mut self, now: Instant) {
        for _ in 0..READ_BUDGET {
            let Some((from, datagram)) = self.wire.recv_datagram() else {
                break;
            };
            self.datagram_in(now, from, datagram);
        }
    }

    fn tick(&mut self, now: Instant) {
        if let Some(cookies) = self.cookies.as_mut() {
            cookies.rotate(now);
        }
        // DTLS handshake retransmissions, for pending sessions and replacement handshakes.
        let due: Vec<SocketAddr> = self
            .pending
            .iter()
            .chain(self.replacing.iter())
            .filter(|addr| {
                self.sessions.get(addr).is_some_and(|s| {
                    let main = s.dtls.as_ref().and_then(DtlsSession::next_timeout);
                    let next = s.replacement.as_ref().and_then(|(r, _)| r.next_timeout());
                    main.is_some_and(|t| t <= now) || next.is_some_and(|t| t <= now)
                })
            })
            .copied()
            .collect();
        for addr in due {
            self.retransmit(now, addr);
        }
        // Sessions that bound no ENet peer in time.
        while let Some(&(deadline, addr, serial)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            let unbound = self.sessions.get(&addr).is_some_and(|s| s.serial == serial && s.peer.is_none());
            if unbound {
                tracing::debug!(%addr, "session bound no enet peer in time; dropping it");
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                self.drop_session(now, addr, None, PeerFate::Reset, true);
            }
        }
        // Replacement handshakes that never completed.
        let stale: Vec<SocketAddr> = self
            .replacing
            .iter()
            .filter(|a| {
                self.sessions.get(a).is_none_or(|s| {
                    s.replacement.as_ref().is_none_or(|(_, t)| now.duration_since(*t) >= self.config.unbound_session_timeout)
                })
            })
            .copied()
            .collect();
        for addr in stale {
            self.replacing.remove(&addr);
            if let Some(s) = self.sessions.get_mut(&addr) {
                s.replacement = None;
            }
        }
        // Stale heads of the eviction FIFO.
        while let Some(&(addr, serial)) = self.pending_order.front() {
            let live = self.pending.contains(&addr) && self.sessions.get(&addr).is_some_and(|s| s.serial == serial);
            if live {
                break;
            }
            self.pending_order.pop_front();
        }
        for slot in &mut self.hosts {
            slot.dirty = true;
        }
        if now.duration_since(self.last_stats) >= STATS_INTERVAL {
            self.last_stats = now;
            self.refresh_stats();
        }
    }

    fn retransmit(&mut self, now: Instant, addr: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let mut failed = false;
        if let Some(d) = s.dtls.as_mut() {
            if !d.is_established() && d.handle_timeout(now).is_err() {
                failed = true;
            }
            send_dtls_output(&mut self.wire, d);
        }
        let mut replacement_failed = false;
        if let Some((r, _)) = s.replacement.as_mut() {
            replacement_failed = r.handle_timeout(now).is_err();
            send_dtls_output(&mut self.wire, r);
        }
        if replacement_failed {
            s.replacement = None;
            self.replacing.remove(&addr);
        }
        if failed {
            self.drop_session(now, addr, Some(CloseReason::Protocol("dtls handshake timed out".into())), PeerFate::Reset, false);
        }
    }

    fn refresh_stats(&mut self) {
        for (id, addr) in &self.links {
            let Some(s) = self.sessions.get(addr) else { continue };
            let (Some(peer), Some(link)) = (s.peer, s.link.as_ref()) else { continue };
            if let Some(p) = self.hosts.get(s.host).and_then(|slot| slot.host.get_peer(peer)) {
                link.set_path(
                    u32::try_from(p.round_trip_time().as_millis()).unwrap_or(u32::MAX),
                    p.packet_loss() as f32 / rusty_enet::consts::PEER_PACKET_LOSS_SCALE as f32,
                );
            } else {
                tracing::debug!(link = %id, "linked session without an enet peer");
            }
        }
    }

    // ---------------------------------------------------------------- datagrams in

    /// Every datagram the socket delivers enters here.
    fn datagram_in(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) {
        if self.sessions.contains_key(&from) {
            self.session_datagram(now, from, datagram);
        } else {
            self.new_session(now, from, datagram);
        }
    }

    fn new_session(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) {
        if self.dtls.is_none() {
            self.new_plain_session(now, from, datagram);
            return;
        }
        if !self.accepting || !dtls::is_client_hello(&datagram) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The caps come first: a full server or IP gets no HelloVerifyRequest either.
        if self.caps_refuse(from.ip()) {
            return;
        }
        let Some((cookie, first_hello)) = self.cookie_front(now, from, &datagram) else {
            return;
        };
        // Only now, with the address proven, does anything get created.
        let Some(dtls) = self.accept_verified(now, from, cookie, &first_hello) else {
            return;
        };
        if self.pending.len() >= self.config.max_pending_handshakes {
            self.evict_oldest_pending(now);
        }
        let Some(host) = self.pick_host() else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.insert_session(now, from, host, Some(dtls));
        self.session_datagram(now, from, datagram);
    }

    /// Plaintext dev mode: an ENet CONNECT from an unknown address creates a session.
    fn new_plain_session(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) {
        if !self.accepting || !is_enet_connect(&datagram) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.caps_refuse(from.ip()) {
            return;
        }
        let Some(host) = self.pick_host() else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.insert_session(now, from, host, None);
        self.session_datagram(now, from, datagram);
    }

    /// True (and counted) when the total or per-IP session cap leaves no room for `ip`.
    fn caps_refuse(&self, ip: IpAddr) -> bool {
        let full = self.sessions.len() >= self.config.max_sessions
            || self.per_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_sessions_per_ip;
        if full {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        full
    }

    /// Puts a ClientHello from an address with no handshake to give it to through the cookie
    /// front: one without a cookie is answered with a HelloVerifyRequest, a bad one is dropped,
    /// and only a verified one returns what `accept_verified` needs. Nothing is kept either way.
    fn cookie_front(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<([u8; COOKIE_LEN], BytesMut)> {
        let Some(front) = self.cookies.as_mut() else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        match front.check(now, from, datagram) {
            Verdict::Verified { cookie, first_hello } => Some((cookie, first_hello)),
            Verdict::Challenge(hello_verify_request) => {
                self.wire.datagram_out(from, hello_verify_request);
                self.counters.hello_verify.fetch_add(1, Ordering::Relaxed);
                None
            }
            Verdict::Refused => {
                tracing::trace!(%from, "client hello with a bad or expired cookie dropped");
                self.counters.cookies_refused.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
            Verdict::Unusable => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The DTLS session for a verified ClientHello from `from`, or `None` (with rtc-dtls's
    /// answer, a fatal alert, sent) when rtc refuses the hello.
    fn accept_verified(&mut self, now: Instant, from: SocketAddr, cookie: [u8; COOKIE_LEN], first_hello: &[u8]) -> Option<DtlsSession> {
        let cfg = self.dtls.as_ref()?;
        match DtlsSession::accept_verified(now, self.wire.local_addr(), from, cfg, cookie, first_hello) {
            Ok(session) => Some(session),
            Err(refusal) => {
                tracing::debug!(%from, reason = %refusal.reason, "dtls refused a verified client hello");
                for reply in refusal.replies {
                    self.wire.datagram_out(from, reply);
                }
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Adds a session at `from` on `host`: pending until its handshake completes (DTLS), and due
    /// to expire unless it binds an ENet peer in time.
    fn insert_session(&mut self, now: Instant, from: SocketAddr, host: usize, dtls: Option<DtlsSession>) {
        let serial = self.next_serial;
        self.next_serial += 1;
        let established = dtls.is_none();
        self.sessions.insert(
            from,
            Session {
                serial,
                host,
                dtls,
                replacement: None,
                established,
                connect_id: None,
                peer: None,
                link: None,
                closing: None,
                remote_disconnect: false,
                cipher: None,
            },
        );
        *self.per_ip.entry(from.ip()).or_insert(0) += 1;
        if let Some(slot) = self.hosts.get_mut(host) {
            slot.sessions += 1;
        }
        if !established {
            self.pending.insert(from);
            self.pending_order.push_back((from, serial));
        }
        self.expiry.push_back((now + self.config.unbound_session_timeout, from, serial));
    }

    fn evict_oldest_pending(&mut self, now: Instant) {
        while let Some((addr, serial)) = self.pending_order.pop_front() {
            let live = self.pending.contains(&addr) && self.sessions.get(&addr).is_some_and(|s| s.serial == serial);
            if live {
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                self.drop_session(now, addr, None, PeerFate::Reset, false);
                return;
            }
        }
    }

    /// The first host with room, or a new one.
    fn pick_host(&mut self) -> Option<usize> {
        if let Some(h) = self.hosts.iter().position(|s| s.sessions < self.config.peers_per_host) {
            return Some(h);
        }
        match self.add_host() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot create another enet host");
                None
            }
        }
    }

    fn add_host(&mut self) -> Result<usize, TransportError> {
        let bad = |what: String| TransportError::Config(format!("enet host: {what}"));
        let mut host = Host::new(
            Bridge::default(),
            HostSettings {
                peer_limit: self.config.peers_per_host,
                channel_limit: self.config.channels,
                incoming_bandwidth_limit: None,
                outgoing_bandwidth_limit: None,
                compressor: None,
                checksum: None,
                time: enet_clock(),
                seed: None,
            },
        )
        .map_err(|e| bad(format!("{e:?}")))?;
        host.set_mtu(self.config.mtu).map_err(|e| bad(format!("{e:?}")))?;
        host.set_maximum_packet_size(self.config.max_frame_bytes).map_err(|e| bad(format!("{e:?}")))?;
        host.set_maximum_waiting_data(waiting_data_limit(self.config.max_frame_bytes))
            .map_err(|e| bad(format!("{e:?}")))?;
        self.hosts.push(HostSlot { host, sessions: 0, dirty: false, flush: false });
        tracing::debug!(hosts = self.hosts.len(), "enet host added");
        Ok(self.hosts.len() - 1)
    }

    fn session_datagram(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) {
        let Some(s) = self.sessions.get_mut(&from) else {
            return;
        };
        if s.dtls.is_none() {
            self.enet_in(now, from, datagram);
            return;
        }
        // A ClientHello on an established session starts a new handshake from the same address
        // (a restarted client), behind the same cookie exchange as a new address; it runs beside
        // the old session, which lives on until the new one completes. While it runs, epoch-0
        // records belong to it; later records may belong to either session, and each discards
        // what it cannot decrypt.
        let hello = dtls::is_client_hello(&datagram);
        if s.established && s.replacement.is_none() && hello {
            let Some((cookie, first_hello)) = self.cookie_front(now, from, &datagram) else {
                return;
            };
            let Some(replacement) = self.accept_verified(now, from, cookie, &first_hello) else {
                return;
            };
            let Some(s) = self.sessions.get_mut(&from) else {
                return;
            };
            s.replacement = Some((replacement, now));
            self.replacing.insert(from);
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            return;
        };
        let Some(main) = s.dtls.as_mut() else {
            return;
        };
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        let epoch0 = record_epoch(&datagram) == Some(0);
        let for_new = s.established && (hello || (epoch0 && s.replacement.is_some()));
        let main_result = if for_new {
            Ok(())
        } else {
            let result = main.receive(now, &datagram, &mut events);
            send_dtls_output(&mut self.wire, main);
            result
        };
        let mut replaced = false;
        if let Some((r, _)) = s.replacement.as_mut() {
            let mut revents = Vec::new();
            let result = r.receive(now, &datagram, &mut revents);
            send_dtls_output(&mut self.wire, r);
            match result {
                Err(ReadError::Fatal(e)) => {
                    tracing::debug!(%from, error = %e, "replacement handshake failed");
                    s.replacement = None;
                    self.replacing.remove(&from);
                }
                _ => replaced = revents.iter().any(|e| matches!(e, DtlsEvent::Established)),
            }
        }
        if replaced {
            self.scratch = events;
            self.replace_session(now, from);
            return;
        }
        match main_result {
            Err(ReadError::Fatal(e)) => {
                self.scratch = events;
                tracing::debug!(%from, error = %e, "dtls session failed");
                self.drop_session(now, from, Some(CloseReason::Protocol(format!("dtls: {e}"))), PeerFate::Reset, false);
                return;
            }
            Err(ReadError::Discarded(e)) => {
                tracing::trace!(%from, error = %e, "dtls datagram discarded");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
        }
        for event in events.drain(..) {
            match event {
                DtlsEvent::Established => {
                    self.pending.remove(&from);
                    if let Some(s) = self.sessions.get_mut(&from) {
                        s.established = true;
                        s.cipher = s.dtls.as_ref().and_then(DtlsSession::cipher_suite);
                        tracing::debug!(%from, cipher = s.cipher.as_deref().unwrap_or("?"), "dtls session established");
                    }
                }
                DtlsEvent::Data(data) => self.enet_in(now, from, data),
                DtlsEvent::PeerClosed => {
                    self.peer_closed(now, from);
                    break;
                }
            }
        }
        self.scratch = events;
    }

    /// The peer sent close_notify. ENet first gets to process what arrived before it (an ENet
    /// DISCONNECT carrying the peer's close code usually does), then whatever is left ends.
    fn peer_closed(&mut self, now: Instant, addr: SocketAddr) {
        let Some(s) = self.sessions.get(&addr) else { return };
        let (h, serial) = (s.host, s.serial);
        self.service_host(now, h);
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        if s.serial != serial {
            return;
        }
        let reason = s.closing.take().unwrap_or(CloseReason::Remote { code: 0 });
        self.drop_session(now, addr, Some(reason), PeerFate::Reset, false);
    }

    /// The replacement handshake of `addr` completed: the old session and its link end, the new
    /// session starts unbound.
    fn replace_session(&mut self, now: Instant, addr: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let Some((new_dtls, _)) = s.replacement.take() else {
            return;
        };
        self.replacing.remove(&addr);
        let host = s.host;
        let old_peer = s.peer.take();
        let old_connect = s.connect_id.take();
        let old_link = s.link.take();
        let serial = self.next_serial;
        self.next_serial += 1;
        s.serial = serial;
        s.cipher = new_dtls.cipher_suite();
        s.dtls = Some(new_dtls);
        s.established = true;
        s.closing = None;
        s.remote_disconnect = false;
        self.reset_peer(host, addr, old_peer, old_connect.is_some());
        self.expiry.push_back((now + self.config.unbound_session_timeout, addr, serial));
        if let Some(link) = old_link {
            self.end_link(link, CloseReason::Remote { code: 0 });
        }
        tracing::debug!(%addr, "a new handshake from the same address replaced the session");
    }

    /// A decrypted (or, in plaintext mode, raw) ENet datagram of the session at `from`.
    fn enet_in(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) {
        let found = scan(&datagram, self.config.max_frame_bytes);
        if let Some(len) = found.oversize {
            let max = self.config.max_frame_bytes;
            self.protocol_close(now, from, format!("incoming message of {len} bytes exceeds the {max}-byte limit"), ErrorCode::TooLarge);
            return;
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            return;
        };
        if let Some(id) = found.connect_id {
            match s.connect_id {
                None => s.connect_id = Some(id),
                Some(known) if known == id => {}
                Some(_) if s.dtls.is_none() => {
                    // Plaintext dev: the client restarted on the same port.
                    self.drop_session(now, from, Some(CloseReason::Remote { code: 0 }), PeerFate::Reset, false);
                    self.new_session(now, from, datagram);
                    return;
                }
                Some(_) => {
                    // One ENet connection per DTLS session: a second CONNECT could only be
                    // an attempt to take more peer slots.
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        if found.disconnect.is_some() {
            s.remote_disconnect = true;
        }
        if let Some(slot) = self.hosts.get_mut(s.host) {
            slot.host.socket_mut().inbound.push_back((from, datagram));
            slot.dirty = true;
        }
    }

    // ---------------------------------------------------------------- ENet

    fn service_host(&mut self, now: Instant, h: usize) {
        // ENet produces a bounded number of events per datagram; the cap only guards against a
        // bug turning this into a spin.
        for _ in 0..1_000_000 {
            let Some(slot) = self.hosts.get_mut(h) else {
                return;
            };
            let event = match slot.host.service() {
                Ok(Some(event)) => event.no_ref(),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "enet service failed");
                    return;
                }
            };
            self.enet_event(now, h, event);
        }
    }

    fn peer_address(&self, h: usize, peer: PeerID) -> Option<SocketAddr> {
        self.hosts.get(h)?.host.get_peer(peer)?.address()
    }

    fn enet_event(&mut self, now: Instant, h: usize, event: EventNoRef) {
        match event {
            EventNoRef::Connect { peer, .. } => {
                let addr = self.peer_address(h, peer);
                let accepting = self.accepting;
                let session = addr.and_then(|a| self.sessions.get_mut(&a).map(|s| (a, s)));
                match session {
                    Some((addr, s)) if accepting && s.host == h && s.peer.is_none() && s.established => {
                        let id = LinkId::new(self.server_index, self.next_link_seq);
                        self.next_link_seq += 1;
                        let link = LinkShared::new(id);
                        s.peer = Some(peer);
                        s.link = Some(link.clone());
                        let cipher = s.cipher.clone();
                        if let Some(p) = self.hosts.get(h).and_then(|slot| slot.host.get_peer(peer)) {
                            link.set_path(u32::try_from(p.round_trip_time().as_millis()).unwrap_or(u32::MAX), 0.0);
                        }
                        self.links.insert(id, addr);
                        self.shared_links.insert(id, link);
                        tracing::debug!(link = %id, %addr, "link connected");
                        self.events_out.push_back(LinkEvent::Connected(PeerInfo {
                            link: id,
                            remote: addr,
                            kind: self.kind,
                            cipher_suite: cipher,
                        }));
                    }
                    _ => {
                        if let Some(p) = self.hosts.get_mut(h).and_then(|slot| slot.host.get_peer_mut(peer)) {
                            p.reset();
                        }
                    }
                }
            }
            EventNoRef::Receive { peer, channel_id, packet } => {
                let Some(addr) = self.peer_address(h, peer) else { return };
                let Some(s) = self.sessions.get(&addr) else { return };
                if s.host != h || s.peer != Some(peer) || s.closing.is_some() {
                    return;
                }
                let Some(link) = s.link.clone() else { return };
                let data = packet.data();
                if data.len() > self.config.max_frame_bytes {
                    let (len, max) = (data.len(), self.config.max_frame_bytes);
                    self.protocol_close(now, addr, format!("incoming message of {len} bytes exceeds the {max}-byte limit"), ErrorCode::TooLarge);
                    return;
                }
                link.add_received(data.len());
                let delivery = delivery_of(channel_id);
                self.events_out.push_back(LinkEvent::Message { link: link.id, data: Bytes::copy_from_slice(data), delivery });
            }
            EventNoRef::Disconnect { peer, data } => {
                let Some(addr) = self.peer_address(h, peer) else { return };
                let Some(s) = self.sessions.get_mut(&addr) else { return };
                if s.host != h || s.peer != Some(peer) {
                    return;
                }
                let reason = match s.closing.take() {
                    Some(reason) => reason,
                    None if s.remote_disconnect => CloseReason::Remote { code: u16::try_from(data).unwrap_or(u16::MAX) },
                    None => CloseReason::Timeout,
                };
                s.peer = None;
                self.drop_session(now, addr, Some(reason), PeerFate::Gone, true);
            }
        }
    }

    /// Encrypts and sends what host `h` produced.
    fn route_host_outbound(&mut self, now: Instant, h: usize) {
        let mut out = match self.hosts.get_mut(h) {
            Some(slot) if !slot.host.socket().outbound.is_empty() => std::mem::take(&mut slot.host.socket_mut().outbound),
            _ => return,
        };
        for (addr, datagram) in out.drain(..) {
            match self.sessions.get_mut(&addr) {
                Some(s) if s.host == h => match s.dtls.as_mut() {
                    Some(d) => {
                        if d.send(now, &datagram).is_ok() {
                            send_dtls_output(&mut self.wire, d);
                        }
                    }
                    None => self.wire.datagram_out(addr, BytesMut::from(&datagram[..])),
                },
                _ => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(slot) = self.hosts.get_mut(h) {
            // Give the buffer back to keep its capacity.
            if slot.host.socket().outbound.is_empty() {
                slot.host.socket_mut().outbound = out;
            }
        }
    }

    // ---------------------------------------------------------------- commands

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send { link, payload, delivery } => {
                let Some(addr) = self.links.get(&link) else { return };
                let Some(s) = self.sessions.get(addr) else { return };
                let (Some(peer), None) = (s.peer, s.closing.as_ref()) else { return };
                let Some(slot) = self.hosts.get_mut(s.host) else { return };
                let Some(p) = slot.host.get_peer_mut(peer) else { return };
                let len = payload.len();
                let (channel, kind) = match delivery {
                    Delivery::Reliable => (RELIABLE_CHANNEL, PacketKind::Reliable),
                    Delivery::Unreliable => (
                        UNRELIABLE_CHANNEL.min(u8::try_from(self.config.channels.saturating_sub(1)).unwrap_or(0)),
                        PacketKind::AlwaysUnreliable { sequenced: true },
                    ),
                };
                let packet = Packet::new(payload, kind);
                match p.send(channel, &packet) {
                    Ok(()) => {
                        if let Some(l) = s.link.as_ref() {
                            l.add_sent(len);
                        }
                        slot.flush = true;
                    }
                    Err(e) => tracing::debug!(%link, error = ?e, "enet send refused"),
                }
            }
            Command::Close { link, kind } => {
                let Some(&addr) = self.links.get(&link) else { return };
                match kind {
                    CloseKind::Local(code) => self.close_gracefully(addr, CloseReason::Local { code }, code),
                    CloseKind::SlowConsumer => {
                        tracing::debug!(%link, "closing a link that cannot keep up");
                        self.close_now(now, addr, CloseReason::SlowConsumer, ErrorCode::SlowConsumer.code());
                    }
                }
            }
        }
    }

    /// Asks ENet to disconnect once what is queued is delivered; the link ends on ENet's
    /// disconnect event (acknowledged or timed out).
    fn close_gracefully(&mut self, addr: SocketAddr, reason: CloseReason, code: u16) {
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        if s.closing.is_some() {
            return;
        }
        s.closing = Some(reason);
        if let Some(link) = s.link.as_ref() {
            link.mark_closed();
        }
        let (Some(peer), Some(slot)) = (s.peer, self.hosts.get_mut(s.host)) else { return };
        if let Some(p) = slot.host.get_peer_mut(peer) {
            p.disconnect_later(u32::from(code));
            slot.flush = true;
        }
    }

    /// Tells the peer `code` once (unreliably), drops what is queued, and ends the link now.
    fn close_now(&mut self, now: Instant, addr: SocketAddr, reason: CloseReason, code: u16) {
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        let h = s.host;
        let mut fate = PeerFate::Reset;
        if let (Some(peer), Some(slot)) = (s.peer, self.hosts.get_mut(h))
            && let Some(p) = slot.host.get_peer_mut(peer)
        {
            p.disconnect_now(u32::from(code));
            fate = PeerFate::Gone;
        }
        self.drop_session(now, addr, Some(reason), fate, true);
    }

    fn protocol_close(&mut self, now: Instant, addr: SocketAddr, why: String, code: ErrorCode) {
        tracing::debug!(%addr, reason = %why, "closing a link that broke the protocol");
        self.close_now(now, addr, CloseReason::Protocol(why), code.code());
    }

    // ---------------------------------------------------------------- teardown

    /// Removes the session at `addr`: resets or forgets its ENet peer, sends close_notify when
    /// `notify`, and reports its link (if any) disconnected with `reason`.
    fn drop_session(&mut self, now: Instant, addr: SocketAddr, reason: Option<CloseReason>, fate: PeerFate, notify: bool) {
        if notify && let Some(h) = self.sessions.get(&addr).map(|s| s.host) {
            // ENet's last words (the acknowledgement of the peer's DISCONNECT, or our own) go out
            // through the session before its close_notify.
            self.route_host_outbound(now, h);
        }
        let Some(mut s) = self.sessions.remove(&addr) else { return };
        if let Some(count) = self.per_ip.get_mut(&addr.ip()) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_ip.remove(&addr.ip());
            }
        }
        if let Some(slot) = self.hosts.get_mut(s.host) {
            slot.sessions = slot.sessions.saturating_sub(1);
        }
        self.pending.remove(&addr);
        self.replacing.remove(&addr);
        if fate == PeerFate::Reset {
            self.reset_peer(s.host, addr, s.peer, s.connect_id.is_some());
        }
        if notify && let Some(d) = s.dtls.as_mut() {
            d.close(now);
            send_dtls_output(&mut self.wire, d);
        }
        if let Some(link) = s.link.take() {
            self.end_link(link, reason.unwrap_or(CloseReason::Remote { code: 0 }));
        }
    }

    /// Resets the ENet peer of a session that is going away: the bound one, or, when a CONNECT
    /// was seen but no connect event yet, whichever peer of that host has the address.
    fn reset_peer(&mut self, h: usize, addr: SocketAddr, peer: Option<PeerID>, connect_seen: bool) {
        let Some(slot) = self.hosts.get_mut(h) else { return };
        if let Some(peer) = peer {
            if let Some(p) = slot.host.get_peer_mut(peer)
                && p.address() == Some(addr)
            {
                p.reset();
            }
        } else if connect_seen {
            for p in slot.host.peers_mut() {
                if p.state() != PeerState::Disconnected && p.address() == Some(addr) {
                    p.reset();
                }
            }
        }
    }

    fn end_link(&mut self, link: Arc<LinkShared>, reason: CloseReason) {
        link.mark_closed();
        self.links.remove(&link.id);
        self.shared_links.remove(&link.id);
        tracing::debug!(link = %link.id, ?reason, "link disconnected");
        self.events_out.push_back(LinkEvent::Disconnected { link: link.id, reason });
    }

    /// Graceful shutdown: stop accepting, ask every peer to disconnect with `ShuttingDown` after
    /// its queued data, wait up to the grace period, cut the rest, close every DTLS session, and
    /// report every link `Disconnected { Shutdown }`.
    async fn shutdown(mut self, mut commands_rx: mpsc::Receiver<Command>) {
        self.accepting = false;
        let code = ErrorCode::ShuttingDown.code();
        let now = Instant::now();
        // What was sent before the shutdown still goes out, ahead of the disconnects.
        for _ in 0..self.config.command_capacity {
            let Ok(command) = commands_rx.try_recv() else { break };
            self.command(now, command);
        }
        let addrs: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for addr in addrs {
            let linked = self.sessions.get(&addr).is_some_and(|s| s.peer.is_some());
            if linked {
                if let Some(s) = self.sessions.get_mut(&addr) {
                    s.closing = None;
                }
                self.close_gracefully(addr, CloseReason::Shutdown, code);
            } else {
                self.drop_session(now, addr, None, PeerFate::Reset, true);
            }
        }
        self.pump(now);
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        let mut tick = tokio::time::interval(self.config.service_interval);
        while self.sessions.values().any(|s| s.peer.is_some()) && tokio::time::Instant::now() < deadline {
            tokio::select! {
                r = self.wire.readable() => if r.is_ok() { self.read_datagrams(Instant::now()) },
                _ = tick.tick() => {
                    for slot in &mut self.hosts {
                        slot.dirty = true;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            // Sends racing the shutdown are dropped; their queued bytes are given back.
            while commands_rx.try_recv().is_ok() {}
            self.pump(Instant::now());
        }
        let now = Instant::now();
        let addrs: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for addr in addrs {
            self.close_now(now, addr, CloseReason::Shutdown, code);
        }
        self.pump(now);
        let flush_deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while self.wire.has_backlog() && tokio::time::Instant::now() < flush_deadline {
            let _ = tokio::time::timeout_at(flush_deadline, self.wire.writable()).await;
            self.wire.flush_backlog();
        }
        let event_deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while let Some(event) = self.events_out.pop_front() {
            match tokio::time::timeout_at(event_deadline, self.events.send(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(left = self.events_out.len() + 1, "enet server: link events not taken before shutdown");
                    break;
                }
            }
        }
        self.publish_counters();
        tracing::info!(addr = %self.wire.local_addr(), "enet server stopped");
    }
}

/// Sleeps until a conditioned datagram is due (never when none is).
pub(crate) async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends every datagram a DTLS session has queued.
fn send_dtls_output(wire: &mut Wire, session: &mut DtlsSession) {
    while let Some(datagram) = session.poll_datagram() {
        wire.datagram_out(session.remote(), datagram);
    }
}

/// The epoch of the first DTLS record in a datagram.
fn record_epoch(datagram: &[u8]) -> Option<u16> {
    let bytes = datagram.get(3..5)?;
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// How a received message travelled, by its channel: rusty_enet 0.4.1's `Packet::kind` reports
/// every received packet as reliable (it ORs the flags with `!SENT`), so the channel decides.
pub(crate) fn delivery_of(channel_id: u8) -> Delivery {
    if channel_id == RELIABLE_CHANNEL { Delivery::Reliable } else { Delivery::Unreliable }
}

/// Bytes of incoming data ENet may hold per peer (out-of-order or reassembling).
pub(crate) fn waiting_data_limit(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(4).max(256 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::ServerIdentity;
    use crate::dtls::Verify;
    use crate::enet::{ClientTrust, EnetClient, EnetClientConfig};
    use tokio::net::UdpSocket;

    /// A DTLS session to `server` with no ENet behind it, to speak raw bytes inside DTLS.
    async fn raw_dtls(server: SocketAddr, pin: [u8; 32]) -> (UdpSocket, DtlsSession) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = socket.local_addr().expect("addr");
        let config = dtls::client_config(Verify::Pin(pin), server).expect("config");
        let mut session = DtlsSession::connect(Instant::now(), local, server, &config).expect("connect");
        let mut buf = vec![0u8; 65536];
        for _ in 0..50 {
            while let Some(d) = session.poll_datagram() {
                socket.send_to(&d, server).await.expect("send");
            }
            if session.is_established() {
                break;
            }
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                .await
                .expect("handshake answer in time")
                .expect("recv");
            let mut events = Vec::new();
            let _ = session.receive(Instant::now(), &buf[..n], &mut events);
        }
        assert!(session.is_established());
        (socket, session)
    }

    #[tokio::test]
    async fn garbage_enet_inside_a_valid_dtls_session_harms_no_other_link() {
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let config = EnetConfig {
            identity: Some(identity.clone()),
            unbound_session_timeout: Duration::from_millis(500),
            ..EnetConfig::default()
        };
        let (tx, mut events) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let server = EnetServer::start(config, 0, tx, shutdown.clone()).await.expect("server");
        let addr = server.local_addr();
        let pin = identity.cert_sha256();
        let mut good = EnetClient::connect(EnetClientConfig::new(addr, ClientTrust::PinSha256(pin)), Duration::from_secs(5))
            .await
            .expect("good client");
        let Some(LinkEvent::Connected(info)) = events.recv().await else { panic!("expected the good link") };

        let (socket, mut raw) = raw_dtls(addr, pin).await;
        let seed: u32 = rand::random();
        println!("garbage seed {seed}");
        let mut x = seed | 1;
        let mut noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        };
        let mut connect = vec![0x8F, 0xFF, 0, 0, 0x82, 0, 0, 1];
        connect.resize(4 + 48, 0);
        let mut second_connect = connect.clone();
        second_connect[4 + 40] = 9;
        let mut huge_fragment = vec![0x00, 0x00, 0x88, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 0x7F, 0, 0, 0];
        huge_fragment.resize(2 + 24 + 4, 0);
        let mut datagrams = vec![Vec::new(), vec![0xFF; 3], connect, second_connect];
        for len in [1, 2, 4, 9, 48, 200, 1195, 4000, 5000] {
            datagrams.push(noise(len));
        }
        datagrams.push(huge_fragment);
        for d in &datagrams {
            raw.send(Instant::now(), d).expect("dtls send");
            while let Some(out) = raw.poll_datagram() {
                socket.send_to(&out, addr).await.expect("send");
            }
        }
        // The good link still works both ways while the garbage is processed.
        good.send(Bytes::from_static(b"still fine"), Delivery::Reliable).expect("send");
        server.sink().send(info.link, Bytes::from_static(b"you too"), Delivery::Reliable).expect("send");
        let Some(LinkEvent::Message { data, .. }) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("in time")
        else {
            panic!("expected a message")
        };
        assert_eq!(&data[..], b"still fine");
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), good.recv()).await.expect("in time"),
            Some(crate::ClientEvent::Message { .. })
        ));
        // The garbage session never became a link, and is gone in time.
        for _ in 0..300 {
            if server.stats().sessions == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = server.stats();
        assert_eq!((stats.sessions, stats.links), (1, 1), "{stats:?}");
        assert!(events.try_recv().is_err(), "no event from the garbage session");
        shutdown.cancel();
        server.stopped().await;
    }
}
