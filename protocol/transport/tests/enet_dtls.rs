//! ENet inside DTLS, Rust client ↔ Rust server on loopback: the handshake and the envelopes,
//! both deliveries, close codes, stats, certificate checks, plaintext dev rules, hostile first
//! datagrams, HelloVerifyRequest cookies (a spoofed source creates no state), caps, expiry,
//! reconnects, many clients, frame limits, back-pressure, shutdown. Every loop is bounded in
//! count and time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use protocol::tavern::{ClientBodyT, ClientMessageT, HelloT, ServerBodyT, ServerMessageT, UuidT, WelcomeT};
use protocol::{Codec, ErrorCode};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use transport::{
    ClientEvent, ClientTrust, CloseReason, Delivery, EnetClient, EnetClientConfig, EnetConfig, EnetServer, LinkEvent,
    LinkId, LinkKind, LinkSink, SendError, ServerIdentity, TransportError,
};

const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    server: EnetServer,
    events: mpsc::Receiver<LinkEvent>,
    shutdown: CancellationToken,
    identity: ServerIdentity,
    sink: std::sync::Arc<dyn LinkSink>,
}

impl Harness {
    async fn start(tweak: impl FnOnce(&mut EnetConfig)) -> Result<Harness> {
        let identity = ServerIdentity::self_signed(&["localhost", "127.0.0.1"])?;
        let mut config = EnetConfig { identity: Some(identity.clone()), ..EnetConfig::default() };
        tweak(&mut config);
        let (tx, events) = mpsc::channel(4096);
        let shutdown = CancellationToken::new();
        let server = EnetServer::start(config, 7, tx, shutdown.clone()).await?;
        let sink = server.sink();
        Ok(Harness { server, events, shutdown, identity, sink })
    }

    fn client_config(&self) -> EnetClientConfig {
        EnetClientConfig::new(self.server.local_addr(), ClientTrust::CaPem(self.identity.cert_pem()))
    }

    async fn connect(&self) -> Result<EnetClient> {
        Ok(EnetClient::connect(self.client_config(), WAIT).await?)
    }

    async fn next_event(&mut self) -> Result<LinkEvent> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .context("no server event in time")?
            .ok_or_else(|| anyhow!("server event channel closed"))
    }

    async fn connected(&mut self) -> Result<LinkId> {
        match self.next_event().await? {
            LinkEvent::Connected(info) => Ok(info.link),
            other => bail!("expected Connected, got {other:?}"),
        }
    }

    /// The next event for `link`, skipping others (bounded).
    async fn event_of(&mut self, link: LinkId) -> Result<LinkEvent> {
        for _ in 0..10_000 {
            let event = self.next_event().await?;
            let of = match &event {
                LinkEvent::Connected(info) => info.link,
                LinkEvent::Message { link, .. } | LinkEvent::Disconnected { link, .. } => *link,
            };
            if of == link {
                return Ok(event);
            }
        }
        bail!("no event for {link}")
    }

    /// The next non-message event for `link` (messages still in flight are skipped).
    async fn state_event_of(&mut self, link: LinkId) -> Result<LinkEvent> {
        for _ in 0..10_000 {
            match self.event_of(link).await? {
                LinkEvent::Message { .. } => continue,
                other => return Ok(other),
            }
        }
        bail!("only messages for {link}")
    }

    /// Waits until the server's stats satisfy `check` (bounded).
    async fn wait_stats(&self, what: &str, check: impl Fn(&transport::EnetServerStats) -> bool) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if check(&self.server.stats()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("{what}: stats stayed {:?}", self.server.stats())
    }
}

async fn client_event(client: &mut EnetClient) -> Result<ClientEvent> {
    tokio::time::timeout(WAIT, client.recv())
        .await
        .context("no client event in time")?
        .ok_or_else(|| anyhow!("client event channel closed"))
}

fn hello_bytes(codec: &Codec) -> Result<Vec<u8>> {
    let hello = protocol::build!(HelloT {
        protocol_version: protocol::PROTOCOL_VERSION,
        token: Some("test-token".to_owned()),
        client_name: Some("enet-dtls-test".to_owned()),
    });
    Ok(codec.encode(&ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello))))?)
}

fn welcome_bytes(codec: &Codec, cid: u32) -> Result<Vec<u8>> {
    let welcome = protocol::build!(WelcomeT {
        session_id: UuidT::from([1; 16]),
        resume_token: "resume".to_owned(),
        user_id: UuidT::from([2; 16]),
        username: "alice".to_owned(),
        heartbeat_interval_ms: 5000,
    });
    Ok(codec.encode(&ServerMessageT::response(cid, ServerBodyT::Welcome(Box::new(welcome))))?)
}

