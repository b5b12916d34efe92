//! Invariants of the matching core under random workloads: no player in two matches, no
//! cancelled ticket matched, every match within both windows at match time, modes and regions
//! never mixed, teams full with parties whole, expiry only after the lifetime, and (1v1) no two
//! waiting tickets left that accept each other after a tick.
//!
//! Two drivers share one model: proptest (which shrinks a failure and records it in
//! `core_props.proptest-regressions`), and a longer seeded run that prints its seed and replays
//! it from `MATCHMAKER_SEED=<seed>`.

use std::collections::{BTreeMap, HashSet};

use matchmaker::core::{Matcher, MatcherConfig, Member, ModeSpec, Outcome, RegionSet, Registry, Ticket, TicketId};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

const TTL_MS: i64 = 60_000;

/// One step of a workload.
#[derive(Clone, Debug)]
enum Op {
    /// Enqueue: mode index, region mask (1..=3 over two regions), member ratings (truncated to
    /// the mode's team size).
    Add { mode: usize, regions: u64, ratings: Vec<f64> },
    /// Cancel the `pick`-th waiting ticket between ticks.
    Cancel { pick: usize },
    /// Cancel the `pick`-th waiting ticket so that the next ticks' gate refuses it (a cancel that
    /// lands while a tick runs; the owner only learns of it through the gate).
    CancelMidTick { pick: usize },
    /// Advance the clock by `ms` and tick.
    Tick { ms: i64 },
}

/// The matcher plus a model of what must hold.
struct World {
    m: Matcher,
    cfg: MatcherConfig,
    team_sizes: Vec<u8>,
    now: i64,
    next_id: u64,
    waiting: BTreeMap<TicketId, Ticket>,
    /// Tickets cancelled either way: they must never appear in a match.
    cancelled: HashSet<TicketId>,
    /// Tickets the gate refuses from now on.
    refused: HashSet<TicketId>,
    matched_users: HashSet<Uuid>,
    done: HashSet<TicketId>,
    matches: usize,
    expired: usize,
}

impl World {
    fn new() -> World {
        let registry = Registry::new(
            vec![
                ModeSpec { name: "duel".into(), team_size: 1 },
                ModeSpec { name: "duo".into(), team_size: 2 },
                ModeSpec { name: "trio".into(), team_size: 3 },
            ],
            vec!["eu".into(), "us".into()],
        )
        .expect("valid registry");
        let team_sizes = registry.modes().map(|(_, m)| m.team_size).collect();
        let cfg = MatcherConfig { registry, ticket_ttl_ms: TTL_MS, ..MatcherConfig::default() };
        World {
            m: Matcher::new(cfg.clone()).expect("valid config"),
            cfg,
            team_sizes,
            now: 1_000_000,
            next_id: 0,
            waiting: BTreeMap::new(),
            cancelled: HashSet::new(),
            refused: HashSet::new(),
            matched_users: HashSet::new(),
            done: HashSet::new(),
            matches: 0,
            expired: 0,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Add { mode, regions, ratings } => {
                let (mode_id, _) = self.cfg.registry.modes().nth(mode % 3).expect("three modes");
                let size = ratings.len().clamp(1, usize::from(self.team_sizes[mode % 3]));
                self.next_id += 1;
                let id = self.next_id;
                let set: RegionSet =
                    self.cfg.registry.regions().filter(|(r, _)| regions & (1 << r.index()) != 0).map(|(r, _)| r).collect();
                let ticket = Ticket {
                    id: TicketId(id),
                    members: (0..size)
                        .map(|j| Member {
                            user_id: Uuid::from_u128(u128::from(id) * 10 + j as u128),
                            rating: ratings.get(j).copied().unwrap_or(1500.0),
                            deviation: 100.0,
                        })
                        .collect(),
                    mode: mode_id,
                    regions: if set.is_empty() { RegionSet::one(self.cfg.registry.regions().next().expect("a region").0) } else { set },
                    // Some tickets come back with an older enqueue time (re-queued after a failed
                    // allocation).
                    enqueued_at_ms: if id.is_multiple_of(7) { self.now - 15_000 } else { self.now },
                };
                self.m.enqueue(ticket.clone()).expect("valid ticket");
                self.waiting.insert(ticket.id, ticket);
            }
            Op::Cancel { pick } => {
                let Some(id) = self.pick(*pick) else { return };
                let t = self.m.cancel(id);
                assert_eq!(t.as_ref().map(|t| t.id), Some(id), "a waiting ticket is cancellable");
                self.waiting.remove(&id);
                self.cancelled.insert(id);
                self.done.insert(id);
            }
            Op::CancelMidTick { pick } => {
                let Some(id) = self.pick(*pick) else { return };
                self.cancelled.insert(id);
                self.refused.insert(id);
            }
            Op::Tick { ms } => self.tick(*ms),
        }
    }

    fn pick(&self, pick: usize) -> Option<TicketId> {
        if self.waiting.is_empty() {
            return None;
        }
        self.waiting.keys().nth(pick % self.waiting.len()).copied()
    }

