//! The Redis backend of the directory: one key per online user holding its node id with a TTL,
//! refreshed by the node's keep-alive task, so the users of a node that dies vanish within a TTL
//! with no one cleaning up after it.
//!
//! Writes that depend on who owns a key (release, refresh) are Lua scripts, so a node never
//! deletes or extends a user another node has claimed meanwhile. The node's heartbeat and the
//! `nodes` sorted set use Redis's clock (`TIME` inside a script), so nodes with skewed clocks agree
//! on who is alive. The multi-key scripts assume one Redis, not a cluster.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::{AbortOnDrop, BusError, command_connection, timed};

/// Keys per MGET, refresh script or batch release: bounds the size of one request and reply, and
/// how long one script blocks Redis.
const BATCH: usize = 500;

/// Deletes KEYS[1] if it holds ARGV[1] (this node); returns how many keys it deleted.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
",
    )
});

/// Extends every key of KEYS that holds ARGV[1] (this node) to ARGV[2] ms. Returns the 1-based
/// positions of the keys that are missing and of those another node holds.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local missing = {}
local lost = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif v then
    table.insert(lost, i)
  else
    table.insert(missing, i)
  end
end
return {missing, lost}
",
    )
});

/// Writes node ARGV[1]'s heartbeat key KEYS[1] and its expiry in the sorted set KEYS[2] (TTL
/// ARGV[2] ms), and drops expired nodes from the set. The set itself expires when no node has
/// beaten for three TTLs, so a deployment that is gone leaves nothing behind.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%d', now), 'PX', ttl)
redis.call('ZADD', KEYS[2], string.format('%d', now + ttl), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
if redis.call('PTTL', KEYS[2]) < 3 * ttl then
  redis.call('PEXPIRE', KEYS[2], 3 * ttl)
end
return now
",
    )
});

/// The members of sorted set KEYS[1] whose expiry is still ahead on Redis's clock.
static ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
",
    )
});

pub(crate) struct RedisDirectory {
    shared: Arc<Shared>,
    keep_alive: AbortOnDrop,
}

struct Shared {
    conn: ConnectionManager,
    prefix: String,
    node_id: String,
    ttl_ms: u64,
    /// The users this node claimed and has not released: what the keep-alive refreshes.
    held: Mutex<HashSet<Uuid>>,
    /// Set by `close`; claims fail after it.
    closed: AtomicBool,
}

