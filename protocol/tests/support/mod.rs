//! Sample messages shared by the protocol tests: at least one of every union member of every
//! envelope, with every field set to a value other than its default so a dropped field shows.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use protocol::build;
use protocol::tavern::*;

/// A recognisable id: every byte `n`.
pub fn id(n: u8) -> UuidT {
    UuidT::from_bytes([n; 16])
}

pub fn player(n: u8, name: &str) -> PlayerInfoT {
    build!(PlayerInfoT {
        user_id: id(n),
        username: name.to_owned()
    })
}

pub fn channel_room(room: &str) -> ChannelT {
    build!(ChannelT {
        kind: ChannelKind::Room,
        room: Some(room.to_owned()),
        user_id: None,
        party_id: None
    })
}

pub fn channel_direct(n: u8) -> ChannelT {
    build!(ChannelT {
        kind: ChannelKind::Direct,
        room: None,
        user_id: Some(id(n)),
        party_id: None
    })
}

pub fn unit_target(unit_id: u32) -> TargetT {
    TargetT {
        kind: TargetKind::Unit,
        unit_id,
        player: UuidT::NIL,
    }
}

pub fn hero_target(n: u8) -> TargetT {
    TargetT {
        kind: TargetKind::Hero,
        unit_id: 0,
        player: id(n),
    }
}

pub fn address() -> InstanceAddressT {
    build!(InstanceAddressT {
        instance_id: "instance-7500".to_owned(),
        host: "127.0.0.1".to_owned(),
        udp_port: 7500,
        ws_url: Some("ws://127.0.0.1:7500/ws".to_owned()),
    })
}

pub fn unit(unit_id: u32) -> UnitT {
    build!(UnitT {
        unit_id,
        card_id: "stone_guard".to_owned(),
        attack: 2,
        health: 5,
        max_health: 6,
        keywords: Some(vec![Keyword::Guard, Keyword::Charge]),
        can_attack: true,
    })
}

pub fn hand_card(card_instance_id: u32) -> HandCardT {
    build!(HandCardT {
        card_instance_id,
        card_id: "fire_bolt".to_owned(),
        cost: 3,
        attack: 0,
        health: 0
    })
}

pub fn chat_message(id_: i64) -> ChatMessageT {
    build!(ChatMessageT {
        id: id_,
        channel: Box::new(channel_direct(2)),
        from_user_id: id(2),
        from_username: "bob".to_owned(),
        text: "gg, rematch? ünïcödé ✓".to_owned(),
        sent_at_ms: 1_700_000_000_123,
    })
}

fn player_state(n: u8, name: &str) -> PlayerStateT {
    build!(PlayerStateT {
        player: Box::new(player(n, name)),
        health: 27,
        max_health: 30,
        mana: 3,
        max_mana: 5,
        hand_count: 4,
        deck_count: 13,
        board: Some(vec![unit(10 + u32::from(n)), unit(20 + u32::from(n))]),
    })
}

pub fn game_over() -> GameOverT {
    build!(GameOverT {
        winner: Some(id(1)),
        draw: false,
        reason: GameOverReason::Conceded
    })
}

/// One event of every kind.
pub fn all_events() -> Vec<GameEventT> {
    use GameEventBodyT as E;
    let events = vec![
        E::CardDrawn(Box::new(build!(CardDrawnT {
            player: id(1),
            card: Some(Box::new(hand_card(5))),
            burned: true,
            hand_count: 5,
            deck_count: 12,
        }))),
        E::CardPlayed(Box::new(build!(CardPlayedT {
            player: id(1),
            card_instance_id: 5,
            card_id: "fire_bolt".to_owned(),
            target: Some(hero_target(2)),
        }))),
        E::UnitSummoned(Box::new(build!(UnitSummonedT {
            player: id(1),
            unit: Box::new(unit(31)),
            position: 2
        }))),
        E::AttackPerformed(Box::new(build!(AttackPerformedT {
            attacker_unit_id: 31,
            target: unit_target(22)
        }))),
        E::DamageDealt(Box::new(build!(DamageDealtT {
            source: Some(unit_target(31)),
            target: unit_target(22),
            amount: 2,
            health_after: -1,
        }))),
        E::Healed(Box::new(build!(HealedT {
            source: None,
            target: hero_target(1),
            amount: 3,
            health_after: 30
        }))),
        E::UnitDied(Box::new(build!(UnitDiedT {
            player: id(2),
            unit_id: 22
        }))),
        E::TurnStarted(Box::new(build!(TurnStartedT {
            player: id(2),
            turn: 9,
            deadline_ms: 1_700_000_075_000
        }))),
        E::TurnEnded(Box::new(build!(TurnEndedT {
            player: id(1),
            turn: 8,
            timed_out: true
        }))),
        E::ManaChanged(Box::new(build!(ManaChangedT {
            player: id(2),
            mana: 5,
            max_mana: 5
        }))),
        E::GameOver(Box::new(game_over())),
    ];
    events
        .into_iter()
        .map(|event| build!(GameEventT { event }))
        .collect()
}

