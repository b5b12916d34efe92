//! Behaviour of the matching core, each test a script of enqueues, cancels and ticks run through
//! one `check` helper that compares every tick's outcomes with the expected lines (and checks
//! that every match lies within both windows).

use std::collections::HashSet;

use matchmaker::core::{
    EnqueueError, Match, Matcher, MatcherConfig, Member, ModeSpec, Open, Outcome, RegionSet, Registry, Ticket,
    TicketId,
};
use uuid::Uuid;

/// One step of a script.
enum Step {
    /// Enqueue ticket `id` in `mode`, accepting `regions`, one member per rating, at `at` (ms).
    Add { id: u64, mode: &'static str, regions: &'static [&'static str], ratings: &'static [f64], at: i64 },
    /// Cancel a waiting ticket between ticks (must be waiting).
    Cancel(u64),
    /// Tick at `at`; the gate refuses the tickets in `refuse` (cancelled while the tick runs);
    /// `expect` is every outcome, in order: `match MODE@REGION [ids] v [ids]`, `expired ID`,
    /// `cancelled ID`.
    Tick { at: i64, refuse: &'static [u64], expect: &'static [&'static str] },
}

use Step::{Add, Cancel, Tick};

fn solo(id: u64, mode: &'static str, rating: &'static [f64], at: i64) -> Step {
    Add { id, mode, regions: &["eu"], ratings: rating, at }
}

fn tick(at: i64, expect: &'static [&'static str]) -> Step {
    Tick { at, refuse: &[], expect }
}

fn registry() -> Registry {
    Registry::new(
        vec![
            ModeSpec { name: "duel".into(), team_size: 1 },
            ModeSpec { name: "duo".into(), team_size: 2 },
            ModeSpec { name: "trio".into(), team_size: 3 },
        ],
        vec!["eu".into(), "us".into()],
    )
    .expect("valid registry")
}

fn matcher() -> Matcher {
    Matcher::new(MatcherConfig { registry: registry(), ..MatcherConfig::default() }).expect("valid config")
}

fn user(ticket: u64, member: usize) -> Uuid {
    Uuid::from_u128(u128::from(ticket) * 100 + member as u128)
}

fn render(o: &Outcome, reg: &Registry) -> String {
    match o {
        Outcome::Matched(m) => {
            let mut teams: Vec<Vec<u64>> = m
                .teams
                .iter()
                .map(|t| {
                    let mut ids: Vec<u64> = t.iter().map(|t| t.id.0).collect();
                    ids.sort_unstable();
                    ids
                })
                .collect();
            teams.sort();
            let name = |ids: &Vec<u64>| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            format!(
                "match {}@{} [{}] v [{}]",
                reg.mode_spec(m.mode).map_or("?", |s| s.name.as_str()),
                reg.region_name(m.region).unwrap_or("?"),
                name(&teams[0]),
                name(&teams[1])
            )
        }
        Outcome::Expired(t) => format!("expired {}", t.id.0),
        Outcome::Cancelled(t) => format!("cancelled {}", t.id.0),
    }
}

/// Every pair of tickets in the match accepts the other at the match time.
fn assert_within_windows(m: &Match, cfg: &MatcherConfig) {
    let tickets: Vec<&Ticket> = m.tickets().collect();
    for (i, a) in tickets.iter().enumerate() {
        for b in &tickets[i + 1..] {
            let wa = cfg.curve.window(m.created_at_ms - a.enqueued_at_ms);
            let wb = cfg.curve.window(m.created_at_ms - b.enqueued_at_ms);
            let gap = (a.rating() - b.rating()).abs();
            assert!(gap <= wa.min(wb), "tickets {} and {}: gap {gap} outside windows {wa} / {wb}", a.id, b.id);
        }
    }
}

fn check(steps: &[Step]) {
    let reg = registry();
    let mut m = matcher();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Add { id, mode, regions, ratings, at } => {
                let ticket = Ticket {
                    id: TicketId(*id),
                    members: ratings
                        .iter()
                        .enumerate()
                        .map(|(j, &rating)| Member { user_id: user(*id, j), rating, deviation: 60.0 })
                        .collect(),
                    mode: reg.mode(mode).unwrap_or_else(|| panic!("step {i}: no mode {mode}")),
                    regions: regions
                        .iter()
                        .map(|r| reg.region(r).unwrap_or_else(|| panic!("step {i}: no region {r}")))
                        .collect(),
                    enqueued_at_ms: *at,
                };
                m.enqueue(ticket).unwrap_or_else(|e| panic!("step {i}: enqueue {id}: {e}"));
            }
            Cancel(id) => {
                let t = m.cancel(TicketId(*id));
                assert_eq!(t.map(|t| t.id), Some(TicketId(*id)), "step {i}: cancel {id}");
            }
            Tick { at, refuse, expect } => {
                let refuse: HashSet<u64> = refuse.iter().copied().collect();
                let mut out = Vec::new();
                m.tick(*at, &mut |id: TicketId| !refuse.contains(&id.0), &mut out);
                let got: Vec<String> = out.iter().map(|o| render(o, &reg)).collect();
                assert_eq!(got, *expect, "step {i}: tick at {at}");
                for o in &out {
                    if let Outcome::Matched(mm) = o {
                        assert_within_windows(mm, m.config());
                        assert_eq!(mm.created_at_ms, *at);
                    }
                }
            }
        }
    }
}

