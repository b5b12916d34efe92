//! The boundary to the protocol: snapshots, events and commands survive an encode/decode round
//! trip through the real codec, hidden cards never reach the wrong player, and malformed
//! commands get their codes.

use std::sync::{Arc, LazyLock};

use instance_server::bot::Bot;
use instance_server::catalog::Catalog;
use instance_server::rules::bench_support::bot_setup;
use instance_server::rules::{Command, Game, Seat, Target};
use instance_server::wire::{self, MatchPlayers};
use protocol::tavern::{
    ClientBodyT, ClientMessageT, CommandT, GameCommandT, GameEventBodyT, ServerBodyT,
    ServerMessageT, TargetKind, TargetT, UuidT,
};
use protocol::{Codec, ErrorCode};

static CATALOG: LazyLock<Arc<Catalog>> = LazyLock::new(|| Arc::new(Catalog::standard()));

fn players() -> MatchPlayers {
    MatchPlayers {
        match_id: UuidT::from_bytes([9; 16]),
        seats: [
            (UuidT::from_bytes([1; 16]), "alice".to_owned()),
            (UuidT::from_bytes([2; 16]), "bob".to_owned()),
        ],
    }
}

fn round_trip_server(codec: &Codec, body: ServerBodyT) -> ServerBodyT {
    let bytes = match codec.encode(&ServerMessageT::push(body)) {
        Ok(b) => b,
        Err(e) => panic!("encode: {e}"),
    };
    match codec.decode_server(&bytes) {
        Ok(m) => m.body,
        Err(e) => panic!("decode: {e}"),
    }
}

fn round_trip_command(codec: &Codec, command: GameCommandT) -> GameCommandT {
    let message = ClientMessageT::request(1, ClientBodyT::GameCommand(Box::new(command)));
    let bytes = match codec.encode(&message) {
        Ok(b) => b,
        Err(e) => panic!("encode: {e}"),
    };
    match codec.decode_client(&bytes).map(|m| m.body) {
        Ok(ClientBodyT::GameCommand(c)) => *c,
        other => panic!("decoded {other:?}"),
    }
}

#[test]
fn a_whole_bot_game_survives_the_wire_for_both_players() {
    let codec = Codec::default();
    let players = players();
    for seed in 0..6u64 {
        let Some(setup) = bot_setup(&CATALOG, seed) else {
            panic!("no starter decks")
        };
        let Ok((mut game, mut events)) = Game::new(Arc::clone(&CATALOG), setup, 0) else {
            panic!("setup")
        };
        let mut bots = [Bot::new(seed), Bot::new(seed + 1)];
        let mut now = 0;
        loop {
            for viewer in Seat::BOTH {
                // The snapshot reads back into exactly the player's view.
                let view = game.view(viewer);
                let snapshot = wire::snapshot(&view, &CATALOG, &players);
                let ServerBodyT::GameSnapshot(decoded) =
                    round_trip_server(&codec, ServerBodyT::GameSnapshot(Box::new(snapshot)))
                else {
                    panic!("not a snapshot")
                };
                assert_eq!(
                    wire::view_from_snapshot(&decoded, &CATALOG, &players).as_ref(),
                    Ok(&view),
                    "seed {seed}"
                );

                // Events keep their order and numbering; the opponent's draws carry no card.
                let first_seq = game.last_seq() + 1 - events.len() as u64;
                let pushed = wire::events(first_seq, &events, viewer, &CATALOG, &players);
                let ServerBodyT::GameEvents(decoded) =
                    round_trip_server(&codec, ServerBodyT::GameEvents(Box::new(pushed)))
                else {
                    panic!("not events")
                };
                assert_eq!(decoded.first_seq, first_seq);
                let decoded = decoded.events.unwrap_or_default();
                assert_eq!(decoded.len(), events.len());
                for e in &decoded {
                    if let GameEventBodyT::CardDrawn(d) = &e.event
                        && d.player != players.user(viewer)
                        && !d.burned
                    {
                        assert!(
                            d.card.is_none(),
                            "seed {seed}: {viewer:?} saw the opponent's draw"
                        );
                    }
                }
            }
            if game.result().is_some() {
                break;
            }
            let seat = game.active();
            let Some(command) = bots[seat.index()].choose(&game.view(seat), &CATALOG) else {
                panic!("bot passed")
            };
            let over_wire = round_trip_command(&codec, wire::command_to_wire(&command, &players));
            assert_eq!(
                wire::command_from_wire(&over_wire, &players),
                Ok(command.clone())
            );
            now += 100;
            events = match game.apply(seat, &command, now) {
                Ok(e) => e,
                Err(code) => panic!("seed {seed}: {command:?} refused with {code}"),
            };
        }
        let Some(result) = game.result() else {
            panic!("not over")
        };
        let over = wire::game_over(&result, &players);
        assert_eq!(over.winner, result.winner.map(|s| players.user(s)));
        assert_eq!(over.draw, result.is_draw());
    }
}

#[test]
fn malformed_commands_get_their_codes() {
    let players = players();
    let none = protocol::build!(GameCommandT {
        command: CommandT::NONE
    });
    assert_eq!(
        wire::command_from_wire(&none, &players),
        Err(ErrorCode::Malformed)
    );

    let stranger = TargetT {
        kind: TargetKind::Hero,
        unit_id: 0,
        player: UuidT::from_bytes([7; 16]),
    };
    let attack = wire::command_to_wire(
        &Command::Attack {
            attacker: 3,
            target: Target::Hero(Seat::B),
        },
        &players,
    );
    let mut bad = attack.clone();
    if let CommandT::Attack(a) = &mut bad.command {
        a.target = stranger.clone();
    }
    assert_eq!(
        wire::command_from_wire(&bad, &players),
        Err(ErrorCode::InvalidTarget),
        "hero of a user not in the match"
    );
    let mut bad = attack.clone();
    if let CommandT::Attack(a) = &mut bad.command {
        a.target.kind = TargetKind(9);
    }
    assert_eq!(
        wire::command_from_wire(&bad, &players),
        Err(ErrorCode::InvalidTarget),
        "unknown target kind"
    );
    let mut bad = attack;
    if let CommandT::Attack(a) = &mut bad.command {
        a.target.kind = TargetKind::None;
    }
    assert_eq!(
        wire::command_from_wire(&bad, &players),
        Err(ErrorCode::InvalidTarget),
        "an attack needs a target"
    );

    // A play with a `None`-kind target is a play without target.
    let play = wire::command_to_wire(
        &Command::PlayCard {
            card: 4,
            target: None,
            position: 2,
        },
        &players,
    );
    let mut with_none = play.clone();
    if let CommandT::PlayCard(p) = &mut with_none.command {
        p.target = Some(TargetT {
            kind: TargetKind::None,
            unit_id: 0,
            player: UuidT::NIL,
        });
    }
    assert_eq!(
        wire::command_from_wire(&with_none, &players),
        wire::command_from_wire(&play, &players)
    );
}
