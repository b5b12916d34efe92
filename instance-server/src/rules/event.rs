//! What the game tells the players: one [`Event`] per thing that happened, in order.
//!
//! The engine produces the full event; [`Event::seen_by`] gives the copy one player may see.
//! Only draws hide anything: the opponent learns that a card was drawn, not which.

use super::view::UnitView;
use super::{CardInstance, GameResult, Seat, Target};

/// Something that happened in the game. Sequence numbers are positions in the game's event
/// stream, from 1 ([`super::Game::last_seq`]); redaction never drops an event, so they are the
/// same for both players.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// `player` drew a card: `card` is `None` when hidden from the viewer (the opponent's draw
    /// that was not burned). `burned` when the hand was full and the card was destroyed.
    CardDrawn {
        player: Seat,
        card: Option<CardInstance>,
        burned: bool,
        hand_count: u8,
        deck_count: u8,
    },
    /// `player` played `card` from hand (revealed to both).
    CardPlayed {
        player: Seat,
        card: CardInstance,
        target: Option<Target>,
    },
    /// A unit entered `player`'s board at slot `position`.
    UnitSummoned {
        player: Seat,
        unit: UnitView,
        position: u8,
    },
    /// A unit attacked; the damage follows as [`Event::DamageDealt`].
    AttackPerformed { attacker: u32, target: Target },
    /// `target` took `amount` damage from `source` (a unit, a spell's caster hero, or `None`
    /// for fatigue) and has `health_after` left.
    DamageDealt {
        source: Option<Target>,
        target: Target,
        amount: i16,
        health_after: i16,
    },
    /// `target` regained `amount` health (what was actually restored).
    Healed {
        source: Option<Target>,
        target: Target,
        amount: i16,
        health_after: i16,
    },
    /// A unit died and left `player`'s board.
    UnitDied { player: Seat, unit: u32 },
    /// `player`'s turn `turn` (counted over both players, from 1) began; it ends by timer at
    /// `deadline_ms`. Mana refill and the draw follow.
    TurnStarted {
        player: Seat,
        turn: u16,
        deadline_ms: i64,
    },
    /// `player`'s turn ended, by command or by the timer.
    TurnEnded {
        player: Seat,
        turn: u16,
        timed_out: bool,
    },
    /// `player`'s mana changed (refill or spend).
    ManaChanged {
        player: Seat,
        mana: u8,
        max_mana: u8,
    },
    /// The game is over; always the last event.
    GameOver(GameResult),
}

impl Event {
    /// The event as `viewer` may see it: the opponent's unburned draws lose their card.
    pub fn seen_by(&self, viewer: Seat) -> Event {
        match *self {
            Event::CardDrawn {
                player,
                card: Some(_),
                burned: false,
                hand_count,
                deck_count,
            } if player != viewer => Event::CardDrawn {
                player,
                card: None,
                burned: false,
                hand_count,
                deck_count,
            },
            ref other => other.clone(),
        }
    }
}
