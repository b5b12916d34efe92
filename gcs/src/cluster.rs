//! The node's view of the cluster: the bus (hub messages between nodes) and the directory (which
//! node holds which user), in-process for the embedded default or on Redis for several nodes.
//! A thin layer over the `bus` crate that speaks the hub's [`BusMessage`]s.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::effects::Completion;
use crate::hub::{BusMessage, TOPIC_CHAT, TOPIC_PRESENCE, node_topic};

/// Why the cluster plumbing failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(#[from] bus::BusError);

/// The bus and the directory of one node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    bus: bus::Bus,
    directory: bus::Directory,
}

impl Cluster {
    /// The cluster of one node on this process (several nodes of one process share `bus` and
    /// `store`).
    pub fn in_process(bus: bus::Bus, store: &bus::InProcessStore, node_id: &str) -> Result<Cluster, ClusterError> {
        Ok(Cluster { bus, directory: bus::Directory::in_process_on(store, node_id, bus::DEFAULT_TTL)? })
    }

    /// A node of a Redis cluster: users expire from the directory `ttl` after this node stops
    /// refreshing them.
    pub async fn redis(url: &str, prefix: &str, node_id: &str, ttl: std::time::Duration) -> Result<Cluster, ClusterError> {
        let bus = bus::Bus::redis(url, prefix).await?;
        let directory = bus::Directory::redis(url, prefix, node_id, ttl).await?;
        Ok(Cluster { bus, directory })
    }

    pub async fn publish(&self, topic: &str, message: &BusMessage) -> Result<(), ClusterError> {
        Ok(self.bus.publish(topic, Bytes::from(message.to_bytes())).await?)
    }

    /// Subscribes to the broadcast topics and this node's topic, feeding the owner task until
    /// `shutdown`.
    pub async fn subscribe(&self, node_id: &str, completions: mpsc::Sender<Completion>, shutdown: CancellationToken) -> Result<(), ClusterError> {
        let mut subscription = self.bus.subscribe([TOPIC_PRESENCE.to_owned(), TOPIC_CHAT.to_owned(), node_topic(node_id)]).await;
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = subscription.recv() => event,
                    () = shutdown.cancelled() => None,
                };
                let Some(event) = event else { break };
                match event {
                    bus::BusEvent::Message { topic, payload } => match BusMessage::from_bytes(&payload) {
                        Some(message) => {
                            if completions.send(Completion::Bus(message)).await.is_err() {
                                break;
                            }
                        }
                        None => tracing::warn!(%topic, "undecodable bus message ignored"),
                    },
                    bus::BusEvent::Lagged { missed } => tracing::warn!(missed, "bus subscription lagged: pushes were lost"),
                    bus::BusEvent::Resubscribed => tracing::info!("bus subscription restored"),
                }
            }
        });
        Ok(())
    }

    /// Records the user as held by this node; the node that held them before, if any.
    pub async fn claim(&self, user: Uuid) -> Result<Option<String>, ClusterError> {
        Ok(self.directory.claim(user).await?)
    }

    pub async fn release(&self, user: Uuid) -> Result<(), ClusterError> {
        self.directory.release(user).await?;
        Ok(())
    }

    pub async fn lookup(&self, user: Uuid) -> Result<Option<String>, ClusterError> {
        Ok(self.directory.lookup(user).await?)
    }

    pub async fn lookup_many(&self, users: &[Uuid]) -> Result<Vec<Option<String>>, ClusterError> {
        Ok(self.directory.lookup_many(users).await?)
    }

    /// Whether the bus is connected (for `/readyz`).
    pub fn ready(&self) -> bool {
        self.bus.ready().is_ok()
    }
}
