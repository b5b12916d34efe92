//! The bus: publish opaque payloads on named topics, subscribe to a set of topics and receive them
//! in order, learning when something was lost (lag, or a Redis reconnect) instead of losing it
//! silently.
//!
//! Both backends deliver through the same in-process routing table: the in-process bus straight
//! from `publish`, the Redis bus from the task that reads its pub/sub connection. Each
//! subscription owns a small `broadcast` ring with a single receiver, which gives exactly the
//! wanted semantics for free: publishing never blocks, and a consumer that falls behind is told
//! how many events it missed at the point where it missed them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::BusError;
use crate::redis_bus::RedisBus;

/// Events a subscription buffers by default before the oldest are overwritten.
pub const DEFAULT_CAPACITY: usize = 1024;
/// The largest buffer a subscription may ask for; larger requests are clamped to it.
pub const MAX_CAPACITY: usize = 1 << 16;

/// What a [`Subscription`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A payload published on one of the subscription's topics.
    Message { topic: Arc<str>, payload: Bytes },
    /// The consumer fell behind: `missed` events (the oldest unread ones) were dropped here. The
    /// consumer should resync whatever state it derives from the bus.
    Lagged { missed: u64 },
    /// The Redis pub/sub connection was lost and is subscribed again: anything published while it
    /// was down is lost, so the consumer should resync. Also sent when a subscription made while
    /// Redis was unreachable becomes live. The in-process bus never sends it.
    Resubscribed,
}

/// A handle on the bus; clones share it. Two clones of an in-process bus behave like two nodes on
/// one Redis.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Arc<Routes>,
    backend: Backend,
}

enum Backend {
    InProcess,
    Redis(RedisBus),
}

impl Bus {
    /// A bus that lives in this process: what the embedded launcher uses.
    pub fn in_process() -> Bus {
        Bus { inner: Arc::new(Inner { routes: Arc::new(Routes::default()), backend: Backend::InProcess }) }
    }

    /// A bus over Redis at `url`: topic `t` is the channel `{prefix}t`, so several deployments (or
    /// tests) can share one Redis. Connects and opens the pub/sub connection before returning, so
    /// an unreachable Redis is reported here, within [`crate::REDIS_TIMEOUT`].
    pub async fn redis(url: &str, prefix: &str) -> Result<Bus, BusError> {
        let routes = Arc::new(Routes::default());
        let backend = RedisBus::connect(url, prefix, routes.clone()).await?;
        Ok(Bus { inner: Arc::new(Inner { routes, backend: Backend::Redis(backend) }) })
    }

    /// Publishes `payload` on `topic` to every subscription of every node. Fire and forget: it
    /// succeeds when no one listens, and says nothing about whether subscribers kept up.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        match &self.inner.backend {
            Backend::InProcess => {
                self.inner.routes.deliver(topic, payload);
                Ok(())
            }
            Backend::Redis(r) => r.publish(topic, payload).await,
        }
    }

    /// Subscribes to `topics` with a buffer of [`DEFAULT_CAPACITY`] events.
    pub async fn subscribe<I, S>(&self, topics: I) -> Subscription
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.subscribe_with_capacity(topics, DEFAULT_CAPACITY).await
    }

    /// Subscribes to `topics` with a buffer of `capacity` events (clamped to 1..=[`MAX_CAPACITY`]).
    ///
    /// On Redis this returns once Redis has confirmed the subscription, so a message published
    /// after it returns is delivered. If the pub/sub connection is down it returns at once; the
    /// subscription becomes live when the connection is back and then yields
    /// [`BusEvent::Resubscribed`].
    pub async fn subscribe_with_capacity<I, S>(&self, topics: I, capacity: usize) -> Subscription
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut seen = HashSet::new();
        // A topic named twice would otherwise deliver every message twice.
        let topics: Vec<Arc<str>> =
            topics.into_iter().map(|t| Arc::<str>::from(t.as_ref())).filter(|t| seen.insert(t.clone())).collect();
        let (tx, rx) = broadcast::channel(capacity.clamp(1, MAX_CAPACITY));
        let id = self.inner.routes.add(&topics, tx);
        if let Backend::Redis(r) = &self.inner.backend {
            r.sync().await;
        }
        Subscription { rx, id, topics, inner: self.inner.clone() }
    }

    /// Whether the bus can deliver messages from other nodes right now: always for the in-process
    /// bus; for Redis, whether the pub/sub connection is up (for `/readyz`).
    pub fn ready(&self) -> Result<(), BusError> {
        match &self.inner.backend {
            Backend::InProcess => Ok(()),
            Backend::Redis(r) => r.ready(),
        }
    }

    /// The local address of the current Redis pub/sub connection, as `CLIENT LIST` shows it in
    /// `addr=`, so an operator (or a test) can find this node's connection. `None` in process,
    /// while disconnected, or when Redis is not reached over plain TCP.
    pub fn pubsub_local_addr(&self) -> Option<SocketAddr> {
        match &self.inner.backend {
            Backend::InProcess => None,
            Backend::Redis(r) => r.local_addr(),
        }
    }
}

