//! The matcher: the queued tickets, their indexes, and the tick that turns them into matches.
//! The algorithm is described in the [module doc of `core`](super).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;

use super::curve::WindowCurve;
use super::form::{self, Formation, Pick};
use super::quality::quality;
use super::types::{
    ConfigError, EnqueueError, ModeId, RegionId, Registry, Ticket, TicketId, UserId,
};

/// How a matcher matches.
#[derive(Clone, Debug, PartialEq)]
pub struct MatcherConfig {
    pub registry: Registry,
    /// The rating window as a function of waiting time.
    pub curve: WindowCurve,
    /// How long a ticket may wait before it is expired (ms).
    pub ticket_ttl_ms: i64,
    /// How many nearest tickets one search looks at per bucket. It bounds the work per ticket;
    /// a ticket that may have missed a partner beyond it is looked at again after `recheck_ms`.
    pub scan_limit: usize,
    /// When nothing else schedules a ticket that may still match (a crowded bucket, a formation
    /// search that ran out of budget), look at it again after this long (ms).
    pub recheck_ms: i64,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            registry: Registry::default(),
            curve: WindowCurve::default(),
            ticket_ttl_ms: 5 * 60 * 1000,
            scan_limit: 64,
            recheck_ms: 1000,
        }
    }
}

/// Asked, at commit time, whether each ticket of a match that is about to be made may still be
/// matched. This is how a cancel that arrives while a tick runs is honoured.
///
/// The service's gate flips the ticket's state in its concurrent ticket index from waiting to
/// matched (a compare-and-swap that a cancel races with, so exactly one of them wins) and
/// [`release`](Gate::release) flips it back when another ticket of the same match lost to a
/// cancel. A closure `FnMut(TicketId) -> bool` is a gate whose `release` does nothing: it answers
/// "may this ticket still be matched?".
pub trait Gate {
    /// Claims `id` for a match; `false` if it was cancelled meanwhile.
    fn claim(&mut self, id: TicketId) -> bool;
    /// Gives a claim back: another ticket of the same match could not be claimed.
    fn release(&mut self, _id: TicketId) {}
}

/// The gate of a matcher nobody cancels behind its back: every claim succeeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

impl Gate for Open {
    fn claim(&mut self, _id: TicketId) -> bool {
        true
    }
}

impl<F: FnMut(TicketId) -> bool> Gate for F {
    fn claim(&mut self, id: TicketId) -> bool {
        self(id)
    }
}

/// Two teams of tickets that accept one another, in one mode and one region.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub mode: ModeId,
    pub region: RegionId,
    /// Each team holds whole tickets (a party is never split) and exactly `team_size` players.
    pub teams: [Vec<Ticket>; 2],
    /// 0 to 1; see [`quality`](super::quality) for the formula.
    pub quality: f64,
    /// The tick time (unix ms) at which the match was made.
    pub created_at_ms: i64,
}

impl Match {
    /// Every ticket of the match, team by team.
    pub fn tickets(&self) -> impl Iterator<Item = &Ticket> {
        self.teams.iter().flatten()
    }

    /// The largest minus the smallest ticket rating: the gap the windows had to cover.
    pub fn rating_gap(&self) -> f64 {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for t in self.tickets() {
            lo = lo.min(t.rating());
            hi = hi.max(t.rating());
        }
        if hi >= lo { hi - lo } else { 0.0 }
    }
}

/// What happened to a ticket during a tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Matched(Match),
    /// It waited longer than the ticket lifetime.
    Expired(Ticket),
    /// The gate refused it at commit time: it was cancelled while the tick ran.
    Cancelled(Ticket),
}

/// Counts of one tick, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickStats {
    /// Tickets the tick looked at (arrivals and scheduled wake-ups); the rest cost nothing.
    pub processed: usize,
    pub matches: usize,
    pub expired: usize,
    pub cancelled: usize,
}

