//! The instance server over the real transports on loopback: two clients (one ENet/DTLS, one
//! WebSocket) join with join tokens and bots play whole games; refused joins get their codes; a
//! dropped player rejoins to the same view; a player who stays away forfeits; hostile input is
//! refused while the match goes on. Every wait is bounded.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use instance_server::bot::Bot;
use instance_server::catalog::Catalog;
use instance_server::rules::{Command, PlayerView, Target};
use instance_server::server::{
    Backoff, HostConfig, InstanceHost, InstanceMetrics, MatchSettings, MatchSpec, MemoryReporter,
    SeatSpec,
};
use instance_server::wire::{self, MatchPlayers};
use protocol::tavern::{
    ClientBodyT, ClientMessageT, CommandT, GameEventBodyT, GameOverReason,
    GameSnapshotT, JoinMatchT, PingT, ServerBodyT, ServerMessageT, SnapshotRequestT, UuidT,
};
use protocol::{Codec, ErrorCode, PROTOCOL_VERSION};
use token_service::{JoinIssuer, Keyring};
use tokio_util::sync::CancellationToken;
use transport::{
    ClientEvent, ClientTrust, Delivery, EnetClient, EnetClientConfig, ServerIdentity, WsClient,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);
const INSTANCE: &str = "inst-test";

static CATALOG: LazyLock<Arc<Catalog>> = LazyLock::new(|| Arc::new(Catalog::standard()));

/// A host on loopback with its token issuer and in-memory reporter.
struct Harness {
    host: InstanceHost,
    issuer: JoinIssuer,
    reporter: Arc<MemoryReporter>,
    metrics: InstanceMetrics,
    identity: ServerIdentity,
    shutdown: CancellationToken,
    events: Events,
}

/// The host's events outbox on a SQLite file of its own, and a relay into an in-process log.
struct Events {
    outbox: outbox::Outbox,
    log: outbox::InProcessLog,
    path: std::path::PathBuf,
    relay: CancellationToken,
}

