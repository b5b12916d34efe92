//! Allocation of an instance server for a formed match (DESIGN.md §5), behind one trait so the
//! service does not care where instances come from:
//!
//! - [`InProcess`]: the embedded default. Requests go over a bounded channel to whoever hosts
//!   instances in this process (the launcher), which answers each on a oneshot.
//! - [`StaticPool`]: configured instance addresses, one match each until its result frees it.
//! - [`spawner::ProcessSpawner`]: starts an instance binary per match, waits for its ready line
//!   and keeps a small warm pool.
//! - `agones::Agones` (feature `agones`): a `GameServerAllocation` through the Kubernetes API.
//!
//! Every failure is an [`AllocError`]; the service re-queues the match's tickets on any of them
//! (keeping their enqueue time), so no capacity never drops a match.

use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

#[cfg(feature = "agones")]
pub mod agones;
pub mod spawner;

/// What an allocator is told about the match it must place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchSpec {
    pub match_id: Uuid,
    pub mode: String,
    pub region: String,
    /// The user ids of each team.
    pub teams: [Vec<Uuid>; 2],
    pub created_at_ms: i64,
}

/// Where players reach an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAddr {
    pub host: String,
    pub udp_port: u16,
    /// The WebSocket URL, when the instance serves one.
    #[serde(default)]
    pub ws_url: Option<String>,
}

/// An instance given to one match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The instance's identity, bound into the join tokens.
    pub instance_id: String,
    pub address: InstanceAddr,
}

/// Why no instance was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every instance is busy (or none exists); retry later.
    #[error("no instance capacity")]
    NoCapacity,
    /// Others claimed the candidate instances first, more often than the allocator retries.
    #[error("allocation contention")]
    Contention,
    /// The allocator itself failed (spawn error, API error, timeout).
    #[error("allocation failed: {0}")]
    Failed(String),
}

impl AllocError {
    /// A low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::NoCapacity => "no_capacity",
            AllocError::Contention => "contention",
            AllocError::Failed(_) => "failed",
        }
    }
}

/// Gives matches instances. Implementations are shared by the service's allocation tasks, so
/// calls overlap.
pub trait Allocator: Send + Sync + 'static {
    /// A short name for logs and metric labels (`in_process`, `static_pool`, ...).
    fn name(&self) -> &'static str;

    /// Finds an instance for `spec`.
    fn allocate<'a>(&'a self, spec: &'a MatchSpec) -> BoxFuture<'a, Result<Allocation, AllocError>>;

    /// The match on `instance_id` is over (its result was stored); the instance may be reused or
    /// stopped. Called at most once per successful allocation that reports a result.
    fn release<'a>(&'a self, _match_id: Uuid, _instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// What the in-process allocator asks of the instance host.
#[derive(Debug)]
pub enum HostRequest {
    /// Host this match and answer where.
    Allocate { spec: MatchSpec, reply: oneshot::Sender<Result<Allocation, AllocError>> },
    /// The match's result is stored; its instance may go.
    Release { match_id: Uuid, instance_id: String },
}

/// The embedded allocator: a bounded channel to the code that hosts instances in this process.
#[derive(Debug)]
pub struct InProcess {
    tx: mpsc::Sender<HostRequest>,
    timeout: Duration,
}

impl InProcess {
    /// An allocator and the receiving end the host must serve. `queue` bounds the requests
    /// waiting for the host; `timeout` bounds the wait for one answer.
    pub fn new(queue: usize, timeout: Duration) -> (InProcess, mpsc::Receiver<HostRequest>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (InProcess { tx, timeout }, rx)
    }
}

impl Allocator for InProcess {
    fn name(&self) -> &'static str {
        "in_process"
    }

    fn allocate<'a>(&'a self, spec: &'a MatchSpec) -> BoxFuture<'a, Result<Allocation, AllocError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            // A full or closed channel means the host cannot take more now.
            self.tx
                .try_send(HostRequest::Allocate { spec: spec.clone(), reply })
                .map_err(|_| AllocError::NoCapacity)?;
            match tokio::time::timeout(self.timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(AllocError::NoCapacity),
                Err(_) => Err(AllocError::Failed(format!("instance host gave no answer within {:?}", self.timeout))),
            }
        })
    }

    fn release<'a>(&'a self, match_id: Uuid, instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.tx.try_send(HostRequest::Release { match_id, instance_id: instance_id.to_owned() });
        })
    }
}

