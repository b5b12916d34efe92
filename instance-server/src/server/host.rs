//! [`InstanceHost`]: one ENet/DTLS server and one WebSocket server shared by every match of the
//! process, a router task that sends each new link to its match by the join token's match id,
//! and [`InstanceHost::create_match`], which the spawned-mode runner, the launcher's in-process
//! allocator and tests call.
//!
//! The router owns the link → match table and reads only a link's first message (`JoinMatch`);
//! everything after goes to the match's own task unread. No task per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use protocol::tavern::{ClientBodyT, InstanceAddressT};
use protocol::{Codec, ErrorCode, PROTOCOL_VERSION};
use token_service::{JoinVerifier, Keyring};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use transport::{
    Delivery, EnetConfig, EnetServer, LinkEvent, LinkId, LinkKind, Links, ServerIdentity,
    TransportError, WsConfig, WsServer,
};
use uuid::Uuid;

use crate::catalog::{Catalog, Deck};
use crate::rules::{Game, GameSetup, SetupError};
use crate::wire::MatchPlayers;

use super::config::MatchSettings;
use super::match_host::{MatchHost, MatchInput};
use super::metrics::InstanceMetrics;
use super::report::ResultReporter;
use super::token::{join_code, peek_match_id};

/// Inputs one match may have queued before the router refuses more for it.
const MATCH_INBOX: usize = 1024;
/// Link events the transports may have queued for the router.
const EVENT_QUEUE: usize = 16_384;
/// A link that sends no `JoinMatch` within this time is closed.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One match to host: who plays it, with which decks, from which seed.
#[derive(Clone, Debug)]
pub struct MatchSpec {
    pub match_id: Uuid,
    /// The game mode, carried into the result.
    pub mode: String,
    pub seed: u64,
    pub turn_ms: i64,
    /// Seat A, then seat B.
    pub seats: [SeatSpec; 2],
}

/// One player of a [`MatchSpec`].
#[derive(Clone, Debug)]
pub struct SeatSpec {
    pub user_id: Uuid,
    pub username: String,
    /// Checked by the host's catalog (see [`Catalog::build_deck`]).
    pub deck: Deck,
}

/// Where a match is played, as the matchmaker tells the players.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchAddress {
    pub instance_id: String,
    pub host: String,
    pub udp_port: u16,
    pub ws_port: u16,
    /// `ws://host:port/ws`.
    pub ws_url: String,
}

impl MatchAddress {
    /// The wire's `InstanceAddress`.
    pub fn to_wire(&self) -> InstanceAddressT {
        protocol::build!(InstanceAddressT {
            instance_id: self.instance_id.clone(),
            host: self.host.clone(),
            udp_port: self.udp_port,
            ws_url: Some(self.ws_url.clone()),
        })
    }
}

/// Why a match spec is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("a match needs 2 players, got {0}")]
    PlayerCount(usize),
    #[error("unknown starter deck {0:?}")]
    UnknownDeck(String),
    #[error("invalid deck: {0}")]
    Deck(String),
    #[error("both seats are user {0}")]
    SamePlayer(Uuid),
    #[error("game setup: {0}")]
    Setup(#[from] SetupError),
    #[error("bad assignment line: {0}")]
    Assignment(String),
}

/// Why the host could not start or take a match.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("match {0} is already hosted here")]
    DuplicateMatch(Uuid),
    #[error("host is full: {max} matches")]
    Full { max: usize },
    #[error("host is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// What starting a host needs besides its collaborators.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Bound into join tokens.
    pub instance_id: String,
    pub udp_bind: SocketAddr,
    pub ws_bind: SocketAddr,
    /// The host name given to players in [`MatchAddress`].
    pub public_host: String,
    pub identity: ServerIdentity,
    pub settings: MatchSettings,
    pub max_matches: usize,
    pub max_tracked_join_tokens: usize,
    /// Links (ENet/DTLS sessions, WebSocket connections) held at once from one IP address.
    pub max_links_per_ip: usize,
}

/// What the router and the match tasks share.
pub(crate) struct HostShared {
    pub links: Links,
    pub verifier: JoinVerifier,
    pub catalog: Arc<Catalog>,
    pub reporter: Arc<dyn ResultReporter>,
    pub metrics: InstanceMetrics,
    pub settings: MatchSettings,
    pub instance_id: String,
    pub codec: Codec,
    pub shutdown: CancellationToken,
    /// Where `game_started` and `game_ended` are recorded; `None` for hosts without a database
    /// (the bench), whose matches record no events.
    pub events: Option<outbox::Outbox>,
    matches: Mutex<HashMap<Uuid, mpsc::Sender<MatchInput>>>,
}

