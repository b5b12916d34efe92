//! The GCS configuration: listeners, TLS identity, token keys, Redis, the database, login and
//! matchmaker addresses, session and chat tunables, read from TOML and `--set` overrides (`service_runtime::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use service_runtime::telemetry::LogConfig;

use crate::hub::HubConfig;
use crate::session::SessionConfig;

/// Everything `gcs::run` needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsConfig {
    /// The UDP address of the ENet/DTLS listener.
    pub enet_bind: SocketAddr,
    /// The TCP address of the WebSocket listener.
    pub ws_bind: SocketAddr,
    /// The HTTP path WebSocket clients connect to.
    pub ws_path: String,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub admin_bind: SocketAddr,
    /// The DTLS certificate and key (ECDSA P-256), created self-signed on first start.
    pub identity_dir: PathBuf,
    /// The token signing keys shared with login and the token service; created when missing.
    pub key_file: PathBuf,
    /// With Redis, revocations arrive from every node; without, only from this process.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel.
    pub redis_prefix: String,
    /// Capacity of the transports' shared event channel.
    pub event_capacity: usize,
    /// ENet/DTLS sessions held at once (one UDP socket: no file-descriptor ceiling).
    pub max_enet_links: usize,
    /// ENet/DTLS sessions one IP address may hold (players behind one NAT share it).
    pub max_enet_links_per_ip: usize,
    /// WebSocket links held at once (each is a file descriptor: keep under the process limit).
    pub max_ws_links: usize,
    /// WebSocket links one IP address may hold.
    pub max_ws_links_per_ip: usize,
    pub session: SessionConfig,
    /// Chat, room and presence limits.
    pub hub: HubConfig,
    /// This node's id: where the matchmaker and other nodes send what is for its users. Empty:
    /// a random one per start.
    pub node_id: String,
    /// The database for chat history and the events outbox (`sqlite://…` or `postgres://…`).
    pub database_url: String,
    /// Login's base URL for friend lists and blocks (`http://127.0.0.1:8080`); empty: no friends.
    pub login_url: String,
    /// The matchmaker's service link address (`127.0.0.1:7400`); empty: queueing is unavailable.
    pub matchmaker_addr: String,
    /// The cluster's service token (service links and login's internal API).
    pub service_token: String,
    /// How long a node's users stay in the Redis directory without a refresh (node death).
    pub directory_ttl_ms: u64,
    /// How long chat history is kept.
    pub chat_retention_days: u32,
    /// Where `user_login` and the other events go (the outbox's relay).
    pub events: outbox::EventsConfig,
    pub log: LogConfig,
}

impl Default for GcsConfig {
    fn default() -> Self {
        GcsConfig {
            enet_bind: SocketAddr::from(([0, 0, 0, 0], 7350)),
            ws_bind: SocketAddr::from(([0, 0, 0, 0], 7350)),
            ws_path: "/ws".into(),
            admin_bind: SocketAddr::from(([127, 0, 0, 1], 9103)),
            identity_dir: PathBuf::from("./data/tls"),
            key_file: PathBuf::from("./data/token-keys.json"),
            redis_url: None,
            redis_prefix: "tavern:".into(),
            event_capacity: 65_536,
            max_enet_links: 100_000,
            max_enet_links_per_ip: 64,
            max_ws_links: 19_000,
            max_ws_links_per_ip: 256,
            session: SessionConfig::default(),
            hub: HubConfig::default(),
            node_id: String::new(),
            database_url: "sqlite://./data/tavern.db".into(),
            login_url: String::new(),
            matchmaker_addr: String::new(),
            service_token: String::new(),
            directory_ttl_ms: 10_000,
            chat_retention_days: 30,
            events: outbox::EventsConfig::default(),
            log: LogConfig::default(),
        }
    }
}
