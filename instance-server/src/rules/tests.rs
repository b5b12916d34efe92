//! Rules tests: every rule and every illegal command, through one data-driven [`check`] that
//! builds a position from a [`Setup`], applies one command and compares the events (or the error
//! code, and that the state did not change at all).
//!
//! Ids in a setup are fixed so expectations can name them: seat A's hand cards are 1, 2, …, its
//! board units 11, 12, …, its deck cards 21, 22, … (the last is the top); seat B's are the same
//! plus 100.

use std::sync::{Arc, LazyLock};

use crate::catalog::{
    CardDef, CardIdx, CardKind, Catalog, DeckList, Effect, EffectKind, Rarity, TargetRule,
};

use super::game::{CardInstance, Game, Player, Unit};
use super::view::UnitView;
use super::{
    BOARD_LIMIT, Command, EndReason, ErrorCode, Event, GameResult, GameSetup, HAND_LIMIT,
    STARTING_HEALTH, Seat, Target,
};

use Seat::{A, B};

const NOW: i64 = 1_000_000;
/// When commands in [`check`] happen.
const CMD_AT: i64 = NOW + 1_000;
const TURN_MS: i64 = 60_000;

static CATALOG: LazyLock<Arc<Catalog>> = LazyLock::new(|| Arc::new(test_catalog()));

/// Cards named after what they do, so each test reads on its own.
fn test_catalog() -> Catalog {
    let unit = |id: &str,
                cost: u8,
                attack: i16,
                health: i16,
                guard: bool,
                charge: bool,
                effect: Option<Effect>| CardDef {
        id: id.to_owned(),
        name: id.to_owned(),
        cost,
        kind: CardKind::Unit {
            attack,
            health,
            guard,
            charge,
        },
        effect,
        rarity: Rarity::Common,
        text: String::new(),
    };
    let spell = |id: &str, cost: u8, kind: EffectKind, amount: u8, target: TargetRule| CardDef {
        id: id.to_owned(),
        name: id.to_owned(),
        cost,
        kind: CardKind::Spell,
        effect: Some(Effect {
            kind,
            amount,
            target,
        }),
        rarity: Rarity::Common,
        text: String::new(),
    };
    let fx = |kind, amount, target| {
        Some(Effect {
            kind,
            amount,
            target,
        })
    };
    use EffectKind::{Damage, Draw, Heal};
    let cards = vec![
        unit("rat", 1, 1, 1, false, false, None),
        unit("grunt", 2, 2, 3, false, false, None),
        unit("wall", 2, 1, 5, true, false, None),
        unit("raider", 3, 3, 2, false, true, None),
        unit("ogre", 4, 5, 5, false, false, None),
        unit("pacifist", 1, 0, 3, false, false, None),
        unit(
            "zapper",
            2,
            2,
            2,
            false,
            false,
            fx(Damage, 1, TargetRule::Any),
        ),
        unit(
            "sniper",
            3,
            2,
            2,
            false,
            false,
            fx(Damage, 2, TargetRule::Unit),
        ),
        unit(
            "cleric",
            2,
            1,
            3,
            false,
            false,
            fx(Heal, 3, TargetRule::FriendlyHero),
        ),
        unit(
            "scholar",
            2,
            1,
            1,
            false,
            false,
            fx(Draw, 1, TargetRule::None),
        ),
        spell("bolt", 1, Damage, 3, TargetRule::Any),
        spell("smite", 1, Damage, 4, TargetRule::Unit),
        spell("zap", 1, Damage, 2, TargetRule::Enemy),
        spell("mend", 1, Heal, 5, TargetRule::Friendly),
        spell("potion", 1, Heal, 4, TargetRule::FriendlyHero),
        spell("bomb", 1, Damage, 3, TargetRule::EnemyHero),
        spell("insight", 1, Draw, 2, TargetRule::None),
        spell("cataclysm", 1, Damage, 5, TargetRule::BothHeroes),
        spell("meteor", 10, Damage, 10, TargetRule::Any),
    ];
    let deck = DeckList {
        id: "mixed".into(),
        name: "Mixed".into(),
        description: String::new(),
        cards: [
            "rat", "grunt", "wall", "raider", "ogre", "zapper", "sniper", "bolt", "mend", "insight",
        ]
        .iter()
        .map(|c| ((*c).to_owned(), 2))
        .collect(),
    };
    match Catalog::new(cards, vec![deck], vec![]) {
        Ok(c) => c,
        Err(e) => panic!("test catalog: {e}"),
    }
}

fn idx(card: &str) -> CardIdx {
    CATALOG
        .lookup(card)
        .unwrap_or_else(|| panic!("no test card {card}"))
}

// ---- setups ---------------------------------------------------------------------------------

#[derive(Clone)]
struct Setup {
    active: Seat,
    turn: u16,
    sides: [SideSetup; 2],
}

#[derive(Clone)]
struct SideSetup {
    health: i16,
    mana: u8,
    max_mana: u8,
    hand: Vec<&'static str>,
    board: Vec<U>,
    /// The last entry is the top.
    deck: Vec<&'static str>,
    fatigue: u8,
}

