//! The game state and the transitions: [`Game::new`], [`Game::apply`], [`Game::tick`],
//! [`Game::forfeit`] and [`Game::abort`].
//!
//! Every command is checked by a `check_*` function that only reads the state and returns a plan;
//! the matching `do_*` function then mutates. That split is what guarantees that a refused
//! command changes nothing.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{CardIdx, CardKind, Catalog, DECK_SIZE, Effect, EffectKind, TargetRule};

use super::view::{self, PlayerView};
use super::{
    BOARD_LIMIT, Command, EndReason, ErrorCode, Event, GameResult, GameSetup, HAND_LIMIT, MAX_MANA,
    OPENING_HAND_FIRST, OPENING_HAND_SECOND, STARTING_HEALTH, Seat, Target,
};

/// One copy of a card in a match: its instance id (stable for the whole match) and definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CardInstance {
    pub id: u32,
    pub card: CardIdx,
}

/// A unit on a board.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unit {
    /// The instance id of the card it came from.
    pub id: u32,
    pub card: CardIdx,
    pub attack: i16,
    pub health: i16,
    pub max_health: i16,
    pub guard: bool,
    pub charge: bool,
    /// Played this turn (summoning sickness); cleared at its owner's next turn start.
    pub sick: bool,
    /// Attacked this turn; cleared at its owner's next turn start.
    pub attacked: bool,
}

impl Unit {
    /// May attack when it is its owner's turn.
    pub fn ready(&self) -> bool {
        !self.attacked && (!self.sick || self.charge) && self.attack > 0
    }
}

/// One player's whole state, hidden parts included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Player {
    pub health: i16,
    pub mana: u8,
    pub max_mana: u8,
    /// The top of the deck is the last element.
    pub deck: Vec<CardInstance>,
    pub hand: Vec<CardInstance>,
    pub board: Vec<Unit>,
    /// Played spells and dead units.
    pub graveyard: Vec<CardInstance>,
    /// Cards drawn into a full hand.
    pub burned: Vec<CardInstance>,
    /// Damage of the next draw from an empty deck, minus one.
    pub fatigue: u8,
}

/// The whole state of a match. Read it through [`Game::state`] (tests, the server); players and
/// bots get a [`PlayerView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameState {
    /// Indexed by [`Seat::index`].
    pub players: [Player; 2],
    pub active: Seat,
    pub turn: u16,
    pub deadline_ms: i64,
    pub turn_ms: i64,
    pub result: Option<GameResult>,
    /// Events emitted so far (the sequence number of the last one).
    pub seq: u64,
    /// Seeded at setup; every random choice of the match draws from it, in order. Only the
    /// setup draws today; it stays in the state (and in its equality) so effects with random
    /// outcomes keep replays exact.
    #[allow(dead_code)]
    rng: ChaCha8Rng,
}

/// Why a game could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("the deck of seat {seat:?} was checked by another catalog")]
    DeckFromAnotherCatalog { seat: Seat },
    #[error("turn length {0} ms must be positive")]
    TurnLength(i64),
}

/// One match: the catalog it is played with and its state.
#[derive(Clone, Debug)]
pub struct Game {
    catalog: Arc<Catalog>,
    state: GameState,
}

/// A checked `PlayCard`.
struct PlayPlan {
    hand_pos: usize,
    card: CardInstance,
    target: Option<Target>,
    position: usize,
}

impl Game {
    /// Deals and starts a game at `now_ms`: shuffles, draws opening hands and starts turn 1.
    /// Returns the game and its first events (the draws and the first turn's start).
    pub fn new(
        catalog: Arc<Catalog>,
        setup: GameSetup,
        now_ms: i64,
    ) -> Result<(Game, Vec<Event>), SetupError> {
        for seat in Seat::BOTH {
            if setup.decks[seat.index()].catalog_fingerprint() != catalog.fingerprint() {
                return Err(SetupError::DeckFromAnotherCatalog { seat });
            }
        }
        if setup.turn_ms <= 0 {
            return Err(SetupError::TurnLength(setup.turn_ms));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(setup.seed);
        let first = if rng.r#gen::<bool>() {
            Seat::A
        } else {
            Seat::B
        };
        let players = Seat::BOTH.map(|seat| {
            let mut cards: Vec<CardIdx> = setup.decks[seat.index()].cards().to_vec();
            cards.shuffle(&mut rng);
            // Ids after the shuffle, seat A 1..=20 and seat B 21..=40; the deck is drawn from
            // the end, so the first card drawn gets the lowest id.
            let base = (seat.index() * DECK_SIZE) as u32;
            let n = cards.len() as u32;
            let deck = cards
                .into_iter()
                .enumerate()
                .map(|(i, card)| CardInstance {
                    id: base + n - i as u32,
                    card,
                })
                .collect();
            Player {
                health: STARTING_HEALTH,
                mana: 0,
                max_mana: 0,
                deck,
                hand: Vec::with_capacity(HAND_LIMIT),
                board: Vec::with_capacity(BOARD_LIMIT),
                graveyard: Vec::new(),
                burned: Vec::new(),
                fatigue: 0,
            }
        });
        let mut game = Game {
            catalog,
            state: GameState {
                players,
                active: first,
                turn: 0,
                deadline_ms: now_ms,
                turn_ms: setup.turn_ms,
                result: None,
                seq: 0,
                rng,
            },
        };
        let mut out = Vec::new();
        for (seat, n) in [
            (first, OPENING_HAND_FIRST),
            (first.other(), OPENING_HAND_SECOND),
        ] {
            for _ in 0..n {
                game.draw(seat, &mut out);
            }
        }
        game.start_turn(first, now_ms, &mut out);
        game.state.seq += out.len() as u64;
        Ok((game, out))
    }

