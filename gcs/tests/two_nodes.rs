//! Two real `gcs` processes against the real Redis (and a real Postgres, and a real login server
//! run in this process): presence and direct messages cross nodes, a second login on the other
//! node replaces the first, a logout closes the live link on whichever node holds it within a
//! second, and a node killed with SIGKILL loses its users from the directory within the TTL.
//!
//! Each node is the `gcs` binary started with `--set` overrides: its own node id and loopback
//! ports (picked free by this test), and a shared key file, TLS identity, database, Redis prefix
//! (unique per run), login URL and service token. Every wait is bounded, the whole test stops
//! within a minute, and a guard kills each child process on every exit path.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use migrations::testing::TestDb;
use protocol::ErrorCode;
use protocol::tavern::{ChannelKind, ClientBodyT, PresenceState, QueueJoinT, ServerBodyT};
use serde_json::json;
use token_service::{Keyring, RedisRevocations, TokenConfig, Tokens};
use tokio_util::sync::CancellationToken;
use transport::{ClientTrust, EnetClient, EnetClientConfig, ServerIdentity, WsClient};
use uuid::Uuid;

mod support;
use support::{Client, LoginRest, User, WAIT, direct, login_config, within};

const SERVICE_TOKEN: &str = "two-nodes-test-service-token";
/// The directory TTL both nodes run with.
const TTL: Duration = Duration::from_millis(1_500);
/// How long a revoked session's link may stay open: the design's second, plus tolerance for a
/// loaded test machine (the HTTP round trip to login is inside the measurement).
const REVOCATION_LIMIT: Duration = Duration::from_millis(1_500);
/// The whole test, worst case.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long a node may take from spawn to `/readyz` answering 200.
const START_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gcs_processes_on_real_redis() -> Result<()> {
    let db = TestDb::postgres().await;
    let scratch = Scratch::new()?;
    let redis_url = migrations::testing::redis_url();
    let prefix = format!("test:two-nodes:{}:", Uuid::new_v4().simple());
    let outcome = tokio::time::timeout(TEST_LIMIT, scenario(&db, &scratch.0, &redis_url, &prefix)).await;
    // Whatever happened, the child processes are gone by now (their guards lived in `scenario`).
    if !matches!(outcome, Ok(Ok(()))) {
        for node in ["gcs-a", "gcs-b"] {
            print_log_tail(&scratch.0.join(format!("{node}.log")));
        }
    }
    let _ = tokio::time::timeout(WAIT, delete_prefix(&redis_url, &prefix)).await;
    let _ = tokio::time::timeout(WAIT, db.drop_db()).await;
    outcome.context("the two-node test did not finish within its time limit")?
}

