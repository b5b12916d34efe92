//! The GCS end to end on loopback: Rust ENet/DTLS and WebSocket clients say `Hello` with real
//! session tokens and get `Welcome`; hostile hellos get their codes; garbage, takeover, resume
//! with replay of missed pushes, revocation and floods behave as DESIGN §3 and §5 say.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use gcs::{GcsConfig, GcsServer, SessionConfig};
use migrations::testing::TestDb;
use protocol::tavern::{ClientMessageT, PongT, ServerBodyT, ServerMessageT, WelcomeT};
use protocol::{Codec, ErrorCode, Limits, PROTOCOL_VERSION, build};
use token_service::{InProcessRevocations, Keyring, TokenConfig, Tokens};
use tokio_util::sync::CancellationToken;
use transport::{
    ClientEvent, ClientTrust, CloseReason, EnetClient, EnetClientConfig, ServerIdentity, WsClient,
};
use uuid::Uuid;

mod support;
use support::{Client, WAIT, hello, ping, welcome, within};

/// A GCS on loopback with the token machinery to mint tokens for it.
struct Fixture {
    server: GcsServer,
    tokens: Tokens,
    identity: ServerIdentity,
    shutdown: CancellationToken,
    db: TestDb,
    registry: prometheus::Registry,
}

impl Fixture {
    async fn start(session: SessionConfig) -> Result<Fixture> {
        let db = TestDb::sqlite().await;
        let tokens =
            Tokens::new(Keyring::generate(), TokenConfig::default(), db.db.clone(), Arc::new(InProcessRevocations::new()));
        let identity = ServerIdentity::self_signed(&["localhost"])?;
        let config = GcsConfig {
            enet_bind: "127.0.0.1:0".parse()?,
            ws_bind: "127.0.0.1:0".parse()?,
            session,
            ..GcsConfig::default()
        };
        let shutdown = CancellationToken::new();
        let registry = prometheus::Registry::new();
        let backends = support::alone(&db.db, "gcs-links")?;
        let server =
            GcsServer::start(&config, identity.clone(), tokens.session_verifier(), backends, None, &registry, shutdown.clone())
                .await?;
        Ok(Fixture { server, tokens, identity, shutdown, db, registry })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        within(self.server.stopped()).await?;
        self.db.drop_db().await;
        Ok(())
    }

    /// A fresh user's session token, minted `age_ms` in the past.
    fn token(&self, name: &str, age_ms: i64) -> Result<(Uuid, Uuid, String)> {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let minted = self.tokens.mint_session(user, name, session, service_runtime::now_ms() - age_ms)?;
        Ok((user, session, minted.token))
    }

    async fn enet(&self) -> Result<Client> {
        let config = EnetClientConfig::new(self.server.enet_addr(), ClientTrust::PinSha256(self.identity.cert_sha256()));
        Ok(Client::Enet(EnetClient::connect(config, WAIT).await?))
    }

    async fn ws(&self) -> Result<Client> {
        let url = format!("ws://{}/ws", self.server.ws_addr());
        Ok(Client::Ws(WsClient::connect(&url, None, WAIT).await?))
    }

