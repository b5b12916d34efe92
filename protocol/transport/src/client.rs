//! One client link of either kind (ENet/DTLS or WebSocket) behind one type, speaking typed
//! protocol messages: what tests, the bench and tools use to talk to a GCS or an instance
//! server. Every wait is bounded by the timeout the caller gives.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use protocol::tavern::{ClientBodyT, ClientMessageT, ServerMessageT};
use protocol::{Codec, DecodeError, EncodeError};

use crate::enet::{ClientTrust, EnetClient, EnetClientConfig};
use crate::error::TransportError;
use crate::link::{ClientEvent, CloseReason, Delivery, SendError};
use crate::ws::WsClient;

/// Messages skipped while waiting for one answer, at most (pushes in between).
const MAX_SKIPPED: usize = 100_000;

/// Why a typed client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(#[from] TransportError),
    #[error("send: {0}")]
    Send(#[from] SendError),
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("the link closed: {0:?}")]
    Closed(CloseReason),
    #[error("nothing arrived within {0:?}")]
    Timeout(Duration),
    #[error("no answer to cid {0} among {MAX_SKIPPED} messages")]
    NoAnswer(u32),
}

/// A client link of either transport.
pub enum Client {
    Enet(EnetClient),
    Ws(WsClient),
}

impl Client {
    /// Connects over ENet inside DTLS.
    pub async fn enet(addr: SocketAddr, trust: ClientTrust, timeout: Duration) -> Result<Client, ClientError> {
        Ok(Client::Enet(EnetClient::connect(EnetClientConfig::new(addr, trust), timeout).await?))
    }

    /// Connects over WebSocket (`ws://` or `wss://` with the system's roots).
    pub async fn ws(url: &str, timeout: Duration) -> Result<Client, ClientError> {
        Ok(Client::Ws(WsClient::connect(url, None, timeout).await?))
    }

    /// `"enet"` or `"ws"`, for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Client::Enet(_) => "enet",
            Client::Ws(_) => "ws",
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Client::Enet(c) => c.local_addr(),
            Client::Ws(c) => c.local_addr(),
        }
    }

    /// Sends raw bytes (reliable), e.g. to test how a server takes garbage.
    pub fn send_bytes(&mut self, data: Bytes) -> Result<(), ClientError> {
        match self {
            Client::Enet(c) => c.send(data, Delivery::Reliable)?,
            Client::Ws(c) => c.send(data, Delivery::Reliable)?,
        }
        Ok(())
    }

    pub fn send(&mut self, message: &ClientMessageT) -> Result<(), ClientError> {
        let bytes = Codec::default().encode(message)?;
        self.send_bytes(Bytes::from(bytes))
    }

    /// Sends `body` as a request with `cid`.
    pub fn send_request(&mut self, cid: u32, body: ClientBodyT) -> Result<(), ClientError> {
        self.send(&ClientMessageT::request(cid, body))
    }

    /// The next link event, or `None` once the link is gone.
    pub async fn event(&mut self, timeout: Duration) -> Result<Option<ClientEvent>, ClientError> {
        let next = match self {
            Client::Enet(c) => tokio::time::timeout(timeout, c.recv()).await,
            Client::Ws(c) => tokio::time::timeout(timeout, c.recv()).await,
        };
        next.map_err(|_| ClientError::Timeout(timeout))
    }

    /// The next server message.
    pub async fn recv(&mut self, timeout: Duration) -> Result<ServerMessageT, ClientError> {
        match self.event(timeout).await? {
            Some(ClientEvent::Message { data, .. }) => Ok(Codec::default().decode_server(&data)?),
            Some(ClientEvent::Closed(reason)) => Err(ClientError::Closed(reason)),
            None => Err(ClientError::Closed(CloseReason::Local { code: 0 })),
        }
    }

    /// Sends a request and returns its answer, handing the messages that arrive meanwhile (pushes)
    /// to `pushes`. `timeout` bounds each wait.
    pub async fn request(
        &mut self,
        cid: u32,
        body: ClientBodyT,
        timeout: Duration,
        mut pushes: impl FnMut(ServerMessageT),
    ) -> Result<ServerMessageT, ClientError> {
        self.send_request(cid, body)?;
        for _ in 0..MAX_SKIPPED {
            let message = self.recv(timeout).await?;
            if message.cid == cid {
                return Ok(message);
            }
            pushes(message);
        }
        Err(ClientError::NoAnswer(cid))
    }

    pub async fn close(&mut self, code: u16) {
        match self {
            Client::Enet(c) => c.close(code).await,
            Client::Ws(c) => c.close(code).await,
        }
    }
}
