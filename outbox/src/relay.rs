//! [`Relay`]: the task that moves events from the outbox table to the sink, in id order, in
//! batches, marking each batch only after the sink accepted it; it retries failures with capped
//! exponential backoff and deletes published rows after the retention.
//!
//! It wakes when its own process records an event (a `Notify` shared by the [`Outbox`] clones)
//! and every `poll_interval` besides, so rows written by other processes on the same database
//! are published too. On shutdown it keeps trying for `final_flush` to publish what is left,
//! so a process that records an event right before it exits (a spawned instance's
//! `game_ended`) gets it out; whatever is still unpublished stays in the database for the next
//! relay.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::OutboxMetrics;
use crate::sink::Sink;
use crate::store::Outbox;
use crate::{OutboxError, now_ms};

/// How a relay paces itself. The defaults suit a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// Rows published per sink call (at least 1).
    pub batch: usize,
    /// How often the table is read even when this process recorded nothing.
    pub poll_interval: Duration,
    /// The first wait after a failure; it doubles per failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Published rows older than this are deleted.
    pub retention: Duration,
    /// How often the retention delete runs.
    pub prune_interval: Duration,
    /// Rows deleted per statement, so a long backlog is deleted in short transactions.
    pub prune_batch: usize,
    /// After shutdown, how long the relay keeps trying to publish what is left.
    pub final_flush: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 256,
            poll_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            retention: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(60),
            prune_batch: 1000,
            final_flush: Duration::from_secs(2),
        }
    }
}

/// Batches one pass publishes before the relay looks at its shutdown token again.
const BATCHES_PER_PASS: usize = 64;
/// Delete statements one prune round runs at most; the rest waits for the next round.
const PRUNE_ROUNDS: usize = 16;

/// The relay task of one process (see the module docs).
pub struct Relay {
    outbox: Outbox,
    sink: Sink,
    config: RelayConfig,
    metrics: OutboxMetrics,
}

impl Relay {
    /// Spawns a relay with the default [`RelayConfig`] and unregistered metrics; it runs until
    /// `shutdown` fires and its final flush is over.
    pub fn spawn(outbox: Outbox, sink: Sink, shutdown: CancellationToken) -> JoinHandle<()> {
        let metrics = OutboxMetrics::unregistered(outbox.source());
        Relay::spawn_with(outbox, sink, RelayConfig::default(), metrics, shutdown)
    }

    /// Spawns a relay with its own pacing and metrics.
    pub fn spawn_with(
        outbox: Outbox,
        sink: Sink,
        config: RelayConfig,
        metrics: OutboxMetrics,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let span = tracing::info_span!("outbox_relay", source = %outbox.source(), sink = sink.name());
        let relay = Relay { outbox, sink, config, metrics };
        tokio::spawn(relay.run(shutdown).instrument(span))
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = self.config.backoff_initial;
        let mut next_prune = Instant::now();
        while !shutdown.is_cancelled() {
            match self.pass().await {
                Ok(more) => {
                    backoff = self.config.backoff_initial;
                    if Instant::now() >= next_prune {
                        self.prune().await;
                        next_prune = Instant::now() + self.config.prune_interval;
                    }
                    self.count_pending().await;
                    if more {
                        continue;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = self.outbox.recorded() => {}
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
                Err(e) => {
                    self.metrics.publish_failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = millis(backoff), "events not published; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max.max(self.config.backoff_initial));
                }
            }
        }
        self.final_flush().await;
    }

    /// Publishes up to [`BATCHES_PER_PASS`] batches; `Ok(true)` when more rows may be waiting.
    async fn pass(&mut self) -> Result<bool, OutboxError> {
        let batch_size = self.config.batch.max(1);
        for _ in 0..BATCHES_PER_PASS {
            let batch = self.outbox.unpublished(batch_size).await?;
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                return Ok(false);
            };
            let (first, last) = (first.id, last.id);
            self.sink.publish(&batch).await?;
            // A failure here leaves the batch unmarked: it is published again (consumers dedupe
            // by id) rather than lost.
            self.outbox.mark_published(first, last, now_ms()).await?;
            self.metrics.published.inc_by(batch.len() as u64);
            tracing::debug!(first, last, count = batch.len(), "events published");
            if batch.len() < batch_size {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes published rows past the retention, a bounded number per round.
    async fn prune(&self) {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(retention);
        let batch = self.config.prune_batch.max(1);
        for _ in 0..PRUNE_ROUNDS {
            match self.outbox.prune_published(before, batch).await {
                Ok(n) if (n as usize) < batch => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete old published events");
                    return;
                }
            }
        }
    }

    async fn count_pending(&self) {
        match self.outbox.pending().await {
            Ok(n) => self.metrics.pending.set(n),
            Err(e) => tracing::debug!(error = %e, "cannot count pending events"),
        }
    }

    /// After shutdown: keeps publishing, retrying failures, until nothing is left or
    /// `final_flush` has passed.
    async fn final_flush(&mut self) {
        let deadline = Instant::now() + self.config.final_flush;
        let mut backoff = self.config.backoff_initial;
        loop {
            match tokio::time::timeout_at(deadline, self.pass()).await {
                Ok(Ok(false)) => break,
                Ok(Ok(true)) => continue,
                Ok(Err(e)) => {
                    self.metrics.publish_failures.inc();
                    if Instant::now() + backoff >= deadline {
                        tracing::warn!(error = %e, "shutting down with events unpublished; they stay in the outbox");
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.backoff_max.max(self.config.backoff_initial));
                }
                Err(_) => {
                    tracing::warn!("final flush timed out; unpublished events stay in the outbox");
                    break;
                }
            }
        }
        self.count_pending().await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