/// The receiving end of [`Bus::subscribe`]. Dropping it unsubscribes (and, on Redis, the node
/// leaves the channel once no local subscription wants it).
pub struct Subscription {
    rx: broadcast::Receiver<BusEvent>,
    id: u64,
    topics: Vec<Arc<str>>,
    inner: Arc<Inner>,
}

impl Subscription {
    /// The next event. `None` only if the bus is gone, which cannot happen while this holds it; the
    /// `Option` keeps callers' loops honest should that change.
    pub async fn recv(&mut self) -> Option<BusEvent> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(BusEvent::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<BusEvent> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(BusEvent::Lagged { missed }),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => None,
        }
    }

    /// The topics this subscription receives, without duplicates.
    pub fn topics(&self) -> &[Arc<str>] {
        &self.topics
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let emptied = self.inner.routes.remove(self.id, &self.topics);
        if emptied && let Backend::Redis(r) = &self.inner.backend {
            r.topics_changed();
        }
    }
}

/// Which subscriptions want which topic. Written on subscribe and drop, read on every delivery,
/// hence a read-write lock: deliveries from many publishers proceed in parallel and never wait on
/// a consumer (broadcast sends do not block).
#[derive(Default)]
pub(crate) struct Routes {
    table: RwLock<HashMap<Arc<str>, Vec<Route>>>,
    next_id: AtomicU64,
}

struct Route {
    id: u64,
    tx: broadcast::Sender<BusEvent>,
}

impl Routes {
    fn add(&self, topics: &[Arc<str>], tx: broadcast::Sender<BusEvent>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        for topic in topics {
            table.entry(topic.clone()).or_default().push(Route { id, tx: tx.clone() });
        }
        id
    }

    /// Removes subscription `id`; true if some topic has no subscriber left.
    fn remove(&self, id: u64, topics: &[Arc<str>]) -> bool {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let mut emptied = false;
        for topic in topics {
            if let Some(routes) = table.get_mut(topic) {
                routes.retain(|r| r.id != id);
                if routes.is_empty() {
                    table.remove(topic);
                    emptied = true;
                }
            }
        }
        emptied
    }

    /// Hands `payload` to every subscription of `topic`. A full ring overwrites its oldest event;
    /// its receiver then learns how many it lost.
    pub(crate) fn deliver(&self, topic: &str, payload: Bytes) {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let Some((topic, routes)) = table.get_key_value(topic) else { return };
        for route in routes {
            // An error only means the receiver is being dropped; its drop removes the route.
            let _ = route.tx.send(BusEvent::Message { topic: topic.clone(), payload: payload.clone() });
        }
    }

    /// Every topic some local subscription wants.
    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// Tells every subscription that messages may have been lost while Redis was away.
    pub(crate) fn resubscribed(&self) {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut told = HashSet::new();
        for route in table.values().flatten() {
            if told.insert(route.id) {
                let _ = route.tx.send(BusEvent::Resubscribed);
            }
        }
    }
}
