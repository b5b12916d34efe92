//! The matching core, sans-IO: tickets in, matches out, every time passed in as `now` (unix ms).
//! No clock, no tokio, no IO; one owner calls it (the service runs one per shard).
//!
//! # Model
//!
//! A [`Ticket`] is one player or a party (several [`Member`]s, each with a Glicko-2 rating and
//! deviation), one mode (from the [`Registry`]: two teams of `team_size`; "duel" is 1v1, "duo"
//! 2v2), a set of acceptable regions and an enqueue time. A ticket's rating is its members' mean.
//! Tickets wait in **buckets**, one per (mode, region); a ticket that accepts several regions
//! sits in each of their buckets, and a match is made inside one bucket, so modes and regions are
//! never mixed. A party is one ticket and so always lands on one team.
//!
//! # Acceptance
//!
//! A ticket that has waited `a` ms accepts tickets whose rating is within `window(a)` of its own
//! ([`WindowCurve`]; by default 100 points at once, linearly to 500 at 40 s). Two tickets can
//! play together only if **each accepts the other**: `|r₁ − r₂| ≤ min(window₁, window₂)`. With
//! one curve for everyone, the smaller window is the younger ticket's, so a newcomer with a narrow
//! window does not take a far ticket however wide the old one's window has grown. In a team match
//! every pair of tickets must accept each other.
//!
//! # The tick
//!
//! 1. **Expire** every ticket older than the ticket lifetime ([`Outcome::Expired`]), before any
//!    matching, so an expired ticket is never matched.
//! 2. **Collect the due tickets**: the arrivals since the last tick and the tickets whose
//!    scheduled wake-up has come. Nothing else is touched; a queue of a million tickets costs a
//!    tick only what arrived and what was scheduled.
//! 3. **Look at each due ticket, oldest first** (enqueue time, then arrival order):
//!    - *Oldest seeds.* If an older ticket accepts it and it accepts that ticket, the older one
//!      (followed up to two hops) takes the seat of seed: the oldest waiting ticket seeds a match.
//!    - *Form.* The seed scans its bucket outward from its rating, nearest first, for tickets it
//!      accepts and that accept it. 1v1: the nearest one. Teams: a depth-first search over the
//!      nearest candidates for a set that fills two teams exactly, accepts itself pairwise and
//!      splits without breaking a party; then the split with the closest rating totals is chosen
//!      (team balance). Each match gets a [`quality`] score (formula in that module).
//!    - *Commit.* Every ticket of the match is claimed through the [`Gate`]; if one is refused
//!      (cancelled meanwhile) the claims are released, that ticket leaves
//!      ([`Outcome::Cancelled`]) and the seed searches again.
//!    - *Schedule.* Unmatched, the ticket gets a wake-up at the earliest moment a pair it could
//!      play in becomes mutually acceptable: for a neighbour within the widest window,
//!      `max(enqueue₁, enqueue₂) + age_for(gap)`, exact because windows only grow and
//!      [`WindowCurve::age_for`] inverts [`WindowCurve::window`] to the millisecond. In team
//!      modes the pairs among its neighbours count too. Removing tickets only delays those
//!      moments, so a wake-up is never late; an arrival is looked at on its own arrival and hands
//!      the seat to the older tickets it can play (above).
//!
//! # Cost
//!
//! Per bucket a `BTreeMap` ordered by rating (ties by arrival) holds a copy of what a scan needs;
//! expiry and wake-ups are two min-heaps with lazy deletion (an entry counts only while the
//! ticket still carries it, and stale entries fall out when their time comes). A tick costs
//! `O((arrivals + wake-ups + expiries) · (log n + k))`, with `k` the tickets a scan reads before
//! the gap exceeds the window, capped by `scan_limit`; nothing is `O(n)` or `O(n²)` per tick.
//! Waiting tickets in one bucket are far apart by construction (two within the smallest window of
//! each other are matched on the next tick), so `k` stays small in practice.
//!
//! # Cancelling
//!
//! [`Matcher::cancel`] removes a ticket at once; the owner applies every cancel it has received
//! before it calls [`Matcher::tick`]. A cancel that lands while a tick runs (the service records
//! it in its concurrent ticket index from another thread) is caught by the [`Gate`]: the tick
//! claims each ticket of a match right before committing it, the service's gate flips that
//! ticket's state from waiting to matched with a compare-and-swap, a cancel flips it from waiting
//! to cancelled, and exactly one wins. A cancelled ticket is therefore never matched, and a match
//! is never half-made.

mod curve;
mod form;
mod matcher;
pub mod quality;
mod types;

pub use curve::WindowCurve;
pub use matcher::{Gate, Match, Matcher, MatcherConfig, Open, Outcome, TickStats};
pub use quality::quality;
pub use types::{
    ConfigError, EnqueueError, MAX_REGIONS, MAX_TEAM_SIZE, Member, ModeId, ModeSpec, RegionId, RegionSet,
    Registry, Ticket, TicketId, UserId,
};
