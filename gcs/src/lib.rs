//! Tavern's Global Connection Server (GCS): client links over ENet/DTLS and WebSocket, sessions,
//! resume, heartbeats, rate limits and revocation (DESIGN §5).
//!
//! Layout:
//! - [`session`]: the sans-IO session core. Link events, decoded messages, pushes, revocations
//!   and clock ticks go in with `now_ms`; a list of [`session::Action`]s comes out. No sockets,
//!   no clock, no tasks.
//! - [`server`]: the driver. One owner task fed by the transports' `LinkEvent` channel, the
//!   revocation bus and a command channel; it decodes with `protocol::Codec`, runs the core and
//!   executes its actions on `transport::Links`. [`server::run`] is the process entry point.
//! - [`config`]: [`GcsConfig`], read from TOML and `--set` overrides.
//! - [`metrics`]: every `tavern_gcs_*` metric.
//!
//! Architecture invariants: the session core never reads a clock or touches IO; every session
//! belongs to one user (a second login replaces the first); nothing that came off the network is
//! unwrapped; every channel is bounded.

pub mod config;
pub mod metrics;
pub mod server;
pub mod session;

pub use config::GcsConfig;
pub use server::{GcsHandle, GcsServer, run};
pub use session::{Action, SessionConfig, SessionCore, SessionStats};
