//! A simple bot: plays only legal moves (it picks from [`legal_commands`]), sees only its own
//! [`PlayerView`], and is deterministic for a seed. Used by tests, the bench and the demo.
//!
//! Strategy, one command per call: play the best affordable card (expensive first, spells only
//! where they do something useful: lethal, a kill, healing that heals, a draw that fits the
//! hand), then attack (lethal to the face, free kills, good trades, guards when they are in the
//! way, otherwise the face), then end the turn. A seeded share of choices picks another useful
//! move at random, so games between bots differ from seed to seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{CardKind, Catalog, Effect, EffectKind, TargetRule};
use crate::rules::{Command, HAND_LIMIT, PlayerView, Target, UnitView, legal_commands};

/// Share of choices made at random among the useful moves, by default.
pub const DEFAULT_EXPLORATION: f64 = 0.15;

/// A bot player.
#[derive(Clone, Debug)]
pub struct Bot {
    rng: ChaCha8Rng,
    exploration: f64,
}

impl Bot {
    /// A bot with [`DEFAULT_EXPLORATION`].
    pub fn new(seed: u64) -> Bot {
        Bot::with_exploration(seed, DEFAULT_EXPLORATION)
    }

    /// A bot that picks a random useful move with probability `exploration` (0 = always the
    /// best-scored one).
    pub fn with_exploration(seed: u64, exploration: f64) -> Bot {
        Bot {
            rng: ChaCha8Rng::seed_from_u64(seed),
            exploration: exploration.clamp(0.0, 1.0),
        }
    }

    /// The bot's next command, or `None` when it is not its turn or the game is over. Calling it
    /// again after applying the command continues the turn; it ends with `EndTurn`.
    pub fn choose(&mut self, view: &PlayerView, catalog: &Catalog) -> Option<Command> {
        if !view.my_turn() {
            return None;
        }
        let scored: Vec<(i32, Command)> = legal_commands(view, catalog)
            .into_iter()
            .filter(|c| !matches!(c, Command::Concede | Command::EndTurn))
            .map(|c| (score(view, catalog, &c), c))
            .filter(|(s, _)| *s > 0)
            .collect();
        if scored.is_empty() {
            return Some(Command::EndTurn);
        }
        if self.rng.gen_bool(self.exploration) {
            let i = self.rng.gen_range(0..scored.len());
            return Some(scored[i].1.clone());
        }
        // First best in legal order, so ties resolve the same way every time.
        let mut best = &scored[0];
        for s in &scored[1..] {
            if s.0 > best.0 {
                best = s;
            }
        }
        Some(best.1.clone())
    }
}

/// How much the bot wants `command`; 0 or less means "not worth doing".
fn score(view: &PlayerView, catalog: &Catalog, command: &Command) -> i32 {
    match *command {
        Command::PlayCard { card, target, .. } => {
            let Some(hand_card) = view.hand.iter().find(|c| c.id == card) else {
                return 0;
            };
            let def = catalog.card(hand_card.card);
            let effect = def.effect.map_or(0, |e| effect_value(view, e, target));
            let cost = i32::from(def.cost);
            match def.kind {
                CardKind::Unit {
                    attack,
                    health,
                    guard,
                    charge,
                } => {
                    1000 + cost * 20
                        + i32::from(attack)
                        + i32::from(health)
                        + 2 * i32::from(guard)
                        + 2 * i32::from(charge)
                        + effect
                }
                CardKind::Spell if effect > 0 => 1000 + cost * 20 + effect,
                CardKind::Spell => 0,
            }
        }
        Command::Attack { attacker, target } => {
            let Some((_, a)) = view.unit(attacker) else {
                return 0;
            };
            match target {
                Target::Hero(_) => {
                    let ready: i32 = view
                        .you
                        .board
                        .iter()
                        .filter(|u| u.can_attack)
                        .map(|u| i32::from(u.attack))
                        .sum();
                    if ready >= i32::from(view.opponent.health) {
                        9000
                    } else {
                        100 + i32::from(a.attack)
                    }
                }
                Target::Unit(id) => {
                    let Some((_, t)) = view.unit(id) else {
                        return 0;
                    };
                    let kills = a.attack >= t.health;
                    let survives = t.attack < a.health;
                    match (kills, survives) {
                        (true, true) => 400 + value(t),
                        (true, false) if value(t) >= value(a) => 300 + value(t) - value(a),
                        // Guards must go before anything else can be hit.
                        _ if t.guard => 60 + i32::from(a.attack),
                        _ => 0,
                    }
                }
            }
        }
        Command::EndTurn | Command::Concede => 0,
    }
}

/// What an effect aimed at `target` is worth to the viewer (negative: harmful to them).
fn effect_value(view: &PlayerView, effect: Effect, target: Option<Target>) -> i32 {
    let me = view.viewer;
    let target = match effect.target {
        TargetRule::EnemyHero => Some(Target::Hero(me.other())),
        TargetRule::FriendlyHero => Some(Target::Hero(me)),
        _ => target,
    };
    let amount = i16::from(effect.amount);
    if effect.target == TargetRule::BothHeroes && effect.kind == EffectKind::Damage {
        // Worth it only when it wins, or at least does not lose and hurts them more.
        let (mine, theirs) = (view.you.health, view.opponent.health);
        return match (theirs <= amount, mine <= amount) {
            (true, false) => 10_000,
            (false, false) if mine > theirs + amount => i32::from(amount),
            _ => -100,
        };
    }
    match (effect.kind, target) {
        (EffectKind::Draw, _) => {
            // The card being played leaves the hand first.
            let after = usize::from(view.you.hand_count).saturating_sub(1) + usize::from(effect.amount);
            if after <= HAND_LIMIT {
                4 * i32::from(effect.amount)
            } else {
                -10
            }
        }
        (_, None) => 0,
        (EffectKind::Damage, Some(Target::Hero(s))) if s != me => {
            if amount >= view.opponent.health {
                10_000
            } else {
                i32::from(amount)
            }
        }
        (EffectKind::Damage, Some(Target::Unit(id))) => match view.unit(id) {
            Some((owner, u)) if owner != me => {
                if amount >= u.health {
                    5 + value(u)
                } else {
                    1
                }
            }
            _ => -100,
        },
        (EffectKind::Damage, Some(Target::Hero(_))) => -100,
        (EffectKind::Heal, Some(Target::Hero(s))) if s == me => {
            i32::from(amount.min(view.you.max_health.saturating_sub(view.you.health)))
        }
        (EffectKind::Heal, Some(Target::Unit(id))) => match view.unit(id) {
            Some((owner, u)) if owner == me => i32::from(amount.min(u.max_health.saturating_sub(u.health))),
            _ => -100,
        },
        (EffectKind::Heal, Some(Target::Hero(_))) => -100,
    }
}

fn value(u: &UnitView) -> i32 {
    i32::from(u.attack) * 2 + i32::from(u.health) + if u.guard { 3 } else { 0 }
}