impl HostShared {
    pub(crate) fn remove_match(&self, id: &Uuid) {
        if let Ok(mut m) = self.matches.lock() {
            m.remove(id);
        }
    }

    fn match_inbox(&self, id: &Uuid) -> Option<mpsc::Sender<MatchInput>> {
        self.matches.lock().ok()?.get(id).cloned()
    }

    fn match_count(&self) -> usize {
        self.matches.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// A running host: transports, router and matches. Stops when the shutdown token fires.
pub struct InstanceHost {
    shared: Arc<HostShared>,
    matches: TaskTracker,
    address: MatchAddress,
    udp_addr: SocketAddr,
    ws_addr: SocketAddr,
    max_matches: usize,
    enet: EnetServer,
    ws: WsServer,
    router: tokio::task::JoinHandle<()>,
}

impl InstanceHost {
    /// Binds both transports and starts the router. Join tokens are verified with `keyring`.
    /// Its matches record no events: for embedders without a database (the bench); services use
    /// [`InstanceHost::start_with_outbox`].
    pub async fn start(
        config: HostConfig,
        keyring: Keyring,
        catalog: Arc<Catalog>,
        reporter: Arc<dyn ResultReporter>,
        metrics: InstanceMetrics,
        shutdown: CancellationToken,
    ) -> Result<InstanceHost, HostError> {
        Self::start_inner(config, keyring, catalog, reporter, metrics, None, shutdown).await
    }

    /// [`InstanceHost::start`] with every match recording `game_started` (once both players have
    /// joined) and `game_ended` in `outbox`, for its relay to publish.
    pub async fn start_with_outbox(
        config: HostConfig,
        keyring: Keyring,
        catalog: Arc<Catalog>,
        reporter: Arc<dyn ResultReporter>,
        metrics: InstanceMetrics,
        outbox: outbox::Outbox,
        shutdown: CancellationToken,
    ) -> Result<InstanceHost, HostError> {
        Self::start_inner(config, keyring, catalog, reporter, metrics, Some(outbox), shutdown).await
    }

    async fn start_inner(
        config: HostConfig,
        keyring: Keyring,
        catalog: Arc<Catalog>,
        reporter: Arc<dyn ResultReporter>,
        metrics: InstanceMetrics,
        outbox: Option<outbox::Outbox>,
        shutdown: CancellationToken,
    ) -> Result<InstanceHost, HostError> {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        // The transports stop after the matches have told their players the game is aborted
        // (see `drain_then_stop`), not at the same moment.
        let transport_shutdown = CancellationToken::new();
        let mut links = Links::new();
        let enet_config = EnetConfig {
            bind: config.udp_bind,
            identity: Some(config.identity.clone()),
            max_sessions_per_ip: config.max_links_per_ip.max(1),
            ..EnetConfig::default()
        };
        let enet =
            EnetServer::start(enet_config, links.next_index(), tx.clone(), transport_shutdown.clone()).await?;
        links.add(enet.sink());
        let ws_config = WsConfig {
            bind: config.ws_bind,
            max_links_per_ip: config.max_links_per_ip.max(1),
            ..WsConfig::default()
        };
        let ws = match WsServer::start(ws_config, links.next_index(), tx, transport_shutdown.clone()).await {
            Ok(ws) => ws,
            Err(e) => {
                transport_shutdown.cancel();
                return Err(e.into());
            }
        };
        links.add(ws.sink());
        let udp_addr = enet.local_addr();
        let ws_addr = ws.local_addr();
        let address = MatchAddress {
            instance_id: config.instance_id.clone(),
            host: config.public_host.clone(),
            udp_port: udp_addr.port(),
            ws_port: ws_addr.port(),
            ws_url: format!("ws://{}:{}/ws", config.public_host, ws_addr.port()),
        };
        let shared = Arc::new(HostShared {
            links,
            verifier: JoinVerifier::new(keyring, config.max_tracked_join_tokens),
            catalog,
            reporter,
            metrics,
            settings: config.settings,
            instance_id: config.instance_id,
            codec: Codec::default(),
            shutdown: shutdown.clone(),
            events: outbox,
            matches: Mutex::new(HashMap::new()),
        });
        let router = Router { shared: shared.clone(), routes: HashMap::new() };
        let span = tracing::info_span!("instance_router", instance_id = %shared.instance_id);
        let router = tokio::spawn(router.run(events).instrument(span));
        tokio::spawn(drain_then_stop(shared.clone(), shutdown.clone(), transport_shutdown));
        tracing::info!(udp = %udp_addr, ws = %ws_addr, "instance host listening");
        Ok(InstanceHost {
            shared,
            matches: TaskTracker::new(),
            address,
            udp_addr,
            ws_addr,
            max_matches: config.max_matches,
            enet,
            ws,
            router,
        })
    }

    /// Starts hosting a match: the game is dealt now and both players have the join window to
    /// connect with their join tokens. Must be called inside the tokio runtime.
    pub fn create_match(&self, spec: MatchSpec) -> Result<MatchAddress, HostError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(HostError::ShuttingDown);
        }
        let [a, b] = &spec.seats;
        if a.user_id == b.user_id {
            return Err(SpecError::SamePlayer(a.user_id).into());
        }
        let setup = GameSetup {
            seed: spec.seed,
            decks: [a.deck.clone(), b.deck.clone()],
            turn_ms: spec.turn_ms,
        };
        let now = service_runtime::now_ms();
        let (game, _first_events) =
            Game::new(self.shared.catalog.clone(), setup, now).map_err(SpecError::from)?;
        let players = MatchPlayers {
            match_id: uuid_to_wire(spec.match_id),
            seats: [
                (uuid_to_wire(a.user_id), a.username.clone()),
                (uuid_to_wire(b.user_id), b.username.clone()),
            ],
        };
        let (tx, inbox) = mpsc::channel(MATCH_INBOX);
        {
            let mut matches = self.shared.matches.lock().map_err(|_| HostError::ShuttingDown)?;
            if matches.contains_key(&spec.match_id) {
                return Err(HostError::DuplicateMatch(spec.match_id));
            }
            if matches.len() >= self.max_matches {
                return Err(HostError::Full { max: self.max_matches });
            }
            matches.insert(spec.match_id, tx);
        }
        self.shared.metrics.matches_active.inc();
        let host = MatchHost::new(
            self.shared.clone(),
            spec.match_id,
            spec.mode,
            players,
            [a.user_id, b.user_id],
            game,
            now,
        );
        let span = tracing::info_span!("match", match_id = %spec.match_id);
        self.matches.spawn(host.run(inbox).instrument(span));
        Ok(self.address.clone())
    }