    fn tick(&mut self, ms: i64) {
        self.now += ms;
        let now = self.now;
        let mut out = Vec::new();
        let refused = self.refused.clone();
        self.m.tick(now, &mut |id: TicketId| !refused.contains(&id), &mut out);
        for o in out {
            match o {
                Outcome::Matched(m) => {
                    self.matches += 1;
                    let spec_size = usize::from(self.team_sizes[m.mode.index()]);
                    for team in &m.teams {
                        let players: usize = team.iter().map(Ticket::players).sum();
                        assert_eq!(players, spec_size, "a team is full: {m:?}");
                    }
                    let tickets: Vec<&Ticket> = m.tickets().collect();
                    for (i, a) in tickets.iter().enumerate() {
                        assert!(!self.cancelled.contains(&a.id), "cancelled ticket {} matched", a.id);
                        assert!(self.done.insert(a.id), "ticket {} in two outcomes", a.id);
                        assert_eq!(a.mode, m.mode, "modes mixed in {m:?}");
                        assert!(a.regions.contains(m.region), "ticket {} does not accept the match region", a.id);
                        assert_eq!(self.waiting.remove(&a.id).as_ref(), Some(*a), "matched ticket was waiting unchanged");
                        for u in &a.members {
                            assert!(self.matched_users.insert(u.user_id), "user {} in two matches", u.user_id);
                        }
                        for b in &tickets[i + 1..] {
                            let wa = self.cfg.curve.window(now - a.enqueued_at_ms);
                            let wb = self.cfg.curve.window(now - b.enqueued_at_ms);
                            let gap = (a.rating() - b.rating()).abs();
                            assert!(gap <= wa.min(wb), "{} and {}: gap {gap} outside windows {wa} / {wb}", a.id, b.id);
                        }
                    }
                    assert!((0.0..=1.0).contains(&m.quality), "quality {}", m.quality);
                    assert_eq!(m.created_at_ms, now);
                }
                Outcome::Expired(t) => {
                    self.expired += 1;
                    assert!(now - t.enqueued_at_ms >= TTL_MS, "ticket {} expired early", t.id);
                    assert!(self.done.insert(t.id), "ticket {} in two outcomes", t.id);
                    self.waiting.remove(&t.id);
                }
                Outcome::Cancelled(t) => {
                    assert!(self.refused.contains(&t.id), "ticket {} cancelled but the gate never refused it", t.id);
                    assert!(self.done.insert(t.id), "ticket {} in two outcomes", t.id);
                    self.waiting.remove(&t.id);
                }
            }
        }
        // Nothing older than the lifetime is left waiting.
        for t in self.waiting.values() {
            assert!(now - t.enqueued_at_ms < TTL_MS, "ticket {} outlived its lifetime", t.id);
        }
        assert_eq!(self.m.len(), self.waiting.len(), "matcher and model agree on what waits");
        // 1v1: the tick left no two waiting tickets that accept each other in a shared region.
        let duel: Vec<&Ticket> = self
            .waiting
            .values()
            .filter(|t| self.team_sizes[t.mode.index()] == 1 && !self.refused.contains(&t.id))
            .collect();
        for (i, a) in duel.iter().enumerate() {
            for b in &duel[i + 1..] {
                if a.mode != b.mode || a.regions.bits() & b.regions.bits() == 0 {
                    continue;
                }
                let w = self.cfg.curve.window(now - a.enqueued_at_ms).min(self.cfg.curve.window(now - b.enqueued_at_ms));
                let gap = (a.rating() - b.rating()).abs();
                assert!(gap > w, "tickets {} and {} accept each other (gap {gap}, window {w}) but wait on", a.id, b.id);
            }
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    // Ratings on a 10-point grid make exact window boundaries (gap == window) common.
    let rating = (0u32..120).prop_map(|x| 1000.0 + 10.0 * f64::from(x));
    prop_oneof![
        6 => (0usize..3, 1u64..4, proptest::collection::vec(rating, 1..4))
            .prop_map(|(mode, regions, ratings)| Op::Add { mode, regions, ratings }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => any::<usize>().prop_map(|pick| Op::CancelMidTick { pick }),
        3 => prop_oneof![Just(0i64), 1i64..500, 500i64..15_000, Just(60_000)].prop_map(|ms| Op::Tick { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn matches_respect_every_invariant(ops in proptest::collection::vec(op(), 1..200)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        w.tick(TTL_MS);
    }
}

/// A longer random workload; prints its seed and replays it from `MATCHMAKER_SEED`.
#[test]
fn seeded_random_workload_respects_every_invariant() {
    let seed: u64 = std::env::var("MATCHMAKER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    println!("seeded_random_workload: MATCHMAKER_SEED={seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = World::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..20_000 {
            let op = match rng.gen_range(0..11) {
                0..=5 => Op::Add {
                    mode: rng.gen_range(0..3),
                    regions: rng.gen_range(1..4),
                    ratings: (0..rng.gen_range(1..4)).map(|_| 1000.0 + 10.0 * f64::from(rng.gen_range(0..120u32))).collect(),
                },
                6 => Op::Cancel { pick: rng.r#gen() },
                7 => Op::CancelMidTick { pick: rng.r#gen() },
                _ => Op::Tick { ms: rng.gen_range(0..3_000) },
            };
            w.apply(&op);
        }
        w.tick(TTL_MS);
    }));
    if let Err(e) = result {
        eprintln!("seeded_random_workload failed: replay with MATCHMAKER_SEED={seed}");
        std::panic::resume_unwind(e);
    }
    println!("seeded_random_workload: {} matches, {} expired, {} cancelled", w.matches, w.expired, w.cancelled.len());
    assert!(w.matches > 100, "the workload made matches ({} with seed {seed})", w.matches);
}
