//! Results reach the matchmaker over the real service link: a match conceded on an instance host
//! whose reporter is a `ServiceLinkReporter` is stored once by a service-link server that acks
//! `MatchResult` (after refusing the first attempt, so the retry is exercised).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use bytes::Bytes;
use instance_server::catalog::Catalog;
use instance_server::server::{
    Backoff, HostConfig, InstanceHost, InstanceMetrics, MatchSettings, MatchSpec, SeatSpec,
    ServiceLinkReporter,
};
use protocol::tavern::{
    ClientBodyT, ClientMessageT, CommandT, ConcedeT, GameCommandT, GameOverReason, JoinMatchT,
    MatchResultAckT, MatchResultT, ServiceBodyT, ServiceMessageT,
};
use protocol::{Codec, ErrorCode, PROTOCOL_VERSION};
use token_service::{JoinIssuer, Keyring};
use tokio_util::sync::CancellationToken;
use transport::service_link::{Handler, LinkHandle, ServerConfig, serve};
use transport::{Delivery, ServerIdentity, WsClient};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);

/// A stand-in matchmaker: refuses the first result, then stores and acks.
#[derive(Default)]
struct Matchmaker {
    attempts: AtomicU32,
    stored: Mutex<Vec<MatchResultT>>,
}

impl Handler for Matchmaker {
    async fn on_message(&self, _link: &LinkHandle, message: ServiceMessageT) -> Option<ServiceMessageT> {
        let ServiceBodyT::MatchResult(result) = message.body else { return None };
        if self.attempts.fetch_add(1, Ordering::Relaxed) == 0 {
            return Some(ServiceMessageT::error(message.cid, ErrorCode::Unavailable, "store unavailable, retry"));
        }
        let ack = protocol::build!(MatchResultAckT { match_id: result.match_id.clone() });
        if let Ok(mut stored) = self.stored.lock() {
            stored.push(*result);
        }
        Some(ServiceMessageT::new(message.cid, ServiceBodyT::MatchResultAck(Box::new(ack))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_is_reported_over_the_service_link_until_acknowledged() -> Result<()> {
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let matchmaker = Arc::new(Matchmaker::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mm_addr = listener.local_addr()?;
    tokio::spawn(serve(listener, ServerConfig::new("mm-test", "secret"), matchmaker.clone(), shutdown.clone()));

    let reporter = ServiceLinkReporter::start(&mm_addr.to_string(), "inst-sl", "secret", WAIT, shutdown.clone());
    let keyring = Keyring::generate();
    let issuer = JoinIssuer::new(keyring.clone(), 30)?;
    let catalog = Arc::new(Catalog::standard());
    let host = InstanceHost::start(
        HostConfig {
            instance_id: "inst-sl".into(),
            udp_bind: "127.0.0.1:0".parse()?,
            ws_bind: "127.0.0.1:0".parse()?,
            public_host: "127.0.0.1".into(),
            identity: ServerIdentity::self_signed(&["localhost"])?,
            settings: MatchSettings {
                linger: Duration::from_millis(50),
                backoff: Backoff { initial: Duration::from_millis(20), ..Backoff::default() },
                ..MatchSettings::default()
            },
            max_matches: 4,
            max_tracked_join_tokens: 64,
            max_links_per_ip: 64,
        },
        keyring,
        catalog.clone(),
        Arc::new(reporter),
        InstanceMetrics::unregistered(),
        shutdown.clone(),
    )
    .await?;
    let deck = catalog.starter_decks().first().ok_or_else(|| anyhow!("no decks"))?.deck().clone();
    let (match_id, alice, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    host.create_match(MatchSpec {
        match_id,
        mode: "ranked".into(),
        seed: 9,
        turn_ms: 75_000,
        seats: [
            SeatSpec { user_id: alice, username: "alice".into(), deck: deck.clone() },
            SeatSpec { user_id: bob, username: "bob".into(), deck },
        ],
    })?;

    // Alice joins and concedes at once.
    let codec = Codec::default();
    let mut a = WsClient::connect(&format!("ws://{}/ws", host.ws_addr()), None, WAIT).await?;
    let join = protocol::build!(JoinMatchT {
        protocol_version: PROTOCOL_VERSION,
        join_token: issuer.mint(match_id, alice, "inst-sl", service_runtime::now_ms())?,
    });
    a.send(Bytes::from(codec.encode(&ClientMessageT::request(1, ClientBodyT::JoinMatch(Box::new(join))))?), Delivery::Reliable)?;
    let concede = protocol::build!(GameCommandT { command: CommandT::Concede(Box::new(protocol::build!(ConcedeT {}))) });
    a.send(Bytes::from(codec.encode(&ClientMessageT::request(2, ClientBodyT::GameCommand(Box::new(concede))))?), Delivery::Reliable)?;

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = matchmaker.stored.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(r) = stored.first() {
            ensure!(stored.len() == 1, "stored {} times", stored.len());
            ensure!(r.reason == GameOverReason::Conceded);
            ensure!(r.winner.as_ref().map(|w| w.to_bytes()) == Some(bob.into_bytes()));
            ensure!(matchmaker.attempts.load(Ordering::Relaxed) == 2);
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "no result stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