/// A unit in a setup: ready unless marked.
#[derive(Clone)]
struct U {
    card: &'static str,
    sick: bool,
    attacked: bool,
    damage: i16,
}

fn u(card: &'static str) -> U {
    U {
        card,
        sick: false,
        attacked: false,
        damage: 0,
    }
}

impl U {
    fn sick(mut self) -> U {
        self.sick = true;
        self
    }
    fn attacked(mut self) -> U {
        self.attacked = true;
        self
    }
    fn hurt(mut self, damage: i16) -> U {
        self.damage = damage;
        self
    }
}

fn hand_id(seat: Seat, i: usize) -> u32 {
    1 + i as u32 + 100 * seat.index() as u32
}
fn board_id(seat: Seat, i: usize) -> u32 {
    11 + i as u32 + 100 * seat.index() as u32
}
fn deck_id(seat: Seat, i: usize) -> u32 {
    21 + i as u32 + 100 * seat.index() as u32
}

/// Seat A to act on turn 5 with 5 of 5 mana; both heroes at 30; three rats in each deck.
fn setup() -> Setup {
    let side = SideSetup {
        health: STARTING_HEALTH,
        mana: 5,
        max_mana: 5,
        hand: vec![],
        board: vec![],
        deck: vec!["rat", "rat", "rat"],
        fatigue: 0,
    };
    Setup {
        active: A,
        turn: 5,
        sides: [side.clone(), side],
    }
}

