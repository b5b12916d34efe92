//! The directory: which GCS node holds each online user, so a node can route something for a user
//! to the node that has the user's link, and a new login can tell the old node to close its link.
//!
//! Entries live as long as the node that claimed them keeps refreshing them: a node whose process
//! dies loses its users within the TTL, without anyone cleaning up after it. The in-process
//! backend mirrors that with the life of the node's handle (dropping the last clone of a
//! [`Directory`] is a dying process: its users disappear a TTL later).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::BusError;
use crate::redis_directory::RedisDirectory;

/// How long a node's users outlive the node's last refresh, unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The shortest TTL accepted: the keep-alive runs every third of it and needs a few round trips.
pub const MIN_TTL: Duration = Duration::from_millis(300);
/// The node id of [`Directory::in_process`].
pub const LOCAL_NODE: &str = "local";
/// The longest node id accepted; ids become parts of Redis keys and bus topics.
const MAX_NODE_ID: usize = 128;

/// A node's view of the user → node directory; clones share it.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Backend>,
}

enum Backend {
    InProcess(LocalNode),
    Redis(RedisDirectory),
}

impl Directory {
    /// The directory of the one node of the embedded launcher ([`LOCAL_NODE`]), on a store of its
    /// own.
    pub fn in_process() -> Directory {
        let node = LocalNode::new(&InProcessStore::default(), LOCAL_NODE, DEFAULT_TTL)
            .expect("a fresh store has no live node to collide with");
        Directory { inner: Arc::new(Backend::InProcess(node)) }
    }

    /// Node `node_id` on a shared in-process store: several of these behave like nodes on one
    /// Redis. Fails if the id is malformed or already live on this store, or the TTL is below
    /// [`MIN_TTL`].
    pub fn in_process_on(store: &InProcessStore, node_id: &str, ttl: Duration) -> Result<Directory, BusError> {
        validate(node_id, ttl)?;
        Ok(Directory { inner: Arc::new(Backend::InProcess(LocalNode::new(store, node_id, ttl)?)) })
    }

    /// Node `node_id` on the directory in Redis at `url`, keys under `prefix`. Its users' keys
    /// expire `ttl` after the last refresh; a keep-alive task refreshes them (and the node's
    /// heartbeat) every `ttl / 3` while this handle (or a clone) lives. Writes the first heartbeat
    /// before returning, so an unreachable Redis is reported here.
    ///
    /// Keys: `{prefix}user.<uuid>` = node id, `{prefix}node.<node_id>` = heartbeat (ms, Redis
    /// clock), and the sorted set `{prefix}nodes` (node id by expiry) behind
    /// [`Directory::nodes_alive`].
    pub async fn redis(url: &str, prefix: &str, node_id: &str, ttl: Duration) -> Result<Directory, BusError> {
        validate(node_id, ttl)?;
        let backend = RedisDirectory::connect(url, prefix, node_id, ttl).await?;
        Ok(Directory { inner: Arc::new(Backend::Redis(backend)) })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        match &*self.inner {
            Backend::InProcess(n) => &n.node_id,
            Backend::Redis(r) => r.node_id(),
        }
    }

    /// Records that `user_id` is now on this node and keeps it so while this node lives. Returns
    /// the *other* node that held the user before, if one did, so the caller can tell it to close
    /// its older link; a user this node already held gives `None` (the node knows its own links).
    pub async fn claim(&self, user_id: Uuid) -> Result<Option<String>, BusError> {
        match &*self.inner {
            Backend::InProcess(n) => n.claim(user_id),
            Backend::Redis(r) => r.claim(user_id).await,
        }
    }

    /// Forgets `user_id` if this node still holds it; a user another node has claimed since is left
    /// alone (compare-and-delete). True if this node held it.
    pub async fn release(&self, user_id: Uuid) -> Result<bool, BusError> {
        match &*self.inner {
            Backend::InProcess(n) => Ok(n.release(user_id)),
            Backend::Redis(r) => r.release(user_id).await,
        }
    }

    /// The node holding `user_id`, if any.
    pub async fn lookup(&self, user_id: Uuid) -> Result<Option<String>, BusError> {
        match &*self.inner {
            Backend::InProcess(n) => Ok(n.lookup(user_id)),
            Backend::Redis(r) => r.lookup(user_id).await,
        }
    }

    /// The node holding each of `user_ids`, in the same order. Redis is asked in bounded batches
    /// (MGET of at most 500 keys), so a long list costs several round trips, not one huge reply.
    pub async fn lookup_many(&self, user_ids: &[Uuid]) -> Result<Vec<Option<String>>, BusError> {
        match &*self.inner {
            Backend::InProcess(n) => Ok(user_ids.iter().map(|u| n.lookup(*u)).collect()),
            Backend::Redis(r) => r.lookup_many(user_ids).await,
        }
    }

    /// The nodes whose heartbeat has not expired, sorted.
    pub async fn nodes_alive(&self) -> Result<Vec<String>, BusError> {
        let mut nodes = match &*self.inner {
            Backend::InProcess(n) => n.nodes_alive(),
            Backend::Redis(r) => r.nodes_alive().await?,
        };
        nodes.sort();
        Ok(nodes)
    }

