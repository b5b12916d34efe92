//! Client helpers shared by the GCS's integration tests: one link of either kind (ENet/DTLS or
//! WebSocket), typed send and receive, hello, and bounded waits; the real login service in this
//! process and its REST API (registering, logging in, befriending); a linked user's requests and
//! the pushes it waits for.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use protocol::tavern::{
    ChannelKind, ChannelT, ChatSendT, ClientBodyT, ClientMessageT, FriendsPresenceListT, HelloT, PingT, PongT,
    PresenceState, ServerBodyT, ServerMessageT, UuidT, WelcomeT,
};
use protocol::{Codec, ErrorCode, Limits, PROTOCOL_VERSION, build};
use serde_json::{Value, json};
use token_service::Tokens;
use tokio_util::sync::CancellationToken;
use transport::{ClientEvent, CloseReason, Delivery, EnetClient, WsClient};
use uuid::Uuid;

/// The backends of a node alone in this process: an in-process cluster, chat on `db`, no login,
/// matchmaker or outbox.
pub fn alone(db: &migrations::Db, node_id: &str) -> Result<gcs::Backends> {
    Ok(gcs::Backends {
        node_id: node_id.to_owned(),
        cluster: gcs::Cluster::in_process(bus::Bus::in_process(), &bus::InProcessStore::default(), node_id)?,
        chat: gcs::chat_store::ChatStore::new(db.clone()),
        social: None,
        matchmaker: None,
        outbox: None,
    })
}

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// One client link of either kind.
pub enum Client {
    Enet(EnetClient),
    Ws(WsClient),
}

impl Client {
    pub fn send_raw(&mut self, data: Vec<u8>) -> Result<()> {
        let data = Bytes::from(data);
        match self {
            Client::Enet(c) => c.send(data, Delivery::Reliable)?,
            Client::Ws(c) => c.send(data, Delivery::Reliable)?,
        }
        Ok(())
    }

    pub fn send(&mut self, message: &ClientMessageT) -> Result<()> {
        let bytes = Codec::new(Limits::default()).encode(message)?;
        self.send_raw(bytes)
    }

    pub async fn event(&mut self) -> Result<ClientEvent> {
        let event = match self {
            Client::Enet(c) => within(c.recv()).await?,
            Client::Ws(c) => within(c.recv()).await?,
        };
        event.context("client events ended")
    }

    pub async fn recv(&mut self) -> Result<ServerMessageT> {
        match self.event().await? {
            ClientEvent::Message { data, .. } => Ok(Codec::new(Limits::default()).decode_server(&data)?),
            ClientEvent::Closed(reason) => bail!("expected a message, the link closed: {reason:?}"),
        }
    }

    /// Expects `Error { code, closes_link }` and then the link closing with `code`.
    pub async fn refused(&mut self, code: ErrorCode) -> Result<()> {
        let message = self.recv().await?;
        let error = message.body.as_error().with_context(|| format!("expected an error, got {message:?}"))?;
        assert_eq!((error.code, error.closes_link), (code.code(), true), "{error:?}");
        self.closed(code).await
    }

    /// Skips messages until the link closes, and checks the close code.
    pub async fn closed(&mut self, code: ErrorCode) -> Result<()> {
        for _ in 0..10_000 {
            if let ClientEvent::Closed(reason) = self.event().await? {
                assert_eq!(reason, CloseReason::Remote { code: code.code() });
                return Ok(());
            }
        }
        bail!("the link never closed")
    }

    pub async fn hello(&mut self, token: &str) -> Result<WelcomeT> {
        self.send(&hello(PROTOCOL_VERSION, Some(token), None))?;
        welcome(self.recv().await?)
    }

    pub async fn ping(&mut self, cid: u32) -> Result<PongT> {
        self.send(&ping(cid, i64::from(cid)))?;
        let message = self.recv().await?;
        assert_eq!(message.cid, cid);
        Ok(message.body.as_pong().with_context(|| format!("expected a pong, got {message:?}"))?.clone())
    }
}

pub fn hello(version: u16, token: Option<&str>, resume: Option<&str>) -> ClientMessageT {
    let hello = build!(HelloT {
        protocol_version: version,
        token: token.map(str::to_owned),
        resume_token: resume.map(str::to_owned),
    });
    ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello)))
}

pub fn ping(cid: u32, client_time_ms: i64) -> ClientMessageT {
    ClientMessageT::request(cid, ClientBodyT::Ping(Box::new(build!(PingT { client_time_ms }))))
}

