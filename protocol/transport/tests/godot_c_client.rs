//! Godot compatibility, in CI: a C client built against Debian's libenet and mbedTLS, configured
//! the way Godot 4 configures its ENet DTLS client (`tests/c-client/godot_dtls_client.c`), talks
//! to the Rust ENet/DTLS server: DTLS handshake, FlatBuffers Hello/Welcome, reliable and
//! unreliable echoes, ENet disconnect. A wrong CA and a wrong server name must fail the handshake
//! and leave the server serving. A lost HelloVerifyRequest costs the client one retransmission
//! and nothing more.
//!
//! The C client is compiled here with the system compiler. Without libenet-dev and
//! libmbedtls-dev the tests fail when `CI` is set and print `SKIPPED` otherwise; CI installs them
//! with `apt-get install libenet-dev libmbedtls-dev pkg-config`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use protocol::Codec;
use protocol::tavern::{ClientBodyT, ClientMessageT, HelloT, ServerBodyT, ServerMessageT, UuidT, WelcomeT};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{CloseReason, Delivery, EnetConfig, EnetServer, LinkEvent, LinkId, LinkKind, LinkSink, PeerInfo, ServerIdentity};

/// What the C client sends after the Welcome; the test server echoes each back unchanged.
const RELIABLE_PAYLOAD: &[u8] = b"tavern-c-client reliable ch0";
const UNRELIABLE_PAYLOAD: &[u8] = b"tavern-c-client unreliable ch1 unsequenced";
const UNRELIABLE_ORDERED_PAYLOAD: &[u8] = b"tavern-c-client unreliable ch1 ordered";
/// The C client bounds its own run to this; the test kills it a while later.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_KILL_AFTER: Duration = Duration::from_secs(30);
/// How long the server may take to report the disconnect after the client has exited.
const EVENT_WAIT: Duration = Duration::from_secs(5);
const HELLO_CID: u32 = 1;
const CLIENT_NAME: &str = "tavern-c-client (godot-like mbedtls)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn godot_like_client_handshakes_exchanges_and_disconnects() -> anyhow::Result<()> {
    let Some(client) = c_client()? else { return Ok(()) };
    let mut server = TestServer::start("godot-like").await?;

    let run = client.run(&server, &server.cert_path, "localhost").await?;
    let link = check_good_run(&run, &mut server).await?;
    let info = server.peer(link).context("connected peer info")?;

    report(&format!("negotiated cipher suite: {} ({})", run.field("cipher")?, run.field("version")?));
    report(&format!("server-side PeerInfo.cipher_suite: {:?}", info.cipher_suite));
    report(&format!(
        "godot_c_client: mbedtls {}, dtls handshake {} ms, enet connect after {} ms, enet mtu {}, unreliable sends {}, disconnect acknowledged after {} ms",
        run.field("mbedtls")?,
        run.field("dtls_handshake_ms")?,
        run.field("enet_connect_ms")?,
        run.field("mtu")?,
        run.field("unreliable_sends")?,
        run.field("disconnect_ms")?,
    ));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_and_wrong_name_fail_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let Some(client) = c_client()? else { return Ok(()) };
    let mut server = TestServer::start("negative").await?;

    // A certificate the server does not hold, naming the same host.
    let stranger = ServerIdentity::self_signed(&["localhost", "127.0.0.1"])?;
    let stranger_path = server.dir.join("stranger.pem");
    std::fs::write(&stranger_path, stranger.cert_pem())?;

    let cases: [(&str, &Path, &str, &str); 2] = [
        ("a CA that did not sign the server certificate", &stranger_path, "localhost", "not correctly signed"),
        ("a server name the certificate does not carry", &server.cert_path, "wrong.tavern.invalid", "does not match"),
    ];
    for (what, ca, name, why) in cases {
        let run = client.run(&server, ca, name).await?;
        report(&format!("godot_c_client with {what}: exit {:?}, {}", run.status.code(), run.error_line()));
        ensure!(!run.status.success(), "the client connected with {what}\n{}", run.transcript());
        let error = run.field("error").with_context(|| format!("with {what}\n{}", run.transcript()))?;
        ensure!(
            error.contains("handshake") && error.contains("verification") && error.contains(why),
            "with {what} the client failed for another reason: {error}"
        );
        ensure!(run.get("cipher").is_none(), "with {what} the handshake completed\n{}", run.transcript());
    }
    ensure!(server.connected_links().is_empty(), "a failed handshake produced a link: {:?}", server.connected_links());
    report(&format!("godot_c_client: server after the failed handshakes: {:?}", server.server.stats()));

    // The server shrugged off two aborted handshakes (each ends in a fatal alert).
    let run = client.run(&server, &server.cert_path, "localhost").await?;
    check_good_run(&run, &mut server).await?;
    ensure!(server.connected_links().len() == 1, "expected exactly one link, got {:?}", server.connected_links());
    report(&format!("godot_c_client: after the failures a good client negotiated {}", run.field("cipher")?));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hello_verify_request_costs_one_client_retransmission() -> anyhow::Result<()> {
    let Some(client) = c_client()? else { return Ok(()) };
    let mut server = TestServer::start("lost-hvr").await?;
    let stop = CancellationToken::new();
    let (relay, dropped) = first_answer_dropping_relay(server.addr, stop.clone()).await?;

    let run = client.run_to(relay, &server, &server.cert_path, "localhost").await?;
    check_good_run(&run, &mut server).await?;
    let dropped = dropped.lock().map(|d| d.clone()).unwrap_or_default();
    ensure!(
        dropped.first() == Some(&22) && dropped.get(13) == Some(&3),
        "the relay dropped something else than a HelloVerifyRequest: {dropped:?}"
    );
    // mbedTLS retransmits its ClientHello after 1 s; a second stall (a HelloVerifyRequest whose
    // record number shadows one of the server's next records) would add the server's 1 s
    // retransmission on top.
    let handshake_ms: u64 = run.field("dtls_handshake_ms")?.parse()?;
    report(&format!("godot_c_client: with the first HelloVerifyRequest lost the handshake took {handshake_ms} ms"));
    ensure!(handshake_ms < 1800, "the handshake took {handshake_ms} ms after one lost HelloVerifyRequest");
    stop.cancel();
    server.stop().await
}

