//! Property tests over random legal play: invariants after every step, the engine agreeing with
//! the legal-move list, refused commands changing nothing, determinism, and bot games ending.
//!
//! Every case is a `(seed, choices)` pair: proptest prints the failing pair (shrunk), and
//! `replay_one_case` below replays any pair by hand.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use instance_server::bot::Bot;
use instance_server::catalog::{Catalog, DECK_SIZE};
use instance_server::rules::bench_support::{bot_setup, play_bot_game, replay};
use instance_server::rules::{
    BOARD_LIMIT, Command, EndReason, Event, Game, GameState, HAND_LIMIT, MAX_MANA, STARTING_HEALTH,
    Seat, Target, legal_commands,
};
use proptest::prelude::*;

static CATALOG: LazyLock<Arc<Catalog>> = LazyLock::new(|| Arc::new(Catalog::standard()));

const START_MS: i64 = 1_000;

/// One random game: what happened, for the determinism checks.
#[derive(Debug, PartialEq)]
struct Trace {
    events: Vec<Event>,
    final_state: GameState,
}

/// Plays `seed`'s game choosing among the legal commands with `choices`, checking every
/// invariant after each step. Between steps it also throws a random command at the engine: if
/// refused, nothing may change.
fn random_game(seed: u64, choices: &[u32]) -> Result<Trace, TestCaseError> {
    let setup = bot_setup(&CATALOG, seed).ok_or_else(|| TestCaseError::fail("no starter decks"))?;
    let (mut game, first) = Game::new(Arc::clone(&CATALOG), setup, START_MS)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut events = first;
    let mut now = START_MS;
    check_invariants(&game, &events)?;
    for (step, &choice) in choices.iter().enumerate() {
        if game.result().is_some() {
            break;
        }
        now += 100;
        // Now and then let the clock run out instead of acting.
        if choice % 97 == 0 {
            now = game.deadline_ms();
            let ev = game.tick(now);
            prop_assert!(
                !ev.is_empty(),
                "step {step}: tick at the deadline ended nothing"
            );
            events.extend(ev);
            check_invariants(&game, &events)?;
            continue;
        }

        // A random, probably illegal, command from either seat.
        let seat = if choice % 5 == 0 { Seat::B } else { Seat::A };
        let junk = junk_command(choice);
        let legal_for_seat = legal_commands(&game.view(seat), &CATALOG);
        let before = game.state().clone();
        match game.apply(seat, &junk, now) {
            Err(code) => {
                prop_assert!(
                    game.state() == &before,
                    "step {step}: refused {junk:?} ({code}) changed the state"
                );
                prop_assert!(
                    !legal_for_seat.contains(&junk),
                    "step {step}: listed {junk:?} refused with {code}"
                );
            }
            Ok(ev) => {
                events.extend(ev);
                check_invariants(&game, &events)?;
                continue;
            }
        }

        // A legal command of the active player; conceding only rarely.
        let seat = game.active();
        let legal: Vec<Command> = legal_commands(&game.view(seat), &CATALOG)
            .into_iter()
            .filter(|c| *c != Command::Concede || choice % 211 == 0)
            .collect();
        prop_assert!(!legal.is_empty(), "step {step}: no legal command");
        let command = &legal[choice as usize % legal.len()];
        match game.apply(seat, command, now) {
            Ok(ev) => events.extend(ev),
            Err(code) => {
                return Err(TestCaseError::fail(format!(
                    "step {step}: legal {command:?} refused with {code}"
                )));
            }
        }
        check_invariants(&game, &events)?;
    }
    eprintln!(
        "seed {seed}: {} steps, turn {}, result {:?}, {} events",
        choices.len(),
        game.turn(),
        game.result(),
        events.len()
    );
    Ok(Trace {
        events,
        final_state: game.state().clone(),
    })
}