/// The tickets of one shard and the matching over them. Single-owner and synchronous: it reads
/// no clock and does no IO; every time comes in as `now` (unix ms).
#[derive(Debug)]
pub struct Matcher {
    config: MatcherConfig,
    /// Team size per mode index, copied out of the registry for the hot path.
    team_sizes: Vec<u8>,
    region_count: usize,
    /// Ticket storage; indexes refer to slots, and a slot's `seq` tells a reused slot apart.
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: IdMap<TicketId, u32>,
    /// Every queued user, so one user is never in two tickets (and so never in two matches).
    by_user: IdMap<UserId, TicketId>,
    /// One rating-ordered index per (mode, region), at `mode × region_count + region`.
    buckets: Vec<BTreeMap<Key, Ix>>,
    /// (expires at, seq, slot); removed tickets leave stale entries that are skipped when popped.
    expiry: BinaryHeap<Reverse<(i64, u64, u32)>>,
    /// (wake at, seq, slot); an entry counts only while the ticket's `wake` still equals it.
    wakes: BinaryHeap<Reverse<(i64, u64, u32)>>,
    /// Tickets enqueued since the last tick, which it must look at.
    arrivals: Vec<(u32, u64)>,
    next_seq: u64,
    /// Scratch space kept between calls so a tick does not allocate.
    due: Vec<(i64, u64, u32)>,
    cands: Vec<Cand>,
    survey: Survey,
    hop: Survey,
}

/// No wake-up scheduled.
const NEVER: i64 = i64::MAX;
/// How often one due ticket may be looked at again in one tick after matches formed around it.
const MAX_ATTEMPTS: usize = 4;
/// How far a search hands its seat to an older ticket it found (see "oldest seeds").
const MAX_HOPS: usize = 2;
/// How often a match may be re-formed after the gate refused one of its tickets.
const CLAIM_RETRIES: usize = 8;
/// Candidates a team formation considers, nearest first.
const FORM_LIMIT: usize = 24;
/// Nodes one team formation search may visit.
const FORM_BUDGET: usize = 4096;
/// Candidates whose mutual acceptance times a team-mode wake-up considers.
const PAIR_LIMIT: usize = 24;

/// (order key of the rating, seq): unique, and in rating order.
type Key = (u64, u64);

/// What a bucket index holds per ticket: enough to scan without touching the ticket itself.
#[derive(Clone, Copy, Debug)]
struct Ix {
    slot: u32,
    rating: f64,
    enq: i64,
    players: u8,
}

#[derive(Debug)]
struct Entry {
    ticket: Ticket,
    rating: f64,
    rating_sum: f64,
    key: u64,
    seq: u64,
    players: u8,
    /// The wake-up this ticket is scheduled for, or `NEVER`.
    wake: i64,
}

/// A ticket found by a scan, with its distance from the scanning ticket.
#[derive(Clone, Copy, Debug)]
struct Cand {
    slot: u32,
    seq: u64,
    rating: f64,
    enq: i64,
    players: u8,
    gap: f64,
}

/// The neighbourhood of one ticket: per bucket (span), its nearest tickets within the widest
/// window, nearest first.
#[derive(Debug, Default)]
struct Survey {
    cands: Vec<Cand>,
    spans: Vec<Span>,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    region: RegionId,
    start: usize,
    end: usize,
    /// The gap of the nearest ticket the scan left out because of its limit (infinity if none).
    boundary: f64,
}

impl Survey {
    fn span(&self, region: RegionId) -> Option<&Span> {
        self.spans.iter().find(|s| s.region == region)
    }
}

/// A hash map keyed by ids the service mints (ticket ids, UUIDv4 user ids).
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A fast unkeyed hasher: FxHash's multiply-rotate per word, then murmur3's finaliser so that
/// ids whose varying bits sit high in a word (a UUID built from a counter) still spread over the
/// table. Ticket and user ids are minted by the servers, not chosen by clients, so hash flooding
/// is not a concern here, and SipHash would cost as much as the rest of an enqueue.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

enum Formed {
    Matched,
    /// The seed itself was refused by the gate and left the queue.
    SeedGone,
    /// No match now; `exhausted` when a search ran out of budget rather than options.
    NoMatch { exhausted: bool },
}

