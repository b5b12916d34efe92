//! The matchmaker service: the service link, the shards around the matching core, allocation,
//! join tokens and results (DESIGN.md §5).
//!
//! # Flow
//!
//! 1. A GCS node sends `EnqueueTicket` over its service link. The link handler ([`handler`])
//!    checks it, reserves its users (one live ticket per user), reads their ratings from the
//!    store, records the ticket in the concurrent index (a `DashMap` by ticket id) and pushes it
//!    into its shard's lock-free [`Intake`](crate::Intake); it answers `TicketStatus` at once.
//! 2. Each shard ([`shard`]) is one owner task with one [`Matcher`](crate::Matcher). Every tick
//!    (default 100 ms) it drains its intake, ticks the matcher with a [`Gate`](crate::core::Gate)
//!    that flips each ticket's state waiting → matched in the index (a cancel flips waiting →
//!    cancelled; exactly one wins), and hands each match to a bounded channel. It never waits on
//!    allocation or the database: a full channel re-queues the match at once.
//! 3. The dispatcher ([`dispatch`]) allocates an instance for each match (several at once,
//!    bounded), mints one join token per player, and pushes `MatchFoundPush` to the GCS node
//!    that sent each ticket, retrying until that node acknowledges. On any allocation failure
//!    the tickets go back to their shard with their original enqueue time, and their nodes get
//!    an unsolicited `TicketStatus { state: Searching }` push so players are told. A delivered
//!    match is recorded as a `match_found` event in the outbox (`outbox` crate); [`run`] runs
//!    the relay that publishes it (to Redis with `events.redis_url`, else an in-process log).
//! 4. Instances report `MatchResult`; it is stored once per match id by the
//!    [`ResultStore`](crate::ResultStore) and acknowledged with `MatchResultAck`, repeats too.
//!
//! # Why one shard per mode
//!
//! A ticket may accept several regions, and the core places it in the bucket of each; a match
//! forms inside one bucket, and the ticket must then disappear from the others in the same
//! step. One matcher per mode holds all of a ticket's buckets, so that stays one owner's plain
//! code. Sharding by (mode, region) inside one process would need a cross-shard claim for every
//! multi-region ticket. Scaling by region happens a level up: a production matchmaker process
//! is configured with the regions it serves and the GCS routes tickets to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use migrations::{Db, PoolConfig};
use serde::Deserialize;
use service_runtime::admin::{Admin, ReadyCheck};
use service_runtime::telemetry::LogConfig;
use token_service::service::config::SigningConfig;
use token_service::{JoinIssuer, Keyring};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transport::service_link::{self, LinkHandle, ServerConfig};
use uuid::Uuid;

use crate::allocation::spawner::{ProcessSpawner, SpawnerConfig};
use crate::allocation::{Allocation, Allocator, StaticPool};
use crate::core::{MatcherConfig, ModeSpec, Registry, WindowCurve};
use crate::metrics::Metrics;
use crate::store::ResultStore;

pub mod dispatch;
pub mod handler;
pub mod index;
pub mod shard;

use index::TicketEntry;
use shard::ShardState;

/// The matchmaker's configuration (defaults < file < `TAVERN_*` < `--set`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakerConfig {
    /// Where the service link listens.
    pub bind: SocketAddr,
    /// Where `/metrics`, `/healthz`, `/readyz` and the internal read API
    /// (`/internal/v1/players/{user_id}/ratings`, see [`crate::api`]) listen.
    pub admin_bind: SocketAddr,
    /// This process's node id, sent in the welcome.
    pub node_id: String,
    /// The token every GCS node and instance presents (at least 16 characters).
    pub service_token: String,
    /// `postgres://…` or `sqlite:…`.
    pub database_url: String,
    /// The keys join tokens are signed with, shared with the instance servers.
    pub signing: SigningConfig,
    /// How long a join token lives (1 to 60 s).
    pub join_token_ttl_s: u64,
    /// How often each shard ticks.
    pub tick_ms: u64,
    /// Requests waiting per shard before enqueues are refused as busy.
    pub intake_capacity: usize,
    pub modes: Vec<ModeConfig>,
    pub regions: Vec<String>,
    /// How long a ticket waits before it expires.
    pub ticket_ttl_s: u64,
    /// The rating window: `start` points at once, growing linearly to `end` over `over_s`.
    pub window: WindowConfig,
    pub allocation: AllocationConfig,
    /// Matches waiting for the allocator before a shard re-queues new ones at once.
    pub allocation_queue: usize,
    /// Allocations in flight at once.
    pub max_concurrent_allocations: usize,
    /// How long tickets wait before they go back to the queue after a failed allocation, so a
    /// full cluster is not asked again every tick.
    pub requeue_delay_ms: u64,
    /// How long an allocated match is remembered while waiting for its result.
    pub match_max_age_s: u64,
    /// Where the outbox relay publishes events (`events.redis_url`, `events.prefix`); without a
    /// Redis URL they go to an in-process log and stay in the database.
    pub events: outbox::EventsConfig,
    pub log: LogConfig,
}

