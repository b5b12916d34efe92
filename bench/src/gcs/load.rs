//! The GCS load worker (`bench gcs worker-load`), pinned to the load core: authenticated client
//! links on one current-thread runtime, driven by commands on stdin, answering with one JSON line
//! per command.
//!
//! Every link connects (ENet/DTLS with Tavern's `EnetClient`, or WebSocket over a TCP socket
//! bound to its source address), says `Hello` with its own session token, waits for `Welcome`,
//! and from then on sends `Ping` every heartbeat interval the `Welcome` names. Chat messages
//! pushed to a link whose text the bench wrote (`bench <sender> <seq> <unix ns>`) are counted and
//! timed from their send time (the machine clock is shared by every process).
//!
//! Commands: `open K` (open K more links), `count` (links alive, heartbeats, why links ended),
//! `send SECONDS RATE` (every link of this worker sends `ChatSend{Global}` RATE times a second
//! for SECONDS, then the worker waits for the answers, bounded), `report` (chat deliveries and
//! their latency histogram), `quit` or end of input (close everything and exit).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::transport::{ClientEvent, ClientTrust, Delivery, EnetClient, EnetClientConfig};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::tavern::{
    ChannelKind, ChannelT, ChatSendT, ClientBodyT, ClientMessageT, HelloT, PingT, ServerBodyT, ServerMessageT,
};
use protocol::{Codec, Limits, PROTOCOL_VERSION, build};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::Kind;
use super::hist::Histogram;
use crate::transport::load::{parse_pin, source_addr};

/// How long one connect plus `Hello`/`Welcome` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connects in flight at once while opening links.
const CONNECT_CONCURRENCY: usize = 64;
/// How long senders wait for the answers to their last messages.
const SEND_DRAIN: Duration = Duration::from_secs(3);
/// The first word of every chat message the bench sends.
pub const CHAT_PREFIX: &str = "bench";

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The GCS's ENet/DTLS address or WebSocket address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// SHA-256 of the GCS certificate (hex), for ENet/DTLS.
    #[arg(long, default_value = "")]
    pub pin: String,
    /// A file of session tokens, one a line.
    #[arg(long)]
    pub tokens: PathBuf,
    /// The first token (line) of the file this worker uses.
    #[arg(long, default_value_t = 0)]
    pub token_offset: usize,
    /// The most links this worker may open.
    #[arg(long)]
    pub clients: usize,
    /// The first source address index (127.0.0.2 + index mod 253) this worker uses.
    #[arg(long, default_value_t = 0)]
    pub source_offset: usize,
    /// How often each ENet client services its host when nothing arrives, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub service_ms: u64,
}

pub fn run(args: &LoadArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(serve(args));
    if let Err(e) = &result {
        // The orchestrator reads the reason from the line it waits for.
        println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
    }
    result
}

/// What every link of this worker adds to.
#[derive(Default)]
struct Tally {
    alive: AtomicUsize,
    pings: AtomicU64,
    pongs: AtomicU64,
    /// The latest a ping went out after its time, in ms: how far this worker fell behind.
    ping_late_ms: AtomicU64,
    /// `Error` answers (rate limits, refusals), by code.
    errors: Mutex<BTreeMap<u16, u64>>,
    /// Held links that ended, by the reason their client saw.
    closed: Mutex<BTreeMap<String, u64>>,
    chat_sent: AtomicU64,
    chat_acked: AtomicU64,
    chat: Mutex<ChatTally>,
}

/// Bench chat messages received.
#[derive(Default)]
struct ChatTally {
    deliveries: u64,
    latency_us: Histogram,
    /// Unix ms of the first and last delivery.
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    /// Deliveries whose text did not parse.
    malformed: u64,
}

/// A send schedule for one link.
#[derive(Clone, Copy, Debug)]
struct Plan {
    start: Instant,
    end: Instant,
    every: Duration,
    sender: usize,
}

