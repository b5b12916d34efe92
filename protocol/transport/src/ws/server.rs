//! The WebSocket server: one accept task, a fixed number of shard tasks each polling many
//! connection futures, and the [`LinkSink`] that queues messages for them.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::driver::{CloseRequest, Driver, DriverConfig, LinkShared};
use super::io::{Io, server_config};
use crate::conditioner::ConditionerConfig;
use crate::error::TransportError;
use crate::link::{Delivery, LinkEvent, LinkId, LinkKind, LinkSink, LinkStats, PeerInfo, SendError};

/// The server's certificate chain and private key, PEM-encoded.
#[derive(Clone)]
pub struct WsTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl WsTls {
    /// Reads the certificate chain and key from PEM files (production; tests pass bytes).
    pub fn from_files(cert: &Path, key: &Path) -> Result<WsTls, TransportError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| TransportError::TlsConfig(format!("cannot read {}: {e}", p.display())))
        };
        Ok(WsTls { cert_pem: read(cert)?, key_pem: read(key)? })
    }
}

impl std::fmt::Debug for WsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never goes to a log.
        f.debug_struct("WsTls").field("cert_pem_bytes", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

/// Everything a WebSocket server can be told. `Default` is the GCS's: 127.0.0.1:7350, `/ws`.
#[derive(Clone, Debug)]
pub struct WsConfig {
    pub bind: SocketAddr,
    /// The only request path that is upgraded; anything else gets HTTP 404.
    pub path: String,
    /// Serve `wss://` with this identity; `None` serves plain `ws://` (behind a TLS-terminating
    /// proxy, or on loopback).
    pub tls: Option<WsTls>,
    /// The largest envelope accepted or sent, in bytes; larger incoming frames close the link.
    pub max_frame_bytes: usize,
    /// Bytes that may wait in one link's outgoing queue before it is closed as a slow consumer.
    pub max_queued_bytes_per_link: usize,
    /// Links held at once, handshakes included; more are refused at accept. Each link is a file
    /// descriptor, and processes here are limited to 20,000 (DESIGN §11).
    pub max_links: usize,
    /// Links held at once from one IP address (players behind one NAT share an address).
    pub max_links_per_ip: usize,
    /// How long the TLS and WebSocket handshakes together may take.
    pub handshake_timeout: Duration,
    /// How often the server pings each link (which also measures the round trip).
    pub ping_interval: Duration,
    /// A link from which nothing (not even a pong) arrives for this long is closed as
    /// [`CloseReason::Timeout`](crate::CloseReason::Timeout).
    pub idle_timeout: Duration,
    /// How long a closing link may take to flush and complete the close handshake.
    pub close_timeout: Duration,
    /// Shard tasks driving the connections; 0 means one per core.
    pub shards: usize,
    /// tungstenite's read buffer per link, allocated up front: the main per-link memory cost.
    pub read_buffer_bytes: usize,
    /// Conditions every link's incoming and outgoing messages (tests only).
    pub conditioner: Option<ConditionerConfig>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 7350)),
            path: "/ws".into(),
            tls: None,
            max_frame_bytes: protocol::MAX_FRAME_BYTES,
            max_queued_bytes_per_link: 512 * 1024,
            max_links: 19_000,
            max_links_per_ip: 256,
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            close_timeout: Duration::from_secs(2),
            shards: 0,
            read_buffer_bytes: 4096,
            conditioner: None,
        }
    }
}

/// A running WebSocket server. It stops when the `shutdown` token given to
/// [`WsServer::start`] is cancelled; dropping this handle does not stop it.
pub struct WsServer {
    local_addr: SocketAddr,
    sink: Arc<WsSink>,
    tasks: TaskTracker,
}

