//! Cluster-wide revocation of session tokens: a trait, the local cache every check reads
//! synchronously, and the in-process implementation of the embedded default. The Redis
//! implementation for production lives in [`redis`].
//!
//! A revocation is one of two facts, each kept until every token it concerns has expired:
//! - session `sid` is revoked (logout, refresh reuse);
//! - every token of user `sub` issued before a cutoff is revoked (logout-all, ban, password change).

pub mod redis;

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{SessionClaims, TokenError};

/// How many revocations a slow subscriber may fall behind before it sees `Lagged`.
const BROADCAST_CAPACITY: usize = 1024;

/// Below this many entries the cache is not swept.
const MIN_SWEEP_AT: usize = 1024;

/// One revocation, as subscribers of [`Revocations::subscribe`] receive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Every token of this session is revoked until `until_ms`.
    Session { session_id: Uuid, until_ms: i64 },
    /// Every token of this user issued before `issued_before_ms` is revoked until `until_ms`.
    User { user_id: Uuid, issued_before_ms: i64, until_ms: i64 },
}

/// The revocation list. Checks are local and synchronous (a cache); writes are async and, in a
/// cluster, reach every process's cache within about a second.
pub trait Revocations: Send + Sync {
    /// Whether the token these claims came from is revoked at `now_ms`.
    fn is_revoked(&self, claims: &SessionClaims, now_ms: i64) -> bool;

    /// Revokes every token of `session_id` until `until_ms` (when its last token has expired).
    fn revoke_session(&self, session_id: Uuid, until_ms: i64, now_ms: i64) -> BoxFuture<'_, Result<(), TokenError>>;

    /// Revokes every token of `user_id` issued strictly before `issued_before_ms`, until `until_ms`.
    /// A token minted at the same millisecond as the cutoff stays valid, so a password change can
    /// revoke everything and hand its caller a fresh token using one clock reading.
    fn revoke_user_before(
        &self,
        user_id: Uuid,
        issued_before_ms: i64,
        until_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), TokenError>>;

    /// Every revocation this process learns of from now on, local or from other nodes (GCS
    /// closes live links with it). A receiver that lags gets `Lagged` and should re-check its
    /// sessions with [`Revocations::is_revoked`].
    fn subscribe(&self) -> broadcast::Receiver<Revocation>;

