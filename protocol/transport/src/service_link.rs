//! The service link: a persistent, authenticated, framed TCP link carrying `ServiceMessage`
//! envelopes between Tavern services (GCS ↔ matchmaker, instance → matchmaker; DESIGN.md §3).
//!
//! # Wire
//!
//! Each frame is a 4-byte big-endian length and one `ServiceMessage` (protocol's
//! [`Codec::encode_framed`] and [`FrameDecoder`]), at most `max_frame_bytes` long. A header that
//! declares a larger frame is answered with `Error { too_large, closes_link }` and the link
//! closes, since the stream cannot be resynchronised. A frame that is not a valid envelope is
//! answered with `Error { malformed }` and the link stays up (the framing is still intact).
//!
//! # Handshake
//!
//! The connecting side's first frame is `ServiceHello { protocol_version, service_token,
//! node_id, role }`. The server compares the token with its configured one in constant time and
//! answers `ServiceWelcome { node_id, heartbeat_interval_ms, server_time_ms }`, or
//! `Error { closes_link }` (`unauthenticated`, `hello_required`, `unsupported_version`,
//! `invalid_field`) and closes. No hello within `hello_timeout` closes the link too.
//!
//! # Requests, responses, pushes
//!
//! Either side may send a request with a non-zero `cid`; the answer carries the same `cid`. So
//! that the two sides never pick the same `cid`, requests opened by the server (pushes that need
//! an acknowledgement, like `MatchFoundPush`) have the top bit ([`SERVER_CID_BIT`]) set and
//! requests opened by the client have it clear. A message with `cid` 0 answers nothing and
//! expects nothing. [`LinkHandle::request`] pairs a response with its request; everything else
//! goes to the server's [`Handler`] or to the client's push channel.
//!
//! The client sends `Ping` every `heartbeat_interval_ms` (from the welcome); the server answers
//! `Pong` itself. Either side closes a link that has been silent for three intervals.
//!
//! # Tasks and bounds
//!
//! Service links are few (one per GCS node or instance host), so each link has a reader and a
//! writer task; this is not the per-client transport, whose "no task per connection" rule does
//! not apply here. Every queue is bounded: outgoing frames per link (`send_queue`; a full queue
//! closes the link as a slow consumer, since a service that cannot keep up must reconnect and
//! resynchronise rather than grow memory), requests in flight per link (`max_inflight`; further
//! frames wait, which is TCP back-pressure on the peer), pending requests, links per server
//! (`max_links`), and the client's push channel.
//!
//! # Client
//!
//! [`ServiceClient`] keeps one link up: it connects, says hello, and on any loss reconnects with
//! exponential backoff (doubling from `backoff_initial` to `backoff_max`, with jitter) and says
//! hello again. Requests in flight when a link drops fail with [`LinkError::Closed`]; callers
//! retry, which is safe because every retriable service request is idempotent.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::tavern::{
    PingT, PongT, ServiceBodyT, ServiceHelloT, ServiceMessageT, ServiceRole, ServiceWelcomeT,
};
use protocol::{Codec, DecodeError, EncodeError, ErrorCode, FrameDecoder, Limits, PROTOCOL_VERSION};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Set in the `cid` of every request the server side opens; clear in the client side's.
pub const SERVER_CID_BIT: u32 = 0x8000_0000;

/// The longest node id accepted in a hello.
pub const MAX_NODE_ID_LEN: usize = 128;

/// How a server runs its links.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This process's node id, sent in the welcome.
    pub node_id: String,
    /// The token every peer must present in its hello.
    pub service_token: String,
    pub max_frame_bytes: usize,
    /// Outgoing frames queued per link before it is closed as a slow consumer.
    pub send_queue: usize,
    /// Requests of one link handled at once.
    pub max_inflight: usize,
    /// Requests this side may have open per link.
    pub max_pending: usize,
    pub max_links: usize,
    pub hello_timeout: Duration,
    /// Told to clients in the welcome; a link silent for three of these is closed.
    pub heartbeat_interval: Duration,
}