impl Setup {
    fn side(&mut self, seat: Seat) -> &mut SideSetup {
        &mut self.sides[seat.index()]
    }
    fn hand(mut self, seat: Seat, cards: &[&'static str]) -> Setup {
        self.side(seat).hand = cards.to_vec();
        self
    }
    fn board(mut self, seat: Seat, units: Vec<U>) -> Setup {
        self.side(seat).board = units;
        self
    }
    fn deck(mut self, seat: Seat, cards: &[&'static str]) -> Setup {
        self.side(seat).deck = cards.to_vec();
        self
    }
    fn mana(mut self, seat: Seat, mana: u8, max_mana: u8) -> Setup {
        let s = self.side(seat);
        s.mana = mana;
        s.max_mana = max_mana;
        self
    }
    fn health(mut self, seat: Seat, health: i16) -> Setup {
        self.side(seat).health = health;
        self
    }

    fn build(&self) -> Game {
        let players = Seat::BOTH.map(|seat| {
            let s = &self.sides[seat.index()];
            let inst = |id: u32, card: &str| CardInstance {
                id,
                card: idx(card),
            };
            Player {
                health: s.health,
                mana: s.mana,
                max_mana: s.max_mana,
                deck: s
                    .deck
                    .iter()
                    .enumerate()
                    .map(|(i, c)| inst(deck_id(seat, i), c))
                    .collect(),
                hand: s
                    .hand
                    .iter()
                    .enumerate()
                    .map(|(i, c)| inst(hand_id(seat, i), c))
                    .collect(),
                board: s
                    .board
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| {
                        let (attack, health, guard, charge) =
                            match CATALOG.card(idx(spec.card)).kind {
                                CardKind::Unit {
                                    attack,
                                    health,
                                    guard,
                                    charge,
                                } => (attack, health, guard, charge),
                                CardKind::Spell => panic!("{} is not a unit", spec.card),
                            };
                        Unit {
                            id: board_id(seat, i),
                            card: idx(spec.card),
                            attack,
                            health: health - spec.damage,
                            max_health: health,
                            guard,
                            charge,
                            sick: spec.sick,
                            attacked: spec.attacked,
                        }
                    })
                    .collect(),
                graveyard: vec![],
                burned: vec![],
                fatigue: s.fatigue,
            }
        });
        Game::for_test(
            Arc::clone(&CATALOG),
            players,
            self.active,
            self.turn,
            NOW + TURN_MS,
            TURN_MS,
        )
    }
}

// ---- the check helper -----------------------------------------------------------------------

enum Expect {
    Events(Vec<Event>),
    Refused(ErrorCode),
}
use Expect::{Events, Refused};

/// Builds `setup`, applies `seat`'s `command` at [`CMD_AT`] and checks the outcome: the exact
/// events, or the error code with the whole state (RNG and sequence number included) unchanged.
/// Returns the game afterwards for extra assertions.
#[track_caller]
fn check(name: &str, setup: &Setup, seat: Seat, command: Command, expect: Expect) -> Game {
    let mut game = setup.build();
    let before = game.state().clone();
    let got = game.apply(seat, &command, CMD_AT);
    match expect {
        Events(events) => {
            assert_eq!(got.as_ref(), Ok(&events), "{name}: {command:?}");
            assert_eq!(
                game.last_seq(),
                before.seq + events.len() as u64,
                "{name}: sequence numbers"
            );
        }
        Refused(code) => {
            assert_eq!(got, Err(code), "{name}: {command:?}");
            assert!(
                game.state() == &before,
                "{name}: a refused command changed the state"
            );
        }
    }
    game
}

fn play(card: u32, target: Option<Target>) -> Command {
    Command::PlayCard {
        card,
        target,
        position: u8::MAX,
    }
}
fn attack(attacker: u32, target: Target) -> Command {
    Command::Attack { attacker, target }
}
fn hero(seat: Seat) -> Target {
    Target::Hero(seat)
}
fn unit(id: u32) -> Target {
    Target::Unit(id)
}

fn played(player: Seat, id: u32, card: &str, target: Option<Target>) -> Event {
    Event::CardPlayed {
        player,
        card: CardInstance {
            id,
            card: idx(card),
        },
        target,
    }
}
fn mana(player: Seat, mana: u8, max_mana: u8) -> Event {
    Event::ManaChanged {
        player,
        mana,
        max_mana,
    }
}
fn summoned(player: Seat, id: u32, card: &str, position: u8) -> Event {
    let (attack, health, guard, charge) = match CATALOG.card(idx(card)).kind {
        CardKind::Unit {
            attack,
            health,
            guard,
            charge,
        } => (attack, health, guard, charge),
        CardKind::Spell => panic!("{card} is not a unit"),
    };
    let unit = UnitView {
        id,
        card: idx(card),
        attack,
        health,
        max_health: health,
        guard,
        charge,
        can_attack: charge && attack > 0,
    };
    Event::UnitSummoned {
        player,
        unit,
        position,
    }
}
fn dmg(source: Option<Target>, target: Target, amount: i16, health_after: i16) -> Event {
    Event::DamageDealt {
        source,
        target,
        amount,
        health_after,
    }
}
fn healed(source: Option<Target>, target: Target, amount: i16, health_after: i16) -> Event {
    Event::Healed {
        source,
        target,
        amount,
        health_after,
    }
}
fn died(player: Seat, unit: u32) -> Event {
    Event::UnitDied { player, unit }
}
fn drawn(player: Seat, id: u32, card: &str, burned: bool, hand_count: u8, deck_count: u8) -> Event {
    Event::CardDrawn {
        player,
        card: Some(CardInstance {
            id,
            card: idx(card),
        }),
        burned,
        hand_count,
        deck_count,
    }
}
fn performed(attacker: u32, target: Target) -> Event {
    Event::AttackPerformed { attacker, target }
}
fn over(winner: Option<Seat>, reason: EndReason) -> Event {
    Event::GameOver(GameResult { winner, reason })
}

// ---- playing cards --------------------------------------------------------------------------

#[test]
fn playing_a_unit_pays_mana_and_summons_it_sick() {
    let s = setup().hand(A, &["grunt"]);
    let game = check(
        "unit",
        &s,
        A,
        play(1, None),
        Events(vec![
            played(A, 1, "grunt", None),
            mana(A, 3, 5),
            summoned(A, 1, "grunt", 0),
        ]),
    );
    let view = game.view(A);
    assert_eq!(view.you.board.len(), 1);
    assert!(!view.you.board[0].can_attack, "summoning sickness");
    assert!(view.hand.is_empty());

    let s = setup().hand(A, &["raider"]);
    let game = check(
        "charge",
        &s,
        A,
        play(1, None),
        Events(vec![
            played(A, 1, "raider", None),
            mana(A, 2, 5),
            summoned(A, 1, "raider", 0),
        ]),
    );
    assert!(
        game.view(A).you.board[0].can_attack,
        "charge attacks the turn it is played"
    );
}

#[test]
fn units_go_to_the_chosen_slot_or_rightmost() {
    let s = setup()
        .hand(A, &["grunt"])
        .board(A, vec![u("rat"), u("rat")]);
    for (position, slot, order) in [
        (0u8, 0u8, [1, 11, 12]),
        (1, 1, [11, 1, 12]),
        (2, 2, [11, 12, 1]),
        (200, 2, [11, 12, 1]),
    ] {
        let cmd = Command::PlayCard {
            card: 1,
            target: None,
            position,
        };
        let game = check(
            "slot",
            &s,
            A,
            cmd,
            Events(vec![
                played(A, 1, "grunt", None),
                mana(A, 3, 5),
                summoned(A, 1, "grunt", slot),
            ]),
        );
        let ids: Vec<u32> = game.view(A).you.board.iter().map(|u| u.id).collect();
        assert_eq!(ids, order, "position {position}");
    }
}

#[test]
fn spells_resolve_their_effects() {
    let base = setup()
        .board(B, vec![u("grunt"), u("wall")])
        .board(A, vec![u("grunt").hurt(2)]);
    let cases: Vec<(&str, Setup, Command, Vec<Event>)> = vec![
        (
            "damage kills a unit",
            base.clone().hand(A, &["bolt"]),
            play(1, Some(unit(101 + 10))),
            vec![
                played(A, 1, "bolt", Some(unit(111))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), unit(111), 3, 0),
                died(B, 111),
            ],
        ),
        (
            "damage to the enemy hero, past a guard",
            base.clone().hand(A, &["bolt"]),
            play(1, Some(hero(B))),
            vec![
                played(A, 1, "bolt", Some(hero(B))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(B), 3, 27),
            ],
        ),
        (
            "'any' includes the own hero",
            base.clone().hand(A, &["bolt"]),
            play(1, Some(hero(A))),
            vec![
                played(A, 1, "bolt", Some(hero(A))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(A), 3, 27),
            ],
        ),
        (
            "damage that does not kill",
            base.clone().hand(A, &["zap"]),
            play(1, Some(unit(112))),
            vec![
                played(A, 1, "zap", Some(unit(112))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), unit(112), 2, 3),
            ],
        ),
        (
            "heal stops at maximum health",
            base.clone().hand(A, &["mend"]),
            play(1, Some(unit(11))),
            vec![
                played(A, 1, "mend", Some(unit(11))),
                mana(A, 4, 5),
                healed(Some(hero(A)), unit(11), 2, 3),
            ],
        ),
        (
            "implicit friendly hero heal",
            base.clone().hand(A, &["potion"]).health(A, 28),
            play(1, None),
            vec![
                played(A, 1, "potion", Some(hero(A))),
                mana(A, 4, 5),
                healed(Some(hero(A)), hero(A), 2, 30),
            ],
        ),
        (
            "implicit hero named explicitly",
            base.clone().hand(A, &["potion"]).health(A, 20),
            play(1, Some(hero(A))),
            vec![
                played(A, 1, "potion", Some(hero(A))),
                mana(A, 4, 5),
                healed(Some(hero(A)), hero(A), 4, 24),
            ],
        ),
        (
            "implicit enemy hero damage",
            base.clone().hand(A, &["bomb"]),
            play(1, None),
            vec![
                played(A, 1, "bomb", Some(hero(B))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(B), 3, 27),
            ],
        ),
        (
            "draw takes the top cards",
            base.clone()
                .hand(A, &["insight"])
                .deck(A, &["rat", "grunt"]),
            play(1, None),
            vec![
                played(A, 1, "insight", None),
                mana(A, 4, 5),
                drawn(A, 22, "grunt", false, 1, 1),
                drawn(A, 21, "rat", false, 2, 0),
            ],
        ),
        (
            "drawing into a full hand burns",
            base.clone()
                .hand(
                    A,
                    &[
                        "insight", "rat", "rat", "rat", "rat", "rat", "rat", "rat", "rat", "rat",
                    ],
                )
                .deck(A, &["rat", "grunt"]),
            play(1, None),
            vec![
                played(A, 1, "insight", None),
                mana(A, 4, 5),
                drawn(A, 22, "grunt", false, 10, 1),
                drawn(A, 21, "rat", true, 10, 0),
            ],
        ),
        (
            "drawing from an empty deck is fatigue, growing",
            base.clone().hand(A, &["insight"]).deck(A, &[]),
            play(1, None),
            vec![
                played(A, 1, "insight", None),
                mana(A, 4, 5),
                dmg(None, hero(A), 1, 29),
                dmg(None, hero(A), 2, 27),
            ],
        ),
        (
            "both heroes hit, enemy first",
            base.clone().hand(A, &["cataclysm"]),
            play(1, None),
            vec![
                played(A, 1, "cataclysm", None),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(B), 5, 25),
                dmg(Some(hero(A)), hero(A), 5, 25),
            ],
        ),
    ];
    for (name, s, cmd, events) in cases {
        let game = check(name, &s, A, cmd, Events(events));
        let p = &game.state().players[A.index()];
        assert_eq!(
            p.graveyard.last().map(|c| c.id),
            Some(1),
            "{name}: the spell goes to the graveyard"
        );
    }
}

