//! The service link on loopback: hello with a good and a bad token, a first message that is not
//! a hello, frames split into single bytes, an oversize frame, a malformed envelope, requests in
//! both directions, and a client that reconnects after its server restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::tavern::{
    CancelTicketT, ErrorT, ServiceBodyT, ServiceHelloT, ServiceMessageT, ServiceRole, TicketExpiredT, TicketStatusT,
    UuidT,
};
use protocol::{Codec, ErrorCode, FrameDecoder, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use transport::service_link::{self, ClientConfig, Handler, LinkHandle, ServerConfig, ServiceClient};

const TOKEN: &str = "service-token-for-tests";
const WAIT: Duration = Duration::from_secs(5);

/// Answers `CancelTicket` with an `Ack` and `TicketStatusRequest`-like traffic with nothing;
/// remembers every link it was given.
#[derive(Default)]
struct Echo {
    links: Mutex<Vec<LinkHandle>>,
}

impl Handler for Echo {
    fn on_link(&self, link: &LinkHandle) {
        self.links.lock().expect("test lock").push(link.clone());
    }

    async fn on_message(&self, _link: &LinkHandle, message: ServiceMessageT) -> Option<ServiceMessageT> {
        match message.body {
            ServiceBodyT::CancelTicket(c) => {
                let status = protocol::build!(TicketStatusT { ticket_id: c.ticket_id, position: 7 });
                Some(ServiceMessageT::new(message.cid, ServiceBodyT::TicketStatus(Box::new(status))))
            }
            _ => None,
        }
    }
}

struct Server {
    addr: std::net::SocketAddr,
    handler: Arc<Echo>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn server_on(listener: TcpListener) -> Server {
    let addr = listener.local_addr().expect("bound");
    let handler = Arc::new(Echo::default());
    let stop = CancellationToken::new();
    let mut config = ServerConfig::new("mm-test", TOKEN);
    config.max_frame_bytes = 1024;
    config.hello_timeout = Duration::from_secs(2);
    let task = tokio::spawn(service_link::serve(listener, config, Arc::clone(&handler), stop.clone()));
    Server { addr, handler, stop, task }
}

async fn server() -> Server {
    server_on(TcpListener::bind("127.0.0.1:0").await.expect("bind loopback")).await
}

fn client_config(addr: std::net::SocketAddr, token: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr.to_string(), "gcs-1", ServiceRole::Gcs, token);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

fn cancel(n: u8) -> ServiceBodyT {
    ServiceBodyT::CancelTicket(Box::new(protocol::build!(CancelTicketT { ticket_id: UuidT::from_bytes([n; 16]) })))
}

fn hello(token: &str) -> Vec<u8> {
    let h = protocol::build!(ServiceHelloT {
        protocol_version: PROTOCOL_VERSION,
        service_token: token.to_owned(),
        node_id: "raw".to_owned(),
        role: ServiceRole::Gcs,
    });
    Codec::default().encode_framed(&ServiceMessageT::new(0, ServiceBodyT::ServiceHello(Box::new(h)))).expect("encode")
}

/// Reads frames off a raw connection until EOF or `n` messages.
async fn read_messages(stream: &mut TcpStream, n: usize) -> (Vec<ServiceMessageT>, bool) {
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("server answers in time");
        let n = read.expect("read");
        if n == 0 {
            return (out, true);
        }
        let mut input = &buf[..n];
        while let Some(frame) = decoder.decode(&mut input).expect("valid framing from server") {
            out.push(Codec::default().decode_service(&frame).expect("valid envelope from server"));
        }
    }
    (out, false)
}

async fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "server should close the link");
}

