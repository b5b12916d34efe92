//! Tavern's Global Connection Server (GCS): client links over ENet/DTLS and WebSocket, sessions,
//! resume, heartbeats, rate limits, revocation, presence, chat and the queue relay (DESIGN §5).
//!
//! Layout:
//! - [`session`]: the sans-IO session core. Link events, decoded messages, pushes, revocations
//!   and clock ticks go in with `now_ms`; a list of [`session::Action`]s comes out. No sockets,
//!   no clock, no tasks.
//! - [`hub`]: the sans-IO feature core: presence and friends' pushes, the common area, named
//!   rooms and direct messages, the per-user queue state. Requests the session core does not
//!   handle go in; [`hub::Effect`]s come out.
//! - [`effects`]: runs the hub's IO effects as short bounded tasks (chat store, login's social
//!   API, the matchmaker's service link, the directory, the outbox) and feeds the outcomes back.
//! - [`cluster`]: the bus and the user → node directory (in-process, or Redis for several nodes).
//! - [`chat_store`]: chat history (`chat_messages`, owned by the GCS); [`social`]: login's
//!   internal API client.
//! - [`server`]: the driver. One owner task fed by the transports' `LinkEvent` channel, the
//!   revocation bus, the effects' completions and a command channel; it decodes with `protocol::Codec`, runs the core and
//!   executes its actions on `transport::Links`. [`server::run`] is the process entry point.
//! - [`config`]: [`GcsConfig`], read from TOML and `--set` overrides.
//! - [`metrics`]: every `tavern_gcs_*` metric.
//!
//! Architecture invariants: the session core never reads a clock or touches IO; every session
//! belongs to one user (a second login replaces the first); nothing that came off the network is
//! unwrapped; every channel is bounded.

/// The chat history table (`chat_messages`) and channel keys.
pub mod chat_store;
pub mod cluster;
pub mod config;
pub mod effects;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod session;
/// The client for login's internal social API (friends, blocks, usernames).
pub mod social;

pub use cluster::Cluster;
pub use config::GcsConfig;
pub use effects::Backends;
pub use hub::{Hub, HubConfig};
pub use server::{GcsHandle, GcsServer, run};
pub use session::{Action, SessionConfig, SessionCore, SessionStats};