    /// Applies `seat`'s command at `now_ms` (the next turn's deadline counts from it) and
    /// returns its events; an illegal command returns its code and changes nothing.
    ///
    /// `apply` does not look at the turn timer: the driver calls [`Game::tick`] first.
    pub fn apply(
        &mut self,
        seat: Seat,
        command: &Command,
        now_ms: i64,
    ) -> Result<Vec<Event>, ErrorCode> {
        let mut out = Vec::new();
        self.apply_into(seat, command, now_ms, &mut out)?;
        Ok(out)
    }

    /// [`Game::apply`] appending to `out` (left as it was on error), to reuse one buffer.
    pub fn apply_into(
        &mut self,
        seat: Seat,
        command: &Command,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), ErrorCode> {
        if self.state.result.is_some() {
            return Err(ErrorCode::GameOver);
        }
        let before = out.len();
        match *command {
            Command::Concede => self.finish(Some(seat.other()), EndReason::Conceded, out),
            _ if seat != self.state.active => return Err(ErrorCode::NotYourTurn),
            Command::EndTurn => self.end_turn(false, now_ms, out),
            Command::PlayCard {
                card,
                target,
                position,
            } => {
                let plan = self.check_play(seat, card, target, position)?;
                self.do_play(seat, plan, out);
            }
            Command::Attack { attacker, target } => {
                let (attacker_pos, target) = self.check_attack(seat, attacker, target)?;
                self.do_attack(seat, attacker_pos, target, out);
            }
        }
        self.state.seq += (out.len() - before) as u64;
        Ok(())
    }