impl ServerConfig {
    /// Defaults around the given identity and token.
    pub fn new(node_id: impl Into<String>, service_token: impl Into<String>) -> ServerConfig {
        ServerConfig {
            node_id: node_id.into(),
            service_token: service_token.into(),
            max_frame_bytes: protocol::MAX_FRAME_BYTES,
            send_queue: 4096,
            max_inflight: 256,
            max_pending: 4096,
            max_links: 1024,
            hello_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

/// How a client keeps its link.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of the server.
    pub addr: String,
    pub service_token: String,
    pub node_id: String,
    pub role: ServiceRole,
    pub max_frame_bytes: usize,
    pub send_queue: usize,
    pub max_pending: usize,
    /// Pushes buffered for the owner of the client; when full, reading waits.
    pub push_queue: usize,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    /// Defaults for a client of `addr` with this identity and token.
    pub fn new(
        addr: impl Into<String>,
        node_id: impl Into<String>,
        role: ServiceRole,
        service_token: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            addr: addr.into(),
            service_token: service_token.into(),
            node_id: node_id.into(),
            role,
            max_frame_bytes: protocol::MAX_FRAME_BYTES,
            send_queue: 4096,
            max_pending: 4096,
            push_queue: 1024,
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Who is on the other end of an authenticated link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: String,
    pub role: ServiceRole,
    pub addr: SocketAddr,
}

/// Why sending on a link or waiting for an answer failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link closed")]
    Closed,
    #[error("not connected")]
    NotConnected,
    #[error("send queue full at {0} frames; link closed as a slow consumer")]
    QueueFull(usize),
    #[error("{0} requests already pending on this link")]
    TooManyPending(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot encode message: {0}")]
    Encode(#[from] EncodeError),
    /// The server refused the hello.
    #[error("hello refused with code {code}: {message}")]
    Refused { code: u16, message: String },
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// What a server does with the messages of its links. Requests of one link are handled
/// concurrently (up to `max_inflight`); the answer, if any, is sent back on the link.
pub trait Handler: Send + Sync + 'static {
    /// A link has said hello and been welcomed.
    fn on_link(&self, _link: &LinkHandle) {}
    /// A message that is neither a heartbeat nor the answer to a request this side opened.
    fn on_message(
        &self,
        link: &LinkHandle,
        message: ServiceMessageT,
    ) -> impl Future<Output = Option<ServiceMessageT>> + Send;
    /// The link is gone; its pending requests have failed.
    fn on_close(&self, _link: &LinkHandle) {}
}

/// One end of an established link: send, ask, close. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LinkHandle(Arc<LinkInner>);

#[derive(Debug)]
struct LinkInner {
    id: u64,
    peer: PeerInfo,
    codec: Codec,
    out: mpsc::Sender<Vec<u8>>,
    send_queue: usize,
    /// Requests this side opened, by cid, waiting for their answers.
    pending: Mutex<HashMap<u32, oneshot::Sender<ServiceMessageT>>>,
    max_pending: usize,
    next_cid: AtomicU32,
    /// [`SERVER_CID_BIT`] on the server's side, 0 on the client's.
    own_bit: u32,
    closed: CancellationToken,
}

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

impl LinkHandle {
    /// A process-unique id for this link (a reconnect gets a new one).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub fn peer(&self) -> &PeerInfo {
        &self.0.peer
    }

    /// Queues one message. Never waits: a full queue closes the link ([`LinkError::QueueFull`]).
    pub fn send(&self, message: &ServiceMessageT) -> Result<(), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed);
        }
        let frame = self.0.codec.encode_framed(message)?;
        match self.0.out.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(link = self.id(), node = %self.0.peer.node_id, "service link send queue full, closing");
                self.close();
                Err(LinkError::QueueFull(self.0.send_queue))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LinkError::Closed),
        }
    }

    /// Sends `body` as a request with a fresh cid and waits up to `timeout` for the message that
    /// answers it (which may be an `Error`).
    pub async fn request(&self, body: ServiceBodyT, timeout: Duration) -> Result<ServiceMessageT, LinkError> {
        let cid = self.next_cid();
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.0.pending);
            if pending.len() >= self.0.max_pending {
                return Err(LinkError::TooManyPending(self.0.max_pending));
            }
            pending.insert(cid, tx);
        }
        if let Err(e) = self.send(&ServiceMessageT::new(cid, body)) {
            lock(&self.0.pending).remove(&cid);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(LinkError::Closed),
            Err(_) => {
                lock(&self.0.pending).remove(&cid);
                Err(LinkError::Timeout(timeout))
            }
        }
    }

    /// Closes the link: queued frames are still written, then the connection ends.
    pub fn close(&self) {
        self.0.closed.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.is_cancelled()
    }

    /// Resolves when the link is closed.
    pub async fn closed(&self) {
        self.0.closed.cancelled().await;
    }

    fn next_cid(&self) -> u32 {
        loop {
            let n = self.0.next_cid.fetch_add(1, Ordering::Relaxed) & !SERVER_CID_BIT;
            if n != 0 {
                return n | self.0.own_bit;
            }
        }
    }

    /// Hands `message` to the request it answers; gives it back when it answers none.
    fn complete(&self, message: ServiceMessageT) -> Option<ServiceMessageT> {
        if message.cid == 0 || message.cid & SERVER_CID_BIT != self.0.own_bit {
            return Some(message);
        }
        let waiter = lock(&self.0.pending).remove(&message.cid);
        match waiter {
            // A receiver that gave up (timeout) makes the answer moot.
            Some(tx) => {
                let _ = tx.send(message);
                None
            }
            None => {
                tracing::debug!(link = self.id(), cid = message.cid, "answer to no pending request");
                None
            }
        }
    }

    fn fail_pending(&self) {
        lock(&self.0.pending).clear();
    }
}

