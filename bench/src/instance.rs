//! Scenario `instance`: the instance server. Rules-engine commands per second (recorded bot
//! games replayed through the engine alone, `instance_server::rules::bench_support`); the
//! resident memory of an idle spawned `instance-server` process (started waiting for its
//! assignment, VmRSS read after its ready line); and a high-density host in this process: memory
//! per hosted match (VmRSS with N matches created and nobody joined, minus before, ÷ N) and
//! matches held at once with bots playing every one of them over WebSocket on loopback.
//!
//! The dense part runs host and bots in one process, so its figures include the bots' side of
//! the loopback links for `dense_matches_held` (not for `dense_rss_per_match_bytes`, measured
//! before any link exists). Every loop is bounded in count and time.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use instance_server::bot::Bot;
use instance_server::catalog::Catalog;
use instance_server::rules::Command;
use instance_server::rules::bench_support::{bot_setup, play_bot_game, replay};
use instance_server::server::{
    HostConfig, InstanceHost, InstanceMetrics, MatchSettings, MatchSpec, MemoryReporter, SeatSpec,
};
use instance_server::wire::{self, MatchPlayers};
use protocol::tavern::{ClientBodyT, ClientMessageT, GameEventBodyT, JoinMatchT, ServerBodyT, SnapshotRequestT, UuidT};
use protocol::{Codec, PROTOCOL_VERSION};
use serde_json::json;
use token_service::{JoinIssuer, Keyring};
use tokio_util::sync::CancellationToken;
use transport::{ClientEvent, Delivery, ServerIdentity, WsClient};
use uuid::Uuid;

use crate::report::{Report, Section, Table, round};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bot games recorded for the rules-engine replay.
    #[arg(long, default_value_t = 200)]
    games: u64,
    /// Seconds of replaying for the commands/s figure.
    #[arg(long, default_value_t = 3)]
    replay_seconds: u64,
    /// Matches created (nobody joined) to measure memory per hosted match.
    #[arg(long, default_value_t = 5_000)]
    idle_matches: usize,
    /// Matches played at once by bots over WebSocket in the dense host.
    #[arg(long, default_value_t = 300)]
    live_matches: usize,
    /// The instance-server binary; by default next to this bench binary (built if missing).
    #[arg(long)]
    instance_bin: Option<PathBuf>,
    /// Wall-clock limit of each part, in seconds.
    #[arg(long, default_value_t = 120)]
    time_limit: u64,
}

pub fn run(args: &Args) -> Result<Report> {
    let catalog = Arc::new(Catalog::standard());
    let limit = Duration::from_secs(args.time_limit);

    // 1. The rules engine alone.
    eprintln!("instance: recording {} bot games", args.games);
    let games: Vec<_> = (0..args.games)
        .filter_map(|seed| bot_setup(&catalog, seed).map(|s| play_bot_game(&catalog, s, seed)))
        .collect();
    let per_pass: u64 = games.iter().map(|g| g.commands.len() as u64).sum();
    let started = Instant::now();
    let mut commands = 0u64;
    let mut passes = 0u64;
    while started.elapsed() < Duration::from_secs(args.replay_seconds.max(1)) && started.elapsed() < limit {
        for g in &games {
            commands += replay(&catalog, g).commands;
        }
        passes += 1;
    }
    let rules_per_s = commands as f64 / started.elapsed().as_secs_f64();
    eprintln!("instance: {rules_per_s:.0} rules commands/s ({passes} passes of {per_pass} commands)");

    // 2. An idle spawned process.
    let spawned_rss = spawned_idle_rss(args).context("spawned instance")?;
    eprintln!("instance: idle spawned process VmRSS {} KiB", spawned_rss / 1024);

    // 3. The dense host.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dense = runtime.block_on(dense(args, catalog.clone(), limit))?;

    let mut engine = Table::new(&["games", "commands per pass", "passes", "commands/s"]);
    engine.row(vec![games.len().to_string(), per_pass.to_string(), passes.to_string(), format!("{rules_per_s:.0}")]);
    let mut memory = Table::new(&["what", "bytes"]);
    memory.row(vec!["idle spawned process VmRSS".into(), spawned_rss.to_string()]);
    memory.row(vec![format!("per hosted match (dense, {} idle matches)", args.idle_matches), format!("{:.0}", dense.rss_per_match)]);
    let mut live = Table::new(&["matches played at once", "held at peak", "finished", "failed", "commands", "commands/s", "seconds"]);
    live.row(vec![
        args.live_matches.to_string(),
        dense.held_peak.to_string(),
        dense.finished.to_string(),
        dense.failed.to_string(),
        dense.commands.to_string(),
        format!("{:.0}", dense.commands as f64 / dense.seconds.max(1e-9)),
        format!("{:.1}", dense.seconds),
    ]);
    Ok(Report {
        scenario: "instance",
        title: "Instance server".into(),
        setup: vec![
            format!("{} recorded bot games, replayed for {} s", games.len(), args.replay_seconds),
            format!("{} idle matches for memory, {} matches played by bots over WebSocket", args.idle_matches, args.live_matches),
            "host and bots share this process in the dense part; the spawned process runs alone".into(),
        ],
        sections: vec![
            Section { heading: "Rules engine".into(), table: engine, notes: vec!["Replays of recorded games: engine work only, no bot decisions.".into()] },
            Section { heading: "Memory".into(), table: memory, notes: vec!["Per match = (VmRSS after creating N matches − before) ÷ N, no links.".into()] },
            Section {
                heading: "Dense host with bots".into(),
                table: live,
                notes: vec!["Every match has two WebSocket bot clients that refresh their view by snapshot after every event push.".into()],
            },
        ],
        json: json!({
            "rules_commands_per_s": round(rules_per_s, 0),
            "spawned_idle_rss_bytes": spawned_rss,
            "dense_rss_per_match_bytes": round(dense.rss_per_match, 0),
            "dense_matches_held": dense.held_peak,
            "dense_matches_finished": dense.finished,
            "dense_matches_failed": dense.failed,
        }),
    })
}