impl RedisDirectory {
    pub(crate) async fn connect(url: &str, prefix: &str, node_id: &str, ttl: Duration) -> Result<RedisDirectory, BusError> {
        let (_client, conn) = command_connection(url).await?;
        let shared = Arc::new(Shared {
            conn,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            held: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
        });
        shared.heartbeat().await?;
        let keep_alive = AbortOnDrop(tokio::spawn(keep_alive(shared.clone(), ttl / 3)).abort_handle());
        Ok(RedisDirectory { shared, keep_alive })
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    pub(crate) async fn claim(&self, user_id: Uuid) -> Result<Option<String>, BusError> {
        let s = &self.shared;
        if s.closed.load(Ordering::Relaxed) {
            return Err(BusError::Closed(s.node_id.clone()));
        }
        let mut conn = s.conn.clone();
        // SET … GET swaps the owner and reads the previous one in one atomic step.
        let previous: Option<String> = timed(
            &format!("claim user {user_id}"),
            redis::cmd("SET")
                .arg(s.user_key(user_id))
                .arg(&s.node_id)
                .arg("PX")
                .arg(s.ttl_ms)
                .arg("GET")
                .query_async(&mut conn),
        )
        .await?;
        s.held().insert(user_id);
        Ok(previous.filter(|p| *p != s.node_id))
    }

    pub(crate) async fn release(&self, user_id: Uuid) -> Result<bool, BusError> {
        let s = &self.shared;
        // Forgotten locally first: a refresh running meanwhile then deletes a key it recreates.
        s.held().remove(&user_id);
        let mut conn = s.conn.clone();
        let mut invocation = RELEASE.key(s.user_key(user_id));
        invocation.arg(&s.node_id);
        let deleted: i64 = timed(&format!("release user {user_id}"), invocation.invoke_async(&mut conn)).await?;
        Ok(deleted == 1)
    }

    pub(crate) async fn lookup(&self, user_id: Uuid) -> Result<Option<String>, BusError> {
        let mut conn = self.shared.conn.clone();
        timed(
            &format!("look up user {user_id}"),
            redis::cmd("GET").arg(self.shared.user_key(user_id)).query_async(&mut conn),
        )
        .await
    }

    pub(crate) async fn lookup_many(&self, user_ids: &[Uuid]) -> Result<Vec<Option<String>>, BusError> {
        let mut conn = self.shared.conn.clone();
        let mut out = Vec::with_capacity(user_ids.len());
        for batch in user_ids.chunks(BATCH) {
            let keys: Vec<String> = batch.iter().map(|u| self.shared.user_key(*u)).collect();
            let nodes: Vec<Option<String>> =
                timed("look up users", redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
            if nodes.len() != batch.len() {
                return Err(BusError::Redis(format!("MGET of {} keys answered {} values", batch.len(), nodes.len())));
            }
            out.extend(nodes);
        }
        Ok(out)
    }

    pub(crate) async fn nodes_alive(&self) -> Result<Vec<String>, BusError> {
        let mut conn = self.shared.conn.clone();
        let invocation = ALIVE.key(self.shared.nodes_key());
        timed("list live nodes", invocation.invoke_async(&mut conn)).await
    }

    pub(crate) fn held(&self) -> usize {
        self.shared.held().len()
    }

    pub(crate) async fn close(&self) -> Result<(), BusError> {
        let s = &self.shared;
        s.closed.store(true, Ordering::Relaxed);
        self.keep_alive.0.abort();
        let users: Vec<Uuid> = s.held().drain().collect();
        let mut conn = s.conn.clone();
        for batch in users.chunks(BATCH) {
            s.release_batch(&mut conn, batch).await?;
        }
        timed(
            "remove node heartbeat",
            redis::pipe()
                .cmd("DEL")
                .arg(s.node_key())
                .ignore()
                .cmd("ZREM")
                .arg(s.nodes_key())
                .arg(&s.node_id)
                .ignore()
                .query_async::<()>(&mut conn),
        )
        .await
    }
}

impl Shared {
    fn user_key(&self, user_id: Uuid) -> String {
        format!("{}user.{user_id}", self.prefix)
    }

    fn node_key(&self) -> String {
        format!("{}node.{}", self.prefix, self.node_id)
    }

    fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn heartbeat(&self) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let mut invocation = HEARTBEAT.key(self.node_key());
        invocation.key(self.nodes_key()).arg(&self.node_id).arg(self.ttl_ms);
        timed("write node heartbeat", invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
    }

    /// Deletes those of `users` this node still holds in Redis.
    async fn release_batch(&self, conn: &mut ConnectionManager, users: &[Uuid]) -> Result<(), BusError> {
        let mut invocation = RELEASE.prepare_invoke();
        for u in users {
            invocation.key(self.user_key(*u));
        }
        invocation.arg(&self.node_id);
        timed("release users", invocation.invoke_async::<i64>(conn)).await.map(drop)
    }

    /// One keep-alive pass: the heartbeat, then every held user in batches.
    async fn refresh(&self) -> Result<(), BusError> {
        self.heartbeat().await?;
        let users: Vec<Uuid> = self.held().iter().copied().collect();
        let mut conn = self.conn.clone();
        for batch in users.chunks(BATCH) {
            let mut invocation = REFRESH.prepare_invoke();
            for u in batch {
                invocation.key(self.user_key(*u));
            }
            invocation.arg(&self.node_id).arg(self.ttl_ms);
            let (missing, lost): (Vec<i64>, Vec<i64>) =
                timed("refresh users", invocation.invoke_async(&mut conn)).await?;
            let pick = |positions: Vec<i64>| -> Vec<Uuid> {
                positions
                    .into_iter()
                    .filter_map(|i| usize::try_from(i).ok()?.checked_sub(1).and_then(|i| batch.get(i)).copied())
                    .collect()
            };
            let lost = pick(lost);
            if !lost.is_empty() {
                // Another node claimed them; that node tells this one to close the links.
                let mut held = self.held();
                for u in &lost {
                    held.remove(u);
                }
                tracing::info!(node_id = %self.node_id, users = lost.len(), "users claimed by another node; no longer refreshed");
            }
            let missing = pick(missing);
            if !missing.is_empty() {
                self.recreate(&mut conn, &missing).await?;
            }
        }
        Ok(())
    }

    /// Puts back keys that expired although this node still holds the users (after Redis was
    /// unreachable for longer than the TTL, or a flush), unless someone claimed them meanwhile.
    async fn recreate(&self, conn: &mut ConnectionManager, missing: &[Uuid]) -> Result<(), BusError> {
        let still_held: Vec<Uuid> = {
            let held = self.held();
            missing.iter().copied().filter(|u| held.contains(u)).collect()
        };
        if still_held.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for u in &still_held {
            pipe.cmd("SET").arg(self.user_key(*u)).arg(&self.node_id).arg("PX").arg(self.ttl_ms).arg("NX").ignore();
        }
        timed("recreate user keys", pipe.query_async::<()>(conn)).await?;
        tracing::warn!(node_id = %self.node_id, users = still_held.len(), "recreated expired user keys");
        // A release between the check above and the SET would otherwise leave a key behind.
        let released: Vec<Uuid> = {
            let held = self.held();
            still_held.into_iter().filter(|u| !held.contains(u)).collect()
        };
        if !released.is_empty() {
            self.release_batch(conn, &released).await?;
        }
        Ok(())
    }
}

/// Refreshes the heartbeat and every held user each `period` (a third of the TTL, so two passes
/// may fail before anything expires) until the directory is dropped or closed.
async fn keep_alive(shared: Arc<Shared>, period: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // After a stall, one pass catches up; a burst of passes would add nothing.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = shared.refresh().await {
            tracing::warn!(node_id = %shared.node_id, error = %e, "directory keep-alive failed; retrying next period");
        }
    }
}
