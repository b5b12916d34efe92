//! Hostile and broken input: each case gives the right `DecodeError` and `ErrorCode`, never a
//! panic, and a sender cannot encode what its peer would refuse.

mod support;

use std::fmt::Debug;

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, WIPOffset};
use protocol::tavern::*;
use protocol::{
    Codec, DecodeError, EncodeError, Envelope, ErrorCode, Limits, MAX_FRAME_BYTES, build,
};
use support::*;

/// What a decode must fail with.
enum Want {
    /// Exactly this error.
    Is(DecodeError),
    /// A verifier error of the kind the predicate accepts.
    Malformed(fn(&InvalidFlatbuffer) -> bool),
}

/// Decodes `bytes` as `M` with `codec` and checks the error, its code and its message's form.
fn check<M: Envelope + Debug>(
    case: &str,
    codec: &Codec,
    bytes: &[u8],
    want: Want,
    code: ErrorCode,
) {
    let err = match codec.decode::<M>(bytes) {
        Ok(message) => panic!("{case}: decoded {message:?}, want an error"),
        Err(err) => err,
    };
    match want {
        Want::Is(want) => assert_eq!(err, want, "{case}"),
        Want::Malformed(kind) => match &err {
            DecodeError::Malformed(inner) if kind(inner) => {}
            other => panic!("{case}: got {other:?}, want another kind of malformed"),
        },
    }
    assert_eq!(err.code(), code, "{case}: {err}");
    check_message_form(case, &err.to_string());
    // The zero-copy path makes the same decision.
    assert!(
        codec.verify::<M>(bytes).is_err(),
        "{case}: verify accepted what decode refused"
    );
}

/// Error messages follow the house style: one line, lowercase, no trailing period.
fn check_message_form(case: &str, message: &str) {
    assert!(
        !message.contains('\n'),
        "{case}: multi-line message {message:?}"
    );
    assert!(
        !message.ends_with('.'),
        "{case}: trailing period in {message:?}"
    );
    assert!(
        message.starts_with(|c: char| c.is_ascii_lowercase()),
        "{case}: {message:?}"
    );
}