    /// The current value of a metric without labels (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() + m.get_gauge().get_value()))
            .sum()
    }

    /// Waits until the server holds `n` detached sessions.
    async fn detached(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.server.handle().stats().await?.0.detached_sessions != n {
            if Instant::now() > deadline {
                bail!("never reached {n} detached sessions");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// A push that carries a sequence number (a `Pong` with `client_time_ms = n`).
fn numbered_push(n: i64) -> ServerMessageT {
    ServerMessageT::push(ServerBodyT::Pong(Box::new(build!(PongT { client_time_ms: n }))))
}

#[tokio::test]
async fn hello_over_enet_and_websocket_gets_welcome_and_pong() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    for (name, mut client) in [("ada", fx.enet().await?), ("bob", fx.ws().await?)] {
        let (user, session, token) = fx.token(name, 0)?;
        let welcome = client.hello(&token).await?;
        assert_eq!(welcome.user_id.to_bytes(), *user.as_bytes());
        assert_eq!(welcome.session_id.to_bytes(), *session.as_bytes());
        assert_eq!(welcome.username, name);
        assert!(!welcome.resumed);
        assert!(welcome.resume_token.len() >= 43, "256-bit resume token: {}", welcome.resume_token);
        assert!(welcome.heartbeat_interval_ms > 0);
        assert!((welcome.server_time_ms - service_runtime::now_ms()).abs() < 5_000);
        assert_eq!(client.ping(7).await?.client_time_ms, 7);
    }
    fx.stop().await
}

#[tokio::test]
async fn hostile_hellos_get_their_codes() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    let (_, _, good) = fx.token("ada", 0)?;
    let (_, _, expired) = fx.token("old", 60 * 60 * 1000)?;
    let (revoked_user, revoked_session, revoked) = fx.token("gone", 0)?;
    fx.tokens.revoke_session(revoked_user, revoked_session, service_runtime::now_ms()).await?;
    let cases: Vec<(&str, ClientMessageT, ErrorCode)> = vec![
        ("ping first", ping(1, 0), ErrorCode::HelloRequired),
        ("garbage token", hello(PROTOCOL_VERSION, Some("not.a.jwt"), None), ErrorCode::TokenInvalid),
        ("expired token", hello(PROTOCOL_VERSION, Some(&expired), None), ErrorCode::TokenExpired),
        ("revoked token", hello(PROTOCOL_VERSION, Some(&revoked), None), ErrorCode::TokenRevoked),
        ("wrong version", hello(PROTOCOL_VERSION + 1, Some(&good), None), ErrorCode::UnsupportedVersion),
        ("no credentials", hello(PROTOCOL_VERSION, None, None), ErrorCode::Unauthenticated),
        ("unknown resume token", hello(PROTOCOL_VERSION, None, Some("AAAA")), ErrorCode::ResumeTokenInvalid),
    ];
    for (i, (case, message, code)) in cases.into_iter().enumerate() {
        let mut client = if i % 2 == 0 { fx.ws().await? } else { fx.enet().await? };
        client.send(&message)?;
        client.refused(code).await.with_context(|| format!("case {case}"))?;
    }
    // Garbage before hello is refused the same way.
    let mut client = fx.ws().await?;
    client.send_raw(vec![0xde, 0xad, 0xbe, 0xef])?;
    client.refused(ErrorCode::HelloRequired).await?;
    fx.stop().await
}

#[tokio::test]
async fn garbage_after_hello_is_malformed_and_others_are_unaffected() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    let (mut a, mut b) = (fx.enet().await?, fx.ws().await?);
    a.hello(&fx.token("ada", 0)?.2).await?;
    b.hello(&fx.token("bob", 0)?.2).await?;
    for mut client in [a, b] {
        client.send_raw(vec![1, 2, 3, 4, 5, 6, 7, 8, 9])?;
        let message = client.recv().await?;
        let error = message.body.as_error().with_context(|| format!("expected an error, got {message:?}"))?;
        assert_eq!((error.code, error.closes_link), (ErrorCode::Malformed.code(), false));
        assert_eq!(client.ping(2).await?.client_time_ms, 2, "the link survives one bad frame");
    }
    // Malformed frames are counted (the metrics are mirrored on the next tick).
    let deadline = Instant::now() + WAIT;
    while fx.metric("tavern_gcs_malformed_total") < 2.0 {
        assert!(Instant::now() < deadline, "malformed frames never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fx.stop().await
}

#[tokio::test]
async fn an_oversize_message_closes_only_its_link() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    // A client that allows itself larger frames than the server does.
    let config = transport::WsClientConfig { max_frame_bytes: 4 * protocol::MAX_FRAME_BYTES, ..Default::default() };
    let url = format!("ws://{}/ws", fx.server.ws_addr());
    let mut big = Client::Ws(transport::WsClient::connect_with(&url, config).await?);
    let mut other = fx.enet().await?;
    big.hello(&fx.token("ada", 0)?.2).await?;
    other.hello(&fx.token("bob", 0)?.2).await?;
    big.send_raw(vec![0u8; protocol::MAX_FRAME_BYTES + 1024])?;
    let mut closed = false;
    for _ in 0..100 {
        match big.event().await {
            Ok(transport::ClientEvent::Closed(reason)) => {
                println!("an oversize frame closed the link: {reason:?}");
                closed = true;
                break;
            }
            Ok(transport::ClientEvent::Message { .. }) => {}
            Err(_) => break,
        }
    }
    assert!(closed, "an oversize frame must close the link");
    assert_eq!(other.ping(5).await?.client_time_ms, 5, "the other links are unaffected");
    fx.stop().await
}

#[tokio::test]
async fn a_second_login_replaces_the_first() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    let user = Uuid::new_v4();
    let now = service_runtime::now_ms();
    let first = fx.tokens.mint_session(user, "ada", Uuid::new_v4(), now)?.token;
    let second = fx.tokens.mint_session(user, "ada", Uuid::new_v4(), now)?.token;
    let mut old = fx.enet().await?;
    let old_welcome = old.hello(&first).await?;
    let mut new = fx.ws().await?;
    new.hello(&second).await?;
    old.refused(ErrorCode::SessionReplaced).await?;
    assert_eq!(new.ping(3).await?.client_time_ms, 3);
    // The replaced session's resume token is dead.
    let mut late = fx.ws().await?;
    late.send(&hello(PROTOCOL_VERSION, None, Some(&old_welcome.resume_token)))?;
    late.refused(ErrorCode::ResumeTokenInvalid).await?;
    fx.stop().await
}

