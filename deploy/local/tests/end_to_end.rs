//! The whole system, as DESIGN and the GCS issue describe the path: `tavern` runs every service;
//! two players register and log in over REST, become friends, link to the GCS (Ada over
//! ENet/DTLS, Bob over WebSocket), see each other come online, chat in the common area and by
//! DM, queue, are matched, get the instance address and their join tokens, join the instance
//! (each over their transport), play a whole game with bots, are back online at the GCS, and see
//! their ratings changed in the account API. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use instance_server::autoplay::{self, Outcome};
use instance_server::catalog::Catalog;
use protocol::tavern::{
    ChannelKind, ChannelT, ChatSendT, ClientBodyT, FriendsPresenceRequestT, HelloT, MatchFoundT, PingT, PresenceState, QueueJoinT,
    ServerBodyT, ServerMessageT, UuidT,
};
use protocol::{PROTOCOL_VERSION, build};
use serde_json::{Value, json};
use transport::{Client, ClientTrust, ServerIdentity};
use uuid::Uuid;

mod support;
use support::{Launcher, WAIT, get, launch, post};

/// Bounds a whole game played by two bots.
const GAME: Duration = Duration::from_secs(120);
/// The bots' pause between steps, well inside the instance's per-link rate limit.
const PACE: Duration = Duration::from_millis(20);

/// One player: their REST identity and their GCS link.
struct Player {
    name: &'static str,
    id: Uuid,
    token: String,
    gcs: Client,
    cid: u32,
}

impl Player {
    async fn request(&mut self, body: ClientBodyT) -> ServerMessageT {
        self.cid += 1;
        let answer = self.gcs.request(self.cid, body, WAIT, |_| {}).await;
        let answer = answer.unwrap_or_else(|e| panic!("{}: no answer: {e}", self.name));
        assert!(answer.body.as_error().is_none(), "{}: refused: {answer:?}", self.name);
        answer
    }

    /// The next push `pick` accepts, skipping others (bounded by count and time).
    async fn push<T>(&mut self, what: &str, pick: impl Fn(&ServerBodyT) -> Option<T>) -> T {
        for _ in 0..10_000 {
            let m = self.gcs.recv(WAIT).await.unwrap_or_else(|e| panic!("{} waiting for {what}: {e}", self.name));
            if m.cid == 0
                && let Some(t) = pick(&m.body)
            {
                return t;
            }
        }
        panic!("{} never got {what}", self.name)
    }

    /// Waits for this player's friend `friend` to be pushed in `state`.
    async fn sees(&mut self, friend: Uuid, state: PresenceState) {
        let what = format!("{friend} {state:?}");
        self.push(&what, |b| match b {
            ServerBodyT::PresenceUpdate(p) if uuid(&p.user_id) == friend && p.state == state => Some(()),
            _ => None,
        })
        .await;
    }

    async fn say(&mut self, channel: ChannelT, text: &str) {
        let send = build!(ChatSendT { channel: Box::new(channel), text: text.to_owned() });
        self.request(ClientBodyT::ChatSend(Box::new(send))).await;
    }

    async fn hears(&mut self, text: &str) -> (Uuid, ChannelKind) {
        self.push(&format!("chat {text:?}"), |b| match b {
            ServerBodyT::ChatMessage(m) if m.text == text => Some((uuid(&m.from_user_id), m.channel.kind)),
            _ => None,
        })
        .await
    }
}

fn uuid(id: &UuidT) -> Uuid {
    Uuid::from_bytes(id.bytes)
}

async fn rest(http: &reqwest::Client, l: &Launcher, path: &str, token: Option<&str>, body: Value) -> Value {
    let (status, answer) = post(http, format!("{}{path}", l.login), token, Some(body)).await;
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    answer
}