/// Commands with small random ids and targets: mostly illegal, sometimes not.
fn junk_command(choice: u32) -> Command {
    let id = (choice / 7) % 45;
    let target = match (choice / 3) % 4 {
        0 => None,
        1 => Some(Target::Hero(Seat::A)),
        2 => Some(Target::Hero(Seat::B)),
        _ => Some(Target::Unit((choice / 11) % 45)),
    };
    match choice % 4 {
        0 | 1 => Command::PlayCard {
            card: id,
            target,
            position: (choice % 9) as u8,
        },
        2 => Command::Attack {
            attacker: id,
            target: target.unwrap_or(Target::Hero(Seat::B)),
        },
        _ => Command::EndTurn,
    }
}

fn check_invariants(game: &Game, events: &[Event]) -> Result<(), TestCaseError> {
    let st = game.state();
    prop_assert_eq!(
        st.seq,
        events.len() as u64,
        "sequence numbers count every event"
    );
    for seat in Seat::BOTH {
        let p = &st.players[seat.index()];
        // Cards are conserved: every card of the deck is in exactly one place.
        let mut ids: Vec<u32> = p
            .deck
            .iter()
            .chain(&p.hand)
            .chain(&p.graveyard)
            .chain(&p.burned)
            .map(|c| c.id)
            .chain(p.board.iter().map(|u| u.id))
            .collect();
        ids.sort_unstable();
        let base = (seat.index() * DECK_SIZE) as u32;
        prop_assert_eq!(
            &ids,
            &(base + 1..=base + DECK_SIZE as u32).collect::<Vec<_>>(),
            "cards of {:?}",
            seat
        );
        prop_assert!(
            (0..=STARTING_HEALTH).contains(&p.health),
            "hero health {}",
            p.health
        );
        prop_assert!(
            p.mana <= p.max_mana && p.max_mana <= MAX_MANA,
            "mana {}/{}",
            p.mana,
            p.max_mana
        );
        prop_assert!(p.hand.len() <= HAND_LIMIT && p.board.len() <= BOARD_LIMIT);
        for u in &p.board {
            prop_assert!(
                u.health > 0 && u.health <= u.max_health,
                "unit {} health {}/{}",
                u.id,
                u.health,
                u.max_health
            );
            prop_assert!(u.attack >= 0);
        }
        // The view shows the own hand and only counts of the other.
        let view = game.view(seat);
        prop_assert_eq!(
            view.hand.iter().map(|c| c.id).collect::<Vec<_>>(),
            p.hand.iter().map(|c| c.id).collect::<Vec<_>>()
        );
        let other = &st.players[seat.other().index()];
        prop_assert_eq!(usize::from(view.opponent.hand_count), other.hand.len());
        prop_assert_eq!(usize::from(view.opponent.deck_count), other.deck.len());
    }
    // Drawn cards are hidden from the opponent.
    for e in events {
        if let Event::CardDrawn {
            player,
            burned: false,
            ..
        } = e
        {
            let hidden = matches!(
                e.seen_by(player.other()),
                Event::CardDrawn { card: None, .. }
            );
            prop_assert!(hidden, "a draw shown to the opponent");
        }
    }
    let overs: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::GameOver(_)))
        .collect();
    let health = |s: Seat| st.players[s.index()].health;
    match st.result {
        None => {
            prop_assert!(overs.is_empty());
            prop_assert!(
                health(Seat::A) > 0 && health(Seat::B) > 0,
                "a hero fell but the game goes on"
            );
        }
        Some(result) => {
            prop_assert_eq!(overs.len(), 1, "exactly one game over");
            prop_assert_eq!(
                events.last(),
                Some(&Event::GameOver(result)),
                "game over is the last event"
            );
            match (result.winner, result.reason) {
                (Some(w), EndReason::HeroDefeated) => {
                    prop_assert!(health(w) > 0 && health(w.other()) == 0)
                }
                (None, EndReason::HeroDefeated) => {
                    prop_assert!(health(Seat::A) == 0 && health(Seat::B) == 0)
                }
                (Some(_), EndReason::Conceded) => {}
                other => return Err(TestCaseError::fail(format!("unexpected result {other:?}"))),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_legal_play_keeps_every_invariant(seed in any::<u64>(), choices in prop::collection::vec(any::<u32>(), 50..400)) {
        random_game(seed, &choices)?;
    }

    #[test]
    fn same_seed_and_commands_give_the_same_events(seed in any::<u64>(), choices in prop::collection::vec(any::<u32>(), 50..200)) {
        let first = random_game(seed, &choices)?;
        let second = random_game(seed, &choices)?;
        prop_assert!(first == second, "seed {} diverged", seed);
    }
}

/// Replays one `(seed, choices)` case, e.g. from a proptest failure, with its output visible:
/// edit the values and run `cargo test -p instance-server --test properties replay_one_case -- --nocapture`.
#[test]
fn replay_one_case() {
    let (seed, choices) = (
        7u64,
        (0..300u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect::<Vec<_>>(),
    );
    println!("replaying seed {seed}");
    if let Err(e) = random_game(seed, &choices) {
        panic!("seed {seed}: {e}");
    }
}

/// Every player's deck runs out by their 17th turn (3 + 17 or 4 + 16 cards); fatigue then deals
/// 1, 2, 3, …, and even a deck of twenty 10-point heals (30 + 200 health) falls to 21 fatigued
/// turns (231 damage): at most 38 turns each.
const MAX_TURNS: u16 = 2 * 38 + 1;

#[test]
fn bot_games_end_within_bounded_turns_and_replay_exactly() {
    let mut results = BTreeSet::new();
    let mut longest = 0;
    for seed in 0..150u64 {
        let Some(setup) = bot_setup(&CATALOG, seed) else {
            panic!("no starter decks")
        };
        let game = play_bot_game(&CATALOG, setup, seed);
        assert_ne!(
            game.result.reason,
            EndReason::Aborted,
            "seed {seed}: bot game did not finish"
        );
        assert!(game.turns <= MAX_TURNS, "seed {seed}: {} turns", game.turns);
        longest = longest.max(game.turns);
        results.insert(format!("{:?}", game.result.winner));
        let stats = replay(&CATALOG, &game);
        assert_eq!(
            stats.rejected, 0,
            "seed {seed}: replay refused a recorded command"
        );
        assert_eq!(
            stats.events, game.events,
            "seed {seed}: replay emitted other events"
        );
    }
    println!("150 bot games, longest {longest} turns, winners seen: {results:?}");
    assert!(
        results.contains("Some(A)") && results.contains("Some(B)"),
        "both seats win sometimes: {results:?}"
    );
}

#[test]
fn bots_only_play_legal_moves_and_never_see_hidden_cards() {
    for seed in 0..40u64 {
        let Some(setup) = bot_setup(&CATALOG, seed) else {
            panic!("no starter decks")
        };
        let Ok((mut game, _)) = Game::new(Arc::clone(&CATALOG), setup, START_MS) else {
            panic!("setup")
        };
        let mut bots = [Bot::new(seed), Bot::new(seed + 1000)];
        let mut now = START_MS;
        let mut steps = 0;
        while game.result().is_none() {
            let seat = game.active();
            let view = game.view(seat);
            // The bot gets nothing but the view; a view never lists the opponent's hand.
            assert_eq!(
                usize::from(view.opponent.hand_count),
                game.state().players[seat.other().index()].hand.len()
            );
            let Some(command) = bots[seat.index()].choose(&view, &CATALOG) else {
                panic!("seed {seed}: bot passed in its turn")
            };
            assert!(
                legal_commands(&view, &CATALOG).contains(&command),
                "seed {seed}: bot chose {command:?}"
            );
            now += 100;
            if let Err(code) = game.apply(seat, &command, now) {
                panic!("seed {seed}: bot's {command:?} refused with {code}");
            }
            steps += 1;
            assert!(steps < 5_000, "seed {seed}: bot game does not end");
        }
        // Off-turn and after the end the bot does nothing.
        let view = game.view(Seat::A);
        assert_eq!(bots[0].choose(&view, &CATALOG), None);
    }
}
