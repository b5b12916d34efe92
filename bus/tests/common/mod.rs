//! Helpers shared by the bus and directory tests: the test Redis, unique prefixes, bounded waits.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// The URL of the test Redis; `TAVERN_TEST_REDIS` overrides it (as `migrations::testing` does).
pub fn redis_url() -> String {
    std::env::var("TAVERN_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key and channel prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("test:bus:{}:", uuid::Uuid::new_v4())
}

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most [`WAIT`], failing the test with `what` if it takes longer.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(WAIT, fut).await.map_err(|_| anyhow::anyhow!("timed out after {WAIT:?} waiting for {what}"))
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain connection to the test Redis, for poking at it from outside the code under test.
pub async fn raw_connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url())?;
    Ok(within("a raw redis connection", client.get_multiplexed_async_connection()).await??)
}

/// Runs each named test body once per backend: the test file defines `Cluster` with
/// `in_process()` and `redis()` constructors, and the bodies take one.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Cluster::in_process()).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Cluster::redis()).await
                }
            )*
        }
    };
}
