//! The GCS driver: starts the ENet/DTLS and WebSocket listeners on one shared `Links`, and runs
//! the one owner task that feeds the session core (link events, the revocation bus, commands
//! from other parts of the process, a clock tick) and executes its actions.
//!
//! The owner task holds no event sender of its own, so it ends when both transports have
//! stopped (after the shutdown token fires) and every link has reported `Disconnected`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::tavern::ServerMessageT;
use protocol::{Codec, ErrorCode, Limits};
use rand::SeedableRng;
use rand::rngs::StdRng;
use service_runtime::admin::{Admin, ReadyCheck};
use token_service::{InProcessRevocations, Keyring, RedisRevocations, Revocation, Revocations, SessionVerifier, TokenError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{
    Delivery, EnetConfig, EnetServer, LinkEvent, Links, SendError, ServerIdentity, TransportError, WsConfig, WsServer,
};
use uuid::Uuid;

use crate::config::GcsConfig;
use crate::metrics::Metrics;
use crate::session::{Action, Handled, SessionCore, SessionStats};

/// How often the session core is ticked (dead links, hello and grace timeouts).
const TICK: Duration = Duration::from_millis(250);

/// Capacity of the command channel into the owner task.
const COMMAND_CAPACITY: usize = 4096;

/// Why the GCS could not start or a command could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("tokens: {0}")]
    Token(#[from] TokenError),
    #[error("the gcs owner task has stopped")]
    Stopped,
}

/// What other parts of the process ask of the owner task.
#[derive(Debug)]
enum Command {
    Push { user_id: Uuid, message: ServerMessageT },
    Stats(oneshot::Sender<SessionStats>),
}

/// A cloneable handle into a running GCS.
#[derive(Clone, Debug)]
pub struct GcsHandle {
    commands: mpsc::Sender<Command>,
}

impl GcsHandle {
    /// Pushes `message` to `user_id`: delivered on the live link, kept for a resume while the
    /// session is detached, dropped when the user has no session on this node.
    pub async fn push(&self, user_id: Uuid, message: ServerMessageT) -> Result<(), ServerError> {
        self.commands.send(Command::Push { user_id, message }).await.map_err(|_| ServerError::Stopped)
    }

    /// The session core's current counters.
    pub async fn stats(&self) -> Result<SessionStats, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats(tx)).await.map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)
    }
}

/// A running GCS: both listeners and the owner task.
pub struct GcsServer {
    enet: EnetServer,
    ws: WsServer,
    handle: GcsHandle,
    owner: JoinHandle<()>,
}