/// Serves service links on `listener` until `shutdown` fires; then tells every peer, closes the
/// links and waits for their tasks.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_links.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "service link accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%addr, max = config.max_links, "service link refused: too many links");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (config, handler, shutdown) = (Arc::clone(&config), Arc::clone(&handler), shutdown.clone());
        tracker.spawn(async move {
            server_link(stream, addr, config, handler, shutdown).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn server_link<H: Handler>(
    stream: TcpStream,
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let codec = Codec::new(Limits::with_max_frame_bytes(config.max_frame_bytes));
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, config.max_frame_bytes);
    let hello = match tokio::time::timeout(config.hello_timeout, reader.next()).await {
        Ok(Ok(Some(frame))) => codec.decode_service(&frame).map_err(|e| (e.code(), e.to_string())),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err((e.code(), e.to_string())),
        Err(_) => Err((ErrorCode::HelloRequired, "no hello in time".to_owned())),
    };
    let peer = match hello.and_then(|m| check_hello(&config, m, addr)) {
        Ok(peer) => peer,
        Err((code, message)) => {
            tracing::info!(%addr, code = code.code(), %message, "service link hello refused");
            let _ = write.write_all(&closing_error(&codec, 0, code, &message)).await;
            let _ = write.shutdown().await;
            return;
        }
    };
    let (out_tx, out_rx) = mpsc::channel(config.send_queue.max(1));
    let link = LinkHandle(Arc::new(LinkInner {
        id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
        peer,
        codec,
        out: out_tx,
        send_queue: config.send_queue.max(1),
        pending: Mutex::new(HashMap::new()),
        max_pending: config.max_pending.max(1),
        next_cid: AtomicU32::new(1),
        own_bit: SERVER_CID_BIT,
        closed: CancellationToken::new(),
    }));
    let span = tracing::info_span!("service_link", link = link.id(), node = %link.peer().node_id, %addr);
    let task = serve_link(link, reader, (write, out_rx), codec, config, handler, shutdown);
    tracing::Instrument::instrument(task, span).await;
}

/// Runs an authenticated link until it closes.
async fn serve_link<H: Handler>(
    link: LinkHandle,
    mut reader: FrameReader,
    (write, out_rx): (OwnedWriteHalf, mpsc::Receiver<Vec<u8>>),
    codec: Codec,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let heartbeat_ms = u32::try_from(config.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
    let welcome = protocol::build!(ServiceWelcomeT {
        node_id: config.node_id.clone(),
        heartbeat_interval_ms: heartbeat_ms,
        server_time_ms: now_ms(),
    });
    let writer = tokio::spawn(write_frames(write, out_rx, link.clone()));
    if link.send(&ServiceMessageT::new(0, ServiceBodyT::ServiceWelcome(Box::new(welcome)))).is_err() {
        link.close();
    }
    tracing::info!(role = link.peer().role.0, "service link up");
    handler.on_link(&link);
    let inflight = Arc::new(Semaphore::new(config.max_inflight.max(1)));
    let idle = config.heartbeat_interval.saturating_mul(3);
    let tasks = TaskTracker::new();
    loop {
        let frame = tokio::select! {
            _ = link.closed() => break,
            _ = shutdown.cancelled() => {
                let _ = link.send(&closing_message(0, ErrorCode::ShuttingDown, "server shutting down"));
                break;
            }
            f = tokio::time::timeout(idle, reader.next()) => f,
        };
        let frame = match frame {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                let _ = link.send(&closing_message(0, e.code(), &e.to_string()));
                break;
            }
            Err(_) => {
                tracing::info!("service link silent too long, closing");
                break;
            }
        };
        let message = match codec.decode_service(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed service message");
                let _ = link.send(&ServiceMessageT::error(0, e.code(), &e.to_string()));
                continue;
            }
        };
        if let ServiceBodyT::Ping(ping) = &message.body {
            let pong = protocol::build!(PongT { client_time_ms: ping.client_time_ms, server_time_ms: now_ms() });
            let _ = link.send(&ServiceMessageT::new(message.cid, ServiceBodyT::Pong(Box::new(pong))));
            continue;
        }
        let Some(message) = link.complete(message) else { continue };
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else { break };
        let (handler, link2) = (Arc::clone(&handler), link.clone());
        tasks.spawn(async move {
            if let Some(answer) = handler.on_message(&link2, message).await {
                let _ = link2.send(&answer);
            }
            drop(permit);
        });
    }
    link.close();
    link.fail_pending();
    tasks.close();
    tasks.wait().await;
    handler.on_close(&link);
    let _ = writer.await;
    tracing::info!("service link down");
}

