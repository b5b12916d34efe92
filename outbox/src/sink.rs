//! Where the relay publishes events: a Redis stream ([`RedisStream`]) in production, or an
//! in-process ring buffer ([`InProcessLog`]) for the embedded launcher and tests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, broadcast};

use crate::OutboxError;
use crate::store::Event;

/// Where events go.
pub enum Sink {
    /// XADD to the stream `{prefix}events`.
    RedisStream(RedisStream),
    /// A bounded in-memory log of the latest events.
    InProcessLog(InProcessLog),
}

impl Sink {
    /// Publishes `events` (in id order) as one unit; `Ok` means the sink holds all of them.
    pub async fn publish(&mut self, events: &[Event]) -> Result<(), OutboxError> {
        match self {
            Sink::RedisStream(s) => s.publish(events).await,
            Sink::InProcessLog(l) => {
                l.push(events);
                Ok(())
            }
        }
    }

    /// For logs: `redis` or `log`.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::RedisStream(_) => "redis",
            Sink::InProcessLog(_) => "log",
        }
    }
}

/// The default `MAXLEN ~` of the stream: old entries are trimmed past about this many, so a
/// stream nobody reads cannot fill Redis.
pub const DEFAULT_STREAM_MAXLEN: u64 = 1_000_000;

/// How long connecting to Redis or one batch may take before it counts as a failure.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// The Redis stream sink. It connects lazily and, after any error, drops the connection and
/// connects again on the next attempt, so it recovers by itself when Redis comes back.
pub struct RedisStream {
    client: redis::Client,
    key: String,
    maxlen: u64,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl RedisStream {
    /// A sink publishing to `{prefix}events` on the Redis at `url`. Only the URL is checked
    /// here; Redis may be down until the first publish (and after).
    pub fn new(url: &str, prefix: &str) -> Result<RedisStream, OutboxError> {
        let client =
            redis::Client::open(url).map_err(|source| OutboxError::RedisUrl { url: url.to_owned(), source })?;
        Ok(RedisStream {
            client,
            key: format!("{prefix}events"),
            maxlen: DEFAULT_STREAM_MAXLEN,
            timeout: REDIS_TIMEOUT,
            conn: None,
        })
    }

    /// Trims the stream to about `maxlen` entries (at least 1).
    pub fn with_maxlen(mut self, maxlen: u64) -> RedisStream {
        self.maxlen = maxlen.max(1);
        self
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn publish(&mut self, events: &[Event]) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout);
                let connect = self.client.get_multiplexed_async_connection_with_config(&config);
                tokio::time::timeout(self.timeout, connect)
                    .await
                    .map_err(|_| OutboxError::RedisTimeout(self.timeout))??
            }
        };
        // MULTI/EXEC: the batch lands whole or not at all, so a retry after a failure does not
        // leave half a batch behind a duplicate of it.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for e in events {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("id")
                .arg(e.id)
                .arg("kind")
                .arg(&e.kind)
                .arg("source")
                .arg(&e.source)
                .arg("at_ms")
                .arg(e.created_at_ms)
                .arg("payload")
                .arg(&e.payload)
                .ignore();
        }
        let sent = tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await;
        match sent {
            Ok(Ok(())) => {
                self.conn = Some(conn);
                Ok(())
            }
            // The connection is dropped: the next attempt starts from a fresh one.
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(OutboxError::RedisTimeout(self.timeout)),
        }
    }
}

/// The default number of events an [`InProcessLog`] keeps.
pub const DEFAULT_LOG_CAPACITY: usize = 4096;

/// Subscribers of an [`InProcessLog`] that fall this far behind miss events (they are told so
/// by `broadcast`'s `Lagged`).
const BROADCAST_CAPACITY: usize = 1024;

/// The latest events in memory: the sink of the embedded launcher, which has no Redis, and of
/// tests. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct InProcessLog {
    inner: Arc<LogInner>,
}

struct LogInner {
    capacity: usize,
    events: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
    changed: Notify,
}

impl Default for InProcessLog {
    fn default() -> Self {
        InProcessLog::new(DEFAULT_LOG_CAPACITY)
    }
}

impl InProcessLog {
    /// A log keeping the latest `capacity` events (at least 1).
    pub fn new(capacity: usize) -> InProcessLog {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        InProcessLog {
            inner: Arc::new(LogInner {
                capacity: capacity.max(1),
                events: Mutex::new(VecDeque::new()),
                tx,
                changed: Notify::new(),
            }),
        }
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.inner.events.lock().map(|e| e.iter().cloned().collect()).unwrap_or_default()
    }

    /// Every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.tx.subscribe()
    }

    /// Waits until the log holds an event matching `pred` (already there, or arriving within
    /// `timeout`) and returns the first such.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            if let Some(e) = self.recent().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    fn push(&self, events: &[Event]) {
        if let Ok(mut log) = self.inner.events.lock() {
            for e in events {
                if log.len() == self.inner.capacity {
                    log.pop_front();
                }
                log.push_back(e.clone());
            }
        }
        for e in events {
            // No subscriber is not an error: the ring buffer still has the event.
            let _ = self.inner.tx.send(e.clone());
        }
        self.inner.changed.notify_waiters();
    }
}