/// Forwards datagrams between one client and `server`, dropping the first datagram the server
/// sends (its answer to the first ClientHello), which it hands back.
async fn first_answer_dropping_relay(
    server: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>)> {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = front.local_addr()?;
    let dropped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = dropped.clone();
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client: Option<SocketAddr> = None;
        let mut dropped_one = false;
        for _ in 0..100_000 {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { break };
                    client = Some(from);
                    let _ = back.send_to(&a[..n], server).await;
                }
                r = back.recv_from(&mut b) => {
                    let Ok((n, _)) = r else { break };
                    if !dropped_one {
                        dropped_one = true;
                        if let Ok(mut d) = keep.lock() {
                            d.extend_from_slice(&b[..n]);
                        }
                        continue;
                    }
                    if let Some(c) = client {
                        let _ = front.send_to(&b[..n], c).await;
                    }
                }
            }
        }
    });
    Ok((addr, dropped))
}

/// Asserts everything one successful C client run must show, on both sides, and returns the link.
async fn check_good_run(run: &ClientRun, server: &mut TestServer) -> anyhow::Result<LinkId> {
    ensure!(run.status.success(), "the C client failed\n{}", run.transcript());
    report(&format!("godot_c_client: C client output:\n{}", run.stdout.trim_end()));

    let cipher = run.field("cipher")?;
    ensure!(
        cipher.contains("GCM") || cipher.contains("CHACHA20-POLY1305"),
        "the server accepted a non-AEAD suite: {cipher}"
    );
    ensure!(run.field("version")? == "DTLSv1.2", "unexpected protocol version {}", run.field("version")?);

    let welcome = Codec::default()
        .decode::<ServerMessageT>(&run.hex_field("welcome")?)
        .context("the reply to Hello is not a ServerMessage")?;
    ensure!(welcome.cid == HELLO_CID, "welcome answers cid {} instead of {HELLO_CID}", welcome.cid);
    let body = welcome.body.as_welcome().with_context(|| format!("the reply to Hello is not a Welcome: {welcome:?}"))?;
    ensure!(body.username == CLIENT_NAME, "welcome names {:?}", body.username);
    ensure!(run.field("welcome_channel")? == "0", "the welcome came on channel {}", run.field("welcome_channel")?);

    for (key, want) in [
        ("echo_reliable", RELIABLE_PAYLOAD),
        ("echo_unreliable", UNRELIABLE_PAYLOAD),
        ("echo_unreliable_ordered", UNRELIABLE_ORDERED_PAYLOAD),
    ] {
        ensure!(run.hex_field(key)? == want, "{key} came back altered\n{}", run.transcript());
    }
    ensure!(run.get("disconnected").is_some(), "no clean ENet disconnect\n{}", run.transcript());

    // The server side of the same story, in order.
    let link = server.wait_for_disconnect().await?;
    let events = server.events_of(link);
    let info = match events.first() {
        Some(LinkEvent::Connected(info)) => info.clone(),
        other => bail!("the link did not start with Connected: {other:?}"),
    };
    ensure!(info.kind == LinkKind::EnetDtls, "link kind {:?}", info.kind);
    ensure!(info.remote.ip().is_loopback(), "remote address {}", info.remote);
    let server_suite = info.cipher_suite.clone().context("the server reports no cipher suite for a DTLS link")?;
    ensure!(
        same_suite(&server_suite, cipher),
        "server and client disagree on the suite: {server_suite} vs {cipher}"
    );
    match events.last() {
        Some(LinkEvent::Disconnected { reason: CloseReason::Remote { code: 0 }, .. }) => {}
        other => bail!("the link did not end with Disconnected(Remote {{ code: 0 }}): {other:?}"),
    }
    let messages: Vec<(Bytes, Delivery)> = events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Message { data, delivery, .. } => Some((data.clone(), *delivery)),
            _ => None,
        })
        .collect();
    let first = messages.first().context("the server received no message")?;
    ensure!(first.1 == Delivery::Reliable, "the Hello arrived {:?}", first.1);
    let hello: ClientMessageT = Codec::default().decode(&first.0).context("the first message is not a ClientMessage")?;
    ensure!(hello.body.as_hello().is_some(), "the first message is not a Hello: {hello:?}");
    for payload in [RELIABLE_PAYLOAD, UNRELIABLE_PAYLOAD, UNRELIABLE_ORDERED_PAYLOAD] {
        ensure!(
            messages.iter().any(|(data, _)| data.as_ref() == payload),
            "the server never saw {:?}; it saw {messages:?}",
            String::from_utf8_lossy(payload)
        );
    }
    // Checked last, so that a failure here means everything else worked: the server must tell
    // ENet's unreliable packets (Godot's TRANSFER_MODE_UNRELIABLE and _UNRELIABLE_ORDERED, both
    // on channel 1) from reliable ones.
    for (payload, delivery) in [
        (RELIABLE_PAYLOAD, Delivery::Reliable),
        (UNRELIABLE_PAYLOAD, Delivery::Unreliable),
        (UNRELIABLE_ORDERED_PAYLOAD, Delivery::Unreliable),
    ] {
        let wrong: Vec<Delivery> =
            messages.iter().filter(|(data, d)| data.as_ref() == payload && *d != delivery).map(|(_, d)| *d).collect();
        ensure!(
            wrong.is_empty(),
            "the server reported {:?} as {wrong:?} instead of {delivery:?}",
            String::from_utf8_lossy(payload)
        );
    }
    Ok(link)
}

