//! The boundary between the engine's plain types and the `protocol` messages of the instance
//! link: snapshots, events and commands. Players are seats inside the engine and user ids on the
//! wire; [`MatchPlayers`] maps one to the other.
//!
//! Hidden information is filtered here, at the last step before bytes: [`event`] always redacts
//! for its viewer, and [`snapshot`] is built from a [`PlayerView`], which never holds it.

use protocol::ErrorCode;
use protocol::tavern::{
    AttackPerformedT, AttackT, CardDrawnT, CardPlayedT, CommandT, ConcedeT, DamageDealtT, EndTurnT,
    GameCommandT, GameEventBodyT, GameEventT, GameEventsT, GameOverReason, GameOverT,
    GameSnapshotT, HandCardT, HealedT, Keyword, ManaChangedT, PlayCardT, PlayerInfoT, PlayerStateT,
    TargetKind, TargetT, TurnEndedT, TurnStartedT, UnitDiedT, UnitSummonedT, UnitT, UuidT,
};

use crate::catalog::Catalog;
use crate::rules::{
    CardInstance, Command, EndReason, Event, GameResult, HandCardView, PlayerView, Seat, SideView,
    Target, UnitView,
};

/// Who sits where in one match, and the match id: what the wire names that the engine does not.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchPlayers {
    pub match_id: UuidT,
    /// (user id, username) of seat A, then seat B.
    pub seats: [(UuidT, String); 2],
}

impl MatchPlayers {
    /// The user in `seat`.
    pub fn user(&self, seat: Seat) -> UuidT {
        self.seats[seat.index()].0.clone()
    }

    /// The seat of `user`, if they play in this match.
    pub fn seat_of(&self, user: &UuidT) -> Option<Seat> {
        Seat::BOTH
            .into_iter()
            .find(|s| self.seats[s.index()].0 == *user)
    }

    fn info(&self, seat: Seat) -> PlayerInfoT {
        let (user_id, username) = &self.seats[seat.index()];
        protocol::build!(PlayerInfoT {
            user_id: user_id.clone(),
            username: username.clone()
        })
    }
}

/// Why a snapshot could not be read back into a view (a client-side check of server data).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot player {0} is not in this match")]
    UnknownPlayer(UuidT),
    #[error("snapshot names card {0:?}, which the catalog does not have")]
    UnknownCard(String),
}

/// The `GameSnapshot` for the view's player.
pub fn snapshot(view: &PlayerView, catalog: &Catalog, players: &MatchPlayers) -> GameSnapshotT {
    protocol::build!(GameSnapshotT {
        match_id: players.match_id.clone(),
        last_seq: view.last_seq,
        turn: view.turn,
        active_player: players.user(view.active),
        turn_deadline_ms: view.deadline_ms,
        you: Box::new(side(&view.you, catalog, players)),
        opponent: Box::new(side(&view.opponent, catalog, players)),
        hand: Some(view.hand.iter().map(|c| hand_card(c, catalog)).collect()),
        game_over: view.result.map(|r| Box::new(game_over(&r, players))),
    })
}

/// One event as `viewer` may see it (redacted here, whatever the caller passes).
pub fn event(event: &Event, viewer: Seat, catalog: &Catalog, players: &MatchPlayers) -> GameEventT {
    let user = |seat: Seat| players.user(seat);
    let body = match event.seen_by(viewer) {
        Event::CardDrawn {
            player,
            card,
            burned,
            hand_count,
            deck_count,
        } => GameEventBodyT::CardDrawn(Box::new(protocol::build!(CardDrawnT {
            player: user(player),
            card: card.map(|c| Box::new(instance_card(c, catalog))),
            burned,
            hand_count,
            deck_count,
        }))),
        Event::CardPlayed {
            player,
            card,
            target,
        } => GameEventBodyT::CardPlayed(Box::new(protocol::build!(CardPlayedT {
            player: user(player),
            card_instance_id: card.id,
            card_id: catalog.card(card.card).id.clone(),
            target: target.map(|t| target_to_wire(t, players)),
        }))),
        Event::UnitSummoned {
            player,
            unit,
            position,
        } => GameEventBodyT::UnitSummoned(Box::new(protocol::build!(UnitSummonedT {
            player: user(player),
            unit: Box::new(unit_to_wire(&unit, catalog)),
            position,
        }))),
        Event::AttackPerformed { attacker, target } => {
            GameEventBodyT::AttackPerformed(Box::new(protocol::build!(AttackPerformedT {
                attacker_unit_id: attacker,
                target: target_to_wire(target, players),
            })))
        }
        Event::DamageDealt {
            source,
            target,
            amount,
            health_after,
        } => GameEventBodyT::DamageDealt(Box::new(protocol::build!(DamageDealtT {
            source: source.map(|t| target_to_wire(t, players)),
            target: target_to_wire(target, players),
            amount,
            health_after,
        }))),
        Event::Healed {
            source,
            target,
            amount,
            health_after,
        } => GameEventBodyT::Healed(Box::new(protocol::build!(HealedT {
            source: source.map(|t| target_to_wire(t, players)),
            target: target_to_wire(target, players),
            amount,
            health_after,
        }))),
        Event::UnitDied { player, unit } => {
            GameEventBodyT::UnitDied(Box::new(protocol::build!(UnitDiedT {
                player: user(player),
                unit_id: unit
            })))
        }
        Event::TurnStarted {
            player,
            turn,
            deadline_ms,
        } => GameEventBodyT::TurnStarted(Box::new(protocol::build!(TurnStartedT {
            player: user(player),
            turn,
            deadline_ms
        }))),
        Event::TurnEnded {
            player,
            turn,
            timed_out,
        } => GameEventBodyT::TurnEnded(Box::new(protocol::build!(TurnEndedT {
            player: user(player),
            turn,
            timed_out
        }))),
        Event::ManaChanged {
            player,
            mana,
            max_mana,
        } => GameEventBodyT::ManaChanged(Box::new(protocol::build!(ManaChangedT {
            player: user(player),
            mana,
            max_mana
        }))),
        Event::GameOver(result) => GameEventBodyT::GameOver(Box::new(game_over(&result, players))),
    };
    protocol::build!(GameEventT { event: body })
}