fn error_of(m: &ServiceMessageT) -> &ErrorT {
    match &m.body {
        ServiceBodyT::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_token_is_welcomed_and_requests_are_answered() {
    let s = server().await;
    let stop = CancellationToken::new();
    let (client, _pushes) = ServiceClient::start(client_config(s.addr, TOKEN), stop.clone());
    let link = client.connected(WAIT).await.expect("link up");
    assert_eq!(link.peer().node_id, "mm-test");
    let answer = client.request(cancel(3), WAIT).await.expect("answered");
    match answer.body {
        ServiceBodyT::TicketStatus(t) => assert_eq!((t.ticket_id, t.position), (UuidT::from_bytes([3; 16]), 7)),
        other => panic!("unexpected answer {other:?}"),
    }
    let seen = s.handler.links.lock().expect("test lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].peer().node_id.as_str(), seen[0].peer().role), ("gcs-1", ServiceRole::Gcs));
    stop.cancel();
    s.stop.cancel();
    tokio::time::timeout(WAIT, s.task).await.expect("server drains").expect("server task");
}

#[tokio::test]
async fn a_bad_token_gets_an_error_and_the_link_closes() {
    let s = server().await;
    let mut raw = TcpStream::connect(s.addr).await.expect("connect");
    raw.write_all(&hello("not-the-token")).await.expect("write");
    let (msgs, _) = read_messages(&mut raw, 1).await;
    let e = error_of(&msgs[0]);
    assert_eq!((e.code, e.closes_link), (ErrorCode::Unauthenticated.code(), true));
    expect_eof(&mut raw).await;

    // The reconnecting client never gets a link with a wrong token.
    let stop = CancellationToken::new();
    let (client, _pushes) = ServiceClient::start(client_config(s.addr, "wrong-token-xxxxxx"), stop.clone());
    assert!(client.connected(Duration::from_millis(500)).await.is_err());
    assert_eq!(client.connects(), 0);
    assert!(s.handler.links.lock().expect("test lock").is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_first_message_that_is_not_hello_is_refused() {
    let s = server().await;
    let mut raw = TcpStream::connect(s.addr).await.expect("connect");
    let frame = Codec::default().encode_framed(&ServiceMessageT::new(1, cancel(1))).expect("encode");
    raw.write_all(&frame).await.expect("write");
    let (msgs, _) = read_messages(&mut raw, 1).await;
    assert_eq!(error_of(&msgs[0]).code, ErrorCode::HelloRequired.code());
    expect_eof(&mut raw).await;
}

#[tokio::test]
async fn frames_split_into_single_bytes_are_reassembled() {
    let s = server().await;
    let mut raw = TcpStream::connect(s.addr).await.expect("connect");
    raw.set_nodelay(true).expect("nodelay");
    let mut bytes = hello(TOKEN);
    bytes.extend(Codec::default().encode_framed(&ServiceMessageT::new(9, cancel(4))).expect("encode"));
    for b in bytes {
        raw.write_all(&[b]).await.expect("write");
        raw.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (msgs, eof) = read_messages(&mut raw, 2).await;
    assert!(!eof);
    assert!(matches!(msgs[0].body, ServiceBodyT::ServiceWelcome(_)), "{:?}", msgs[0]);
    assert_eq!(msgs[1].cid, 9);
    assert!(matches!(msgs[1].body, ServiceBodyT::TicketStatus(_)), "{:?}", msgs[1]);
}

#[tokio::test]
async fn an_oversize_frame_is_refused_and_closes_the_link() {
    let s = server().await;
    let mut raw = TcpStream::connect(s.addr).await.expect("connect");
    raw.write_all(&hello(TOKEN)).await.expect("write");
    let (msgs, _) = read_messages(&mut raw, 1).await;
    assert!(matches!(msgs[0].body, ServiceBodyT::ServiceWelcome(_)));
    // The header alone (2 KiB declared, limit 1 KiB) is enough to refuse it.
    raw.write_all(&2048u32.to_be_bytes()).await.expect("write");
    let (msgs, _) = read_messages(&mut raw, 1).await;
    let e = error_of(&msgs[0]);
    assert_eq!((e.code, e.closes_link), (ErrorCode::TooLarge.code(), true));
    expect_eof(&mut raw).await;
}

#[tokio::test]
async fn a_malformed_envelope_is_answered_and_the_link_stays_up() {
    let s = server().await;
    let mut raw = TcpStream::connect(s.addr).await.expect("connect");
    raw.write_all(&hello(TOKEN)).await.expect("write");
    let _ = read_messages(&mut raw, 1).await;
    let mut garbage = Vec::new();
    protocol::encode_frame(&[0xff; 12], 1024, &mut garbage).expect("frame");
    raw.write_all(&garbage).await.expect("write");
    let (msgs, _) = read_messages(&mut raw, 1).await;
    assert_eq!(error_of(&msgs[0]).code, ErrorCode::Malformed.code());
    raw.write_all(&Codec::default().encode_framed(&ServiceMessageT::new(5, cancel(5))).expect("encode"))
        .await
        .expect("write");
    let (msgs, _) = read_messages(&mut raw, 1).await;
    assert_eq!(msgs[0].cid, 5, "the link still answers");
}

#[tokio::test]
async fn the_server_can_ask_and_the_client_answers_a_push() {
    let s = server().await;
    let stop = CancellationToken::new();
    let (client, mut pushes) = ServiceClient::start(client_config(s.addr, TOKEN), stop.clone());
    client.connected(WAIT).await.expect("link up");
    let server_side = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(l) = s.handler.links.lock().expect("test lock").first().cloned() {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("server saw the link");
    let push = protocol::build!(TicketExpiredT { ticket_id: UuidT::from_bytes([8; 16]) });
    let ask = tokio::spawn(async move {
        server_side.request(ServiceBodyT::TicketExpired(Box::new(push)), WAIT).await
    });
    let got = tokio::time::timeout(WAIT, pushes.recv()).await.expect("push in time").expect("push");
    assert_ne!(got.cid & service_link::SERVER_CID_BIT, 0, "server-opened cids carry the top bit");
    assert!(matches!(got.body, ServiceBodyT::TicketExpired(_)));
    client.send(&ServiceMessageT::ack(got.cid)).expect("send ack");
    let answer = ask.await.expect("task").expect("acknowledged");
    assert!(matches!(answer.body, ServiceBodyT::Ack(_)));
    stop.cancel();
}

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts() {
    let s = server().await;
    let addr = s.addr;
    let stop = CancellationToken::new();
    let (client, _pushes) = ServiceClient::start(client_config(addr, TOKEN), stop.clone());
    client.connected(WAIT).await.expect("first link");
    assert_eq!(client.connects(), 1);

    s.stop.cancel();
    tokio::time::timeout(WAIT, s.task).await.expect("server stops").expect("server task");
    // While the server is down, requests fail at once instead of hanging.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client.request(cancel(1), Duration::from_millis(200)).await.is_err());

    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let s2 = server_on(listener).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.connects() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.connects(), 2, "reconnected once");
    client.connected(WAIT).await.expect("second link");
    let answer = client.request(cancel(2), WAIT).await.expect("answered after reconnect");
    assert_eq!(answer.cid & service_link::SERVER_CID_BIT, 0);
    assert_eq!(s2.handler.links.lock().expect("test lock").len(), 1, "the hello was sent again");
    stop.cancel();
    s2.stop.cancel();
}

#[tokio::test]
async fn a_full_send_queue_closes_the_link_instead_of_growing() {
    let s = server().await;
    let stop = CancellationToken::new();
    let mut config = client_config(s.addr, TOKEN);
    config.send_queue = 2;
    let (client, _pushes) = ServiceClient::start(config, stop.clone());
    let link = client.connected(WAIT).await.expect("link up");
    // On this single-threaded runtime the writer cannot run between these sends.
    let results: Vec<_> = (0..3).map(|i| link.send(&ServiceMessageT::new(0, cancel(i)))).collect();
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(results[2], Err(service_link::LinkError::QueueFull(2))), "{:?}", results[2]);
    assert!(link.is_closed());
    assert!(matches!(link.send(&ServiceMessageT::ack(1)), Err(service_link::LinkError::Closed)));
    // The client then comes back on a fresh link.
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.connects() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.connects(), 2);
    stop.cancel();
}