#[test]
fn units_with_effects_resolve_them_after_entering() {
    let cases: Vec<(&str, Setup, Command, Vec<Event>)> = vec![
        (
            "damage from the new unit",
            setup().hand(A, &["zapper"]),
            play(1, Some(hero(B))),
            vec![
                played(A, 1, "zapper", Some(hero(B))),
                mana(A, 3, 5),
                summoned(A, 1, "zapper", 0),
                dmg(Some(unit(1)), hero(B), 1, 29),
            ],
        ),
        (
            "a unit-rule effect with no unit anywhere does nothing",
            setup().hand(A, &["sniper"]),
            play(1, None),
            vec![
                played(A, 1, "sniper", None),
                mana(A, 2, 5),
                summoned(A, 1, "sniper", 0),
            ],
        ),
        (
            "draw on play",
            setup().hand(A, &["scholar"]).deck(A, &["ogre"]),
            play(1, None),
            vec![
                played(A, 1, "scholar", None),
                mana(A, 3, 5),
                summoned(A, 1, "scholar", 0),
                drawn(A, 21, "ogre", false, 1, 0),
            ],
        ),
        (
            "implicit hero heal on play",
            setup().hand(A, &["cleric"]).health(A, 10),
            play(1, None),
            vec![
                played(A, 1, "cleric", Some(hero(A))),
                mana(A, 3, 5),
                summoned(A, 1, "cleric", 0),
                healed(Some(unit(1)), hero(A), 3, 13),
            ],
        ),
    ];
    for (name, s, cmd, events) in cases {
        check(name, &s, A, cmd, Events(events));
    }
}

// ---- illegal commands -----------------------------------------------------------------------