    /// The game data every match of this host is played with.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.shared.catalog
    }

    /// Where every match of this host is played.
    pub fn address(&self) -> &MatchAddress {
        &self.address
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// Matches hosted now (until each one's links are closed).
    pub fn matches_active(&self) -> usize {
        self.shared.match_count()
    }

    /// Waits until every match created so far has ended and reported its result.
    pub async fn wait_matches(&self) {
        self.matches.close();
        self.matches.wait().await;
        self.matches.reopen();
    }

    /// After shutdown: waits for the matches (aborted and reported), the router and transports.
    pub async fn stopped(self) {
        self.matches.close();
        self.matches.wait().await;
        if let Err(e) = self.router.await {
            tracing::error!(error = %e, "instance router failed");
        }
        self.enet.stopped().await;
        self.ws.wait().await;
    }
}

/// Longest wait, after shutdown, for the matches to tell their players and close their links.
const DRAIN: Duration = Duration::from_secs(2);

/// After `shutdown`, waits until every match has closed its links (or [`DRAIN`] passes), then
/// stops the transports.
async fn drain_then_stop(shared: Arc<HostShared>, shutdown: CancellationToken, transports: CancellationToken) {
    shutdown.cancelled().await;
    let deadline = Instant::now() + DRAIN;
    while shared.match_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    transports.cancel();
}

pub(crate) fn uuid_to_wire(id: Uuid) -> protocol::tavern::UuidT {
    protocol::tavern::UuidT::from_bytes(id.into_bytes())
}

/// Where a link's messages go.
enum Route {
    /// Connected; its first message must be `JoinMatch`.
    Pending { kind: LinkKind, since: Instant },
    /// Joined (or joining) a match.
    Match(mpsc::Sender<MatchInput>),
}

/// The owner of the link → match table.
struct Router {
    shared: Arc<HostShared>,
    routes: HashMap<LinkId, Route>,
}

