//! `bench instance worker-load`: the bots, in their own process (pinned to the load core by the
//! orchestrator). Reads one JSON line `{"ws_url", "matches": […]}` (the host worker's answer to
//! `live N`), plays every seat of every match at once over WebSocket, and prints one JSON line:
//! `{"finished", "failed", "commands", "seconds", "failures": {reason: players}}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use instance_server::bot::Bot;
use instance_server::catalog::Catalog;
use instance_server::rules::Command;
use instance_server::wire::{self, MatchPlayers};
use protocol::tavern::{ClientBodyT, ClientMessageT, GameEventBodyT, JoinMatchT, ServerBodyT, SnapshotRequestT, UuidT};
use protocol::{Codec, PROTOCOL_VERSION};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use transport::{ClientEvent, Delivery, WsClient};
use uuid::Uuid;

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Wall-clock limit of each bot player, in seconds.
    #[arg(long)]
    time_limit: u64,
}

pub fn run(a: &LoadArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(load(a))
}

async fn load(a: &LoadArgs) -> Result<()> {
    let limit = Duration::from_secs(a.time_limit);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let line = lines.next_line().await?.context("no matches on stdin")?;
    let order: Value = serde_json::from_str(&line).context("the matches line is not JSON")?;
    let url = order["ws_url"].as_str().context("no ws_url")?.to_owned();
    let matches = order["matches"].as_array().context("no matches")?;
    let catalog = Arc::new(Catalog::standard());
    let commands = Arc::new(AtomicU64::new(0));
    // Connects and joins go a few at a time: a storm of thousands of handshakes on a shared
    // two-core machine measures the machine, not the host.
    let ramp = Arc::new(tokio::sync::Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in matches.iter().enumerate() {
        let players = Arc::new(players_of(m)?);
        for seat in 0..2 {
            let token = m["tokens"][seat].as_str().context("no token")?.to_owned();
            let (url, players, catalog, commands, ramp) =
                (url.clone(), players.clone(), catalog.clone(), commands.clone(), ramp.clone());
            let seed = i as u64 * 2 + seat as u64;
            tasks.spawn(async move {
                match tokio::time::timeout(limit, play(&url, &token, &players, &catalog, seed, &commands, &ramp)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("time limit".to_owned()),
                }
            });
        }
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(None) => ok += 1,
            Ok(Some(reason)) => {
                failed += 1;
                *failures.entry(reason).or_default() += 1;
            }
            Err(e) => {
                failed += 1;
                *failures.entry(e.to_string()).or_default() += 1;
            }
        }
    }
    let line = json!({
        "finished": ok / 2,
        "failed": failed.div_ceil(2),
        "commands": commands.load(Ordering::Relaxed),
        "seconds": started.elapsed().as_secs_f64(),
        "failures": failures,
    });
    println!("{line}");
    Ok(())
}

fn players_of(m: &Value) -> Result<MatchPlayers> {
    let id = |v: &Value| -> Result<UuidT> {
        let u: Uuid = v.as_str().context("not a uuid string")?.parse()?;
        Ok(UuidT::from_bytes(u.into_bytes()))
    };
    let seat = |i: usize| -> Result<(UuidT, String)> {
        let s = &m["seats"][i];
        Ok((id(&s[0])?, s[1].as_str().context("no seat name")?.to_owned()))
    };
    Ok(MatchPlayers { match_id: id(&m["match_id"])?, seats: [seat(0)?, seat(1)?] })
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