/// One of every command.
pub fn all_commands() -> Vec<CommandT> {
    vec![
        CommandT::PlayCard(Box::new(build!(PlayCardT {
            card_instance_id: 5,
            target: Some(unit_target(22)),
            position: 1
        }))),
        CommandT::Attack(Box::new(build!(AttackT {
            attacker_unit_id: 31,
            target: hero_target(2)
        }))),
        CommandT::EndTurn(Box::new(build!(EndTurnT {}))),
        CommandT::Concede(Box::new(build!(ConcedeT {}))),
    ]
}

/// One message of every `ClientBody` member (and every command).
pub fn client_samples() -> Vec<ClientMessageT> {
    use ClientBodyT as B;
    let mut bodies = vec![
        B::Hello(Box::new(build!(HelloT {
            protocol_version: protocol::PROTOCOL_VERSION,
            token: Some("eyJhbGciOiJIUzI1NiJ9.e30.sig".to_owned()),
            resume_token: Some(String::new()),
            client_name: Some("tavern-godot/0.1 (Linux)".to_owned()),
        }))),
        B::Goodbye(Box::new(build!(GoodbyeT {}))),
        B::Ping(Box::new(build!(PingT {
            client_time_ms: 123_456
        }))),
        B::FriendsPresenceRequest(Box::new(build!(FriendsPresenceRequestT {}))),
        B::ChatSend(Box::new(build!(ChatSendT {
            channel: Box::new(channel_room("lobby")),
            text: "hello all".to_owned()
        }))),
        B::RoomJoin(Box::new(build!(RoomJoinT {
            room: "lobby".to_owned()
        }))),
        B::RoomLeave(Box::new(build!(RoomLeaveT {
            room: "lobby".to_owned()
        }))),
        B::RoomMembersRequest(Box::new(build!(RoomMembersRequestT {
            room: "lobby".to_owned()
        }))),
        B::ChatHistoryRequest(Box::new(build!(ChatHistoryRequestT {
            channel: Box::new(channel_direct(2)),
            before_id: 9_000_000_000,
            limit: 50,
        }))),
        B::QueueJoin(Box::new(build!(QueueJoinT {
            mode: "ranked_1v1".to_owned(),
            regions: Some(vec!["eu-west".to_owned(), "eu-central".to_owned()]),
            party_members: Some(vec![id(3), id(4)]),
        }))),
        B::QueueLeave(Box::new(build!(QueueLeaveT {}))),
        B::QueueStatusRequest(Box::new(build!(QueueStatusRequestT {}))),
        B::JoinMatch(Box::new(build!(JoinMatchT {
            protocol_version: 1,
            join_token: "join.token.mac".to_owned()
        }))),
        B::SnapshotRequest(Box::new(build!(SnapshotRequestT {}))),
        B::RejoinRequest(Box::new(build!(RejoinRequestT { match_id: id(6) }))),
    ];
    bodies.extend(
        all_commands()
            .into_iter()
            .map(|command| B::GameCommand(Box::new(build!(GameCommandT { command })))),
    );
    bodies
        .into_iter()
        .zip(1..)
        .map(|(body, cid)| ClientMessageT::request(cid, body))
        .collect()
}