fn check_hello(
    config: &ServerConfig,
    message: ServiceMessageT,
    addr: SocketAddr,
) -> Result<PeerInfo, (ErrorCode, String)> {
    let ServiceBodyT::ServiceHello(hello) = message.body else {
        return Err((ErrorCode::HelloRequired, "the first message must be ServiceHello".into()));
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!("protocol version {} is not {PROTOCOL_VERSION}", hello.protocol_version),
        ));
    }
    let token_ok: bool = hello.service_token.as_bytes().ct_eq(config.service_token.as_bytes()).into();
    if !token_ok || config.service_token.is_empty() {
        return Err((ErrorCode::Unauthenticated, "invalid service token".into()));
    }
    if hello.node_id.is_empty() || hello.node_id.len() > MAX_NODE_ID_LEN {
        return Err((ErrorCode::InvalidField, format!("node id must be 1 to {MAX_NODE_ID_LEN} bytes")));
    }
    Ok(PeerInfo { node_id: hello.node_id, role: hello.role, addr })
}

/// A client that keeps one service link up, reconnecting with backoff.
#[derive(Clone, Debug)]
pub struct ServiceClient {
    link: watch::Receiver<Option<LinkHandle>>,
    connects: Arc<AtomicU64>,
}

impl ServiceClient {
    /// Starts connecting in the background. Returns the client and the channel of messages the
    /// server sends that answer no request of ours (pushes; answer those with a non-zero cid by
    /// [`ServiceClient::send`]ing a message with the same cid).
    pub fn start(config: ClientConfig, shutdown: CancellationToken) -> (ServiceClient, mpsc::Receiver<ServiceMessageT>) {
        let (link_tx, link_rx) = watch::channel(None);
        let (push_tx, push_rx) = mpsc::channel(config.push_queue.max(1));
        let connects = Arc::new(AtomicU64::new(0));
        tokio::spawn(client_loop(config, link_tx, push_tx, Arc::clone(&connects), shutdown));
        (ServiceClient { link: link_rx, connects }, push_rx)
    }

    /// The link, if one is up now.
    pub fn link(&self) -> Option<LinkHandle> {
        self.link.borrow().clone().filter(|l| !l.is_closed())
    }

