//! The launcher binary as a user runs it: it starts on embedded defaults in a fresh data
//! directory, serves the REST contract end to end, starts the matchmaker, the instance host and
//! the GCS on their own ports, stops cleanly on SIGTERM, and refuses bad config with one line and
//! exit code 64.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::tavern::{
    ClientBodyT, ClientMessageT, CommandT, ConcedeT, GameCommandT, HelloT, JoinMatchT, MatchFoundT, QueueJoinT,
    ServerBodyT, ServerMessageT, ServiceRole,
};
use protocol::{Codec, Limits, PROTOCOL_VERSION, build};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use transport::service_link::{ClientConfig, ServiceClient};
use transport::{ClientEvent, Delivery, WsClient};

mod support;
use support::{Launcher, SERVICES, WAIT, get, launch, post};

#[tokio::test]
async fn serves_the_rest_contract_and_stops_on_sigterm() {
    let mut l = launch("rest");
    let http = reqwest::Client::new();
    let v1 = l.login.clone();
    let creds = json!({"username": "alice", "password": "correct horse"});

    let (st, reg) = post(&http, format!("{v1}/auth/register"), None, Some(creds.clone())).await;
    assert_eq!(st, 201, "{reg}");
    let (st, login) = post(&http, format!("{v1}/auth/login"), None, Some(creds)).await;
    assert_eq!(st, 200, "{login}");
    let session = login["session_token"].as_str().expect("session token").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh token").to_owned();
    let (st, acct) = get(&http, format!("{v1}/account"), Some(&session)).await;
    assert_eq!((st, acct["username"].as_str()), (200, Some("alice")), "{acct}");

    let (st, pair) = post(&http, format!("{v1}/auth/refresh"), None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(st, 200, "{pair}");
    let (st, err) = post(&http, format!("{v1}/auth/refresh"), None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!((st, err["error"].as_str()), (401, Some("refresh_token_reused")), "{err}");

    // Reuse revoked that session; a fresh login then logs out, and its token fails after.
    let (st, err) = get(&http, format!("{v1}/account"), Some(&session)).await;
    assert_eq!((st, err["error"].as_str()), (401, Some("token_revoked")), "{err}");
    let (_, login2) = post(&http, format!("{v1}/auth/login"), None, Some(json!({"username": "alice", "password": "correct horse"}))).await;
    let session2 = login2["session_token"].as_str().expect("session token").to_owned();
    let (st, _) = post(&http, format!("{v1}/auth/logout"), Some(&session2), None).await;
    assert_eq!(st, 204);
    let (st, err) = get(&http, format!("{v1}/account"), Some(&session2)).await;
    assert_eq!((st, err["code"].as_u64()), (401, Some(2003)), "{err}");

    let (st, ready) = get(&http, format!("{}/readyz", l.admin), None).await;
    assert_eq!(st, 200, "{ready}");
    let metrics = http.get(format!("{}/metrics", l.admin)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("tavern_login_logins_total"), "{metrics}");
    assert!(l.data_dir.join("tavern.db").exists() && l.data_dir.join("token-keys.json").exists());

    let status = l.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn starts_every_service_on_its_port_and_stops_on_sigterm() {
    let mut l = launch("all");
    for label in SERVICES {
        let addr = &l.addresses[label];
        let port = addr.rsplit(':').next().and_then(|p| p.split('/').next()).and_then(|p| p.parse::<u16>().ok());
        assert!(matches!(port, Some(p) if p != 0), "{label}: {addr}");
    }
    assert!(l.addresses["gcs enet/dtls"].starts_with("udp://127.0.0.1:"), "{:?}", l.addresses);
    assert!(l.addresses["instance enet/dtls"].starts_with("udp://127.0.0.1:"), "{:?}", l.addresses);
    assert!(l.addresses["gcs websocket"].ends_with("/ws"), "{:?}", l.addresses);
    assert!(l.addresses["instance websocket"].ends_with("/ws"), "{:?}", l.addresses);
    assert!(l.data_dir.join("tls").join("cert.pem").exists());

    // The matchmaker's service link welcomes a node presenting the launcher's service token.
    let token = std::fs::read_to_string(l.data_dir.join("service-token")).expect("service token file");
    let matchmaker = l.addresses["matchmaker link"].trim_start_matches("tcp://").to_owned();
    let stop_client = CancellationToken::new();
    let config = ClientConfig::new(matchmaker, "launcher-test", ServiceRole::Gcs, token.trim());
    let (client, _pushes) = ServiceClient::start(config, stop_client.clone());
    let link = client.connected(WAIT).await.expect("the matchmaker welcomes the service token");
    assert_eq!(link.peer().node_id, "matchmaker-local");
    stop_client.cancel();

    // The GCS welcomes a WebSocket Hello with a session token from the REST API.
    let http = reqwest::Client::builder().timeout(WAIT).build().expect("http client");
    let creds = json!({"username": "carol", "password": "correct horse"});
    let (st, reg) = post(&http, format!("{}/auth/register", l.login), None, Some(creds)).await;
    assert_eq!(st, 201, "{reg}");
    let session = reg["session_token"].as_str().expect("session token").to_owned();
    let mut ws = WsClient::connect(&l.addresses["gcs websocket"], None, WAIT).await.expect("the gcs accepts websockets");
    let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some(session), resume_token: None });
    let hello = ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello)));
    let codec = Codec::new(Limits::default());
    ws.send(Bytes::from(codec.encode(&hello).expect("encodes")), Delivery::Reliable).expect("hello sent");
    let event = tokio::time::timeout(WAIT, ws.recv()).await.expect("an answer to hello in time");
    let Some(ClientEvent::Message { data, .. }) = event else { panic!("expected a message, got {event:?}") };
    let answer = codec.decode_server(&data).expect("a server message");
    match answer.body {
        ServerBodyT::Welcome(w) => assert_eq!(w.username, "carol"),
        other => panic!("expected welcome, got {other:?}"),
    }
    ws.close(1000).await;

    let status = l.terminate();
    assert!(status.success(), "{status:?}");
}