/// Finishes a `ClientMessage`/`ServerMessage`/`ServiceMessage`-shaped root (they share the
/// layout `cid, body_type, body`) with an arbitrary union discriminant and value.
fn raw_envelope(
    body_type: u8,
    body: impl FnOnce(&mut FlatBufferBuilder<'_>) -> Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
) -> Vec<u8> {
    raw_envelope_with(FlatBufferBuilder::new(), body_type, body)
}

/// Like `raw_envelope`, but writes the discriminant even when it is the default, NONE.
fn raw_envelope_forced(
    body_type: u8,
    body: impl FnOnce(&mut FlatBufferBuilder<'_>) -> Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    fbb.force_defaults(true);
    raw_envelope_with(fbb, body_type, body)
}

fn raw_envelope_with(
    mut fbb: FlatBufferBuilder<'_>,
    body_type: u8,
    body: impl FnOnce(&mut FlatBufferBuilder<'_>) -> Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
) -> Vec<u8> {
    let body = body(&mut fbb);
    let root = ClientMessage::create(
        &mut fbb,
        &ClientMessageArgs {
            cid: 5,
            body_type: ClientBody(body_type),
            body,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

fn ack_table(fbb: &mut FlatBufferBuilder<'_>) -> Option<WIPOffset<flatbuffers::UnionWIPOffset>> {
    Some(Ack::create(fbb, &AckArgs {}).as_union_value())
}

/// A client message whose body is a `GameCommand` with this command discriminant and value.
fn raw_command(command_type: u8, with_value: bool) -> Vec<u8> {
    raw_envelope(ClientBody::GameCommand.0, |fbb| {
        let command = with_value.then(|| Ack::create(fbb, &AckArgs {}).as_union_value());
        let cmd = GameCommand::create(
            fbb,
            &GameCommandArgs {
                command_type: Command(command_type),
                command,
            },
        );
        Some(cmd.as_union_value())
    })
}

#[test]
fn structural_garbage_is_malformed() {
    let codec = Codec::default();
    let any = |_: &InvalidFlatbuffer| true;
    let out_of_bounds = |e: &InvalidFlatbuffer| {
        matches!(
            e,
            InvalidFlatbuffer::RangeOutOfBounds { .. }
                | InvalidFlatbuffer::SignedOffsetOutOfBounds { .. }
        )
    };
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("empty", vec![], Want::Is(DecodeError::Empty)),
        ("one byte", vec![0], Want::Malformed(out_of_bounds)),
        (
            "root offset past the end",
            vec![0xf0, 0, 0, 0, 0, 0, 0, 0],
            Want::Malformed(out_of_bounds),
        ),
        ("all ones", vec![0xff; 64], Want::Malformed(any)),
        (
            "text",
            b"GET / HTTP/1.1\r\nHost: tavern\r\n\r\n".to_vec(),
            Want::Malformed(any),
        ),
        // Zeros read as a table whose vtable is empty: well-formed, but it has no body.
        (
            "all zeros",
            vec![0; 64],
            Want::Is(DecodeError::MissingBody {
                union: "ClientBody",
            }),
        ),
    ];
    for (case, bytes, want) in cases {
        check::<ClientMessageT>(case, &codec, &bytes, want, ErrorCode::Malformed);
    }
}

#[test]
fn truncation_never_yields_a_different_message() {
    fn check_prefixes<M: Envelope + Debug + PartialEq>(codec: &Codec, samples: Vec<M>) {
        for sample in samples {
            let bytes = codec.encode(&sample).expect("samples encode");
            for len in 1..bytes.len() {
                let case = format!("{sample:?} cut to {len} of {} bytes", bytes.len());
                let prefix = bytes.get(..len).expect("len < bytes.len()");
                match codec.decode::<M>(prefix) {
                    // Cutting only trailing alignment padding leaves the message intact; a cut
                    // must never turn it into a different message.
                    Ok(message) => assert_eq!(message, sample, "{case}"),
                    Err(err) => assert_eq!(err.code(), ErrorCode::Malformed, "{case}: {err}"),
                }
            }
        }
    }
    let codec = Codec::default();
    check_prefixes(&codec, client_samples());
    check_prefixes(&codec, server_samples());
    check_prefixes(&codec, service_samples());
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let default = Codec::default();
    let small = Codec::new(Limits::with_max_frame_bytes(100));
    let valid = small
        .encode(&ServerMessageT::ack(1))
        .expect("an ack is tiny");
    let cases: Vec<(&str, &Codec, Vec<u8>, usize)> = vec![
        (
            "default limit plus one",
            &default,
            vec![0; MAX_FRAME_BYTES + 1],
            MAX_FRAME_BYTES,
        ),
        ("small limit plus one", &small, vec![0; 101], 100),
        // Valid bytes padded past the limit are still refused: the limit is on the frame.
        (
            "valid message padded",
            &small,
            [valid.as_slice(), &[0; 100]].concat(),
            100,
        ),
    ];
    for (case, codec, bytes, max) in cases {
        let want = Want::Is(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
        check::<ServerMessageT>(case, codec, &bytes, want, ErrorCode::TooLarge);
    }
}

#[test]
fn unions_without_a_known_value_are_refused() {
    let codec = Codec::default();
    let client: Vec<(&str, Vec<u8>, Want, ErrorCode)> = vec![
        (
            "unknown body type",
            raw_envelope(200, ack_table),
            Want::Is(DecodeError::UnknownBody {
                union: "ClientBody",
                type_id: 200,
            }),
            ErrorCode::UnknownMessage,
        ),
        (
            "first body type after the known ones",
            raw_envelope(ClientBody::ENUM_MAX + 1, ack_table),
            Want::Is(DecodeError::UnknownBody {
                union: "ClientBody",
                type_id: ClientBody::ENUM_MAX + 1,
            }),
            ErrorCode::UnknownMessage,
        ),
        (
            "no body",
            raw_envelope(0, |_| None),
            Want::Is(DecodeError::MissingBody {
                union: "ClientBody",
            }),
            ErrorCode::Malformed,
        ),
        (
            "explicit NONE type with a value",
            raw_envelope_forced(0, ack_table),
            Want::Is(DecodeError::MissingBody {
                union: "ClientBody",
            }),
            ErrorCode::Malformed,
        ),
        (
            // NONE is the default, so a plain builder leaves it out: a value without a type.
            "implicit NONE type with a value",
            raw_envelope(0, ack_table),
            Want::Malformed(|e| matches!(e, InvalidFlatbuffer::InconsistentUnion { .. })),
            ErrorCode::Malformed,
        ),
        (
            "body type without a value",
            raw_envelope(ClientBody::Hello.0, |_| None),
            Want::Malformed(|e| matches!(e, InvalidFlatbuffer::InconsistentUnion { .. })),
            ErrorCode::Malformed,
        ),
        (
            "unknown game command",
            raw_command(99, true),
            Want::Is(DecodeError::UnknownBody {
                union: "Command",
                type_id: 99,
            }),
            ErrorCode::UnknownMessage,
        ),
        (
            "empty game command",
            raw_command(0, false),
            Want::Is(DecodeError::MissingBody { union: "Command" }),
            ErrorCode::Malformed,
        ),
    ];
    for (case, bytes, want, code) in client {
        check::<ClientMessageT>(case, &codec, &bytes, want, code);
    }
    // The other envelopes share the layout, so the same bytes exercise their checks.
    let unknown = raw_envelope(250, ack_table);
    let want = |union| {
        Want::Is(DecodeError::UnknownBody {
            union,
            type_id: 250,
        })
    };
    check::<ServerMessageT>(
        "server: unknown body",
        &codec,
        &unknown,
        want("ServerBody"),
        ErrorCode::UnknownMessage,
    );
    check::<ServiceMessageT>(
        "service: unknown body",
        &codec,
        &unknown,
        want("ServiceBody"),
        ErrorCode::UnknownMessage,
    );
    let empty = raw_envelope(0, |_| None);
    let want = |union| Want::Is(DecodeError::MissingBody { union });
    check::<ServerMessageT>(
        "server: no body",
        &codec,
        &empty,
        want("ServerBody"),
        ErrorCode::Malformed,
    );
    check::<ServiceMessageT>(
        "service: no body",
        &codec,
        &empty,
        want("ServiceBody"),
        ErrorCode::Malformed,
    );
}

#[test]
fn bad_fields_are_malformed() {
    let codec = Codec::default();

    // A ChatSend whose table lacks its required channel and text (an empty table in its place).
    let missing_required = raw_envelope(ClientBody::ChatSend.0, ack_table);

    // Invalid UTF-8 where a string should be.
    let join = ClientMessageT::request(
        1,
        ClientBodyT::RoomJoin(Box::new(build!(RoomJoinT {
            room: "lobby".to_owned()
        }))),
    );
    let mut bad_utf8 = codec.encode(&join).expect("sample encodes");
    let at = find(&bad_utf8, b"lobby");
    bad_utf8.splice(at..at + 2, [0xc3, 0x28]);

    // A vector that claims far more elements than the buffer holds.
    let queue = build!(QueueJoinT {
        mode: "m".to_owned(),
        regions: Some(vec!["eu".to_owned()]),
        party_members: None
    });
    let mut huge_vector = codec
        .encode(&ClientMessageT::request(
            1,
            ClientBodyT::QueueJoin(Box::new(queue)),
        ))
        .expect("encodes");
    let len_at = vector_length_position(&huge_vector);
    huge_vector.splice(len_at..len_at + 4, 0x7fff_ffffu32.to_le_bytes());

    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "required fields missing",
            missing_required,
            Want::Malformed(|e| matches!(e, InvalidFlatbuffer::MissingRequiredField { .. })),
        ),
        (
            "invalid utf-8",
            bad_utf8,
            Want::Malformed(|e| matches!(e, InvalidFlatbuffer::Utf8Error { .. })),
        ),
        (
            "vector length past the end",
            huge_vector,
            Want::Malformed(|e| matches!(e, InvalidFlatbuffer::RangeOutOfBounds { .. })),
        ),
    ];
    for (case, bytes, want) in cases {
        check::<ClientMessageT>(case, &codec, &bytes, want, ErrorCode::Malformed);
    }
}

#[test]
fn small_messages_that_unpack_into_huge_ones_are_refused() {
    let codec = Codec::default();

    // 10,000 offsets to one shared table: 40 KB on the wire, 10,000 tables to unpack.
    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("bob");
    let friend = FriendPresence::create(
        &mut fbb,
        &FriendPresenceArgs {
            user_id: Some(&Uuid::new(&[2; 16])),
            username: Some(name),
            state: PresenceState::Online,
        },
    );
    let friends = fbb.create_vector(&vec![friend; 10_000]);
    let list = FriendsPresenceList::create(
        &mut fbb,
        &FriendsPresenceListArgs {
            friends: Some(friends),
        },
    );
    let root = ServerMessage::create(
        &mut fbb,
        &ServerMessageArgs {
            cid: 0,
            body_type: ServerBody::FriendsPresenceList,
            body: Some(list.as_union_value()),
        },
    );
    fbb.finish_minimal(root);
    let many_tables = fbb.finished_data().to_vec();
    assert!(many_tables.len() <= MAX_FRAME_BYTES);

    // 3,000 offsets to one 16 KiB string: 28 KB on the wire, 48 MB to unpack.
    let mut fbb = FlatBufferBuilder::new();
    let region = fbb.create_string(&"r".repeat(16 * 1024));
    let mode = fbb.create_string("m");
    let regions = fbb.create_vector(&vec![region; 3_000]);
    let join = QueueJoin::create(
        &mut fbb,
        &QueueJoinArgs {
            mode: Some(mode),
            regions: Some(regions),
            party_members: None,
        },
    );
    let root = ClientMessage::create(
        &mut fbb,
        &ClientMessageArgs {
            cid: 0,
            body_type: ClientBody::QueueJoin,
            body: Some(join.as_union_value()),
        },
    );
    fbb.finish_minimal(root);
    let apparent = fbb.finished_data().to_vec();
    assert!(apparent.len() <= MAX_FRAME_BYTES);

    check::<ServerMessageT>(
        "one table referenced 10,000 times",
        &codec,
        &many_tables,
        Want::Malformed(|e| matches!(e, InvalidFlatbuffer::TooManyTables)),
        ErrorCode::Malformed,
    );
    check::<ClientMessageT>(
        "one string referenced 3,000 times",
        &codec,
        &apparent,
        Want::Malformed(|e| matches!(e, InvalidFlatbuffer::ApparentSizeTooLarge)),
        ErrorCode::Malformed,
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    // The schema is not recursive, so depth is bounded by it; the limit still has to hold.
    let events = server_samples()
        .into_iter()
        .find(|m| m.body.as_game_events().is_some())
        .expect("samples have events");
    let bytes = Codec::default().encode(&events).expect("sample encodes");
    let shallow = Codec::new(Limits {
        max_depth: 3,
        ..Limits::default()
    });
    check::<ServerMessageT>(
        "game events with max_depth 3",
        &shallow,
        &bytes,
        Want::Malformed(|e| matches!(e, InvalidFlatbuffer::DepthLimitReached)),
        ErrorCode::Malformed,
    );
    assert!(Codec::default().decode_server(&bytes).is_ok());
}

#[test]
fn newer_peers_values_inside_messages_pass_through() {
    // Forward compatibility: an enum value or an event kind this build does not know decodes;
    // the caller decides (an unknown event decodes as NONE and is skipped by clients).
    let codec = Codec::default();
    let presence = build!(PresenceUpdateT {
        user_id: id(2),
        state: PresenceState(42)
    });
    let bytes = codec
        .encode(&ServerMessageT::push(ServerBodyT::PresenceUpdate(
            Box::new(presence.clone()),
        )))
        .expect("encodes");
    let back = codec
        .decode_server(&bytes)
        .expect("unknown enum values decode");
    assert_eq!(back.body.as_presence_update(), Some(&presence));

    let mut fbb = FlatBufferBuilder::new();
    let ack = Ack::create(&mut fbb, &AckArgs {});
    let unknown = GameEvent::create(
        &mut fbb,
        &GameEventArgs {
            event_type: GameEventBody(77),
            event: Some(ack.as_union_value()),
        },
    );
    let player = Uuid::new(&[1; 16]);
    let mana = ManaChanged::create(
        &mut fbb,
        &ManaChangedArgs {
            player: Some(&player),
            mana: 2,
            max_mana: 3,
        },
    );
    let known = GameEvent::create(
        &mut fbb,
        &GameEventArgs {
            event_type: GameEventBody::ManaChanged,
            event: Some(mana.as_union_value()),
        },
    );
    let list = fbb.create_vector(&[unknown, known]);
    let events = GameEvents::create(
        &mut fbb,
        &GameEventsArgs {
            first_seq: 3,
            events: Some(list),
        },
    );
    let root = ServerMessage::create(
        &mut fbb,
        &ServerMessageArgs {
            cid: 0,
            body_type: ServerBody::GameEvents,
            body: Some(events.as_union_value()),
        },
    );
    fbb.finish_minimal(root);
    let back = codec
        .decode_server(fbb.finished_data())
        .expect("unknown event kinds decode");
    let events = back
        .body
        .as_game_events()
        .and_then(|e| e.events.clone())
        .expect("events present");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, GameEventBodyT::NONE);
    assert_eq!(
        events[1]
            .event
            .as_mana_changed()
            .map(|m| (m.mana, m.max_mana)),
        Some((2, 3))
    );
}

#[test]
fn unsendable_messages_fail_to_encode() {
    let codec = Codec::default();
    let small = Codec::new(Limits::with_max_frame_bytes(64));
    let chat = build!(ChatSendT {
        channel: Box::new(channel_room("lobby")),
        text: "x".repeat(100)
    });
    let command = build!(GameCommandT {
        command: CommandT::NONE
    });

    let client_cases: Vec<(&str, &Codec, ClientMessageT, EncodeError)> = vec![
        (
            "no body",
            &codec,
            ClientMessageT::request(1, ClientBodyT::NONE),
            EncodeError::MissingBody {
                union: "ClientBody",
            },
        ),
        (
            "empty game command",
            &codec,
            ClientMessageT::request(1, ClientBodyT::GameCommand(Box::new(command))),
            EncodeError::MissingBody { union: "Command" },
        ),
    ];
    for (case, codec, message, want) in client_cases {
        assert_eq!(codec.encode(&message), Err(want), "{case}");
    }
    let chat = ClientMessageT::request(1, ClientBodyT::ChatSend(Box::new(chat)));
    match small.encode(&chat) {
        Err(EncodeError::TooLarge { len, max: 64 }) if len > 64 => {}
        other => panic!("oversize chat: {other:?}"),
    }
    assert_eq!(
        codec.encode(&ServerMessageT::push(ServerBodyT::NONE)),
        Err(EncodeError::MissingBody {
            union: "ServerBody"
        })
    );
    assert_eq!(
        codec.encode(&ServiceMessageT::new(0, ServiceBodyT::NONE)),
        Err(EncodeError::MissingBody {
            union: "ServiceBody"
        })
    );
    assert_eq!(
        EncodeError::TooLarge { len: 65, max: 64 }.code(),
        ErrorCode::TooLarge
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle is in the encoding")
}

/// Where the element count of the encoded `QueueJoin.regions` vector is.
fn vector_length_position(bytes: &[u8]) -> usize {
    let message = flatbuffers::root::<ClientMessage<'_>>(bytes).expect("test input is valid");
    let regions = message
        .body_as_queue_join()
        .and_then(|q| q.regions())
        .expect("regions present");
    let data = regions.bytes().as_ptr() as usize;
    data - bytes.as_ptr() as usize - 4
}
