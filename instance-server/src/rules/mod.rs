//! The card game's rules engine: sans-IO and deterministic. A [`Game`] takes commands and clock
//! readings in and gives events out; it owns a seeded RNG and never reads a clock, so the same
//! seed, decks and inputs always give the same events (tests, replays and the bench rely on it).
//!
//! # The rules (DESIGN.md §6, with the details it leaves open decided here)
//!
//! - Two players ([`Seat::A`], [`Seat::B`]), heroes at [`STARTING_HEALTH`] (also their maximum),
//!   decks of 20 cards from a [`crate::catalog::Catalog`]. The seed decides who goes first and
//!   shuffles both decks.
//! - Opening hands: the first player draws [`OPENING_HAND_FIRST`] cards, the second
//!   [`OPENING_HAND_SECOND`] (the extra card makes up for moving second).
//! - At the start of each of their turns a player's maximum mana grows by 1 up to [`MAX_MANA`],
//!   their mana refills to it, their units become ready (summoning sickness and attacks reset),
//!   and they draw one card. The first player draws on their first turn too: the 3-vs-4 opening
//!   hands already balance going first.
//! - Drawing with [`HAND_LIMIT`] cards in hand burns the card (revealed to both players, then
//!   gone). Drawing from an empty deck deals fatigue damage instead: 1, then 2, 3, … to the
//!   drawing player's hero. Fatigue bounds every game (see `MAX_TURNS` in `tests/properties.rs`).
//! - Play a card: pay its cost. A unit goes onto the board (at most [`BOARD_LIMIT`]) at the given
//!   slot (past the end = rightmost) and, with an effect, resolves it. A spell resolves its
//!   effect and goes to the graveyard. Effects: damage, heal (never above maximum health), draw.
//!   Chosen targets follow the card's [`crate::catalog::TargetRule`]; guard does not stop spells.
//!   A unit whose chosen-target effect has no possible target may be played without one (the
//!   effect does nothing); a spell never can.
//! - A unit may attack once per turn, not on the turn it was played unless it has charge, and
//!   only with attack above 0. It attacks an enemy unit or the enemy hero; while the enemy has a
//!   guard, only guards may be attacked. Combat damage is dealt both ways at once (heroes deal
//!   none back). Units at 0 health die (health never shows below 0).
//! - After every command (and every turn start, for fatigue): a hero at 0 loses, both at once is
//!   a draw (an effect that hits both heroes, such as the standard Cataclysm, can do that).
//! - A turn ends by [`Command::EndTurn`] or by the timer: each turn gets `turn_ms`, and
//!   [`Game::tick`] with a `now_ms` at or past the deadline ends it (`timed_out`). A player may
//!   [`Command::Concede`] at any time, even in the opponent's turn. The network layer ends games
//!   with [`Game::forfeit`] (reconnect window missed) or [`Game::abort`].
//! - An illegal command gets a specific [`ErrorCode`] (6xxx) and changes nothing: every check
//!   runs before the first mutation. Checks run in this order: game over, not your turn, then
//!   per command (play: card in hand, mana, board space, target; attack: attacker is yours,
//!   attacker ready, target is an enemy, guard).
//!
//! # Ids and visibility
//!
//! Card instance ids are 1..=20 for seat A's cards and 21..=40 for seat B's, given after the
//! shuffle (so an id reveals nothing about a card before it is seen). A unit keeps the id of the
//! card it came from. [`Game::view`] gives a player what they may see (their own hand, never the
//! opponent's hand or any deck order) and [`Event::seen_by`] hides drawn cards from the opponent.

mod event;
mod game;
mod legal;
mod view;

pub mod bench_support;

#[cfg(test)]
mod tests;

pub use event::Event;
pub use game::{CardInstance, Game, GameState, Player, SetupError, Unit};
pub use legal::legal_commands;
pub use view::{HandCardView, PlayerView, SideView, UnitView};

pub use protocol::ErrorCode;

/// Hero health at the start, and its maximum.
pub const STARTING_HEALTH: i16 = 30;
/// The mana cap.
pub const MAX_MANA: u8 = 10;
/// Cards a hand holds; a draw beyond it burns the card.
pub const HAND_LIMIT: usize = 10;
/// Units a board holds.
pub const BOARD_LIMIT: usize = 7;
/// Opening hand of the player who goes first.
pub const OPENING_HAND_FIRST: usize = 3;
/// Opening hand of the player who goes second.
pub const OPENING_HAND_SECOND: usize = 4;
/// Default turn length.
pub const DEFAULT_TURN_MS: i64 = 75_000;

/// One of the two players of a match. Which user sits where is the network layer's business
/// (see [`crate::wire::MatchPlayers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seat {
    A,
    B,
}

impl Seat {
    /// Both seats, A first.
    pub const BOTH: [Seat; 2] = [Seat::A, Seat::B];

    /// 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Seat::A => 0,
            Seat::B => 1,
        }
    }

    /// The opponent.
    pub fn other(self) -> Seat {
        match self {
            Seat::A => Seat::B,
            Seat::B => Seat::A,
        }
    }
}

/// What a command or an event aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A unit on either board, by id.
    Unit(u32),
    /// A player's hero.
    Hero(Seat),
}

/// Everything a player can ask of the game.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Play the hand card with instance id `card`; `target` for effects that choose one;
    /// `position` is the board slot for a unit (0 = leftmost, past the end = rightmost).
    PlayCard {
        card: u32,
        target: Option<Target>,
        position: u8,
    },
    /// Attack with own unit `attacker`.
    Attack { attacker: u32, target: Target },
    /// End the turn now.
    EndTurn,
    /// Give up the match.
    Concede,
}

/// Why a game ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// A hero reached 0 health (both at once: a draw).
    HeroDefeated,
    /// A player conceded.
    Conceded,
    /// A player stayed away past the reconnect window.
    Forfeit,
    /// The server ended the game without a result.
    Aborted,
}

/// How a game ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GameResult {
    /// `None` for a draw or an aborted game.
    pub winner: Option<Seat>,
    pub reason: EndReason,
}

impl GameResult {
    /// True when both heroes fell at once.
    pub fn is_draw(&self) -> bool {
        self.winner.is_none() && self.reason == EndReason::HeroDefeated
    }
}

/// What a game starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameSetup {
    /// Decides the first player and both shuffles.
    pub seed: u64,
    /// Seat A's deck, then seat B's.
    pub decks: [crate::catalog::Deck; 2],
    /// Turn length for the timer.
    pub turn_ms: i64,
}
