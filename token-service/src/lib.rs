//! Tavern's tokens: session, refresh and join tokens — mint, verify, revoke, rotate keys. Every
//! process links this library and verifies locally; the token service binary adds a small HTTP
//! API for trusted services.
//!
//! Layout:
//! - [`keyring`]: [`SigningKey`]s with ids; the active key signs, previous keys verify; the key
//!   file of the embedded default.
//! - [`session`]: session tokens (JWT HS256 with `kid`), [`SessionClaims`], [`SessionVerifier`]
//!   for processes that only verify.
//! - `refresh` (private): refresh tokens stored as SHA-256 in `refresh_tokens`, atomic rotation,
//!   families, reuse detection. Reached through [`Tokens`].
//! - [`join`]: join tokens for instance servers, [`JoinIssuer`] and the single-use [`JoinVerifier`].
//! - [`revocation`]: the [`Revocations`] trait, the local cache, [`InProcessRevocations`]
//!   (embedded) and [`RedisRevocations`] (production: Redis keys with TTL plus pub/sub).
//! - [`tokens`]: [`Tokens`], the handle services hold, and [`TokenConfig`].
//! - [`metrics`]: every `tavern_token_*` metric.
//! - [`error`]: [`TokenError`] and its protocol codes.
//! - [`service`]: the HTTP service: [`ServiceConfig`], [`service::http::router`], [`run`], and the
//!   pieces the all-in-one launcher reuses ([`service::open_tokens`], [`service::build_state`],
//!   [`service::http::serve`]).
//!
//! Architecture invariants: token logic takes `now` as an argument and never reads a clock, so
//! tests drive time; verification never leaves the process (revocation checks read a local
//! cache); comparisons of secrets and MACs are constant-time; refresh tokens are never stored,
//! only their hashes.

pub mod error;
pub mod join;
pub mod keyring;
pub mod metrics;
mod refresh;
pub mod revocation;
pub mod service;
pub mod session;
pub mod tokens;

pub use error::TokenError;
pub use join::{JoinClaims, JoinIssuer, JoinVerifier};
pub use keyring::{Keyring, SigningKey};
pub use metrics::TokenMetrics;
pub use revocation::redis::RedisRevocations;
pub use revocation::{InProcessRevocations, Revocation, Revocations};
pub use service::config::ServiceConfig;
pub use service::run;
pub use session::{MintedSession, SessionClaims, SessionVerifier};
pub use tokens::{RefreshGrant, TokenConfig, Tokens};
