//! Runtime plumbing shared by every Tavern service, so each service's `main.rs` only parses
//! config and calls `run(config, shutdown)`.
//!
//! Layout:
//! - [`config`]: defaults < TOML file < `TAVERN_*` environment < `--set` flags, one clear line
//!   and exit code 64 on bad config.
//! - [`telemetry`]: structured JSON (or human) logs through `tracing`.
//! - [`shutdown`]: a cancellation token fired by SIGTERM or Ctrl-C.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on an admin port.
//! - [`api`]: JSON error bodies `{code, error, message}` and a JSON extractor whose rejections
//!   carry protocol error codes.
//! - [`ratelimit`]: keyed token buckets for per-IP and per-user limits.

pub mod admin;
pub mod api;
pub mod config;
pub mod ratelimit;
pub mod shutdown;
pub mod telemetry;

/// Milliseconds since the unix epoch, the one timestamp unit stored and sent by Tavern.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
