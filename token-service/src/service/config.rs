//! The token service's configuration: defaults here, then the TOML file, `TAVERN_*` environment
//! and `--set` flags through `service_runtime::config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use service_runtime::telemetry::LogConfig;

use crate::keyring::keyring_from_parts;
use crate::{Keyring, TokenConfig, TokenError};

/// The shortest service token accepted.
pub const MIN_SERVICE_TOKEN_LEN: usize = 16;

/// Everything `token-service` reads at start.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where the HTTP API listens.
    pub bind: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub admin_bind: SocketAddr,
    /// `postgres://…` in production, `sqlite:…` for the embedded default.
    pub database_url: String,
    /// Redis for cluster-wide revocation; without it revocations stay in this process.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    /// The bearer token trusted services present (at least 16 characters).
    pub service_token: String,
    /// Signing keys.
    pub signing: SigningConfig,
    /// Token lifetimes.
    pub tokens: TokenConfig,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    pub log: LogConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_bind: SocketAddr::from(([127, 0, 0, 1], 9101)),
            database_url: "sqlite:./data/tavern.db".to_owned(),
            redis_url: None,
            redis_key_prefix: "tavern:".to_owned(),
            service_token: String::new(),
            signing: SigningConfig::default(),
            tokens: TokenConfig::default(),
            body_limit_bytes: 16 * 1024,
            log: LogConfig::default(),
        }
    }
}

/// Where the signing keys come from: an explicit list (production: every process of the
/// cluster is given the same list) or, when the list is empty, a key file created on first
/// start (the embedded default).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// The key file used when `keys` is empty.
    pub key_file: PathBuf,
    /// The id of the key that signs; required with `keys`.
    pub active_kid: Option<String>,
    /// `[{ kid = "…", secret = "base64" }]`; keys other than the active one only verify.
    pub keys: Vec<KeyConfig>,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig { key_file: PathBuf::from("./data/token-keys.json"), active_kid: None, keys: Vec::new() }
    }
}

/// One configured key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    /// At least 32 bytes, base64.
    pub secret: String,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig").field("kid", &self.kid).field("secret", &"<redacted>").finish()
    }
}

impl SigningConfig {
    /// The keyring this config describes (creating the key file if that is where keys come from).
    pub fn keyring(&self) -> Result<Keyring, TokenError> {
        if self.keys.is_empty() {
            if self.active_kid.is_some() {
                return Err(TokenError::InvalidKey("signing.active_kid is set but signing.keys is empty".into()));
            }
            return Keyring::load_or_create(&self.key_file);
        }
        let active = self
            .active_kid
            .as_deref()
            .ok_or_else(|| TokenError::InvalidKey("signing.keys is set, so signing.active_kid is required".into()))?;
        keyring_from_parts(active, self.keys.iter().map(|k| (k.kid.as_str(), k.secret.as_str())))
    }
}

impl ServiceConfig {
    /// Checks what serde cannot: lifetimes, the service token, the key list. The message is the
    /// one line printed before exit code 64.
    pub fn validate(&self) -> Result<(), String> {
        self.tokens.validate().map_err(|e| format!("tokens: {e}"))?;
        if self.service_token.len() < MIN_SERVICE_TOKEN_LEN {
            return Err(format!(
                "service_token must be at least {MIN_SERVICE_TOKEN_LEN} characters (set TAVERN_SERVICE_TOKEN or --set service_token=…)"
            ));
        }
        if self.body_limit_bytes < 256 {
            return Err(format!("body_limit_bytes {} is below 256", self.body_limit_bytes));
        }
        if !self.signing.keys.is_empty() {
            // Building the keyring checks ids, lengths, base64 and the active key, without I/O.
            self.signing.keyring().map_err(|e| format!("signing: {e}"))?;
        } else if self.signing.active_kid.is_some() {
            return Err("signing.active_kid is set but signing.keys is empty".into());
        }
        Ok(())
    }
}
