//! Tavern's matchmaker (DESIGN.md §5): tickets, parties, matching, ratings and match results.
//!
//! Layout:
//! - [`core`]: the sans-IO matching core. Tickets and `now` in, matches and expiries out; the
//!   algorithm and its costs are described there.
//! - [`ratings`]: Glicko-2 (the `skillratings` crate) for 1v1 and teams.
//! - [`store`]: the matchmaker's tables (`ratings`, `matches`, `match_players`) on
//!   [`migrations::Db`]: ratings read at enqueue, results recorded once per match id.
//! - [`intake`]: the bounded lock-free queue that request handlers push into and a shard's owner
//!   drains before each tick.
//! - [`service`]: the service around these: the service link handler, one owner task per mode
//!   (shard), the concurrent ticket index and its gate, the dispatcher (allocation, join tokens,
//!   pushes to GCS nodes), `run(config, shutdown)`.
//! - [`allocation`]: the [`Allocator`](allocation::Allocator) trait and its implementations
//!   (in-process, static pool, local process spawner, Agones behind the `agones` feature).
//! - [`metrics`]: every `tavern_matchmaker_*` metric.
//! - [`api`]: the internal HTTP read API for trusted services (a player's ratings and recent
//!   matches, behind the service token), served on the admin listener; login shows it on
//!   `/v1/account`.
//!
//! The core stays free of IO; the service moves bytes, reads clocks and talks to the database.

pub mod allocation;
pub mod api;
pub mod core;
pub mod intake;
pub mod metrics;
pub mod ratings;
pub mod service;
pub mod store;

pub use crate::core::{Match, Matcher, MatcherConfig, Outcome, Ticket, TicketId};
pub use crate::intake::{Intake, Request};
pub use crate::ratings::{Rating, Standing, Winner};
pub use crate::service::{MatchmakerConfig, run};
pub use crate::store::{MatchResult, Recorded, ResultStore, StoreError};