async fn scenario(db: &TestDb, dir: &Path, redis_url: &str, prefix: &str) -> Result<()> {
    // Shared keys and TLS identity, written before either node starts.
    let key_file = dir.join("token-keys.json");
    let keyring = Keyring::generate();
    keyring.save(&key_file)?;
    let identity_dir = dir.join("tls");
    let identity = ServerIdentity::load_or_create(&identity_dir)?;

    let shutdown = CancellationToken::new();
    let _stop_login = shutdown.clone().drop_guard();
    let login = start_login(db, keyring, redis_url, prefix, shutdown.clone()).await?;
    let world = World { rest: LoginRest::new(login.clone()), cert: identity.cert_sha256() };

    // One matchmaker both nodes queue with (a static pool stands in for the instances: this test
    // is about the GCS relaying match-found, not about playing).
    let matchmaker = start_matchmaker(db, keyring_for_matchmaker(&key_file)?, shutdown.clone()).await?;
    let shared = Shared {
        matchmaker,
        key_file,
        identity_dir,
        database_url: db.url.clone(),
        redis_url: redis_url.to_owned(),
        redis_prefix: prefix.to_owned(),
        login_url: login,
        dir: dir.to_owned(),
    };
    let ports = Ports::pick(2)?;
    let mut node_a = Node::spawn("gcs-a", &shared, ports[0])?;
    let mut node_b = Node::spawn("gcs-b", &shared, ports[1])?;
    node_a.ready(&world.rest.http).await?;
    node_b.ready(&world.rest.http).await?;
    let mut redis = RedisProbe::connect(redis_url, prefix).await?;

    let ada = world.rest.register("ada").await?;
    let bob = world.rest.register("bob").await?;
    let cyd = world.rest.register("cyd").await?;
    world.rest.befriend(&ada, &bob).await?;

    // 1. Presence crosses nodes. Ada on A over ENet/DTLS sees Bob offline; Bob links to B over
    // WebSocket; Ada hears he logged in and is online; Bob's list shows Ada online.
    let mut a = world.link(&node_a, Kind::Enet, "ada", &ada.token).await?;
    let list = a.friends_list_push().await?;
    ensure!(list == [(bob.id, PresenceState::Offline)], "ada's friends before bob links: {list:?}");
    redis.wait_for(ada.id, Some("gcs-a")).await?;

    let mut b = world.link(&node_b, Kind::Ws, "bob", &bob.token).await?;
    a.friend_came_online(bob.id).await?;
    let list = b.friends_list_push().await?;
    ensure!(list == [(ada.id, PresenceState::Online)], "bob's friends: {list:?}");
    redis.wait_for(bob.id, Some("gcs-b")).await?;

    // 2. Match-found reaches each player on their own node: Ada queues on A, Bob on B, one
    // matchmaker forms the match, and each node hands its player their own join token; each
    // sees the other go in queue and in match across the nodes.
    let join = || ClientBodyT::QueueJoin(Box::new(protocol::build!(QueueJoinT { mode: "duel".into() })));
    let queued = a.request(join()).await?;
    ensure!(queued.body.as_queue_status().is_some(), "ada's queue join: {queued:?}");
    let queued = b.request(join()).await?;
    ensure!(queued.body.as_queue_status().is_some(), "bob's queue join: {queued:?}");
    let found_a = a.push("match found", |m| m.as_match_found().map(|f| (*f).clone())).await?;
    let found_b = b.push("match found", |m| m.as_match_found().map(|f| (*f).clone())).await?;
    ensure!(found_a.match_id == found_b.match_id, "one match for both");
    ensure!(found_a.join_token != found_b.join_token, "each player has their own join token");
    let opponent = found_a.opponents.iter().flatten().map(|p| Uuid::from_bytes(p.user_id.bytes)).collect::<Vec<_>>();
    ensure!(opponent == [bob.id], "ada's opponent: {opponent:?}");
    let bob_in_match = a
        .push("bob in match", |m| match m {
            ServerBodyT::PresenceUpdate(p) if Uuid::from_bytes(p.user_id.bytes) == bob.id && p.state == PresenceState::InMatch => Some(()),
            _ => None,
        })
        .await;
    bob_in_match?;

    // 3. Direct messages cross nodes both ways.
    let sent = a.say(direct(bob.id), "ada on a to bob on b").await?;
    ensure!(sent.body.as_chat_sent().is_some_and(|s| s.id > 0), "dm sent: {sent:?}");
    ensure!(b.heard("ada on a to bob on b").await? == (ada.id, ChannelKind::Direct));
    let sent = b.say(direct(ada.id), "bob on b to ada on a").await?;
    ensure!(sent.body.as_chat_sent().is_some_and(|s| s.id > 0), "dm sent: {sent:?}");
    ensure!(a.heard("bob on b to ada on a").await? == (bob.id, ChannelKind::Direct));

    // 4. Bob logs in again on node A: node B closes his older link with SessionReplaced.
    let bob_again = world.rest.login("bob").await?;
    let mut b_on_a = world.link(&node_a, Kind::Ws, "bob@a", &bob_again).await?;
    b.closed_with(ErrorCode::SessionReplaced).await?;
    redis.wait_for(bob.id, Some("gcs-a")).await?;
    // Whatever node B says as Bob's old session ends, Ada's view of Bob must stay online. A short
    // pause lets node B's bus messages about the old session arrive first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (list, pushes) = a.friends_list_request().await?;
    ensure!(list == [(bob.id, PresenceState::Online)], "ada's friends after bob moved to node a: {list:?}");
    let last_push = pushes
        .iter()
        .filter_map(|m| m.body.as_presence_update())
        .filter(|p| Uuid::from_bytes(p.user_id.bytes) == bob.id)
        .map(|p| p.state)
        .next_back();
    ensure!(
        last_push != Some(PresenceState::Offline),
        "ada was last pushed bob OFFLINE after his session moved from node b to node a (he is online on node a)"
    );

    // 5. A logout closes the live link within a second, on either node: Bob's on node A
    // (logout), Cyd's on node B (logout-all). Both nodes hear it only through Redis.
    let took = world.revoke(&mut b_on_a, "/auth/logout", &bob_again).await?;
    println!("revocation on node a (logout): link closed {} ms after the request", took.as_millis());
    ensure!(took < REVOCATION_LIMIT, "revocation on node a took {took:?}");
    // His session ended with it: Ada sees him offline.
    let state = a
        .push("bob offline after his logout", |b| match b {
            ServerBodyT::PresenceUpdate(p) if Uuid::from_bytes(p.user_id.bytes) == bob.id => Some(p.state),
            _ => None,
        })
        .await?;
    ensure!(state == PresenceState::Offline, "ada saw bob {state:?} after his logout");
    let mut c = world.link(&node_b, Kind::Ws, "cyd", &cyd.token).await?;
    let took = world.revoke(&mut c, "/auth/logout-all", &cyd.token).await?;
    println!("revocation on node b (logout-all): link closed {} ms after the request", took.as_millis());
    ensure!(took < REVOCATION_LIMIT, "revocation on node b took {took:?}");
    // The revoked token cannot say hello again on either node.
    let mut again = world.connect(&node_a, Kind::Ws).await?;
    again.send(&support::hello(protocol::PROTOCOL_VERSION, Some(&cyd.token), None))?;
    again.refused(ErrorCode::TokenRevoked).await?;

    // 6. Bob is back on node B; node B is killed (SIGKILL): his directory entry expires within
    // the TTL without anyone cleaning up, and Ada's list then shows him offline.
    let bob_third = world.rest.login("bob").await?;
    let _b3 = world.link(&node_b, Kind::Ws, "bob@b", &bob_third).await?;
    a.friend_came_online(bob.id).await?;
    redis.wait_for(bob.id, Some("gcs-b")).await?;
    node_b.kill()?;
    let gone = redis.wait_gone(bob.id, TTL + Duration::from_secs(1)).await?;
    println!("node b killed: bob's directory key expired {} ms later (ttl {} ms)", gone.as_millis(), TTL.as_millis());
    let (list, _) = a.friends_list_request().await?;
    ensure!(list == [(bob.id, PresenceState::Offline)], "ada's friends after node b died: {list:?}");
    // Node A is unaffected.
    ensure!(redis.node_of(ada.id).await?.as_deref() == Some("gcs-a"));
    a.client.ping(7).await?;

    node_a.kill()?;
    Ok(())
}