#[test]
fn window_widens_with_waiting_time() {
    // 300 apart: the default window (100 → 500 over 40 s) covers it after 20 s.
    check(&[
        solo(1, "duel", &[1000.0], 0),
        solo(2, "duel", &[1300.0], 0),
        tick(0, &[]),
        tick(19_999, &[]),
        tick(20_000, &["match duel@eu [1] v [2]"]),
    ]);
}

#[test]
fn equal_ratings_match_on_the_next_tick() {
    check(&[solo(1, "duel", &[1500.0], 0), solo(2, "duel", &[1600.0], 50), tick(100, &["match duel@eu [1] v [2]"])]);
}

#[test]
fn newcomer_with_a_narrow_window_does_not_take_a_far_ticket() {
    // Ticket 1 has waited a minute (window 500) when 2 arrives 400 away (window 100): 1 would
    // accept 2, but 2 does not accept 1 until its own window reaches 400, 30 s later.
    check(&[
        solo(1, "duel", &[1000.0], 0),
        tick(0, &[]),
        tick(60_000, &[]),
        solo(2, "duel", &[1400.0], 60_000),
        tick(60_000, &[]),
        tick(89_999, &[]),
        tick(90_000, &["match duel@eu [1] v [2]"]),
    ]);
    // The same when the old ticket is the seed: put back with its old enqueue time (as after a
    // failed allocation), it is looked at first, and its wide window is not enough.
    check(&[
        solo(2, "duel", &[1400.0], 60_000),
        solo(1, "duel", &[1000.0], 0),
        tick(60_000, &[]),
        tick(89_999, &[]),
        tick(90_000, &["match duel@eu [1] v [2]"]),
    ]);
}

#[test]
fn the_oldest_acceptable_ticket_seeds_the_match() {
    // 2 and 3 arrive together, 60 apart; 2 is 90 from the old ticket 1. Left to itself 2 would
    // take its nearest (3), but 1 is older and accepts 2, so 1 seeds and takes 2; 3 (150 from 1,
    // window 100) waits.
    check(&[
        solo(1, "duel", &[1000.0], 0),
        tick(0, &[]),
        solo(2, "duel", &[1090.0], 30_000),
        solo(3, "duel", &[1150.0], 30_000),
        tick(30_000, &["match duel@eu [1] v [2]"]),
    ]);
}

#[test]
fn regions_are_never_mixed() {
    check(&[
        Add { id: 1, mode: "duel", regions: &["eu"], ratings: &[1500.0], at: 0 },
        Add { id: 2, mode: "duel", regions: &["us"], ratings: &[1500.0], at: 0 },
        tick(0, &[]),
        tick(120_000, &[]),
        // A ticket that accepts both regions plays the oldest, in that one's region.
        Add { id: 3, mode: "duel", regions: &["eu", "us"], ratings: &[1500.0], at: 120_000 },
        tick(120_100, &["match duel@eu [1] v [3]"]),
        Add { id: 4, mode: "duel", regions: &["eu", "us"], ratings: &[1500.0], at: 120_100 },
        tick(120_200, &["match duel@us [2] v [4]"]),
    ]);
}

#[test]
fn modes_are_never_mixed() {
    check(&[
        solo(1, "duel", &[1500.0], 0),
        solo(2, "duo", &[1500.0], 0),
        solo(3, "duo", &[1500.0], 0),
        solo(4, "trio", &[1500.0], 0),
        tick(0, &[]),
        tick(60_000, &[]),
        solo(5, "duel", &[1500.0], 60_000),
        tick(60_000, &["match duel@eu [1] v [5]"]),
    ]);
}

