//! Revocations shared through Redis: each revocation is a key with a TTL equal to the remaining
//! life of the tokens it concerns, published on a channel at the same time. A background task
//! subscribes to the channel and feeds the local cache; on every (re)connect it subscribes first
//! and then loads the existing keys (SCAN), so a node that starts late or was disconnected learns
//! every revocation still in force and misses none published meanwhile.
//!
//! Layout in Redis, under a configurable prefix (tests use a unique one each):
//! - `{prefix}revoked:s:{session_id}` = `{until_ms}`
//! - `{prefix}revoked:u:{user_id}` = `{issued_before_ms}:{until_ms}` (last write wins in Redis;
//!   the caches keep the highest cutoff they have seen)
//! - channel `{prefix}revocations`, messages `s:{session_id}:{until_ms}` and
//!   `u:{user_id}:{issued_before_ms}:{until_ms}`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use super::{Revocation, RevocationCache, Revocations};
use crate::{SessionClaims, TokenError};

/// How long connecting, or one command, may take.
const TIMEOUT: Duration = Duration::from_secs(5);
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Keys fetched per SCAN/MGET round trip during the initial load.
const SCAN_BATCH: usize = 500;

/// Revocations through Redis. Dropping it stops its background task.
pub struct RedisRevocations {
    shared: Arc<Shared>,
    _task: AbortOnDrop,
}

struct Shared {
    cache: RevocationCache,
    /// Reconnects by itself; used for writes and for the initial load.
    conn: ConnectionManager,
    prefix: String,
    channel: String,
    /// Whether the subscription is live; while it is not, other nodes' revocations may be missed.
    connected: AtomicBool,
}

impl RedisRevocations {
    /// Connects, subscribes and loads the revocations already in force before returning, so the
    /// caller starts with a complete cache. Fails if Redis cannot be reached within 5 seconds.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<RedisRevocations, TokenError> {
        let client = redis::Client::open(url).map_err(|e| bus(format!("redis url {url:?}: {e}")))?;
        // One plain connection first: the manager retries a failing first connect with long
        // backoff, while an unreachable Redis at start should be reported at once.
        tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| bus(format!("redis at {url} did not answer within {TIMEOUT:?}")))?
            .map_err(|e| bus(format!("cannot connect to redis at {url}: {e}")))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_factor(2)
            .set_max_delay(MAX_BACKOFF.as_millis() as u64)
            .set_number_of_retries(3);
        let conn = tokio::time::timeout(TIMEOUT, client.get_connection_manager_with_config(cfg))
            .await
            .map_err(|_| bus(format!("redis at {url} did not answer within {TIMEOUT:?}")))?
            .map_err(|e| bus(format!("cannot connect to redis at {url}: {e}")))?;
        let shared = Arc::new(Shared {
            cache: RevocationCache::new(),
            conn,
            prefix: key_prefix.to_owned(),
            channel: format!("{key_prefix}revocations"),
            connected: AtomicBool::new(false),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let task = AbortOnDrop(tokio::spawn(subscriber(client, shared.clone(), first_tx)).abort_handle());
        match tokio::time::timeout(TIMEOUT, first_rx).await {
            Ok(Ok(Ok(()))) => Ok(RedisRevocations { shared, _task: task }),
            Ok(Ok(Err(e))) => Err(bus(format!("cannot subscribe to redis at {url}: {e}"))),
            Ok(Err(_)) => Err(bus("redis subscriber stopped during start".to_owned())),
            Err(_) => Err(bus(format!("redis at {url} did not complete the initial load within {TIMEOUT:?}"))),
        }
    }

    /// The local cache, for inspection.
    pub fn cache(&self) -> &RevocationCache {
        &self.shared.cache
    }

    fn write(&self, r: Revocation, now_ms: i64) -> BoxFuture<'_, Result<(), TokenError>> {
        // The local cache first: this process refuses the token at once, whatever Redis does.
        self.shared.cache.apply(r, now_ms);
        let (until_ms, key, value, message) = match r {
            Revocation::Session { session_id, until_ms } => (
                until_ms,
                format!("{}revoked:s:{session_id}", self.shared.prefix),
                until_ms.to_string(),
                format!("s:{session_id}:{until_ms}"),
            ),
            Revocation::User { user_id, issued_before_ms, until_ms } => (
                until_ms,
                format!("{}revoked:u:{user_id}", self.shared.prefix),
                format!("{issued_before_ms}:{until_ms}"),
                format!("u:{user_id}:{issued_before_ms}:{until_ms}"),
            ),
        };
        let ttl_ms = until_ms.saturating_sub(now_ms);
        let mut conn = self.shared.conn.clone();
        let channel = self.shared.channel.clone();
        Box::pin(async move {
            if ttl_ms <= 0 {
                // Every token it concerns has expired already.
                return Ok(());
            }
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(&message)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| bus(format!("cannot record revocation: {e}")))
        })
    }
}

impl Revocations for RedisRevocations {
    fn is_revoked(&self, claims: &SessionClaims, now_ms: i64) -> bool {
        self.shared.cache.is_revoked(claims, now_ms)
    }