/// Registers, logs in again (as a returning player would) and links to the GCS.
async fn arrive(http: &reqwest::Client, l: &Launcher, name: &'static str, enet: Option<[u8; 32]>) -> Player {
    let creds = json!({"username": name, "password": "correct horse battery"});
    let registered = rest(http, l, "/auth/register", None, creds.clone()).await;
    let id: Uuid = registered["user_id"].as_str().and_then(|s| s.parse().ok()).expect("user id");
    let login = rest(http, l, "/auth/login", None, creds).await;
    let token = login["session_token"].as_str().expect("session token").to_owned();
    let gcs = match enet {
        Some(pin) => {
            let addr = l.addresses["gcs enet/dtls"].trim_start_matches("udp://").parse().expect("gcs udp address");
            Client::enet(addr, ClientTrust::PinSha256(pin), WAIT).await
        }
        None => Client::ws(&l.addresses["gcs websocket"], WAIT).await,
    };
    let gcs = gcs.unwrap_or_else(|e| panic!("{name} cannot link: {e}"));
    let mut player = Player { name, id, token: token.clone(), gcs, cid: 0 };
    let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some(token) });
    let welcome = player.request(ClientBodyT::Hello(Box::new(hello))).await;
    assert!(matches!(welcome.body, ServerBodyT::Welcome(_)), "{welcome:?}");
    player
}

/// Joins the instance the GCS named, over the same kind of transport, and plays to the end with
/// a bot.
async fn play(found: MatchFoundT, l: &Launcher, enet: Option<[u8; 32]>, seed: u64) -> Outcome {
    assert_eq!(found.instance.ws_url.as_deref(), Some(l.addresses["instance websocket"].as_str()));
    let mut link = match enet {
        Some(pin) => {
            let addr = format!("{}:{}", found.instance.host, found.instance.udp_port).parse().expect("instance address");
            Client::enet(addr, ClientTrust::PinSha256(pin), WAIT).await
        }
        None => Client::ws(found.instance.ws_url.as_deref().expect("a websocket url"), WAIT).await,
    }
    .expect("links to the instance");
    let catalog = Arc::new(Catalog::standard());
    autoplay::play(&mut link, &found.join_token, catalog, seed, PACE, WAIT).await.expect("plays to the end")
}