#[test]
fn illegal_commands_are_refused_and_change_nothing() {
    use ErrorCode::*;
    let base = setup()
        .hand(
            A,
            &[
                "grunt", "meteor", "smite", "zap", "mend", "potion", "rat", "sniper", "bomb",
                "insight",
            ],
        )
        .hand(B, &["grunt"])
        .board(
            A,
            vec![
                u("grunt"),
                u("grunt").sick(),
                u("grunt").attacked(),
                u("pacifist"),
                u("raider").sick(),
            ],
        )
        .board(B, vec![u("grunt"), u("rat")]);
    let guarded = base.clone().board(B, vec![u("grunt"), u("wall")]);
    let full = base.clone().board(A, vec![u("rat"); BOARD_LIMIT]);
    let empty_boards = base.clone().board(A, vec![]).board(B, vec![]);
    let cases: Vec<(&str, &Setup, Seat, Command, ErrorCode)> = vec![
        // Turn order.
        ("play out of turn", &base, B, play(101, None), NotYourTurn),
        (
            "attack out of turn",
            &base,
            B,
            attack(111, hero(A)),
            NotYourTurn,
        ),
        (
            "end the opponent's turn",
            &base,
            B,
            Command::EndTurn,
            NotYourTurn,
        ),
        // Playing cards.
        ("card not in hand", &base, A, play(999, None), CardNotInHand),
        (
            "the opponent's hand card",
            &base,
            A,
            play(101, None),
            CardNotInHand,
        ),
        (
            "a unit on the board is not in hand",
            &base,
            A,
            play(11, None),
            CardNotInHand,
        ),
        (
            "not enough mana",
            &base,
            A,
            play(2, Some(hero(B))),
            NotEnoughMana,
        ),
        ("board full", &full, A, play(1, None), BoardFull),
        (
            "target for a card without effect",
            &base,
            A,
            play(1, Some(hero(B))),
            InvalidTarget,
        ),
        (
            "unit rule aimed at a hero",
            &base,
            A,
            play(3, Some(hero(B))),
            InvalidTarget,
        ),
        (
            "chosen target missing",
            &base,
            A,
            play(3, None),
            InvalidTarget,
        ),
        (
            "unit that does not exist",
            &base,
            A,
            play(3, Some(unit(999))),
            InvalidTarget,
        ),
        (
            "spell with no possible target",
            &empty_boards,
            A,
            play(3, None),
            InvalidTarget,
        ),
        (
            "enemy rule aimed at an own unit",
            &base,
            A,
            play(4, Some(unit(11))),
            InvalidTarget,
        ),
        (
            "enemy rule aimed at the own hero",
            &base,
            A,
            play(4, Some(hero(A))),
            InvalidTarget,
        ),
        (
            "friendly rule aimed at the enemy",
            &base,
            A,
            play(5, Some(hero(B))),
            InvalidTarget,
        ),
        (
            "friendly hero rule aimed at the enemy hero",
            &base,
            A,
            play(6, Some(hero(B))),
            InvalidTarget,
        ),
        (
            "enemy hero rule aimed at the own hero",
            &base,
            A,
            play(9, Some(hero(A))),
            InvalidTarget,
        ),
        (
            "enemy hero rule aimed at a unit",
            &base,
            A,
            play(9, Some(unit(111))),
            InvalidTarget,
        ),
        (
            "draw given a target",
            &base,
            A,
            play(10, Some(hero(A))),
            InvalidTarget,
        ),
        (
            "unit effect missing its target while units exist",
            &base,
            A,
            play(8, None),
            InvalidTarget,
        ),
        // Attacks.
        (
            "attacker does not exist",
            &base,
            A,
            attack(999, hero(B)),
            NotYourUnit,
        ),
        (
            "attacker is the opponent's",
            &base,
            A,
            attack(111, hero(B)),
            NotYourUnit,
        ),
        (
            "summoning sickness",
            &base,
            A,
            attack(12, hero(B)),
            CannotAttack,
        ),
        (
            "already attacked",
            &base,
            A,
            attack(13, hero(B)),
            CannotAttack,
        ),
        ("no attack", &base, A, attack(14, hero(B)), CannotAttack),
        (
            "own unit as target",
            &base,
            A,
            attack(11, unit(12)),
            InvalidTarget,
        ),
        (
            "own hero as target",
            &base,
            A,
            attack(11, hero(A)),
            InvalidTarget,
        ),
        (
            "target does not exist",
            &base,
            A,
            attack(11, unit(999)),
            InvalidTarget,
        ),
        (
            "hero behind a guard",
            &guarded,
            A,
            attack(11, hero(B)),
            GuardInTheWay,
        ),
        (
            "unit behind a guard",
            &guarded,
            A,
            attack(11, unit(111)),
            GuardInTheWay,
        ),
    ];
    for (name, s, seat, cmd, code) in cases {
        check(name, s, seat, cmd, Refused(code));
    }
}

#[test]
fn nothing_but_errors_after_the_game_is_over() {
    let mut game = setup()
        .hand(A, &["grunt"])
        .board(A, vec![u("grunt")])
        .build();
    assert_eq!(
        game.apply(B, &Command::Concede, CMD_AT),
        Ok(vec![over(Some(A), EndReason::Conceded)])
    );
    let before = game.state().clone();
    for (seat, cmd) in [
        (A, play(1, None)),
        (A, attack(11, hero(B))),
        (A, Command::EndTurn),
        (A, Command::Concede),
        (B, Command::Concede),
    ] {
        assert_eq!(
            game.apply(seat, &cmd, CMD_AT),
            Err(ErrorCode::GameOver),
            "{cmd:?}"
        );
    }
    assert!(game.tick(NOW + 10 * TURN_MS).is_empty());
    assert!(game.forfeit(A).is_empty());
    assert!(game.abort().is_empty());
    assert!(game.state() == &before);
}

