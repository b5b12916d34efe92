//! The concurrent ticket index: every live ticket by its wire id, with an atomic state that the
//! link handlers (status, cancel) and the shard's tick (the [`Gate`]) race on with
//! compare-and-swap, so a cancelled ticket is never matched and a matched one never cancelled.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use protocol::tavern::PlayerInfoT;
use uuid::Uuid;

use crate::core::{Gate, ModeId, TicketId};

/// The ticket waits in its shard's matcher.
pub const WAITING: u8 = 0;
/// A tick claimed it for a match; it is being allocated or was delivered.
pub const MATCHED: u8 = 1;
/// Cancelled while waiting; it will never be matched.
pub const CANCELLED: u8 = 2;
/// Cancelled while matched: if the allocation fails it is dropped instead of re-queued.
pub const MATCHED_CANCEL: u8 = 3;

/// One live ticket.
#[derive(Debug)]
pub struct TicketEntry {
    pub id: Uuid,
    pub core: TicketId,
    pub mode: ModeId,
    /// The GCS node that holds the players' links, where pushes go.
    pub node: String,
    pub players: Vec<PlayerInfoT>,
    pub enqueued_at_ms: i64,
    pub state: AtomicU8,
    /// Tickets of the mode waiting when this one arrived, and the mode's departures counter
    /// then: the position estimate (see [`super::shard::ShardState::position`]).
    pub ahead_at_enqueue: u64,
    pub departed_at_enqueue: u64,
}

impl TicketEntry {
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Flips the state from `from` to `to`; false if it was not `from`.
    pub fn cas(&self, from: u8, to: u8) -> bool {
        self.state.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn user_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.players.iter().map(|p| Uuid::from_bytes(p.user_id.to_bytes()))
    }
}

/// The gate a shard's tick claims tickets through: waiting → matched, exactly once.
pub struct IndexGate<'a> {
    pub local: &'a HashMap<TicketId, Arc<TicketEntry>>,
}

impl Gate for IndexGate<'_> {
    fn claim(&mut self, id: TicketId) -> bool {
        self.local.get(&id).is_some_and(|e| e.cas(WAITING, MATCHED))
    }

    fn release(&mut self, id: TicketId) {
        if let Some(e) = self.local.get(&id) {
            // A cancel that came between claim and release wins now.
            if !e.cas(MATCHED, WAITING) {
                e.cas(MATCHED_CANCEL, CANCELLED);
            }
        }
    }
}

/// A monotonic counter shared between the handlers and a shard.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn sub(&self, n: u64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Registry;

    fn entry(core: u64) -> Arc<TicketEntry> {
        let mode = Registry::default().mode("duel").expect("default mode");
        Arc::new(TicketEntry {
            id: Uuid::new_v4(),
            core: TicketId(core),
            mode,
            node: "gcs".into(),
            players: Vec::new(),
            enqueued_at_ms: 0,
            state: AtomicU8::new(WAITING),
            ahead_at_enqueue: 0,
            departed_at_enqueue: 0,
        })
    }

    #[test]
    fn a_claim_and_a_cancel_race_and_exactly_one_wins() {
        for round in 0..200u64 {
            let e = entry(round);
            let local: HashMap<TicketId, Arc<TicketEntry>> = [(e.core, Arc::clone(&e))].into();
            let canceller = {
                let e = Arc::clone(&e);
                std::thread::spawn(move || e.cas(WAITING, CANCELLED))
            };
            let claimed = IndexGate { local: &local }.claim(e.core);
            let cancelled = canceller.join().expect("canceller thread");
            assert!(claimed ^ cancelled, "round {round}: claimed {claimed}, cancelled {cancelled}");
            assert_eq!(e.state(), if claimed { MATCHED } else { CANCELLED });
        }
    }

    #[test]
    fn a_release_gives_the_ticket_back_unless_a_cancel_came_meanwhile() {
        let (a, b) = (entry(1), entry(2));
        let local: HashMap<TicketId, Arc<TicketEntry>> = [(a.core, Arc::clone(&a)), (b.core, Arc::clone(&b))].into();
        let mut gate = IndexGate { local: &local };
        assert!(gate.claim(a.core) && gate.claim(b.core));
        assert!(b.cas(MATCHED, MATCHED_CANCEL), "a cancel while matched is remembered");
        gate.release(a.core);
        gate.release(b.core);
        assert_eq!((a.state(), b.state()), (WAITING, CANCELLED));
        assert!(!gate.claim(b.core), "a cancelled ticket is never claimed again");
        assert!(!gate.claim(TicketId(99)), "an unknown ticket is refused");
    }
}