impl Matcher {
    pub fn new(config: MatcherConfig) -> Result<Matcher, ConfigError> {
        if config.ticket_ttl_ms <= 0 {
            return Err(ConfigError::TicketTtl(config.ticket_ttl_ms));
        }
        if config.scan_limit < 2 * usize::from(super::types::MAX_TEAM_SIZE) {
            let value = i64::try_from(config.scan_limit).unwrap_or(i64::MAX);
            return Err(ConfigError::TooSmall { name: "scan_limit", value, min: 12 });
        }
        if config.recheck_ms < 1 {
            return Err(ConfigError::TooSmall { name: "recheck_ms", value: config.recheck_ms, min: 1 });
        }
        let team_sizes: Vec<u8> = config.registry.modes().map(|(_, m)| m.team_size).collect();
        let region_count = config.registry.region_count();
        let buckets = (0..team_sizes.len() * region_count).map(|_| BTreeMap::new()).collect();
        Ok(Matcher {
            config,
            team_sizes,
            region_count,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: IdMap::default(),
            by_user: IdMap::default(),
            buckets,
            expiry: BinaryHeap::new(),
            wakes: BinaryHeap::new(),
            arrivals: Vec::new(),
            next_seq: 0,
            due: Vec::new(),
            cands: Vec::new(),
            survey: Survey::default(),
            hop: Survey::default(),
        })
    }

    pub fn config(&self) -> &MatcherConfig {
        &self.config
    }