/// A WebSocket client of the GCS or the instance host.
struct Ws {
    link: WsClient,
    codec: Codec,
}

impl Ws {
    async fn connect(url: &str) -> Ws {
        let link = WsClient::connect(url, None, WAIT).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        Ws { link, codec: Codec::new(Limits::default()) }
    }

    fn request(&mut self, cid: u32, body: ClientBodyT) {
        let bytes = self.codec.encode(&ClientMessageT::request(cid, body)).expect("encodes");
        self.link.send(Bytes::from(bytes), Delivery::Reliable).expect("sent");
    }

    /// The next message that `pick` accepts, skipping the others, within [`WAIT`].
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(ServerMessageT) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.link.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"));
            let Some(ClientEvent::Message { data, .. }) = event else { panic!("link ended waiting for {what}: {event:?}") };
            let message = self.codec.decode_server(&data).expect("a server message");
            if let ServerBodyT::Error(e) = &message.body {
                panic!("error waiting for {what}: {e:?}");
            }
            if let Some(t) = pick(message) {
                return t;
            }
        }
    }
}

/// Registers `name` and says `Hello` to the GCS with the session token; returns the link and
/// the token.
async fn gcs_session(http: &reqwest::Client, l: &Launcher, name: &str) -> (Ws, String) {
    let creds = json!({"username": name, "password": "correct horse"});
    let (st, reg) = post(http, format!("{}/auth/register", l.login), None, Some(creds)).await;
    assert_eq!(st, 201, "{reg}");
    let token = reg["session_token"].as_str().expect("session token").to_owned();
    let mut ws = Ws::connect(&l.addresses["gcs websocket"]).await;
    let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some(token.clone()), resume_token: None });
    ws.request(1, ClientBodyT::Hello(Box::new(hello)));
    ws.wait_for("welcome", |m| matches!(m.body, ServerBodyT::Welcome(_)).then_some(())).await;
    (ws, token)
}

#[tokio::test]
async fn two_players_queue_play_on_the_instance_host_and_the_result_reaches_the_matchmaker() {
    let mut l = launch("match");
    let http = reqwest::Client::builder().timeout(WAIT).build().expect("http client");
    let (mut players, mut sessions) = (Vec::new(), Vec::new());
    for name in ["dora", "emil"] {
        let (mut gcs, session) = gcs_session(&http, &l, name).await;
        sessions.push(session);
        let join = build!(QueueJoinT { mode: "duel".into(), regions: None, party_members: None });
        gcs.request(2, ClientBodyT::QueueJoin(Box::new(join)));
        players.push(gcs);
    }
    let mut found: Vec<MatchFoundT> = Vec::new();
    for gcs in &mut players {
        let f = gcs.wait_for("match found", |m| match m.body {
            ServerBodyT::MatchFound(f) => Some(*f),
            _ => None,
        });
        found.push(f.await);
    }
    assert_eq!(found[0].match_id, found[1].match_id);
    let instance_ws = l.addresses["instance websocket"].clone();
    let mut seats = Vec::new();
    for f in &found {
        assert_eq!(f.instance.ws_url.as_deref(), Some(instance_ws.as_str()));
        assert_eq!(f.instance.instance_id, "instance-local");
        let mut ws = Ws::connect(&instance_ws).await;
        let join = build!(JoinMatchT { protocol_version: PROTOCOL_VERSION, join_token: f.join_token.clone() });
        ws.request(1, ClientBodyT::JoinMatch(Box::new(join)));
        ws.wait_for("snapshot", |m| matches!(m.body, ServerBodyT::GameSnapshot(_)).then_some(())).await;
        seats.push(ws);
    }
    let concede = build!(GameCommandT { command: CommandT::Concede(Box::new(build!(ConcedeT {}))) });
    seats[0].request(2, ClientBodyT::GameCommand(Box::new(concede)));

    // The instance reports the result over the service link; the matchmaker stores it.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = http.get(format!("{}/metrics", l.admin)).send().await.expect("metrics").text().await.expect("text");
        let stored = metrics.lines().any(|line| {
            line.starts_with("tavern_matchmaker_results_total{") && line.split_whitespace().last() == Some("1")
        });
        if stored {
            break;
        }
        assert!(Instant::now() < deadline, "no result stored within {WAIT:?}:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Login shows the new rating, read from the matchmaker's API on the admin listener.
    let (st, acct) = get(&http, format!("{}/account", l.login), Some(&sessions[1])).await;
    assert_eq!(st, 200, "{acct}");
    let duel = acct["ratings"].as_array().and_then(|r| r.iter().find(|m| m["mode"] == "duel")).cloned();
    let duel = duel.unwrap_or_else(|| panic!("no duel rating on the account: {acct}"));
    assert_eq!((duel["games"].as_i64(), duel["wins"].as_i64()), (Some(1), Some(1)), "{acct}");

    let status = l.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_config_exits_64_with_one_line() {
    for args in [vec!["--set", "login_port=99999"], vec!["--set", "no_such_key=1"], vec!["--config", "/nonexistent/tavern.toml"]] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tavern"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TAVERN_")) {
            cmd.env_remove(k);
        }
        let out = cmd.args(&args).output().expect("launcher runs");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.starts_with("tavern: bad configuration:"), "{err}");
    }
}