// -------------------------------------------------------------------------------------------
// The GCS processes

/// Settings both nodes share.
struct Shared {
    matchmaker: String,
    key_file: PathBuf,
    identity_dir: PathBuf,
    database_url: String,
    redis_url: String,
    redis_prefix: String,
    login_url: String,
    dir: PathBuf,
}

/// One node's loopback listeners.
#[derive(Clone, Copy, Debug)]
struct Ports {
    enet: SocketAddr,
    ws: SocketAddr,
    admin: SocketAddr,
}

impl Ports {
    /// Free ports for `n` nodes: bound all at once (so no two collide), then released for the
    /// nodes to bind.
    fn pick(n: usize) -> Result<Vec<Ports>> {
        let mut held = Vec::new();
        let mut out = Vec::new();
        for _ in 0..n {
            let enet = UdpSocket::bind("127.0.0.1:0")?;
            let ws = TcpListener::bind("127.0.0.1:0")?;
            let admin = TcpListener::bind("127.0.0.1:0")?;
            out.push(Ports { enet: enet.local_addr()?, ws: ws.local_addr()?, admin: admin.local_addr()? });
            held.push((enet, ws, admin));
        }
        drop(held);
        Ok(out)
    }
}

/// A `gcs` child process; dropping it kills the process (SIGKILL) and reaps it.
struct Node {
    name: &'static str,
    child: Option<Child>,
    ports: Ports,
    log: PathBuf,
}

