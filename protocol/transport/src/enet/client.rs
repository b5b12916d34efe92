//! The ENet-over-DTLS client: one link, driven by one task that owns its UDP socket, its DTLS
//! session and a one-peer ENet host (the same sans-IO stack as the server). For tests, the bench
//! and tools; Godot clients use Godot's own `ENetConnection`.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use protocol::ErrorCode;
use rusty_enet::{EventNoRef, Host, HostSettings, Packet, PacketKind, PeerID};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::io::Wire;
use super::server::{delivery_of, sleep_until_due, waiting_data_limit};
use super::shared::{CloseKind, Command, Commands, LinkShared, queue_send};
use super::wire::{Bridge, enet_clock, scan};
use super::{ClientTrust, EnetClientConfig, RELIABLE_CHANNEL, UNRELIABLE_CHANNEL};
use crate::dtls::{self, DtlsConfig, DtlsEvent, DtlsSession, ReadError, Verify};
use crate::error::TransportError;
use crate::link::{ClientEvent, CloseReason, Delivery, LinkId, LinkStats, SendError};

/// Client links are numbered in their own id space (server index `u16::MAX`), for errors and logs.
static NEXT_CLIENT_LINK: AtomicU64 = AtomicU64::new(1);

/// How long a graceful close waits for the server to acknowledge the ENet disconnect.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One client link over ENet inside DTLS (or plaintext ENet to a loopback dev server).
pub struct EnetClient {
    link: Arc<LinkShared>,
    commands: Arc<Commands>,
    events: mpsc::Receiver<ClientEvent>,
    /// Events taken off the channel by `close`, still to be returned by `recv`.
    backlog: VecDeque<ClientEvent>,
    cipher: Option<String>,
    local_addr: SocketAddr,
    max_frame_bytes: usize,
    max_queued_bytes: usize,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl EnetClient {
    /// Runs the DTLS handshake (verifying the server by CA and name, or by pin) and the ENet
    /// connect, within `timeout`.
    pub async fn connect(config: EnetClientConfig, timeout: Duration) -> Result<EnetClient, TransportError> {
        let dtls = match &config.trust {
            ClientTrust::PlaintextDev => {
                if !config.server.ip().is_loopback() {
                    return Err(TransportError::Config(format!(
                        "plaintext ENet refused to {}: only a loopback server may be plaintext",
                        config.server
                    )));
                }
                None
            }
            ClientTrust::CaPem(pem) => Some(dtls::client_config(
                Verify::Ca { ca_pem: pem, server_name: &config.server_name },
                config.server,
            )?),
            ClientTrust::PinSha256(pin) => Some(dtls::client_config(Verify::Pin(*pin), config.server)?),
        };
        if config.channels == 0 || config.channels > 255 {
            return Err(TransportError::Config(format!("channels {} is not within 1..=255", config.channels)));
        }
        let bind = config.bind.unwrap_or_else(|| match config.server {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        });
        let mut wire = Wire::bind(bind, None).await?;
        wire.set_conditioner(config.conditioner.clone());
        let local_addr = wire.local_addr();
        let host = client_host(&config)?;
        let link = LinkShared::new(LinkId::new(u16::MAX, NEXT_CLIENT_LINK.fetch_add(1, Ordering::Relaxed)));
        let (commands, commands_rx) = Commands::new(4096);
        let (events_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let cancel = CancellationToken::new();
        let task = ClientTask {
            server: config.server,
            channels: config.channels,
            max_frame_bytes: config.max_frame_bytes,
            service_interval: config.service_interval,
            wire,
            dtls_config: dtls,
            dtls: None,
            host,
            peer: None,
            link: link.clone(),
            connected: false,
            closing: None,
            close_deadline: None,
            remote_disconnect: false,
            finished: None,
            events: events_tx,
            out: VecDeque::new(),
            event_capacity: config.event_capacity.max(1),
            ready: Some(ready_tx),
        };
        let task = tokio::spawn(task.run(commands_rx, cancel.clone()));
        let mut client = EnetClient {
            link,
            commands,
            events,
            backlog: VecDeque::new(),
            cipher: None,
            local_addr,
            max_frame_bytes: config.max_frame_bytes,
            max_queued_bytes: config.max_queued_bytes,
            cancel,
            task: Some(task),
        };
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(Ok(cipher))) => {
                client.cipher = cipher;
                Ok(client)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(TransportError::Closed(CloseReason::Protocol("the client task ended while connecting".into()))),
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    /// Queues a message without blocking; see [`crate::LinkSink::send`].
    pub fn send(&mut self, data: Bytes, delivery: Delivery) -> Result<(), SendError> {
        queue_send(&self.commands, &self.link, data, delivery, self.max_frame_bytes, self.max_queued_bytes)
    }

    /// The next message, or `Closed` once (then `None`).
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        self.events.recv().await
    }

    /// Closes the link with `code` (seen by the server as `CloseReason::Remote { code }`) after
    /// what is queued is delivered, and waits for the client task to end. Events still unread stay
    /// readable with [`EnetClient::recv`], ending with `Closed`.
    pub async fn close(&mut self, code: u16) {
        if self.link.mark_closed() {
            self.commands.close(self.link.id, CloseKind::Local(code));
        }
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.backlog.push_back(event),
                Ok(None) => break,
                Err(_) => {
                    self.cancel.cancel();
                    break;
                }
            }
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }

    /// Drops the link without a word to the server, as a crashed client would (tests, bench).
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> LinkStats {
        self.link.stats()
    }

    /// The negotiated DTLS cipher suite (IANA name), `None` for plaintext.
    pub fn cipher_suite(&self) -> Option<String> {
        self.cipher.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for EnetClient {
    /// Tells the server the link is gone (ENet disconnect, close_notify) and ends the task.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn client_host(config: &EnetClientConfig) -> Result<Host<Bridge>, TransportError> {
    let bad = |what: String| TransportError::Config(format!("enet client host: {what}"));
    let mut host = Host::new(
        Bridge::default(),
        HostSettings {
            peer_limit: 1,
            channel_limit: config.channels,
            incoming_bandwidth_limit: None,
            outgoing_bandwidth_limit: None,
            compressor: None,
            checksum: None,
            time: enet_clock(),
            seed: None,
        },
    )
    .map_err(|e| bad(format!("{e:?}")))?;
    host.set_mtu(config.mtu).map_err(|e| bad(format!("mtu {}: {e:?}", config.mtu)))?;
    host.set_maximum_packet_size(config.max_frame_bytes.max(1)).map_err(|e| bad(format!("{e:?}")))?;
    host.set_maximum_waiting_data(waiting_data_limit(config.max_frame_bytes)).map_err(|e| bad(format!("{e:?}")))?;
    Ok(host)
}

enum Wake {
    Gone,
    Work,
}

type Ready = oneshot::Sender<Result<Option<String>, TransportError>>;

struct ClientTask {
    server: SocketAddr,
    channels: usize,
    max_frame_bytes: usize,
    service_interval: Duration,
    wire: Wire,
    dtls_config: Option<DtlsConfig>,
    dtls: Option<DtlsSession>,
    host: Host<Bridge>,
    peer: Option<PeerID>,
    link: Arc<LinkShared>,
    connected: bool,
    closing: Option<CloseReason>,
    close_deadline: Option<Instant>,
    remote_disconnect: bool,
    /// Set when the link has ended, with why.
    finished: Option<CloseReason>,
    events: mpsc::Sender<ClientEvent>,
    out: VecDeque<ClientEvent>,
    event_capacity: usize,
    ready: Option<Ready>,
}

impl ClientTask {
    async fn run(mut self, mut commands_rx: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let now = Instant::now();
        match self.dtls_config.clone() {
            Some(cfg) => match DtlsSession::connect(now, self.wire.local_addr(), self.server, &cfg) {
                Ok(session) => {
                    self.dtls = Some(session);
                    self.flush_dtls();
                }
                Err(e) => self.fail(e),
            },
            None => self.start_enet(),
        }
        let mut next_tick = Instant::now() + self.service_interval;
        let mut batch = Vec::new();
        while self.finished.is_none() {
            // A full event channel stops reading the network: the server sees a slow reader.
            let open = self.out.len() < self.event_capacity;
            let due = self.wire.next_due();
            let wake = tokio::select! {
                biased;
                _ = cancel.cancelled() => Wake::Gone,
                permit = self.events.reserve(), if !self.out.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.out.pop_front() {
                            permit.send(event);
                        }
                        Wake::Work
                    }
                    // Nobody reads this client any more.
                    Err(_) => Wake::Gone,
                },
                _ = self.wire.readable(), if open => Wake::Work,
                n = commands_rx.recv_many(&mut batch, 256) => if n == 0 { Wake::Gone } else { Wake::Work },
                _ = self.wire.writable(), if self.wire.has_backlog() => Wake::Work,
                _ = sleep_until_due(due), if due.is_some() => Wake::Work,
                _ = tokio::time::sleep_until(next_tick.into()) => Wake::Work,
            };
            let now = Instant::now();
            if let Wake::Gone = wake {
                // Dropped, or the handle is gone without a close.
                self.goodbye(now);
                self.finish(CloseReason::Local { code: 0 });
                break;
            }
            for command in batch.drain(..) {
                self.command(command);
            }
            if open {
                self.read_datagrams(now);
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + self.service_interval;
            }
            self.pump(now);
        }
        if let Some(ready) = self.ready.take() {
            let reason = self.finished.clone().unwrap_or(CloseReason::Local { code: 0 });
            let _ = ready.send(Err(TransportError::Closed(reason)));
            return;
        }
        self.wire.flush_backlog();
        // Hand over what is left, ending with Closed, unless nobody reads any more.
        while let Some(event) = self.out.pop_front() {
            tokio::select! {
                r = self.events.send(event) => if r.is_err() { break },
                _ = cancel.cancelled() => break,
            }
        }
    }

    fn start_enet(&mut self) {
        match self.host.connect(self.server, self.channels, 0) {
            Ok(peer) => self.peer = Some(peer.id()),
            Err(_) => self.fail(TransportError::Config("no free enet peer".into())),
        }
    }

    fn fail(&mut self, error: TransportError) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(error));
        }
        self.finished = Some(CloseReason::Protocol("connect failed".into()));
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.finished.is_some() {
            return;
        }
        self.link.mark_closed();
        if self.connected {
            self.out.push_back(ClientEvent::Closed(reason.clone()));
        }
        self.finished = Some(reason);
    }

    fn read_datagrams(&mut self, now: Instant) {
        for _ in 0..1024 {
            let Some((from, datagram)) = self.wire.recv_datagram() else { break };
            if from != self.server {
                continue;
            }
            self.datagram_in(now, datagram);
            if self.finished.is_some() {
                break;
            }
        }
    }

    fn datagram_in(&mut self, now: Instant, datagram: BytesMut) {
        let Some(session) = self.dtls.as_mut() else {
            self.enet_in(datagram);
            return;
        };
        let mut events = Vec::new();
        let result = session.receive(now, &datagram, &mut events);
        self.flush_dtls();
        match result {
            Err(ReadError::Fatal(e)) => {
                if self.ready.is_some() {
                    self.fail(TransportError::Handshake(e));
                } else {
                    self.finish(CloseReason::Protocol(format!("dtls: {e}")));
                }
                return;
            }
            Err(ReadError::Discarded(_)) | Ok(()) => {}
        }
        for event in events {
            match event {
                DtlsEvent::Established => self.start_enet(),
                DtlsEvent::Data(data) => self.enet_in(data),
                DtlsEvent::PeerClosed => {
                    // ENet first processes what arrived before (usually the server's DISCONNECT
                    // with its close code).
                    self.pump(now);
                    if self.finished.is_some() {
                        return;
                    }
                    if let Some(p) = self.peer.and_then(|p| self.host.get_peer_mut(p)) {
                        p.reset();
                    }
                    let reason = self.closing.take().unwrap_or(CloseReason::Remote { code: 0 });
                    self.finish(reason);
                    return;
                }
            }
        }
    }

    fn enet_in(&mut self, datagram: BytesMut) {
        let found = scan(&datagram, self.max_frame_bytes);
        if let Some(len) = found.oversize {
            self.protocol_close(format!("incoming message of {len} bytes exceeds the {}-byte limit", self.max_frame_bytes));
            return;
        }
        if found.disconnect.is_some() {
            self.remote_disconnect = true;
        }
        self.host.socket_mut().inbound.push_back((self.server, datagram));
    }

    fn protocol_close(&mut self, why: String) {
        if let Some(p) = self.peer.and_then(|p| self.host.get_peer_mut(p)) {
            p.disconnect_now(u32::from(ErrorCode::TooLarge.code()));
        }
        self.peer = None;
        self.route_outbound(Instant::now());
        if let Some(d) = self.dtls.as_mut() {
            d.close(Instant::now());
        }
        self.flush_dtls();
        self.finish(CloseReason::Protocol(why));
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Send { payload, delivery, .. } => {
                let Some(p) = self.peer.and_then(|p| self.host.get_peer_mut(p)) else { return };
                if !self.connected || self.closing.is_some() {
                    return;
                }
                let len = payload.len();
                let (channel, kind) = match delivery {
                    Delivery::Reliable => (RELIABLE_CHANNEL, PacketKind::Reliable),
                    Delivery::Unreliable => (
                        UNRELIABLE_CHANNEL.min(u8::try_from(self.channels.saturating_sub(1)).unwrap_or(0)),
                        PacketKind::AlwaysUnreliable { sequenced: true },
                    ),
                };
                if p.send(channel, &Packet::new(payload, kind)).is_ok() {
                    self.link.add_sent(len);
                }
            }
            Command::Close { kind, .. } => {
                let code = match kind {
                    CloseKind::Local(code) => code,
                    CloseKind::SlowConsumer => ErrorCode::SlowConsumer.code(),
                };
                if self.closing.is_some() {
                    return;
                }
                self.closing = Some(match kind {
                    CloseKind::Local(code) => CloseReason::Local { code },
                    CloseKind::SlowConsumer => CloseReason::SlowConsumer,
                });
                match self.peer.and_then(|p| self.host.get_peer_mut(p)) {
                    Some(p) if self.connected => {
                        p.disconnect_later(u32::from(code));
                        self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                    }
                    _ => {
                        let reason = self.closing.clone().unwrap_or(CloseReason::Local { code });
                        self.goodbye(Instant::now());
                        self.finish(reason);
                    }
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if let Some(d) = self.dtls.as_mut()
            && !d.is_established()
            && d.next_timeout().is_some_and(|t| t <= now)
            && let Err(e) = d.handle_timeout(now)
        {
            self.fail(TransportError::Handshake(format!("no answer from the server: {e}")));
        }
        self.flush_dtls();
        if let Some(deadline) = self.close_deadline
            && now >= deadline
        {
            let reason = self.closing.take().unwrap_or(CloseReason::Local { code: 0 });
            self.goodbye(now);
            self.finish(reason);
        }
        if let Some(p) = self.peer.and_then(|p| self.host.get_peer(p)) {
            self.link.set_path(
                u32::try_from(p.round_trip_time().as_millis()).unwrap_or(u32::MAX),
                p.packet_loss() as f32 / rusty_enet::consts::PEER_PACKET_LOSS_SCALE as f32,
            );
        }
    }

    fn pump(&mut self, now: Instant) {
        if self.finished.is_some() {
            return;
        }
        for _ in 0..100_000 {
            let event = match self.host.service() {
                Ok(Some(event)) => event.no_ref(),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "enet service failed");
                    break;
                }
            };
            self.enet_event(event);
            if self.finished.is_some() {
                break;
            }
        }
        self.route_outbound(now);
        self.wire.release_due(now);
        self.wire.flush_backlog();
    }

    fn enet_event(&mut self, event: EventNoRef) {
        match event {
            EventNoRef::Connect { peer, .. } => {
                if Some(peer) != self.peer {
                    return;
                }
                self.connected = true;
                let cipher = self.dtls.as_ref().and_then(DtlsSession::cipher_suite);
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(cipher));
                }
            }
            EventNoRef::Receive { peer, channel_id, packet } => {
                if Some(peer) != self.peer || self.closing.is_some() {
                    return;
                }
                let data = packet.data();
                if data.len() > self.max_frame_bytes {
                    self.protocol_close(format!("incoming message of {} bytes exceeds the {}-byte limit", data.len(), self.max_frame_bytes));
                    return;
                }
                self.link.add_received(data.len());
                let delivery = delivery_of(channel_id);
                self.out.push_back(ClientEvent::Message { data: Bytes::copy_from_slice(data), delivery });
            }
            EventNoRef::Disconnect { peer, data } => {
                if Some(peer) != self.peer {
                    return;
                }
                let reason = match self.closing.take() {
                    Some(reason) => reason,
                    None if self.remote_disconnect => CloseReason::Remote { code: u16::try_from(data).unwrap_or(u16::MAX) },
                    None => CloseReason::Timeout,
                };
                self.peer = None;
                // ENet's acknowledgement of the server's DISCONNECT goes out before close_notify.
                self.route_outbound(Instant::now());
                if let Some(d) = self.dtls.as_mut() {
                    d.close(Instant::now());
                }
                self.flush_dtls();
                if !self.connected
                    && let Some(ready) = self.ready.take()
                {
                    let _ = ready.send(Err(TransportError::Closed(reason.clone())));
                }
                self.finish(reason);
            }
        }
    }

    /// Leaves without waiting: one ENet disconnect and a close_notify.
    fn goodbye(&mut self, now: Instant) {
        if let Some(p) = self.peer.and_then(|p| self.host.get_peer_mut(p)) {
            p.disconnect_now(0);
        }
        self.peer = None;
        self.route_outbound(now);
        if let Some(d) = self.dtls.as_mut() {
            d.close(now);
        }
        self.flush_dtls();
        self.wire.flush_backlog();
    }

    fn route_outbound(&mut self, now: Instant) {
        let out = std::mem::take(&mut self.host.socket_mut().outbound);
        for (_, datagram) in out {
            match self.dtls.as_mut() {
                Some(d) => {
                    if d.send(now, &datagram).is_err() {
                        continue;
                    }
                }
                None => self.wire.datagram_out(self.server, BytesMut::from(&datagram[..])),
            }
        }
        self.flush_dtls();
    }

    fn flush_dtls(&mut self) {
        if let Some(d) = self.dtls.as_mut() {
            while let Some(datagram) = d.poll_datagram() {
                self.wire.datagram_out(self.server, datagram);
            }
        }
    }
}
