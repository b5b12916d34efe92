//! [`Tokens`], the one handle a service holds to mint, verify, rotate and revoke tokens, and its
//! [`TokenConfig`].

use std::sync::Arc;

use migrations::Db;
use serde::Deserialize;
use uuid::Uuid;

use crate::join::{JoinIssuer, MAX_JOIN_TTL_S};
use crate::metrics::TokenMetrics;
use crate::revocation::Revocations;
use crate::session::{self, EXPIRY_LEEWAY_S, MintedSession, SessionClaims, SessionVerifier};
use crate::{Keyring, TokenError, refresh};

/// Token lifetimes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Session token lifetime (default 15 minutes); also how long a revocation is kept.
    pub session_ttl_s: u64,
    /// Refresh token lifetime, renewed at every rotation (default 30 days).
    pub refresh_ttl_s: u64,
    /// Join token lifetime (default 30 s, at most 60).
    pub join_ttl_s: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig { session_ttl_s: 900, refresh_ttl_s: 30 * 24 * 3600, join_ttl_s: 30 }
    }
}

impl TokenConfig {
    /// Rejects lifetimes that are zero or beyond their caps (session: 1 day, refresh: 1 year,
    /// join: 60 s).
    pub fn validate(&self) -> Result<(), TokenError> {
        let check = |field: &'static str, v: u64, max: u64| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(TokenError::InvalidInput { field, reason: format!("{v} is outside 1..={max}") })
            }
        };
        check("session_ttl_s", self.session_ttl_s, 24 * 3600)?;
        check("refresh_ttl_s", self.refresh_ttl_s, 366 * 24 * 3600)?;
        check("join_ttl_s", self.join_ttl_s, MAX_JOIN_TTL_S)
    }
}

/// The outcome of a refresh token rotation.
#[derive(Clone, Debug)]
pub struct RefreshGrant {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The successor token, in the same family; the presented one is now spent.
    pub refresh_token: String,
}

/// Mints, verifies, rotates and revokes tokens. Cheap to clone (one `Arc` inside).
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    keyring: Keyring,
    cfg: TokenConfig,
    db: Db,
    verifier: SessionVerifier,
    join: JoinIssuer,
    metrics: TokenMetrics,
}

impl Tokens {
    /// Lifetimes beyond their caps are clamped (the join lifetime to 60 s); validate the config
    /// with [`TokenConfig::validate`] at start to refuse them instead.
    pub fn new(keyring: Keyring, cfg: TokenConfig, db: Db, revocations: Arc<dyn Revocations>) -> Tokens {
        let mut cfg = cfg;
        cfg.session_ttl_s = cfg.session_ttl_s.clamp(1, 24 * 3600);
        cfg.refresh_ttl_s = cfg.refresh_ttl_s.clamp(1, 366 * 24 * 3600);
        cfg.join_ttl_s = cfg.join_ttl_s.clamp(1, MAX_JOIN_TTL_S);
        let metrics = TokenMetrics::new();
        let verifier = SessionVerifier::new(keyring.clone(), revocations).with_metrics(metrics.clone());
        // The lifetime was clamped into the accepted range just above.
        let join = JoinIssuer::new(keyring.clone(), cfg.join_ttl_s).expect("join lifetime clamped into range");
        Tokens { inner: Arc::new(Inner { keyring, cfg, db, verifier, join, metrics }) }
    }

    pub fn config(&self) -> &TokenConfig {
        &self.inner.cfg
    }

    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn revocations(&self) -> &Arc<dyn Revocations> {
        self.inner.verifier.revocations()
    }

    pub fn metrics(&self) -> &TokenMetrics {
        &self.inner.metrics
    }