impl WsServer {
    /// Binds, then runs the acceptor and the shards until `shutdown` is cancelled. Link ids carry
    /// `server_index` (from [`Links::next_index`](crate::Links::next_index)); events go to
    /// `events`.
    pub async fn start(
        config: WsConfig,
        server_index: u16,
        events: mpsc::Sender<LinkEvent>,
        shutdown: CancellationToken,
    ) -> Result<WsServer, TransportError> {
        validate(&config)?;
        let tls = match &config.tls {
            Some(t) => Some(TlsAcceptor::from(server_config(&t.cert_pem, &t.key_pem)?)),
            None => None,
        };
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| TransportError::Bind { addr: config.bind, source })?;
        let local_addr = listener.local_addr()?;
        let shards = if config.shards == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.shards
        };
        let sink = Arc::new(WsSink {
            links: DashMap::new(),
            max_frame_bytes: config.max_frame_bytes,
        });
        let ctx = Arc::new(ShardContext {
            server_index,
            kind: if tls.is_some() { LinkKind::WebSocketTls } else { LinkKind::WebSocket },
            tls,
            path: config.path.clone().into(),
            ws_config: super::tungstenite_config(config.max_frame_bytes, config.read_buffer_bytes),
            driver: DriverConfig {
                ping_interval: config.ping_interval,
                idle_timeout: config.idle_timeout,
                close_timeout: config.close_timeout,
                is_client: false,
                conditioner: config.conditioner.clone(),
            },
            handshake_timeout: config.handshake_timeout,
            max_frame_bytes: config.max_frame_bytes,
            max_queued_bytes: config.max_queued_bytes_per_link,
            next_seq: AtomicU64::new(1),
            sink: sink.clone(),
            events,
            shutdown: shutdown.clone(),
        });
        let tasks = TaskTracker::new();
        let mut shard_senders = Vec::with_capacity(shards);
        for shard in 0..shards {
            // A shard that cannot take a new connection right away has thousands queued: the
            // acceptor drops the connection rather than wait.
            let (tx, rx) = mpsc::channel(1024);
            shard_senders.push(tx);
            let span = tracing::info_span!("ws_shard", server = server_index, shard);
            tasks.spawn(run_shard(rx, ctx.clone()).instrument(span));
        }
        let caps = Arc::new(Caps {
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            max_total: config.max_links,
            max_per_ip: config.max_links_per_ip,
        });
        let span = tracing::info_span!("ws_accept", server = server_index, addr = %local_addr);
        tasks.spawn(run_acceptor(listener, shard_senders, caps, sink.clone(), shutdown).instrument(span));
        tasks.close();
        tracing::info!(addr = %local_addr, tls = config.tls.is_some(), shards, "websocket server listening");
        Ok(WsServer { local_addr, sink, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The command side, to register in [`Links`](crate::Links).
    pub fn sink(&self) -> Arc<dyn LinkSink> {
        self.sink.clone()
    }

    /// Links currently open (handshakes not included).
    pub fn link_count(&self) -> usize {
        self.sink.links.len()
    }

    /// Resolves when the server has stopped: after `shutdown`, once every link has closed and
    /// reported it.
    pub async fn wait(&self) {
        self.tasks.wait().await;
    }
}

/// The [`LinkSink`] of one WebSocket server: a map from link id to the link's shared queue.
struct WsSink {
    links: DashMap<LinkId, Arc<LinkShared>>,
    max_frame_bytes: usize,
}

impl LinkSink for WsSink {
    /// `delivery` is ignored: WebSocket delivers everything reliably and in order.
    fn send(&self, link: LinkId, data: Bytes, _delivery: Delivery) -> Result<(), SendError> {
        if data.len() > self.max_frame_bytes {
            return Err(SendError::TooLarge { len: data.len(), max: self.max_frame_bytes });
        }
        self.links.get(&link).ok_or(SendError::Closed(link))?.send(data)
    }

    fn close(&self, link: LinkId, code: u16) {
        if let Some(l) = self.links.get(&link) {
            l.request_close(CloseRequest::Local(code));
        }
    }

    fn stats(&self, link: LinkId) -> Option<LinkStats> {
        self.links.get(&link).map(|l| l.stats())
    }
}

/// What every connection future of a server shares.
struct ShardContext {
    server_index: u16,
    kind: LinkKind,
    tls: Option<TlsAcceptor>,
    path: Arc<str>,
    ws_config: WebSocketConfig,
    driver: DriverConfig,
    handshake_timeout: Duration,
    max_frame_bytes: usize,
    max_queued_bytes: usize,
    next_seq: AtomicU64,
    sink: Arc<WsSink>,
    events: mpsc::Sender<LinkEvent>,
    shutdown: CancellationToken,
}

/// An accepted connection on its way to a shard, with the cap slot it holds.
struct Accepted {
    tcp: TcpStream,
    remote: SocketAddr,
    permit: CapPermit,
}

type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

fn validate(config: &WsConfig) -> Result<(), TransportError> {
    let bad = |what: &str| Err(TransportError::Config(what.to_owned()));
    if config.max_frame_bytes == 0 {
        return bad("max_frame_bytes must be positive");
    }
    if config.max_queued_bytes_per_link < config.max_frame_bytes {
        return bad("max_queued_bytes_per_link must hold at least one frame of max_frame_bytes");
    }
    if config.max_links == 0 || config.max_links_per_ip == 0 {
        return bad("max_links and max_links_per_ip must be positive");
    }
    if !config.path.starts_with('/') {
        return bad("path must start with '/'");
    }
    if config.ping_interval.is_zero() || config.idle_timeout.is_zero() {
        return bad("ping_interval and idle_timeout must be positive");
    }
    if config.read_buffer_bytes == 0 {
        return bad("read_buffer_bytes must be positive");
    }
    Ok(())
}

async fn run_acceptor(
    listener: TcpListener,
    shards: Vec<mpsc::Sender<Accepted>>,
    caps: Arc<Caps>,
    sink: Arc<WsSink>,
    shutdown: CancellationToken,
) {
    let mut next_shard = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Usually EMFILE (out of file descriptors): back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Some(permit) = caps.try_acquire(remote.ip()) else {
            tracing::debug!(%remote, "connection refused: link cap reached");
            continue;
        };
        // Small envelopes must not wait for Nagle; failure only costs latency.
        let _ = tcp.set_nodelay(true);
        let Some(shard) = shards.get(next_shard % shards.len()) else { break };
        next_shard = next_shard.wrapping_add(1);
        if shard.try_send(Accepted { tcp, remote, permit }).is_err() {
            tracing::warn!(%remote, "connection dropped: shard backlog full");
        }
    }
    drop(listener);
    // Shards see their channels close once their backlog is empty; every open link drains and
    // closes. Links registering right now check the token themselves after registering.
    for link in sink.links.iter() {
        link.request_close(CloseRequest::Shutdown);
    }
    tracing::info!(links = sink.links.len(), "websocket server stopping");
}

