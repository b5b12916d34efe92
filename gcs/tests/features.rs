//! Presence, friends' pushes and chat through real GCS nodes: users register and befriend each
//! other through the real login REST API (over a real database), link over ENet/DTLS and
//! WebSocket, see each other come online, chat in the common area, in rooms and by DM (blocked
//! users cannot), page the persisted history, and meet the chat limits. Two nodes share a bus
//! and directory (in-process here; `cluster_redis.rs` runs the same on Redis), and each user's
//! view is the same whichever node holds them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gcs::{Backends, Cluster, GcsConfig, GcsServer};
use migrations::testing::TestDb;
use protocol::tavern::{
    ChannelKind, ChannelT, ChatHistoryRequestT, ClientBodyT, ClientMessageT, PresenceState, QueueJoinT, RoomJoinT,
    ServerBodyT, ServerMessageT,
};
use protocol::{ErrorCode, build};
use serde_json::json;
use token_service::{InProcessRevocations, Keyring, TokenConfig, Tokens};
use tokio_util::sync::CancellationToken;
use transport::{ClientTrust, EnetClient, EnetClientConfig, ServerIdentity, WsClient};
use uuid::Uuid;

mod support;
use support::{Account, Client, LoginRest, User, WAIT, direct, login_config, within};

const SERVICE_TOKEN: &str = "features-test-service-token";

/// Login over a real database, and GCS nodes sharing one cluster.
struct World {
    db: TestDb,
    login: LoginRest,
    nodes: Vec<GcsServer>,
    identity: ServerIdentity,
    shutdown: CancellationToken,
}

impl World {
    /// Login and `nodes` GCS nodes; `cluster(node_id)` gives each node its cluster.
    async fn start(nodes: usize, cluster: impl Fn(&str) -> Result<Cluster>) -> Result<World> {
        let db = TestDb::postgres().await;
        let tokens =
            Tokens::new(Keyring::generate(), TokenConfig::default(), db.db.clone(), Arc::new(InProcessRevocations::new()));
        let shutdown = CancellationToken::new();
        let login = support::start_login(login_config(SERVICE_TOKEN), &db.db, tokens.clone(), shutdown.clone()).await?;
        let identity = ServerIdentity::self_signed(&["localhost"])?;
        let mut servers = Vec::new();
        for n in 0..nodes {
            let node_id = format!("gcs-{n}");
            let config = GcsConfig { enet_bind: "127.0.0.1:0".parse()?, ws_bind: "127.0.0.1:0".parse()?, ..GcsConfig::default() };
            let backends = Backends {
                node_id: node_id.clone(),
                cluster: cluster(&node_id)?,
                chat: gcs::chat_store::ChatStore::new(db.db.clone()),
                social: Some(gcs::social::SocialClient::new(&login, SERVICE_TOKEN)?),
                matchmaker: None,
                outbox: None,
            };
            let registry = prometheus::Registry::new();
            servers.push(
                GcsServer::start(&config, identity.clone(), tokens.session_verifier(), backends, None, &registry, shutdown.clone())
                    .await?,
            );
        }
        Ok(World { db, login: LoginRest::new(login), nodes: servers, identity, shutdown })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        for node in self.nodes {
            within(node.stopped()).await?;
        }
        self.db.drop_db().await;
        Ok(())
    }

    /// Links `user` to node `node` over ENet/DTLS or WebSocket and says hello.
    async fn link(&self, node: usize, name: &str, user: &Account, enet: bool) -> Result<User> {
        let server = &self.nodes[node];
        let client = if enet {
            let config = EnetClientConfig::new(server.enet_addr(), ClientTrust::PinSha256(self.identity.cert_sha256()));
            Client::Enet(EnetClient::connect(config, WAIT).await?)
        } else {
            Client::Ws(WsClient::connect(&format!("ws://{}/ws", server.ws_addr()), None, WAIT).await?)
        };
        User::hello(name, client, &user.token).await
    }
}

fn global() -> ChannelT {
    build!(ChannelT { kind: ChannelKind::Global })
}

fn room(name: &str) -> ChannelT {
    build!(ChannelT { kind: ChannelKind::Room, room: Some(name.to_owned()) })
}

fn code(m: &ServerMessageT) -> Option<ErrorCode> {
    m.body.as_error().and_then(|e| e.error_code())
}

fn in_process() -> impl Fn(&str) -> Result<Cluster> {
    let (bus, store) = (bus::Bus::in_process(), bus::InProcessStore::default());
    move |node| Ok(Cluster::in_process(bus.clone(), &store, node)?)
}