impl Router {
    async fn run(mut self, mut events: mpsc::Receiver<LinkEvent>) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    // Every transport has stopped (after shutdown).
                    None => break,
                },
                _ = sweep.tick() => self.sweep_pending(),
            }
        }
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected(info) => {
                self.routes.insert(info.link, Route::Pending { kind: info.kind, since: Instant::now() });
            }
            LinkEvent::Message { link, data, .. } => match self.routes.get(&link) {
                None => {}
                Some(Route::Pending { kind, .. }) => {
                    let kind = *kind;
                    self.first_message(link, kind, &data);
                }
                Some(Route::Match(inbox)) => match inbox.try_send(MatchInput::Message { link, data }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(%link, "match inbox full: closing the link");
                        self.routes.remove(&link);
                        self.refuse(link, 0, ErrorCode::RateLimited, "too many messages");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.routes.remove(&link);
                        self.refuse(link, 0, ErrorCode::MatchNotFound, "the match is over");
                    }
                },
            },
            LinkEvent::Disconnected { link, reason } => {
                tracing::debug!(%link, ?reason, "link closed");
                if let Some(Route::Match(inbox)) = self.routes.remove(&link) {
                    let input = MatchInput::Disconnected { link };
                    if let Err(mpsc::error::TrySendError::Full(input)) = inbox.try_send(input) {
                        // Never lose a disconnect: the rejoin window depends on it.
                        tokio::spawn(async move {
                            let _ = inbox.send(input).await;
                        });
                    }
                }
            }
        }
    }

    fn first_message(&mut self, link: LinkId, kind: LinkKind, data: &[u8]) {
        let metrics = &self.shared.metrics;
        let message = match self.shared.codec.decode_client(data) {
            Ok(m) => m,
            Err(e) => {
                metrics.malformed.inc();
                self.routes.remove(&link);
                return self.refuse(link, 0, e.code(), &e.to_string());
            }
        };
        let cid = message.cid;
        let ClientBodyT::JoinMatch(join) = message.body else {
            metrics.unexpected.inc();
            self.routes.remove(&link);
            return self.refuse(link, cid, ErrorCode::HelloRequired, "the first message must be JoinMatch");
        };
        if join.protocol_version != PROTOCOL_VERSION {
            self.routes.remove(&link);
            let text = format!("protocol version {} is not {PROTOCOL_VERSION}", join.protocol_version);
            return self.refuse(link, cid, ErrorCode::UnsupportedVersion, &text);
        }
        let inbox = peek_match_id(&join.join_token).and_then(|id| self.shared.match_inbox(&id));
        let Some(inbox) = inbox else {
            // Not a match of this host: let the verifier say why (forged, expired, or valid for
            // a match elsewhere). Checking against the nil match never burns a real token.
            self.routes.remove(&link);
            let code = match self.shared.verifier.verify(
                &join.join_token,
                Uuid::nil(),
                &self.shared.instance_id,
                service_runtime::now_ms(),
            ) {
                Err(e) => join_code(&e),
                Ok(_) => ErrorCode::JoinTokenWrongMatch,
            };
            return self.refuse(link, cid, code, code.message());
        };
        match inbox.try_send(MatchInput::Join { link, kind, cid, token: join.join_token }) {
            Ok(()) => {
                self.routes.insert(link, Route::Match(inbox));
            }
            Err(_) => {
                self.routes.remove(&link);
                self.refuse(link, cid, ErrorCode::Unavailable, "the match cannot take the link now");
            }
        }
    }

    fn sweep_pending(&mut self) {
        let now = Instant::now();
        let stale: Vec<LinkId> = self
            .routes
            .iter()
            .filter_map(|(link, r)| match r {
                Route::Pending { since, .. } if now.duration_since(*since) > FIRST_MESSAGE_TIMEOUT => Some(*link),
                _ => None,
            })
            .collect();
        for link in stale {
            self.routes.remove(&link);
            self.refuse(link, 0, ErrorCode::HelloRequired, "no JoinMatch in time");
        }
    }

    fn refuse(&self, link: LinkId, cid: u32, code: ErrorCode, message: &str) {
        self.shared.metrics.joins.with_label_values(&[code.name()]).inc();
        let bytes = protocol::closing_error_message(cid, code, message);
        let _ = self.shared.links.send(link, Bytes::from(bytes), Delivery::Reliable);
        self.shared.links.close(link, code.code());
    }
}
