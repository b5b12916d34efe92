//! Result reporting: what a finished match sends to the matchmaker, and the retry loop that keeps
//! sending it until it is acknowledged (DESIGN.md §5: no silent drop of a match result).
//!
//! [`ResultReporter`] is one attempt; [`report_until_acked`] retries with exponential backoff.
//! Reports are idempotent on the match id, so a repeat after a lost acknowledgement is harmless.
//! [`MemoryReporter`] keeps results in memory (tests, the embedded launcher until the service
//! link to the matchmaker is plugged in).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use protocol::tavern::{GameOverReason, MatchResultT, PlayerOutcome, PlayerResultT, UuidT};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::rules::{EndReason, GameResult, Seat};
use crate::wire;

use super::metrics::InstanceMetrics;

/// Why one report attempt failed; every variant is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The matchmaker could not be reached or did not answer in time.
    #[error("matchmaker unavailable: {0}")]
    Unavailable(String),
    /// The matchmaker answered with an error.
    #[error("matchmaker refused the result: code {code}: {message}")]
    Refused { code: u16, message: String },
}

/// Sends one match result once; `Ok` means the matchmaker acknowledged it (`MatchResultAck`).
pub trait ResultReporter: Send + Sync + 'static {
    fn report<'a>(&'a self, result: &'a MatchResultT) -> BoxFuture<'a, Result<(), ReportError>>;
}

/// How [`report_until_acked`] waits between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// After shutdown, how long retries may go on before the result is given up (and logged).
    pub shutdown_grace: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Reports `result` until acknowledged, doubling the wait after each failure up to
/// `backoff.max`. Returns true when acknowledged, false when shutdown plus its grace cut it short.
pub async fn report_until_acked(
    reporter: &dyn ResultReporter,
    result: &MatchResultT,
    backoff: Backoff,
    metrics: &InstanceMetrics,
    shutdown: &CancellationToken,
) -> bool {
    let mut wait = backoff.initial;
    let mut attempt: u32 = 0;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        attempt += 1;
        match reporter.report(result).await {
            Ok(()) => {
                metrics.report_attempts.with_label_values(&["ok"]).inc();
                metrics.results_reported.with_label_values(&["acked"]).inc();
                tracing::info!(attempt, "match result acknowledged");
                return true;
            }
            Err(e) => {
                metrics.report_attempts.with_label_values(&["error"]).inc();
                tracing::warn!(attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "match result not acknowledged");
            }
        }
        if shutdown.is_cancelled() && give_up_at.is_none() {
            give_up_at = Some(tokio::time::Instant::now() + backoff.shutdown_grace);
        }
        if let Some(at) = give_up_at
            && tokio::time::Instant::now() + wait > at
        {
            metrics.results_reported.with_label_values(&["abandoned"]).inc();
            tracing::error!(attempt, "shutting down: match result abandoned after retries");
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled(), if give_up_at.is_none() => {}
        }
        wait = (wait * 2).min(backoff.max);
    }
}

/// What the host knows about a finished match, turned into the wire's `MatchResult`.
pub(crate) struct ResultFacts<'a> {
    pub players: &'a wire::MatchPlayers,
    pub mode: &'a str,
    pub instance_id: &'a str,
    pub result: GameResult,
    pub turns: u16,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
}

pub(crate) fn build_result(f: &ResultFacts<'_>) -> MatchResultT {
    let over = wire::game_over(&f.result, f.players);
    let players = Seat::BOTH
        .iter()
        .map(|&seat| {
            let outcome = match f.result.winner {
                Some(w) if w == seat => PlayerOutcome::Win,
                Some(_) => PlayerOutcome::Loss,
                None => PlayerOutcome::Draw,
            };
            let left_early = f.result.winner == Some(seat.other())
                && matches!(f.result.reason, EndReason::Conceded | EndReason::Forfeit);
            protocol::build!(PlayerResultT {
                user_id: f.players.user(seat),
                outcome,
                team: seat.index() as u8,
                left_early,
            })
        })
        .collect();
    let duration = f.ended_at_ms.saturating_sub(f.started_at_ms).max(0);
    protocol::build!(MatchResultT {
        match_id: f.players.match_id.clone(),
        mode: Some(f.mode.to_owned()),
        winner: over.winner,
        draw: over.draw,
        reason: over.reason,
        players: Some(players),
        duration_ms: u32::try_from(duration).unwrap_or(u32::MAX),
        turns: f.turns,
        ended_at_ms: f.ended_at_ms,
        instance_id: Some(f.instance_id.to_owned()),
    })
}

/// A reporter that keeps results in memory; it can refuse the first attempts to exercise
/// retries. Reports are idempotent on the match id, as the matchmaker's are: a repeat is
/// acknowledged and stored once.
#[derive(Default)]
pub struct MemoryReporter {
    results: Mutex<Vec<MatchResultT>>,
    attempts: AtomicU32,
    fail_first: AtomicU32,
    changed: Notify,
}

impl MemoryReporter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A reporter whose first `n` attempts fail with `Unavailable`.
    pub fn failing_first(n: u32) -> Self {
        let r = Self::default();
        r.fail_first.store(n, Ordering::Relaxed);
        r
    }

    /// The results stored, in order, each match once.
    pub fn results(&self) -> Vec<MatchResultT> {
        self.results.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Attempts made, failed ones included.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Waits until a result for `match_id` is stored, or `timeout` passes.
    pub async fn wait_for(&self, match_id: &UuidT, timeout: Duration) -> Option<MatchResultT> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(r) = self.results().into_iter().find(|r| r.match_id == *match_id) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl ResultReporter for MemoryReporter {
    fn report<'a>(&'a self, result: &'a MatchResultT) -> BoxFuture<'a, Result<(), ReportError>> {
        Box::pin(async move {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let failing = self
                .fail_first
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(ReportError::Unavailable("memory reporter told to fail".into()));
            }
            if let Ok(mut results) = self.results.lock()
                && !results.iter().any(|r| r.match_id == result.match_id)
            {
                results.push(result.clone());
            }
            self.changed.notify_waiters();
            Ok(())
        })
    }
}

/// The reason label of a result, for metrics.
pub(crate) fn reason_label(reason: GameOverReason) -> &'static str {
    match reason {
        GameOverReason::HeroDefeated => "hero_defeated",
        GameOverReason::Conceded => "conceded",
        GameOverReason::Forfeit => "forfeit",
        GameOverReason::Aborted => "aborted",
        _ => "other",
    }
}