async fn serve(args: &LoadArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.tokens).with_context(|| format!("reading {}", args.tokens.display()))?;
    let tokens: Vec<String> =
        text.lines().skip(args.token_offset).take(args.clients).map(str::to_owned).collect();
    if tokens.len() < args.clients {
        bail!("{} holds {} tokens past {}, {} wanted", args.tokens.display(), tokens.len(), args.token_offset, args.clients);
    }
    let target = Target {
        kind: args.kind,
        addr: args.addr,
        pin: if args.kind == Kind::EnetDtls { Some(parse_pin(&args.pin)?) } else { None },
        service: Duration::from_millis(args.service_ms.max(1)),
    };
    let tally = Arc::new(Tally::default());
    let cancel = CancellationToken::new();
    let mut plans: Vec<mpsc::Sender<Plan>> = Vec::new();
    let mut holders = tokio::task::JoinSet::new();
    let mut opened = 0usize;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    println!("{}", serde_json::json!({ "ready": true }));
    while let Ok(Some(line)) = stdin.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["open", n] => {
                let want: usize = n.parse().with_context(|| format!("bad open count {n:?}"))?;
                let want = want.min(args.clients - opened);
                let began = Instant::now();
                let retried = AtomicUsize::new(0);
                let connects = (opened..opened + want).map(|i| {
                    let (target, token, retried) = (&target, &tokens[i], &retried);
                    let source = args.source_offset + i;
                    async move {
                        // A DTLS handshake whose datagrams were lost may outlive the server's
                        // unbound-session timeout: one more try from a fresh socket.
                        match target.open(source, token).await {
                            Ok(link) => Ok(link),
                            Err(_) => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                target.open(source, token).await
                            }
                        }
                    }
                });
                let mut results = futures::stream::iter(connects).buffer_unordered(CONNECT_CONCURRENCY);
                let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
                while let Some(result) = results.next().await {
                    match result {
                        Ok((link, heartbeat)) => {
                            ok += 1;
                            tally.alive.fetch_add(1, Ordering::Relaxed);
                            let (tx, rx) = mpsc::channel(1);
                            plans.push(tx);
                            holders.spawn(hold(link, heartbeat, rx, tally.clone(), cancel.clone()));
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
                        "retried": retried.load(Ordering::Relaxed),
                        "alive": tally.alive.load(Ordering::Relaxed), "seconds": began.elapsed().as_secs_f64(),
                    })
                );
            }
            ["count"] => println!("{}", count(&tally)),
            ["send", seconds, rate] => {
                let seconds: f64 = seconds.parse().with_context(|| format!("bad seconds {seconds:?}"))?;
                let rate: f64 = rate.parse().with_context(|| format!("bad rate {rate:?}"))?;
                if !(seconds > 0.0 && seconds <= 600.0 && rate > 0.0 && rate <= 10_000.0) {
                    bail!("send {seconds} s at {rate}/s is out of bounds");
                }
                let every = Duration::from_secs_f64(1.0 / rate);
                let start = Instant::now() + Duration::from_millis(20);
                let end = start + Duration::from_secs_f64(seconds);
                // Senders are spread over the interval so the load is smooth.
                let senders = plans.len().max(1) as u32;
                for (sender, tx) in plans.iter().enumerate() {
                    let plan = Plan { start: start + every * sender as u32 / senders, end, every, sender };
                    let _ = tx.try_send(plan);
                }
                let (sent_before, acked_before) =
                    (tally.chat_sent.load(Ordering::Relaxed), tally.chat_acked.load(Ordering::Relaxed));
                tokio::time::sleep_until(end.into()).await;
                let sent = tally.chat_sent.load(Ordering::Relaxed) - sent_before;
                let drain = Instant::now() + SEND_DRAIN;
                while tally.chat_acked.load(Ordering::Relaxed) - acked_before < sent && Instant::now() < drain {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "sent": sent, "acked": tally.chat_acked.load(Ordering::Relaxed) - acked_before,
                        "seconds": seconds, "senders": plans.len(), "errors": errors(&tally),
                    })
                );
            }
            ["report"] => {
                let chat = tally.chat.lock().map_err(|_| anyhow!("chat tally poisoned"))?;
                println!(
                    "{}",
                    serde_json::json!({
                        "deliveries": chat.deliveries, "malformed": chat.malformed,
                        "first_ms": chat.first_ms, "last_ms": chat.last_ms,
                        "latency_us": chat.latency_us.to_json(),
                    })
                );
            }
            ["quit"] => break,
            _ => println!("{}", serde_json::json!({ "error": format!("unknown command {line:?}") })),
        }
    }
    cancel.cancel();
    // Closing links say goodbye from their own tasks; give them a moment, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while holders.join_next().await.is_some() {} }).await;
    Ok(())
}

fn errors(tally: &Tally) -> serde_json::Value {
    let errors = tally.errors.lock().map(|e| e.clone()).unwrap_or_default();
    serde_json::json!(errors.into_iter().map(|(code, n)| (code.to_string(), n)).collect::<BTreeMap<_, _>>())
}