/// The account's duel rating: (rating, games).
async fn duel(http: &reqwest::Client, l: &Launcher, token: &str) -> Option<(f64, i64)> {
    let (status, account) = get(http, format!("{}/account", l.login), Some(token)).await;
    assert_eq!(status, 200, "{account}");
    let ratings = account["ratings"].as_array().unwrap_or_else(|| panic!("no ratings on the account: {account}"));
    let duel = ratings.iter().find(|r| r["mode"] == "duel")?;
    Some((duel["rating"].as_f64()?, duel["games"].as_i64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_go_from_registration_to_a_rated_game_over_both_transports() {
    let mut l = launch("end-to-end");
    let http = reqwest::Client::builder().timeout(WAIT).build().expect("http client");
    let pin = ServerIdentity::load_or_create(&l.data_dir.join("tls")).expect("the launcher's certificate").cert_sha256();

    let mut ada = arrive(&http, &l, "ada", Some(pin)).await;
    // Friends through the REST API, before Bob links.
    let (bob_id, bob_token) = {
        let creds = json!({"username": "bob", "password": "correct horse battery"});
        let registered = rest(&http, &l, "/auth/register", None, creds).await;
        let id: Uuid = registered["user_id"].as_str().and_then(|s| s.parse().ok()).expect("user id");
        (id, registered["session_token"].as_str().expect("token").to_owned())
    };
    rest(&http, &l, "/friends/requests", Some(&ada.token), json!({"user_id": bob_id})).await;
    rest(&http, &l, &format!("/friends/requests/{}/accept", ada.id), Some(&bob_token), json!({})).await;
    // Ada asks for her friends' presence: Bob is offline.
    let list = ada.request(ClientBodyT::FriendsPresenceRequest(Box::new(build!(FriendsPresenceRequestT {})))).await;
    let states: Vec<(Uuid, PresenceState)> =
        list.body.as_friends_presence_list().expect("a list").friends.iter().flatten().map(|f| (uuid(&f.user_id), f.state)).collect();
    assert_eq!(states, [(bob_id, PresenceState::Offline)]);

    // Bob logs in (a second session of his) and links over WebSocket: Ada is told.
    let mut bob = {
        let creds = json!({"username": "bob", "password": "correct horse battery"});
        let login = rest(&http, &l, "/auth/login", None, creds).await;
        let token = login["session_token"].as_str().expect("token").to_owned();
        let gcs = Client::ws(&l.addresses["gcs websocket"], WAIT).await.expect("bob links");
        let mut bob = Player { name: "bob", id: bob_id, token: token.clone(), gcs, cid: 0 };
        let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some(token) });
        bob.request(ClientBodyT::Hello(Box::new(hello))).await;
        bob
    };
    let online = ada.push("friend online", |b| b.as_friend_online().map(|f| uuid(&f.friend.user_id))).await;
    assert_eq!(online, bob.id);
    let bobs_list = bob.push("friends presence", |b| b.as_friends_presence_list().map(|l| l.friends.clone())).await;
    let states: Vec<PresenceState> = bobs_list.iter().flatten().map(|f| f.state).collect();
    assert_eq!(states, [PresenceState::Online], "bob sees ada");

    // Chat: the common area and a direct message.
    ada.say(build!(ChannelT { kind: ChannelKind::Global }), "good evening, tavern").await;
    assert_eq!(bob.hears("good evening, tavern").await, (ada.id, ChannelKind::Global));
    let to_ada = build!(ChannelT { kind: ChannelKind::Direct, user_id: Some(UuidT::from_bytes(*ada.id.as_bytes())) });
    bob.say(to_ada, "a game?").await;
    assert_eq!(ada.hears("a game?").await, (bob.id, ChannelKind::Direct));

    // Both queue; each sees the other go in queue, then in match.
    let before = (duel(&http, &l, &ada.token).await, duel(&http, &l, &bob.token).await);
    assert_eq!(before, (None, None), "no rating before the first game");
    let join = || ClientBodyT::QueueJoin(Box::new(build!(QueueJoinT { mode: "duel".into() })));
    let status = ada.request(join()).await;
    assert!(status.body.as_queue_status().is_some(), "{status:?}");
    // Queueing twice is refused with its code; the first ticket stays.
    ada.cid += 1;
    let twice = ada.gcs.request(ada.cid, join(), WAIT, |_| {}).await.expect("an answer");
    let code = twice.body.as_error().and_then(|e| e.error_code());
    assert_eq!(code, Some(protocol::ErrorCode::AlreadyQueued), "{twice:?}");
    bob.sees(ada.id, PresenceState::InQueue).await;
    bob.request(join()).await;
    let found_ada = ada.push("match found", |b| b.as_match_found().map(|f| (*f).clone())).await;
    let found_bob = bob.push("match found", |b| b.as_match_found().map(|f| (*f).clone())).await;
    assert_eq!(found_ada.match_id, found_bob.match_id);
    assert_eq!(found_ada.opponents.as_ref().map(|o| o.iter().map(|p| uuid(&p.user_id)).collect::<Vec<_>>()), Some(vec![bob.id]));
    assert_ne!(found_ada.join_token, found_bob.join_token, "each player has their own join token");
    bob.sees(ada.id, PresenceState::InMatch).await;

    // The game, Ada over ENet/DTLS and Bob over WebSocket, both played by bots.
    // The GCS links stay up meanwhile: a client heartbeats (the GCS closes a link silent for 6 s).
    let game = async {
        let both = async { tokio::join!(play(found_ada, &l, Some(pin), 1), play(found_bob, &l, None, 2)) };
        tokio::pin!(both);
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                outcomes = &mut both => break outcomes,
                _ = beat.tick() => {
                    for p in [&mut ada, &mut bob] {
                        p.cid += 1;
                        let ping = ClientBodyT::Ping(Box::new(build!(PingT { client_time_ms: 0 })));
                        p.gcs.send_request(p.cid, ping).expect("heartbeat sent");
                    }
                }
            }
        }
    };
    let (ada_outcome, bob_outcome) = tokio::time::timeout(GAME, game).await.expect("the game ends in time");
    let ada_won = match (ada_outcome, bob_outcome) {
        (Outcome::Won, Outcome::Lost) => true,
        (Outcome::Lost, Outcome::Won) => false,
        other => panic!("one winner and one loser expected (a draw is rare): {other:?}"),
    };

    // Back at the GCS: once the result is stored, each sees the other online again.
    ada.sees(bob.id, PresenceState::Online).await;
    bob.sees(ada.id, PresenceState::Online).await;
    // The ratings moved, in opposite directions, and count one game.
    let (ada_after, bob_after) = (duel(&http, &l, &ada.token).await, duel(&http, &l, &bob.token).await);
    let ((ada_rating, ada_games), (bob_rating, bob_games)) = (ada_after.expect("ada rated"), bob_after.expect("bob rated"));
    assert_eq!((ada_games, bob_games), (1, 1));
    let winner_up = if ada_won { ada_rating > 1500.0 && bob_rating < 1500.0 } else { bob_rating > 1500.0 && ada_rating < 1500.0 };
    assert!(winner_up, "ratings after: ada {ada_rating}, bob {bob_rating}, ada won {ada_won}");
    println!("ada {ada_rating:.1}, bob {bob_rating:.1}");

    let status = l.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_drops_off_the_instance_rejoins_with_a_fresh_token_from_the_gcs() {
    let mut l = launch("rejoin");
    let http = reqwest::Client::builder().timeout(WAIT).build().expect("http client");
    let mut ada = arrive(&http, &l, "ada", None).await;
    let mut bob = arrive(&http, &l, "bob", None).await;
    let join = || ClientBodyT::QueueJoin(Box::new(build!(QueueJoinT { mode: "duel".into() })));
    ada.request(join()).await;
    bob.request(join()).await;
    let found = ada.push("match found", |b| b.as_match_found().map(|f| (*f).clone())).await;
    let found_bob = bob.push("match found", |b| b.as_match_found().map(|f| (*f).clone())).await;
    let instance = found.instance.ws_url.clone().expect("a websocket url");
    let enter = |token: String| {
        let instance = instance.clone();
        async move {
            let mut link = Client::ws(&instance, WAIT).await.expect("links to the instance");
            let join = build!(protocol::tavern::JoinMatchT { protocol_version: PROTOCOL_VERSION, join_token: token });
            let answer = link.request(1, ClientBodyT::JoinMatch(Box::new(join)), WAIT, |_| {}).await.expect("an answer");
            (link, answer)
        }
    };
    let (mut ada_link, first) = enter(found.join_token.clone()).await;
    assert!(first.body.as_game_snapshot().is_some(), "{first:?}");
    let (_bob_link, answer) = enter(found_bob.join_token.clone()).await;
    assert!(answer.body.as_game_snapshot().is_some(), "{answer:?}");

    // Ada's link to the instance drops; her join token is spent.
    ada_link.close(0).await;
    let (_, replayed) = enter(found.join_token.clone()).await;
    assert_eq!(replayed.body.as_error().and_then(|e| e.error_code()), Some(protocol::ErrorCode::JoinTokenReplayed), "{replayed:?}");
    // The GCS gets her a fresh one for the same match and instance.
    let rejoin = build!(protocol::tavern::RejoinRequestT { match_id: found.match_id.clone() });
    let again = ada.request(ClientBodyT::RejoinRequest(Box::new(rejoin))).await;
    let again = again.body.as_match_found().expect("a match found answer").clone();
    assert_eq!((&again.match_id, &again.instance.instance_id), (&found.match_id, &found.instance.instance_id));
    assert_ne!(again.join_token, found.join_token);
    let (_ada_link, back) = enter(again.join_token).await;
    let snapshot = back.body.as_game_snapshot().expect("a snapshot on return");
    assert_eq!(uuid(&snapshot.match_id), uuid(&found.match_id));
    // A match that is not hers is refused.
    let other = build!(protocol::tavern::RejoinRequestT { match_id: UuidT::from_bytes(*Uuid::new_v4().as_bytes()) });
    ada.cid += 1;
    let refused = ada.gcs.request(ada.cid, ClientBodyT::RejoinRequest(Box::new(other)), WAIT, |_| {}).await.expect("an answer");
    assert_eq!(refused.body.as_error().and_then(|e| e.error_code()), Some(protocol::ErrorCode::MatchNotFound), "{refused:?}");

    let status = l.terminate();
    assert!(status.success(), "{status:?}");
}