    /// Adds a ticket. It is looked at on the next tick.
    pub fn enqueue(&mut self, ticket: Ticket) -> Result<(), EnqueueError> {
        let team_size = *self
            .team_sizes
            .get(ticket.mode.index())
            .ok_or(EnqueueError::UnknownMode(ticket.mode.index()))?;
        if ticket.members.is_empty() {
            return Err(EnqueueError::EmptyParty);
        }
        if ticket.members.len() > usize::from(team_size) {
            return Err(EnqueueError::PartyTooLarge { size: ticket.members.len(), team_size });
        }
        if ticket.regions.is_empty() {
            return Err(EnqueueError::NoRegion);
        }
        if self.region_count < 64 && ticket.regions.bits() >> self.region_count != 0 {
            return Err(EnqueueError::UnknownRegion(ticket.regions.bits()));
        }
        for (i, m) in ticket.members.iter().enumerate() {
            if !m.rating.is_finite() || !m.deviation.is_finite() || m.deviation < 0.0 {
                return Err(EnqueueError::BadRating {
                    user_id: m.user_id,
                    rating: m.rating,
                    deviation: m.deviation,
                });
            }
            if ticket.members[..i].iter().any(|o| o.user_id == m.user_id) {
                return Err(EnqueueError::DuplicateMember(m.user_id));
            }
            if self.by_user.contains_key(&m.user_id) {
                return Err(EnqueueError::UserAlreadyQueued(m.user_id));
            }
        }
        if self.by_id.contains_key(&ticket.id) {
            return Err(EnqueueError::DuplicateTicket(ticket.id));
        }

        let seq = self.next_seq;
        self.next_seq += 1;
        let rating = ticket.rating();
        let key = order_key(rating);
        // At most MAX_TEAM_SIZE members, checked above.
        let players = ticket.members.len() as u8;
        let enq = ticket.enqueued_at_ms;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.slots.len()).map_err(|_| EnqueueError::Full)?;
                self.slots.push(None);
                s
            }
        };
        let ix = Ix { slot, rating, enq, players };
        for region in ticket.regions.iter() {
            let b = self.bucket(ticket.mode, region);
            self.buckets[b].insert((key, seq), ix);
        }
        self.by_id.insert(ticket.id, slot);
        for m in &ticket.members {
            self.by_user.insert(m.user_id, ticket.id);
        }
        self.expiry.push(Reverse((enq.saturating_add(self.config.ticket_ttl_ms), seq, slot)));
        self.arrivals.push((slot, seq));
        let rating_sum = ticket.rating_sum();
        self.slots[slot as usize] = Some(Entry { ticket, rating, rating_sum, key, seq, players, wake: NEVER });
        Ok(())
    }

    /// Removes a waiting ticket; `None` if it is not queued (unknown, or already matched or
    /// expired). The owner applies every cancel it has received before it calls [`tick`].
    ///
    /// [`tick`]: Matcher::tick
    pub fn cancel(&mut self, id: TicketId) -> Option<Ticket> {
        let slot = *self.by_id.get(&id)?;
        self.remove(slot)
    }

    /// Expires old tickets, then matches: every ticket that arrived since the last tick or whose
    /// scheduled wake-up is due is looked at, oldest first. Outcomes are appended to `out`;
    /// `gate` is asked for every ticket of a match before it is made.
    pub fn tick(&mut self, now: i64, gate: &mut impl Gate, out: &mut Vec<Outcome>) -> TickStats {
        let mut stats = TickStats::default();
        while let Some(&Reverse((at, seq, slot))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            if self.alive(slot, seq)
                && let Some(t) = self.remove(slot)
            {
                stats.expired += 1;
                out.push(Outcome::Expired(t));
            }
        }

        let mut due = std::mem::take(&mut self.due);
        due.clear();
        for (slot, seq) in self.arrivals.drain(..) {
            if let Some(e) = live(&self.slots, slot, seq) {
                due.push((e.ticket.enqueued_at_ms, seq, slot));
            }
        }
        while let Some(&Reverse((at, seq, slot))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            if let Some(Some(e)) = self.slots.get_mut(slot as usize)
                && e.seq == seq
                && e.wake == at
            {
                e.wake = NEVER;
                due.push((e.ticket.enqueued_at_ms, seq, slot));
            }
        }
        // Oldest first: (enqueue time, seq) orders every ticket uniquely.
        due.sort_unstable();
        due.dedup();
        for &(_, seq, slot) in &due {
            if self.alive(slot, seq) {
                self.process(slot, seq, now, gate, out, &mut stats);
            }
        }
        self.due = due;
        stats
    }

    /// Waiting tickets.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, id: TicketId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// A waiting ticket.
    pub fn get(&self, id: TicketId) -> Option<&Ticket> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get(slot as usize)?.as_ref().map(|e| &e.ticket)
    }

    /// The ticket a user waits in.
    pub fn ticket_of(&self, user: UserId) -> Option<TicketId> {
        self.by_user.get(&user).copied()
    }

    /// Waiting tickets that accept this mode and region.
    pub fn queued(&self, mode: ModeId, region: RegionId) -> usize {
        if mode.index() >= self.team_sizes.len() || region.index() >= self.region_count {
            return 0;
        }
        self.buckets[self.bucket(mode, region)].len()
    }

    /// When a waiting ticket will next be looked at without a new arrival: `Some(t)` for a
    /// scheduled wake-up, `None` if it is not queued, not yet looked at, or only an arrival can
    /// match it.
    pub fn next_wake(&self, id: TicketId) -> Option<i64> {
        let slot = *self.by_id.get(&id)?;
        let e = self.slots.get(slot as usize)?.as_ref()?;
        (e.wake != NEVER).then_some(e.wake)
    }

    // ---- private helpers ----

    fn bucket(&self, mode: ModeId, region: RegionId) -> usize {
        mode.index() * self.region_count + region.index()
    }

    fn alive(&self, slot: u32, seq: u64) -> bool {
        live(&self.slots, slot, seq).is_some()
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize)?.as_ref()
    }

    fn remove(&mut self, slot: u32) -> Option<Ticket> {
        let e = self.slots.get_mut(slot as usize)?.take()?;
        for region in e.ticket.regions.iter() {
            let b = self.bucket(e.ticket.mode, region);
            self.buckets[b].remove(&(e.key, e.seq));
        }
        self.by_id.remove(&e.ticket.id);
        for m in &e.ticket.members {
            self.by_user.remove(&m.user_id);
        }
        self.free.push(slot);
        Some(e.ticket)
    }

    fn set_wake(&mut self, slot: u32, at: i64) {
        if let Some(Some(e)) = self.slots.get_mut(slot as usize) {
            e.wake = at;
            self.wakes.push(Reverse((at, e.seq, slot)));
        }
    }

    /// Looks at one due ticket: match it (or let an older ticket it can play seed a match), or
    /// schedule when to look again. One survey of its neighbourhood (one scan per bucket) serves
    /// the seat check, the formation and the schedule.
    fn process(
        &mut self,
        slot: u32,
        seq: u64,
        now: i64,
        gate: &mut impl Gate,
        out: &mut Vec<Outcome>,
        stats: &mut TickStats,
    ) {
        stats.processed += 1;
        let mut survey = std::mem::take(&mut self.survey);
        let mut settled = false;
        for _ in 0..MAX_ATTEMPTS {
            if !self.alive(slot, seq) {
                settled = true;
                break;
            }
            self.fill_survey(slot, &mut survey);
            let mut exhausted = false;
            if let Some(older) = self.oldest_in_survey(slot, &survey, now) {
                // The oldest waiting ticket seeds: hand the seat to it.
                let seed = self.promote(older, now);
                let cancelled = stats.cancelled;
                match self.try_form(seed, None, now, gate, out, stats) {
                    // An older ticket made a match; look again whether this one still can.
                    Formed::Matched | Formed::SeedGone => continue,
                    Formed::NoMatch { exhausted: e } => {
                        exhausted = e;
                        if stats.cancelled != cancelled {
                            // The gate removed tickets: the survey is stale.
                            self.fill_survey(slot, &mut survey);
                        }
                    }
                }
            }
            match self.try_form(slot, Some(&survey), now, gate, out, stats) {
                Formed::Matched | Formed::SeedGone => {}
                Formed::NoMatch { exhausted: e } if exhausted || e => {
                    self.set_wake(slot, now.saturating_add(self.config.recheck_ms));
                }
                // Candidates the gate removed meanwhile can only make the wake-up earlier.
                Formed::NoMatch { .. } => self.schedule(slot, &survey, now),
            }
            settled = true;
            break;
        }
        if !settled {
            // Several matches formed around it this tick; it may still match, so look next tick.
            self.set_wake(slot, now.saturating_add(1));
        }
        self.survey = survey;
    }

    /// Fills `sv` with the tickets nearest to `slot` within the widest window, per bucket.
    fn fill_survey(&self, slot: u32, sv: &mut Survey) {
        sv.cands.clear();
        sv.spans.clear();
        let Some(e) = self.entry(slot) else { return };
        let w_max = self.config.curve.max_window();
        for region in e.ticket.regions.iter() {
            let b = self.bucket(e.ticket.mode, region);
            let start = sv.cands.len();
            let boundary = scan(&self.buckets[b], (e.key, e.seq), e.rating, w_max, self.config.scan_limit, &mut sv.cands);
            sv.spans.push(Span { region, start, end: sv.cands.len(), boundary });
        }
    }

    /// The oldest surveyed ticket older than `slot` that it accepts and that accepts it.
    fn oldest_in_survey(&self, slot: u32, sv: &Survey, now: i64) -> Option<u32> {
        let e = self.entry(slot)?;
        let (enq, seq) = (e.ticket.enqueued_at_ms, e.seq);
        let curve = &self.config.curve;
        let w = curve.window(now.saturating_sub(enq));
        let mut best: Option<(i64, u64, u32)> = None;
        for c in &sv.cands {
            if c.gap <= w
                && (c.enq, c.seq) < (enq, seq)
                && best.is_none_or(|b| (c.enq, c.seq) < (b.0, b.1))
                && c.gap <= curve.window(now.saturating_sub(c.enq))
            {
                best = Some((c.enq, c.seq, c.slot));
            }
        }
        best.map(|b| b.2)
    }

    /// Follows the chain of older tickets that accept each other from `slot` (itself one hop
    /// from the ticket being looked at), up to `MAX_HOPS` in all.
    fn promote(&mut self, slot: u32, now: i64) -> u32 {
        let mut seed = slot;
        for _ in 1..MAX_HOPS {
            match self.oldest_acceptable(seed, now) {
                Some(older) => seed = older,
                None => break,
            }
        }
        seed
    }

    fn oldest_acceptable(&mut self, slot: u32, now: i64) -> Option<u32> {
        let mut sv = std::mem::take(&mut self.hop);
        self.fill_survey(slot, &mut sv);
        let older = self.oldest_in_survey(slot, &sv, now);
        self.hop = sv;
        older
    }

    /// Tries to make a match with `seed` as its seed, in each of its regions in turn. A survey
    /// of the seed, if given, stands in for the first scan of each bucket.
    fn try_form(
        &mut self,
        seed: u32,
        survey: Option<&Survey>,
        now: i64,
        gate: &mut impl Gate,
        out: &mut Vec<Outcome>,
        stats: &mut TickStats,
    ) -> Formed {
        let Some(e) = self.entry(seed) else { return Formed::SeedGone };
        let (mode, regions, key, seq, rating, enq, players, rating_sum) = (
            e.ticket.mode,
            e.ticket.regions,
            e.key,
            e.seq,
            e.rating,
            e.ticket.enqueued_at_ms,
            e.players,
            e.rating_sum,
        );
        let team_size = self.team_sizes[mode.index()];
        let w_seed = self.config.curve.window(now.saturating_sub(enq));
        let seed_pick = Pick { players, rating, sum: rating_sum, window: w_seed };
        let mut exhausted = false;
        let mut cands = std::mem::take(&mut self.cands);
        let mut result = None;
        'regions: for region in regions.iter() {
            let b = self.bucket(mode, region);
            for attempt in 0..CLAIM_RETRIES {
                cands.clear();
                let surveyed = survey.filter(|_| attempt == 0).and_then(|sv| sv.span(region).map(|sp| (sv, sp)));
                if let Some((sv, span)) = surveyed {
                    cands.extend(sv.cands[span.start..span.end].iter().filter(|c| c.gap <= w_seed));
                } else {
                    scan(&self.buckets[b], (key, seq), rating, w_seed, self.config.scan_limit, &mut cands);
                }
                let curve = &self.config.curve;
                cands.retain(|c| c.gap <= curve.window(now.saturating_sub(c.enq)));
                if cands.is_empty() {
                    continue 'regions;
                }
                // The match's tickets as slots, and which of them go to the first team.
                let (slots, first_team): (Vec<u32>, u32) = if team_size == 1 {
                    (vec![seed, cands[0].slot], 0b01)
                } else {
                    let picks: Vec<Pick> = cands
                        .iter()
                        .take(FORM_LIMIT)
                        .map(|c| Pick {
                            players: c.players,
                            rating: c.rating,
                            sum: self.entry(c.slot).map_or(0.0, |e| e.rating_sum),
                            window: curve.window(now.saturating_sub(c.enq)),
                        })
                        .collect();
                    let chosen = match form::select(&seed_pick, &picks, team_size, FORM_BUDGET) {
                        Formation::Found(chosen) => chosen,
                        Formation::Infeasible => continue 'regions,
                        Formation::Exhausted => {
                            exhausted = true;
                            continue 'regions;
                        }
                    };
                    let mut items = vec![(players, rating_sum)];
                    items.extend(chosen.iter().map(|&i| (picks[i].players, picks[i].sum)));
                    let Some(mask) = form::balance(&items, team_size) else { continue 'regions };
                    let mut slots = vec![seed];
                    slots.extend(chosen.iter().map(|&i| cands[i].slot));
                    (slots, mask)
                };
                match self.claim(&slots, gate) {
                    Ok(()) => {
                        let mut teams: [Vec<Ticket>; 2] = [Vec::new(), Vec::new()];
                        for (i, &s) in slots.iter().enumerate() {
                            if let Some(t) = self.remove(s) {
                                teams[usize::from(first_team & (1 << i) == 0)].push(t);
                            }
                        }
                        let quality = quality(&teams);
                        stats.matches += 1;
                        out.push(Outcome::Matched(Match { mode, region, teams, quality, created_at_ms: now }));
                        result = Some(Formed::Matched);
                        break 'regions;
                    }
                    Err(refused) => {
                        if let Some(t) = self.remove(refused) {
                            stats.cancelled += 1;
                            out.push(Outcome::Cancelled(t));
                        }
                        if refused == seed {
                            result = Some(Formed::SeedGone);
                            break 'regions;
                        }
                    }
                }
            }
            // The gate kept refusing; the next tick looks again.
            exhausted = true;
        }
        self.cands = cands;
        result.unwrap_or(Formed::NoMatch { exhausted })
    }

    /// Claims every ticket through the gate, or gives back the claims made and names the
    /// ticket it refused.
    fn claim(&self, slots: &[u32], gate: &mut impl Gate) -> Result<(), u32> {
        for (i, &s) in slots.iter().enumerate() {
            let Some(e) = self.entry(s) else { return Err(s) };
            if !gate.claim(e.ticket.id) {
                for &prev in &slots[..i] {
                    if let Some(p) = self.entry(prev) {
                        gate.release(p.ticket.id);
                    }
                }
                return Err(s);
            }
        }
        Ok(())
    }

    /// Schedules the next look at an unmatched ticket from its survey: the earliest moment at
    /// which a pair it could play in becomes mutually acceptable, as waiting widens the windows.
    /// Until then only a new arrival can match it, and arrivals are looked at anyway.
    fn schedule(&mut self, slot: u32, sv: &Survey, now: i64) {
        let Some(e) = self.entry(slot) else { return };
        let (rating, enq) = (e.rating, e.ticket.enqueued_at_ms);
        let team_size = self.team_sizes[e.ticket.mode.index()];
        let curve = &self.config.curve;
        let mut wake = NEVER;
        for span in &sv.spans {
            let cands = &sv.cands[span.start..span.end];
            let mut boundary = span.boundary;
            for c in cands {
                if let Some(t) = pair_time(curve, enq, rating, c.enq, c.rating)
                    && t > now
                {
                    wake = wake.min(t);
                }
            }
            if team_size > 1 {
                // A team match also needs the other tickets to accept one another.
                let n = cands.len().min(PAIR_LIMIT);
                for i in 0..n {
                    for j in i + 1..n {
                        let (a, c) = (&cands[i], &cands[j]);
                        if let Some(t) = pair_time(curve, a.enq, a.rating, c.enq, c.rating)
                            && t > now
                        {
                            wake = wake.min(t);
                        }
                    }
                }
                if cands.len() > n {
                    boundary = boundary.min(cands[n].gap);
                }
            }
            // Tickets beyond the scan accept this one no earlier than the nearest of them does.
            if let Some(age) = curve.age_for(boundary) {
                let t = enq.saturating_add(age).max(now.saturating_add(self.config.recheck_ms));
                wake = wake.min(t);
            }
        }
        if wake != NEVER {
            self.set_wake(slot, wake);
        }
    }
}