// ---- attacks --------------------------------------------------------------------------------

#[test]
fn attacks_deal_damage_both_ways() {
    let cases: Vec<(&str, Setup, Command, Vec<Event>)> = vec![
        (
            "the hero",
            setup().board(A, vec![u("grunt")]),
            attack(11, hero(B)),
            vec![performed(11, hero(B)), dmg(Some(unit(11)), hero(B), 2, 28)],
        ),
        (
            "both survive",
            setup()
                .board(A, vec![u("grunt")])
                .board(B, vec![u("grunt")]),
            attack(11, unit(111)),
            vec![
                performed(11, unit(111)),
                dmg(Some(unit(11)), unit(111), 2, 1),
                dmg(Some(unit(111)), unit(11), 2, 1),
            ],
        ),
        (
            "the defender dies, health shows 0",
            setup().board(A, vec![u("ogre")]).board(B, vec![u("grunt")]),
            attack(11, unit(111)),
            vec![
                performed(11, unit(111)),
                dmg(Some(unit(11)), unit(111), 5, 0),
                dmg(Some(unit(111)), unit(11), 2, 3),
                died(B, 111),
            ],
        ),
        (
            "both die, the attacker's side first",
            setup().board(A, vec![u("rat")]).board(B, vec![u("rat")]),
            attack(11, unit(111)),
            vec![
                performed(11, unit(111)),
                dmg(Some(unit(11)), unit(111), 1, 0),
                dmg(Some(unit(111)), unit(11), 1, 0),
                died(A, 11),
                died(B, 111),
            ],
        ),
        (
            "a defender without attack deals nothing back",
            setup()
                .board(A, vec![u("grunt")])
                .board(B, vec![u("pacifist")]),
            attack(11, unit(111)),
            vec![
                performed(11, unit(111)),
                dmg(Some(unit(11)), unit(111), 2, 1),
            ],
        ),
        (
            "charge attacks while sick",
            setup().board(A, vec![u("raider").sick()]),
            attack(11, hero(B)),
            vec![performed(11, hero(B)), dmg(Some(unit(11)), hero(B), 3, 27)],
        ),
        (
            "guards may be attacked",
            setup()
                .board(A, vec![u("grunt")])
                .board(B, vec![u("grunt"), u("wall")]),
            attack(11, unit(112)),
            vec![
                performed(11, unit(112)),
                dmg(Some(unit(11)), unit(112), 2, 3),
                dmg(Some(unit(112)), unit(11), 1, 2),
            ],
        ),
    ];
    for (name, s, cmd, events) in cases {
        let game = check(name, &s, A, cmd.clone(), Events(events));
        if let Command::Attack { attacker, .. } = cmd
            && let Some((_, u)) = game.view(A).unit(attacker)
        {
            assert!(!u.can_attack, "{name}: one attack per turn");
        }
    }
}

// ---- the end of the game --------------------------------------------------------------------

#[test]
fn the_game_ends_when_a_hero_falls() {
    let cases: Vec<(&str, Setup, Seat, Command, Vec<Event>)> = vec![
        (
            "lethal attack",
            setup().board(A, vec![u("grunt")]).health(B, 2),
            A,
            attack(11, hero(B)),
            vec![
                performed(11, hero(B)),
                dmg(Some(unit(11)), hero(B), 2, 0),
                over(Some(A), EndReason::HeroDefeated),
            ],
        ),
        (
            "overkill",
            setup().hand(A, &["bolt"]).health(B, 1),
            A,
            play(1, Some(hero(B))),
            vec![
                played(A, 1, "bolt", Some(hero(B))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(B), 3, 0),
                over(Some(A), EndReason::HeroDefeated),
            ],
        ),
        (
            "killing yourself loses",
            setup().hand(A, &["bolt"]).health(A, 3),
            A,
            play(1, Some(hero(A))),
            vec![
                played(A, 1, "bolt", Some(hero(A))),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(A), 3, 0),
                over(Some(B), EndReason::HeroDefeated),
            ],
        ),
        (
            "both at once is a draw",
            setup().hand(A, &["cataclysm"]).health(A, 5).health(B, 4),
            A,
            play(1, None),
            vec![
                played(A, 1, "cataclysm", None),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(B), 5, 0),
                dmg(Some(hero(A)), hero(A), 5, 0),
                over(None, EndReason::HeroDefeated),
            ],
        ),
        (
            "the survivor of a double hit wins",
            setup().hand(A, &["cataclysm"]).health(A, 6).health(B, 4),
            A,
            play(1, None),
            vec![
                played(A, 1, "cataclysm", None),
                mana(A, 4, 5),
                dmg(Some(hero(A)), hero(B), 5, 0),
                dmg(Some(hero(A)), hero(A), 5, 1),
                over(Some(A), EndReason::HeroDefeated),
            ],
        ),
        (
            "concede in your turn",
            setup(),
            A,
            Command::Concede,
            vec![over(Some(B), EndReason::Conceded)],
        ),
        (
            "concede in the opponent's turn",
            setup(),
            B,
            Command::Concede,
            vec![over(Some(A), EndReason::Conceded)],
        ),
    ];
    for (name, s, seat, cmd, events) in cases {
        let game = check(name, &s, seat, cmd, Events(events.clone()));
        let Some(Event::GameOver(result)) = events.last() else {
            panic!("{name}: no game over")
        };
        assert_eq!(game.result(), Some(*result), "{name}");
        assert_eq!(result.is_draw(), name.contains("draw"), "{name}");
    }

    let mut game = setup().build();
    assert_eq!(game.forfeit(A), vec![over(Some(B), EndReason::Forfeit)]);
    let mut game2 = setup().build();
    assert_eq!(game2.abort(), vec![over(None, EndReason::Aborted)]);
    assert!(
        !game2.result().is_some_and(|r| r.is_draw()),
        "aborted is no draw"
    );
    assert!(game.result().is_some());
}