/// The whole social path, with Ada on node 0 over ENet/DTLS and Bob on node `bob_node` over
/// WebSocket.
async fn social_path(world: &World, bob_node: usize) -> Result<()> {
    let ada = world.login.register(&format!("ada{bob_node}")).await?;
    let bob = world.login.register(&format!("bob{bob_node}")).await?;
    let eve = world.login.register(&format!("eve{bob_node}")).await?;
    world.login.befriend(&ada, &bob).await?;
    // Ada blocks Eve: Eve may not message her.
    world.login.post("/blocks", Some(&ada.token), json!({"user_id": eve.id})).await?;

    let mut a = world.link(0, "ada", &ada, true).await?;
    // Ada is told her friends' presence as soon as her list is loaded: Bob is offline.
    let list = a.push("friends presence", |b| b.as_friends_presence_list().map(|l| (*l).clone())).await?;
    let states: Vec<(Uuid, PresenceState)> =
        list.friends.iter().flatten().map(|f| (Uuid::from_bytes(f.user_id.bytes), f.state)).collect();
    ensure!(states == [(bob.id, PresenceState::Offline)], "ada's friends: {states:?}");

    let mut b = world.link(bob_node, "bob", &bob, false).await?;
    // Bob comes online: Ada gets the login notification and the presence change.
    let online = a.push("friend online", |b| b.as_friend_online().map(|f| Uuid::from_bytes(f.friend.user_id.bytes))).await?;
    ensure!(online == bob.id);
    let list = b.push("friends presence", |b| b.as_friends_presence_list().map(|l| (*l).clone())).await?;
    let states: Vec<PresenceState> = list.friends.iter().flatten().map(|f| f.state).collect();
    ensure!(states == [PresenceState::Online], "bob sees ada {states:?}");

    // The common area: everyone online hears it.
    let sent = a.say(global(), "hello everyone").await?;
    ensure!(sent.body.as_chat_sent().is_some_and(|s| s.id > 0), "chat sent: {sent:?}");
    ensure!(b.heard("hello everyone").await? == (ada.id, ChannelKind::Global));

    // A direct message, across nodes when Bob is on the other one.
    let sent = b.say(direct(ada.id), "psst").await?;
    ensure!(sent.body.as_chat_sent().is_some(), "dm sent: {sent:?}");
    ensure!(a.heard("psst").await? == (bob.id, ChannelKind::Direct));

    // Eve, blocked by Ada, cannot message her; Ada hears nothing of it.
    let mut e = world.link(bob_node, "eve", &eve, false).await?;
    let refused = e.say(direct(ada.id), "let me in").await?;
    ensure!(code(&refused) == Some(ErrorCode::Blocked), "blocked dm: {refused:?}");

    // Rooms: only members hear them; sending to a room one has not joined is refused.
    let refused = e.say(room("tavern"), "anyone?").await?;
    ensure!(code(&refused) == Some(ErrorCode::NotInRoom), "{refused:?}");
    for u in [&mut a, &mut b] {
        let ok = u.request(ClientBodyT::RoomJoin(Box::new(build!(RoomJoinT { room: "tavern".into() })))).await?;
        ensure!(matches!(ok.body, ServerBodyT::Ack(_)), "room join: {ok:?}");
    }
    a.say(room("tavern"), "in the room").await?;
    ensure!(b.heard("in the room").await? == (ada.id, ChannelKind::Room));

    // History is persisted and pageable: the newest first, then the page before it.
    for i in 0..3 {
        a.say(global(), &format!("history {i}")).await?;
    }
    let page = |before_id: i64| {
        ClientBodyT::ChatHistoryRequest(Box::new(build!(ChatHistoryRequestT { channel: Box::new(global()), before_id, limit: 2 })))
    };
    let first = b.request(page(0)).await?;
    let first = first.body.as_chat_history().context("history")?.clone();
    let texts: Vec<&str> = first.messages.iter().flatten().map(|m| m.text.as_str()).collect();
    ensure!(texts == ["history 2", "history 1"] && first.has_more, "first page {texts:?}");
    let oldest = first.messages.iter().flatten().map(|m| m.id).min().context("ids")?;
    let second = b.request(page(oldest)).await?;
    let second = second.body.as_chat_history().context("history")?.clone();
    let texts: Vec<&str> = second.messages.iter().flatten().map(|m| m.text.as_str()).collect();
    ensure!(texts == ["history 0", "hello everyone"], "second page {texts:?}");

    // Limits: an oversize message and a flood get their codes; the link stays.
    let long = "x".repeat(501);
    ensure!(code(&a.say(global(), &long).await?) == Some(ErrorCode::MessageTooLong));
    let mut limited = false;
    for i in 0..20 {
        if code(&e.say(global(), &format!("spam {i}")).await?) == Some(ErrorCode::RateLimited) {
            limited = true;
            break;
        }
    }
    ensure!(limited, "a chat flood was never limited");
    // Queueing twice is refused; with no matchmaker configured the first says it is unavailable.
    let join = || ClientBodyT::QueueJoin(Box::new(build!(QueueJoinT { mode: "duel".into() })));
    ensure!(code(&a.request(join()).await?) == Some(ErrorCode::Unavailable));

    // Bob leaves: Ada sees him offline.
    b.client.send(&ClientMessageT::request(99, ClientBodyT::Goodbye(Box::default())))?;
    let state = a
        .push("bob offline", |b| match b {
            ServerBodyT::PresenceUpdate(p) if Uuid::from_bytes(p.user_id.bytes) == bob.id => Some(p.state),
            _ => None,
        })
        .await?;
    ensure!(state == PresenceState::Offline);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_see_each_other_and_chat_on_one_node() -> Result<()> {
    let world = World::start(1, in_process()).await?;
    social_path(&world, 0).await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_direct_messages_cross_nodes() -> Result<()> {
    let world = World::start(2, in_process()).await?;
    social_path(&world, 1).await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_direct_messages_cross_nodes_on_redis() -> Result<()> {
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let url = migrations::testing::redis_url();
    let mut clusters = Vec::new();
    for n in 0..2 {
        clusters.push(Cluster::redis(&url, &prefix, &format!("gcs-{n}"), Duration::from_secs(5)).await?);
    }
    let world = World::start(2, move |node| {
        let n: usize = node.trim_start_matches("gcs-").parse()?;
        clusters.get(n).cloned().context("no such node")
    })
    .await?;
    social_path(&world, 1).await?;
    world.stop().await
}