#[tokio::test]
async fn resume_replays_missed_pushes_once_in_order() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    let (user, session, token) = fx.token("ada", 0)?;
    let mut first = fx.ws().await?;
    let welcome = first.hello(&token).await?;
    fx.server.handle().push(user, numbered_push(0)).await?;
    assert_eq!(first.recv().await?, numbered_push(0), "a live push is delivered at once");
    if let Client::Ws(ws) = &mut first {
        ws.close(0).await;
    }
    fx.detached(1).await?;
    for n in 1..=3 {
        fx.server.handle().push(user, numbered_push(n)).await?;
    }
    let mut second = fx.enet().await?;
    second.send(&hello(PROTOCOL_VERSION, None, Some(&welcome.resume_token)))?;
    let resumed = welcome_of(second.recv().await?)?;
    assert!(resumed.resumed);
    assert_eq!(resumed.missed_pushes, 3);
    assert_eq!(resumed.session_id.to_bytes(), *session.as_bytes());
    assert_ne!(resumed.resume_token, welcome.resume_token, "the resume token rotates");
    for n in 1..=3 {
        assert_eq!(second.recv().await?, numbered_push(n));
    }
    // Nothing is replayed twice: the next message is the answer to this ping.
    assert_eq!(second.ping(9).await?.client_time_ms, 9);
    // The spent resume token does not work again.
    let mut third = fx.ws().await?;
    third.send(&hello(PROTOCOL_VERSION, None, Some(&welcome.resume_token)))?;
    third.refused(ErrorCode::ResumeTokenInvalid).await?;
    fx.stop().await
}

fn welcome_of(message: ServerMessageT) -> Result<WelcomeT> {
    welcome(message)
}

#[tokio::test]
async fn revocation_closes_a_live_link_within_a_second() -> Result<()> {
    let fx = Fixture::start(SessionConfig::default()).await?;
    let (user, _, token) = fx.token("ada", 0)?;
    let (other_user, _, other_token) = fx.token("bob", 0)?;
    let mut client = fx.enet().await?;
    client.hello(&token).await?;
    let mut other = fx.ws().await?;
    other.hello(&other_token).await?;
    let started = Instant::now();
    fx.tokens.revoke_user(user, service_runtime::now_ms()).await?;
    client.refused(ErrorCode::TokenRevoked).await?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert_eq!(other.ping(4).await?.client_time_ms, 4, "{other_user} is unaffected");
    fx.stop().await
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed() -> Result<()> {
    let session = SessionConfig { rate_burst: 5, rate_per_second: 1, flood_close_after: 10, ..SessionConfig::default() };
    let fx = Fixture::start(session).await?;
    let mut client = fx.ws().await?;
    client.hello(&fx.token("ada", 0)?.2).await?;
    for cid in 2..40 {
        client.send(&ping(cid, 0))?;
    }
    let mut limited = 0;
    loop {
        match client.event().await? {
            ClientEvent::Message { data, .. } => {
                let message = Codec::new(Limits::default()).decode_server(&data)?;
                if let Some(error) = message.body.as_error() {
                    assert_eq!(error.code, ErrorCode::RateLimited.code());
                    limited += 1;
                }
            }
            ClientEvent::Closed(reason) => {
                assert_eq!(reason, CloseReason::Remote { code: ErrorCode::RateLimited.code() });
                break;
            }
        }
    }
    assert!(limited >= 10, "RateLimited answers, then the closing one: {limited}");
    fx.stop().await
}

#[tokio::test]
async fn a_silent_link_is_closed_as_dead_and_its_session_can_resume() -> Result<()> {
    let session = SessionConfig { heartbeat_interval_ms: 200, dead_link_timeout_ms: 600, ..SessionConfig::default() };
    let fx = Fixture::start(session).await?;
    let mut client = fx.enet().await?;
    let welcome = client.hello(&fx.token("ada", 0)?.2).await?;
    assert_eq!(welcome.heartbeat_interval_ms, 200);
    let started = Instant::now();
    match client.event().await? {
        ClientEvent::Closed(reason) => assert_eq!(reason, CloseReason::Remote { code: 0 }),
        other => bail!("expected the dead link to close, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "closed after {took:?}");
    let mut again = fx.ws().await?;
    again.send(&hello(PROTOCOL_VERSION, None, Some(&welcome.resume_token)))?;
    assert!(welcome_of(again.recv().await?)?.resumed);
    fx.stop().await
}
