//! The GCS's cross-node plumbing: a bus that carries opaque byte payloads on named topics, and a
//! directory that says which node holds each online user.
//!
//! Both come in two backends behind one type each, so the embedded launcher and a Redis cluster run
//! the same calling code:
//! - in-process (the embedded default): a routing table and a map in this process;
//! - Redis (production, several GCS nodes): PUBLISH/SUBSCRIBE on `{prefix}{topic}` for the bus, and
//!   keys with a TTL for the directory.
//!
//! Layout:
//! - [`bus`](crate::Bus): [`Bus`], [`Subscription`] and [`BusEvent`]; the in-process routing
//!   table that both backends deliver through.
//! - `redis_bus`: the Redis publisher and the one pub/sub connection per [`Bus`] that
//!   (re)subscribes after every reconnect.
//! - [`directory`](crate::Directory): [`Directory`], the user → node map, and its in-process
//!   backend ([`InProcessStore`]).
//! - `redis_directory`: the Redis backend of the directory, with its keep-alive task.
//!
//! This crate knows no protocol type: payloads are `bytes::Bytes` and the GCS encodes them.

mod bus;
mod directory;
mod redis_bus;
mod redis_directory;

use std::time::Duration;

pub use bus::{Bus, BusEvent, DEFAULT_CAPACITY, MAX_CAPACITY, Subscription};
pub use directory::{DEFAULT_TTL, Directory, InProcessStore, LOCAL_NODE, MIN_TTL};

/// How long connecting to Redis, or one command, may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the bus and the directory can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A constructor was given something it cannot work with.
    #[error("invalid bus configuration: {0}")]
    Config(String),
    /// Redis refused or failed a command, or could not be reached.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}: {1}")]
    Timeout(Duration, String),
    /// The directory was closed with [`Directory::close`]; this node holds no users any more.
    #[error("directory of node {0:?} is closed")]
    Closed(String),
}

/// Aborts a background task when its owner goes away, so dropping a [`Bus`] or [`Directory`]
/// stops the work it started.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one Redis round trip under [`REDIS_TIMEOUT`], naming what it was for in the error.
async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BusError::Redis(format!("{what}: {e}"))),
        Err(_) => Err(BusError::Timeout(REDIS_TIMEOUT, what.to_owned())),
    }
}

/// Opens the reconnecting multiplexed connection used for commands (PUBLISH, the directory's
/// keys). One plain connection is made first: the manager retries a failing first connect with
/// long backoff, while an unreachable Redis at start should be reported at once.
async fn command_connection(url: &str) -> Result<(redis::Client, redis::aio::ConnectionManager), BusError> {
    let client = redis::Client::open(url).map_err(|e| BusError::Config(format!("redis url {url:?}: {e}")))?;
    timed(&format!("connect to {url}"), client.get_multiplexed_async_connection()).await?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_TIMEOUT)
        .set_response_timeout(REDIS_TIMEOUT)
        .set_factor(2)
        .set_max_delay(5_000)
        .set_number_of_retries(3);
    let conn = timed(&format!("connect to {url}"), client.get_connection_manager_with_config(cfg)).await?;
    Ok((client, conn))
}