async fn run_shard(mut incoming: mpsc::Receiver<Accepted>, ctx: Arc<ShardContext>) {
    let mut conns: FuturesUnordered<ConnFuture> = FuturesUnordered::new();
    let mut accepting = true;
    loop {
        tokio::select! {
            // Connections first: a flood of new ones must not starve the open ones.
            biased;
            Some(()) = conns.next(), if !conns.is_empty() => {}
            accepted = incoming.recv(), if accepting => match accepted {
                Some(a) => conns.push(Box::pin(run_connection(a, ctx.clone()))),
                None => accepting = false,
            },
            else => break,
        }
    }
}

/// One connection from accept to close: handshakes, registration, the driver, the report.
fn run_connection(accepted: Accepted, ctx: Arc<ShardContext>) -> impl Future<Output = ()> + Send {
    let Accepted { tcp, remote, permit } = accepted;
    let span = tracing::debug_span!("ws_link", %remote, link = tracing::field::Empty);
    let fut = async move {
        let handshake = handshake(tcp, &ctx);
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = tokio::time::timeout(ctx.handshake_timeout, handshake) => r,
        };
        let (ws, cipher_suite) = match result {
            Ok(Ok(ok)) => ok,
            Ok(Err(error)) => {
                tracing::debug!(%error, "websocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("websocket handshake timed out");
                return;
            }
        };
        let id = LinkId::new(ctx.server_index, ctx.next_seq.fetch_add(1, Ordering::Relaxed));
        tracing::Span::current().record("link", tracing::field::display(id));
        let link = Arc::new(LinkShared::new(id, ctx.max_frame_bytes, ctx.max_queued_bytes));
        ctx.sink.links.insert(id, link.clone());
        if ctx.shutdown.is_cancelled() {
            // The acceptor's sweep may have run before the insert.
            link.request_close(CloseRequest::Shutdown);
        }
        let info = PeerInfo { link: id, remote, kind: ctx.kind, cipher_suite };
        if ctx.events.send(LinkEvent::Connected(info)).await.is_err() {
            ctx.sink.links.remove(&id);
            return;
        }
        let driver = Driver::new(ws, link, ctx.events.clone(), make_event, ctx.driver.clone());
        let reason = driver.await;
        ctx.sink.links.remove(&id);
        tracing::debug!(?reason, "link closed");
        let _ = ctx.events.send(LinkEvent::Disconnected { link: id, reason }).await;
        drop(permit);
    };
    fut.instrument(span)
}

fn make_event(link: LinkId, data: Bytes) -> LinkEvent {
    LinkEvent::Message { link, data, delivery: Delivery::Reliable }
}

async fn handshake(
    tcp: TcpStream,
    ctx: &ShardContext,
) -> Result<(tokio_tungstenite::WebSocketStream<Io>, Option<String>), TransportError> {
    let io = match &ctx.tls {
        Some(acceptor) => {
            let tls = acceptor.accept(tcp).await.map_err(|e| TransportError::Handshake(format!("tls: {e}")))?;
            Io::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)))
        }
        None => Io::Plain(tcp),
    };
    let cipher_suite = io.cipher_suite();
    let path = ctx.path.clone();
    // The signature is tungstenite's `Callback`; its large error type is not ours to box.
    #[allow(clippy::result_large_err)]
    let check_path = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() == &*path {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some("not found".to_owned()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(io, check_path, Some(ctx.ws_config))
        .await
        .map_err(|e| TransportError::Handshake(e.to_string()))?;
    Ok((ws, cipher_suite))
}

/// The link caps, checked at accept so a refused connection costs nothing more.
struct Caps {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    max_total: usize,
    max_per_ip: usize,
}

impl Caps {
    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<CapPermit> {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        *count += 1;
        Some(CapPermit { caps: self.clone(), ip })
    }
}

/// One connection's place under the caps, given back when it is dropped.
struct CapPermit {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        self.caps.total.fetch_sub(1, Ordering::AcqRel);
        if let dashmap::mapref::entry::Entry::Occupied(mut entry) = self.caps.per_ip.entry(self.ip) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}