    /// Advances the clock: at or past the deadline the active player's turn ends (`timed_out`)
    /// and the next begins, its deadline counted from `now_ms`. At most one turn ends per call.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Event> {
        let mut out = Vec::new();
        if self.state.result.is_none() && now_ms >= self.state.deadline_ms {
            self.end_turn(true, now_ms, &mut out);
            self.state.seq += out.len() as u64;
        }
        out
    }

    /// Ends the game with `loser` forfeiting (stayed away past the reconnect window). No events
    /// when the game is already over.
    pub fn forfeit(&mut self, loser: Seat) -> Vec<Event> {
        self.end_from_outside(Some(loser.other()), EndReason::Forfeit)
    }

    /// Ends the game without a result (shutdown, a player never joined). No events when the game
    /// is already over.
    pub fn abort(&mut self) -> Vec<Event> {
        self.end_from_outside(None, EndReason::Aborted)
    }

    /// What `viewer` may see now.
    pub fn view(&self, viewer: Seat) -> PlayerView {
        view::build(&self.state, &self.catalog, viewer)
    }

    /// The whole state, hidden information included: for the server and tests, never a player.
    pub fn state(&self) -> &GameState {
        &self.state
    }

    /// The catalog the game is played with.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Set once the game is over.
    pub fn result(&self) -> Option<GameResult> {
        self.state.result
    }

    /// Whose turn it is.
    pub fn active(&self) -> Seat {
        self.state.active
    }

    /// The turn number, from 1.
    pub fn turn(&self) -> u16 {
        self.state.turn
    }

    /// When the current turn ends by timer.
    pub fn deadline_ms(&self) -> i64 {
        self.state.deadline_ms
    }

    /// The sequence number of the last event emitted (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.state.seq
    }

    fn end_from_outside(&mut self, winner: Option<Seat>, reason: EndReason) -> Vec<Event> {
        let mut out = Vec::new();
        if self.state.result.is_none() {
            self.finish(winner, reason, &mut out);
            self.state.seq += out.len() as u64;
        }
        out
    }

    // ---- checks: read only -----------------------------------------------------------------

    fn check_play(
        &self,
        seat: Seat,
        card: u32,
        target: Option<Target>,
        position: u8,
    ) -> Result<PlayPlan, ErrorCode> {
        let p = &self.state.players[seat.index()];
        let hand_pos = p
            .hand
            .iter()
            .position(|c| c.id == card)
            .ok_or(ErrorCode::CardNotInHand)?;
        let instance = p.hand[hand_pos];
        let def = self.catalog.card(instance.card);
        if def.cost > p.mana {
            return Err(ErrorCode::NotEnoughMana);
        }
        if def.is_unit() && p.board.len() >= BOARD_LIMIT {
            return Err(ErrorCode::BoardFull);
        }
        let target = match def.effect {
            None if target.is_some() => return Err(ErrorCode::InvalidTarget),
            None => None,
            Some(effect) => self.check_effect_target(seat, effect.target, target, def.is_unit())?,
        };
        let position = usize::from(position).min(p.board.len());
        Ok(PlayPlan {
            hand_pos,
            card: instance,
            target,
            position,
        })
    }

    /// The effect's resolved target (`None` for draw, or for a unit's effect with no possible
    /// target), or `InvalidTarget`.
    fn check_effect_target(
        &self,
        seat: Seat,
        rule: TargetRule,
        given: Option<Target>,
        from_unit: bool,
    ) -> Result<Option<Target>, ErrorCode> {
        let implicit = |hero: Seat| match given {
            None => Ok(Some(Target::Hero(hero))),
            Some(Target::Hero(s)) if s == hero => Ok(Some(Target::Hero(hero))),
            Some(_) => Err(ErrorCode::InvalidTarget),
        };
        match rule {
            // Both heroes are hit; the command names no target.
            TargetRule::None | TargetRule::BothHeroes => match given {
                None => Ok(None),
                Some(_) => Err(ErrorCode::InvalidTarget),
            },
            TargetRule::EnemyHero => implicit(seat.other()),
            TargetRule::FriendlyHero => implicit(seat),
            TargetRule::Any | TargetRule::Unit | TargetRule::Enemy | TargetRule::Friendly => {
                match given {
                    Some(t) if self.matches_rule(seat, rule, t) => Ok(Some(t)),
                    Some(_) => Err(ErrorCode::InvalidTarget),
                    // Only the unit rule can lack targets (heroes always exist); a unit may then be
                    // played with its effect doing nothing, a spell may not be cast at all.
                    None if from_unit
                        && rule == TargetRule::Unit
                        && self.all_units().next().is_none() =>
                    {
                        Ok(None)
                    }
                    None => Err(ErrorCode::InvalidTarget),
                }
            }
        }
    }

    fn matches_rule(&self, seat: Seat, rule: TargetRule, target: Target) -> bool {
        let owner = match target {
            Target::Hero(s) => {
                return match rule {
                    TargetRule::Any => true,
                    TargetRule::Enemy => s != seat,
                    TargetRule::Friendly => s == seat,
                    _ => false,
                };
            }
            Target::Unit(id) => match self.unit_owner(id) {
                Some(owner) => owner,
                None => return false,
            },
        };
        match rule {
            TargetRule::Any | TargetRule::Unit => true,
            TargetRule::Enemy => owner != seat,
            TargetRule::Friendly => owner == seat,
            _ => false,
        }
    }

    fn check_attack(
        &self,
        seat: Seat,
        attacker: u32,
        target: Target,
    ) -> Result<(usize, Target), ErrorCode> {
        let me = &self.state.players[seat.index()];
        let enemy = &self.state.players[seat.other().index()];
        let attacker_pos = me
            .board
            .iter()
            .position(|u| u.id == attacker)
            .ok_or(ErrorCode::NotYourUnit)?;
        if !me.board[attacker_pos].ready() {
            return Err(ErrorCode::CannotAttack);
        }
        let target_is_guard = match target {
            Target::Hero(s) if s == seat.other() => false,
            Target::Hero(_) => return Err(ErrorCode::InvalidTarget),
            Target::Unit(id) => match enemy.board.iter().find(|u| u.id == id) {
                Some(u) => u.guard,
                None => return Err(ErrorCode::InvalidTarget),
            },
        };
        if !target_is_guard && enemy.board.iter().any(|u| u.guard) {
            return Err(ErrorCode::GuardInTheWay);
        }
        Ok((attacker_pos, target))
    }

    // ---- transitions: run only after a check passed -----------------------------------------

    fn do_play(&mut self, seat: Seat, plan: PlayPlan, out: &mut Vec<Event>) {
        let catalog = Arc::clone(&self.catalog);
        let def = catalog.card(plan.card.card);
        let p = &mut self.state.players[seat.index()];
        p.hand.remove(plan.hand_pos);
        p.mana -= def.cost;
        out.push(Event::CardPlayed {
            player: seat,
            card: plan.card,
            target: plan.target,
        });
        out.push(Event::ManaChanged {
            player: seat,
            mana: p.mana,
            max_mana: p.max_mana,
        });
        let source = match def.kind {
            CardKind::Unit {
                attack,
                health,
                guard,
                charge,
            } => {
                let unit = Unit {
                    id: plan.card.id,
                    card: plan.card.card,
                    attack,
                    health,
                    max_health: health,
                    guard,
                    charge,
                    sick: true,
                    attacked: false,
                };
                out.push(Event::UnitSummoned {
                    player: seat,
                    unit: view::unit_view(&unit, true),
                    position: plan.position as u8,
                });
                p.board.insert(plan.position, unit);
                Target::Unit(plan.card.id)
            }
            CardKind::Spell => {
                p.graveyard.push(plan.card);
                Target::Hero(seat)
            }
        };
        if let Some(effect) = def.effect {
            if effect.target == TargetRule::BothHeroes {
                self.resolve_effect(seat, source, effect, Some(Target::Hero(seat.other())), out);
                self.resolve_effect(seat, source, effect, Some(Target::Hero(seat)), out);
            } else {
                self.resolve_effect(seat, source, effect, plan.target, out);
            }
        }
        self.settle(out);
    }

    /// One effect on one target (`None`: draw, or an aimless unit effect).
    fn resolve_effect(
        &mut self,
        seat: Seat,
        source: Target,
        effect: Effect,
        target: Option<Target>,
        out: &mut Vec<Event>,
    ) {
        match (effect.kind, target) {
            (EffectKind::Damage, Some(target)) => {
                self.damage(Some(source), target, effect.amount.into(), out)
            }
            (EffectKind::Heal, Some(target)) => {
                self.heal(Some(source), target, effect.amount.into(), out)
            }
            (EffectKind::Draw, _) => {
                for _ in 0..effect.amount {
                    self.draw(seat, out);
                }
            }
            // A unit's effect without a possible target does nothing.
            (EffectKind::Damage | EffectKind::Heal, None) => {}
        }
    }

    fn do_attack(&mut self, seat: Seat, attacker_pos: usize, target: Target, out: &mut Vec<Event>) {
        let attacker = &mut self.state.players[seat.index()].board[attacker_pos];
        attacker.attacked = true;
        let (attacker_id, attack) = (attacker.id, attacker.attack);
        out.push(Event::AttackPerformed {
            attacker: attacker_id,
            target,
        });
        // Both damages are read before either is dealt: combat is simultaneous.
        let counter = match target {
            Target::Unit(id) => self.unit(id).map_or(0, |u| u.attack),
            Target::Hero(_) => 0,
        };
        self.damage(Some(Target::Unit(attacker_id)), target, attack, out);
        if counter > 0 {
            self.damage(Some(target), Target::Unit(attacker_id), counter, out);
        }
        self.settle(out);
    }

    fn end_turn(&mut self, timed_out: bool, now_ms: i64, out: &mut Vec<Event>) {
        let seat = self.state.active;
        out.push(Event::TurnEnded {
            player: seat,
            turn: self.state.turn,
            timed_out,
        });
        self.start_turn(seat.other(), now_ms, out);
    }

    fn start_turn(&mut self, seat: Seat, now_ms: i64, out: &mut Vec<Event>) {
        self.state.active = seat;
        self.state.turn = self.state.turn.saturating_add(1);
        self.state.deadline_ms = now_ms.saturating_add(self.state.turn_ms);
        out.push(Event::TurnStarted {
            player: seat,
            turn: self.state.turn,
            deadline_ms: self.state.deadline_ms,
        });
        let p = &mut self.state.players[seat.index()];
        p.max_mana = (p.max_mana + 1).min(MAX_MANA);
        p.mana = p.max_mana;
        for unit in &mut p.board {
            unit.sick = false;
            unit.attacked = false;
        }
        out.push(Event::ManaChanged {
            player: seat,
            mana: p.mana,
            max_mana: p.max_mana,
        });
        self.draw(seat, out);
        self.settle(out);
    }

    /// Draws one card for `seat`: into the hand, burned when the hand is full, or fatigue damage
    /// when the deck is empty.
    fn draw(&mut self, seat: Seat, out: &mut Vec<Event>) {
        let p = &mut self.state.players[seat.index()];
        match p.deck.pop() {
            Some(card) => {
                let burned = p.hand.len() >= HAND_LIMIT;
                if burned {
                    p.burned.push(card);
                } else {
                    p.hand.push(card);
                }
                out.push(Event::CardDrawn {
                    player: seat,
                    card: Some(card),
                    burned,
                    hand_count: p.hand.len() as u8,
                    deck_count: p.deck.len() as u8,
                });
            }
            None => {
                p.fatigue = p.fatigue.saturating_add(1);
                let amount = i16::from(p.fatigue);
                self.damage(None, Target::Hero(seat), amount, out);
            }
        }
    }

    fn damage(
        &mut self,
        source: Option<Target>,
        target: Target,
        amount: i16,
        out: &mut Vec<Event>,
    ) {
        if let Some(health) = self.health_mut(target) {
            *health = (*health - amount).max(0);
            out.push(Event::DamageDealt {
                source,
                target,
                amount,
                health_after: *health,
            });
        }
    }

    fn heal(&mut self, source: Option<Target>, target: Target, amount: i16, out: &mut Vec<Event>) {
        let max = match target {
            Target::Hero(_) => STARTING_HEALTH,
            Target::Unit(id) => match self.unit(id) {
                Some(u) => u.max_health,
                None => return,
            },
        };
        if let Some(health) = self.health_mut(target) {
            let healed = amount.min(max - *health).max(0);
            *health += healed;
            out.push(Event::Healed {
                source,
                target,
                amount: healed,
                health_after: *health,
            });
        }
    }

    /// Removes dead units (the active player's board first, each left to right) and ends the
    /// game when a hero fell.
    fn settle(&mut self, out: &mut Vec<Event>) {
        let active = self.state.active;
        for seat in [active, active.other()] {
            let p = &mut self.state.players[seat.index()];
            if p.board.iter().any(|u| u.health <= 0) {
                let mut i = 0;
                while i < p.board.len() {
                    if p.board[i].health <= 0 {
                        let unit = p.board.remove(i);
                        p.graveyard.push(CardInstance {
                            id: unit.id,
                            card: unit.card,
                        });
                        out.push(Event::UnitDied {
                            player: seat,
                            unit: unit.id,
                        });
                    } else {
                        i += 1;
                    }
                }
            }
        }
        if self.state.result.is_some() {
            return;
        }
        let fallen = Seat::BOTH.map(|s| self.state.players[s.index()].health <= 0);
        match fallen {
            [true, true] => self.finish(None, EndReason::HeroDefeated, out),
            [true, false] => self.finish(Some(Seat::B), EndReason::HeroDefeated, out),
            [false, true] => self.finish(Some(Seat::A), EndReason::HeroDefeated, out),
            [false, false] => {}
        }
    }

    fn finish(&mut self, winner: Option<Seat>, reason: EndReason, out: &mut Vec<Event>) {
        let result = GameResult { winner, reason };
        self.state.result = Some(result);
        out.push(Event::GameOver(result));
    }

    // ---- lookups ----------------------------------------------------------------------------

    fn all_units(&self) -> impl Iterator<Item = &Unit> {
        self.state.players.iter().flat_map(|p| p.board.iter())
    }

    fn unit(&self, id: u32) -> Option<&Unit> {
        self.all_units().find(|u| u.id == id)
    }

    fn unit_owner(&self, id: u32) -> Option<Seat> {
        Seat::BOTH.into_iter().find(|s| {
            self.state.players[s.index()]
                .board
                .iter()
                .any(|u| u.id == id)
        })
    }

    fn health_mut(&mut self, target: Target) -> Option<&mut i16> {
        match target {
            Target::Hero(s) => Some(&mut self.state.players[s.index()].health),
            Target::Unit(id) => self
                .state
                .players
                .iter_mut()
                .flat_map(|p| p.board.iter_mut())
                .find(|u| u.id == id)
                .map(|u| &mut u.health),
        }
    }

    /// A game in any state, for the rules tests' setups.
    #[cfg(test)]
    pub(super) fn for_test(
        catalog: Arc<Catalog>,
        players: [Player; 2],
        active: Seat,
        turn: u16,
        deadline_ms: i64,
        turn_ms: i64,
    ) -> Game {
        let state = GameState {
            players,
            active,
            turn,
            deadline_ms,
            turn_ms,
            result: None,
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(0),
        };
        Game { catalog, state }
    }
}