/// A `GameEvents` push for `viewer`: `events` numbered from `first_seq`.
pub fn events(
    first_seq: u64,
    events: &[Event],
    viewer: Seat,
    catalog: &Catalog,
    players: &MatchPlayers,
) -> GameEventsT {
    protocol::build!(GameEventsT {
        first_seq,
        events: Some(
            events
                .iter()
                .map(|e| event(e, viewer, catalog, players))
                .collect()
        ),
    })
}

/// The `GameOver` table for a result.
pub fn game_over(result: &GameResult, players: &MatchPlayers) -> GameOverT {
    protocol::build!(GameOverT {
        winner: result.winner.map(|s| players.user(s)),
        draw: result.is_draw(),
        reason: reason_to_wire(result.reason),
    })
}

/// The wire's reason code for an end reason.
pub fn reason_to_wire(reason: EndReason) -> GameOverReason {
    match reason {
        EndReason::HeroDefeated => GameOverReason::HeroDefeated,
        EndReason::Conceded => GameOverReason::Conceded,
        EndReason::Forfeit => GameOverReason::Forfeit,
        EndReason::Aborted => GameOverReason::Aborted,
    }
}

/// A client's command as the engine's: `Malformed` for an empty or unknown command,
/// `InvalidTarget` for a target the engine cannot name (unknown kind, a user not in the match).
pub fn command_from_wire(
    command: &GameCommandT,
    players: &MatchPlayers,
) -> Result<Command, ErrorCode> {
    match &command.command {
        CommandT::PlayCard(play) => Ok(Command::PlayCard {
            card: play.card_instance_id,
            target: match &play.target {
                None => None,
                Some(t) if t.kind == TargetKind::None => None,
                Some(t) => Some(target_from_wire(t, players)?),
            },
            position: play.position,
        }),
        CommandT::Attack(attack) => Ok(Command::Attack {
            attacker: attack.attacker_unit_id,
            target: target_from_wire(&attack.target, players)?,
        }),
        CommandT::EndTurn(_) => Ok(Command::EndTurn),
        CommandT::Concede(_) => Ok(Command::Concede),
        _ => Err(ErrorCode::Malformed),
    }
}

/// The engine's command as the wire's (for bots playing over a link).
pub fn command_to_wire(command: &Command, players: &MatchPlayers) -> GameCommandT {
    let command = match *command {
        Command::PlayCard {
            card,
            target,
            position,
        } => CommandT::PlayCard(Box::new(protocol::build!(PlayCardT {
            card_instance_id: card,
            target: target.map(|t| target_to_wire(t, players)),
            position,
        }))),
        Command::Attack { attacker, target } => {
            CommandT::Attack(Box::new(protocol::build!(AttackT {
                attacker_unit_id: attacker,
                target: target_to_wire(target, players),
            })))
        }
        Command::EndTurn => CommandT::EndTurn(Box::new(protocol::build!(EndTurnT {}))),
        Command::Concede => CommandT::Concede(Box::new(protocol::build!(ConcedeT {}))),
    };
    protocol::build!(GameCommandT { command })
}

