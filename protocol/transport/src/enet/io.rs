//! The UDP socket of an ENet server or client, and the two functions every datagram passes
//! through: [`Wire::datagram_out`] and [`Wire::recv_datagram`]. The optional link conditioner
//! (latency, loss, reordering; tests only) sits there, one per direction, and nowhere else.
//!
//! Addresses are normalised: an IPv4 peer reaching a dual-stack socket appears as its plain IPv4
//! address (not `::ffff:a.b.c.d`), so session tables and per-IP caps see one key per peer.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::UdpSocket;

use crate::conditioner::{Conditioner, ConditionerConfig};
use crate::error::TransportError;

type Conditioned = Conditioner<(SocketAddr, BytesMut)>;

/// The most datagrams kept waiting when the socket's send buffer is full; beyond it datagrams are
/// dropped as the network would drop them (ENet and DTLS retransmit what matters).
const BACKLOG_LIMIT: usize = 65_536;

/// The largest datagram read; anything longer is truncated by the kernel and then fails to parse.
const RECV_BUFFER: usize = 65_536;

pub(crate) struct Wire {
    socket: UdpSocket,
    local: SocketAddr,
    backlog: VecDeque<(SocketAddr, BytesMut)>,
    buf: Box<[u8]>,
    /// Conditioners for datagrams read and datagrams sent, when a test asked for a bad network.
    conditioned_in: Option<Conditioned>,
    conditioned_out: Option<Conditioned>,
    pub(crate) datagrams_in: u64,
    pub(crate) datagrams_out: u64,
    pub(crate) datagrams_dropped_out: u64,
}

/// Kernel buffer asked for on a server socket. The default (about 208 KiB) overflows with a few
/// thousand links pinging (the transport bench saw hundreds of drops per second at 4,000 idle
/// links), and every drop costs an ENet retransmission or a timed-out link.
pub(crate) const SERVER_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

impl Wire {
    /// Binds a UDP socket; `buffer_bytes` asks the kernel for larger receive and send buffers (the
    /// kernel may grant less: `net.core.rmem_max` caps it, which is not an error).
    pub(crate) async fn bind(addr: SocketAddr, buffer_bytes: Option<usize>) -> Result<Wire, TransportError> {
        let bind_err = |source| TransportError::Bind { addr, source };
        let raw = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
            .map_err(bind_err)?;
        if let Some(bytes) = buffer_bytes {
            if let Err(e) = raw.set_recv_buffer_size(bytes).and_then(|()| raw.set_send_buffer_size(bytes)) {
                tracing::warn!(error = %e, bytes, "cannot enlarge the UDP socket buffers");
            }
        }
        raw.set_nonblocking(true).map_err(bind_err)?;
        raw.bind(&addr.into()).map_err(bind_err)?;
        let socket = UdpSocket::from_std(raw.into()).map_err(bind_err)?;
        let local = socket
            .local_addr()
            .map_err(TransportError::Io)?;
        Ok(Wire {
            socket,
            local,
            backlog: VecDeque::new(),
            buf: vec![0u8; RECV_BUFFER].into_boxed_slice(),
            conditioned_in: None,
            conditioned_out: None,
            datagrams_in: 0,
            datagrams_out: 0,
            datagrams_dropped_out: 0,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Puts both directions of this socket through a link conditioner (the outgoing one seeded
    /// with `seed + 1`), or takes it away.
    pub(crate) fn set_conditioner(&mut self, config: Option<ConditionerConfig>) {
        self.conditioned_in = config.clone().map(Conditioner::new);
        self.conditioned_out = config.map(|mut c| {
            c.seed = c.seed.wrapping_add(1);
            Conditioner::new(c)
        });
    }

    /// Sends one datagram, or queues it while the socket's buffer is full. Every datagram this
    /// process sends leaves through here.
    pub(crate) fn datagram_out(&mut self, to: SocketAddr, datagram: BytesMut) {
        if let Some(conditioner) = self.conditioned_out.as_mut() {
            let now = Instant::now();
            conditioner.push(now, (to, datagram));
            self.release_due(now);
            return;
        }
        self.send_now(to, datagram);
    }

    /// Sends the conditioned datagrams that are due.
    pub(crate) fn release_due(&mut self, now: Instant) {
        while let Some((to, datagram)) = self.conditioned_out.as_mut().and_then(|c| c.poll(now)) {
            self.send_now(to, datagram);
        }
    }

    /// When a conditioned datagram (either direction) is next due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let a = self.conditioned_in.as_ref().and_then(Conditioner::next_due);
        let b = self.conditioned_out.as_ref().and_then(Conditioner::next_due);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn send_now(&mut self, to: SocketAddr, datagram: BytesMut) {
        let to = self.to_socket_family(to);
        if !self.backlog.is_empty() {
            self.park(to, datagram);
            return;
        }
        match self.socket.try_send_to(&datagram, to) {
            Ok(_) => self.datagrams_out += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.park(to, datagram),
            Err(e) => {
                self.datagrams_dropped_out += 1;
                tracing::debug!(%to, error = %e, "udp send failed");
            }
        }
    }

    /// Receives one datagram if one is waiting (conditioned: if one is due). Every datagram
    /// this process reads arrives through here.
    pub(crate) fn recv_datagram(&mut self) -> Option<(SocketAddr, BytesMut)> {
        if self.conditioned_in.is_none() {
            return self.recv_now();
        }
        let now = Instant::now();
        for _ in 0..1024 {
            let Some(datagram) = self.recv_now() else { break };
            if let Some(conditioner) = self.conditioned_in.as_mut() {
                conditioner.push(now, datagram);
            }
        }
        self.conditioned_in.as_mut().and_then(|c| c.poll(now))
    }

    fn recv_now(&mut self) -> Option<(SocketAddr, BytesMut)> {
        loop {
            match self.socket.try_recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    self.datagrams_in += 1;
                    let data = self.buf.get(..len).map(BytesMut::from).unwrap_or_default();
                    return Some((normalize(from), data));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // ICMP errors from earlier sends (e.g. connection refused) surface here on some
                // platforms; they say nothing about the next datagram.
                Err(e) => tracing::debug!(error = %e, "udp receive failed"),
            }
        }
    }

    /// Sends what waited for buffer space; true when nothing waits any more.
    pub(crate) fn flush_backlog(&mut self) -> bool {
        while let Some((to, datagram)) = self.backlog.front() {
            match self.socket.try_send_to(datagram, *to) {
                Ok(_) => self.datagrams_out += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => self.datagrams_dropped_out += 1,
            }
            self.backlog.pop_front();
        }
        true
    }

    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    fn park(&mut self, to: SocketAddr, datagram: BytesMut) {
        if self.backlog.len() < BACKLOG_LIMIT {
            self.backlog.push_back((to, datagram));
        } else {
            self.datagrams_dropped_out += 1;
        }
    }

    /// An IPv4 destination on an IPv6 socket must be written v4-mapped.
    fn to_socket_family(&self, to: SocketAddr) -> SocketAddr {
        match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
            _ => to,
        }
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; every other address unchanged.
pub(crate) fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}
