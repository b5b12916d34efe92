//! WebSocket links end to end on loopback: Rust client ↔ Rust server, plain and TLS, the
//! protocol rules (path, text frames, frame limit), the caps, back-pressure, shutdown, many
//! clients, and a conditioned link.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::tavern::{ClientBodyT, ClientMessageT, HelloT, ServerBodyT, ServerMessageT, WelcomeT};
use protocol::{Codec, ErrorCode, PROTOCOL_VERSION, build};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use transport::{
    ClientEvent, CloseReason, ConditionerConfig, Delivery, LinkEvent, LinkId, LinkSink, SendError, TransportError,
    WsClient, WsClientConfig, WsClientTrust, WsConfig, WsServer, WsTls,
};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0 with its event stream.
struct Server {
    server: WsServer,
    events: mpsc::Receiver<LinkEvent>,
    shutdown: CancellationToken,
}

impl Server {
    async fn start(config: WsConfig) -> Result<Server> {
        let (tx, events) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let config = WsConfig { bind: "127.0.0.1:0".parse()?, ..config };
        let server = WsServer::start(config, 0, tx, shutdown.clone()).await?;
        Ok(Server { server, events, shutdown })
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.server.local_addr())
    }

    fn sink(&self) -> std::sync::Arc<dyn LinkSink> {
        self.server.sink()
    }

    async fn next_event(&mut self) -> Result<LinkEvent> {
        within(self.events.recv()).await?.context("server event channel ended")
    }

    async fn connected(&mut self) -> Result<LinkId> {
        match self.next_event().await? {
            LinkEvent::Connected(info) => Ok(info.link),
            other => bail!("expected Connected, got {other:?}"),
        }
    }

    async fn message(&mut self) -> Result<(LinkId, Bytes)> {
        match self.next_event().await? {
            LinkEvent::Message { link, data, delivery } => {
                assert_eq!(delivery, Delivery::Reliable, "websocket reports everything as reliable");
                Ok((link, data))
            }
            other => bail!("expected Message, got {other:?}"),
        }
    }

    /// Skips messages until `link` is reported gone, and returns why.
    async fn disconnected(&mut self, link: LinkId) -> Result<CloseReason> {
        for _ in 0..100_000 {
            if let LinkEvent::Disconnected { link: l, reason } = self.next_event().await?
                && l == link
            {
                return Ok(reason);
            }
        }
        bail!("link {link} never disconnected")
    }
}

/// Runs the server side as an echo service and forwards every event to the returned channel.
fn echo(server: Server) -> (mpsc::UnboundedReceiver<LinkEvent>, CancellationToken, WsServer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let Server { server, mut events, shutdown } = server;
    let sink = server.sink();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let LinkEvent::Message { link, data, .. } = &event {
                let _ = sink.send(*link, data.clone(), Delivery::Reliable);
            }
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    (rx, shutdown, server)
}

async fn within<F: Future>(f: F) -> Result<F::Output> {
    tokio::time::timeout(WAIT, f).await.context("timed out")
}

async fn client(url: &str) -> Result<WsClient> {
    Ok(WsClient::connect(url, None, WAIT).await?)
}

async fn client_message(client: &mut WsClient) -> Result<Bytes> {
    match within(client.recv()).await? {
        Some(ClientEvent::Message { data, delivery }) => {
            assert_eq!(delivery, Delivery::Reliable);
            Ok(data)
        }
        other => bail!("expected a message, got {other:?}"),
    }
}

async fn client_closed(client: &mut WsClient) -> Result<CloseReason> {
    for _ in 0..100_000 {
        match within(client.recv()).await? {
            Some(ClientEvent::Closed(reason)) => return Ok(reason),
            Some(ClientEvent::Message { .. }) => {}
            None => bail!("client ended without a Closed event"),
        }
    }
    bail!("client never closed")
}

fn hello() -> ClientMessageT {
    let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some("token".to_owned()) });
    ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello)))
}

fn welcome(cid: u32) -> ServerMessageT {
    let welcome = build!(WelcomeT {
        resume_token: "resume".to_owned(),
        username: "alice".to_owned(),
        heartbeat_interval_ms: 5000,
    });
    ServerMessageT::response(cid, ServerBodyT::Welcome(Box::new(welcome)))
}