pub fn welcome(message: ServerMessageT) -> Result<WelcomeT> {
    match message.body {
        ServerBodyT::Welcome(w) => Ok(*w),
        other => bail!("expected welcome, got {other:?}"),
    }
}

pub async fn within<F: std::future::Future>(f: F) -> Result<F::Output> {
    tokio::time::timeout(WAIT, f).await.context("timed out")
}


// -------------------------------------------------------------------------------------------
// Login, in this process, and its REST API

/// The password every test account registers with.
pub const PASSWORD: &str = "correct horse battery";

/// Login's config for these tests: cheap password hashing, `service_token` trusted on its
/// internal API (the GCS's social client presents it).
pub fn login_config(service_token: &str) -> login::LoginConfig {
    let mut config = login::LoginConfig::default();
    config.password_hashing.memory_kib = 1024;
    config.password_hashing.iterations = 1;
    config.service_token = Some(service_token.to_owned());
    config
}

/// Serves login with `config` over `db` and `tokens` on a loopback port until `shutdown` fires;
/// its base URL.
pub async fn start_login(
    config: login::LoginConfig,
    db: &migrations::Db,
    tokens: Tokens,
    shutdown: CancellationToken,
) -> Result<String> {
    let state = login::AppState::new(config, db.clone(), tokens, &prometheus::Registry::new())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(login::serve(listener, state, shutdown));
    Ok(url)
}

/// A registered account.
pub struct Account {
    pub id: Uuid,
    /// Its session token.
    pub token: String,
}

/// Login's public REST API (`/v1`) as the tests' users call it.
pub struct LoginRest {
    pub http: reqwest::Client,
    /// Login's base URL, e.g. `http://127.0.0.1:8080`.
    pub base: String,
}

impl LoginRest {
    pub fn new(base: String) -> LoginRest {
        LoginRest { http: reqwest::Client::new(), base }
    }

    /// Calls `/v1{path}` with a JSON body, as the bearer of `token` if given; the answer, which
    /// must be a success.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}/v1{path}", self.base)).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = within(req.send()).await??;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }

    /// [`LoginRest::call`] with `POST`.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, token, body).await
    }

    /// Registers `name` with [`PASSWORD`] (no link yet).
    pub async fn register(&self, name: &str) -> Result<Account> {
        let body = self.post("/auth/register", None, json!({"username": name, "password": PASSWORD})).await?;
        Ok(Account {
            id: body["user_id"].as_str().context("user_id")?.parse()?,
            token: body["session_token"].as_str().context("session_token")?.to_owned(),
        })
    }

    /// A password login: a new session (and token) for the account.
    pub async fn login(&self, name: &str) -> Result<String> {
        let body = self.post("/auth/login", None, json!({"username": name, "password": PASSWORD})).await?;
        Ok(body["session_token"].as_str().context("session_token")?.to_owned())
    }

    /// `a` asks, `b` accepts.
    pub async fn befriend(&self, a: &Account, b: &Account) -> Result<()> {
        self.post("/friends/requests", Some(&a.token), json!({"user_id": b.id})).await?;
        self.post(&format!("/friends/requests/{}/accept", a.id), Some(&b.token), json!({})).await?;
        Ok(())
    }
}

// -------------------------------------------------------------------------------------------
// A linked user

/// A user with a live link that has said hello.
pub struct User {
    pub name: String,
    pub client: Client,
    next_cid: u32,
}

impl User {
    /// Links `client` as `name` with session `token`: says hello and expects a welcome.
    pub async fn hello(name: &str, mut client: Client, token: &str) -> Result<User> {
        client.hello(token).await.with_context(|| format!("{name} saying hello"))?;
        Ok(User { name: name.to_owned(), client, next_cid: 10 })
    }

    /// Sends a request and returns its answer, skipping the pushes that came before it.
    pub async fn request(&mut self, body: ClientBodyT) -> Result<ServerMessageT> {
        Ok(self.request_with_pushes(body).await?.0)
    }

    /// Sends a request and returns its answer, with the pushes that came before it.
    pub async fn request_with_pushes(&mut self, body: ClientBodyT) -> Result<(ServerMessageT, Vec<ServerMessageT>)> {
        self.next_cid += 1;
        let cid = self.next_cid;
        self.client.send(&ClientMessageT::request(cid, body))?;
        let mut pushes = Vec::new();
        for _ in 0..1_000 {
            let m = self.client.recv().await.with_context(|| format!("{} waiting for the answer to {cid}", self.name))?;
            if m.cid == cid {
                return Ok((m, pushes));
            }
            pushes.push(m);
        }
        bail!("{}: no answer to {cid}", self.name)
    }

