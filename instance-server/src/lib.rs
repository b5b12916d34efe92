//! Tavern's instance server: the card game's rules engine, its game data, a bot, and the network
//! server (join tokens, transports, rejoin window, result reporting) built on top of them.
//!
//! # Layout
//!
//! - [`rules`]: the sans-IO, deterministic rules engine: [`rules::Game`] takes
//!   [`rules::Command`]s and clock readings, returns [`rules::Event`]s, and shows each player a
//!   [`rules::PlayerView`]. The rules decided there are documented at the top of the module.
//!   [`rules::bench_support`] plays, records and replays bot games for the bench.
//! - [`catalog`]: the game data (cards, starter decks, recipes), validated into a
//!   [`catalog::Catalog`]; [`catalog::store`] loads it from the tables migration 0003 seeds.
//! - [`bot`]: a bot that plays legal moves with a simple strategy, from a player's view only;
//!   [`autoplay`]: the same bot playing one seat over the wire (snapshots in, commands out).
//! - [`wire`]: conversions between the engine's plain types and the `protocol` messages
//!   (`GameSnapshot`, `GameEvent`, `GameCommand`), where hidden information is filtered per player.
//! - [`server`]: the network server: [`server::InstanceHost`] hosts matches over ENet/DTLS and
//!   WebSocket, one task per match; result reporting; the spawned and high-density modes.
//!
//! # Invariants
//!
//! - The engine never reads a clock or does IO; time comes in as `now_ms`, randomness from the
//!   match seed. Same seed and inputs → same events.
//! - A refused command changes nothing (every check runs before the first mutation).
//! - A player's view and events never hold the opponent's hand cards or any deck order.

pub mod autoplay;
pub mod bot;
pub mod catalog;
pub mod rules;
pub mod server;
pub mod wire;
