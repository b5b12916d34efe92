//! `bench instance worker-host`: the high-density host under test, alone in its process (pinned to
//! the server core by the orchestrator): an [`InstanceHost`] as the launcher runs it, with match
//! creation and join tokens driven from stdin. And `bench instance worker-base`: a tokio runtime
//! that does nothing, the memory reference.
//!
//! Host protocol, one line each way (answers are JSON objects):
//! - first line out: `{"ws_url": …}` once it listens;
//! - `idle N` → creates N matches nobody joins → `{"created": N, "active": …}`;
//! - `live N` → creates N matches and mints both seats' join tokens → `{"matches": [{"match_id",
//!   "seats": [[user_id, name], …], "tokens": [a, b]}, …]}`, and starts sampling the matches
//!   held every 20 ms;
//! - `stats` → `{"active": …, "peak": …}` (peak = most matches held at once since `live`);
//! - stdin closed → stops the host and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use instance_server::catalog::Catalog;
use instance_server::server::{HostConfig, InstanceHost, InstanceMetrics, MatchSettings, MatchSpec, MemoryReporter, SeatSpec};
use serde_json::json;
use token_service::{JoinIssuer, Keyring};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use transport::ServerIdentity;
use uuid::Uuid;

/// The instance id the host binds into its join tokens.
const INSTANCE_ID: &str = "bench-dense";

#[derive(clap::Args, Debug)]
pub struct HostArgs {
    /// Matches the host may hold at once.
    #[arg(long)]
    max_matches: usize,
    /// Links the host may hold per IP address (the bots all come from 127.0.0.1).
    #[arg(long)]
    max_links: usize,
}

pub fn run(a: &HostArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(host(a))
}

async fn host(a: &HostArgs) -> Result<()> {
    let catalog = Arc::new(Catalog::standard());
    let keyring = Keyring::generate();
    let issuer = JoinIssuer::new(keyring.clone(), token_service::join::MAX_JOIN_TTL_S)?;
    let shutdown = CancellationToken::new();
    let settings = MatchSettings {
        messages_per_s: 10_000,
        message_burst: 10_000,
        join_window: Duration::from_secs(600),
        linger: Duration::from_millis(100),
        ..MatchSettings::default()
    };
    let host = InstanceHost::start(
        HostConfig {
            instance_id: INSTANCE_ID.into(),
            udp_bind: "127.0.0.1:0".parse()?,
            ws_bind: "127.0.0.1:0".parse()?,
            public_host: "127.0.0.1".into(),
            identity: ServerIdentity::self_signed(&["localhost"])?,
            settings,
            max_matches: a.max_matches,
            max_tracked_join_tokens: a.max_links,
            max_links_per_ip: a.max_links,
        },
        keyring,
        catalog.clone(),
        Arc::new(MemoryReporter::new()),
        InstanceMetrics::unregistered(),
        shutdown.clone(),
    )
    .await?;
    let host = Arc::new(host);
    let decks = catalog.starter_decks();
    let deck = |i: u64| decks[(i % decks.len() as u64) as usize].deck().clone();
    let spec = |seed: u64| MatchSpec {
        match_id: Uuid::new_v4(),
        mode: "bench".into(),
        seed,
        turn_ms: 75_000,
        seats: [
            SeatSpec { user_id: Uuid::new_v4(), username: "a".into(), deck: deck(seed) },
            SeatSpec { user_id: Uuid::new_v4(), username: "b".into(), deck: deck(seed + 1) },
        ],
    };
    println!("{}", json!({ "ws_url": format!("ws://{}/ws", host.ws_addr()) }));

    let peak = Arc::new(AtomicUsize::new(0));
    let mut sampler: Option<tokio::task::JoinHandle<()>> = None;
    let mut next_seed = 0u64;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let answer = match (words.next(), words.next().map(str::parse::<u64>)) {
            (Some("idle"), Some(Ok(n))) => {
                for _ in 0..n {
                    host.create_match(spec(next_seed))?;
                    next_seed += 1;
                }
                json!({ "created": n, "active": host.matches_active() })
            }
            (Some("live"), Some(Ok(n))) => {
                let mut matches = Vec::new();
                let now = now_ms();
                for _ in 0..n {
                    let s = spec(1_000_000 + next_seed);
                    next_seed += 1;
                    let tokens = [
                        issuer.mint(s.match_id, s.seats[0].user_id, INSTANCE_ID, now)?,
                        issuer.mint(s.match_id, s.seats[1].user_id, INSTANCE_ID, now)?,
                    ];
                    matches.push(json!({
                        "match_id": s.match_id,
                        "seats": [[s.seats[0].user_id, "a"], [s.seats[1].user_id, "b"]],
                        "tokens": tokens,
                    }));
                    host.create_match(s)?;
                }
                // Matches held: sampled here, in the host's process, from now on.
                let baseline = host.matches_active() - matches.len();
                peak.store(0, Ordering::Relaxed);
                if let Some(s) = sampler.take() {
                    s.abort();
                }
                let (host, peak) = (host.clone(), peak.clone());
                sampler = Some(tokio::spawn(async move {
                    loop {
                        peak.fetch_max(host.matches_active().saturating_sub(baseline), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
                json!({ "matches": matches })
            }
            (Some("stats"), None) => json!({ "active": host.matches_active(), "peak": peak.load(Ordering::Relaxed) }),
            _ => bail!("unknown command {line:?}"),
        };
        println!("{answer}");
    }
    if let Some(s) = sampler.take() {
        s.abort();
        let _ = s.await;
    }
    shutdown.cancel();
    if let Ok(host) = Arc::try_unwrap(host) {
        let _ = tokio::time::timeout(Duration::from_secs(5), host.stopped()).await;
    }
    Ok(())
}

/// `bench instance worker-base`: prints a ready line, then idles in a multi-thread tokio runtime
/// until stdin closes. Its VmRSS is the floor any tokio server process on this machine starts
/// from (the same runtime the host workers and `instance-server` use).
pub fn base() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        println!("{}", json!({ "ready": true }));
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while lines.next_line().await?.is_some() {}
        Ok(())
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