// ---- turns and the timer --------------------------------------------------------------------

#[test]
fn ending_the_turn_starts_the_next_with_mana_draw_and_ready_units() {
    let s = setup()
        .mana(B, 2, 4)
        .board(B, vec![u("grunt").sick(), u("grunt").attacked()])
        .deck(B, &["ogre"]);
    let game = check(
        "end turn",
        &s,
        A,
        Command::EndTurn,
        Events(vec![
            Event::TurnEnded {
                player: A,
                turn: 5,
                timed_out: false,
            },
            Event::TurnStarted {
                player: B,
                turn: 6,
                deadline_ms: CMD_AT + TURN_MS,
            },
            mana(B, 5, 5),
            drawn(B, 121, "ogre", false, 1, 0),
        ]),
    );
    let view = game.view(B);
    assert!(view.my_turn());
    assert!(
        view.you.board.iter().all(|u| u.can_attack),
        "units are ready on their owner's turn"
    );
    assert!(game.view(A).opponent.board.iter().all(|u| u.can_attack));
    assert_eq!(game.deadline_ms(), CMD_AT + TURN_MS);

    let s = setup().mana(B, 0, 10).deck(B, &["rat"]);
    check(
        "mana stops at 10",
        &s,
        A,
        Command::EndTurn,
        Events(vec![
            Event::TurnEnded {
                player: A,
                turn: 5,
                timed_out: false,
            },
            Event::TurnStarted {
                player: B,
                turn: 6,
                deadline_ms: CMD_AT + TURN_MS,
            },
            mana(B, 10, 10),
            drawn(B, 121, "rat", false, 1, 0),
        ]),
    );

    let s = setup().hand(B, &["rat"; HAND_LIMIT]).deck(B, &["ogre"]);
    check(
        "the turn's draw burns into a full hand",
        &s,
        A,
        Command::EndTurn,
        Events(vec![
            Event::TurnEnded {
                player: A,
                turn: 5,
                timed_out: false,
            },
            Event::TurnStarted {
                player: B,
                turn: 6,
                deadline_ms: CMD_AT + TURN_MS,
            },
            mana(B, 6, 6),
            drawn(B, 121, "ogre", true, 10, 0),
        ]),
    );

    let s = setup().deck(B, &[]).health(B, 1);
    check(
        "fatigue at turn start can end the game",
        &s,
        A,
        Command::EndTurn,
        Events(vec![
            Event::TurnEnded {
                player: A,
                turn: 5,
                timed_out: false,
            },
            Event::TurnStarted {
                player: B,
                turn: 6,
                deadline_ms: CMD_AT + TURN_MS,
            },
            mana(B, 6, 6),
            dmg(None, hero(B), 1, 0),
            over(Some(A), EndReason::HeroDefeated),
        ]),
    );
}

#[test]
fn the_timer_ends_the_turn_at_the_deadline() {
    let mut game = setup().deck(B, &["rat"]).build();
    let deadline = game.deadline_ms();
    assert_eq!(deadline, NOW + TURN_MS);
    assert!(
        game.tick(deadline - 1).is_empty(),
        "before the deadline nothing happens"
    );
    let later = deadline + 5;
    assert_eq!(
        game.tick(later),
        vec![
            Event::TurnEnded {
                player: A,
                turn: 5,
                timed_out: true
            },
            Event::TurnStarted {
                player: B,
                turn: 6,
                deadline_ms: later + TURN_MS
            },
            mana(B, 6, 6),
            drawn(B, 121, "rat", false, 1, 0),
        ]
    );
    assert!(game.tick(later + 1).is_empty(), "one turn per deadline");
    assert_eq!(game.active(), B);
    // The timed-out player cannot act any more.
    assert_eq!(
        game.apply(A, &Command::EndTurn, later + 2),
        Err(ErrorCode::NotYourTurn)
    );
}

