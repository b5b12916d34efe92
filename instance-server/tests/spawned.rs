//! The `instance-server` binary in spawned mode: it hosts the match from its config file, prints
//! the ready line the spawner waits for, and exits by itself once the match is over and
//! reported, after its outbox relay has published `game_started` and `game_ended`. Bounded in
//! time.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use protocol::tavern::{ClientBodyT, ClientMessageT, ConcedeT, CommandT, GameCommandT, GameEventBodyT, GameOverReason, JoinMatchT, ServerBodyT, ServerMessageT};
use protocol::{Codec, PROTOCOL_VERSION};
use token_service::{JoinIssuer, Keyring};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use transport::{ClientEvent, ClientTrust, Delivery, EnetClient, EnetClientConfig, ServerIdentity, WsClient};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("tavern-instance-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn join(token: &str) -> Result<Bytes> {
    let body = ClientBodyT::JoinMatch(Box::new(protocol::build!(JoinMatchT {
        protocol_version: PROTOCOL_VERSION,
        join_token: token.to_owned(),
    })));
    Ok(Bytes::from(Codec::default().encode(&ClientMessageT::request(1, body))?))
}

fn decode(event: Option<ClientEvent>) -> Result<ServerMessageT> {
    match event {
        Some(ClientEvent::Message { data, .. }) => Ok(Codec::default().decode_server(&data)?),
        other => bail!("link ended: {other:?}"),
    }
}

fn game_over_reason(m: &ServerMessageT) -> Option<GameOverReason> {
    let ServerBodyT::GameEvents(events) = &m.body else { return None };
    events.events.iter().flatten().find_map(|e| match &e.event {
        GameEventBodyT::GameOver(g) => Some(g.reason),
        _ => None,
    })
}

/// A running `instance-server` process and where it listens.
struct Instance {
    child: tokio::process::Child,
    udp: u16,
    ws: u16,
    /// The spawner's ready line, after `TAVERN_READY`.
    spawner_ready: String,
}

impl Instance {
    /// Starts the binary with `args` and waits for its ready line.
    async fn start(args: &[&str]) -> Result<Instance> {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_instance-server"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut next = async || -> Result<String> {
            tokio::time::timeout(WAIT, lines.next_line())
                .await
                .context("no ready line")??
                .ok_or_else(|| anyhow!("stdout closed"))
        };
        let ready = next().await?;
        let spawner_ready =
            ready.strip_prefix("TAVERN_READY ").ok_or_else(|| anyhow!("not a ready line: {ready:?}"))?.to_owned();
        let address: serde_json::Value = serde_json::from_str(&spawner_ready)?;
        let port = |key: &str| -> Result<u16> {
            address[key].as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| anyhow!("{ready:?} lacks {key}"))
        };
        let (udp, ws) = (port("udp_port")?, port("ws_port")?);
        Ok(Instance { child, udp, ws, spawner_ready })
    }

    /// Both players join (ENet/DTLS and WebSocket), the first concedes, the second sees it;
    /// then the process must exit successfully by itself.
    async fn play_concede_and_exit(mut self, tls: &std::path::Path, tokens: [String; 2]) -> Result<()> {
        let identity = ServerIdentity::load_or_create(tls)?;
        let mut enet_config =
            EnetClientConfig::new(([127, 0, 0, 1], self.udp).into(), ClientTrust::CaPem(identity.cert_pem()));
        enet_config.service_interval = Duration::from_millis(2);
        let mut a = EnetClient::connect(enet_config, WAIT).await?;
        let mut b = WsClient::connect(&format!("ws://127.0.0.1:{}/ws", self.ws), None, WAIT).await?;
        a.send(join(&tokens[0])?, Delivery::Reliable)?;
        b.send(join(&tokens[1])?, Delivery::Reliable)?;
        for m in [decode(a.recv().await)?, decode(b.recv().await)?] {
            ensure!(matches!(m.body, ServerBodyT::GameSnapshot(_)), "join answered {:?}", m.body);
        }
        let concede = protocol::build!(GameCommandT { command: CommandT::Concede(Box::new(protocol::build!(ConcedeT {}))) });
        let bytes = Codec::default().encode(&ClientMessageT::request(2, ClientBodyT::GameCommand(Box::new(concede))))?;
        a.send(Bytes::from(bytes), Delivery::Reliable)?;
        let mut reason = None;
        for _ in 0..100 {
            let m = tokio::time::timeout(WAIT, b.recv()).await.context("no events")?;
            reason = game_over_reason(&decode(m)?);
            if reason.is_some() {
                break;
            }
        }
        ensure!(reason == Some(GameOverReason::Conceded), "reason {reason:?}");
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.context("the instance did not exit")??;
        ensure!(status.success(), "exit status {status}");
        Ok(())
    }
}

