//! Every message kind survives encode → decode unchanged, through one data-driven check, and the
//! samples provably cover every member of every union.

mod support;

use std::collections::BTreeSet;
use std::fmt::Debug;

use protocol::build;
use protocol::tavern::*;
use protocol::{Codec, Envelope, ErrorCode, FrameDecoder, Limits, error_message};
use support::*;

/// Encodes `message`, decodes it back, and checks it is unchanged, fits the frame limit and
/// passes the zero-copy verifier too; also through the length-prefixed framing.
fn check_round_trip<M: Envelope + PartialEq + Debug>(codec: &Codec, message: &M) {
    let bytes = codec
        .encode(message)
        .unwrap_or_else(|e| panic!("encode {message:?}: {e}"));
    assert!(bytes.len() <= codec.limits().max_frame_bytes);
    let back: M = codec
        .decode(&bytes)
        .unwrap_or_else(|e| panic!("decode {message:?}: {e}"));
    assert_eq!(&back, message);
    assert!(codec.verify::<M>(&bytes).is_ok());

    let framed = codec
        .encode_framed(message)
        .expect("encode_framed after encode succeeded");
    let mut decoder = FrameDecoder::new(codec.limits().max_frame_bytes);
    let mut input = framed.as_slice();
    let frame = decoder
        .decode(&mut input)
        .expect("a valid frame")
        .expect("a complete frame");
    assert!(input.is_empty() && decoder.is_idle());
    assert_eq!(frame, bytes);
}

#[test]
fn every_client_message_round_trips() {
    let codec = Codec::default();
    for message in client_samples() {
        check_round_trip(&codec, &message);
    }
}

#[test]
fn every_server_message_round_trips() {
    let codec = Codec::default();
    for message in server_samples() {
        check_round_trip(&codec, &message);
    }
}

#[test]
fn every_service_message_round_trips() {
    let codec = Codec::default();
    for message in service_samples() {
        check_round_trip(&codec, &message);
    }
}

#[test]
fn defaults_and_absent_optional_fields_round_trip() {
    let codec = Codec::default();
    check_round_trip(
        &codec,
        &ClientMessageT::request(0, ClientBodyT::Hello(Box::default())),
    );
    check_round_trip(
        &codec,
        &ServerMessageT::push(ServerBodyT::GameEvents(Box::default())),
    );
    check_round_trip(
        &codec,
        &ServerMessageT::push(ServerBodyT::MatchFound(Box::default())),
    );
    check_round_trip(
        &codec,
        &ServiceMessageT::new(u32::MAX, ServiceBodyT::MatchResult(Box::default())),
    );
}

#[test]
fn samples_cover_every_union_member() {
    // A message added to the schema without a sample here fails this test.
    fn check(
        union: &str,
        all: impl IntoIterator<Item = u8>,
        covered: impl IntoIterator<Item = u8>,
    ) {
        let want: BTreeSet<u8> = all.into_iter().filter(|&t| t != 0).collect();
        let got: BTreeSet<u8> = covered.into_iter().collect();
        assert_eq!(got, want, "{union}: samples must cover every member");
    }
    check(
        "ClientBody",
        ClientBody::ENUM_VALUES.iter().map(|t| t.0),
        client_samples().iter().map(|m| m.body.client_body_type().0),
    );
    check(
        "ServerBody",
        ServerBody::ENUM_VALUES.iter().map(|t| t.0),
        server_samples().iter().map(|m| m.body.server_body_type().0),
    );
    check(
        "ServiceBody",
        ServiceBody::ENUM_VALUES.iter().map(|t| t.0),
        service_samples()
            .iter()
            .map(|m| m.body.service_body_type().0),
    );
    check(
        "Command",
        Command::ENUM_VALUES.iter().map(|t| t.0),
        all_commands().iter().map(|c| c.command_type().0),
    );
    check(
        "GameEventBody",
        GameEventBody::ENUM_VALUES.iter().map(|t| t.0),
        all_events()
            .iter()
            .map(|e| e.event.game_event_body_type().0),
    );
}

#[test]
fn error_helpers_encode_decodable_errors() {
    let codec = Codec::default();
    let cases = [
        (
            error_message(7, ErrorCode::NotYourTurn, "wait"),
            7,
            ErrorCode::NotYourTurn,
            "wait",
            false,
        ),
        (
            protocol::closing_error_message(1, ErrorCode::TokenExpired, "expired"),
            1,
            ErrorCode::TokenExpired,
            "expired",
            true,
        ),
    ];
    for (bytes, cid, code, text, closes) in cases {
        let message = codec
            .decode_server(&bytes)
            .expect("helpers encode valid messages");
        assert_eq!(message.cid, cid);
        let error = message.body.as_error().expect("an Error body");
        assert_eq!(
            (
                error.error_code(),
                error.message.as_str(),
                error.closes_link
            ),
            (Some(code), text, closes)
        );
    }

    let service = codec.decode_service(&protocol::service_error_message(
        3,
        ErrorCode::NoCapacity,
        "full",
    ));
    let service = service.expect("helper encodes a valid message");
    assert_eq!(
        service,
        ServiceMessageT::error(3, ErrorCode::NoCapacity, "full")
    );

    // Whatever the detail passed, the error frame stays far below the smallest sane limit.
    let huge = "x".repeat(1 << 20);
    let bytes = error_message(0, ErrorCode::Internal, &huge);
    assert!(bytes.len() < 1024, "{} bytes", bytes.len());
    assert!(
        Codec::new(Limits::with_max_frame_bytes(1024))
            .decode_server(&bytes)
            .is_ok()
    );
}