#[test]
fn a_played_unit_can_attack_next_turn() {
    let mut game = setup()
        .hand(A, &["grunt"])
        .deck(A, &["rat"])
        .deck(B, &["rat"])
        .build();
    let mut now = CMD_AT;
    let mut step = |game: &mut Game, seat, cmd: Command| {
        now += 10;
        game.apply(seat, &cmd, now)
    };
    assert!(step(&mut game, A, play(1, None)).is_ok());
    assert_eq!(
        step(&mut game, A, attack(1, hero(B))),
        Err(ErrorCode::CannotAttack)
    );
    assert!(step(&mut game, A, Command::EndTurn).is_ok());
    assert_eq!(
        step(&mut game, A, attack(1, hero(B))),
        Err(ErrorCode::NotYourTurn)
    );
    assert!(step(&mut game, B, Command::EndTurn).is_ok());
    assert_eq!(
        step(&mut game, A, attack(1, hero(B))),
        Ok(vec![
            performed(1, hero(B)),
            dmg(Some(unit(1)), hero(B), 2, 28)
        ])
    );
}

// ---- starting a game ------------------------------------------------------------------------

fn mixed_setup(seed: u64) -> GameSetup {
    let deck = match CATALOG.starter_deck("mixed") {
        Some(d) => d.deck().clone(),
        None => panic!("test catalog has no mixed deck"),
    };
    GameSetup {
        seed,
        decks: [deck.clone(), deck],
        turn_ms: TURN_MS,
    }
}

#[test]
fn a_new_game_deals_opening_hands_and_starts_turn_one() {
    let mut firsts = [0, 0];
    for seed in 0..16 {
        let (game, events) = match Game::new(Arc::clone(&CATALOG), mixed_setup(seed), NOW) {
            Ok(g) => g,
            Err(e) => panic!("seed {seed}: {e}"),
        };
        let first = game.active();
        firsts[first.index()] += 1;
        assert_eq!(events.len(), 3 + 4 + 3, "seed {seed}");
        let draws_of = |seat: Seat| {
            events
                .iter()
                .filter(|e| matches!(e, Event::CardDrawn { player, .. } if *player == seat))
                .count()
        };
        assert_eq!(
            (draws_of(first), draws_of(first.other())),
            (4, 4),
            "seed {seed}: 3 + turn draw vs 4"
        );
        assert!(
            events[..3]
                .iter()
                .all(|e| matches!(e, Event::CardDrawn { player, .. } if *player == first))
        );
        assert_eq!(
            events[7],
            Event::TurnStarted {
                player: first,
                turn: 1,
                deadline_ms: NOW + TURN_MS
            }
        );
        assert_eq!(events[8], mana(first, 1, 1));
        assert_eq!(game.last_seq(), 10);

        let st = game.state();
        for seat in Seat::BOTH {
            let p = &st.players[seat.index()];
            let mut ids: Vec<u32> = p.deck.iter().chain(&p.hand).map(|c| c.id).collect();
            ids.sort_unstable();
            let base = 20 * seat.index() as u32;
            assert_eq!(
                ids,
                (base + 1..=base + 20).collect::<Vec<_>>(),
                "seed {seed}: ids of {seat:?}"
            );
            assert_eq!(p.health, STARTING_HEALTH);
        }
        assert_eq!(st.players[first.index()].deck.len(), 16);
        assert_eq!(st.players[first.other().index()].deck.len(), 16);
    }
    assert!(
        firsts[0] > 0 && firsts[1] > 0,
        "the seed decides who goes first: {firsts:?}"
    );
}

#[test]
fn setups_are_checked() {
    let other = Catalog::standard();
    let foreign = other.starter_decks()[0].deck().clone();
    let mut s = mixed_setup(1);
    s.decks[1] = foreign;
    assert!(matches!(
        Game::new(Arc::clone(&CATALOG), s, NOW),
        Err(super::SetupError::DeckFromAnotherCatalog { seat: B })
    ));
    let mut s = mixed_setup(1);
    s.turn_ms = 0;
    assert!(matches!(
        Game::new(Arc::clone(&CATALOG), s, NOW),
        Err(super::SetupError::TurnLength(0))
    ));
}

// ---- visibility -----------------------------------------------------------------------------

#[test]
fn players_see_only_what_they_may() {
    let game = setup()
        .hand(A, &["grunt", "bolt"])
        .hand(B, &["ogre"])
        .deck(A, &["rat", "wall"])
        .build();
    let b = game.view(B);
    assert_eq!(b.hand.iter().map(|c| c.id).collect::<Vec<_>>(), vec![101]);
    assert_eq!(b.opponent.hand_count, 2);
    assert_eq!(b.opponent.deck_count, 2);
    assert_eq!(b.you.hand_count, 1);
    let a = game.view(A);
    assert_eq!(a.hand.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 2]);

    let draw = drawn(A, 22, "wall", false, 3, 1);
    assert_eq!(draw.seen_by(A), draw);
    assert_eq!(
        draw.seen_by(B),
        Event::CardDrawn {
            player: A,
            card: None,
            burned: false,
            hand_count: 3,
            deck_count: 1
        }
    );
    let burn = drawn(A, 22, "wall", true, 10, 1);
    assert_eq!(burn.seen_by(B), burn, "burned cards are revealed");
    let other = played(A, 1, "grunt", None);
    assert_eq!(other.seen_by(B), other);
}