/// Reads a snapshot back into the receiver's view, so a bot can play over a link with the
/// same code as in process.
pub fn view_from_snapshot(
    snapshot: &GameSnapshotT,
    catalog: &Catalog,
    players: &MatchPlayers,
) -> Result<PlayerView, SnapshotError> {
    let seat = |user: &UuidT| {
        players
            .seat_of(user)
            .ok_or(SnapshotError::UnknownPlayer(user.clone()))
    };
    let card = |id: &str| {
        catalog
            .lookup(id)
            .ok_or_else(|| SnapshotError::UnknownCard(id.to_owned()))
    };
    let side = |s: &PlayerStateT| -> Result<SideView, SnapshotError> {
        Ok(SideView {
            seat: seat(&s.player.user_id)?,
            health: s.health,
            max_health: s.max_health,
            mana: s.mana,
            max_mana: s.max_mana,
            hand_count: s.hand_count,
            deck_count: s.deck_count,
            board: s
                .board
                .iter()
                .flatten()
                .map(|u| {
                    let keywords = u.keywords.as_deref().unwrap_or_default();
                    Ok(UnitView {
                        id: u.unit_id,
                        card: card(&u.card_id)?,
                        attack: u.attack,
                        health: u.health,
                        max_health: u.max_health,
                        guard: keywords.contains(&Keyword::Guard),
                        charge: keywords.contains(&Keyword::Charge),
                        can_attack: u.can_attack,
                    })
                })
                .collect::<Result<_, SnapshotError>>()?,
        })
    };
    let you = side(&snapshot.you)?;
    let opponent = side(&snapshot.opponent)?;
    let hand = snapshot
        .hand
        .iter()
        .flatten()
        .map(|c| {
            Ok(HandCardView {
                id: c.card_instance_id,
                card: card(&c.card_id)?,
                cost: c.cost,
                attack: c.attack,
                health: c.health,
            })
        })
        .collect::<Result<_, SnapshotError>>()?;
    let result = match &snapshot.game_over {
        None => None,
        Some(g) => Some(GameResult {
            winner: g.winner.as_ref().map(seat).transpose()?,
            reason: match g.reason {
                GameOverReason::Conceded => EndReason::Conceded,
                GameOverReason::Forfeit => EndReason::Forfeit,
                GameOverReason::Aborted => EndReason::Aborted,
                _ => EndReason::HeroDefeated,
            },
        }),
    };
    Ok(PlayerView {
        viewer: you.seat,
        last_seq: snapshot.last_seq,
        turn: snapshot.turn,
        active: seat(&snapshot.active_player)?,
        deadline_ms: snapshot.turn_deadline_ms,
        you,
        opponent,
        hand,
        result,
    })
}

fn side(s: &SideView, catalog: &Catalog, players: &MatchPlayers) -> PlayerStateT {
    protocol::build!(PlayerStateT {
        player: Box::new(players.info(s.seat)),
        health: s.health,
        max_health: s.max_health,
        mana: s.mana,
        max_mana: s.max_mana,
        hand_count: s.hand_count,
        deck_count: s.deck_count,
        board: Some(s.board.iter().map(|u| unit_to_wire(u, catalog)).collect()),
    })
}

fn unit_to_wire(u: &UnitView, catalog: &Catalog) -> UnitT {
    let mut keywords = Vec::new();
    if u.guard {
        keywords.push(Keyword::Guard);
    }
    if u.charge {
        keywords.push(Keyword::Charge);
    }
    protocol::build!(UnitT {
        unit_id: u.id,
        card_id: catalog.card(u.card).id.clone(),
        attack: u.attack,
        health: u.health,
        max_health: u.max_health,
        keywords: Some(keywords),
        can_attack: u.can_attack,
    })
}

fn hand_card(c: &HandCardView, catalog: &Catalog) -> HandCardT {
    protocol::build!(HandCardT {
        card_instance_id: c.id,
        card_id: catalog.card(c.card).id.clone(),
        cost: c.cost,
        attack: c.attack,
        health: c.health,
    })
}

fn instance_card(c: CardInstance, catalog: &Catalog) -> HandCardT {
    let def = catalog.card(c.card);
    let (attack, health) = def.stats();
    hand_card(
        &HandCardView {
            id: c.id,
            card: c.card,
            cost: def.cost,
            attack,
            health,
        },
        catalog,
    )
}

fn target_to_wire(t: Target, players: &MatchPlayers) -> TargetT {
    match t {
        Target::Unit(id) => TargetT {
            kind: TargetKind::Unit,
            unit_id: id,
            player: UuidT::NIL,
        },
        Target::Hero(seat) => TargetT {
            kind: TargetKind::Hero,
            unit_id: 0,
            player: players.user(seat),
        },
    }
}

fn target_from_wire(t: &TargetT, players: &MatchPlayers) -> Result<Target, ErrorCode> {
    match t.kind {
        TargetKind::Unit => Ok(Target::Unit(t.unit_id)),
        TargetKind::Hero => players
            .seat_of(&t.player)
            .map(Target::Hero)
            .ok_or(ErrorCode::InvalidTarget),
        _ => Err(ErrorCode::InvalidTarget),
    }
}
