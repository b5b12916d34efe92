//! One shard: the owner task of one mode's [`Matcher`]. It drains the lock-free intake, ticks,
//! and hands matches to the dispatcher through a bounded channel; it never awaits anything but
//! its timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::tavern::{ServiceBodyT, ServiceMessageT, TicketExpiredT, UuidT};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::dispatch::MatchJob;
use super::index::{Counter, IndexGate, TicketEntry, CANCELLED, MATCHED, MATCHED_CANCEL, WAITING};
use super::{Shared, now_ms};
use crate::core::{Match, Matcher, MatcherConfig, ModeId, Outcome, Ticket, TicketId};
use crate::intake::Intake;

/// What a shard's owner is asked to do.
#[derive(Debug)]
pub enum ShardRequest {
    /// A new ticket, or one put back after a failed allocation (with its first enqueue time).
    Enqueue(Ticket, Arc<TicketEntry>),
    Cancel(TicketId),
}

/// The parts of a shard the handlers and the dispatcher see.
#[derive(Debug)]
pub struct ShardState {
    pub mode: ModeId,
    pub name: String,
    pub intake: Intake<ShardRequest>,
    /// Tickets in the matcher after the last tick.
    pub waiting: Counter,
    /// Tickets that left the matcher (matched, expired, cancelled) since start.
    pub departed: Counter,
    /// A moving average of the waits of recently matched tickets (ms).
    pub wait_ewma_ms: Counter,
}

/// Requests one tick drains at most, so a flood cannot stretch one tick without bound.
const MAX_DRAIN: usize = 200_000;

impl ShardState {
    pub fn new(mode: ModeId, name: String, intake_capacity: usize) -> ShardState {
        ShardState {
            mode,
            name,
            intake: Intake::new(intake_capacity),
            waiting: Counter::default(),
            departed: Counter::default(),
            wait_ewma_ms: Counter::default(),
        }
    }

    /// An estimate of a ticket's place in line: the tickets waiting when it arrived, less the
    /// departures since, assuming (as oldest-first seeding makes likely) that they left ahead of
    /// it. 1 is next.
    pub fn position(&self, e: &TicketEntry) -> u32 {
        let gone = self.departed.get().saturating_sub(e.departed_at_enqueue);
        u32::try_from(1 + e.ahead_at_enqueue.saturating_sub(gone)).unwrap_or(u32::MAX)
    }

    /// How much longer a ticket that has waited `waited_ms` may wait: the recent average wait
    /// of this mode less what it waited already.
    pub fn estimated_wait_ms(&self, waited_ms: i64) -> u32 {
        let avg = i64::try_from(self.wait_ewma_ms.get()).unwrap_or(i64::MAX);
        u32::try_from(avg.saturating_sub(waited_ms).max(0)).unwrap_or(u32::MAX)
    }

    fn record_wait(&self, wait_ms: i64) {
        let w = u64::try_from(wait_ms.max(0)).unwrap_or(0);
        let old = self.wait_ewma_ms.get();
        // Weight 1/8 for the newest sample; the first sample sets the average.
        let new = if old == 0 { w } else { old - old / 8 + w / 8 };
        self.wait_ewma_ms.set(new);
    }
}

/// Runs the shard until shutdown.
pub async fn run(
    shared: Arc<Shared>,
    shard: Arc<ShardState>,
    config: MatcherConfig,
    jobs: mpsc::Sender<MatchJob>,
) {
    let mut matcher = match Matcher::new(config) {
        Ok(m) => m,
        Err(e) => {
            // The config was validated at start, so this is a bug; stop the service loudly.
            tracing::error!(error = %e, mode = %shard.name, "shard cannot build its matcher");
            shared.shutdown.cancel();
            return;
        }
    };
    let mut local: HashMap<TicketId, Arc<TicketEntry>> = HashMap::new();
    let mut requests = Vec::new();
    let mut outcomes = Vec::new();
    let mut timer = tokio::time::interval(Duration::from_millis(shared.config.tick_ms));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mode_label = [shard.name.as_str()];
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = timer.tick() => {}
        }
        let started = Instant::now();
        shard.intake.drain_into(&mut requests, MAX_DRAIN);
        for request in requests.drain(..) {
            match request {
                ShardRequest::Enqueue(ticket, entry) => {
                    let id = ticket.id;
                    if entry.state() != WAITING {
                        // Cancelled before it reached the matcher (or while being re-queued).
                        shared.forget(&entry);
                        continue;
                    }
                    match matcher.enqueue(ticket) {
                        Ok(()) => {
                            local.insert(id, entry);
                        }
                        Err(e) => {
                            tracing::warn!(ticket = %entry.id, error = %e, "ticket refused by the matcher");
                            shared.forget(&entry);
                            push_expired(&shared, &entry);
                        }
                    }
                }
                ShardRequest::Cancel(id) => {
                    if matcher.cancel(id).is_some() {
                        shard.departed.add(1);
                        if let Some(entry) = local.remove(&id) {
                            shared.forget(&entry);
                        }
                    }
                }
            }
        }
        let now = now_ms();
        matcher.tick(now, &mut IndexGate { local: &local }, &mut outcomes);
        for outcome in outcomes.drain(..) {
            match outcome {
                Outcome::Matched(m) => on_match(&shared, &shard, &mut matcher, &mut local, &jobs, m, now),
                Outcome::Expired(t) => {
                    shard.departed.add(1);
                    shared.metrics.expired.with_label_values(&mode_label).inc();
                    if let Some(entry) = local.remove(&t.id) {
                        shared.forget(&entry);
                        if entry.cas(WAITING, CANCELLED) {
                            push_expired(&shared, &entry);
                        }
                    }
                }
                Outcome::Cancelled(t) => {
                    shard.departed.add(1);
                    if let Some(entry) = local.remove(&t.id) {
                        shared.forget(&entry);
                    }
                }
            }
        }
        shard.waiting.set(matcher.len() as u64);
        shared.metrics.queued.with_label_values(&mode_label).set(i64::try_from(matcher.len()).unwrap_or(i64::MAX));
        shared.metrics.intake.with_label_values(&mode_label).set(i64::try_from(shard.intake.len()).unwrap_or(i64::MAX));
        shared.metrics.tick_seconds.with_label_values(&mode_label).observe(started.elapsed().as_secs_f64());
    }
}

