//! The legal commands of a position, computed from what the player sees ([`PlayerView`]).
//!
//! This is a second statement of the rules, written from the player's side: the bot picks from
//! it, and the property tests check that the engine accepts every command listed here and
//! refuses others, so the two statements keep each other honest.

use crate::catalog::{Catalog, TargetRule};

use super::view::PlayerView;
use super::{BOARD_LIMIT, Command, Seat, Target};

/// Every legal command for the viewer: each affordable card with each legal target (units placed
/// rightmost), each ready unit's attacks, `EndTurn`, and `Concede`. Only `Concede` outside the
/// viewer's turn; nothing once the game is over.
pub fn legal_commands(view: &PlayerView, catalog: &Catalog) -> Vec<Command> {
    let mut out = Vec::new();
    if view.result.is_some() {
        return out;
    }
    if !view.my_turn() {
        out.push(Command::Concede);
        return out;
    }
    let me = view.viewer;
    let board_full = view.you.board.len() >= BOARD_LIMIT;
    let position = view.you.board.len() as u8;
    for card in &view.hand {
        let def = catalog.card(card.card);
        if card.cost > view.you.mana || (def.is_unit() && board_full) {
            continue;
        }
        let targets = match def.effect {
            None => vec![None],
            // Draw and hero effects aim on their own: the command names no target.
            Some(effect) if !effect.target.is_chosen() => vec![None],
            Some(effect) => {
                let chosen = effect_targets(view, me, effect.target);
                if chosen.is_empty() {
                    // Only a unit may be played when its effect has nothing to aim at.
                    if def.is_unit() && effect.target == TargetRule::Unit {
                        vec![None]
                    } else {
                        vec![]
                    }
                } else {
                    chosen.into_iter().map(Some).collect()
                }
            }
        };
        for target in targets {
            out.push(Command::PlayCard {
                card: card.id,
                target,
                position,
            });
        }
    }
    let guards: Vec<u32> = view
        .opponent
        .board
        .iter()
        .filter(|u| u.guard)
        .map(|u| u.id)
        .collect();
    for unit in view.you.board.iter().filter(|u| u.can_attack) {
        if guards.is_empty() {
            for enemy in &view.opponent.board {
                out.push(Command::Attack {
                    attacker: unit.id,
                    target: Target::Unit(enemy.id),
                });
            }
            out.push(Command::Attack {
                attacker: unit.id,
                target: Target::Hero(me.other()),
            });
        } else {
            for &g in &guards {
                out.push(Command::Attack {
                    attacker: unit.id,
                    target: Target::Unit(g),
                });
            }
        }
    }
    out.push(Command::EndTurn);
    out.push(Command::Concede);
    out
}

/// The targets `me` may choose for an effect with this rule; empty for the rules that take no
/// chosen target (draw, implicit heroes).
pub(crate) fn effect_targets(view: &PlayerView, me: Seat, rule: TargetRule) -> Vec<Target> {
    let units = |seat: Seat| {
        view.side(seat)
            .board
            .iter()
            .map(|u| Target::Unit(u.id))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    match rule {
        TargetRule::None
        | TargetRule::EnemyHero
        | TargetRule::FriendlyHero
        | TargetRule::BothHeroes => {}
        TargetRule::Any => {
            out.extend(units(me));
            out.extend(units(me.other()));
            out.push(Target::Hero(me));
            out.push(Target::Hero(me.other()));
        }
        TargetRule::Unit => {
            out.extend(units(me));
            out.extend(units(me.other()));
        }
        TargetRule::Enemy => {
            out.extend(units(me.other()));
            out.push(Target::Hero(me.other()));
        }
        TargetRule::Friendly => {
            out.extend(units(me));
            out.push(Target::Hero(me));
        }
    }
    out
}