#[test]
fn verify_gives_a_zero_copy_reader() {
    let codec = Codec::default();
    let bytes = codec.encode(&client_samples()[0]).expect("sample encodes");
    let reader = codec
        .verify::<ClientMessageT>(&bytes)
        .expect("sample verifies");
    assert_eq!(reader.cid(), 1);
    let hello = reader.body_as_hello().expect("first sample is Hello");
    assert_eq!(hello.protocol_version(), protocol::PROTOCOL_VERSION);
    assert_eq!(hello.client_name(), Some("tavern-godot/0.1 (Linux)"));
}

/// Bytes written by this version must stay readable by every later one: these were encoded when
/// the messages were introduced and are never regenerated. A failure here means a schema edit
/// reordered, removed or retyped a field, union member or enum value.
#[test]
fn released_encodings_still_decode() {
    let codec = Codec::default();
    assert_eq!(
        codec.decode_client(&from_hex(GOLDEN_HELLO)),
        Ok(golden_hello())
    );
    assert_eq!(
        codec.decode_server(&from_hex(GOLDEN_EVENTS)),
        Ok(golden_events())
    );
    assert_eq!(
        codec.decode_service(&from_hex(GOLDEN_MATCH_RESULT)),
        Ok(golden_match_result())
    );
}

fn golden_hello() -> ClientMessageT {
    ClientMessageT::request(
        1,
        ClientBodyT::Hello(Box::new(build!(HelloT {
            protocol_version: 1,
            token: Some("tok".to_owned()),
            resume_token: None,
            client_name: Some("golden".to_owned()),
        }))),
    )
}

fn golden_events() -> ServerMessageT {
    let events = vec![
        build!(GameEventT {
            event: GameEventBodyT::DamageDealt(Box::new(build!(DamageDealtT {
                source: Some(unit_target(3)),
                target: hero_target(2),
                amount: 4,
                health_after: 26,
            }))),
        }),
        build!(GameEventT {
            event: GameEventBodyT::GameOver(Box::new(game_over()))
        }),
    ];
    ServerMessageT::push(ServerBodyT::GameEvents(Box::new(build!(GameEventsT {
        first_seq: 9,
        events: Some(events)
    }))))
}

fn golden_match_result() -> ServiceMessageT {
    ServiceMessageT::new(
        4,
        ServiceBodyT::MatchResult(Box::new(build!(MatchResultT {
            match_id: id(6),
            mode: Some("ranked_1v1".to_owned()),
            winner: None,
            draw: true,
            reason: GameOverReason::HeroDefeated,
            players: Some(vec![build!(PlayerResultT {
                user_id: id(1),
                outcome: PlayerOutcome::Draw,
                team: 0,
                left_early: false,
            })]),
            duration_ms: 1234,
            turns: 3,
            ended_at_ms: 1_700_000_000_000,
            instance_id: None,
        }))),
    )
}

fn from_hex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("hex digits are ascii");
            u8::from_str_radix(text, 16).expect("filtered to hex digits")
        })
        .collect()
}

// Encoded with flatbuffers 25.12.19 when protocol version 1 was released. Never edit these.
const GOLDEN_HELLO: &str = "1000000000000a001000080007000c000a0000000000000101000000100000000c0010000600080000000c000c00000000000100140000000400000006000000676f6c64656e000003000000746f6b00";
const GOLDEN_EVENTS: &str = "140000000000000000000a000c000000070008000a000000000000130c0000000800140008000400080000001000000009000000000000000000000002000000480000000c00000008000e0007000800080000000000000b1000000000000a0018000800000007000a000000000000010101010101010101010101010101010108000c00070008000800000000000005100000000c00380008002000040006000c00000004001a00010000000300000000000000000000000000000000000000020000000000000002020202020202020202020202020202";
const GOLDEN_MATCH_RESULT: &str = "140000000000000000000a001200080007000c000a0000000000000e040000001c000000000016002c00080018000000050000001c002000060024001600000000010300060606060606060606060606060606063c00000010000000d20400000068e5cf8b010000010000000c00000008001800080007000800000000000002010101010101010101010101010101010a00000072616e6b65645f3176310000";
