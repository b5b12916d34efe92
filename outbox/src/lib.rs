//! The events outbox (DESIGN.md §7): a service records each event (`match_found`,
//! `game_started`, `game_ended`, ...) as a row of `events_outbox` in its own database, and a
//! relay publishes the rows in id order to a Redis stream, so no event is lost while Redis is
//! down and none overtakes another.
//!
//! # Layout
//!
//! - [`store`]: [`Outbox`] (record an event, read and mark rows), [`Event`], [`StoredEvent`].
//! - [`sink`]: where events go: [`Sink::RedisStream`] (XADD to `{prefix}events`) or
//!   [`Sink::InProcessLog`] (a bounded ring buffer with a broadcast, for the embedded launcher
//!   and tests, which have no Redis).
//! - [`relay`]: [`Relay::spawn`], the task that publishes unpublished rows in batches, retries
//!   with capped exponential backoff, and deletes published rows after a retention.
//! - [`config`]: [`EventsConfig`], the part of a service's config that picks the sink.
//! - [`metrics`]: [`OutboxMetrics`] (`tavern_outbox_*`).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo(db: migrations::Db) -> Result<(), outbox::OutboxError> {
//! let outbox = outbox::Outbox::new(db, "matchmaker");
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let sink = outbox::EventsConfig::default().sink()?;
//! let relay = outbox::Relay::spawn(outbox.clone(), sink, shutdown.clone());
//! outbox.record("match_found", serde_json::json!({ "match_id": "…" })).await?;
//! shutdown.cancel();
//! let _ = relay.await;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Nothing lost.** A row is marked published only after the sink accepted it; until then the
//!   relay retries, and the row survives restarts in the database.
//! - **In order.** Rows are published in id order, and ids are handed out in commit order
//!   (Postgres: inserts take a transaction-scoped advisory lock; SQLite has one writer), so the
//!   relay never publishes a row while an earlier one is still uncommitted.
//! - **At least once.** If the mark fails after the sink accepted a batch (or two relays on one
//!   database publish the same batch), the events are published again. Every stream entry
//!   carries the outbox `id`: consumers dedupe by it. The first copy of each id arrives in id
//!   order.
//! - **Bounded.** Batches (256 rows), the stream (`MAXLEN ~`), the in-process log, and the
//!   retention deletes all have limits.

pub mod config;
pub mod metrics;
pub mod relay;
pub mod sink;
pub mod store;

pub use config::EventsConfig;
pub use metrics::OutboxMetrics;
pub use relay::{Relay, RelayConfig};
pub use sink::{InProcessLog, RedisStream, Sink};
pub use store::{Event, Outbox, StoredEvent};

/// Why recording, reading or publishing events failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event payload cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invalid event kind {0:?}: expected 1 to 64 bytes of [a-z0-9_.]")]
    InvalidKind(String),
    #[error("invalid redis url {url:?}: {source}")]
    RedisUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    RedisTimeout(std::time::Duration),
}

/// Milliseconds since the unix epoch (the unit of every timestamp in Tavern).
pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
