//! The Redis backend of the bus: PUBLISH through a reconnecting multiplexed connection, and one
//! dedicated pub/sub connection per [`crate::Bus`] owned by a task.
//!
//! The task keeps the set of channels it has subscribed in step with the topics local
//! subscriptions want (the routing table is the source of truth), routes every message into the
//! routing table, pings to notice a dead connection, and when the connection is lost reconnects
//! with capped exponential backoff, subscribes every wanted channel again and then sends
//! `Resubscribed` to every subscription so callers resync what they missed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSub, PubSubSink, PubSubStream};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::bus::Routes;
use crate::{AbortOnDrop, BusError, REDIS_TIMEOUT, command_connection, timed};

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the idle pub/sub connection is pinged: a half-open TCP connection sends no FIN, so
/// only an unanswered ping reveals it.
const PING_EVERY: Duration = Duration::from_secs(5);
/// SUBSCRIBE commands in flight at once while (re)subscribing many channels.
const SUBSCRIBE_BATCH: usize = 256;
/// Pending subscribe requests; a subscriber waits for room, which only happens in a subscribe storm.
const COMMAND_QUEUE: usize = 64;

pub(crate) struct RedisBus {
    conn: ConnectionManager,
    prefix: String,
    commands: mpsc::Sender<oneshot::Sender<()>>,
    /// Rung by a dropped subscription, which cannot wait (it is in `Drop`) and must never block.
    changed: Arc<Notify>,
    state: Arc<State>,
    _task: AbortOnDrop,
}

/// What the task reports about its connection.
#[derive(Default)]
struct State {
    connected: AtomicBool,
    local_addr: Mutex<Option<SocketAddr>>,
}