    /// `Err(reason)` while revocations from other nodes might be missed (bus disconnected).
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The local revocation cache: two concurrent maps swept of expired entries as they grow, and a
/// broadcast of every entry that changed something.
pub struct RevocationCache {
    sessions: DashMap<Uuid, i64>,
    /// user → (issued-before cutoff, until).
    users: DashMap<Uuid, (i64, i64)>,
    /// Entry count at which the next sweep runs; doubles with the live size so sweeping stays
    /// amortised O(1) per write.
    sweep_at: AtomicUsize,
    events: broadcast::Sender<Revocation>,
}

impl Default for RevocationCache {
    fn default() -> Self {
        Self::new()
    }
}

impl RevocationCache {
    pub fn new() -> RevocationCache {
        RevocationCache {
            sessions: DashMap::new(),
            users: DashMap::new(),
            sweep_at: AtomicUsize::new(MIN_SWEEP_AT),
            events: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }

    pub fn is_revoked(&self, claims: &SessionClaims, now_ms: i64) -> bool {
        if self.sessions.get(&claims.session_id).is_some_and(|until| *until > now_ms) {
            return true;
        }
        self.users
            .get(&claims.user_id)
            .is_some_and(|e| e.1 > now_ms && claims.issued_at_ms < e.0)
    }

    /// Records `r`; returns whether it changed anything (an echo of a known revocation does
    /// not). Changes are broadcast.
    pub fn apply(&self, r: Revocation, now_ms: i64) -> bool {
        let changed = match r {
            Revocation::Session { until_ms, .. } | Revocation::User { until_ms, .. } if until_ms <= now_ms => false,
            Revocation::Session { session_id, until_ms } => {
                let mut e = self.sessions.entry(session_id).or_insert(i64::MIN);
                let changed = until_ms > *e;
                *e = (*e).max(until_ms);
                changed
            }
            Revocation::User { user_id, issued_before_ms, until_ms } => {
                let mut e = self.users.entry(user_id).or_insert((i64::MIN, i64::MIN));
                let changed = issued_before_ms > e.0 || until_ms > e.1;
                *e = (e.0.max(issued_before_ms), e.1.max(until_ms));
                changed
            }
        };
        if changed {
            // No receiver is not an error: nobody listens in most processes.
            let _ = self.events.send(r);
            self.maybe_sweep(now_ms);
        }
        changed
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.events.subscribe()
    }

    /// Removes every entry that has expired.
    pub fn sweep(&self, now_ms: i64) {
        self.sessions.retain(|_, until| *until > now_ms);
        self.users.retain(|_, e| e.1 > now_ms);
    }

    /// Live entries (sessions plus users), expired ones included until the next sweep.
    pub fn len(&self) -> usize {
        self.sessions.len() + self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_sweep(&self, now_ms: i64) {
        if self.len() < self.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        self.sweep(now_ms);
        self.sweep_at.store((self.len() * 2).max(MIN_SWEEP_AT), Ordering::Relaxed);
    }
}

/// The embedded default: revocations live in this process only.
#[derive(Default)]
pub struct InProcessRevocations {
    cache: RevocationCache,
}

impl InProcessRevocations {
    pub fn new() -> InProcessRevocations {
        InProcessRevocations::default()
    }

    pub fn cache(&self) -> &RevocationCache {
        &self.cache
    }
}

impl Revocations for InProcessRevocations {
    fn is_revoked(&self, claims: &SessionClaims, now_ms: i64) -> bool {
        self.cache.is_revoked(claims, now_ms)
    }

    fn revoke_session(&self, session_id: Uuid, until_ms: i64, now_ms: i64) -> BoxFuture<'_, Result<(), TokenError>> {
        self.cache.apply(Revocation::Session { session_id, until_ms }, now_ms);
        Box::pin(async { Ok(()) })
    }

    fn revoke_user_before(
        &self,
        user_id: Uuid,
        issued_before_ms: i64,
        until_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), TokenError>> {
        self.cache.apply(Revocation::User { user_id, issued_before_ms, until_ms }, now_ms);
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.cache.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user_id: Uuid, session_id: Uuid, issued_at_ms: i64) -> SessionClaims {
        SessionClaims {
            user_id,
            username: "u".into(),
            session_id,
            issued_at_s: issued_at_ms / 1000,
            issued_at_ms,
            expires_at_s: issued_at_ms / 1000 + 900,
            kid: "k".into(),
        }
    }

    #[test]
    fn entries_expire_and_are_swept() {
        let cache = RevocationCache::new();
        let (u, s) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(cache.apply(Revocation::Session { session_id: s, until_ms: 2_000 }, 1_000));
        assert!(!cache.apply(Revocation::Session { session_id: s, until_ms: 2_000 }, 1_000), "echo changes nothing");
        assert!(cache.is_revoked(&claims(u, s, 500), 1_999));
        assert!(!cache.is_revoked(&claims(u, s, 500), 2_000));
        assert!(!cache.apply(Revocation::Session { session_id: Uuid::new_v4(), until_ms: 900 }, 1_000));
        cache.sweep(2_000);
        assert!(cache.is_empty());
    }

    #[test]
    fn user_cutoff_spares_tokens_issued_at_or_after_it() {
        let cache = RevocationCache::new();
        let u = Uuid::new_v4();
        cache.apply(Revocation::User { user_id: u, issued_before_ms: 1_000, until_ms: 10_000 }, 1_000);
        assert!(cache.is_revoked(&claims(u, Uuid::new_v4(), 999), 1_000));
        assert!(!cache.is_revoked(&claims(u, Uuid::new_v4(), 1_000), 1_000));
        // An older cutoff arriving late never lowers a newer one.
        assert!(!cache.apply(Revocation::User { user_id: u, issued_before_ms: 500, until_ms: 9_000 }, 1_000));
        assert!(cache.is_revoked(&claims(u, Uuid::new_v4(), 999), 1_000));
    }

    #[test]
    fn growth_triggers_sweeps() {
        let cache = RevocationCache::new();
        for i in 0..(MIN_SWEEP_AT as i64 * 3) {
            // Each entry lives 10 ms; by the time the table is large, most have expired.
            cache.apply(Revocation::Session { session_id: Uuid::new_v4(), until_ms: i + 10 }, i);
        }
        assert!(cache.len() <= MIN_SWEEP_AT, "cache holds {} entries", cache.len());
    }
}