fn on_match(
    shared: &Shared,
    shard: &ShardState,
    matcher: &mut Matcher,
    local: &mut HashMap<TicketId, Arc<TicketEntry>>,
    jobs: &mpsc::Sender<MatchJob>,
    m: Match,
    now: i64,
) {
    let mode_label = [shard.name.as_str()];
    let region = shared.registry.region_name(m.region).unwrap_or("unknown").to_owned();
    let mut teams: [Vec<(Ticket, Arc<TicketEntry>)>; 2] = [Vec::new(), Vec::new()];
    for (team, tickets) in m.teams.into_iter().enumerate() {
        for ticket in tickets {
            // Every ticket of a match was claimed through the gate, so it is in `local`.
            if let Some(entry) = local.remove(&ticket.id) {
                shard.departed.add(1);
                shard.record_wait(now - ticket.enqueued_at_ms);
                shared
                    .metrics
                    .wait_seconds
                    .with_label_values(&mode_label)
                    .observe((now - ticket.enqueued_at_ms).max(0) as f64 / 1000.0);
                if let Some(slot) = teams.get_mut(team) {
                    slot.push((ticket, entry));
                }
            }
        }
    }
    shared.metrics.matches.with_label_values(&mode_label).inc();
    let job = MatchJob {
        match_id: Uuid::new_v4(),
        mode: shard.mode,
        mode_name: shard.name.clone(),
        region,
        created_at_ms: now,
        quality: m.quality,
        teams,
    };
    if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) = jobs.try_send(job) {
        // The allocator is behind: put the tickets back now rather than wait for it.
        shared.metrics.allocation_failures.with_label_values(&[shared.allocator.name(), "queue_full"]).inc();
        for (ticket, entry) in job.teams.into_iter().flatten() {
            if entry.cas(MATCHED, WAITING) {
                let id = ticket.id;
                if matcher.enqueue(ticket).is_ok() {
                    local.insert(id, entry);
                    continue;
                }
            } else {
                entry.cas(MATCHED_CANCEL, CANCELLED);
            }
            shared.forget(&entry);
        }
    }
}

/// Tells a ticket's GCS node that it expired (a push that needs no answer).
pub(crate) fn push_expired(shared: &Shared, entry: &TicketEntry) {
    let body = protocol::build!(TicketExpiredT {
        ticket_id: UuidT::from_bytes(entry.id.into_bytes()),
        user_ids: Some(entry.players.iter().map(|p| p.user_id.clone()).collect()),
    });
    let sent = shared
        .nodes
        .get(&entry.node)
        .map(|link| link.send(&ServiceMessageT::new(0, ServiceBodyT::TicketExpired(Box::new(body)))).is_ok());
    if sent != Some(true) {
        shared.metrics.push_failures.with_label_values(&["ticket_expired"]).inc();
        tracing::info!(ticket = %entry.id, node = %entry.node, "cannot tell the node a ticket expired");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;

    use super::*;
    use crate::core::Registry;

    #[test]
    fn position_counts_down_with_departures_and_the_estimate_with_waiting() {
        let mode = Registry::default().mode("duel").expect("default mode");
        let shard = ShardState::new(mode, "duel".into(), 8);
        shard.departed.set(10);
        let e = TicketEntry {
            id: Uuid::new_v4(),
            core: TicketId(1),
            mode,
            node: "gcs".into(),
            players: Vec::new(),
            enqueued_at_ms: 0,
            state: AtomicU8::new(WAITING),
            ahead_at_enqueue: 3,
            departed_at_enqueue: 10,
        };
        let cases = [(0, 4), (2, 2), (3, 1), (9, 1)];
        for (departed_since, want) in cases {
            shard.departed.set(10 + departed_since);
            assert_eq!(shard.position(&e), want, "after {departed_since} departures");
        }
        assert_eq!(shard.estimated_wait_ms(0), 0, "no history yet");
        shard.record_wait(8_000);
        shard.record_wait(16_000);
        assert_eq!(shard.wait_ewma_ms.get(), 9_000, "7/8 of 8 s plus 1/8 of 16 s");
        assert_eq!((shard.estimated_wait_ms(4_000), shard.estimated_wait_ms(20_000)), (5_000, 0));
    }
}