    /// Registers this handle's metrics in `registry` (once per registry).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.inner.metrics.register(registry)
    }

    /// A verifier sharing this handle's keyring, revocations and metrics, for code that only
    /// verifies.
    pub fn session_verifier(&self) -> SessionVerifier {
        self.inner.verifier.clone()
    }

    /// Signs a session token with the active key, valid for `session_ttl_s`.
    pub fn mint_session(
        &self,
        user_id: Uuid,
        username: &str,
        session_id: Uuid,
        now_ms: i64,
    ) -> Result<MintedSession, TokenError> {
        let minted = session::encode(&self.inner.keyring, user_id, username, session_id, now_ms, self.inner.cfg.session_ttl_s)?;
        self.inner.metrics.minted.with_label_values(&["session"]).inc();
        Ok(minted)
    }

    /// Signature (constant-time), key id known, expiry (with [`EXPIRY_LEEWAY_S`] of leeway), then
    /// revocation: all local, no network hop.
    pub fn verify_session(&self, token: &str, now_ms: i64) -> Result<SessionClaims, TokenError> {
        self.inner.verifier.verify(token, now_ms)
    }

    /// Starts a new refresh family for a session and returns its first token.
    pub async fn issue_refresh(&self, user_id: Uuid, session_id: Uuid, now_ms: i64) -> Result<String, TokenError> {
        let (token, hash) = refresh::generate();
        let expires_at = now_ms.saturating_add(self.refresh_ttl_ms());
        refresh::insert_family(&self.inner.db, &hash, user_id, session_id, now_ms, expires_at).await?;
        self.inner.metrics.minted.with_label_values(&["refresh"]).inc();
        Ok(token)
    }

    /// Spends `token` and issues its successor in the same family, atomically. Presenting a spent
    /// token revokes its family and its session ([`TokenError::RefreshReused`]); so when two
    /// rotations of one token race, one wins and the other's reuse then revokes the winner too.
    pub async fn rotate_refresh(&self, token: &str, now_ms: i64) -> Result<RefreshGrant, TokenError> {
        let outcome = self.rotate_inner(token, now_ms).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(TokenError::RefreshReused) => "reused",
            Err(TokenError::RefreshInvalid) => "invalid",
            Err(_) => "error",
        };
        self.inner.metrics.refresh_rotations.with_label_values(&[label]).inc();
        outcome
    }

    /// Logout: the session goes on the revocation list (for as long as its tokens can live) and its
    /// refresh families are revoked.
    pub async fn revoke_session(&self, user_id: Uuid, session_id: Uuid, now_ms: i64) -> Result<(), TokenError> {
        // The revocation list first: it is what stops live tokens, everywhere.
        self.revocations().revoke_session(session_id, self.revocation_until(now_ms), now_ms).await?;
        refresh::revoke_session(&self.inner.db, user_id, session_id, now_ms).await?;
        self.inner.metrics.revocations.with_label_values(&["session"]).inc();
        tracing::info!(%user_id, %session_id, "session revoked");
        Ok(())
    }

    /// Logout-all, ban, password change: every session token of the user issued up to and
    /// including `now_ms` is revoked, and every refresh family of the user. Inclusive, because a
    /// login answered in the same millisecond as a logout-all must not survive it; a caller that
    /// hands out a fresh session afterwards mints it with a later clock reading.
    pub async fn revoke_user(&self, user_id: Uuid, now_ms: i64) -> Result<(), TokenError> {
        let cutoff = now_ms.saturating_add(1);
        self.revocations().revoke_user_before(user_id, cutoff, self.revocation_until(now_ms), now_ms).await?;
        refresh::revoke_user(&self.inner.db, user_id, now_ms).await?;
        self.inner.metrics.revocations.with_label_values(&["user"]).inc();
        tracing::info!(%user_id, "all sessions of user revoked");
        Ok(())
    }

    /// The issuer of join tokens, with the configured lifetime.
    pub fn join_issuer(&self) -> JoinIssuer {
        self.inner.join.clone()
    }

    /// Mints a join token and counts it; the same as `join_issuer().mint(..)`.
    pub fn mint_join(&self, match_id: Uuid, user_id: Uuid, instance_id: &str, now_ms: i64) -> Result<String, TokenError> {
        let token = self.inner.join.mint(match_id, user_id, instance_id, now_ms)?;
        self.inner.metrics.minted.with_label_values(&["join"]).inc();
        Ok(token)
    }

    /// Deletes refresh rows that expired before `now_ms`; returns how many.
    pub async fn purge_expired_refresh(&self, now_ms: i64) -> Result<u64, TokenError> {
        refresh::purge_expired(&self.inner.db, now_ms).await
    }

    async fn rotate_inner(&self, token: &str, now_ms: i64) -> Result<RefreshGrant, TokenError> {
        let hash = refresh::hash_presented(token).ok_or(TokenError::RefreshInvalid)?;
        match refresh::rotate(&self.inner.db, &hash, now_ms, self.refresh_ttl_ms()).await? {
            refresh::Rotation::Rotated { user_id, session_id, new_token } => {
                Ok(RefreshGrant { user_id, session_id, refresh_token: new_token })
            }
            refresh::Rotation::Reused { family_id, user_id, session_id } => {
                tracing::warn!(%user_id, %session_id, %family_id, "refresh token reuse: revoking family and session");
                refresh::revoke_family(&self.inner.db, family_id, now_ms).await?;
                self.revocations().revoke_session(session_id, self.revocation_until(now_ms), now_ms).await?;
                self.inner.metrics.revocations.with_label_values(&["session"]).inc();
                Err(TokenError::RefreshReused)
            }
            refresh::Rotation::Invalid => Err(TokenError::RefreshInvalid),
        }
    }

    fn refresh_ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.cfg.refresh_ttl_s).unwrap_or(i64::MAX).saturating_mul(1000)
    }

    /// Until when a revocation made at `now_ms` must be kept: the longest a token issued up to
    /// now can still verify.
    fn revocation_until(&self, now_ms: i64) -> i64 {
        let ttl_s = i64::try_from(self.inner.cfg.session_ttl_s).unwrap_or(i64::MAX);
        // +1 s because `exp` is rounded down to the second from an `iat` rounded down too.
        now_ms.saturating_add(ttl_s.saturating_add(EXPIRY_LEEWAY_S + 1).saturating_mul(1000))
    }
}
