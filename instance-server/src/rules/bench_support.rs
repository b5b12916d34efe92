//! Whole games between two bots, recorded and replayed: what the bench measures (rules-engine
//! commands per second) and what the determinism tests replay.
//!
//! Nothing here reads a clock: games run on simulated time ([`STEP_MS`] per command), and the
//! caller times what it wants. For the bench, the engine alone:
//!
//! ```
//! use std::sync::Arc;
//! use instance_server::catalog::Catalog;
//! use instance_server::rules::bench_support::{bot_setup, play_bot_game, replay};
//!
//! let catalog = Arc::new(Catalog::standard());
//! let games: Vec<_> = (0..4)
//!     .map(|seed| play_bot_game(&catalog, bot_setup(&catalog, seed).expect("starter decks"), seed))
//!     .collect();
//! // Time only this part: pure engine work, no bot decisions.
//! let commands: u64 = games.iter().map(|g| replay(&catalog, g).commands).sum();
//! assert_eq!(commands, games.iter().map(|g| g.commands.len() as u64).sum::<u64>());
//! ```

use std::sync::Arc;

use crate::bot::Bot;
use crate::catalog::Catalog;

use super::{Command, DEFAULT_TURN_MS, EndReason, Game, GameResult, GameSetup, Seat};

/// Simulated milliseconds between two commands of a bot game (well inside a turn).
pub const STEP_MS: i64 = 250;
/// Commands after which a bot game is abandoned (never reached: fatigue ends games far sooner).
pub const MAX_COMMANDS: usize = 20_000;

/// A finished bot game: its setup and every command, enough to replay it exactly.
#[derive(Clone, Debug)]
pub struct RecordedGame {
    pub setup: GameSetup,
    pub start_ms: i64,
    /// (who, what, when), in order; all were accepted.
    pub commands: Vec<(Seat, Command, i64)>,
    /// Events the game emitted, setup included.
    pub events: u64,
    pub turns: u16,
    pub result: GameResult,
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub commands: u64,
    pub events: u64,
    /// Commands the engine refused (0 unless determinism broke).
    pub rejected: u64,
}

/// A bot game setup for `seed`: two starter decks chosen by the seed (possibly the same one),
/// [`DEFAULT_TURN_MS`] turns. `None` when the catalog has no starter decks.
pub fn bot_setup(catalog: &Catalog, seed: u64) -> Option<GameSetup> {
    let decks = catalog.starter_decks();
    if decks.is_empty() {
        return None;
    }
    let n = decks.len() as u64;
    let a = decks[(seed % n) as usize].deck().clone();
    let b = decks[((seed / n) % n) as usize].deck().clone();
    Some(GameSetup {
        seed,
        decks: [a, b],
        turn_ms: DEFAULT_TURN_MS,
    })
}

/// Plays `setup` to the end with two bots (seeded from `bot_seed`) and records it.
pub fn play_bot_game(catalog: &Arc<Catalog>, setup: GameSetup, bot_seed: u64) -> RecordedGame {
    let start_ms = 0;
    let (mut game, first_events) = match Game::new(Arc::clone(catalog), setup.clone(), start_ms) {
        Ok(g) => g,
        // A setup from `bot_setup` always fits its catalog; report another as aborted at once.
        Err(_) => {
            return RecordedGame {
                setup,
                start_ms,
                commands: Vec::new(),
                events: 0,
                turns: 0,
                result: GameResult {
                    winner: None,
                    reason: EndReason::Aborted,
                },
            };
        }
    };
    let mut events = first_events.len() as u64;
    let mut bots = [
        Bot::new(bot_seed.wrapping_mul(2)),
        Bot::new(bot_seed.wrapping_mul(2).wrapping_add(1)),
    ];
    let mut commands = Vec::new();
    let mut now = start_ms;
    let mut buf = Vec::new();
    while game.result().is_none() {
        if commands.len() >= MAX_COMMANDS {
            events += game.abort().len() as u64;
            break;
        }
        let seat = game.active();
        let view = game.view(seat);
        let command = bots[seat.index()]
            .choose(&view, catalog)
            .unwrap_or(Command::EndTurn);
        now += STEP_MS;
        buf.clear();
        match game.apply_into(seat, &command, now, &mut buf) {
            Ok(()) => {
                events += buf.len() as u64;
                commands.push((seat, command, now));
            }
            // The bot picks only legal commands; should one be refused, end the turn rather
            // than loop.
            Err(_) => {
                buf.clear();
                if game
                    .apply_into(seat, &Command::EndTurn, now, &mut buf)
                    .is_ok()
                {
                    events += buf.len() as u64;
                    commands.push((seat, Command::EndTurn, now));
                }
            }
        }
    }
    let result = game.result().unwrap_or(GameResult {
        winner: None,
        reason: EndReason::Aborted,
    });
    RecordedGame {
        setup,
        start_ms,
        commands,
        events,
        turns: game.turn(),
        result,
    }
}

/// Replays a recorded game through a fresh engine: the rules-engine work alone, without bots.
pub fn replay(catalog: &Arc<Catalog>, recorded: &RecordedGame) -> ReplayStats {
    let mut stats = ReplayStats::default();
    let Ok((mut game, first)) = Game::new(
        Arc::clone(catalog),
        recorded.setup.clone(),
        recorded.start_ms,
    ) else {
        return stats;
    };
    stats.events += first.len() as u64;
    let mut buf = Vec::with_capacity(32);
    for (seat, command, now) in &recorded.commands {
        buf.clear();
        match game.apply_into(*seat, command, *now, &mut buf) {
            Ok(()) => {
                stats.commands += 1;
                stats.events += buf.len() as u64;
            }
            Err(_) => stats.rejected += 1,
        }
    }
    stats
}