#[test]
fn parties_stay_together_on_one_team() {
    check(&[
        solo(1, "duo", &[1500.0, 1520.0], 0),
        solo(2, "duo", &[1490.0], 0),
        solo(3, "duo", &[1510.0], 0),
        tick(0, &["match duo@eu [1] v [2 3]"]),
        // 3v3 from two parties of two and two solos: each party gets a solo.
        solo(10, "trio", &[1500.0, 1500.0], 1000),
        solo(11, "trio", &[1500.0, 1500.0], 1000),
        solo(12, "trio", &[1400.0], 1000),
        solo(13, "trio", &[1450.0], 1000),
        tick(1000, &["match trio@eu [10 13] v [11 12]"]),
    ]);
}

#[test]
fn party_members_cannot_fill_a_team_they_do_not_fit() {
    // Three parties of two can never make two teams of three.
    check(&[
        solo(1, "trio", &[1500.0, 1500.0], 0),
        solo(2, "trio", &[1500.0, 1500.0], 0),
        solo(3, "trio", &[1500.0, 1500.0], 0),
        tick(0, &[]),
        tick(60_000, &[]),
        solo(4, "trio", &[1500.0], 60_000),
        tick(60_000, &[]),
        solo(5, "trio", &[1500.0], 60_000),
        tick(60_000, &["match trio@eu [1 4] v [2 5]"]),
    ]);
}

#[test]
fn team_modes_balance_total_rating() {
    // 1700 + 1300 against 1600 + 1400. All four are at most 400 apart, so they accept one
    // another once their windows reach 400 (30 s).
    check(&[
        solo(1, "duo", &[1700.0], 0),
        solo(2, "duo", &[1600.0], 0),
        solo(3, "duo", &[1400.0], 0),
        solo(4, "duo", &[1300.0], 0),
        tick(0, &[]),
        tick(29_999, &[]),
        tick(30_000, &["match duo@eu [1 4] v [2 3]"]),
    ]);
}

#[test]
fn cancelled_before_the_tick_is_never_matched() {
    check(&[
        solo(1, "duel", &[1500.0], 0),
        solo(2, "duel", &[1500.0], 0),
        Cancel(1),
        tick(0, &[]),
        solo(3, "duel", &[1500.0], 100),
        tick(100, &["match duel@eu [2] v [3]"]),
    ]);
}

#[test]
fn cancelled_while_the_tick_runs_is_never_matched() {
    // 2 is 1's nearest, but its cancel lands during the tick: the gate refuses it, it leaves,
    // and 1 takes the next nearest.
    check(&[
        solo(1, "duel", &[1500.0], 0),
        solo(2, "duel", &[1510.0], 0),
        solo(3, "duel", &[1530.0], 0),
        Tick { at: 0, refuse: &[2], expect: &["cancelled 2", "match duel@eu [1] v [3]"] },
        // The seed itself refused: it leaves and nothing is matched with it.
        solo(4, "duel", &[1500.0], 100),
        solo(5, "duel", &[1500.0], 200),
        Tick { at: 200, refuse: &[4], expect: &["cancelled 4"] },
        // In a team match one refused ticket leaves; the rest wait for another player.
        solo(6, "duo", &[1500.0], 300),
        solo(7, "duo", &[1500.0], 300),
        solo(8, "duo", &[1500.0], 300),
        solo(9, "duo", &[1500.0], 300),
        Tick { at: 300, refuse: &[8], expect: &["cancelled 8"] },
        solo(10, "duo", &[1500.0], 400),
        tick(400, &["match duo@eu [6 7] v [9 10]"]),
    ]);
}

#[test]
fn tickets_expire_after_their_lifetime_and_are_not_matched() {
    check(&[
        solo(1, "duel", &[1000.0], 0),
        tick(0, &[]),
        tick(299_999, &[]),
        solo(2, "duel", &[1000.0], 300_000),
        // Expiry comes before matching: 1 expires instead of playing the newcomer.
        tick(300_000, &["expired 1"]),
        tick(300_000 + 300_000, &["expired 2"]),
    ]);
}