/// The Hello/Welcome exchange every link starts with, checked on both sides.
async fn hello_welcome(server: &mut Server, client: &mut WsClient, link: LinkId) -> Result<()> {
    let codec = Codec::default();
    client.send(Bytes::from(codec.encode(&hello())?), Delivery::Reliable)?;
    let (from, data) = server.message().await?;
    assert_eq!(from, link);
    let request = codec.decode_client(&data)?;
    let got = request.body.as_hello().context("first message is not hello")?;
    assert_eq!((got.protocol_version, got.token.as_deref()), (PROTOCOL_VERSION, Some("token")));
    server.sink().send(link, Bytes::from(codec.encode(&welcome(request.cid))?), Delivery::Reliable)?;
    let reply = codec.decode_server(&client_message(client).await?)?;
    assert_eq!(reply.cid, 1);
    let welcome = reply.body.as_welcome().context("reply is not welcome")?;
    assert_eq!(welcome.username, "alice");
    Ok(())
}

fn numbered(i: u32, len: usize) -> Bytes {
    let mut v = vec![(i % 251) as u8; len.max(4)];
    v[..4].copy_from_slice(&i.to_be_bytes());
    Bytes::from(v)
}

fn number(data: &[u8]) -> Result<u32> {
    Ok(u32::from_be_bytes(data.get(..4).context("short message")?.try_into()?))
}

#[tokio::test]
async fn hello_welcome_then_messages_both_ways_then_close_codes_cross() -> Result<()> {
    let mut server = Server::start(WsConfig::default()).await?;
    let mut client = client(&server.url("/ws")).await?;
    let link = server.connected().await?;
    hello_welcome(&mut server, &mut client, link).await?;

    // Traffic both ways in bursts of several sizes up to the frame limit (a burst stays under
    // the 512 KiB queue limits).
    let sizes = [4usize, 100, 1500, 40_000, protocol::MAX_FRAME_BYTES];
    for burst in 0..10u32 {
        for (i, len) in sizes.iter().enumerate() {
            let i = burst * 10 + i as u32;
            client.send(numbered(i, *len), Delivery::Unreliable)?;
            server.sink().send(link, numbered(i + 1000, *len), Delivery::Reliable)?;
        }
        for i in 0..sizes.len() as u32 {
            let (_, data) = server.message().await?;
            assert_eq!(number(&data)?, burst * 10 + i);
            let data = client_message(&mut client).await?;
            assert_eq!((number(&data)?, data.len()), (burst * 10 + i + 1000, sizes[i as usize].max(4)));
        }
    }
    let stats = server.sink().stats(link).context("stats of an open link")?;
    assert!(stats.sent_bytes > 0 && stats.received_bytes > 0, "{stats:?}");

    // Too large is refused locally, on both ends, without closing anything.
    let big = Bytes::from(vec![0u8; protocol::MAX_FRAME_BYTES + 1]);
    assert!(matches!(client.send(big.clone(), Delivery::Reliable), Err(SendError::TooLarge { .. })));
    assert!(matches!(server.sink().send(link, big, Delivery::Reliable), Err(SendError::TooLarge { .. })));

    // A client close with a code is seen by the server as Remote { code }.
    let code = ErrorCode::SessionReplaced as u16;
    within(client.close(code)).await?;
    assert_eq!(server.disconnected(link).await?, CloseReason::Remote { code });
    assert_eq!(client_closed(&mut client).await?, CloseReason::Local { code });
    assert_eq!(server.sink().send(link, Bytes::from_static(b"x"), Delivery::Reliable), Err(SendError::Closed(link)));

    // A server close with a code: queued messages first, then the close, seen as Remote { code }.
    let mut client = self::client(&server.url("/ws")).await?;
    let link = server.connected().await?;
    server.sink().send(link, Bytes::from_static(b"last words"), Delivery::Reliable)?;
    server.sink().close(link, ErrorCode::TokenRevoked as u16);
    assert_eq!(client_message(&mut client).await?, Bytes::from_static(b"last words"));
    assert_eq!(client_closed(&mut client).await?, CloseReason::Remote { code: ErrorCode::TokenRevoked as u16 });
    assert_eq!(server.disconnected(link).await?, CloseReason::Local { code: ErrorCode::TokenRevoked as u16 });
    assert!(within(client.recv()).await?.is_none(), "nothing after Closed");
    Ok(())
}

