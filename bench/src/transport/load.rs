//! The load generator (`bench transport worker-load`), pinned to the load core: Tavern's own
//! clients (`EnetClient`, `WsClient`) on one current-thread runtime.
//!
//! Modes:
//! - `echo`: N clients each keep a window of messages in flight for a bounded time; every
//!   message carries its send time, so each echo gives a loaded round trip. Then one client
//!   alone plays ping-pong (one message in flight) for the unloaded round trip.
//! - `handshakes`: C concurrent loops connect (DTLS handshake + ENet connect) and leave, for a
//!   bounded time.
//! - `hold`: opens links on `open K` commands from stdin and keeps them alive (ENet pings) until
//!   stdin closes.
//!
//! Each mode prints its result as one JSON line.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::transport::{ClientEvent, ClientTrust, Delivery, EnetClient, EnetClientConfig, WsClient, WsClientConfig};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::Kind;
use crate::report::{percentile, sorted};

/// How long one connect (handshake included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight echoes may take to come back after the measured window.
const DRAIN: Duration = Duration::from_secs(2);
/// Connects in flight at once while opening links to hold.
const HOLD_CONNECT_CONCURRENCY: usize = 64;
/// Source addresses 127.0.0.2 … 127.0.0.254 (DESIGN.md §11).
pub(crate) const SOURCE_ADDRESSES: usize = 253;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Handshakes,
    Hold,
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub mode: Mode,
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The server's address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// SHA-256 of the server certificate (hex), for ENet/DTLS.
    #[arg(long, default_value = "")]
    pub pin: String,
    /// echo: clients; handshakes: concurrent connect loops; hold: the most links this worker
    /// may open.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// echo: messages in flight per client.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// echo: message size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 100)]
    pub bytes: usize,
    /// echo, handshakes: the measured time.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// echo: time before the measured window (not counted).
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// echo: the unloaded ping-pong phase's time limit.
    #[arg(long, default_value_t = 1.0)]
    pub ping_seconds: f64,
    /// echo: the unloaded ping-pong phase's sample limit.
    #[arg(long, default_value_t = 20_000)]
    pub ping_max: usize,
    /// The first source address index (127.0.0.2 + index mod 253) this worker uses.
    #[arg(long, default_value_t = 0)]
    pub source_offset: usize,
    /// hold: how often each held client services ENet when nothing arrives, in ms.
    #[arg(long, default_value_t = 200)]
    pub service_ms: u64,
}

pub fn run(args: &LoadArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(async {
        match args.mode {
            Mode::Echo => echo(args).await,
            Mode::Handshakes => handshakes(args).await,
            Mode::Hold => hold(args).await,
        }
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            // The orchestrator reads the reason from the line it waits for.
            println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            Err(e)
        }
    }
}

/// One client link of any transport.
enum Client {
    Enet(EnetClient),
    Ws(WsClient),
}

/// How to reach the server.
#[derive(Clone)]
struct Target {
    kind: Kind,
    addr: SocketAddr,
    pin: Option<[u8; 32]>,
}

impl Target {
    fn of(args: &LoadArgs) -> Result<Target> {
        let pin = match args.kind {
            Kind::EnetDtls => Some(parse_pin(&args.pin)?),
            Kind::EnetPlain | Kind::Ws => None,
        };
        Ok(Target { kind: args.kind, addr: args.addr, pin })
    }

    async fn connect(&self, source: usize, service: Option<Duration>, event_capacity: usize) -> Result<Client> {
        match self.kind {
            Kind::EnetDtls | Kind::EnetPlain => {
                let trust = match self.pin {
                    Some(pin) => ClientTrust::PinSha256(pin),
                    None => ClientTrust::PlaintextDev,
                };
                let mut config = EnetClientConfig::new(self.addr, trust);
                config.bind = Some(source_addr(source));
                config.event_capacity = event_capacity;
                if let Some(service) = service {
                    config.service_interval = service;
                }
                Ok(Client::Enet(EnetClient::connect(config, CONNECT_TIMEOUT).await?))
            }
            Kind::Ws => {
                let config = WsClientConfig { timeout: CONNECT_TIMEOUT, event_capacity, ..WsClientConfig::default() };
                Ok(Client::Ws(WsClient::connect_with(&format!("ws://{}/ws", self.addr), config).await?))
            }
        }
    }
}