/// mbedTLS (`TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256`) and the server may spell one suite
/// differently; they agree when their words, less `TLS` and `WITH`, do.
fn same_suite(server: &str, client: &str) -> bool {
    let words = |s: &str| {
        s.to_ascii_uppercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty() && *w != "TLS" && *w != "WITH")
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    words(server) == words(client)
}

/// Writes a line straight to the process's stdout, past libtest's capture, so that the line is
/// in the output of a passing `cargo test` run too (CI's log shows the negotiated suite).
fn report(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The Rust ENet/DTLS server plus a small application that answers Hello with Welcome and echoes
/// everything else on the same delivery.
struct TestServer {
    addr: SocketAddr,
    dir: PathBuf,
    cert_path: PathBuf,
    hello_path: PathBuf,
    seen_rx: mpsc::Receiver<LinkEvent>,
    seen: Vec<LinkEvent>,
    shutdown: CancellationToken,
    app: JoinHandle<anyhow::Result<()>>,
    server: EnetServer,
}

impl TestServer {
    async fn start(name: &str) -> anyhow::Result<Self> {
        let dir = scratch_dir(name)?;
        let identity = ServerIdentity::self_signed(&["localhost", "127.0.0.1"])?;
        let cert_path = dir.join("server.pem");
        std::fs::write(&cert_path, identity.cert_pem())?;

        let hello = protocol::build!(HelloT {
            protocol_version: protocol::PROTOCOL_VERSION,
            token: Some("not-a-real-token".to_owned()),
            client_name: Some(CLIENT_NAME.to_owned()),
        });
        let hello = ClientMessageT::request(HELLO_CID, ClientBodyT::Hello(Box::new(hello)));
        let hello_path = dir.join("hello.bin");
        std::fs::write(&hello_path, Codec::default().encode(&hello)?)?;

        let (events_tx, events_rx) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let config = EnetConfig { bind: "127.0.0.1:0".parse()?, identity: Some(identity), ..Default::default() };
        let server = EnetServer::start(config, 0, events_tx, shutdown.clone()).await?;
        let (seen_tx, seen_rx) = mpsc::channel(256);
        let app = tokio::spawn(echo_app(events_rx, server.sink(), seen_tx, shutdown.clone()));
        Ok(Self {
            addr: server.local_addr(),
            dir,
            cert_path,
            hello_path,
            seen_rx,
            seen: Vec::new(),
            shutdown,
            app,
            server,
        })
    }

    /// Waits for the next Disconnected the server reports and returns its link.
    async fn wait_for_disconnect(&mut self) -> anyhow::Result<LinkId> {
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.seen_rx.recv())
                .await
                .with_context(|| format!("no Disconnected within {EVENT_WAIT:?}; seen {:?}", self.seen))?
                .context("the test application stopped")?;
            let done = match &event {
                LinkEvent::Disconnected { link, .. } => Some(*link),
                _ => None,
            };
            self.seen.push(event);
            if let Some(link) = done {
                return Ok(link);
            }
        }
    }

    fn events_of(&self, link: LinkId) -> Vec<LinkEvent> {
        self.seen.iter().filter(|e| event_link(e) == link).cloned().collect()
    }

    fn peer(&self, link: LinkId) -> Option<PeerInfo> {
        self.seen.iter().find_map(|e| match e {
            LinkEvent::Connected(info) if info.link == link => Some(info.clone()),
            _ => None,
        })
    }

    /// Every link the server reported as connected so far (draining what is already queued).
    fn connected_links(&mut self) -> Vec<LinkId> {
        while let Ok(event) = self.seen_rx.try_recv() {
            self.seen.push(event);
        }
        self.seen
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Connected(info) => Some(info.link),
                _ => None,
            })
            .collect()
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(EVENT_WAIT, self.server.stopped()).await.context("the server did not stop")?;
        tokio::time::timeout(EVENT_WAIT, self.app).await.context("the test application did not stop")??
    }
}