/// A random seed, or `TAVERN_SEED` to replay a printed one.
fn seed() -> u64 {
    std::env::var("TAVERN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

/// A free UDP port on 127.0.0.1 (bound then released).
fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The ClientHello a Rust client sends first, captured by posing as the server.
async fn captured_client_hello() -> Result<Vec<u8>> {
    let fake = UdpSocket::bind("127.0.0.1:0").await?;
    let identity = ServerIdentity::self_signed(&["localhost"])?;
    let mut config = EnetClientConfig::new(fake.local_addr()?, ClientTrust::PinSha256(identity.cert_sha256()));
    config.service_interval = Duration::from_millis(5);
    let attempt = tokio::spawn(EnetClient::connect(config, Duration::from_millis(500)));
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, fake.recv_from(&mut buf)).await.context("no client hello")??;
    let _ = attempt.await;
    buf.truncate(n);
    Ok(buf)
}

/// Offsets in a DTLS datagram holding one handshake record: the record header is 13 bytes, the
/// handshake header 12, then a ClientHello body starts with version(2) random(32) session_id.
const BODY: usize = 13 + 12;

/// The cookie of a HelloVerifyRequest datagram, checking its form on the way.
fn hvr_cookie(hvr: &[u8]) -> Result<Vec<u8>> {
    ensure!(hvr.first() == Some(&22) && hvr.get(13) == Some(&3), "not a HelloVerifyRequest: {hvr:?}");
    ensure!(hvr.get(BODY..BODY + 2) == Some(&[0xfe, 0xff][..]), "server_version is not DTLS 1.0: {hvr:?}");
    let len = usize::from(*hvr.get(BODY + 2).context("no cookie length")?);
    Ok(hvr.get(BODY + 3..BODY + 3 + len).context("short cookie")?.to_vec())
}

/// The ClientHello a client sends after a HelloVerifyRequest: `hello` (a first ClientHello,
/// one record) with `cookie` put in, message_seq 1, the next record sequence number.
fn hello_with_cookie(hello: &[u8], cookie: &[u8]) -> Result<Vec<u8>> {
    let session_id_len = usize::from(*hello.get(BODY + 34).context("short hello")?);
    let cookie_at = BODY + 35 + session_id_len;
    ensure!(hello.get(cookie_at) == Some(&0), "the hello already carries a cookie");
    let mut out = hello.get(..cookie_at).context("short hello")?.to_vec();
    out.push(u8::try_from(cookie.len())?);
    out.extend_from_slice(cookie);
    out.extend_from_slice(hello.get(cookie_at + 1..).context("short hello")?);
    let seq = u64::from_be_bytes([0, 0, out[5], out[6], out[7], out[8], out[9], out[10]]) + 1;
    out[5..11].copy_from_slice(&seq.to_be_bytes()[2..]);
    let record_len = u16::try_from(out.len() - 13)?;
    out[11..13].copy_from_slice(&record_len.to_be_bytes());
    let body_len = u32::try_from(out.len() - BODY)?.to_be_bytes();
    out[14..17].copy_from_slice(&body_len[1..]);
    out[17..19].copy_from_slice(&1u16.to_be_bytes());
    out[22..25].copy_from_slice(&body_len[1..]);
    Ok(out)
}

/// Sends `hello` from `socket` and waits for the server's answer, which must be a
/// HelloVerifyRequest; returns its cookie.
async fn ask_cookie(socket: &UdpSocket, server: SocketAddr, hello: &[u8]) -> Result<Vec<u8>> {
    socket.send_to(hello, server).await?;
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await.context("no HelloVerifyRequest")??;
    ensure!(from == server);
    hvr_cookie(&buf[..n])
}

/// The full cookie exchange from a raw socket: after it the server holds a pending session for
/// the socket's address.
async fn start_handshake(socket: &UdpSocket, server: SocketAddr, hello: &[u8]) -> Result<()> {
    let cookie = ask_cookie(socket, server, hello).await?;
    socket.send_to(&hello_with_cookie(hello, &cookie)?, server).await?;
    Ok(())
}

#[tokio::test]
async fn hello_welcome_both_deliveries_close_codes_and_stats_over_dtls() -> Result<()> {
    let mut h = Harness::start(|_| {}).await?;
    let codec = Codec::default();
    let mut client = h.connect().await?;
    let cipher = client.cipher_suite().context("no cipher suite")?;
    println!("negotiated cipher suite (rust client ↔ rust server): {cipher}");
    ensure!(cipher.contains("ECDHE_ECDSA") && (cipher.contains("GCM") || cipher.contains("CHACHA20_POLY1305")), "{cipher}");
    let link = match h.next_event().await? {
        LinkEvent::Connected(info) => {
            ensure!(info.kind == LinkKind::EnetDtls);
            ensure!(info.cipher_suite.as_deref() == Some(cipher.as_str()), "{info:?}");
            ensure!(info.remote == client.local_addr() || info.remote.port() == client.local_addr().port());
            ensure!(info.link.server() == 7);
            info.link
        }
        other => bail!("expected Connected, got {other:?}"),
    };

    // Hello → Welcome with the protocol's codec.
    client.send(Bytes::from(hello_bytes(&codec)?), Delivery::Reliable)?;
    let LinkEvent::Message { data, delivery: Delivery::Reliable, .. } = h.event_of(link).await? else {
        bail!("expected the hello");
    };
    let hello: ClientMessageT = codec.decode(&data)?;
    let Some(body) = hello.body.as_hello() else { bail!("not a hello: {hello:?}") };
    ensure!(body.protocol_version == protocol::PROTOCOL_VERSION && body.token.as_deref() == Some("test-token"));
    h.sink.send(link, Bytes::from(welcome_bytes(&codec, hello.cid)?), Delivery::Reliable)?;
    let ClientEvent::Message { data, delivery: Delivery::Reliable } = client_event(&mut client).await? else {
        bail!("expected the welcome");
    };
    let welcome: ServerMessageT = codec.decode(&data)?;
    ensure!(welcome.cid == 1 && welcome.body.as_welcome().is_some_and(|w| w.username == "alice"), "{welcome:?}");

    // Reliable both ways, in order; unreliable both ways (loopback loses nothing, but only one
    // arrival is required of each direction).
    for i in 0..50u32 {
        client.send(Bytes::from(i.to_be_bytes().to_vec()), Delivery::Reliable)?;
        h.sink.send(link, Bytes::from(i.to_be_bytes().to_vec()), Delivery::Reliable)?;
    }
    for i in 0..50u32 {
        match h.event_of(link).await? {
            LinkEvent::Message { data, delivery: Delivery::Reliable, .. } if data[..] == i.to_be_bytes() => {}
            other => bail!("server: expected reliable {i}, got {other:?}"),
        }
        match client_event(&mut client).await? {
            ClientEvent::Message { data, delivery: Delivery::Reliable } if data[..] == i.to_be_bytes() => {}
            other => bail!("client: expected reliable {i}, got {other:?}"),
        }
    }
    for _ in 0..5 {
        client.send(Bytes::from_static(b"u-up"), Delivery::Unreliable)?;
        h.sink.send(link, Bytes::from_static(b"u-down"), Delivery::Unreliable)?;
    }
    match h.event_of(link).await? {
        LinkEvent::Message { data, delivery: Delivery::Unreliable, .. } if &data[..] == b"u-up" => {}
        other => bail!("server: expected unreliable, got {other:?}"),
    }
    match client_event(&mut client).await? {
        ClientEvent::Message { data, delivery: Delivery::Unreliable } if &data[..] == b"u-down" => {}
        other => bail!("client: expected unreliable, got {other:?}"),
    }
    // A large reliable message crosses as ENet fragments.
    let big = Bytes::from((0..60_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    h.sink.send(link, big.clone(), Delivery::Reliable)?;
    let mut got_big = false;
    for _ in 0..10 {
        if let ClientEvent::Message { data, .. } = client_event(&mut client).await?
            && data == big
        {
            got_big = true;
            break;
        }
    }
    ensure!(got_big, "the 60 kB message did not arrive whole");

    // Stats after traffic.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let server_stats = h.sink.stats(link).context("no server stats")?;
    let client_stats = client.stats();
    println!("server link stats: {server_stats:?}\nclient link stats: {client_stats:?}");
    ensure!(server_stats.rtt_ms > 0 && client_stats.rtt_ms > 0);
    ensure!(server_stats.received_bytes > 200 && server_stats.sent_bytes > 60_000);
    ensure!(client_stats.received_bytes == server_stats.sent_bytes, "{client_stats:?} vs {server_stats:?}");

    // The client closes with a code the server sees.
    client.close(4321).await;
    match h.state_event_of(link).await? {
        LinkEvent::Disconnected { reason: CloseReason::Remote { code: 4321 }, .. } => {}
        other => bail!("expected Disconnected(Remote 4321), got {other:?}"),
    }
    ensure!(h.sink.stats(link).is_none());
    ensure!(matches!(h.sink.send(link, Bytes::from_static(b"x"), Delivery::Reliable), Err(SendError::Closed(_))));
    h.wait_stats("the session is gone", |s| s.sessions == 0 && s.links == 0).await?;

    // The server closes with a code the client sees.
    let mut client = h.connect().await?;
    let link = h.connected().await?;
    h.sink.close(link, 4000);
    match client_event(&mut client).await? {
        ClientEvent::Closed(CloseReason::Remote { code: 4000 }) => {}
        other => bail!("expected Closed(Remote 4000), got {other:?}"),
    }
    match h.event_of(link).await? {
        LinkEvent::Disconnected { reason: CloseReason::Local { code: 4000 }, .. } => {}
        other => bail!("expected Disconnected(Local 4000), got {other:?}"),
    }
    ensure!(client.recv().await.is_none());
    h.shutdown.cancel();
    h.server.stopped().await;
    Ok(())
}

#[tokio::test]
async fn a_pinned_certificate_connects_and_a_wrong_pin_or_ca_or_name_fails() -> Result<()> {
    let mut h = Harness::start(|c| c.unbound_session_timeout = Duration::from_millis(500)).await?;
    let mut pinned = EnetClientConfig::new(h.server.local_addr(), ClientTrust::PinSha256(h.identity.cert_sha256()));
    pinned.server_name = "ignored-when-pinned".into();
    let client = EnetClient::connect(pinned, WAIT).await?;
    println!("negotiated cipher suite (pinned): {}", client.cipher_suite().unwrap_or_default());
    h.connected().await?;
    drop(client);

    let stranger = ServerIdentity::self_signed(&["localhost", "127.0.0.1"])?;
    let cases = [
        ("a wrong pin", ClientTrust::PinSha256(stranger.cert_sha256()), "localhost"),
        ("a wrong CA", ClientTrust::CaPem(stranger.cert_pem()), "localhost"),
        ("a name the certificate lacks", ClientTrust::CaPem(h.identity.cert_pem()), "play.example.org"),
    ];
    for (what, trust, name) in cases {
        let mut config = EnetClientConfig::new(h.server.local_addr(), trust);
        config.server_name = name.into();
        match EnetClient::connect(config, WAIT).await {
            Err(TransportError::Handshake(message)) => println!("{what}: refused: {message}"),
            Err(other) => bail!("{what}: expected a handshake error, got {other}"),
            Ok(_) => bail!("{what}: connected"),
        }
    }
    // The IP literal SAN verifies too.
    let mut by_ip = h.client_config();
    by_ip.server_name = "127.0.0.1".into();
    EnetClient::connect(by_ip, WAIT).await?;
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_ca_signed_chain_loaded_from_pem_files_verifies_against_the_ca() -> Result<()> {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Tavern Test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let leaf = rcgen::CertificateParams::new(vec!["game.tavern.test".to_owned()])?.signed_by(&leaf_key, &ca)?;

    let dir = std::env::temp_dir().join(format!("tavern-enet-ca-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem()))?;
    std::fs::write(&key_path, leaf_key.serialize_pem())?;
    let identity = ServerIdentity::from_pem_files(&cert_path, &key_path)?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(identity.chain_der().len() == 2);

    let mut h = Harness::start(|c| c.identity = Some(identity)).await?;
    let mut config = EnetClientConfig::new(h.server.local_addr(), ClientTrust::CaPem(ca.pem()));
    config.server_name = "game.tavern.test".into();
    let client = EnetClient::connect(config.clone(), WAIT).await?;
    println!("negotiated cipher suite (CA chain): {}", client.cipher_suite().unwrap_or_default());
    h.connected().await?;
    config.server_name = "localhost".into();
    ensure!(matches!(EnetClient::connect(config, WAIT).await, Err(TransportError::Handshake(_))));
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn plaintext_dev_is_refused_off_loopback_and_works_on_loopback() -> Result<()> {
    let (tx, _rx) = mpsc::channel(16);
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let config = EnetConfig { bind: bind.parse()?, plaintext_dev: true, ..EnetConfig::default() };
        match EnetServer::start(config, 0, tx.clone(), CancellationToken::new()).await {
            Err(TransportError::Config(message)) => {
                println!("{bind}: {message}");
                ensure!(message.contains("plaintext"), "{message}");
            }
            Err(other) => bail!("{bind}: expected a config error, got {other}"),
            Ok(_) => bail!("{bind}: plaintext server started off loopback"),
        }
    }
    let config = EnetConfig { bind: "0.0.0.0:0".parse()?, ..EnetConfig::default() };
    ensure!(
        matches!(EnetServer::start(config, 0, tx.clone(), CancellationToken::new()).await, Err(TransportError::Config(_))),
        "a DTLS server without an identity started"
    );
    let off_loopback = EnetClientConfig::new("192.0.2.1:7350".parse()?, ClientTrust::PlaintextDev);
    ensure!(matches!(EnetClient::connect(off_loopback, WAIT).await, Err(TransportError::Config(_))));

    let mut h = Harness::start(|c| {
        c.plaintext_dev = true;
        c.identity = None;
    })
    .await?;
    let mut client = EnetClient::connect(EnetClientConfig::new(h.server.local_addr(), ClientTrust::PlaintextDev), WAIT).await?;
    ensure!(client.cipher_suite().is_none());
    let link = match h.next_event().await? {
        LinkEvent::Connected(info) if info.kind == LinkKind::EnetPlain && info.cipher_suite.is_none() => info.link,
        other => bail!("expected a plaintext Connected, got {other:?}"),
    };
    client.send(Bytes::from_static(b"plain"), Delivery::Reliable)?;
    ensure!(matches!(h.event_of(link).await?, LinkEvent::Message { data, .. } if &data[..] == b"plain"));
    h.sink.send(link, Bytes::from_static(b"back"), Delivery::Unreliable)?;
    ensure!(matches!(client_event(&mut client).await?, ClientEvent::Message { data, .. } if &data[..] == b"back"));
    client.close(7).await;
    ensure!(matches!(h.event_of(link).await?, LinkEvent::Disconnected { reason: CloseReason::Remote { code: 7 }, .. }));
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn garbage_and_non_client_hello_first_datagrams_create_no_session() -> Result<()> {
    let mut h = Harness::start(|_| {}).await?;
    let raw = UdpSocket::bind("127.0.0.1:0").await?;
    let hello = captured_client_hello().await?;
    let mut enet_connect = vec![0x8F, 0xFF, 0, 0, 0x82, 0, 0, 1];
    enet_connect.resize(4 + 48, 0);
    let mut app_data = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 40];
    app_data.resize(13 + 40, 0xAB);
    let mut alert = vec![21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 40];
    alert.truncate(15);
    let mut rng = seed() | 1;
    println!("garbage seed {rng}");
    let mut datagrams: Vec<Vec<u8>> = vec![
        vec![],
        vec![22],
        hello[..hello.len().min(20)].to_vec(),
        hello[..hello.len() - 1].iter().copied().take(30).collect(),
        enet_connect,
        app_data,
        alert,
    ];
    for len in [1usize, 13, 25, 100, 1200, 3000] {
        datagrams.push(
            (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect(),
        );
    }
    // A handshake record header with the wrong message type (a ServerHello).
    let mut not_hello = hello.clone();
    if let Some(b) = not_hello.get_mut(13) {
        *b = 2;
    }
    datagrams.push(not_hello);
    for d in &datagrams {
        raw.send_to(d, h.server.local_addr()).await?;
    }
    let sent = datagrams.len() as u64;
    h.wait_stats("every datagram read", |s| s.datagrams_in >= sent).await?;
    let stats = h.server.stats();
    ensure!(stats.sessions == 0 && stats.datagrams_dropped >= sent && stats.hello_verify_requests == 0, "{stats:?}");

    // A real ClientHello is answered with a HelloVerifyRequest and creates nothing; echoing the
    // cookie creates a (pending) session; real clients still connect.
    let cookie = ask_cookie(&raw, h.server.local_addr(), &hello).await?;
    ensure!(cookie.len() == 20, "cookie of {} bytes", cookie.len());
    let stats = h.server.stats();
    ensure!(stats.sessions == 0 && stats.hello_verify_requests == 1, "{stats:?}");
    raw.send_to(&hello_with_cookie(&hello, &cookie)?, h.server.local_addr()).await?;
    h.wait_stats("a pending session", |s| s.sessions == 1 && s.pending_handshakes == 1).await?;
    let _client = h.connect().await?;
    h.connected().await?;
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn sessions_per_ip_are_capped() -> Result<()> {
    let mut h = Harness::start(|c| c.max_sessions_per_ip = 3).await?;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(h.connect().await?);
        h.connected().await?;
    }
    let refused = EnetClient::connect(h.client_config(), Duration::from_millis(800)).await;
    ensure!(matches!(refused, Err(TransportError::Timeout(_))), "a 4th session from 127.0.0.1 was not refused");
    ensure!(h.server.stats().sessions_refused >= 1, "{:?}", h.server.stats());
    let mut other_ip = h.client_config();
    other_ip.bind = Some("127.0.0.2:0".parse()?);
    let _other = EnetClient::connect(other_ip, WAIT).await?;
    h.connected().await?;
    // Freeing a slot lets 127.0.0.1 in again.
    if let Some(mut first) = clients.pop() {
        first.close(0).await;
    }
    h.wait_stats("a slot freed", |s| s.sessions == 3).await?;
    let _again = h.connect().await?;
    h.shutdown.cancel();
    Ok(())
}

/// Forwards datagrams between a client and the server, dropping client datagrams that carry
/// application data (the ENet CONNECT) so the DTLS session completes but never binds a peer.
async fn handshake_only_relay(server: SocketAddr, stop: CancellationToken) -> Result<SocketAddr> {
    let front = UdpSocket::bind("127.0.0.1:0").await?;
    let back = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = front.local_addr()?;
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client: Option<SocketAddr> = None;
        for _ in 0..100_000 {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { break };
                    client = Some(from);
                    if a.first() != Some(&23) {
                        let _ = back.send_to(&a[..n], server).await;
                    }
                }
                r = back.recv_from(&mut b) => {
                    let Ok((n, _)) = r else { break };
                    if let Some(c) = client {
                        let _ = front.send_to(&b[..n], c).await;
                    }
                }
            }
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn a_session_that_binds_no_enet_peer_expires() -> Result<()> {
    let h = Harness::start(|c| c.unbound_session_timeout = Duration::from_millis(400)).await?;
    let stop = CancellationToken::new();
    let relay = handshake_only_relay(h.server.local_addr(), stop.clone()).await?;
    let mut config = EnetClientConfig::new(relay, ClientTrust::CaPem(h.identity.cert_pem()));
    config.service_interval = Duration::from_millis(5);
    let attempt = tokio::spawn(EnetClient::connect(config, Duration::from_millis(1500)));
    h.wait_stats("an established, unbound session", |s| s.sessions == 1 && s.pending_handshakes == 0).await?;
    let started = Instant::now();
    h.wait_stats("the unbound session expired", |s| s.sessions == 0 && s.sessions_expired == 1).await?;
    println!("unbound session dropped after {:?} (timeout 400 ms)", started.elapsed());
    ensure!(started.elapsed() < Duration::from_millis(1500));
    // The client gave up, or heard the server's close_notify for the expired session.
    ensure!(matches!(attempt.await?, Err(TransportError::Timeout(_) | TransportError::Closed(_))));
    stop.cancel();

    // A lone ClientHello with its cookie (pending handshake) expires the same way.
    let raw = UdpSocket::bind("127.0.0.1:0").await?;
    start_handshake(&raw, h.server.local_addr(), &captured_client_hello().await?).await?;
    h.wait_stats("a pending session", |s| s.sessions == 1).await?;
    h.wait_stats("the pending session expired", |s| s.sessions == 0 && s.sessions_expired == 2).await?;
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_client_reconnects_from_the_same_address_after_vanishing() -> Result<()> {
    let mut h = Harness::start(|_| {}).await?;
    let port = free_port()?;
    let mut config = h.client_config();
    config.bind = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    let first = EnetClient::connect(config.clone(), WAIT).await?;
    let old = h.connected().await?;
    first.abort().await;

    let mut second = EnetClient::connect(config, WAIT).await?;
    ensure!(second.local_addr().port() == port);
    let mut new = None;
    let mut old_gone = false;
    for _ in 0..4 {
        match h.next_event().await? {
            LinkEvent::Disconnected { link, .. } if link == old => old_gone = true,
            LinkEvent::Connected(info) => new = Some(info.link),
            other => bail!("unexpected {other:?}"),
        }
        if old_gone && new.is_some() {
            break;
        }
    }
    let new = new.context("the reconnect never connected")?;
    ensure!(old_gone && new != old);
    second.send(Bytes::from_static(b"again"), Delivery::Reliable)?;
    ensure!(matches!(h.event_of(new).await?, LinkEvent::Message { data, .. } if &data[..] == b"again"));
    h.sink.send(new, Bytes::from_static(b"welcome back"), Delivery::Reliable)?;
    ensure!(matches!(client_event(&mut second).await?, ClientEvent::Message { .. }));
    ensure!(h.server.stats().sessions == 1, "{:?}", h.server.stats());
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_connect_and_echo_at_once() -> Result<()> {
    const CLIENTS: usize = 50;
    let mut h = Harness::start(|c| c.peers_per_host = 16).await?;
    let started = Instant::now();
    let mut connecting = Vec::new();
    for i in 0..CLIENTS {
        let mut config = h.client_config();
        config.bind = Some(SocketAddr::from(([127, 0, 0, 1 + (i % 4) as u8], 0)));
        connecting.push(tokio::spawn(EnetClient::connect(config, Duration::from_secs(20))));
    }
    let mut clients = Vec::new();
    for c in connecting {
        clients.push(c.await??);
    }
    let handshakes = started.elapsed();
    println!("{CLIENTS} concurrent DTLS+ENet connects in {handshakes:?} ({:.0}/s)", CLIENTS as f64 / handshakes.as_secs_f64());
    let sink = h.sink.clone();
    let mut links = Vec::new();
    for _ in 0..CLIENTS {
        links.push(h.connected().await?);
    }
    let stats = h.server.stats();
    ensure!(stats.links == CLIENTS && stats.hosts == CLIENTS.div_ceil(16), "{stats:?}");

    // Echo: each client sends ROUNDS messages; the server echoes each.
    const ROUNDS: usize = 20;
    let started = Instant::now();
    let echo = tokio::spawn(async move {
        let mut echoed = 0;
        while echoed < CLIENTS * ROUNDS {
            match tokio::time::timeout(WAIT, h.events.recv()).await {
                Ok(Some(LinkEvent::Message { link, data, delivery })) => {
                    sink.send(link, data, delivery)?;
                    echoed += 1;
                }
                Ok(Some(other)) => bail!("unexpected {other:?}"),
                _ => bail!("echo stalled after {echoed}"),
            }
        }
        Ok(h)
    });
    let mut tasks = Vec::new();
    for mut client in clients {
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS as u32 {
                client.send(Bytes::from(i.to_be_bytes().to_vec()), Delivery::Reliable)?;
            }
            for i in 0..ROUNDS as u32 {
                match client_event(&mut client).await? {
                    ClientEvent::Message { data, .. } if data[..] == i.to_be_bytes() => {}
                    other => bail!("expected echo {i}, got {other:?}"),
                }
            }
            Ok::<_, anyhow::Error>(client)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await??);
    }
    let h = echo.await??;
    let took = started.elapsed();
    println!("{} echoes over {CLIENTS} links in {took:?} ({:.0} round trips/s)", CLIENTS * ROUNDS, (CLIENTS * ROUNDS) as f64 / took.as_secs_f64());
    h.shutdown.cancel();
    drop(clients);
    Ok(())
}

#[tokio::test]
async fn oversize_sends_are_refused_and_an_oversize_message_closes_the_link() -> Result<()> {
    let mut h = Harness::start(|c| c.max_frame_bytes = 1000).await?;
    let mut client = h.connect().await?;
    let link = h.connected().await?;
    ensure!(
        h.sink.send(link, Bytes::from(vec![0u8; 1001]), Delivery::Reliable) == Err(SendError::TooLarge { len: 1001, max: 1000 })
    );
    h.sink.send(link, Bytes::from(vec![0u8; 1000]), Delivery::Reliable)?;
    ensure!(matches!(client_event(&mut client).await?, ClientEvent::Message { data, .. } if data.len() == 1000));

    let mut small = h.client_config();
    small.max_frame_bytes = 10;
    let mut small_client = EnetClient::connect(small, WAIT).await?;
    let small_link = h.connected().await?;
    ensure!(small_client.send(Bytes::from(vec![0u8; 11]), Delivery::Reliable) == Err(SendError::TooLarge { len: 11, max: 10 }));

    // This client allows 64 KiB, the server 1000 bytes: its 5000-byte message closes the link.
    client.send(Bytes::from(vec![1u8; 5000]), Delivery::Reliable)?;
    match h.event_of(link).await? {
        LinkEvent::Disconnected { reason: CloseReason::Protocol(why), .. } => println!("server closed the link: {why}"),
        other => bail!("expected a protocol close, got {other:?}"),
    }
    match client_event(&mut client).await? {
        ClientEvent::Closed(CloseReason::Remote { code }) => ensure!(code == ErrorCode::TooLarge.code(), "code {code}"),
        other => bail!("expected Closed(Remote TooLarge), got {other:?}"),
    }
    // The other link is unaffected.
    small_client.send(Bytes::from_static(b"ok"), Delivery::Reliable)?;
    ensure!(matches!(h.event_of(small_link).await?, LinkEvent::Message { .. }));
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_as_a_slow_consumer() -> Result<()> {
    let mut h = Harness::start(|c| c.max_queued_bytes_per_link = 64 * 1024).await?;
    let mut lazy = h.client_config();
    lazy.event_capacity = 2;
    let lazy = EnetClient::connect(lazy, WAIT).await?;
    let link = h.connected().await?;
    let mut reader = h.connect().await?;
    let reader_link = h.connected().await?;

    let chunk = Bytes::from(vec![7u8; 1024]);
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..100_000 {
        match h.sink.send(link, chunk.clone(), Delivery::Reliable) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        if i % 32 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ensure!(Instant::now() < deadline, "sends never refused: {:?}", h.sink.stats(link));
    }
    let (sent, error) = refused.context("sends never refused")?;
    println!("slow consumer refused after {sent} KiB: {error}");
    ensure!(error == SendError::SlowConsumer(link), "{error}");
    match h.event_of(link).await? {
        LinkEvent::Disconnected { reason: CloseReason::SlowConsumer, .. } => {}
        other => bail!("expected Disconnected(SlowConsumer), got {other:?}"),
    }
    // The reading client is unaffected.
    h.sink.send(reader_link, Bytes::from_static(b"still here"), Delivery::Reliable)?;
    ensure!(matches!(client_event(&mut reader).await?, ClientEvent::Message { .. }));
    drop(lazy);
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn shutdown_tells_every_client_and_reports_every_link() -> Result<()> {
    let mut h = Harness::start(|_| {}).await?;
    let mut a = h.connect().await?;
    let mut b = h.connect().await?;
    let links = [h.connected().await?, h.connected().await?];
    h.sink.send(links[0], Bytes::from_static(b"last words"), Delivery::Reliable)?;
    h.shutdown.cancel();
    let mut reported = Vec::new();
    for _ in 0..2 {
        match h.next_event().await? {
            LinkEvent::Disconnected { link, reason: CloseReason::Shutdown } => reported.push(link),
            other => bail!("expected Disconnected(Shutdown), got {other:?}"),
        }
    }
    reported.sort();
    let mut expected = links.to_vec();
    expected.sort();
    ensure!(reported == expected);
    ensure!(matches!(client_event(&mut a).await?, ClientEvent::Message { data, .. } if &data[..] == b"last words"));
    for client in [&mut a, &mut b] {
        match client_event(client).await? {
            ClientEvent::Closed(CloseReason::Remote { code }) => ensure!(code == ErrorCode::ShuttingDown.code()),
            other => bail!("expected Closed(Remote ShuttingDown), got {other:?}"),
        }
    }
    h.server.stopped().await;
    Ok(())
}

#[tokio::test]
async fn a_cookieless_client_hello_flood_from_many_ports_is_answered_and_creates_no_state() -> Result<()> {
    const PORTS: usize = 200;
    let mut h = Harness::start(|c| {
        c.max_pending_handshakes = 16;
        c.max_sessions_per_ip = 1000;
    })
    .await?;
    let server = h.server.local_addr();
    let hello = captured_client_hello().await?;
    let mut sockets = Vec::new();
    for i in 0..PORTS {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 1, 1 + (i % 200) as u8], 0))).await?;
        socket.send_to(&hello, server).await?;
        sockets.push(socket);
    }
    // Every source gets a HelloVerifyRequest with a cookie of its own, and the server keeps
    // nothing: a spoofed source never sees its cookie, so this is all it can ever cause.
    let mut cookies = std::collections::HashSet::new();
    let mut buf = vec![0u8; 2048];
    for socket in &sockets {
        let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await.context("no HelloVerifyRequest")??;
        ensure!(n <= hello.len(), "the answer ({n} B) is larger than the hello ({} B)", hello.len());
        cookies.insert(hvr_cookie(&buf[..n])?);
    }
    ensure!(cookies.len() == PORTS, "cookies are not per address: {} distinct", cookies.len());
    let stats = h.server.stats();
    println!("after a {PORTS}-port cookieless ClientHello flood: {stats:?}");
    ensure!(stats.sessions == 0 && stats.pending_handshakes == 0, "{stats:?}");
    ensure!(stats.hello_verify_requests == PORTS as u64 && stats.handshakes_evicted == 0, "{stats:?}");
    let _client = h.connect().await?;
    h.connected().await?;
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_flood_of_real_handshakes_from_many_ports_keeps_pending_state_bounded() -> Result<()> {
    let mut h = Harness::start(|c| {
        c.max_pending_handshakes = 16;
        c.max_sessions_per_ip = 1000;
    })
    .await?;
    let hello = captured_client_hello().await?;
    let mut sockets = Vec::new();
    for i in 0..200u32 {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 1, 1 + (i % 200) as u8], 0))).await?;
        start_handshake(&socket, h.server.local_addr(), &hello).await?;
        sockets.push(socket);
    }
    h.wait_stats("the flood was read", |s| s.handshakes_evicted >= 150).await?;
    let stats = h.server.stats();
    println!("after 200 cookie-verified handshakes left hanging: {stats:?}");
    ensure!(stats.sessions <= 16 && stats.pending_handshakes <= 16, "{stats:?}");
    let _client = h.connect().await?;
    h.connected().await?;
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_forged_or_borrowed_cookie_creates_no_session() -> Result<()> {
    let h = Harness::start(|_| {}).await?;
    let server = h.server.local_addr();
    let hello = captured_client_hello().await?;
    let owner = UdpSocket::bind("127.0.0.1:0").await?;
    let cookie = ask_cookie(&owner, server, &hello).await?;
    let thief = UdpSocket::bind("127.0.0.1:0").await?;
    let other_ip = UdpSocket::bind("127.0.0.2:0").await?;

    let mut flipped = cookie.clone();
    flipped[0] ^= 1;
    let mut longer = cookie.clone();
    longer.push(0);
    let seed = seed();
    println!("random cookie seed {seed}");
    let mut x = seed | 1;
    let random: Vec<u8> = (0..20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cases: [(&str, &UdpSocket, Vec<u8>); 6] = [
        ("the owner's cookie from another port", &thief, cookie.clone()),
        ("the owner's cookie from another ip", &other_ip, cookie.clone()),
        ("a cookie with one bit flipped", &owner, flipped),
        ("a random cookie", &owner, random),
        ("a cookie one byte too long", &owner, longer),
        ("a cookie one byte too short", &owner, cookie[..19].to_vec()),
    ];
    for (i, (what, socket, bad)) in cases.iter().enumerate() {
        socket.send_to(&hello_with_cookie(&hello, bad)?, server).await?;
        h.wait_stats(what, |s| s.cookies_refused == i as u64 + 1).await?;
        ensure!(h.server.stats().sessions == 0, "{what} created a session: {:?}", h.server.stats());
    }
    // A ClientHello that changed its parameters (here its random) after the HelloVerifyRequest
    // does not match the cookie either.
    let mut other_random = hello.clone();
    other_random[BODY + 2] ^= 1;
    owner.send_to(&hello_with_cookie(&other_random, &cookie)?, server).await?;
    h.wait_stats("changed parameters", |s| s.cookies_refused == 7).await?;
    // The right cookie from the right address does create the session (the checks above could
    // have failed).
    owner.send_to(&hello_with_cookie(&hello, &cookie)?, server).await?;
    h.wait_stats("a pending session", |s| s.sessions == 1 && s.pending_handshakes == 1).await?;
    ensure!(h.server.stats().cookies_refused == 7);
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_repeated_client_hello_does_not_stop_the_server_resending_a_lost_flight() -> Result<()> {
    let h = Harness::start(|_| {}).await?;
    let server = h.server.local_addr();
    let hello = captured_client_hello().await?;
    let raw = UdpSocket::bind("127.0.0.1:0").await?;
    let cookie = ask_cookie(&raw, server, &hello).await?;
    let mut second = hello_with_cookie(&hello, &cookie)?;
    raw.send_to(&second, server).await?;
    // The datagram starting with the server's ServerHello, and its record sequence number.
    let mut buf = vec![0u8; 4096];
    let server_hello = |d: &[u8]| match (d.first(), d.get(13), d.get(5..11)) {
        (Some(22), Some(2), Some(&[a, b, c, e, f, g])) => Some(u64::from_be_bytes([0, 0, a, b, c, e, f, g])),
        _ => None,
    };
    let mut first = None;
    for _ in 0..10 {
        let (n, _) = tokio::time::timeout(WAIT, raw.recv_from(&mut buf)).await.context("no server flight")??;
        first = server_hello(&buf[..n]);
        if first.is_some() {
            break;
        }
    }
    let first = first.context("no ServerHello")?;
    // That flight is "lost": the client repeats its ClientHello every 200 ms, each time in a new
    // record as a real client does, until the server resends its flight on its own timer.
    let started = Instant::now();
    let mut resent = None;
    while resent.is_none() && started.elapsed() < Duration::from_secs(4) {
        let seq = u64::from_be_bytes([0, 0, second[5], second[6], second[7], second[8], second[9], second[10]]) + 1;
        second[5..11].copy_from_slice(&seq.to_be_bytes()[2..]);
        raw.send_to(&second, server).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, raw.recv_from(&mut buf)).await {
            if server_hello(&buf[..n]).is_some_and(|seq| seq > first) {
                resent = Some(started.elapsed());
            }
        }
    }
    let resent = resent.context("the server never resent its flight while the client repeated its ClientHello")?;
    println!("server flight resent after {resent:?} of repeated ClientHellos");
    ensure!(h.server.stats().sessions == 1, "{:?}", h.server.stats());
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_cookie_from_a_rotated_out_secret_is_refused() -> Result<()> {
    const ROTATION: Duration = Duration::from_millis(200);
    let mut h = Harness::start(|c| c.cookie_rotation = ROTATION).await?;
    let server = h.server.local_addr();
    let hello = captured_client_hello().await?;
    let raw = UdpSocket::bind("127.0.0.1:0").await?;
    let stale = ask_cookie(&raw, server, &hello).await?;
    // Two periods retire the secret; a third leaves margin for the timer.
    tokio::time::sleep(ROTATION * 3).await;
    let fresh = ask_cookie(&raw, server, &hello).await?;
    ensure!(fresh != stale, "the secret did not rotate");
    raw.send_to(&hello_with_cookie(&hello, &stale)?, server).await?;
    h.wait_stats("the stale cookie refused", |s| s.cookies_refused == 1).await?;
    ensure!(h.server.stats().sessions == 0, "{:?}", h.server.stats());
    raw.send_to(&hello_with_cookie(&hello, &fresh)?, server).await?;
    h.wait_stats("the fresh cookie accepted", |s| s.sessions == 1).await?;
    // Real clients connect through a fast-rotating secret.
    let _client = h.connect().await?;
    h.connected().await?;
    h.shutdown.cancel();
    Ok(())
}

/// Forwards datagrams both ways between one client and the server, recording the largest
/// datagram seen in each direction (client→server, server→client).
async fn measuring_relay(
    server: SocketAddr,
    stop: CancellationToken,
) -> Result<(SocketAddr, std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let front = UdpSocket::bind("127.0.0.1:0").await?;
    let back = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = front.local_addr()?;
    let largest = std::sync::Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let seen = largest.clone();
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client: Option<SocketAddr> = None;
        for _ in 0..1_000_000 {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { break };
                    client = Some(from);
                    seen[0].fetch_max(n, Ordering::Relaxed);
                    let _ = back.send_to(&a[..n], server).await;
                }
                r = back.recv_from(&mut b) => {
                    let Ok((n, _)) = r else { break };
                    seen[1].fetch_max(n, Ordering::Relaxed);
                    if let Some(c) = client {
                        let _ = front.send_to(&b[..n], c).await;
                    }
                }
            }
        }
    });
    Ok((addr, largest))
}

#[tokio::test]
async fn every_datagram_fits_the_ipv6_minimum_mtu() -> Result<()> {
    use std::sync::atomic::Ordering;
    // 1280 (IPv6 minimum MTU) - 40 (IPv6 header) - 8 (UDP header).
    const LIMIT: usize = 1232;
    let mut h = Harness::start(|_| {}).await?;
    let stop = CancellationToken::new();
    let (relay, largest) = measuring_relay(h.server.local_addr(), stop.clone()).await?;
    // The client asks for Godot's 1392; the link runs at the server's smaller MTU.
    let config = EnetClientConfig::new(relay, ClientTrust::CaPem(h.identity.cert_pem()));
    let mut client = EnetClient::connect(config, WAIT).await?;
    let link = h.connected().await?;
    let big = Bytes::from(vec![0x5A; 60_000]);
    client.send(big.clone(), Delivery::Reliable)?;
    h.sink.send(link, big.clone(), Delivery::Reliable)?;
    ensure!(matches!(h.event_of(link).await?, LinkEvent::Message { data, .. } if data == big));
    ensure!(matches!(client_event(&mut client).await?, ClientEvent::Message { data, .. } if data == big));
    let (up, down) = (largest[0].load(Ordering::Relaxed), largest[1].load(Ordering::Relaxed));
    println!(
        "largest datagrams with {}: client→server {up} B, server→client {down} B (limit {LIMIT})",
        client.cipher_suite().unwrap_or_default()
    );
    ensure!(up <= LIMIT && down <= LIMIT, "up {up}, down {down}");
    // Fragments are full-size, so the check above is tight rather than vacuous.
    ensure!(down > LIMIT - 40 && up > LIMIT - 40, "up {up}, down {down}");
    stop.cancel();
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn reliable_messages_all_arrive_in_order_under_ten_percent_loss() -> Result<()> {
    let seed = seed();
    println!("conditioner seed {seed} (10% loss, 10 ms ± 5 ms, 2% reordering, each direction)");
    let mut h = Harness::start(|_| {}).await?;
    let mut config = h.client_config();
    config.conditioner = Some(transport::ConditionerConfig {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        loss: 0.10,
        reorder: 0.02,
        seed,
        ..transport::ConditionerConfig::default()
    });
    let started = Instant::now();
    let mut client = EnetClient::connect(config, Duration::from_secs(30)).await?;
    println!("connected through the lossy link in {:?}", started.elapsed());
    let link = h.connected().await?;
    const N: u32 = 300;
    for i in 0..N {
        client.send(Bytes::from(i.to_be_bytes().to_vec()), Delivery::Reliable)?;
        h.sink.send(link, Bytes::from(i.to_be_bytes().to_vec()), Delivery::Reliable)?;
        client.send(Bytes::from_static(b"noise"), Delivery::Unreliable)?;
    }
    let (mut up, mut down, mut unreliable) = (0u32, 0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (up < N || down < N) && Instant::now() < deadline {
        tokio::select! {
            event = h.events.recv() => match event {
                Some(LinkEvent::Message { data, delivery: Delivery::Reliable, .. }) => {
                    ensure!(data[..] == up.to_be_bytes(), "server got {data:?}, expected {up}");
                    up += 1;
                }
                Some(LinkEvent::Message { delivery: Delivery::Unreliable, .. }) => unreliable += 1,
                other => bail!("unexpected server event {other:?}"),
            },
            event = client.recv() => match event {
                Some(ClientEvent::Message { data, .. }) => {
                    ensure!(data[..] == down.to_be_bytes(), "client got {data:?}, expected {down}");
                    down += 1;
                }
                other => bail!("unexpected client event {other:?}"),
            },
            _ = tokio::time::sleep(Duration::from_secs(10)) => bail!("stalled at up {up}, down {down}"),
        }
    }
    ensure!(up == N && down == N, "up {up}, down {down} of {N}");
    println!("{N} reliable each way in order, {unreliable}/{N} unreliable arrived, in {:?}", started.elapsed());
    h.shutdown.cancel();
    Ok(())
}