impl GcsServer {
    /// Binds both listeners from `config` and spawns the owner task. Cancelling `shutdown`
    /// closes every link with `ShuttingDown` and stops everything; [`GcsServer::stopped`] waits.
    pub async fn start(
        config: &GcsConfig,
        identity: ServerIdentity,
        verifier: SessionVerifier,
        registry: &prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Result<GcsServer, ServerError> {
        let (events_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let mut links = Links::new();
        let enet_config = EnetConfig { bind: config.enet_bind, identity: Some(identity), ..EnetConfig::default() };
        let enet = EnetServer::start(enet_config, links.next_index(), events_tx.clone(), shutdown.clone()).await?;
        links.add(enet.sink());
        let ws_config = WsConfig { bind: config.ws_bind, path: config.ws_path.clone(), ..WsConfig::default() };
        let ws = WsServer::start(ws_config, links.next_index(), events_tx, shutdown.clone()).await?;
        links.add(ws.sink());
        let revocations = verifier.revocations().subscribe();
        let core = SessionCore::new(config.session.clone(), verifier, Box::new(StdRng::from_entropy()), service_runtime::now_ms());
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let owner = Owner { core, links, codec: Codec::new(Limits::default()), metrics: Metrics::new(registry) };
        let owner = tokio::spawn(owner.run(events, commands, revocations));
        tracing::info!(enet = %enet.local_addr(), ws = %ws.local_addr(), "gcs listening");
        Ok(GcsServer { enet, ws, handle: GcsHandle { commands: commands_tx }, owner })
    }

    /// The UDP address of the ENet/DTLS listener.
    pub fn enet_addr(&self) -> std::net::SocketAddr {
        self.enet.local_addr()
    }

    /// The TCP address of the WebSocket listener.
    pub fn ws_addr(&self) -> std::net::SocketAddr {
        self.ws.local_addr()
    }

    pub fn handle(&self) -> GcsHandle {
        self.handle.clone()
    }

    /// Resolves when both listeners and the owner task have finished (after shutdown).
    pub async fn stopped(self) {
        let GcsServer { enet, ws, handle, owner } = self;
        drop(handle);
        enet.stopped().await;
        ws.wait().await;
        if let Err(e) = owner.await {
            tracing::error!(error = %e, "gcs owner task failed");
        }
    }
}

/// Runs the GCS as its own process: token keys, revocation bus, TLS identity, both listeners
/// and the admin port, until `shutdown` fires.
pub async fn run(config: GcsConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let keyring = Keyring::load_or_create(&config.key_file)?;
    let revocations: Arc<dyn Revocations> = match &config.redis_url {
        Some(url) => Arc::new(RedisRevocations::connect(url, &config.redis_prefix).await?),
        None => Arc::new(InProcessRevocations::new()),
    };
    let verifier = SessionVerifier::new(keyring, revocations.clone());
    let identity = ServerIdentity::load_or_create(&config.identity_dir)?;
    let registry = prometheus::Registry::new();
    let server = GcsServer::start(&config, identity, verifier, &registry, shutdown.clone()).await?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_bind).await?;
    let revocations_ready: ReadyCheck = Arc::new(move || {
        let revocations = revocations.clone();
        Box::pin(async move { revocations.ready() })
    });
    let admin = Admin::new(registry).check("revocations", revocations_ready);
    let admin_task = tokio::spawn(admin.serve(admin_listener, shutdown));
    server.stopped().await;
    admin_task.await??;
    Ok(())
}

/// The state of the owner task.
struct Owner {
    core: SessionCore,
    links: Links,
    codec: Codec,
    metrics: Metrics,
}

impl Owner {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut revocations: broadcast::Receiver<Revocation>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        let mut revocations_open = true;
        loop {
            let now = service_runtime::now_ms();
            let actions = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.event(event, now),
                    None => break,
                },
                command = commands.recv(), if commands_open => match command {
                    Some(Command::Push { user_id, message }) => self.core.push(user_id, message),
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.core.stats());
                        Vec::new()
                    }
                    None => {
                        commands_open = false;
                        Vec::new()
                    }
                },
                revocation = revocations.recv(), if revocations_open => match revocation {
                    Ok(revocation) => self.core.revoke(&revocation, now),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "revocation subscription lagged: rechecking every session");
                        self.core.recheck_revocations(now)
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        revocations_open = false;
                        Vec::new()
                    }
                },
                _ = tick.tick() => {
                    self.metrics.observe(self.core.stats());
                    self.core.tick(now)
                }
            };
            self.execute(actions);
        }
        tracing::info!("gcs owner task stopped");
    }

    fn event(&mut self, event: LinkEvent, now: i64) -> Vec<Action> {
        match event {
            LinkEvent::Connected(info) => {
                tracing::debug!(link = %info.link, remote = %info.remote, kind = info.kind.label(), "link connected");
                self.core.link_opened(info.link, now)
            }
            LinkEvent::Message { link, data, .. } => match self.codec.decode_client(&data) {
                Ok(message) => {
                    let (mut actions, handled) = self.core.message(link, message, now);
                    if let Handled::Request { link, cid, .. } = handled {
                        // Presence, chat and the queue relay are not built yet.
                        actions.push(Action::Send {
                            link,
                            message: ServerMessageT::error(cid, ErrorCode::Unavailable, "not available on this server yet"),
                        });
                    }
                    actions
                }
                Err(e) => {
                    tracing::debug!(%link, error = %e, "malformed frame");
                    self.core.malformed(link, e.code(), &e.to_string(), now)
                }
            },
            LinkEvent::Disconnected { link, reason } => {
                tracing::debug!(%link, ?reason, "link disconnected");
                self.core.link_closed(link, now)
            }
        }
    }

    fn execute(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { link, message } => match self.codec.encode(&message) {
                    Ok(bytes) => match self.links.send(link, Bytes::from(bytes), Delivery::Reliable) {
                        Ok(()) | Err(SendError::Closed(_)) => {}
                        Err(e) => tracing::info!(%link, error = %e, "send failed"),
                    },
                    Err(e) => tracing::error!(%link, error = %e, "cannot encode a server message"),
                },
                Action::Close { link, code } => self.links.close(link, code),
                Action::SessionStarted { user_id, session_id, username } => {
                    tracing::info!(%user_id, %session_id, %username, "session started");
                }
                Action::SessionEnded { user_id, session_id } => {
                    tracing::info!(%user_id, %session_id, "session ended");
                }
            }
        }
    }
}
