//! [`EventsConfig`]: the `[events]` section of a service's config, which picks the sink (Redis
//! when `redis_url` is set, the in-process log otherwise) and the relay's retention.

use std::time::Duration;

use serde::Deserialize;

use crate::OutboxError;
use crate::relay::RelayConfig;
use crate::sink::{DEFAULT_LOG_CAPACITY, DEFAULT_STREAM_MAXLEN, InProcessLog, RedisStream, Sink};

/// Where a service's events go (`--set events.redis_url=redis://…`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// The Redis holding the stream; without it events go to an in-process log (the embedded
    /// default) and stay in the database until retention.
    pub redis_url: Option<String>,
    /// The stream is `{prefix}events`.
    pub prefix: String,
    /// The stream is trimmed to about this many entries.
    pub stream_maxlen: u64,
    /// How long published rows stay in the outbox table.
    pub retention_s: u64,
    /// Events the in-process log keeps.
    pub log_capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            redis_url: None,
            prefix: "tavern:".into(),
            stream_maxlen: DEFAULT_STREAM_MAXLEN,
            retention_s: 24 * 3600,
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

impl EventsConfig {
    /// The sink this config names. Connecting to Redis happens on the first publish, so a Redis
    /// that is down now is not an error.
    pub fn sink(&self) -> Result<Sink, OutboxError> {
        Ok(match &self.redis_url {
            Some(url) => Sink::RedisStream(RedisStream::new(url, &self.prefix)?.with_maxlen(self.stream_maxlen)),
            None => Sink::InProcessLog(InProcessLog::new(self.log_capacity)),
        })
    }

    /// The relay's pacing: the defaults with this config's retention.
    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig { retention: Duration::from_secs(self.retention_s), ..RelayConfig::default() }
    }
}