#[test]
fn a_quiet_tick_looks_at_nothing() {
    // Tickets far apart with no partner in reach (more than 500 apart) are never looked at again.
    let reg = registry();
    let mut m = matcher();
    let duel = reg.mode("duel").expect("duel");
    let eu = RegionSet::one(reg.region("eu").expect("eu"));
    for i in 0..1000u64 {
        let rating = 1000.0 + 600.0 * i as f64;
        let t = Ticket { id: TicketId(i), members: vec![Member { user_id: user(i, 0), rating, deviation: 60.0 }], mode: duel, regions: eu, enqueued_at_ms: 0 };
        m.enqueue(t).expect("enqueue");
    }
    let mut out = Vec::new();
    assert_eq!(m.tick(0, &mut Open, &mut out).processed, 1000);
    for at in (100..60_000).step_by(100) {
        let s = m.tick(at, &mut Open, &mut out);
        assert_eq!(s.processed, 0, "tick at {at}");
    }
    assert!(out.is_empty());
    // Pairs that will accept each other later are looked at exactly when they do.
    let a = Ticket { id: TicketId(5000), members: vec![Member { user_id: user(5000, 0), rating: 1300.0, deviation: 60.0 }], mode: duel, regions: eu, enqueued_at_ms: 60_000 };
    m.enqueue(a).expect("enqueue");
    m.tick(60_000, &mut Open, &mut out);
    assert_eq!(m.next_wake(TicketId(5000)), Some(80_000), "300 from its neighbour at 1000: window 300 at 20 s");
}

#[test]
fn enqueue_rejects_bad_tickets() {
    let reg = registry();
    let duel = reg.mode("duel").expect("duel");
    let eu = RegionSet::one(reg.region("eu").expect("eu"));
    let ok = |id: u64, user_n: u64| Ticket {
        id: TicketId(id),
        members: vec![Member { user_id: user(user_n, 0), rating: 1500.0, deviation: 350.0 }],
        mode: duel,
        regions: eu,
        enqueued_at_ms: 0,
    };
    let mut m = matcher();
    m.enqueue(ok(1, 1)).expect("first");
    let cases: Vec<(Ticket, EnqueueError)> = vec![
        (ok(1, 2), EnqueueError::DuplicateTicket(TicketId(1))),
        (ok(2, 1), EnqueueError::UserAlreadyQueued(user(1, 0))),
        (Ticket { members: vec![], ..ok(3, 3) }, EnqueueError::EmptyParty),
        (Ticket { regions: RegionSet::EMPTY, ..ok(3, 3) }, EnqueueError::NoRegion),
        (Ticket { members: vec![ok(3, 3).members[0]; 2], ..ok(3, 3) }, EnqueueError::PartyTooLarge { size: 2, team_size: 1 }),
        (
            Ticket { members: vec![Member { user_id: user(3, 0), rating: f64::NAN, deviation: 1.0 }], ..ok(3, 3) },
            EnqueueError::BadRating { user_id: user(3, 0), rating: f64::NAN, deviation: 1.0 },
        ),
    ];
    for (t, want) in cases {
        let got = m.enqueue(t).err();
        // NaN != NaN, so compare the messages.
        assert_eq!(got.map(|e| e.to_string()), Some(want.to_string()));
    }
    let duo = reg.mode("duo").expect("duo");
    let twice = Ticket { mode: duo, members: vec![ok(4, 4).members[0]; 2], ..ok(4, 4) };
    assert_eq!(m.enqueue(twice).err(), Some(EnqueueError::DuplicateMember(user(4, 0))));
    assert_eq!(m.len(), 1);
    assert!(m.cancel(TicketId(1)).is_some());
    assert!(m.cancel(TicketId(1)).is_none(), "cancelling twice finds nothing");
    m.enqueue(ok(5, 1)).expect("a cancelled user may queue again");
}

#[test]
fn quality_is_high_for_even_matches_and_low_for_far_ones() {
    let reg = registry();
    let duel = reg.mode("duel").expect("duel");
    let eu = RegionSet::one(reg.region("eu").expect("eu"));
    let mut m = matcher();
    let t = |id: u64, rating: f64| Ticket {
        id: TicketId(id),
        members: vec![Member { user_id: user(id, 0), rating, deviation: 50.0 }],
        mode: duel,
        regions: eu,
        enqueued_at_ms: 0,
    };
    for (id, r) in [(1, 1500.0), (2, 1500.0), (3, 3000.0), (4, 3480.0)] {
        m.enqueue(t(id, r)).expect("enqueue");
    }
    let mut out = Vec::new();
    m.tick(0, &mut Open, &mut out);
    m.tick(40_000, &mut Open, &mut out);
    let q: Vec<f64> = out.iter().filter_map(|o| if let Outcome::Matched(m) = o { Some(m.quality) } else { None }).collect();
    assert_eq!(q.len(), 2, "{out:?}");
    assert!((q[0] - 1.0).abs() < 1e-9, "equal ratings: {}", q[0]);
    assert!(q[1] < 0.1, "480 apart: {}", q[1]);
}