impl Client {
    fn send(&mut self, data: Bytes) -> Result<()> {
        match self {
            Client::Enet(c) => c.send(data, Delivery::Reliable)?,
            Client::Ws(c) => c.send(data, Delivery::Reliable)?,
        }
        Ok(())
    }

    async fn recv(&mut self) -> Option<ClientEvent> {
        match self {
            Client::Enet(c) => c.recv().await,
            Client::Ws(c) => c.recv().await,
        }
    }

    async fn close(&mut self) {
        let close = async {
            match self {
                Client::Enet(c) => c.close(0).await,
                Client::Ws(c) => c.close(1000).await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), close).await;
    }
}

/// 127.0.0.2 … 127.0.0.254, port chosen by the kernel.
pub(crate) fn source_addr(index: usize) -> SocketAddr {
    let last = 2 + (index % SOURCE_ADDRESSES) as u8;
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0))
}

pub(crate) fn parse_pin(hex: &str) -> Result<[u8; 32]> {
    let mut pin = [0u8; 32];
    if hex.len() != 64 {
        bail!("pin {hex:?} is not 64 hex digits");
    }
    for (i, byte) in pin.iter_mut().enumerate() {
        let digits = hex.get(2 * i..2 * i + 2).ok_or_else(|| anyhow!("pin {hex:?} is not hex"))?;
        *byte = u8::from_str_radix(digits, 16).with_context(|| format!("pin {hex:?} is not hex"))?;
    }
    Ok(pin)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// What one echo client measured.
#[derive(Default)]
struct EchoTally {
    /// Echoes received within the measured window.
    echoes: u64,
    /// Round trips of those echoes, in µs.
    rtt_us: Vec<u32>,
    /// Messages still in flight when the drain ended.
    lost: u64,
    /// Echoes whose size differed from what was sent, or send failures.
    errors: u64,
    /// The link closed during the run.
    closed: bool,
}

async fn echo(args: &LoadArgs) -> Result<()> {
    anyhow::ensure!(args.bytes >= 8, "--bytes {} is below 8 (the send time)", args.bytes);
    anyhow::ensure!(args.clients >= 1 && args.window >= 1, "--clients and --window must be at least 1");
    let target = Target::of(args)?;
    let epoch = Instant::now();
    let capacity = (args.window * 2).max(64);
    let connects = (0..args.clients).map(|i| {
        let target = target.clone();
        let source = args.source_offset + i;
        async move { target.connect(source, None, capacity).await }
    });
    let clients: Vec<Client> = futures::stream::iter(connects)
        .buffer_unordered(HOLD_CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()
        .context("connecting the echo clients")?;

    let start = Instant::now() + Duration::from_millis(50);
    let from = start + secs(args.warmup);
    let end = from + secs(args.seconds);
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (bytes, window) = (args.bytes, args.window);
        tasks.push(tokio::spawn(echo_client(client, epoch, start, from, end, window, bytes)));
    }
    // The orchestrator reads the server's and this process's CPU over the measured window.
    tokio::time::sleep_until(from.into()).await;
    println!("{}", serde_json::json!({ "window_start": true }));
    tokio::time::sleep_until(end.into()).await;
    println!("{}", serde_json::json!({ "window_end": true }));
    let mut clients = Vec::with_capacity(tasks.len());
    let mut total = EchoTally::default();
    let mut closed = 0;
    for task in tasks {
        let (client, tally) = task.await.context("an echo client task failed")?;
        total.echoes += tally.echoes;
        total.rtt_us.extend(tally.rtt_us);
        total.lost += tally.lost;
        total.errors += tally.errors;
        closed += usize::from(tally.closed);
        clients.push(client);
    }
    let loaded = sorted(total.rtt_us.iter().map(|&v| f64::from(v)).collect());

    // The unloaded round trip: one message in flight on the first client, the others idle.
    let mut ping = Vec::new();
    let mut ping_errors = 0u64;
    if let Some(client) = clients.first_mut() {
        let stop = Instant::now() + secs(args.ping_seconds);
        while ping.len() < args.ping_max && Instant::now() < stop {
            let sent = Instant::now();
            if client.send(payload(epoch, sent, args.bytes)).is_err() {
                ping_errors += 1;
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), client.recv()).await {
                Ok(Some(ClientEvent::Message { data, .. })) if data.len() == args.bytes => {
                    ping.push(sent.elapsed().as_secs_f64() * 1e6);
                }
                Ok(Some(ClientEvent::Message { .. })) => ping_errors += 1,
                _ => {
                    ping_errors += 1;
                    break;
                }
            }
        }
    }
    let ping = sorted(ping);
    for client in &mut clients {
        client.close().await;
    }
    let measured = args.seconds;
    println!(
        "{}",
        serde_json::json!({
            "clients": args.clients,
            "window": args.window,
            "bytes": args.bytes,
            "seconds": measured,
            "echoes": total.echoes,
            "msgs_per_s": total.echoes as f64 / measured.max(1e-9),
            "loaded_rtt_p50_us": percentile(&loaded, 50.0),
            "loaded_rtt_p99_us": percentile(&loaded, 99.0),
            "ping_samples": ping.len(),
            "rtt_p50_us": percentile(&ping, 50.0),
            "rtt_p99_us": percentile(&ping, 99.0),
            "lost": total.lost,
            "errors": total.errors + ping_errors,
            "links_closed": closed,
        })
    );
    Ok(())
}