/// One message of every `ServerBody` member (the `GameEvents` one holds every event).
pub fn server_samples() -> Vec<ServerMessageT> {
    use ServerBodyT as B;
    let bodies = vec![
        B::Welcome(Box::new(build!(WelcomeT {
            session_id: id(9),
            resume_token: "resume-secret".to_owned(),
            user_id: id(1),
            username: "alice".to_owned(),
            server_time_ms: 1_700_000_000_000,
            heartbeat_interval_ms: 5_000,
            resumed: true,
            missed_pushes: 3,
        }))),
        B::Error(Box::new(build!(ErrorT {
            code: 6000,
            message: "not your turn".to_owned(),
            closes_link: true
        }))),
        B::Ack(Box::new(build!(AckT {}))),
        B::Pong(Box::new(build!(PongT {
            client_time_ms: 123_456,
            server_time_ms: 1_700_000_000_001
        }))),
        B::PresenceUpdate(Box::new(build!(PresenceUpdateT {
            user_id: id(2),
            state: PresenceState::InMatch
        }))),
        B::FriendsPresenceList(Box::new(build!(FriendsPresenceListT {
            friends: Some(vec![
                build!(FriendPresenceT {
                    user_id: id(2),
                    username: "bob".to_owned(),
                    state: PresenceState::InQueue
                }),
                build!(FriendPresenceT {
                    user_id: id(3),
                    username: "carol".to_owned(),
                    state: PresenceState::Offline
                }),
            ]),
        }))),
        B::FriendRequestReceived(Box::new(build!(FriendRequestReceivedT {
            from: Box::new(player(3, "carol"))
        }))),
        B::FriendAdded(Box::new(build!(FriendAddedT {
            friend: Box::new(player(3, "carol")),
            state: PresenceState::Online
        }))),
        B::FriendRemoved(Box::new(build!(FriendRemovedT { user_id: id(3) }))),
        B::FriendOnline(Box::new(build!(FriendOnlineT {
            friend: Box::new(player(2, "bob"))
        }))),
        B::ChatSent(Box::new(build!(ChatSentT {
            id: 77,
            sent_at_ms: 1_700_000_000_050
        }))),
        B::ChatMessage(Box::new(chat_message(77))),
        B::RoomMembers(Box::new(build!(RoomMembersT {
            room: "lobby".to_owned(),
            members: Some(vec![player(1, "alice"), player(2, "bob")]),
            truncated: true,
        }))),
        B::RoomMemberChanged(Box::new(build!(RoomMemberChangedT {
            room: "lobby".to_owned(),
            member: Box::new(player(4, "dave")),
            joined: true,
        }))),
        B::ChatHistory(Box::new(build!(ChatHistoryT {
            channel: Box::new(channel_direct(2)),
            messages: Some(vec![chat_message(77), chat_message(76)]),
            has_more: true,
        }))),
        B::QueueStatus(Box::new(build!(QueueStatusT {
            state: QueueState::Searching,
            ticket_id: Some(id(5)),
            mode: Some("ranked_1v1".to_owned()),
            position: 4,
            estimated_wait_ms: 12_000,
            waited_ms: 3_500,
        }))),
        B::MatchFound(Box::new(build!(MatchFoundT {
            match_id: id(6),
            instance: Box::new(address()),
            join_token: "join.token.mac".to_owned(),
            join_by_ms: 1_700_000_060_000,
            mode: Some("ranked_1v1".to_owned()),
            opponents: Some(vec![player(2, "bob")]),
        }))),
        B::GameSnapshot(Box::new(build!(GameSnapshotT {
            match_id: id(6),
            last_seq: 41,
            turn: 8,
            active_player: id(1),
            turn_deadline_ms: 1_700_000_075_000,
            you: Box::new(player_state(1, "alice")),
            opponent: Box::new(player_state(2, "bob")),
            hand: Some(vec![hand_card(5), hand_card(6)]),
            game_over: Some(Box::new(game_over())),
        }))),
        B::GameEvents(Box::new(build!(GameEventsT {
            first_seq: 42,
            events: Some(all_events())
        }))),
    ];
    let mut messages: Vec<ServerMessageT> = bodies
        .into_iter()
        .zip(1..)
        .map(|(body, cid)| ServerMessageT::response(cid, body))
        .collect();
    messages.push(ServerMessageT::push(ServerBodyT::PresenceUpdate(Box::new(
        build!(PresenceUpdateT {
            user_id: id(2),
            state: PresenceState::Offline,
        }),
    ))));
    messages
}