impl Events {
    async fn start() -> Result<Events> {
        let path = std::env::temp_dir().join(format!("tavern-instance-events-{}.db", Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        let db = migrations::Db::open(&url, &migrations::PoolConfig::default()).await?;
        let outbox = outbox::Outbox::new(db, "instance-server");
        let log = outbox::InProcessLog::default();
        let relay = CancellationToken::new();
        let config = outbox::RelayConfig { poll_interval: Duration::from_millis(50), ..Default::default() };
        let metrics = outbox::OutboxMetrics::unregistered("instance-server");
        let sink = outbox::Sink::InProcessLog(log.clone());
        outbox::Relay::spawn_with(outbox.clone(), sink, config, metrics, relay.clone());
        Ok(Events { outbox, log, path, relay })
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.relay.cancel();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Settings for tests: generous rate limits (bots answer instantly), short linger and backoff.
fn settings() -> MatchSettings {
    MatchSettings {
        messages_per_s: 2_000,
        message_burst: 2_000,
        linger: Duration::from_millis(200),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(200),
        },
        ..MatchSettings::default()
    }
}

impl Harness {
    async fn start(settings: MatchSettings, reporter: MemoryReporter) -> Result<Harness> {
        let identity = ServerIdentity::self_signed(&["localhost", "127.0.0.1"])?;
        let keyring = Keyring::generate();
        let issuer = JoinIssuer::new(keyring.clone(), 30)?;
        let reporter = Arc::new(reporter);
        let shutdown = CancellationToken::new();
        let metrics = InstanceMetrics::unregistered();
        let events = Events::start().await?;
        let host = InstanceHost::start_with_outbox(
            HostConfig {
                instance_id: INSTANCE.into(),
                udp_bind: "127.0.0.1:0".parse()?,
                ws_bind: "127.0.0.1:0".parse()?,
                public_host: "127.0.0.1".into(),
                identity: identity.clone(),
                settings,
                max_matches: 16,
                max_tracked_join_tokens: 1024,
                max_links_per_ip: 64,
            },
            keyring,
            CATALOG.clone(),
            reporter.clone(),
            metrics.clone(),
            events.outbox.clone(),
            shutdown.clone(),
        )
        .await?;
        Ok(Harness { host, issuer, reporter, metrics, identity, shutdown, events })
    }

    /// Creates a match between two fresh users with starter decks; returns its players.
    fn create(&self, seed: u64) -> Result<MatchPlayers> {
        let decks = CATALOG.starter_decks();
        ensure!(!decks.is_empty(), "no starter decks");
        let deck = |i: u64| decks[(i % decks.len() as u64) as usize].deck().clone();
        let spec = MatchSpec {
            match_id: Uuid::new_v4(),
            mode: "test".into(),
            seed,
            turn_ms: 75_000,
            seats: [
                SeatSpec { user_id: Uuid::new_v4(), username: "alice".into(), deck: deck(seed) },
                SeatSpec { user_id: Uuid::new_v4(), username: "bob".into(), deck: deck(seed + 1) },
            ],
        };
        let players = MatchPlayers {
            match_id: wire_id(spec.match_id),
            seats: [
                (wire_id(spec.seats[0].user_id), "alice".into()),
                (wire_id(spec.seats[1].user_id), "bob".into()),
            ],
        };
        self.host.create_match(spec)?;
        Ok(players)
    }

    fn token(&self, players: &MatchPlayers, seat: usize) -> Result<String> {
        self.token_for(uuid(&players.match_id), uuid(&players.seats[seat].0), INSTANCE)
    }

    fn token_for(&self, match_id: Uuid, user: Uuid, instance: &str) -> Result<String> {
        Ok(self.issuer.mint(match_id, user, instance, service_runtime::now_ms())?)
    }

    async fn enet(&self) -> Result<Client> {
        let mut config = EnetClientConfig::new(self.host.udp_addr(), ClientTrust::CaPem(self.identity.cert_pem()));
        config.service_interval = Duration::from_millis(2);
        Ok(Client::Enet(EnetClient::connect(config, WAIT).await?))
    }

    async fn ws(&self) -> Result<Client> {
        let url = format!("ws://{}/ws", self.host.ws_addr());
        Ok(Client::Ws(WsClient::connect(&url, None, WAIT).await?))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn wire_id(id: Uuid) -> UuidT {
    UuidT::from_bytes(id.into_bytes())
}

fn uuid(id: &UuidT) -> Uuid {
    Uuid::from_bytes(id.to_bytes())
}

/// One client link, either transport.
enum Client {
    Enet(EnetClient),
    Ws(WsClient),
}

impl Client {
    fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<()> {
        let data = Bytes::from(bytes);
        match self {
            Client::Enet(c) => c.send(data, Delivery::Reliable)?,
            Client::Ws(c) => c.send(data, Delivery::Reliable)?,
        }
        Ok(())
    }

    fn send(&mut self, cid: u32, body: ClientBodyT) -> Result<()> {
        let bytes = Codec::default().encode(&ClientMessageT::request(cid, body))?;
        self.send_bytes(bytes)
    }

    /// The next message; an error when the link closed or nothing came in time.
    async fn recv(&mut self) -> Result<ServerMessageT> {
        let event = match self {
            Client::Enet(c) => tokio::time::timeout(WAIT, c.recv()).await,
            Client::Ws(c) => tokio::time::timeout(WAIT, c.recv()).await,
        }
        .context("no message in time")?;
        match event {
            Some(ClientEvent::Message { data, .. }) => Ok(Codec::default().decode_server(&data)?),
            Some(ClientEvent::Closed(reason)) => bail!("link closed: {reason:?}"),
            None => bail!("link gone"),
        }
    }

    /// The answer to `cid`, skipping pushes (bounded).
    async fn response(&mut self, cid: u32) -> Result<ServerMessageT> {
        for _ in 0..10_000 {
            let m = self.recv().await?;
            if m.cid == cid {
                return Ok(m);
            }
        }
        bail!("no response to cid {cid}")
    }

    /// The next message closing the link, or the link's end (bounded).
    async fn closed(&mut self) -> Result<()> {
        for _ in 0..10_000 {
            if self.recv().await.is_err() {
                return Ok(());
            }
        }
        bail!("link never closed")
    }

    async fn close(&mut self) {
        match self {
            Client::Enet(c) => c.close(0).await,
            Client::Ws(c) => c.close(1000).await,
        }
    }
}

fn join_body(token: &str) -> ClientBodyT {
    ClientBodyT::JoinMatch(Box::new(protocol::build!(JoinMatchT {
        protocol_version: PROTOCOL_VERSION,
        join_token: token.to_owned(),
    })))
}

fn command_body(command: &Command, players: &MatchPlayers) -> ClientBodyT {
    ClientBodyT::GameCommand(Box::new(wire::command_to_wire(command, players)))
}

fn error_code(m: &ServerMessageT) -> Option<ErrorCode> {
    m.body.as_error().and_then(|e| e.error_code())
}

/// A player over a link: joins, keeps a view from snapshots, and plays with a bot.
struct Player {
    client: Client,
    players: MatchPlayers,
    view: PlayerView,
    snapshot: GameSnapshotT,
    next_cid: u32,
}

impl Player {
    async fn join(mut client: Client, token: &str, players: &MatchPlayers) -> Result<Player> {
        client.send(1, join_body(token))?;
        let m = client.response(1).await?;
        let ServerBodyT::GameSnapshot(snapshot) = m.body else {
            bail!("join answered {:?}", m.body)
        };
        let view = wire::view_from_snapshot(&snapshot, &CATALOG, players)?;
        Ok(Player { client, players: players.clone(), view, snapshot: *snapshot, next_cid: 2 })
    }

    fn cid(&mut self) -> u32 {
        self.next_cid += 1;
        self.next_cid
    }

    /// Asks for a snapshot and takes it as the view.
    async fn refresh(&mut self) -> Result<()> {
        let cid = self.cid();
        self.client.send(cid, ClientBodyT::SnapshotRequest(Box::new(protocol::build!(SnapshotRequestT {}))))?;
        let m = self.client.response(cid).await?;
        let ServerBodyT::GameSnapshot(snapshot) = m.body else {
            bail!("snapshot request answered {:?}", m.body)
        };
        self.view = wire::view_from_snapshot(&snapshot, &CATALOG, &self.players)?;
        self.snapshot = *snapshot;
        Ok(())
    }

    /// Sends a command and returns the answer (Ack or Error).
    async fn command(&mut self, command: &Command) -> Result<ServerMessageT> {
        let cid = self.cid();
        self.client.send(cid, command_body(command, &self.players))?;
        self.client.response(cid).await
    }

    /// One step: the bot's command on our turn, else waiting for the opponent's events; then a
    /// fresh view.
    async fn step(&mut self, bot: &mut Bot) -> Result<()> {
        if self.view.my_turn() {
            let command = bot.choose(&self.view, &CATALOG).unwrap_or(Command::EndTurn);
            let answer = self.command(&command).await?;
            ensure!(matches!(answer.body, ServerBodyT::Ack(_)), "{command:?} answered {:?}", answer.body);
        } else {
            let m = self.client.recv().await?;
            ensure!(m.cid == 0, "unexpected response {m:?}");
        }
        self.refresh().await
    }
}

/// Plays until the game is over for both players (bounded).
async fn play_out(a: &mut Player, b: &mut Player, seed: u64) -> Result<()> {
    let (mut bot_a, mut bot_b) = (Bot::new(seed * 2), Bot::new(seed * 2 + 1));
    let both = async { tokio::join!(play_to_end(a, &mut bot_a), play_to_end(b, &mut bot_b)) };
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(90), both)
        .await
        .context("game took too long")?;
    ra.context("player a")?;
    rb.context("player b")
}

async fn play_to_end(p: &mut Player, bot: &mut Bot) -> Result<()> {
    for _ in 0..5_000 {
        if p.view.result.is_some() {
            return Ok(());
        }
        p.step(bot).await?;
    }
    bail!("game did not end")
}

/// A `GameCommand` whose command union is empty, which the codec would never encode.
fn empty_command(cid: u32) -> Vec<u8> {
    use protocol::flatbuffers::FlatBufferBuilder;
    use protocol::tavern::{ClientBody, ClientMessage, ClientMessageArgs, GameCommand, GameCommandArgs};
    let mut fbb = FlatBufferBuilder::new();
    let command = GameCommand::create(&mut fbb, &GameCommandArgs { command_type: protocol::tavern::Command::NONE, command: None });
    let root = ClientMessage::create(
        &mut fbb,
        &ClientMessageArgs { cid, body_type: ClientBody::GameCommand, body: Some(command.as_union_value()) },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_play_a_whole_game_over_enet_and_websocket_and_the_result_is_reported_once() -> Result<()> {
    let h = Harness::start(settings(), MemoryReporter::failing_first(2)).await?;
    let seed = rand::random::<u32>() as u64;
    println!("seed {seed}");
    let players = h.create(seed)?;
    let mut a = Player::join(h.enet().await?, &h.token(&players, 0)?, &players).await?;
    let mut b = Player::join(h.ws().await?, &h.token(&players, 1)?, &players).await?;
    ensure!(a.view.viewer != b.view.viewer);
    play_out(&mut a, &mut b, seed).await?;
    let result = a.view.result.ok_or_else(|| anyhow!("no result"))?;
    ensure!(b.view.result == Some(result), "players disagree: {:?} vs {:?}", a.view.result, b.view.result);

    let reported = h
        .reporter
        .wait_for(&players.match_id, WAIT)
        .await
        .ok_or_else(|| anyhow!("result not reported"))?;
    ensure!(reported.reason == GameOverReason::HeroDefeated, "reason {:?}", reported.reason);
    ensure!(reported.winner == result.winner.map(|s| players.user(s)));
    ensure!(reported.instance_id.as_deref() == Some(INSTANCE));
    ensure!(reported.players.as_ref().map(Vec::len) == Some(2));
    ensure!(reported.turns > 1);
    // Two refused attempts, then one acknowledged; the match is stored once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(h.reporter.attempts() == 3, "attempts {}", h.reporter.attempts());
    ensure!(h.reporter.results().len() == 1);
    // After the linger the links are closed and the match is gone.
    a.client.closed().await?;
    b.client.closed().await?;
    ensure!(h.host.matches_active() == 0);
    let m = &h.metrics;
    ensure!(m.commands.with_label_values(&["ok"]).get() > 10);
    ensure!(m.commands.with_label_values(&["illegal"]).get() == 0);
    ensure!(m.joins.with_label_values(&["ok"]).get() == 2);
    ensure!(m.matches_active.get() == 0);
    ensure!(m.matches_finished.with_label_values(&["hero_defeated"]).get() == 1);
    ensure!(m.results_reported.with_label_values(&["acked"]).get() == 1);
    ensure!(m.report_attempts.with_label_values(&["error"]).get() == 2);
    ensure!(m.links.with_label_values(&["enet_dtls"]).get() == 0 && m.links.with_label_values(&["ws"]).get() == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_that_must_not_succeed_are_refused_with_their_codes() -> Result<()> {
    let h = Harness::start(settings(), MemoryReporter::new()).await?;
    let players = h.create(1)?;
    let other = h.create(2)?;
    let (match_id, alice) = (uuid(&players.match_id), uuid(&players.seats[0].0));
    // Alice joins; her token is now spent.
    let alice_token = h.token(&players, 0)?;
    let _alice = Player::join(h.ws().await?, &alice_token, &players).await?;

    let codec = Codec::default();
    let join = |token: &str, version: u16| -> Result<Vec<u8>> {
        let body = ClientBodyT::JoinMatch(Box::new(protocol::build!(JoinMatchT {
            protocol_version: version,
            join_token: token.to_owned(),
        })));
        Ok(codec.encode(&ClientMessageT::request(1, body))?)
    };
    let expired = h.issuer.mint(match_id, alice, INSTANCE, service_runtime::now_ms() - 60_000)?;
    let ping = codec.encode(&ClientMessageT::request(1, ClientBodyT::Ping(Box::new(protocol::build!(PingT { client_time_ms: 1 })))))?;
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("valid token for a match not on this instance", join(&h.token_for(Uuid::new_v4(), alice, INSTANCE)?, PROTOCOL_VERSION)?, ErrorCode::JoinTokenWrongMatch),
        ("valid token for this match on another instance", join(&h.token_for(match_id, alice, "elsewhere")?, PROTOCOL_VERSION)?, ErrorCode::JoinTokenWrongMatch),
        ("replayed token", join(&alice_token, PROTOCOL_VERSION)?, ErrorCode::JoinTokenReplayed),
        ("expired token", join(&expired, PROTOCOL_VERSION)?, ErrorCode::JoinTokenInvalid),
        ("forged token", join("AQ.AAAA", PROTOCOL_VERSION)?, ErrorCode::JoinTokenInvalid),
        ("user of another match", join(&h.token_for(match_id, uuid(&other.seats[0].0), INSTANCE)?, PROTOCOL_VERSION)?, ErrorCode::Forbidden),
        ("stranger", join(&h.token_for(match_id, Uuid::new_v4(), INSTANCE)?, PROTOCOL_VERSION)?, ErrorCode::Forbidden),
        ("old protocol version", join(&h.token(&players, 1)?, PROTOCOL_VERSION + 1)?, ErrorCode::UnsupportedVersion),
        ("first message not JoinMatch", ping, ErrorCode::HelloRequired),
        ("garbage first frame", vec![0xde, 0xad, 0xbe, 0xef], ErrorCode::Malformed),
    ];
    for (i, (what, bytes, want)) in cases.into_iter().enumerate() {
        // Alternate transports so both refuse the same way.
        let mut client = if i % 2 == 0 { h.ws().await? } else { h.enet().await? };
        client.send_bytes(bytes)?;
        let m = client.recv().await.with_context(|| what.to_owned())?;
        let error = m.body.as_error().ok_or_else(|| anyhow!("{what}: answered {:?}", m.body))?;
        ensure!(error.error_code() == Some(want), "{what}: got {:?}, want {want:?}", error.error_code());
        ensure!(error.closes_link, "{what}: link stays open");
        client.closed().await.with_context(|| what.to_owned())?;
    }
    // Bob's own token still works after all that (the version refusal did not spend one).
    let bob = Player::join(h.enet().await?, &h.token(&players, 1)?, &players).await?;
    ensure!(bob.view.result.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_player_rejoins_to_the_same_view() -> Result<()> {
    let h = Harness::start(settings(), MemoryReporter::new()).await?;
    let seed = 7;
    let players = h.create(seed)?;
    let mut a = Player::join(h.enet().await?, &h.token(&players, 0)?, &players).await?;
    let mut b = Player::join(h.ws().await?, &h.token(&players, 1)?, &players).await?;
    // Play a few turns so there is state to lose.
    let mut bots = [Bot::new(1), Bot::new(2)];
    for _ in 0..2_000 {
        if a.view.turn >= 5 && !a.view.my_turn() {
            break;
        }
        if a.view.my_turn() {
            a.step(&mut bots[0]).await?;
            b.refresh().await?;
        } else {
            b.step(&mut bots[1]).await?;
            a.refresh().await?;
        }
    }
    ensure!(a.view.turn >= 5 && a.view.result.is_none(), "turn {}", a.view.turn);
    let before = a.snapshot.clone();
    a.client.close().await;
    // The seat is free again once the server has seen the drop; rejoin on the other transport.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut a2 = Player::join(h.ws().await?, &h.token(&players, 0)?, &players).await?;
    ensure!(a2.snapshot == before, "snapshot changed:\n{before:?}\n{:?}", a2.snapshot);
    // The match goes on: the opponent ends the turn, and the rejoined player gets the events,
    // numbered on from the snapshot.
    let answer = b.command(&Command::EndTurn).await?;
    ensure!(matches!(answer.body, ServerBodyT::Ack(_)), "end turn: {:?}", answer.body);
    let m = a2.client.recv().await?;
    let ServerBodyT::GameEvents(events) = &m.body else { bail!("expected events, got {:?}", m.body) };
    ensure!(events.first_seq == before.last_seq + 1, "first_seq {} after {}", events.first_seq, before.last_seq);
    a2.refresh().await?;
    ensure!(a2.view.my_turn());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_never_returns_forfeits_after_the_window() -> Result<()> {
    let h = Harness::start(
        MatchSettings { rejoin_window: Duration::from_millis(300), ..settings() },
        MemoryReporter::new(),
    )
    .await?;
    let players = h.create(3)?;
    let mut a = Player::join(h.enet().await?, &h.token(&players, 0)?, &players).await?;
    let mut b = Player::join(h.ws().await?, &h.token(&players, 1)?, &players).await?;
    a.client.close().await;
    // Bob sees the game end by forfeit, in his favour.
    let mut over = None;
    for _ in 0..1_000 {
        let m = b.client.recv().await?;
        if let ServerBodyT::GameEvents(events) = &m.body {
            for e in events.events.iter().flatten() {
                if let GameEventBodyT::GameOver(g) = &e.event {
                    over = Some((**g).clone());
                }
            }
        }
        if over.is_some() {
            break;
        }
    }
    let over = over.ok_or_else(|| anyhow!("no GameOver"))?;
    ensure!(over.reason == GameOverReason::Forfeit, "reason {:?}", over.reason);
    ensure!(over.winner == Some(players.seats[1].0.clone()));
    let reported = h.reporter.wait_for(&players.match_id, WAIT).await.ok_or_else(|| anyhow!("not reported"))?;
    ensure!(reported.reason == GameOverReason::Forfeit);
    let left: Vec<bool> = reported.players.iter().flatten().map(|p| p.left_early).collect();
    ensure!(left == [true, false], "left_early {left:?}");
    // After the linger the server closes Bob's link too.
    b.client.closed().await?;
    ensure!(h.host.matches_active() == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_the_match_goes_on() -> Result<()> {
    let h = Harness::start(
        MatchSettings { messages_per_s: 50, message_burst: 60, max_malformed_per_link: 8, ..settings() },
        MemoryReporter::new(),
    )
    .await?;
    let players = h.create(11)?;
    let a = Player::join(h.enet().await?, &h.token(&players, 0)?, &players).await?;
    let b = Player::join(h.ws().await?, &h.token(&players, 1)?, &players).await?;
    let (mut active, mut waiting) = if a.view.my_turn() { (a, b) } else { (b, a) };
    let mut bots = [Bot::new(5), Bot::new(6)];

    // Play until the waiting player has a unit on the board and it is the active player's turn,
    // so there is an opponent's unit to misuse (bounded).
    for _ in 0..2_000 {
        if active.view.my_turn() && !active.view.opponent.board.is_empty() {
            break;
        }
        if active.view.my_turn() {
            active.step(&mut bots[0]).await?;
            waiting.refresh().await?;
        } else {
            waiting.step(&mut bots[1]).await?;
            active.refresh().await?;
        }
        ensure!(active.view.result.is_none(), "the game ended before the test could start");
    }
    ensure!(active.view.my_turn() && !active.view.opponent.board.is_empty());
    // The set-up play spent part of each link's budget (burst 60, 50/s), more of it the faster
    // the machine; let both buckets fill up again so every refusal below is the one under test
    // and not a rate limit.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let enemy_unit = active.view.opponent.board[0].id;
    let enemy = active.view.opponent.seat;
    let me = active.view.viewer;
    // A card id from the opponent's id range (A: 1..=20, B: 21..=40) that is not in our hand.
    let opponent_card = if enemy.index() == 0 { 1 } else { 21 };

    let cases: Vec<(&str, Command, ErrorCode)> = vec![
        ("attack with the opponent's unit", Command::Attack { attacker: enemy_unit, target: Target::Hero(enemy) }, ErrorCode::NotYourUnit),
        ("play the opponent's card", Command::PlayCard { card: opponent_card, target: None, position: 0 }, ErrorCode::CardNotInHand),
        ("play a card that does not exist", Command::PlayCard { card: 999, target: None, position: 0 }, ErrorCode::CardNotInHand),
        ("attack our own hero", Command::Attack { attacker: enemy_unit, target: Target::Hero(me) }, ErrorCode::NotYourUnit),
    ];
    for (what, command, want) in &cases {
        let before = active.snapshot.clone();
        let m = active.command(command).await?;
        ensure!(error_code(&m) == Some(*want), "{what}: got {:?}", m.body);
        active.refresh().await?;
        ensure!(active.snapshot == before, "{what} changed the game");
    }
    // Out of turn: the waiting player may not end the active player's turn.
    let m = waiting.command(&Command::EndTurn).await?;
    ensure!(error_code(&m) == Some(ErrorCode::NotYourTurn), "out of turn: {:?}", m.body);
    // A command naming a hero of a user not in the match cannot even become a command.
    let mut bad = wire::command_to_wire(&Command::Attack { attacker: 1, target: Target::Hero(me) }, &players);
    if let CommandT::Attack(attack) = &mut bad.command {
        attack.target.player = UuidT::from_bytes([0xab; 16]);
    }
    waiting.client.send(90, ClientBodyT::GameCommand(Box::new(bad)))?;
    let m = waiting.client.response(90).await?;
    ensure!(error_code(&m) == Some(ErrorCode::InvalidTarget), "foreign hero: {:?}", m.body);
    // An empty command is malformed on the wire.
    waiting.client.send_bytes(empty_command(91))?;
    let m = waiting.client.recv().await?;
    ensure!(error_code(&m) == Some(ErrorCode::Malformed), "empty command: {:?}", m.body);
    // Garbage bytes: malformed, answered, the link stays.
    waiting.client.send_bytes(vec![1, 2, 3])?;
    let m = waiting.client.recv().await?;
    ensure!(error_code(&m) == Some(ErrorCode::Malformed), "garbage: {:?}", m.body);
    // JoinMatch again on a joined link is out of place.
    waiting.client.send(92, join_body("whatever"))?;
    let m = waiting.client.response(92).await?;
    ensure!(error_code(&m) == Some(ErrorCode::UnexpectedMessage), "second join: {:?}", m.body);

    // A flood from the waiting player: it is told it is rate limited once.
    for i in 0..300u32 {
        waiting.client.send(1_000 + i, ClientBodyT::Ping(Box::new(protocol::build!(PingT { client_time_ms: i64::from(i) }))))?;
    }
    let mut limited = false;
    for _ in 0..400 {
        let m = waiting.client.recv().await?;
        if error_code(&m) == Some(ErrorCode::RateLimited) {
            limited = true;
            break;
        }
    }
    ensure!(limited, "the flood was never limited");
    // The active player is unaffected: a legal move is accepted at once.
    let m = active.command(&Command::EndTurn).await?;
    ensure!(matches!(m.body, ServerBodyT::Ack(_)), "active player after the flood: {:?}", m.body);
    // The flooder, once the bucket refills, plays on.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    waiting.refresh().await?;
    ensure!(waiting.view.my_turn(), "the turn did not pass to the flooder");
    let m = waiting.command(&Command::EndTurn).await?;
    ensure!(matches!(m.body, ServerBodyT::Ack(_)), "flooder after the flood: {:?}", m.body);

    // Too many malformed frames close the offending link, and only it.
    for _ in 0..10 {
        waiting.client.send_bytes(vec![0xff; 8])?;
    }
    waiting.client.closed().await?;
    active.refresh().await?;
    ensure!(active.view.result.is_none());
    let m = &h.metrics;
    ensure!(m.commands.with_label_values(&["illegal"]).get() == cases.len() as u64 + 1);
    ensure!(m.commands.with_label_values(&["bad_command"]).get() == 1);
    ensure!(m.commands.with_label_values(&["rate_limited"]).get() > 0);
    ensure!(m.malformed.get() >= 2 + 9, "malformed {}", m.malformed.get());
    ensure!(m.unexpected.get() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_nobody_joins_is_aborted_after_the_join_window_and_reported() -> Result<()> {
    let h = Harness::start(
        MatchSettings { join_window: Duration::from_millis(200), ..settings() },
        MemoryReporter::new(),
    )
    .await?;
    let players = h.create(4)?;
    let reported = h.reporter.wait_for(&players.match_id, WAIT).await.ok_or_else(|| anyhow!("not reported"))?;
    ensure!(reported.reason == GameOverReason::Aborted && reported.winner.is_none(), "{reported:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_the_matches_tells_the_players_and_reports() -> Result<()> {
    let h = Harness::start(settings(), MemoryReporter::new()).await?;
    let players = h.create(5)?;
    let mut a = Player::join(h.ws().await?, &h.token(&players, 0)?, &players).await?;
    h.shutdown.cancel();
    let mut reason = None;
    for _ in 0..100 {
        let Ok(m) = a.client.recv().await else { break };
        if let ServerBodyT::GameEvents(events) = &m.body {
            reason = events.events.iter().flatten().find_map(|e| match &e.event {
                GameEventBodyT::GameOver(g) => Some(g.reason),
                _ => None,
            });
        }
        if reason.is_some() {
            break;
        }
    }
    ensure!(reason == Some(GameOverReason::Aborted), "reason {reason:?}");
    let reported = h.reporter.wait_for(&players.match_id, WAIT).await.ok_or_else(|| anyhow!("not reported"))?;
    ensure!(reported.reason == GameOverReason::Aborted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_only_the_sender_link() -> Result<()> {
    let h = Harness::start(settings(), MemoryReporter::new()).await?;
    let players = h.create(12)?;
    // A client that allows itself larger frames than the server does.
    let config = transport::WsClientConfig { max_frame_bytes: 4 * protocol::MAX_FRAME_BYTES, ..Default::default() };
    let big = WsClient::connect_with(&format!("ws://{}/ws", h.host.ws_addr()), config).await?;
    let mut a = Player::join(Client::Ws(big), &h.token(&players, 0)?, &players).await?;
    let mut b = Player::join(h.enet().await?, &h.token(&players, 1)?, &players).await?;
    a.client.send_bytes(vec![0u8; protocol::MAX_FRAME_BYTES + 1024])?;
    a.client.closed().await?;
    b.refresh().await?;
    ensure!(b.view.result.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_game_leaves_game_started_and_game_ended_in_the_outbox() -> Result<()> {
    let h = Harness::start(settings(), MemoryReporter::new()).await?;
    let players = h.create(21)?;
    let match_id = uuid(&players.match_id).to_string();
    let users = [uuid(&players.seats[0].0).to_string(), uuid(&players.seats[1].0).to_string()];
    let for_match = |e: &outbox::Event| e.payload_json().is_ok_and(|p| p["match_id"] == match_id.as_str());
    let mut a = Player::join(h.enet().await?, &h.token(&players, 0)?, &players).await?;
    let b = Player::join(h.ws().await?, &h.token(&players, 1)?, &players).await?;
    let started = h
        .events
        .log
        .wait_for(WAIT, |e| e.kind == "game_started" && for_match(e))
        .await
        .ok_or_else(|| anyhow!("no game_started"))?;
    let p = started.payload_json()?;
    ensure!(p["mode"] == "test" && p["instance_id"] == INSTANCE, "{p}");
    ensure!(p["players"][0]["user_id"] == users[0].as_str() && p["players"][1]["user_id"] == users[1].as_str(), "{p}");
    ensure!(p["players"][0]["username"] == "alice", "{p}");

    // Alice concedes: Bob wins.
    let answer = a.command(&Command::Concede).await?;
    ensure!(matches!(answer.body, ServerBodyT::Ack(_)), "concede answered {:?}", answer.body);
    let ended = h
        .events
        .log
        .wait_for(WAIT, |e| e.kind == "game_ended" && for_match(e))
        .await
        .ok_or_else(|| anyhow!("no game_ended"))?;
    let p = ended.payload_json()?;
    ensure!(p["winner"] == users[1].as_str() && p["reason"] == "conceded" && p["draw"] == false, "{p}");
    ensure!(p["turns"].as_u64().is_some_and(|t| t >= 1) && p["duration_ms"].as_i64().is_some_and(|d| d >= 0), "{p}");
    ensure!(p["players"][0]["outcome"] == "loss" && p["players"][1]["outcome"] == "win", "{p}");
    ensure!(started.id < ended.id, "game_started {} after game_ended {}", started.id, ended.id);
    ensure!(started.source == "instance-server" && ended.source == "instance-server");

    // The rows stay in the outbox, each once, marked published once the log has them (the mark
    // follows the sink's acceptance by a moment, hence the bounded wait).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = h.events.outbox.events_after(0, 100).await?;
        let rows: Vec<_> = rows.into_iter().filter(|r| for_match(&r.event)).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.event.kind.as_str()).collect();
        ensure!(kinds == ["game_started", "game_ended"], "rows {kinds:?}");
        if rows.iter().all(|r| r.published_at_ms.is_some()) {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "rows not marked published: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
    Ok(())
}