fn count(tally: &Tally) -> serde_json::Value {
    let closed = tally.closed.lock().map(|c| c.clone()).unwrap_or_default();
    serde_json::json!({
        "alive": tally.alive.load(Ordering::Relaxed),
        "pings": tally.pings.load(Ordering::Relaxed),
        "pongs": tally.pongs.load(Ordering::Relaxed),
        "ping_late_ms": tally.ping_late_ms.load(Ordering::Relaxed),
        "errors": errors(tally),
        "closed": closed,
    })
}

/// How to reach the GCS.
struct Target {
    kind: Kind,
    addr: SocketAddr,
    pin: Option<[u8; 32]>,
    service: Duration,
}

/// One authenticated link.
enum Link {
    Enet(EnetClient),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// What arrived on a link.
enum Incoming {
    Message(Bytes),
    Closed(String),
}

impl Target {
    /// Connects from source address `source`, says `Hello` with `token` and waits for `Welcome`;
    /// the link and its heartbeat interval.
    async fn open(&self, source: usize, token: &str) -> Result<(Link, Duration)> {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut link = self.connect(source).await?;
            let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some(token.to_owned()) });
            link.send(encode(&ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello))))?).await?;
            // Pushes may follow `Welcome` at once; nothing comes before it.
            match link.recv().await {
                Incoming::Message(data) => {
                    let message = decode(&data)?;
                    match message.body {
                        ServerBodyT::Welcome(w) => {
                            let every = Duration::from_millis(u64::from(w.heartbeat_interval_ms).clamp(100, 60_000));
                            Ok((link, every))
                        }
                        ServerBodyT::Error(e) => bail!("hello refused: {} {}", e.code, e.message),
                        other => bail!("expected welcome, got {other:?}"),
                    }
                }
                Incoming::Closed(why) => bail!("the link closed before welcome: {why}"),
            }
        })
        .await
        .map_err(|_| anyhow!("connect and hello took longer than {CONNECT_TIMEOUT:?}"))?
    }

    async fn connect(&self, source: usize) -> Result<Link> {
        let from = source_addr(source);
        match self.kind {
            Kind::EnetDtls => {
                let pin = self.pin.ok_or_else(|| anyhow!("enet-dtls needs --pin"))?;
                let mut config = EnetClientConfig::new(self.addr, ClientTrust::PinSha256(pin));
                config.bind = Some(from);
                config.service_interval = self.service;
                config.event_capacity = 256;
                Ok(Link::Enet(EnetClient::connect(config, CONNECT_TIMEOUT).await?))
            }
            Kind::Ws => {
                // Tavern's WsClient connects from 127.0.0.1 only, and the GCS takes at most 256
                // links from one address: this client binds its source like the ENet clients.
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(from).with_context(|| format!("binding {from}"))?;
                let tcp = socket.connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
                let _ = tcp.set_nodelay(true);
                let url = format!("ws://{}/ws", self.addr);
                let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.context("websocket handshake")?;
                Ok(Link::Ws(Box::new(ws)))
            }
        }
    }
}

impl Link {
    async fn send(&mut self, data: Vec<u8>) -> Result<()> {
        match self {
            Link::Enet(c) => c.send(Bytes::from(data), Delivery::Reliable)?,
            Link::Ws(ws) => ws.send(Message::Binary(Bytes::from(data))).await?,
        }
        Ok(())
    }