/// Plays the server application: Welcome for a Hello, an echo for anything else. It reports
/// every event to the test, and fails if the server refuses a send.
async fn echo_app(
    mut events: mpsc::Receiver<LinkEvent>,
    sink: std::sync::Arc<dyn LinkSink>,
    seen: mpsc::Sender<LinkEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let codec = Codec::default();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            event = events.recv() => match event {
                Some(event) => event,
                None => return Ok(()),
            },
        };
        if let LinkEvent::Message { link, data, delivery } = &event {
            let reply = match codec.decode::<ClientMessageT>(data) {
                Ok(message) if message.body.as_hello().is_some() => {
                    let welcome = protocol::build!(WelcomeT {
                        session_id: UuidT::from_bytes([7; 16]),
                        resume_token: "resume".to_owned(),
                        user_id: UuidT::from_bytes([9; 16]),
                        username: message.body.as_hello().and_then(|h| h.client_name.clone()).unwrap_or_default(),
                        heartbeat_interval_ms: 5_000,
                    });
                    let welcome = ServerMessageT::response(message.cid, ServerBodyT::Welcome(Box::new(welcome)));
                    (Bytes::from(codec.encode(&welcome)?), Delivery::Reliable)
                }
                _ => (data.clone(), *delivery),
            };
            sink.send(*link, reply.0, reply.1).with_context(|| format!("reply on link {link}"))?;
        }
        if seen.send(event).await.is_err() {
            return Ok(());
        }
    }
}

fn event_link(event: &LinkEvent) -> LinkId {
    match event {
        LinkEvent::Connected(info) => info.link,
        LinkEvent::Message { link, .. } | LinkEvent::Disconnected { link, .. } => *link,
    }
}

/// The compiled C client.
struct CClient {
    bin: PathBuf,
}

impl CClient {
    async fn run(&self, server: &TestServer, ca: &Path, server_name: &str) -> anyhow::Result<ClientRun> {
        self.run_to(server.addr, server, ca, server_name).await
    }