fn rss_of(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?
        .parse()?;
    Ok(kib * 1024)
}

fn temp_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tavern-bench-instance-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn instance_bin(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.instance_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow!("bench binary has no directory"))?;
    let bin = dir.join("instance-server");
    if !bin.exists() {
        eprintln!("instance: building the instance-server binary");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "instance-server", "--bin", "instance-server"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status()?;
        if !status.success() || !bin.exists() {
            bail!("could not build {}", bin.display());
        }
    }
    Ok(bin)
}

/// Starts the binary in spawned mode waiting for its assignment, reads VmRSS a moment after its
/// ready line, then closes its stdin (no assignment: it exits).
fn spawned_idle_rss(args: &Args) -> Result<u64> {
    use std::io::BufRead;
    let bin = instance_bin(args)?;
    let dir = temp_dir()?;
    let mut child = std::process::Command::new(&bin)
        .args(["--port", "0", "--instance-id", "bench-idle"])
        .args(["--set", &format!("identity_dir={}", dir.join("tls").display())])
        .args(["--set", &format!("key_file={}", dir.join("keys.json").display())])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let ready = lines.next().ok_or_else(|| anyhow!("no ready line"))??;
    if !ready.starts_with("TAVERN_INSTANCE_READY") {
        bail!("unexpected first line {ready:?}");
    }
    // Let start-up allocations settle.
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_of(&child.id().to_string());
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    rss
}

struct Dense {
    rss_per_match: f64,
    held_peak: usize,
    finished: u64,
    failed: u64,
    commands: u64,
    seconds: f64,
}