    /// Waits up to `timeout` for a link to be up.
    pub async fn connected(&self, timeout: Duration) -> Result<LinkHandle, LinkError> {
        let mut rx = self.link.clone();
        let wait = async {
            loop {
                if let Some(link) = rx.borrow_and_update().clone().filter(|l| !l.is_closed()) {
                    return Ok(link);
                }
                if rx.changed().await.is_err() {
                    return Err(LinkError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| LinkError::Timeout(timeout))?
    }

    /// Sends a request on the current link and waits for its answer.
    pub async fn request(&self, body: ServiceBodyT, timeout: Duration) -> Result<ServiceMessageT, LinkError> {
        let link = self.link().ok_or(LinkError::NotConnected)?;
        link.request(body, timeout).await
    }

    /// Sends a message on the current link.
    pub fn send(&self, message: &ServiceMessageT) -> Result<(), LinkError> {
        self.link().ok_or(LinkError::NotConnected)?.send(message)
    }

    /// How many times a link has been established (1 after the first welcome).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }
}

async fn client_loop(
    config: ClientConfig,
    link_tx: watch::Sender<Option<LinkHandle>>,
    push_tx: mpsc::Sender<ServiceMessageT>,
    connects: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let codec = Codec::new(Limits::with_max_frame_bytes(config.max_frame_bytes));
    let mut backoff = config.backoff_initial;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        match client_connect(&config, &codec).await {
            Ok((link, reader, heartbeat, out_rx, write)) => {
                backoff = config.backoff_initial;
                connects.fetch_add(1, Ordering::Relaxed);
                let writer = tokio::spawn(write_frames(write, out_rx, link.clone()));
                link_tx.send_replace(Some(link.clone()));
                tracing::info!(addr = %config.addr, link = link.id(), "service link connected");
                client_run(&codec, link.clone(), reader, heartbeat, &push_tx, &shutdown).await;
                link.close();
                link.fail_pending();
                link_tx.send_replace(None);
                let _ = writer.await;
                tracing::info!(addr = %config.addr, "service link lost");
            }
            Err(e) => tracing::debug!(addr = %config.addr, error = %e, "service link connect failed"),
        }
        // Jitter in [½, 1] of the backoff keeps a fleet of clients from reconnecting in step.
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
        }
        backoff = backoff.saturating_mul(2).min(config.backoff_max);
    }
    link_tx.send_replace(None);
}

type Connected = (LinkHandle, FrameReader, Duration, mpsc::Receiver<Vec<u8>>, OwnedWriteHalf);

async fn client_connect(config: &ClientConfig, codec: &Codec) -> Result<Connected, LinkError> {
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.addr))
        .await
        .map_err(|_| LinkError::Timeout(config.connect_timeout))?
        .map_err(|e| LinkError::Handshake(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().map_err(|e| LinkError::Handshake(e.to_string()))?;
    let (read, mut write) = stream.into_split();
    let hello = protocol::build!(ServiceHelloT {
        protocol_version: PROTOCOL_VERSION,
        service_token: config.service_token.clone(),
        node_id: config.node_id.clone(),
        role: config.role,
    });
    let frame = codec.encode_framed(&ServiceMessageT::new(0, ServiceBodyT::ServiceHello(Box::new(hello))))?;
    write.write_all(&frame).await.map_err(|e| LinkError::Handshake(e.to_string()))?;
    let mut reader = FrameReader::new(read, config.max_frame_bytes);
    let answer = tokio::time::timeout(config.connect_timeout, reader.next())
        .await
        .map_err(|_| LinkError::Timeout(config.connect_timeout))?
        .map_err(|e| LinkError::Handshake(e.to_string()))?
        .ok_or_else(|| LinkError::Handshake("closed before welcome".into()))?;
    let answer = codec.decode_service(&answer).map_err(|e| LinkError::Handshake(e.to_string()))?;
    let (server_node, heartbeat) = match answer.body {
        ServiceBodyT::ServiceWelcome(w) => (w.node_id, Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(100)))),
        ServiceBodyT::Error(e) => return Err(LinkError::Refused { code: e.code, message: e.message }),
        _ => return Err(LinkError::Handshake("expected ServiceWelcome".into())),
    };
    let (out_tx, out_rx) = mpsc::channel(config.send_queue.max(1));
    let link = LinkHandle(Arc::new(LinkInner {
        id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
        peer: PeerInfo { node_id: server_node, role: config.role, addr },
        codec: *codec,
        out: out_tx,
        send_queue: config.send_queue.max(1),
        pending: Mutex::new(HashMap::new()),
        max_pending: config.max_pending.max(1),
        next_cid: AtomicU32::new(1),
        own_bit: 0,
        closed: CancellationToken::new(),
    }));
    Ok((link, reader, heartbeat, out_rx, write))
}