/// The entry in `slot` if it still holds the ticket with `seq`.
fn live(slots: &[Option<Entry>], slot: u32, seq: u64) -> Option<&Entry> {
    slots.get(slot as usize)?.as_ref().filter(|e| e.seq == seq)
}

/// The earliest time two tickets accept each other: the younger one's window is the smaller
/// (one curve for all), so it is when the younger has waited long enough to cover the gap.
fn pair_time(curve: &WindowCurve, enq_a: i64, r_a: f64, enq_b: i64, r_b: f64) -> Option<i64> {
    curve.age_for((r_a - r_b).abs()).map(|age| enq_a.max(enq_b).saturating_add(age))
}

/// Appends to `out` the tickets of `bucket` nearest to `rating` (the ticket at `key` excluded),
/// nearest first, while their gap is at most `max_gap`, at most `limit` of them. Returns the gap
/// of the nearest ticket left out because of `limit` (infinity if none).
fn scan(bucket: &BTreeMap<Key, Ix>, key: Key, rating: f64, max_gap: f64, limit: usize, out: &mut Vec<Cand>) -> f64 {
    let start = out.len();
    let mut left = bucket.range(..key).rev().peekable();
    let mut right = bucket.range((Bound::Excluded(key), Bound::Unbounded)).peekable();
    loop {
        let lg = left.peek().map(|(_, ix)| (rating - ix.rating).abs());
        let rg = right.peek().map(|(_, ix)| (ix.rating - rating).abs());
        let (gap, from_left) = match (lg, rg) {
            (None, None) => return f64::INFINITY,
            (Some(l), None) => (l, true),
            (None, Some(r)) => (r, false),
            (Some(l), Some(r)) => if l <= r { (l, true) } else { (r, false) },
        };
        if gap > max_gap {
            return f64::INFINITY;
        }
        if out.len() - start >= limit {
            return gap;
        }
        let next = if from_left { left.next() } else { right.next() };
        let Some((k, ix)) = next else { return f64::INFINITY };
        out.push(Cand { slot: ix.slot, seq: k.1, rating: ix.rating, enq: ix.enq, players: ix.players, gap });
    }
}

/// A u64 that sorts like the (finite) f64.
fn order_key(r: f64) -> u64 {
    let b = r.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}