/// Configured instances, each hosting one match at a time until that match's result frees it.
#[derive(Debug)]
pub struct StaticPool {
    /// Each instance and the match it hosts, if any.
    slots: Mutex<Vec<(Allocation, Option<Uuid>)>>,
}

impl StaticPool {
    pub fn new(instances: Vec<Allocation>) -> StaticPool {
        StaticPool { slots: Mutex::new(instances.into_iter().map(|a| (a, None)).collect()) }
    }

    /// Instances hosting no match now.
    pub fn free(&self) -> usize {
        self.lock().iter().filter(|(_, m)| m.is_none()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Allocation, Option<Uuid>)>> {
        // Every critical section is a single assignment, so a poisoned lock is still consistent.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Allocator for StaticPool {
    fn name(&self) -> &'static str {
        "static_pool"
    }

    fn allocate<'a>(&'a self, spec: &'a MatchSpec) -> BoxFuture<'a, Result<Allocation, AllocError>> {
        Box::pin(async move {
            let mut slots = self.lock();
            let slot = slots.iter_mut().find(|(_, m)| m.is_none()).ok_or(AllocError::NoCapacity)?;
            slot.1 = Some(spec.match_id);
            Ok(slot.0.clone())
        })
    }

    fn release<'a>(&'a self, match_id: Uuid, instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for slot in self.lock().iter_mut() {
                if slot.0.instance_id == instance_id && slot.1 == Some(match_id) {
                    slot.1 = None;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MatchSpec {
        MatchSpec {
            match_id: Uuid::new_v4(),
            mode: "duel".into(),
            region: "local".into(),
            teams: [vec![Uuid::new_v4()], vec![Uuid::new_v4()]],
            created_at_ms: 0,
        }
    }

    fn instance(n: u16) -> Allocation {
        Allocation {
            instance_id: format!("static-{n}"),
            address: InstanceAddr { host: "127.0.0.1".into(), udp_port: 7500 + n, ws_url: None },
        }
    }

    #[tokio::test]
    async fn static_pool_hosts_one_match_per_instance_until_released() {
        let pool = StaticPool::new(vec![instance(0), instance(1)]);
        let (s1, s2, s3) = (spec(), spec(), spec());
        let a1 = pool.allocate(&s1).await.expect("first instance");
        let a2 = pool.allocate(&s2).await.expect("second instance");
        assert_ne!(a1.instance_id, a2.instance_id);
        assert_eq!(pool.allocate(&s3).await, Err(AllocError::NoCapacity));
        // A release naming the wrong match frees nothing.
        pool.release(s3.match_id, &a1.instance_id).await;
        assert_eq!(pool.free(), 0);
        pool.release(s1.match_id, &a1.instance_id).await;
        assert_eq!(pool.allocate(&s3).await.map(|a| a.instance_id), Ok(a1.instance_id));
    }

    #[tokio::test]
    async fn in_process_forwards_to_the_host_and_a_gone_host_is_no_capacity() {
        let (alloc, mut host) = InProcess::new(4, Duration::from_secs(2));
        let s = spec();
        let served = tokio::spawn(async move {
            if let Some(HostRequest::Allocate { spec, reply }) = host.recv().await {
                let _ = reply.send(Ok(Allocation {
                    instance_id: format!("inproc-{}", spec.match_id),
                    address: InstanceAddr { host: "127.0.0.1".into(), udp_port: 7600, ws_url: None },
                }));
            }
            host
        });
        let a = alloc.allocate(&s).await.expect("allocated by the host");
        assert_eq!(a.instance_id, format!("inproc-{}", s.match_id));
        drop(served.await.expect("host task"));
        assert_eq!(alloc.allocate(&spec()).await, Err(AllocError::NoCapacity));
    }
}