async fn client_run(
    codec: &Codec,
    link: LinkHandle,
    mut reader: FrameReader,
    heartbeat: Duration,
    push_tx: &mpsc::Sender<ServiceMessageT>,
    shutdown: &CancellationToken,
) {
    let mut ping = tokio::time::interval(heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = heartbeat.saturating_mul(3);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = link.closed() => return,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!("service link silent too long, reconnecting");
                return;
            }
            _ = ping.tick() => {
                let ping = protocol::build!(PingT { client_time_ms: now_ms() });
                let _ = link.send(&ServiceMessageT::new(0, ServiceBodyT::Ping(Box::new(ping))));
                continue;
            }
            f = reader.next() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "service link framing error");
                return;
            }
        };
        deadline = tokio::time::Instant::now() + idle;
        let message = match codec.decode_service(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "malformed service message from server");
                continue;
            }
        };
        if let ServiceBodyT::Error(e) = &message.body
            && e.closes_link
            && message.cid == 0
        {
            tracing::info!(code = e.code, message = %e.message, "server closed the service link");
            return;
        }
        if matches!(message.body, ServiceBodyT::Pong(_)) {
            continue;
        }
        if let Some(push) = link.complete(message) {
            // Waiting here when the owner is behind is back-pressure on the server.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = push_tx.send(push) => if sent.is_err() { return },
            }
        }
    }
}

/// Writes queued frames until the link closes, then flushes what is queued and ends the stream.
async fn write_frames(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>, link: LinkHandle) {
    let mut batch = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            f = rx.recv() => f,
            _ = link.closed() => None,
        };
        let Some(frame) = frame else { break };
        batch.clear();
        batch.extend_from_slice(&frame);
        // Coalesce what is already queued into one write, up to 64 KiB.
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if write.write_all(&batch).await.is_err() {
            link.close();
            return;
        }
    }
    // Closing: send what was queued before the close (a closing error, the last answers).
    rx.close();
    while let Ok(f) = rx.try_recv() {
        if write.write_all(&f).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

/// Reads whole frames off a stream, keeping frames that arrived together for the next call.
#[derive(Debug)]
struct FrameReader {
    read: OwnedReadHalf,
    decoder: FrameDecoder,
    ready: VecDeque<Vec<u8>>,
    buf: Box<[u8]>,
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Frame(#[from] DecodeError),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    fn code(&self) -> ErrorCode {
        match self {
            ReadError::Frame(e) => e.code(),
            ReadError::Io(_) => ErrorCode::Internal,
        }
    }
}

impl FrameReader {
    fn new(read: OwnedReadHalf, max_frame_bytes: usize) -> FrameReader {
        FrameReader {
            read,
            decoder: FrameDecoder::new(max_frame_bytes),
            ready: VecDeque::new(),
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The next frame; `None` when the peer ended the stream between frames. Cancel-safe: a
    /// frame is only ever handed out whole, and partial input stays in the decoder.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            let n = self.read.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            let mut input = self.buf.get(..n).unwrap_or_default();
            while let Some(frame) = self.decoder.decode(&mut input)? {
                self.ready.push_back(frame);
            }
        }
    }
}

fn closing_message(cid: u32, code: ErrorCode, message: &str) -> ServiceMessageT {
    let mut m = ServiceMessageT::error(cid, code, message);
    if let ServiceBodyT::Error(e) = &mut m.body {
        e.closes_link = true;
    }
    m
}

fn closing_error(codec: &Codec, cid: u32, code: ErrorCode, message: &str) -> Vec<u8> {
    codec.encode_framed(&closing_message(cid, code, message)).unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map half-updated (single inserts and
    // removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