    /// The next message, skipping WebSocket control frames. Cancel-safe.
    async fn recv(&mut self) -> Incoming {
        match self {
            Link::Enet(c) => match c.recv().await {
                Some(ClientEvent::Message { data, .. }) => Incoming::Message(data),
                Some(ClientEvent::Closed(reason)) => Incoming::Closed(format!("{reason:?}")),
                None => Incoming::Closed("ended".into()),
            },
            Link::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(data))) => return Incoming::Message(data),
                    Some(Ok(Message::Close(frame))) => {
                        return Incoming::Closed(format!("closed {}", frame.map_or(0, |f| u16::from(f.code))));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Incoming::Closed(format!("error: {e}")),
                    None => return Incoming::Closed("ended".into()),
                }
            },
        }
    }

    async fn close(&mut self) {
        let close = async {
            match self {
                Link::Enet(c) => c.close(0).await,
                Link::Ws(ws) => {
                    let _ = (**ws).close(None).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    }
}

/// Keeps one link alive: a `Ping` every heartbeat interval, chat sends when a plan comes, and
/// every message that arrives counted.
async fn hold(mut link: Link, heartbeat: Duration, mut plans: mpsc::Receiver<Plan>, tally: Arc<Tally>, cancel: CancellationToken) {
    // The first ping lands somewhere in the first interval, so a worker's links do not ping in
    // step.
    let jitter = Duration::from_nanos(rand::random::<u64>() % heartbeat.as_nanos().max(1) as u64);
    let mut next_ping = Instant::now() + jitter;
    let mut plan: Option<Plan> = None;
    let mut next_chat = Instant::now();
    let mut cid: u32 = 1;
    let mut seq: u64 = 0;
    let reason = loop {
        let chat_due = plan.is_some();
        tokio::select! {
            () = cancel.cancelled() => break None,
            Some(p) = plans.recv() => {
                next_chat = p.start;
                plan = Some(p);
            }
            () = tokio::time::sleep_until(next_ping.into()) => {
                let late = Instant::now().saturating_duration_since(next_ping).as_millis() as u64;
                tally.ping_late_ms.fetch_max(late, Ordering::Relaxed);
                next_ping += heartbeat;
                cid = cid.wrapping_add(1).max(2);
                let ping = ClientMessageT::request(cid, ClientBodyT::Ping(Box::new(build!(PingT { client_time_ms: unix_ms() as i64 }))));
                if send(&mut link, &ping).await.is_err() {
                    break Some("ping send failed".to_owned());
                }
                tally.pings.fetch_add(1, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(next_chat.into()), if chat_due => {
                let Some(p) = plan else { continue };
                if Instant::now() >= p.end {
                    plan = None;
                    continue;
                }
                next_chat += p.every;
                seq += 1;
                cid = cid.wrapping_add(1).max(2);
                let text = format!("{CHAT_PREFIX} {} {seq} {}", p.sender, unix_ns());
                let channel = build!(ChannelT { kind: ChannelKind::Global });
                let chat = build!(ChatSendT { channel: Box::new(channel), text });
                if send(&mut link, &ClientMessageT::request(cid, ClientBodyT::ChatSend(Box::new(chat)))).await.is_err() {
                    break Some("chat send failed".to_owned());
                }
                tally.chat_sent.fetch_add(1, Ordering::Relaxed);
            }
            incoming = link.recv() => match incoming {
                Incoming::Message(data) => received(&data, &tally),
                Incoming::Closed(why) => break Some(why),
            },
        }
    };
    if let Some(reason) = reason
        && let Ok(mut closed) = tally.closed.lock()
    {
        *closed.entry(reason).or_default() += 1;
    }
    tally.alive.fetch_sub(1, Ordering::Relaxed);
    link.close().await;
}

/// Counts one message from the GCS.
fn received(data: &[u8], tally: &Tally) {
    let at_ns = unix_ns();
    let Ok(message) = decode(data) else {
        if let Ok(mut errors) = tally.errors.lock() {
            *errors.entry(0).or_default() += 1;
        }
        return;
    };
    match message.body {
        ServerBodyT::Pong(_) => {
            tally.pongs.fetch_add(1, Ordering::Relaxed);
        }
        ServerBodyT::ChatSent(_) => {
            tally.chat_acked.fetch_add(1, Ordering::Relaxed);
        }
        ServerBodyT::Error(e) => {
            if let Ok(mut errors) = tally.errors.lock() {
                *errors.entry(e.code).or_default() += 1;
            }
        }
        ServerBodyT::ChatMessage(m) if m.text.starts_with(CHAT_PREFIX) => {
            let Ok(mut chat) = tally.chat.lock() else { return };
            match m.text.rsplit(' ').next().and_then(|ns| ns.parse::<u128>().ok()) {
                Some(sent_ns) => {
                    chat.deliveries += 1;
                    chat.latency_us.add((at_ns.saturating_sub(sent_ns) / 1_000) as f64);
                    let ms = (at_ns / 1_000_000) as u64;
                    chat.first_ms.get_or_insert(ms);
                    chat.last_ms = Some(ms);
                }
                None => chat.malformed += 1,
            }
        }
        _ => {}
    }
}

async fn send(link: &mut Link, message: &ClientMessageT) -> Result<()> {
    link.send(encode(message)?).await
}

fn encode(message: &ClientMessageT) -> Result<Vec<u8>> {
    Ok(Codec::new(Limits::default()).encode(message)?)
}

fn decode(data: &[u8]) -> Result<ServerMessageT> {
    Ok(Codec::new(Limits::default()).decode_server(data)?)
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn unix_ms() -> u64 {
    (unix_ns() / 1_000_000) as u64
}