    fn revoke_session(&self, session_id: Uuid, until_ms: i64, now_ms: i64) -> BoxFuture<'_, Result<(), TokenError>> {
        self.write(Revocation::Session { session_id, until_ms }, now_ms)
    }

    fn revoke_user_before(
        &self,
        user_id: Uuid,
        issued_before_ms: i64,
        until_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), TokenError>> {
        self.write(Revocation::User { user_id, issued_before_ms, until_ms }, now_ms)
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.shared.cache.subscribe()
    }

    fn ready(&self) -> Result<(), String> {
        if self.shared.connected.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("redis revocation subscription is down".to_owned())
        }
    }
}

/// Keeps the subscription alive for the life of the [`RedisRevocations`]. The first outcome (the
/// initial subscribe and load) goes to `first`; later failures are retried with backoff.
async fn subscriber(client: redis::Client, shared: Arc<Shared>, first: oneshot::Sender<Result<(), String>>) {
    let mut first = Some(first);
    let mut backoff = INITIAL_BACKOFF;
    loop {
        match subscribe_and_load(&client, &shared).await {
            Ok(pubsub) => {
                shared.connected.store(true, Ordering::Relaxed);
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                } else {
                    tracing::info!("redis revocation subscription restored");
                }
                backoff = INITIAL_BACKOFF;
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                    match parse_message(&payload) {
                        Some(r) => {
                            shared.cache.apply(r, service_runtime::now_ms());
                        }
                        None => tracing::warn!(payload = %payload, "ignoring malformed revocation message"),
                    }
                }
                shared.connected.store(false, Ordering::Relaxed);
                tracing::warn!("redis revocation subscription lost; reconnecting");
            }
            Err(e) => {
                shared.connected.store(false, Ordering::Relaxed);
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot resubscribe to redis revocations");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Subscribes, then loads every key already in Redis: in this order nothing published between the
/// two is lost (it waits in the subscription).
async fn subscribe_and_load(client: &redis::Client, shared: &Shared) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub.subscribe(&shared.channel).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(pubsub)
    };
    let pubsub = tokio::time::timeout(TIMEOUT, connect).await.map_err(|_| "subscribe timed out".to_owned())??;
    let loaded = tokio::time::timeout(TIMEOUT * 6, load_existing(shared))
        .await
        .map_err(|_| "initial load timed out".to_owned())??;
    tracing::debug!(loaded, "loaded revocations from redis");
    Ok(pubsub)
}

async fn load_existing(shared: &Shared) -> Result<usize, String> {
    let mut conn = shared.conn.clone();
    let pattern = format!("{}revoked:*", glob_escape(&shared.prefix));
    let key_start = shared.prefix.len() + "revoked:".len();
    let mut cursor: u64 = 0;
    let mut loaded = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_BATCH)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if !keys.is_empty() {
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(|e| e.to_string())?;
            let now = service_runtime::now_ms();
            for (key, value) in keys.iter().zip(values) {
                // A key can expire between SCAN and MGET.
                let (Some(value), Some(suffix)) = (value, key.get(key_start..)) else { continue };
                match parse_message(&format!("{suffix}:{value}")) {
                    Some(r) => {
                        shared.cache.apply(r, now);
                        loaded += 1;
                    }
                    None => tracing::warn!(key = %key, "ignoring malformed revocation key"),
                }
            }
        }
        if next == 0 {
            return Ok(loaded);
        }
        cursor = next;
    }
}

/// Parses `s:{uuid}:{until}` or `u:{uuid}:{cutoff}:{until}`; anything else is `None`.
fn parse_message(s: &str) -> Option<Revocation> {
    let mut parts = s.split(':');
    let kind = parts.next()?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    let r = match kind {
        "s" => Revocation::Session { session_id: id, until_ms: parts.next()?.parse().ok()? },
        "u" => Revocation::User {
            user_id: id,
            issued_before_ms: parts.next()?.parse().ok()?,
            until_ms: parts.next()?.parse().ok()?,
        },
        _ => return None,
    };
    parts.next().is_none().then_some(r)
}

/// Escapes the glob characters of a SCAN MATCH pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bus(msg: String) -> TokenError {
    TokenError::Bus(msg)
}

/// Aborts the background task when the owner goes away.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_strictly() {
        let id = Uuid::new_v4();
        let check = |s: String, want: Option<Revocation>| assert_eq!(parse_message(&s), want, "{s}");
        check(format!("s:{id}:42"), Some(Revocation::Session { session_id: id, until_ms: 42 }));
        check(format!("u:{id}:7:42"), Some(Revocation::User { user_id: id, issued_before_ms: 7, until_ms: 42 }));
        check(format!("s:{id}:42:1"), None);
        check(format!("u:{id}:7"), None);
        check(format!("x:{id}:42"), None);
        check("s:not-a-uuid:42".into(), None);
        check(format!("s:{id}:forty"), None);
        check(String::new(), None);
    }

    #[test]
    fn prefixes_are_glob_escaped() {
        assert_eq!(glob_escape("t[1]*?\\:"), "t\\[1\\]\\*\\?\\\\:");
    }
}
