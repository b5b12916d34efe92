//! The GCS configuration: listeners, TLS identity, token keys, revocation bus and session
//! tunables, read from TOML and `--set` overrides (`service_runtime::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use service_runtime::telemetry::LogConfig;

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
    pub session: SessionConfig,
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
            session: SessionConfig::default(),
            log: LogConfig::default(),
        }
    }
}