    /// Runs the client against `addr` (the server, or something between it and the server).
    async fn run_to(&self, addr: SocketAddr, server: &TestServer, ca: &Path, server_name: &str) -> anyhow::Result<ClientRun> {
        let child = tokio::process::Command::new(&self.bin)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(ca)
            .arg(server_name)
            .arg(&server.hello_path)
            .env("TAVERN_CLIENT_TIMEOUT_MS", CLIENT_TIMEOUT.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        let output = tokio::time::timeout(CLIENT_KILL_AFTER, child.wait_with_output())
            .await
            .with_context(|| format!("the C client ran past {CLIENT_KILL_AFTER:?} and was killed"))??;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let fields = stdout
            .lines()
            .map(|line| match line.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (line.to_owned(), String::new()),
            })
            .collect();
        Ok(ClientRun {
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            fields,
        })
    }
}

/// One run of the C client: its exit status and its `key=value` lines.
struct ClientRun {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    fields: HashMap<String, String>,
}

impl ClientRun {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn field(&self, key: &str) -> anyhow::Result<&str> {
        self.get(key).with_context(|| format!("the C client printed no `{key}=`\n{}", self.transcript()))
    }

    fn hex_field(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let hex = self.field(key)?;
        ensure!(hex.len() % 2 == 0, "odd-length hex in `{key}`: {hex}");
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .with_context(|| format!("bad hex in `{key}`: {hex}"))
            })
            .collect()
    }

    fn error_line(&self) -> String {
        self.get("error").map_or_else(|| "no error line".to_owned(), |e| format!("error={e}"))
    }

    fn transcript(&self) -> String {
        format!("exit: {:?}\nstdout:\n{}stderr:\n{}", self.status.code(), self.stdout, self.stderr)
    }
}

/// The C client, compiled once per test binary. `Ok(None)` means skipped (libraries missing
/// outside CI); missing libraries under `CI` and compile errors are failures.
fn c_client() -> anyhow::Result<Option<CClient>> {
    static BUILT: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build_c_client().map_err(|e| format!("{e:#}")));
    match built {
        Ok(Some(bin)) => Ok(Some(CClient { bin: bin.clone() })),
        Ok(None) => Ok(None),
        Err(e) => bail!("{e}"),
    }
}

const INSTALL_HINT: &str =
    "apt-get install -y libenet-dev libmbedtls-dev pkg-config (Debian/Ubuntu)";

fn build_c_client() -> anyhow::Result<Option<PathBuf>> {
    let dir = scratch_dir("c-client-build")?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c-client/godot_dtls_client.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let enet_flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libenet"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["-lenet".to_owned()]);
    let libs: Vec<String> = enet_flags.into_iter().chain(["-lmbedtls", "-lmbedx509", "-lmbedcrypto"].map(str::to_owned)).collect();

    // First a probe that needs only the headers and libraries: its failure means "not installed",
    // while a failure of the real client afterwards is a bug in it.
    let probe = dir.join("probe.c");
    std::fs::write(
        &probe,
        "#include <enet/enet.h>\n#include <mbedtls/ssl.h>\n\
         int main(void) { mbedtls_ssl_context s; mbedtls_ssl_init(&s); return enet_initialize(); }\n",
    )?;
    let probe_out = Command::new(&cc).arg(&probe).arg("-o").arg(dir.join("probe")).args(&libs).output();
    let missing = match &probe_out {
        Err(e) => Some(format!("cannot run the C compiler `{cc}`: {e}")),
        Ok(o) if !o.status.success() => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
        Ok(_) => None,
    };
    if let Some(why) = missing {
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        if in_ci {
            bail!("CI is set but libenet/libmbedtls cannot be built against; install them with: {INSTALL_HINT}\n{why}");
        }
        report(&format!("SKIPPED: godot_c_client needs libenet-dev and libmbedtls-dev ({INSTALL_HINT}); compiler said:\n{why}"));
        return Ok(None);
    }

    let bin = dir.join("godot_dtls_client");
    let out = Command::new(&cc)
        .args(["-std=c11", "-O2", "-Wall", "-Wextra"])
        .arg(&source)
        .arg("-o")
        .arg(&bin)
        .args(&libs)
        .output()
        .with_context(|| format!("run {cc}"))?;
    ensure!(out.status.success(), "the C client does not compile:\n{}", String::from_utf8_lossy(&out.stderr));
    let warnings = String::from_utf8_lossy(&out.stderr);
    if !warnings.trim().is_empty() {
        report(&format!("godot_c_client: C compiler warnings:\n{warnings}"));
    }
    Ok(Some(bin))
}

/// A fresh directory under cargo's per-target scratch space, unique to this process and name.
fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("godot_c_client-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