impl RedisBus {
    pub(crate) async fn connect(url: &str, prefix: &str, routes: Arc<Routes>) -> Result<RedisBus, BusError> {
        let (client, conn) = command_connection(url).await?;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let changed = Arc::new(Notify::new());
        let state = Arc::new(State::default());
        let (first_tx, first_rx) = oneshot::channel();
        let task = Subscriber {
            client,
            prefix: prefix.to_owned(),
            routes,
            commands: command_rx,
            changed: changed.clone(),
            state: state.clone(),
        };
        let task = AbortOnDrop(tokio::spawn(task.run(first_tx)).abort_handle());
        match first_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(BusError::Redis("pub/sub task stopped during start".to_owned())),
        }
        Ok(RedisBus { conn, prefix: prefix.to_owned(), commands, changed, state, _task: task })
    }

    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let channel = format!("{}{topic}", self.prefix);
        timed(
            &format!("publish on {channel}"),
            redis::cmd("PUBLISH").arg(&channel).arg(payload.as_ref()).query_async::<()>(&mut conn),
        )
        .await
    }

    /// Waits until the task has subscribed every channel the routing table wants, or has found the
    /// connection down (then the reconnect will subscribe them).
    pub(crate) async fn sync(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(ack).await.is_err() {
            return;
        }
        // A dropped ack means the connection broke meanwhile; the reconnect covers this request.
        let _ = tokio::time::timeout(REDIS_TIMEOUT * 2, done).await;
    }

    pub(crate) fn topics_changed(&self) {
        self.changed.notify_one();
    }

    pub(crate) fn ready(&self) -> Result<(), BusError> {
        if self.state.connected.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(BusError::Redis("bus pub/sub connection is down".to_owned()))
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        *self.state.local_addr.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The task that owns the pub/sub connection.
struct Subscriber {
    client: redis::Client,
    prefix: String,
    routes: Arc<Routes>,
    commands: mpsc::Receiver<oneshot::Sender<()>>,
    changed: Arc<Notify>,
    state: Arc<State>,
}

/// One live pub/sub connection and the channels subscribed on it.
struct Connection {
    sink: PubSubSink,
    stream: PubSubStream,
    subscribed: HashSet<String>,
}

/// Why serving a connection ended.
enum Ended {
    Lost(String),
    /// Every handle on the bus is gone.
    Stopped,
}

impl Subscriber {
    /// Runs for the life of the bus. The outcome of the first connection goes to `first`, so the
    /// constructor reports an unreachable Redis; later failures are retried with backoff.
    async fn run(mut self, first: oneshot::Sender<Result<(), BusError>>) {
        let mut first = Some(first);
        let mut backoff = INITIAL_BACKOFF;
        loop {
            match self.open().await {
                Ok((conn, local_addr)) => {
                    self.set_connected(true, local_addr);
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Ok(()));
                    } else {
                        tracing::info!(channels = conn.subscribed.len(), "redis bus subscription restored");
                        self.routes.resubscribed();
                    }
                    backoff = INITIAL_BACKOFF;
                    let ended = self.serve(conn).await;
                    self.set_connected(false, None);
                    match ended {
                        Ended::Lost(e) => tracing::warn!(error = %e, "redis bus subscription lost; reconnecting"),
                        Ended::Stopped => return,
                    }
                }
                Err(e) => {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot resubscribe the redis bus");
                }
            }
            if !self.wait(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sleeps `backoff` while answering subscribe requests at once: the routing table already holds
    /// them and the next connection subscribes them. False if the bus is gone.
    async fn wait(&mut self, backoff: Duration) -> bool {
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                ack = self.commands.recv() => match ack {
                    Some(ack) => {
                        let _ = ack.send(());
                    }
                    None => return false,
                },
            }
        }
    }

    /// Connects and subscribes every channel the routing table wants.
    async fn open(&self) -> Result<(Connection, Option<SocketAddr>), BusError> {
        let (pubsub, local_addr) = open_pubsub(&self.client).await?;
        let (sink, stream) = pubsub.split();
        let mut conn = Connection { sink, stream, subscribed: HashSet::new() };
        self.sync(&mut conn).await?;
        Ok((conn, local_addr))
    }

    /// Reads messages and serves requests until the connection is lost or the bus is dropped.
    async fn serve(&mut self, mut conn: Connection) -> Ended {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                msg = conn.stream.next() => match msg {
                    Some(msg) => self.route(&msg),
                    None => return Ended::Lost("connection closed".to_owned()),
                },
                ack = self.commands.recv() => {
                    let Some(ack) = ack else { return Ended::Stopped };
                    if let Err(e) = self.sync(&mut conn).await {
                        return Ended::Lost(e.to_string());
                    }
                    let _ = ack.send(());
                }
                () = self.changed.notified() => {
                    if let Err(e) = self.sync(&mut conn).await {
                        return Ended::Lost(e.to_string());
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = timed("ping", conn.sink.ping::<redis::Value>()).await {
                        return Ended::Lost(e.to_string());
                    }
                }
            }
        }
    }

    /// Subscribes the channels wanted and not yet subscribed, and leaves those no one wants.
    /// Each channel is its own SUBSCRIBE: the client pairs one reply with one request, and a
    /// multi-channel SUBSCRIBE gets one reply per channel.
    async fn sync(&self, conn: &mut Connection) -> Result<(), BusError> {
        let wanted: HashSet<String> =
            self.routes.topics().iter().map(|t| format!("{}{t}", self.prefix)).collect();
        let add: Vec<String> = wanted.difference(&conn.subscribed).cloned().collect();
        let drop: Vec<String> = conn.subscribed.difference(&wanted).cloned().collect();
        for batch in add.chunks(SUBSCRIBE_BATCH) {
            let requests = batch.iter().map(|channel| {
                let mut sink = conn.sink.clone();
                async move { sink.subscribe(channel).await }
            });
            timed("subscribe", futures::future::try_join_all(requests)).await?;
            conn.subscribed.extend(batch.iter().cloned());
        }
        for batch in drop.chunks(SUBSCRIBE_BATCH) {
            let requests = batch.iter().map(|channel| {
                let mut sink = conn.sink.clone();
                async move { sink.unsubscribe(channel).await }
            });
            timed("unsubscribe", futures::future::try_join_all(requests)).await?;
            for channel in batch {
                conn.subscribed.remove(channel);
            }
        }
        Ok(())
    }

    fn route(&self, msg: &redis::Msg) {
        // Every channel subscribed carries the prefix; anything else is not ours to deliver.
        let Some(topic) = msg.get_channel_name().strip_prefix(self.prefix.as_str()) else { return };
        self.routes.deliver(topic, Bytes::copy_from_slice(msg.get_payload_bytes()));
    }

    fn set_connected(&self, connected: bool, local_addr: Option<SocketAddr>) {
        self.state.connected.store(connected, Ordering::Relaxed);
        *self.state.local_addr.lock().unwrap_or_else(PoisonError::into_inner) = local_addr;
    }
}

/// Opens a pub/sub connection. Over plain TCP the socket is opened here so its local address is
/// known (the redis client does not expose it); other transports go through the client.
async fn open_pubsub(client: &redis::Client) -> Result<(PubSub, Option<SocketAddr>), BusError> {
    let info = client.get_connection_info();
    match &info.addr {
        redis::ConnectionAddr::Tcp(host, port) => {
            let what = format!("open pub/sub connection to {host}:{port}");
            let tcp = match tokio::time::timeout(REDIS_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), *port))).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Err(BusError::Redis(format!("{what}: {e}"))),
                Err(_) => return Err(BusError::Timeout(REDIS_TIMEOUT, what)),
            };
            // Messages are small and latency matters more than packet count.
            let _ = tcp.set_nodelay(true);
            let local_addr = tcp.local_addr().ok();
            let pubsub = timed(&what, PubSub::new(&info.redis, tcp)).await?;
            Ok((pubsub, local_addr))
        }
        _ => Ok((timed("open pub/sub connection", client.get_async_pubsub()).await?, None)),
    }
}