/// One message of every `ServiceBody` member.
pub fn service_samples() -> Vec<ServiceMessageT> {
    use ServiceBodyT as B;
    let bodies = vec![
        B::ServiceHello(Box::new(build!(ServiceHelloT {
            protocol_version: 1,
            service_token: "service-token".to_owned(),
            node_id: "gcs-0".to_owned(),
            role: ServiceRole::Instance,
        }))),
        B::ServiceWelcome(Box::new(build!(ServiceWelcomeT {
            node_id: "matchmaker-0".to_owned(),
            heartbeat_interval_ms: 2_000,
            server_time_ms: 1_700_000_000_000,
        }))),
        B::Error(Box::new(build!(ErrorT {
            code: 5002,
            message: "no capacity".to_owned(),
            closes_link: false
        }))),
        B::Ack(Box::new(build!(AckT {}))),
        B::Ping(Box::new(build!(PingT { client_time_ms: 5 }))),
        B::Pong(Box::new(build!(PongT {
            client_time_ms: 5,
            server_time_ms: 6
        }))),
        B::EnqueueTicket(Box::new(build!(EnqueueTicketT {
            ticket_id: id(5),
            players: Some(vec![player(1, "alice"), player(3, "carol")]),
            mode: "ranked_1v1".to_owned(),
            regions: Some(vec!["eu-west".to_owned()]),
            gcs_node_id: "gcs-0".to_owned(),
            party_id: Some(id(8)),
        }))),
        B::CancelTicket(Box::new(build!(CancelTicketT { ticket_id: id(5) }))),
        B::TicketStatusRequest(Box::new(build!(TicketStatusRequestT { ticket_id: id(5) }))),
        B::TicketStatus(Box::new(build!(TicketStatusT {
            ticket_id: id(5),
            state: QueueState::Matched,
            position: 1,
            estimated_wait_ms: 100,
            waited_ms: 9_000,
        }))),
        B::MatchFoundPush(Box::new(build!(MatchFoundPushT {
            match_id: id(6),
            mode: "ranked_1v1".to_owned(),
            instance: Box::new(address()),
            players: Some(vec![
                build!(MatchPlayerT {
                    player: Box::new(player(1, "alice")),
                    ticket_id: id(5),
                    join_token: "t1".to_owned(),
                    team: 0
                }),
                build!(MatchPlayerT {
                    player: Box::new(player(2, "bob")),
                    ticket_id: id(7),
                    join_token: "t2".to_owned(),
                    team: 1
                }),
            ]),
            join_by_ms: 1_700_000_060_000,
        }))),
        B::TicketExpired(Box::new(build!(TicketExpiredT {
            ticket_id: id(5),
            user_ids: Some(vec![id(1), id(3)])
        }))),
        B::InstanceReady(Box::new(build!(InstanceReadyT {
            address: Box::new(address()),
            free_slots: 16
        }))),
        B::MatchResult(Box::new(build!(MatchResultT {
            match_id: id(6),
            mode: Some("ranked_1v1".to_owned()),
            winner: Some(id(1)),
            draw: false,
            reason: GameOverReason::Forfeit,
            players: Some(vec![
                build!(PlayerResultT {
                    user_id: id(1),
                    outcome: PlayerOutcome::Win,
                    team: 0,
                    left_early: false
                }),
                build!(PlayerResultT {
                    user_id: id(2),
                    outcome: PlayerOutcome::Loss,
                    team: 1,
                    left_early: true
                }),
            ]),
            duration_ms: 600_000,
            turns: 14,
            ended_at_ms: 1_700_000_600_000,
            instance_id: Some("instance-7500".to_owned()),
        }))),
        B::MatchResultAck(Box::new(build!(MatchResultAckT { match_id: id(6) }))),
        B::MatchEnded(Box::new(build!(MatchEndedT { match_id: id(6), user_ids: Some(vec![id(1), id(2)]) }))),
        B::RejoinTicket(Box::new(build!(RejoinTicketT { match_id: id(6), user_id: id(1) }))),
    ];
    bodies
        .into_iter()
        .zip(1..)
        .map(|(body, cid)| ServiceMessageT::new(cid, body))
        .collect()
}