/// A message of `bytes` bytes starting with its send time (ns since `epoch`).
fn payload(epoch: Instant, sent: Instant, bytes: usize) -> Bytes {
    let mut v = vec![0u8; bytes];
    let ns = u64::try_from(sent.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
    v[..8].copy_from_slice(&ns.to_le_bytes());
    Bytes::from(v)
}

/// The send time carried by an echo, if it is well formed.
fn sent_at(epoch: Instant, data: &[u8]) -> Option<Instant> {
    let ns = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    Some(epoch + Duration::from_nanos(ns))
}

/// One client: keeps `window` messages in flight until `end`, counting the echoes received in
/// `[from, end]`, then waits (bounded) for the rest.
async fn echo_client(
    mut client: Client,
    epoch: Instant,
    start: Instant,
    from: Instant,
    end: Instant,
    window: usize,
    bytes: usize,
) -> (Client, EchoTally) {
    let mut tally = EchoTally::default();
    tokio::time::sleep_until(start.into()).await;
    let mut in_flight = 0u64;
    for _ in 0..window {
        if client.send(payload(epoch, Instant::now(), bytes)).is_err() {
            tally.errors += 1;
            break;
        }
        in_flight += 1;
    }
    let drain_until = end + DRAIN;
    while in_flight > 0 {
        let event = match tokio::time::timeout_at(drain_until.into(), client.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => {
                tally.closed = true;
                break;
            }
            Err(_) => break,
        };
        let data = match event {
            ClientEvent::Message { data, .. } => data,
            ClientEvent::Closed(_) => {
                tally.closed = true;
                break;
            }
        };
        in_flight -= 1;
        let now = Instant::now();
        if data.len() != bytes {
            tally.errors += 1;
        } else if now >= from && now <= end {
            tally.echoes += 1;
            if let Some(sent) = sent_at(epoch, &data) {
                let us = now.saturating_duration_since(sent).as_micros();
                tally.rtt_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
        if now < end {
            if client.send(payload(epoch, now, bytes)).is_err() {
                tally.errors += 1;
            } else {
                in_flight += 1;
            }
        }
    }
    tally.lost = in_flight;
    (client, tally)
}

async fn handshakes(args: &LoadArgs) -> Result<()> {
    let target = Target::of(args)?;
    let concurrency = args.clients.max(1);
    let start = Instant::now();
    let end = start + secs(args.seconds);
    let mut tasks = Vec::with_capacity(concurrency);
    for lane in 0..concurrency {
        let target = target.clone();
        let offset = args.source_offset;
        tasks.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, 0u64);
            let mut first_error = None;
            let mut n = lane;
            // Bounded by time, and by count should connects return instantly.
            while Instant::now() < end && done + failed < 1_000_000 {
                match target.connect(offset + n, None, 16).await {
                    Ok(client) => {
                        if Instant::now() <= end {
                            done += 1;
                        }
                        // Dropping the client sends ENet DISCONNECT and close_notify.
                        drop(client);
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                n += concurrency;
            }
            (done, failed, first_error)
        }));
    }
    let (mut done, mut failed, mut first_error) = (0u64, 0u64, None);
    for task in tasks {
        let (d, f, e) = task.await.context("a handshake task failed")?;
        done += d;
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let elapsed = (end - start).as_secs_f64();
    // Let the last goodbyes leave before the runtime goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "{}",
        serde_json::json!({
            "handshakes": done,
            "failed": failed,
            "first_error": first_error,
            "seconds": elapsed,
            "handshakes_per_s": done as f64 / elapsed.max(1e-9),
            "concurrency": concurrency,
        })
    );
    Ok(())
}

async fn hold(args: &LoadArgs) -> Result<()> {
    let target = Target::of(args)?;
    let cancel = CancellationToken::new();
    let alive = Arc::new(AtomicUsize::new(0));
    // Why held links ended, by reason, for the report: a bench that loses links says how.
    let closed: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let mut opened = 0usize;
    let mut holders = tokio::task::JoinSet::new();
    let service = Duration::from_millis(args.service_ms.max(1));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    println!("{}", serde_json::json!({ "ready": true }));
    while let Ok(Some(line)) = stdin.next_line().await {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("open ") {
            let want: usize = n.trim().parse().with_context(|| format!("bad open count {n:?}"))?;
            let want = want.min(args.clients.saturating_sub(opened));
            let began = Instant::now();
            let retries = Arc::new(AtomicUsize::new(0));
            let connects = (0..want).map(|i| {
                let target = target.clone();
                let retries = retries.clone();
                let source = args.source_offset + opened + i;
                async move {
                    // A handshake whose datagrams were lost may outlive the server's
                    // unbound-session timeout: one more try from a fresh socket.
                    match target.connect(source, Some(service), 16).await {
                        Ok(client) => Ok(client),
                        Err(_) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            target.connect(source, Some(service), 16).await
                        }
                    }
                }
            });
            let mut results = futures::stream::iter(connects).buffer_unordered(HOLD_CONNECT_CONCURRENCY);
            let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
            while let Some(result) = results.next().await {
                match result {
                    Ok(mut client) => {
                        ok += 1;
                        alive.fetch_add(1, Ordering::Relaxed);
                        let alive = alive.clone();
                        let closed = closed.clone();
                        let cancel = cancel.clone();
                        holders.spawn(async move {
                            // Held until the link ends or the worker is told to finish.
                            let reason = loop {
                                tokio::select! {
                                    _ = cancel.cancelled() => break None,
                                    event = client.recv() => match event {
                                        Some(ClientEvent::Message { .. }) => continue,
                                        Some(ClientEvent::Closed(reason)) => break Some(format!("{reason:?}")),
                                        None => break Some("ended".to_owned()),
                                    },
                                }
                            };
                            if let Some(reason) = reason
                                && let Ok(mut closed) = closed.lock()
                            {
                                *closed.entry(reason).or_default() += 1;
                            }
                            alive.fetch_sub(1, Ordering::Relaxed);
                            drop(client);
                        });
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            drop(results);
            opened += want;
            println!(
                "{}",
                serde_json::json!({
                    "opened": ok, "failed": failed, "first_error": first_error,
                    "retried": retries.load(Ordering::Relaxed),
                    "alive": alive.load(Ordering::Relaxed), "seconds": began.elapsed().as_secs_f64(),
                })
            );
        } else if line == "count" {
            let closed = closed.lock().map(|c| c.clone()).unwrap_or_default();
            println!("{}", serde_json::json!({ "alive": alive.load(Ordering::Relaxed), "closed": closed }));
        } else if line == "quit" {
            break;
        } else {
            println!("{}", serde_json::json!({ "error": format!("unknown command {line:?}") }));
        }
    }
    cancel.cancel();
    // Dropped clients say goodbye from their own tasks; give them a moment, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while holders.join_next().await.is_some() {} }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_64_hex_digits() {
        let hex = "00ff".repeat(16);
        let pin = parse_pin(&hex).expect("64 hex digits parse");
        assert_eq!((pin[0], pin[1], pin[31]), (0x00, 0xff, 0xff));
        assert!(parse_pin("00ff").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn an_echo_carries_its_send_time() {
        let epoch = Instant::now();
        let sent = epoch + Duration::from_micros(1234);
        let data = payload(epoch, sent, 100);
        assert_eq!(data.len(), 100);
        assert_eq!(sent_at(epoch, &data), Some(sent));
        assert_eq!(sent_at(epoch, &data[..7]), None);
    }

    #[test]
    fn source_addresses_stay_within_127_0_0_2_to_254() {
        assert_eq!(source_addr(0).ip().to_string(), "127.0.0.2");
        assert_eq!(source_addr(252).ip().to_string(), "127.0.0.254");
        assert_eq!(source_addr(253).ip().to_string(), "127.0.0.2");
    }
}
