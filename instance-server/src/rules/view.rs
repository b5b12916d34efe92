//! What one player may see of the game: [`PlayerView`], built by [`super::Game::view`].
//!
//! It holds the viewer's own hand and, for both sides, hero, mana, board and the sizes of hand
//! and deck: never the opponent's hand cards and never any deck order. It is all the bot uses, so
//! the bot plays by the same information as a human.

use crate::catalog::{CardIdx, Catalog};

use super::game::{GameState, Unit};
use super::{GameResult, STARTING_HEALTH, Seat};

/// The game as one player sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlayerView {
    pub viewer: Seat,
    /// Sequence number of the last event included (events after it change this view).
    pub last_seq: u64,
    /// Turn number, from 1, counted over both players.
    pub turn: u16,
    /// Whose turn it is.
    pub active: Seat,
    /// When the current turn ends by timer.
    pub deadline_ms: i64,
    pub you: SideView,
    pub opponent: SideView,
    /// The viewer's hand, left to right (in draw order).
    pub hand: Vec<HandCardView>,
    /// Set once the game is over.
    pub result: Option<GameResult>,
}

impl PlayerView {
    /// The side of `seat`.
    pub fn side(&self, seat: Seat) -> &SideView {
        if seat == self.viewer {
            &self.you
        } else {
            &self.opponent
        }
    }

    /// True when the viewer may act now (their turn, game not over).
    pub fn my_turn(&self) -> bool {
        self.result.is_none() && self.active == self.viewer
    }

    /// The unit with this id on either board, with its owner.
    pub fn unit(&self, id: u32) -> Option<(Seat, &UnitView)> {
        [&self.you, &self.opponent].into_iter().find_map(|side| {
            side.board
                .iter()
                .find(|u| u.id == id)
                .map(|u| (side.seat, u))
        })
    }
}

/// One player's public state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SideView {
    pub seat: Seat,
    pub health: i16,
    pub max_health: i16,
    pub mana: u8,
    pub max_mana: u8,
    pub hand_count: u8,
    pub deck_count: u8,
    /// Left to right.
    pub board: Vec<UnitView>,
}

/// A unit on a board.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnitView {
    pub id: u32,
    pub card: CardIdx,
    pub attack: i16,
    pub health: i16,
    pub max_health: i16,
    pub guard: bool,
    pub charge: bool,
    /// True when the unit may attack now: its owner's turn, ready, not attacked, attack > 0.
    pub can_attack: bool,
}

/// A card in the viewer's hand.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HandCardView {
    pub id: u32,
    pub card: CardIdx,
    pub cost: u8,
    /// Printed stats of a unit card; 0 for spells.
    pub attack: i16,
    pub health: i16,
}

pub(super) fn build(state: &GameState, catalog: &Catalog, viewer: Seat) -> PlayerView {
    let side = |seat: Seat| {
        let p = &state.players[seat.index()];
        let active = state.active == seat && state.result.is_none();
        SideView {
            seat,
            health: p.health,
            max_health: STARTING_HEALTH,
            mana: p.mana,
            max_mana: p.max_mana,
            // Bounded by HAND_LIMIT and DECK_SIZE.
            hand_count: u8::try_from(p.hand.len()).unwrap_or(u8::MAX),
            deck_count: u8::try_from(p.deck.len()).unwrap_or(u8::MAX),
            board: p.board.iter().map(|u| unit_view(u, active)).collect(),
        }
    };
    let hand = state.players[viewer.index()]
        .hand
        .iter()
        .map(|c| {
            let def = catalog.card(c.card);
            let (attack, health) = def.stats();
            HandCardView {
                id: c.id,
                card: c.card,
                cost: def.cost,
                attack,
                health,
            }
        })
        .collect();
    PlayerView {
        viewer,
        last_seq: state.seq,
        turn: state.turn,
        active: state.active,
        deadline_ms: state.deadline_ms,
        you: side(viewer),
        opponent: side(viewer.other()),
        hand,
        result: state.result,
    }
}

/// The unit as both players see it; `owners_turn` when its owner is the active player.
pub(super) fn unit_view(u: &Unit, owners_turn: bool) -> UnitView {
    UnitView {
        id: u.id,
        card: u.card,
        attack: u.attack,
        health: u.health,
        max_health: u.max_health,
        guard: u.guard,
        charge: u.charge,
        can_attack: owners_turn && u.ready(),
    }
}
