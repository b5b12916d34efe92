//! The network server around the rules engine: hosts matches for players on ENet/DTLS and
//! WebSocket links, checks their join tokens, runs the turn timer and the rejoin window, and
//! reports each result until the matchmaker acknowledges it.
//!
//! # Layout
//!
//! - [`host`]: [`InstanceHost`] (the transports, the router that sends each new link to its
//!   match by the join token's match id, [`InstanceHost::create_match`]), [`MatchSpec`],
//!   [`MatchAddress`].
//! - `match_host` (private): one task per match, the only owner of its [`crate::rules::Game`]:
//!   joins, commands, events per viewer, rate limits, timers, forfeit, linger, report.
//! - [`report`]: [`ResultReporter`] (one attempt), [`report_until_acked`] (retries with
//!   backoff), [`MemoryReporter`]; [`service_reporter`]: the reporter over the service link to
//!   the matchmaker.
//! - [`config`]: [`InstanceConfig`] (the binary's layered config), [`MatchSettings`],
//!   [`Assignment`] (a match handed over by the matchmaker's process spawner on stdin).
//! - [`run`]: the two modes of the binary: spawned (one match, a ready line, exit after the
//!   report) and dense (many matches until shutdown).
//! - [`metrics`]: every `tavern_instance_*` metric.
//! - `token` (private): reading a join token's match id to route a link before verifying it.
//!
//! # Decisions
//!
//! - **Rejoin** takes a fresh join token for the same match (the wire has no resume secret and
//!   join tokens are single use); the match keeps the seat for `rejoin_window` (default 30 s),
//!   then the absent player forfeits. A join for a seat that still has a link replaces it
//!   (`session_replaced`). Both players have `join_window` to join at first; a seat nobody took
//!   forfeits, and a match nobody joined is aborted.
//! - **Rate limit**: a token bucket per link over every message (`messages_per_s`,
//!   `message_burst`). Messages over it are dropped undecoded; the first of each run is answered
//!   `rate_limited` (cid 0), so a flood is not echoed back. The other player has their own bucket.
//! - **Shutdown**: every match aborts, tells its players and closes their links; the transports
//!   stop after that (at most 2 s later); results are then reported within the backoff's grace.
//! - **Events**: with an outbox ([`InstanceHost::start_with_outbox`], which [`run`] always uses)
//!   each match records `game_started` when both players have joined (in the background, so play
//!   does not wait on the database) and `game_ended` when it ends (after `game_started`, before
//!   the result is reported). The process's relay publishes them; spawned mode exits only after
//!   the relay's bounded final flush.
//!
//! # Invariants
//!
//! - No task per connection: one router task for the process, one task per match.
//! - Nothing read off a link is unwrapped: undecodable frames are answered `malformed` and
//!   counted; a link that sends too many is closed.
//! - A result is reported until acknowledged (or, after shutdown, until a grace period ends and
//!   it is logged as abandoned); never dropped silently.
//! - A join token is verified by the match it names, against that match and this instance; the
//!   router's peek at the match id only routes.

pub mod config;
pub mod host;
mod match_host;
pub mod metrics;
pub mod report;
pub mod run;
pub mod service_reporter;
mod token;

pub use config::{Assignment, InstanceConfig, MatchSettings, MatchSpecConfig, Mode, PlayerSpecConfig};
pub use host::{HostConfig, HostError, InstanceHost, MatchAddress, MatchSpec, SeatSpec, SpecError};
pub use metrics::InstanceMetrics;
pub use service_reporter::ServiceLinkReporter;
pub use report::{Backoff, MemoryReporter, ReportError, ResultReporter, report_until_acked};
