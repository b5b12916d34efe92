//! Client helpers shared by the GCS's integration tests: one link of either kind (ENet/DTLS or
//! WebSocket), typed send and receive, hello, and bounded waits.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use protocol::tavern::{ClientBodyT, ClientMessageT, HelloT, PingT, PongT, ServerBodyT, ServerMessageT, WelcomeT};
use protocol::{Codec, ErrorCode, Limits, PROTOCOL_VERSION, build};
use transport::{ClientEvent, CloseReason, Delivery, EnetClient, WsClient};

/// The backends of a node alone in this process: an in-process cluster, chat on `db`, no login,
/// matchmaker or outbox.
pub fn alone(db: &migrations::Db, node_id: &str) -> Result<gcs::Backends> {
    Ok(gcs::Backends {
        node_id: node_id.to_owned(),
        cluster: gcs::Cluster::in_process(bus::Bus::in_process(), &bus::InProcessStore::default(), node_id)?,
        chat: gcs::chat_store::ChatStore::new(db.clone()),
        social: None,
        matchmaker: None,
        outbox: None,
    })
}

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// One client link of either kind.
pub enum Client {
    Enet(EnetClient),
    Ws(WsClient),
}

impl Client {
    pub fn send_raw(&mut self, data: Vec<u8>) -> Result<()> {
        let data = Bytes::from(data);
        match self {
            Client::Enet(c) => c.send(data, Delivery::Reliable)?,
            Client::Ws(c) => c.send(data, Delivery::Reliable)?,
        }
        Ok(())
    }

    pub fn send(&mut self, message: &ClientMessageT) -> Result<()> {
        let bytes = Codec::new(Limits::default()).encode(message)?;
        self.send_raw(bytes)
    }

    pub async fn event(&mut self) -> Result<ClientEvent> {
        let event = match self {
            Client::Enet(c) => within(c.recv()).await?,
            Client::Ws(c) => within(c.recv()).await?,
        };
        event.context("client events ended")
    }

    pub async fn recv(&mut self) -> Result<ServerMessageT> {
        match self.event().await? {
            ClientEvent::Message { data, .. } => Ok(Codec::new(Limits::default()).decode_server(&data)?),
            ClientEvent::Closed(reason) => bail!("expected a message, the link closed: {reason:?}"),
        }
    }

    /// Expects `Error { code, closes_link }` and then the link closing with `code`.
    pub async fn refused(&mut self, code: ErrorCode) -> Result<()> {
        let message = self.recv().await?;
        let error = message.body.as_error().with_context(|| format!("expected an error, got {message:?}"))?;
        assert_eq!((error.code, error.closes_link), (code.code(), true), "{error:?}");
        self.closed(code).await
    }

    /// Skips messages until the link closes, and checks the close code.
    pub async fn closed(&mut self, code: ErrorCode) -> Result<()> {
        for _ in 0..10_000 {
            if let ClientEvent::Closed(reason) = self.event().await? {
                assert_eq!(reason, CloseReason::Remote { code: code.code() });
                return Ok(());
            }
        }
        bail!("the link never closed")
    }

    pub async fn hello(&mut self, token: &str) -> Result<WelcomeT> {
        self.send(&hello(PROTOCOL_VERSION, Some(token), None))?;
        welcome(self.recv().await?)
    }

    pub async fn ping(&mut self, cid: u32) -> Result<PongT> {
        self.send(&ping(cid, i64::from(cid)))?;
        let message = self.recv().await?;
        assert_eq!(message.cid, cid);
        Ok(message.body.as_pong().with_context(|| format!("expected a pong, got {message:?}"))?.clone())
    }
}

pub fn hello(version: u16, token: Option<&str>, resume: Option<&str>) -> ClientMessageT {
    let hello = build!(HelloT {
        protocol_version: version,
        token: token.map(str::to_owned),
        resume_token: resume.map(str::to_owned),
    });
    ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello)))
}

pub fn ping(cid: u32, client_time_ms: i64) -> ClientMessageT {
    ClientMessageT::request(cid, ClientBodyT::Ping(Box::new(build!(PingT { client_time_ms }))))
}

pub fn welcome(message: ServerMessageT) -> Result<WelcomeT> {
    match message.body {
        ServerBodyT::Welcome(w) => Ok(*w),
        other => bail!("expected welcome, got {other:?}"),
    }
}

pub async fn within<F: std::future::Future>(f: F) -> Result<F::Output> {
    tokio::time::timeout(WAIT, f).await.context("timed out")
}