impl Default for MatchmakerConfig {
    fn default() -> Self {
        MatchmakerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 7400)),
            admin_bind: SocketAddr::from(([127, 0, 0, 1], 9104)),
            node_id: "matchmaker-1".into(),
            service_token: String::new(),
            database_url: "sqlite:./data/tavern.db".into(),
            signing: SigningConfig::default(),
            join_token_ttl_s: 30,
            tick_ms: 100,
            intake_capacity: 65_536,
            modes: vec![ModeConfig { name: "duel".into(), team_size: 1 }, ModeConfig { name: "duo".into(), team_size: 2 }],
            regions: vec!["local".into()],
            ticket_ttl_s: 300,
            window: WindowConfig::default(),
            allocation: AllocationConfig::Process(SpawnerConfig::default()),
            allocation_queue: 1024,
            max_concurrent_allocations: 64,
            requeue_delay_ms: 1000,
            match_max_age_s: 2 * 3600,
            events: outbox::EventsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// One game mode: two teams of `team_size`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModeConfig {
    pub name: String,
    pub team_size: u8,
}

/// The default rating window: 100 points at once, 500 after 40 s.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    pub start: f64,
    pub end: f64,
    pub over_s: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { start: 100.0, end: 500.0, over_s: 40 }
    }
}

/// Where instances come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AllocationConfig {
    /// Given by the embedding process ([`Parts::allocator`]); `run` refuses it.
    InProcess,
    /// Fixed instances, one match each.
    StaticPool { instances: Vec<Allocation> },
    /// A process per match from a local binary.
    Process(SpawnerConfig),
    /// Agones `GameServerAllocation`s (feature `agones`).
    #[cfg(feature = "agones")]
    Agones(crate::allocation::agones::AgonesConfig),
}

/// The `source` of the matchmaker's events in the outbox.
pub const EVENT_SOURCE: &str = "matchmaker";

/// How long, beyond the relay's own final flush, stopping waits for the relay task.
const RELAY_STOP_GRACE: Duration = Duration::from_secs(1);