    /// How many users this node holds (and refreshes).
    pub fn held(&self) -> usize {
        match &*self.inner {
            Backend::InProcess(n) => n.held(),
            Backend::Redis(r) => r.held(),
        }
    }

    /// Leaves cleanly: stops refreshing, releases every user this node holds and removes its
    /// heartbeat, so other nodes see it gone at once instead of a TTL later. Later claims fail with
    /// [`BusError::Closed`]; lookups keep working.
    pub async fn close(&self) -> Result<(), BusError> {
        match &*self.inner {
            Backend::InProcess(n) => {
                n.close();
                Ok(())
            }
            Backend::Redis(r) => r.close().await,
        }
    }
}

fn validate(node_id: &str, ttl: Duration) -> Result<(), BusError> {
    if node_id.is_empty()
        || node_id.len() > MAX_NODE_ID
        || !node_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(BusError::Config(format!(
            "node id {node_id:?} must be 1 to {MAX_NODE_ID} characters of [A-Za-z0-9._:-]"
        )));
    }
    if ttl < MIN_TTL {
        return Err(BusError::Config(format!("directory ttl {ttl:?} is below the minimum {MIN_TTL:?}")));
    }
    Ok(())
}

/// What Redis holds, for directories that live in one process. Clones share it; give one to each
/// in-process node that should see the others.
#[derive(Clone, Default)]
pub struct InProcessStore {
    state: Arc<Mutex<StoreState>>,
}

#[derive(Default)]
struct StoreState {
    users: HashMap<Uuid, String>,
    nodes: HashMap<String, NodeLife>,
}

/// A node is alive while its handle is, and for a TTL after the handle is dropped (as Redis keys
/// outlive a dead process by up to a TTL).
struct NodeLife {
    handle_alive: bool,
    /// When the node stops counting once its handle is gone.
    until: Instant,
}

impl NodeLife {
    fn alive(&self, now: Instant) -> bool {
        self.handle_alive || now < self.until
    }
}

impl InProcessStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StoreState {
    fn owner(&self, user_id: Uuid, now: Instant) -> Option<&String> {
        self.users.get(&user_id).filter(|node| self.nodes.get(*node).is_some_and(|n| n.alive(now)))
    }

    /// Forgets nodes past their TTL and their users, so a store that outlives many nodes does not
    /// grow. Nodes are few: the scan is cheap next to the map operation that triggers it.
    fn sweep(&mut self, now: Instant) {
        let before = self.nodes.len();
        self.nodes.retain(|_, n| n.alive(now));
        if self.nodes.len() != before {
            let nodes = &self.nodes;
            self.users.retain(|_, node| nodes.contains_key(node));
        }
    }
}

/// One in-process node.
struct LocalNode {
    store: InProcessStore,
    node_id: String,
    ttl: Duration,
}

impl LocalNode {
    fn new(store: &InProcessStore, node_id: &str, ttl: Duration) -> Result<LocalNode, BusError> {
        let mut state = store.lock();
        if state.nodes.get(node_id).is_some_and(|n| n.handle_alive) {
            return Err(BusError::Config(format!("node id {node_id:?} is already live on this store")));
        }
        // A node id restarting within the TTL of its previous life takes its users over, as a
        // restarted process with the same id would in Redis.
        state.nodes.insert(node_id.to_owned(), NodeLife { handle_alive: true, until: Instant::now() });
        Ok(LocalNode { store: store.clone(), node_id: node_id.to_owned(), ttl })
    }

    fn claim(&self, user_id: Uuid) -> Result<Option<String>, BusError> {
        let mut state = self.store.lock();
        let now = Instant::now();
        state.sweep(now);
        // A live handle's node is always in the table; only `close` removes it.
        if !state.nodes.get(&self.node_id).is_some_and(|n| n.handle_alive) {
            return Err(BusError::Closed(self.node_id.clone()));
        }
        let previous = state.owner(user_id, now).cloned();
        state.users.insert(user_id, self.node_id.clone());
        Ok(previous.filter(|p| *p != self.node_id))
    }

    fn release(&self, user_id: Uuid) -> bool {
        let mut state = self.store.lock();
        if state.users.get(&user_id) == Some(&self.node_id) {
            state.users.remove(&user_id);
            true
        } else {
            false
        }
    }

    fn lookup(&self, user_id: Uuid) -> Option<String> {
        self.store.lock().owner(user_id, Instant::now()).cloned()
    }

    fn nodes_alive(&self) -> Vec<String> {
        let now = Instant::now();
        self.store.lock().nodes.iter().filter(|(_, n)| n.alive(now)).map(|(id, _)| id.clone()).collect()
    }

    fn held(&self) -> usize {
        let state = self.store.lock();
        state.users.values().filter(|n| **n == self.node_id).count()
    }

    fn close(&self) {
        let mut state = self.store.lock();
        state.nodes.remove(&self.node_id);
        let node_id = &self.node_id;
        state.users.retain(|_, n| n != node_id);
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        let mut state = self.store.lock();
        if let Some(n) = state.nodes.get_mut(&self.node_id)
            && n.handle_alive
        {
            n.handle_alive = false;
            n.until = Instant::now() + self.ttl;
        }
    }
}