/// The SQLite database of a spawned instance, in its temporary directory.
fn database_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("tavern.db").display())
}

/// After the process exited: the match's events are in the outbox, and its relay published them
/// (marked them) before the exit.
async fn check_events(dir: &std::path::Path, match_id: Uuid) -> Result<()> {
    let db = migrations::Db::open(&database_url(dir), &migrations::PoolConfig::default()).await?;
    let rows = outbox::Outbox::new(db.clone(), "test").events_after(0, 100).await?;
    db.close().await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.event.kind.as_str()).collect();
    ensure!(kinds == ["game_started", "game_ended"], "events {kinds:?}");
    for r in &rows {
        ensure!(r.published_at_ms.is_some(), "{} not published before the exit", r.event.kind);
        ensure!(r.event.source == "instance-server");
        let payload = r.event.payload_json()?;
        ensure!(payload["match_id"] == match_id.to_string(), "{payload}");
    }
    let ended = rows[1].event.payload_json()?;
    ensure!(ended["reason"] == "conceded", "{ended}");
    Ok(())
}

fn first_starter_deck() -> Result<String> {
    instance_server::catalog::Catalog::standard()
        .starter_decks()
        .first()
        .map(|d| d.list.id.clone())
        .ok_or_else(|| anyhow!("no starter deck"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_instance_hosts_the_match_from_its_config_and_exits_after_the_result() -> Result<()> {
    let dir = TempDir::new()?;
    let key_file = dir.0.join("keys.json");
    let issuer = JoinIssuer::new(Keyring::load_or_create(&key_file)?, 30)?;
    let (match_id, alice, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let config = dir.0.join("instance.toml");
    std::fs::write(
        &config,
        format!(
            r#"
mode = "spawned"
instance_id = "spawned-1"
udp_bind = "127.0.0.1:0"
ws_bind = "127.0.0.1:0"
identity_dir = "{tls}"
key_file = "{keys}"
database_url = "{db}"
linger_ms = 100

[match]
match_id = "{match_id}"
seed = 42
players = [
  {{ user_id = "{alice}", username = "alice", deck = "{deck}" }},
  {{ user_id = "{bob}", username = "bob", deck = "{deck}" }},
]
"#,
            tls = dir.0.join("tls").display(),
            keys = key_file.display(),
            db = database_url(&dir.0),
            deck = first_starter_deck()?,
        ),
    )?;
    let instance = Instance::start(&["--config", &config.display().to_string()]).await?;
    let now = service_runtime::now_ms();
    let tokens = [issuer.mint(match_id, alice, "spawned-1", now)?, issuer.mint(match_id, bob, "spawned-1", now)?];
    instance.play_concede_and_exit(&dir.0.join("tls"), tokens).await?;
    check_events(&dir.0, match_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_instance_takes_its_match_from_the_spawner_on_stdin() -> Result<()> {
    let dir = TempDir::new()?;
    let key_file = dir.0.join("keys.json");
    let issuer = JoinIssuer::new(Keyring::load_or_create(&key_file)?, 30)?;
    let (match_id, alice, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let tls = dir.0.join("tls");
    let sets = [
        format!("identity_dir={}", tls.display()),
        format!("key_file={}", key_file.display()),
        format!("database_url={}", database_url(&dir.0)),
        "linger_ms=100".to_owned(),
    ];
    // The spawner's arguments: --port and --instance-id (port 0: any free port).
    let mut args = vec!["--port", "0", "--instance-id", "local-7"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let mut instance = Instance::start(&args).await?;
    let address: serde_json::Value = serde_json::from_str(&instance.spawner_ready)?;
    ensure!(address["udp_port"] == instance.udp, "{address}");
    ensure!(address["ws_url"] == format!("ws://127.0.0.1:{}/ws", instance.ws), "{address}");
    let line = format!(
        "{{\"match_id\":\"{match_id}\",\"mode\":\"ranked\",\"region\":\"local\",\"teams\":[[\"{alice}\"],[\"{bob}\"]],\"created_at_ms\":1}}\n"
    );
    let mut stdin = instance.child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    let now = service_runtime::now_ms();
    let tokens = [issuer.mint(match_id, alice, "local-7", now)?, issuer.mint(match_id, bob, "local-7", now)?];
    // The match exists once the process has read the line; joins before that would be refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let result = instance.play_concede_and_exit(&tls, tokens).await;
    drop(stdin);
    result?;
    check_events(&dir.0, match_id).await
}