impl Node {
    fn spawn(name: &'static str, shared: &Shared, ports: Ports) -> Result<Node> {
        let log = shared.dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let sets = [
            format!("node_id={name}"),
            format!("enet_bind={}", ports.enet),
            format!("ws_bind={}", ports.ws),
            format!("admin_bind={}", ports.admin),
            format!("key_file={}", shared.key_file.display()),
            format!("identity_dir={}", shared.identity_dir.display()),
            format!("database_url={}", shared.database_url),
            format!("redis_url={}", shared.redis_url),
            format!("redis_prefix={}", shared.redis_prefix),
            format!("login_url={}", shared.login_url),
            format!("service_token={SERVICE_TOKEN}"),
            format!("matchmaker_addr={}", shared.matchmaker),
            format!("directory_ttl_ms={}", TTL.as_millis()),
            // The test's clients do not send heartbeats; the links must outlive its pauses.
            "session.dead_link_timeout_ms=60000".to_owned(),
            "log.level=info".to_owned(),
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_gcs"));
        for set in &sets {
            command.arg("--set").arg(set);
        }
        // Only these flags configure the node, not whatever `TAVERN_*` the test runs under.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TAVERN_") {
                command.env_remove(key);
            }
        }
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Node { name, child: Some(child), ports, log })
    }

    /// Waits until `/readyz` answers 200 (listeners bound, Redis subscriptions live).
    async fn ready(&mut self, http: &reqwest::Client) -> Result<()> {
        let url = format!("http://{}/readyz", self.ports.admin);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("{} exited during start ({status}); log in {}", self.name, self.log.display());
            }
            let answer = http.get(&url).timeout(Duration::from_secs(1)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{} not ready within {START_LIMIT:?}; log in {}", self.name, self.log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no goodbye, no directory release, no bus message.
    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("tavern-two-nodes-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_log_tail(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("---- last lines of {} ----", path.display());
    for line in &lines[lines.len().saturating_sub(60)..] {
        eprintln!("{line}");
    }
}

// -------------------------------------------------------------------------------------------
// Login, in this process, on the same database and Redis

/// The matchmaker in this process on a free port, with a one-instance static pool.
async fn start_matchmaker(db: &TestDb, keyring: Keyring, shutdown: CancellationToken) -> Result<String> {
    use matchmaker::allocation::{Allocation, InstanceAddr, StaticPool};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = matchmaker::MatchmakerConfig { service_token: SERVICE_TOKEN.into(), node_id: "matchmaker-test".into(), ..Default::default() };
    let instance = Allocation {
        instance_id: "static-1".into(),
        address: InstanceAddr { host: "127.0.0.1".into(), udp_port: 7501, ws_url: Some("ws://127.0.0.1:7501/ws".into()) },
    };
    let parts = matchmaker::service::Parts {
        db: db.db.clone(),
        keyring,
        allocator: std::sync::Arc::new(StaticPool::new(vec![instance])),
        registry: prometheus::Registry::new(),
    };
    let running = matchmaker::service::start(config, parts, listener, shutdown).await?;
    tokio::spawn(running.wait());
    Ok(addr.to_string())
}

/// The matchmaker signs join tokens with the cluster's keys.
fn keyring_for_matchmaker(key_file: &Path) -> Result<Keyring> {
    Ok(Keyring::load_or_create(key_file)?)
}

async fn start_login(db: &TestDb, keyring: Keyring, redis_url: &str, prefix: &str, shutdown: CancellationToken) -> Result<String> {
    // Logouts are written to Redis and published there: that is how the nodes hear of them.
    let revocations = Arc::new(RedisRevocations::connect(redis_url, prefix).await?);
    let tokens = Tokens::new(keyring, TokenConfig::default(), db.db.clone(), revocations);
    let mut config = login_config(SERVICE_TOKEN);
    config.redis_url = Some(redis_url.to_owned());
    config.redis_prefix = prefix.to_owned();
    support::start_login(config, &db.db, tokens, shutdown).await
}

#[derive(Clone, Copy)]
enum Kind {
    Enet,
    Ws,
}

/// The test's side: login's REST API and the nodes' client links.
struct World {
    rest: LoginRest,
    cert: [u8; 32],
}

impl World {
    async fn connect(&self, node: &Node, kind: Kind) -> Result<Client> {
        Ok(match kind {
            Kind::Enet => {
                let config = EnetClientConfig::new(node.ports.enet, ClientTrust::PinSha256(self.cert));
                Client::Enet(EnetClient::connect(config, WAIT).await?)
            }
            Kind::Ws => Client::Ws(WsClient::connect(&format!("ws://{}/ws", node.ports.ws), None, WAIT).await?),
        })
    }

    async fn link(&self, node: &Node, kind: Kind, name: &str, token: &str) -> Result<User> {
        let client = self.connect(node, kind).await?;
        User::hello(name, client, token).await.with_context(|| format!("{name} linking to {}", node.name))
    }

    /// Calls `path` (a logout) with `token` and measures until `user`'s link closes with
    /// `TokenRevoked`.
    async fn revoke(&self, user: &mut User, path: &str, token: &str) -> Result<Duration> {
        let started = Instant::now();
        self.rest.post(path, Some(token), json!({})).await?;
        user.closed_with(ErrorCode::TokenRevoked).await?;
        Ok(started.elapsed())
    }
}

// -------------------------------------------------------------------------------------------
// Redis, read directly

/// Reads the directory's keys (`{prefix}user.<uuid>` = node id) straight from Redis.
struct RedisProbe {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl RedisProbe {
    async fn connect(url: &str, prefix: &str) -> Result<RedisProbe> {
        let conn = within(redis::Client::open(url)?.get_multiplexed_async_connection()).await??;
        Ok(RedisProbe { conn, prefix: prefix.to_owned() })
    }

    async fn node_of(&mut self, user: Uuid) -> Result<Option<String>> {
        let key = format!("{}user.{user}", self.prefix);
        Ok(within(redis::cmd("GET").arg(&key).query_async::<Option<String>>(&mut self.conn)).await??)
    }

    /// Polls until `user`'s entry names `node` (bounded by [`WAIT`]).
    async fn wait_for(&mut self, user: Uuid, node: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.node_of(user).await?;
            if now.as_deref() == node {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "directory: {user} is on {now:?}, expected {node:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `user`'s entry is gone; how long that took. Fails past `limit`.
    async fn wait_gone(&mut self, user: Uuid, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let now = self.node_of(user).await?;
            if now.is_none() {
                return Ok(started.elapsed());
            }
            ensure!(started.elapsed() < limit, "directory: {user} still on {now:?} {limit:?} after its node died");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Removes every key of this run (the events stream, revocations, what the nodes left).
async fn delete_prefix(url: &str, prefix: &str) -> Result<()> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await?;
    }
    Ok(())
}