#[tokio::test]
async fn wss_with_a_pinned_self_signed_certificate() -> Result<()> {
    let identity = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let tls = WsTls { cert_pem: identity.cert.pem().into_bytes(), key_pem: identity.signing_key.serialize_pem().into_bytes() };
    let mut server = Server::start(WsConfig { tls: Some(tls), ..WsConfig::default() }).await?;
    let port = server.server.local_addr().port();
    let trust = WsClientTrust { ca_pem: identity.cert.pem().into_bytes() };

    for host in ["127.0.0.1", "localhost"] {
        let mut client = WsClient::connect(&format!("wss://{host}:{port}/ws"), Some(trust.clone()), WAIT).await?;
        let info = match server.next_event().await? {
            LinkEvent::Connected(info) => info,
            other => bail!("expected Connected, got {other:?}"),
        };
        assert_eq!(info.kind, transport::LinkKind::WebSocketTls);
        println!("wss via {host}: server cipher suite {:?}, client {:?}", info.cipher_suite, client.cipher_suite());
        assert!(info.cipher_suite.is_some() && info.cipher_suite.as_deref() == client.cipher_suite());
        hello_welcome(&mut server, &mut client, info.link).await?;
        within(client.close(0)).await?;
        assert_eq!(server.disconnected(info.link).await?, CloseReason::Remote { code: 0 });
    }

    // A client that trusts another certificate refuses the server.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let wrong = WsClientTrust { ca_pem: other.cert.pem().into_bytes() };
    let refused = WsClient::connect(&format!("wss://127.0.0.1:{port}/ws"), Some(wrong), WAIT).await;
    assert!(matches!(refused, Err(TransportError::Handshake(_))), "{:?}", refused.err());
    // wss without anything to trust is a configuration error, caught before connecting.
    let untrusted = WsClient::connect(&format!("wss://127.0.0.1:{port}/ws"), None, WAIT).await;
    assert!(matches!(untrusted, Err(TransportError::TlsConfig(_))), "{:?}", untrusted.err());
    // Plain ws against the TLS port fails rather than hangs.
    assert!(WsClient::connect(&format!("ws://127.0.0.1:{port}/ws"), None, WAIT).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_wrong_path_is_refused_with_404() -> Result<()> {
    let mut server = Server::start(WsConfig::default()).await?;
    for path in ["/", "/nope", "/ws/extra", "/WS"] {
        let refused = WsClient::connect(&server.url(path), None, WAIT).await;
        assert!(matches!(refused, Err(TransportError::Refused { status: 404 })), "{path}: {:?}", refused.err());
    }
    // A query string does not change the path.
    let _ok = client(&server.url("/ws?v=1")).await?;
    server.connected().await?;
    assert!(server.events.try_recv().is_err(), "refused requests produce no events");
    Ok(())
}

#[tokio::test]
async fn a_text_frame_closes_the_link_as_a_protocol_violation() -> Result<()> {
    let mut server = Server::start(WsConfig::default()).await?;
    let (mut raw, _) = tokio_tungstenite::connect_async(server.url("/ws")).await?;
    let link = server.connected().await?;
    raw.send(Message::text("hello as text")).await?;
    assert_eq!(server.disconnected(link).await?, CloseReason::Protocol("text frame".into()));
    let close = within(raw.next()).await?;
    match close {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "1001 malformed");
        }
        other => bail!("expected a close frame, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_oversize_frame_closes_that_link_and_no_other() -> Result<()> {
    let limit = 1024;
    let config = WsConfig { max_frame_bytes: limit, ..WsConfig::default() };
    let (mut events, _shutdown, server) = echo(Server::start(config).await?);
    let url = format!("ws://{}/ws", server.local_addr());
    let mut good = client(&url).await?;
    let good_link = connected(&mut events).await?;
    let (mut raw, _) = tokio_tungstenite::connect_async(&url).await?;
    let bad_link = connected(&mut events).await?;

    good.send(Bytes::from(vec![1u8; limit]), Delivery::Reliable)?;
    assert_eq!(client_message(&mut good).await?.len(), limit, "a frame at the limit passes");
    raw.send(Message::binary(vec![2u8; limit + 1])).await?;
    let reason = disconnected(&mut events, bad_link).await?;
    assert!(matches!(&reason, CloseReason::Protocol(why) if why.contains("oversize")), "{reason:?}");
    // The raw client sees the close (4000, "1002 too_large") or, if the server's socket was reset
    // with unread input, the end of the stream; either way the link is over.
    match within(raw.next()).await? {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.reason.as_str(), "1002 too_large"),
        other => println!("oversize sender saw {other:?}"),
    }

    for i in 0..20u32 {
        good.send(numbered(i, 600), Delivery::Reliable)?;
        assert_eq!(number(&client_message(&mut good).await?)?, i);
    }
    assert_eq!(server.link_count(), 1);
    let _ = good_link;
    Ok(())
}

async fn connected(events: &mut mpsc::UnboundedReceiver<LinkEvent>) -> Result<LinkId> {
    match within(events.recv()).await? {
        Some(LinkEvent::Connected(info)) => Ok(info.link),
        other => bail!("expected Connected, got {other:?}"),
    }
}

async fn disconnected(events: &mut mpsc::UnboundedReceiver<LinkEvent>, link: LinkId) -> Result<CloseReason> {
    for _ in 0..100_000 {
        match within(events.recv()).await? {
            Some(LinkEvent::Disconnected { link: l, reason }) if l == link => return Ok(reason),
            Some(_) => {}
            None => bail!("events ended"),
        }
    }
    bail!("link {link} never disconnected")
}

#[tokio::test]
async fn the_per_ip_and_total_caps_refuse_extra_links() -> Result<()> {
    let config = WsConfig { max_links_per_ip: 2, ..WsConfig::default() };
    let mut server = Server::start(config).await?;
    let url = server.url("/ws");
    let first = client(&url).await?;
    let _second = client(&url).await?;
    let refused = WsClient::connect(&url, None, WAIT).await;
    assert!(refused.is_err(), "a third link from one address was accepted");
    let link = server.connected().await?;
    server.connected().await?;
    // A closed link gives its place back.
    drop(first);
    server.disconnected(link).await?;
    let _again = client(&url).await?;
    server.connected().await?;

    let config = WsConfig { max_links: 1, ..WsConfig::default() };
    let mut server = Server::start(config).await?;
    let _only = client(&server.url("/ws")).await?;
    server.connected().await?;
    assert!(WsClient::connect(&server.url("/ws"), None, WAIT).await.is_err(), "a second link passed max_links 1");
    Ok(())
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_as_a_slow_consumer() -> Result<()> {
    let config = WsConfig { max_queued_bytes_per_link: 128 * 1024, ..WsConfig::default() };
    let mut server = Server::start(config).await?;
    let mut other = client(&server.url("/ws")).await?;
    let other_link = server.connected().await?;
    let config = WsClientConfig { event_capacity: 1, ..WsClientConfig::default() };
    let slow = WsClient::connect_with(&server.url("/ws"), config).await?;
    let slow_link = server.connected().await?;
    let chunk = Bytes::from(vec![7u8; 16 * 1024]);
    let started = Instant::now();
    let mut sent = 0usize;
    let result = loop {
        match server.sink().send(slow_link, chunk.clone(), Delivery::Reliable) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        if sent > 100_000 || started.elapsed() > WAIT {
            bail!("no back-pressure after {sent} messages");
        }
        // Let the driver move the queue into the socket, so the kernel buffers fill first.
        tokio::task::yield_now().await;
    };
    println!("slow consumer: {} KiB accepted before the queue limit", sent * 16);
    assert_eq!(result, SendError::SlowConsumer(slow_link));
    assert_eq!(server.disconnected(slow_link).await?, CloseReason::SlowConsumer);
    assert_eq!(server.sink().send(slow_link, chunk, Delivery::Reliable), Err(SendError::Closed(slow_link)));

    // The other link is unaffected.
    server.sink().send(other_link, Bytes::from_static(b"still here"), Delivery::Reliable)?;
    assert_eq!(client_message(&mut other).await?, Bytes::from_static(b"still here"));
    drop(slow);
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_every_link_and_the_server_stops() -> Result<()> {
    let mut server = Server::start(WsConfig::default()).await?;
    let url = server.url("/ws");
    let mut clients = Vec::new();
    let mut links = Vec::new();
    for _ in 0..5 {
        clients.push(client(&url).await?);
        links.push(server.connected().await?);
    }
    server.sink().send(links[0], Bytes::from_static(b"before shutdown"), Delivery::Reliable)?;
    server.shutdown.cancel();
    for c in &mut clients {
        assert_eq!(client_closed(c).await?, CloseReason::Shutdown);
    }
    let mut reasons = Vec::new();
    while let Some(event) = within(server.events.recv()).await? {
        if let LinkEvent::Disconnected { reason, .. } = event {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, vec![CloseReason::Shutdown; 5], "the event channel ends after every link reported");
    within(server.server.wait()).await?;
    assert!(WsClient::connect(&url, None, Duration::from_secs(1)).await.is_err(), "still accepting");
    Ok(())
}

#[tokio::test]
async fn a_silent_peer_times_out_and_a_stalled_handshake_is_dropped() -> Result<()> {
    let config = WsConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        handshake_timeout: Duration::from_millis(300),
        ..WsConfig::default()
    };
    let mut server = Server::start(config).await?;
    // A raw client that is never polled answers no pings.
    let (_raw, _) = tokio_tungstenite::connect_async(server.url("/ws")).await?;
    let link = server.connected().await?;
    let started = Instant::now();
    assert_eq!(server.disconnected(link).await?, CloseReason::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(300), "timed out after {:?}", started.elapsed());

    // A live client answers pings (its driver polls the socket) and stays, and measures RTT.
    let live = client(&server.url("/ws")).await?;
    let live_link = server.connected().await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = server.sink().stats(live_link).context("a live link timed out")?;
    assert!(stats.rtt_ms >= 1, "pings measured no round trip: {stats:?}");
    let _ = live;

    // A TCP connection that never sends its upgrade request is closed after the timeout.
    let mut tcp = tokio::net::TcpStream::connect(server.server.local_addr()).await?;
    let mut buf = [0u8; 16];
    let n = within(tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await?.unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the stalled connection");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_at_once() -> Result<()> {
    let config = WsConfig { max_links_per_ip: 1000, ..WsConfig::default() };
    let (mut events, _shutdown, server) = echo(Server::start(config).await?);
    let url = format!("ws://{}/ws", server.local_addr());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..200u32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = client(&url).await?;
            for i in 0..20u32 {
                client.send(numbered(c * 1000 + i, 64), Delivery::Reliable)?;
            }
            for i in 0..20u32 {
                assert_eq!(number(&client_message(&mut client).await?)?, c * 1000 + i);
            }
            client.close(0).await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        within(t).await???;
    }
    let (mut connected, mut messages, mut closed) = (0, 0, 0);
    while closed < 200 {
        match within(events.recv()).await?.context("events ended")? {
            LinkEvent::Connected(_) => connected += 1,
            LinkEvent::Message { .. } => messages += 1,
            LinkEvent::Disconnected { reason, .. } => {
                assert_eq!(reason, CloseReason::Remote { code: 0 });
                closed += 1;
            }
        }
    }
    assert_eq!((connected, messages), (200, 4000));
    println!("200 clients × 20 echoes in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_conditioned_link_delivers_everything_in_order_with_added_latency() -> Result<()> {
    let seed = std::env::var("TAVERN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("conditioner seed {seed} (replay with TAVERN_SEED={seed})");
    let latency = Duration::from_millis(25);
    let conditioner = ConditionerConfig {
        latency,
        jitter: Duration::from_millis(10),
        loss: 0.1,
        retransmit_delay: Duration::from_millis(30),
        seed,
        ..ConditionerConfig::default()
    };
    let (mut events, _shutdown, server) = echo(Server::start(WsConfig::default()).await?);
    let url = format!("ws://{}/ws", server.local_addr());
    let config = WsClientConfig { conditioner: Some(conditioner), ..WsClientConfig::default() };
    let mut client = WsClient::connect_with(&url, config).await?;
    connected(&mut events).await?;

    // One round trip alone: the conditioner delays both directions.
    let started = Instant::now();
    client.send(numbered(u32::MAX, 8), Delivery::Reliable)?;
    assert_eq!(number(&client_message(&mut client).await?)?, u32::MAX);
    let rtt = started.elapsed();
    assert!(rtt >= 2 * latency, "round trip {rtt:?} is shorter than twice the latency");

    // A burst: all of it, in order, however the conditioner delays it.
    let n = 300u32;
    for i in 0..n {
        client.send(numbered(i, 200), Delivery::Reliable)?;
    }
    for i in 0..n {
        assert_eq!(number(&client_message(&mut client).await?)?, i, "seed {seed}");
    }
    println!("conditioned: one round trip {rtt:?}, {n} echoes in {:?}", started.elapsed());
    Ok(())
}
