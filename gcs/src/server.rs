//! The GCS driver: starts the ENet/DTLS and WebSocket listeners on one shared `Links`, and runs
//! the one owner task that feeds the session core (link events, the revocation bus, commands
//! from other parts of the process, a clock tick) and executes its actions.
//!
//! The owner task holds no event sender of its own, so it ends when both transports have
//! stopped (after the shutdown token fires) and every link has reported `Disconnected`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::tavern::{ServerMessageT, ServiceBodyT, ServiceMessageT};
use protocol::tavern::ServiceRole;
use transport::service_link::{ClientConfig, ServiceClient};
use protocol::{Codec, Limits};
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

use crate::chat_store::ChatStore;
use crate::cluster::{Cluster, ClusterError};
use crate::social::SocialClient;
use crate::config::GcsConfig;
use crate::effects::{Backends, Completion, Runner};
use crate::hub::{BusMessage, Effect, Hub, HubStats};
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
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// What other parts of the process ask of the owner task.
#[derive(Debug)]
enum Command {
    Push { user_id: Uuid, message: ServerMessageT },
    Stats(oneshot::Sender<(SessionStats, HubStats)>),
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

    /// The session core's and the hub's current counters.
    pub async fn stats(&self) -> Result<(SessionStats, HubStats), ServerError> {
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
        backends: Backends,
        matchmaker_pushes: Option<mpsc::Receiver<ServiceMessageT>>,
        registry: &prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Result<GcsServer, ServerError> {
        let (events_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let mut links = Links::new();
        let enet_config = EnetConfig {
            bind: config.enet_bind,
            identity: Some(identity),
            max_sessions: config.max_enet_links,
            max_sessions_per_ip: config.max_enet_links_per_ip,
            ..EnetConfig::default()
        };
        let enet = EnetServer::start(enet_config, links.next_index(), events_tx.clone(), shutdown.clone()).await?;
        links.add(enet.sink());
        let ws_config = WsConfig {
            bind: config.ws_bind,
            path: config.ws_path.clone(),
            max_links: config.max_ws_links,
            max_links_per_ip: config.max_ws_links_per_ip,
            ..WsConfig::default()
        };
        let ws = WsServer::start(ws_config, links.next_index(), events_tx, shutdown.clone()).await?;
        links.add(ws.sink());
        let revocations = verifier.revocations().subscribe();
        let core = SessionCore::new(config.session.clone(), verifier, Box::new(StdRng::from_entropy()), service_runtime::now_ms());
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let (completions_tx, completions) = mpsc::channel(COMMAND_CAPACITY);
        let codec = Codec::new(Limits::default());
        let node_id = backends.node_id.clone();
        let matchmaker = backends.matchmaker.clone();
        backends.cluster.subscribe(&node_id, completions_tx.clone(), shutdown.clone()).await?;
        if let (Some(pushes), Some(client)) = (matchmaker_pushes, matchmaker) {
            tokio::spawn(relay_matchmaker_pushes(pushes, client, completions_tx.clone()));
        }
        let runner = Runner::start(backends, completions_tx, codec.clone(), shutdown.clone());
        let hub = Hub::new(node_id, config.hub.clone(), service_runtime::now_ms());
        let owner = Owner { core, hub, runner, links, codec, metrics: Metrics::new(registry) };
        let owner = tokio::spawn(owner.run(events, commands, completions, revocations));
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

/// Runs the GCS as its own process: token keys, revocation bus, TLS identity, the database
/// (chat history, outbox), the cluster (Redis or in-process), login and the matchmaker, both
/// listeners and the admin port, until `shutdown` fires.
pub async fn run(config: GcsConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let keyring = Keyring::load_or_create(&config.key_file)?;
    let revocations: Arc<dyn Revocations> = match &config.redis_url {
        Some(url) => Arc::new(RedisRevocations::connect(url, &config.redis_prefix).await?),
        None => Arc::new(InProcessRevocations::new()),
    };
    let verifier = SessionVerifier::new(keyring, revocations.clone());
    let identity = ServerIdentity::load_or_create(&config.identity_dir)?;
    let node_id = if config.node_id.is_empty() { format!("gcs-{}", Uuid::new_v4().simple()) } else { config.node_id.clone() };
    let db = migrations::Db::open(&config.database_url, &migrations::PoolConfig::default()).await?;
    let cluster = match &config.redis_url {
        Some(url) => {
            let ttl = Duration::from_millis(config.directory_ttl_ms);
            Cluster::redis(url, &config.redis_prefix, &node_id, ttl).await?
        }
        None => Cluster::in_process(bus::Bus::in_process(), &bus::InProcessStore::default(), &node_id)?,
    };
    let social = match config.login_url.as_str() {
        "" => {
            tracing::warn!("no login_url: friends and blocks are unknown to this node");
            None
        }
        url => Some(SocialClient::new(url, &config.service_token)?),
    };
    let (matchmaker, pushes) = match config.matchmaker_addr.as_str() {
        "" => {
            tracing::warn!("no matchmaker_addr: queueing is unavailable");
            (None, None)
        }
        addr => {
            let client_config = ClientConfig::new(addr, node_id.clone(), ServiceRole::Gcs, config.service_token.clone());
            let (client, pushes) = ServiceClient::start(client_config, shutdown.clone());
            (Some(client), Some(pushes))
        }
    };
    let outbox = outbox::Outbox::new(db.clone(), "gcs");
    // Events go to the same Redis as the bus unless configured apart.
    let mut events = config.events.clone();
    if events.redis_url.is_none() {
        events.redis_url.clone_from(&config.redis_url);
    }
    let relay = outbox::Relay::spawn(outbox.clone(), events.sink()?, shutdown.clone());
    let chat = ChatStore::new(db);
    tokio::spawn(expire_chat(chat.clone(), config.chat_retention_days, shutdown.clone()));
    let backends = Backends { node_id, cluster: cluster.clone(), chat, social, matchmaker, outbox: Some(outbox) };
    let registry = prometheus::Registry::new();
    let server = GcsServer::start(&config, identity, verifier, backends, pushes, &registry, shutdown.clone()).await?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_bind).await?;
    let revocations_ready: ReadyCheck = Arc::new(move || {
        let revocations = revocations.clone();
        Box::pin(async move { revocations.ready() })
    });
    let bus_ready: ReadyCheck = Arc::new(move || {
        let cluster = cluster.clone();
        Box::pin(async move { if cluster.ready() { Ok(()) } else { Err("bus not connected".to_owned()) } })
    });
    let admin = Admin::new(registry).check("revocations", revocations_ready).check("bus", bus_ready);
    let admin_task = tokio::spawn(admin.serve(admin_listener, shutdown));
    server.stopped().await;
    admin_task.await??;
    let _ = relay.await;
    Ok(())
}

/// Deletes chat history older than `retention_days`, once an hour, until `shutdown` (every
/// process that runs a GCS spawns it once).
pub async fn expire_chat(chat: ChatStore, retention_days: u32, shutdown: CancellationToken) {
    let retention_ms = i64::from(retention_days) * 86_400_000;
    let mut every = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match chat.delete_older_than(service_runtime::now_ms() - retention_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired chat history"),
            Err(e) => tracing::warn!(error = %e, "chat retention failed"),
        }
    }
}

/// The state of the owner task.
struct Owner {
    core: SessionCore,
    hub: Hub,
    runner: Runner,
    links: Links,
    codec: Codec,
    metrics: Metrics,
}

impl Owner {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut completions: mpsc::Receiver<Completion>,
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
                        let _ = reply.send((self.core.stats(), self.hub.stats()));
                        Vec::new()
                    }
                    None => {
                        commands_open = false;
                        Vec::new()
                    }
                },
                Some(completion) = completions.recv() => self.completion(completion, now),
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
                    self.hub.tick(now);
                    self.core.tick(now)
                }
            };
            self.execute(actions, now);
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
                    if let Handled::Request { user_id, cid, body, .. } = handled {
                        let effects = self.hub.request(user_id, cid, body, now);
                        actions.extend(self.effects(effects, now));
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

    /// A finished effect or a bus message.
    fn completion(&mut self, completion: Completion, now: i64) -> Vec<Action> {
        let effects = match completion {
            Completion::Push(messages) => {
                return messages.into_iter().flat_map(|(user, message)| self.core.push(user, message)).collect();
            }
            Completion::Social { user, social, reply } => self.hub.social_loaded(user, social, reply),
            Completion::Queue { user, cid, op, answer } => self.hub.queue_answer(user, cid, &op, answer),
            Completion::Bus(BusMessage::Deliver { to, frame }) => match self.codec.decode_server(&frame) {
                Ok(message) => self.hub.deliver(&to, &message),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable frame routed from another node");
                    Vec::new()
                }
            },
            Completion::Bus(message) => self.hub.bus(message),
            Completion::Deliver { to, message } => self.hub.deliver(&to, &message),
            Completion::MatchFound(push) => self.hub.match_found(&push),
            Completion::TicketExpired { ticket, users } => self.hub.ticket_expired(ticket, &users),
            Completion::MatchEnded { users } => self.hub.match_ended(&users),
        };
        self.effects(effects, now)
    }

    /// Carries out the hub's effects: pushes and kicks here, IO on the runner.
    fn effects(&mut self, effects: Vec<Effect>, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        for effect in effects {
            match effect {
                Effect::Push { user, message } => actions.extend(self.core.push(user, message)),
                Effect::Route { user, message } if self.hub.is_local(user) => actions.extend(self.core.push(user, message)),
                Effect::Kick { user } => actions.extend(self.core.replaced_elsewhere(user, now)),
                effect => self.runner.run(effect),
            }
        }
        actions
    }

    /// Executes the session core's actions; session starts and ends feed the hub, whose
    /// effects may produce more actions (executed in the same pass, in order).
    fn execute(&mut self, actions: Vec<Action>, now: i64) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let more = match action {
                Action::SessionStarted { user_id, session_id, username } => {
                    tracing::info!(%user_id, %session_id, %username, "session started");
                    let effects = self.hub.session_started(user_id, session_id, &username, now);
                    self.effects(effects, now)
                }
                Action::SessionEnded { user_id, session_id } => {
                    tracing::info!(%user_id, %session_id, "session ended");
                    let effects = self.hub.session_ended(user_id, session_id);
                    self.effects(effects, now)
                }
                action => {
                    self.execute_io(action);
                    Vec::new()
                }
            };
            queue.extend(more);
        }
    }

    fn execute_io(&self, action: Action) {
        for action in [action] {
            match action {
                Action::Send { link, message } => match self.codec.encode(&message) {
                    Ok(bytes) => match self.links.send(link, Bytes::from(bytes), Delivery::Reliable) {
                        Ok(()) | Err(SendError::Closed(_)) => {}
                        Err(e) => tracing::info!(%link, error = %e, "send failed"),
                    },
                    Err(e) => tracing::error!(%link, error = %e, "cannot encode a server message"),
                },
                Action::Close { link, code } => self.links.close(link, code),
                Action::SessionStarted { .. } | Action::SessionEnded { .. } => {}
            }
        }
    }
}