/// The shortest service token accepted.
pub const MIN_SERVICE_TOKEN_LEN: usize = 16;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("config: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(String),
    #[error("signing keys: {0}")]
    Keys(String),
    #[error("events: {0}")]
    Events(#[from] outbox::OutboxError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl MatchmakerConfig {
    /// Checks what serde cannot; the message is the one line printed before exit code 64.
    pub fn validate(&self) -> Result<(), String> {
        if self.service_token.len() < MIN_SERVICE_TOKEN_LEN {
            return Err(format!(
                "service_token must be at least {MIN_SERVICE_TOKEN_LEN} characters (set TAVERN_SERVICE_TOKEN or --set service_token=…)"
            ));
        }
        if self.node_id.is_empty() || self.node_id.len() > service_link::MAX_NODE_ID_LEN {
            return Err("node_id must be 1 to 128 bytes".into());
        }
        if !(1..=token_service::join::MAX_JOIN_TTL_S).contains(&self.join_token_ttl_s) {
            return Err(format!("join_token_ttl_s {} is outside 1..=60", self.join_token_ttl_s));
        }
        if self.tick_ms == 0 || self.tick_ms > 10_000 {
            return Err(format!("tick_ms {} is outside 1..=10000", self.tick_ms));
        }
        if self.intake_capacity == 0 || self.allocation_queue == 0 || self.max_concurrent_allocations == 0 {
            return Err("intake_capacity, allocation_queue and max_concurrent_allocations must be positive".into());
        }
        self.matcher_config().map(|_| ())
    }

    /// The core's configuration for this service config.
    pub fn matcher_config(&self) -> Result<MatcherConfig, String> {
        let registry = Registry::new(
            self.modes.iter().map(|m| ModeSpec { name: m.name.clone(), team_size: m.team_size }).collect(),
            self.regions.clone(),
        )
        .map_err(|e| format!("modes/regions: {e}"))?;
        let over_ms = i64::try_from(self.window.over_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let curve = WindowCurve::linear(self.window.start, self.window.end, over_ms).map_err(|e| format!("window: {e}"))?;
        let ttl = i64::try_from(self.ticket_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Ok(MatcherConfig { registry, curve, ticket_ttl_ms: ttl, ..MatcherConfig::default() })
    }
}

/// What the service runs on, so the embedded launcher and tests can bring their own.
pub struct Parts {
    pub db: Db,
    pub keyring: Keyring,
    pub allocator: Arc<dyn Allocator>,
    pub registry: prometheus::Registry,
}

/// State shared by the link handlers, the shards and the dispatcher.
pub struct Shared {
    pub(crate) config: MatchmakerConfig,
    pub(crate) registry: Registry,
    /// Every live ticket by its wire id.
    pub(crate) index: DashMap<Uuid, Arc<TicketEntry>>,
    /// User → the ticket they queue with; one live ticket per user.
    pub(crate) users: DashMap<Uuid, Uuid>,
    /// One shard per mode, at the mode's index.
    pub(crate) shards: Vec<Arc<ShardState>>,
    /// The links of connected GCS nodes, by node id.
    pub(crate) nodes: DashMap<String, LinkHandle>,
    /// Allocated matches waiting for their results.
    pub(crate) live: DashMap<Uuid, dispatch::LiveMatch>,
    pub(crate) store: ResultStore,
    /// Where `match_found` is recorded, on the same database as the store.
    pub(crate) events: outbox::Outbox,
    pub(crate) joins: JoinIssuer,
    pub(crate) allocator: Arc<dyn Allocator>,
    pub(crate) metrics: Metrics,
    pub(crate) next_ticket: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    /// This very `Shared`, for handlers (which get `&self`) that start tasks outliving the call.
    pub(crate) this: std::sync::OnceLock<std::sync::Weak<Shared>>,
}

impl Shared {
    /// Drops a ticket from the index and frees its users (unless they queue again already).
    pub(crate) fn forget(&self, entry: &TicketEntry) {
        self.index.remove_if(&entry.id, |_, e| std::ptr::eq(Arc::as_ptr(e), entry));
        for user in entry.user_ids() {
            self.users.remove_if(&user, |_, t| *t == entry.id);
        }
    }
}

/// A started matchmaker.
pub struct Running {
    /// Where the service link listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: TaskTracker,
}

impl Running {
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Tickets in the index now (waiting or being allocated).
    pub fn live_tickets(&self) -> usize {
        self.shared.index.len()
    }

    /// Waits until every task has stopped (after the shutdown token fired).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts the service on `listener` with the given parts; it runs until `shutdown` fires.
pub async fn start(
    config: MatchmakerConfig,
    parts: Parts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, ServiceError> {
    config.validate().map_err(ServiceError::Config)?;
    let matcher_config = config.matcher_config().map_err(ServiceError::Config)?;
    let joins = JoinIssuer::new(parts.keyring, config.join_token_ttl_s).map_err(|e| ServiceError::Keys(e.to_string()))?;
    let registry = matcher_config.registry.clone();
    let shards = registry
        .modes()
        .map(|(id, spec)| Arc::new(ShardState::new(id, spec.name.clone(), config.intake_capacity)))
        .collect();
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        registry,
        index: DashMap::new(),
        users: DashMap::new(),
        shards,
        nodes: DashMap::new(),
        live: DashMap::new(),
        events: outbox::Outbox::new(parts.db.clone(), EVENT_SOURCE),
        store: ResultStore::new(parts.db),
        joins,
        allocator: parts.allocator,
        metrics: Metrics::new(&parts.registry),
        next_ticket: AtomicU64::new(1),
        shutdown: shutdown.clone(),
        this: std::sync::OnceLock::new(),
        config,
    });
    let _ = shared.this.set(Arc::downgrade(&shared));
    let tasks = TaskTracker::new();
    let (jobs_tx, jobs_rx) = mpsc::channel(shared.config.allocation_queue);
    for shard in &shared.shards {
        let span = tracing::info_span!("shard", mode = %shard.name);
        let task = shard::run(Arc::clone(&shared), Arc::clone(shard), matcher_config.clone(), jobs_tx.clone());
        tasks.spawn(tracing::Instrument::instrument(task, span));
    }
    drop(jobs_tx);
    tasks.spawn(dispatch::run(Arc::clone(&shared), jobs_rx));
    tasks.spawn(dispatch::sweep_live(Arc::clone(&shared)));
    let mut link_config = ServerConfig::new(shared.config.node_id.clone(), shared.config.service_token.clone());
    link_config.heartbeat_interval = Duration::from_secs(5);
    tasks.spawn(service_link::serve(listener, link_config, Arc::clone(&shared), shutdown));
    tracing::info!(%addr, node = %shared.config.node_id, allocator = shared.allocator.name(), "matchmaker listening");
    Ok(Running { addr, shared, tasks })
}

/// The allocator the config names (not `in_process`, which only an embedding process can give).
pub fn allocator_from_config(config: &AllocationConfig) -> Result<Arc<dyn Allocator>, ServiceError> {
    match config {
        AllocationConfig::InProcess => {
            Err(ServiceError::Config("allocation kind in_process needs the all-in-one launcher".into()))
        }
        AllocationConfig::StaticPool { instances } => Ok(Arc::new(StaticPool::new(instances.clone()))),
        AllocationConfig::Process(c) => Ok(Arc::new(ProcessSpawner::start(c.clone()))),
        #[cfg(feature = "agones")]
        AllocationConfig::Agones(c) => Ok(Arc::new(
            crate::allocation::agones::Agones::new(c.clone()).map_err(|e| ServiceError::Config(e.to_string()))?,
        )),
    }
}

/// Runs the matchmaker as its own process: database, keys, allocator, service link and admin
/// listeners, until `shutdown` fires.
pub async fn run(config: MatchmakerConfig, shutdown: CancellationToken) -> Result<(), ServiceError> {
    config.validate().map_err(ServiceError::Config)?;
    let db = Db::open(&config.database_url, &PoolConfig::default()).await.map_err(|e| ServiceError::Db(e.to_string()))?;
    let keyring = config.signing.keyring().map_err(|e| ServiceError::Keys(e.to_string()))?;
    let allocator = allocator_from_config(&config.allocation)?;
    let registry = prometheus::Registry::new();
    let listener = TcpListener::bind(config.bind).await.map_err(|source| ServiceError::Bind { addr: config.bind, source })?;
    let admin_listener = TcpListener::bind(config.admin_bind)
        .await
        .map_err(|source| ServiceError::Bind { addr: config.admin_bind, source })?;
    let admin = Admin::new(registry.clone()).check("database", db_ready(db.clone()));
    // The internal read API (`crate::api`) shares the admin listener: both are for operators and
    // trusted services only, and the API checks the service token itself.
    let admin_routes = admin.router().merge(crate::api::router(db.clone(), &config.service_token));
    let admin_task = tokio::spawn(
        axum::serve(admin_listener, admin_routes).with_graceful_shutdown(shutdown.clone().cancelled_owned()).into_future(),
    );
    let started = Instant::now();
    // The relay has its own token so it outlives the dispatcher, whose last deliveries may
    // record events while the service stops.
    let relay_shutdown = CancellationToken::new();
    let relay_config = config.events.relay_config();
    let relay = outbox::Relay::spawn_with(
        outbox::Outbox::new(db.clone(), EVENT_SOURCE),
        config.events.sink()?,
        relay_config.clone(),
        outbox::OutboxMetrics::new(&registry, EVENT_SOURCE),
        relay_shutdown.clone(),
    );
    let stop_relay = async move {
        relay_shutdown.cancel();
        if tokio::time::timeout(relay_config.final_flush + RELAY_STOP_GRACE, relay).await.is_err() {
            tracing::warn!("outbox relay did not stop in time; unpublished events stay in the database");
        }
    };
    let running = match start(config, Parts { db: db.clone(), keyring, allocator, registry }, listener, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            stop_relay.await;
            return Err(e);
        }
    };
    running.wait().await;
    stop_relay.await;
    let _ = admin_task.await;
    db.close().await;
    tracing::info!(uptime_s = started.elapsed().as_secs(), "matchmaker stopped");
    Ok(())
}

fn db_ready(db: Db) -> ReadyCheck {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
    })
}

/// Milliseconds since the unix epoch.
pub(crate) fn now_ms() -> i64 {
    service_runtime::now_ms()
}