async fn dense(args: &Args, catalog: Arc<Catalog>, limit: Duration) -> Result<Dense> {
    let keyring = Keyring::generate();
    let issuer = JoinIssuer::new(keyring.clone(), 60)?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let settings = MatchSettings {
        messages_per_s: 10_000,
        message_burst: 10_000,
        join_window: Duration::from_secs(600),
        linger: Duration::from_millis(100),
        ..MatchSettings::default()
    };
    let host = InstanceHost::start(
        HostConfig {
            instance_id: "bench-dense".into(),
            udp_bind: "127.0.0.1:0".parse()?,
            ws_bind: "127.0.0.1:0".parse()?,
            public_host: "127.0.0.1".into(),
            identity: ServerIdentity::self_signed(&["localhost"])?,
            settings,
            max_matches: args.idle_matches + args.live_matches + 16,
            max_tracked_join_tokens: 4 * (args.live_matches + 16),
            max_links_per_ip: 4 * (args.live_matches + 16),
        },
        keyring,
        catalog.clone(),
        Arc::new(MemoryReporter::new()),
        InstanceMetrics::unregistered(),
        shutdown.clone(),
    )
    .await?;
    let pid = std::process::id().to_string();
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

    // Memory per hosted match, before any link exists.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_of(&pid)?;
    for seed in 0..args.idle_matches as u64 {
        host.create_match(spec(seed))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_of(&pid)?;
    let rss_per_match = after.saturating_sub(before) as f64 / args.idle_matches.max(1) as f64;
    eprintln!("instance: {} idle matches, {:.0} bytes each", args.idle_matches, rss_per_match);

    // Bots play every live match at once.
    let url = format!("ws://{}/ws", host.ws_addr());
    let commands = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let ramp = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..args.live_matches as u64 {
        let s = spec(1_000_000 + i);
        let players = MatchPlayers {
            match_id: wire_id(s.match_id),
            seats: [(wire_id(s.seats[0].user_id), "a".into()), (wire_id(s.seats[1].user_id), "b".into())],
        };
        let now = now_ms();
        let tokens = [
            issuer.mint(s.match_id, s.seats[0].user_id, "bench-dense", now)?,
            issuer.mint(s.match_id, s.seats[1].user_id, "bench-dense", now)?,
        ];
        host.create_match(s)?;
        for (seat, token) in tokens.into_iter().enumerate() {
            let (url, players, catalog, commands, ramp) =
                (url.clone(), players.clone(), catalog.clone(), commands.clone(), ramp.clone());
            tasks.spawn(async move {
                let r = tokio::time::timeout(limit, play(&url, &token, &players, &catalog, i * 2 + seat as u64, &commands, &ramp)).await;
                match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("time limit".to_owned()),
                }
            });
        }
    }
    // Matches held: sampled while the bots play.
    let mut held_peak = 0;
    let deadline = Instant::now() + limit;
    let sampler = {
        async {
            while Instant::now() < deadline {
                held_peak = held_peak.max(host.matches_active());
                if host.matches_active() == args.idle_matches {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let ((), results) = tokio::join!(sampler, async {
        let mut ok = 0u64;
        let mut failed = 0u64;
        let mut reasons: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(None) => ok += 1,
                Ok(Some(reason)) => {
                    failed += 1;
                    *reasons.entry(reason).or_default() += 1;
                }
                Err(e) => {
                    failed += 1;
                    *reasons.entry(e.to_string()).or_default() += 1;
                }
            }
        }
        for (reason, n) in &reasons {
            eprintln!("instance: {n} bot players failed: {reason}");
        }
        (ok, failed)
    });
    let seconds = started.elapsed().as_secs_f64();
    let (ok_players, failed_players) = results;
    Ok(Dense {
        rss_per_match,
        held_peak: held_peak.saturating_sub(args.idle_matches),
        finished: ok_players / 2,
        failed: failed_players.div_ceil(2),
        commands: commands.load(Ordering::Relaxed),
        seconds,
    })
}

fn wire_id(id: Uuid) -> UuidT {
    UuidT::from_bytes(id.into_bytes())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One bot player over WebSocket: join, then act on its turn and refresh its view by snapshot
/// after every push, until the game is over.
async fn play(
    url: &str,
    token: &str,
    players: &MatchPlayers,
    catalog: &Catalog,
    seed: u64,
    commands: &AtomicU64,
    ramp: &tokio::sync::Semaphore,
) -> Result<()> {
    let codec = Codec::default();
    // Connects and joins go a few at a time: a storm of thousands of handshakes on a shared
    // two-core machine measures the machine, not the host.
    let mut permit = Some(ramp.acquire().await?);
    let mut client = WsClient::connect(url, None, Duration::from_secs(10)).await?;
    let mut cid = 0u32;
    let mut send = |client: &mut WsClient, body: ClientBodyT| -> Result<u32> {
        cid += 1;
        client.send(Bytes::from(codec.encode(&ClientMessageT::request(cid, body))?), Delivery::Reliable)?;
        Ok(cid)
    };
    let join = protocol::build!(JoinMatchT { protocol_version: PROTOCOL_VERSION, join_token: token.to_owned() });
    let mut waiting_for = Some(send(&mut client, ClientBodyT::JoinMatch(Box::new(join)))?);
    let mut bot = Bot::new(seed);
    let mut view = None;
    for _ in 0..100_000 {
        let event = tokio::time::timeout(Duration::from_secs(30), client.recv()).await.context("bot starved")?;
        let message = match event {
            Some(ClientEvent::Message { data, .. }) => codec.decode_server(&data)?,
            Some(ClientEvent::Closed(reason)) => {
                return if view.as_ref().is_some_and(|v: &instance_server::rules::PlayerView| v.result.is_some()) {
                    Ok(())
                } else {
                    Err(anyhow!("link closed mid-game ({reason:?}, joined: {})", view.is_some()))
                };
            }
            None => bail!("link gone mid-game"),
        };
        match message.body {
            ServerBodyT::GameSnapshot(s) => {
                permit.take();
                let v = wire::view_from_snapshot(&s, catalog, players)?;
                if v.result.is_some() {
                    return Ok(());
                }
                waiting_for = None;
                if v.my_turn() {
                    let command = bot.choose(&v, catalog).unwrap_or(Command::EndTurn);
                    let body = ClientBodyT::GameCommand(Box::new(wire::command_to_wire(&command, players)));
                    waiting_for = Some(send(&mut client, body)?);
                    commands.fetch_add(1, Ordering::Relaxed);
                }
                view = Some(v);
            }
            ServerBodyT::Ack(_) | ServerBodyT::Error(_) if Some(message.cid) == waiting_for => {
                waiting_for = Some(send(&mut client, ClientBodyT::SnapshotRequest(Box::new(protocol::build!(SnapshotRequestT {}))))?);
            }
            ServerBodyT::GameEvents(events)
                if events.events.iter().flatten().any(|e| matches!(e.event, GameEventBodyT::GameOver(_))) =>
            {
                return Ok(());
            }
            ServerBodyT::GameEvents(_) if waiting_for.is_none() => {
                waiting_for = Some(send(&mut client, ClientBodyT::SnapshotRequest(Box::new(protocol::build!(SnapshotRequestT {}))))?);
            }
            _ => {}
        }
    }
    bail!("game did not end")
}