    /// The next push matching `pick`, skipping others (bounded).
    pub async fn push<T>(&mut self, what: &str, pick: impl Fn(&ServerBodyT) -> Option<T>) -> Result<T> {
        for _ in 0..1_000 {
            let m = self.client.recv().await.with_context(|| format!("{} waiting for {what}", self.name))?;
            if m.cid == 0
                && let Some(t) = pick(&m.body)
            {
                return Ok(t);
            }
        }
        bail!("{} never got {what}", self.name)
    }

    /// Sends `text` to `channel`; the answer.
    pub async fn say(&mut self, channel: ChannelT, text: &str) -> Result<ServerMessageT> {
        let send = build!(ChatSendT { channel: Box::new(channel), text: text.to_owned() });
        self.request(ClientBodyT::ChatSend(Box::new(send))).await
    }

    /// The next chat message pushed with `text`: its sender and channel kind.
    pub async fn heard(&mut self, text: &str) -> Result<(Uuid, ChannelKind)> {
        self.push(&format!("chat {text:?}"), |b| match b {
            ServerBodyT::ChatMessage(m) if m.text == text => Some((Uuid::from_bytes(m.from_user_id.bytes), m.channel.kind)),
            _ => None,
        })
        .await
    }

    /// The friends list pushed after login loaded it.
    pub async fn friends_list_push(&mut self) -> Result<Vec<(Uuid, PresenceState)>> {
        self.push("friends presence", |b| b.as_friends_presence_list().map(|l| states(l))).await
    }

    /// Asks for the friends list; the answer and the pushes received before it.
    pub async fn friends_list_request(&mut self) -> Result<(Vec<(Uuid, PresenceState)>, Vec<ServerMessageT>)> {
        let (answer, pushes) = self.request_with_pushes(ClientBodyT::FriendsPresenceRequest(Box::default())).await?;
        let list = answer.body.as_friends_presence_list().with_context(|| format!("expected a friends list, got {answer:?}"))?;
        Ok((states(list), pushes))
    }

    /// Waits for both pushes a friend's login brings: `FriendOnline` and `PresenceUpdate(Online)`.
    pub async fn friend_came_online(&mut self, friend: Uuid) -> Result<()> {
        let (mut online, mut update) = (false, false);
        for _ in 0..1_000 {
            let m = self.client.recv().await.with_context(|| format!("{} waiting for {friend} online", self.name))?;
            match &m.body {
                ServerBodyT::FriendOnline(f) if Uuid::from_bytes(f.friend.user_id.bytes) == friend => online = true,
                ServerBodyT::PresenceUpdate(p) if Uuid::from_bytes(p.user_id.bytes) == friend => {
                    ensure!(p.state == PresenceState::Online, "{}: {friend} went {:?}", self.name, p.state);
                    update = true;
                }
                _ => {}
            }
            if online && update {
                return Ok(());
            }
        }
        bail!("{} never saw {friend} come online", self.name)
    }

    /// Skips pushes until the server says `code` (closing the link) and the link closes with it.
    pub async fn closed_with(&mut self, code: ErrorCode) -> Result<()> {
        let mut told = false;
        for _ in 0..1_000 {
            match self.client.event().await.with_context(|| format!("{} waiting for {code:?}", self.name))? {
                ClientEvent::Message { data, .. } => {
                    let m = Codec::new(Limits::default()).decode_server(&data)?;
                    if let Some(error) = m.body.as_error() {
                        ensure!(
                            (error.error_code(), error.closes_link) == (Some(code), true),
                            "{}: expected {code:?} closing the link, got {error:?}",
                            self.name
                        );
                        told = true;
                    }
                }
                ClientEvent::Closed(reason) => {
                    ensure!(reason == CloseReason::Remote { code: code.code() }, "{}: closed with {reason:?}, not {code:?}", self.name);
                    ensure!(told, "{}: the link closed with {code:?} but no error message said why", self.name);
                    return Ok(());
                }
            }
        }
        bail!("{}: the link never closed", self.name)
    }
}

/// The (user, state) pairs of a friends list.
pub fn states(list: &FriendsPresenceListT) -> Vec<(Uuid, PresenceState)> {
    list.friends.iter().flatten().map(|f| (Uuid::from_bytes(f.user_id.bytes), f.state)).collect()
}

/// The direct-message channel to `to`.
pub fn direct(to: Uuid) -> ChannelT {
    build!(ChannelT { kind: ChannelKind::Direct, user_id: Some(UuidT::from_bytes(*to.as_bytes())) })
}