/// Acknowledges the matchmaker's pushes and hands them to the owner task.
async fn relay_matchmaker_pushes(
    mut pushes: mpsc::Receiver<ServiceMessageT>,
    client: ServiceClient,
    completions: mpsc::Sender<Completion>,
) {
    while let Some(push) = pushes.recv().await {
        let completion = match push.body {
            ServiceBodyT::MatchFoundPush(found) => Some(Completion::MatchFound(found)),
            ServiceBodyT::TicketExpired(expired) => Some(Completion::TicketExpired {
                ticket: Uuid::from_bytes(expired.ticket_id.bytes),
                users: expired.user_ids.iter().flatten().map(|u| Uuid::from_bytes(u.bytes)).collect(),
            }),
            ServiceBodyT::MatchEnded(ended) => Some(Completion::MatchEnded {
                users: ended.user_ids.iter().flatten().map(|u| Uuid::from_bytes(u.bytes)).collect(),
            }),
            other => {
                tracing::debug!(?other, "matchmaker push ignored");
                None
            }
        };
        let Some(completion) = completion else { continue };
        if completions.send(completion).await.is_err() {
            break;
        }
        if push.cid != 0
            && let Err(e) = client.send(&ServiceMessageT::ack(push.cid))
        {
            tracing::warn!(error = %e, "could not acknowledge a matchmaker push");
        }
    }
}
