//! The server under test (`bench transport worker-server`): Tavern's `EnetServer` (DTLS or
//! plaintext dev) or `WsServer` with a tiny echo app on top — every message goes back to its
//! link with the same delivery. One current-thread runtime, because the process is pinned to one
//! core. It prints one `{"addr": …, "pin": …}` line when ready, answers `stats` on stdin with a
//! JSON line, and shuts down when stdin closes.

use std::sync::Arc;
use std::time::Duration;

use ::transport::{EnetConfig, EnetServer, LinkEvent, LinkSink, ServerIdentity, WsConfig, WsServer};
use anyhow::{Context, Result};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Kind;

/// Capacity of the server's event channel: the echo app drains it in batches.
const EVENT_CAPACITY: usize = 65_536;
/// Messages taken off the event channel per wake-up of the echo app.
const ECHO_BATCH: usize = 1024;

#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
}

/// Either server, for stats.
enum Running {
    Enet(EnetServer),
    Ws(WsServer),
}

pub fn run(args: &ServerArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(serve(args.kind))
}

async fn serve(kind: Kind) -> Result<()> {
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
    let mut pin = String::new();
    let running = match kind {
        Kind::EnetDtls | Kind::EnetPlain => {
            let mut config = EnetConfig {
                bind: "127.0.0.1:0".parse()?,
                // The bench opens every link from loopback: the per-IP cap is for the internet.
                max_sessions_per_ip: 1_000_000,
                max_sessions: 1_000_000,
                ..EnetConfig::default()
            };
            if kind == Kind::EnetDtls {
                let identity = ServerIdentity::self_signed(&["localhost", "127.0.0.1"])?;
                pin = ::transport::cert::hex(&identity.cert_sha256());
                config.identity = Some(identity);
            } else {
                config.plaintext_dev = true;
                // Without DTLS there is no record overhead: the ENet default MTU, as the C
                // reference server and the clients use.
                config.mtu = 1392;
            }
            Running::Enet(EnetServer::start(config, 0, tx, shutdown.clone()).await.context("starting the enet server")?)
        }
        Kind::Ws => {
            let config = WsConfig {
                bind: "127.0.0.1:0".parse()?,
                shards: 1,
                max_links_per_ip: 1_000_000,
                ..WsConfig::default()
            };
            Running::Ws(WsServer::start(config, 0, tx, shutdown.clone()).await.context("starting the websocket server")?)
        }
    };
    let (addr, sink) = match &running {
        Running::Enet(s) => (s.local_addr(), s.sink()),
        Running::Ws(s) => (s.local_addr(), s.sink()),
    };
    let echo = tokio::spawn(echo(rx, sink));
    println!("{}", serde_json::json!({ "addr": addr.to_string(), "pin": pin }));

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    // Commands until stdin closes (the orchestrator finished, or died).
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "stats" => {
                let stats = match &running {
                    Running::Enet(s) => {
                        let st = s.stats();
                        serde_json::json!({
                            "links": st.links, "sessions": st.sessions, "pending": st.pending_handshakes,
                            "hosts": st.hosts, "refused": st.sessions_refused, "expired": st.sessions_expired,
                        })
                    }
                    Running::Ws(s) => serde_json::json!({ "links": s.link_count() }),
                };
                println!("{stats}");
            }
            "quit" => break,
            other => println!("{}", serde_json::json!({ "error": format!("unknown command {other:?}") })),
        }
    }
    shutdown.cancel();
    let stop = async {
        match running {
            Running::Enet(s) => s.stopped().await,
            Running::Ws(s) => s.wait().await,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), stop).await;
    echo.abort();
    Ok(())
}

/// The echo app: each message goes back to its link with the same delivery. A refused send
/// (the link is gone or cannot keep up) is dropped: the client counts what comes back.
async fn echo(mut rx: mpsc::Receiver<LinkEvent>, sink: Arc<dyn LinkSink>) {
    let mut batch = Vec::with_capacity(ECHO_BATCH);
    while rx.recv_many(&mut batch, ECHO_BATCH).await > 0 {
        for event in batch.drain(..) {
            if let LinkEvent::Message { link, data, delivery } = event {
                let _ = sink.send(link, data, delivery);
            }
        }
    }
}
