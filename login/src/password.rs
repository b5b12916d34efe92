//! Password hashing with argon2id at OWASP's recommended parameters, run on the blocking pool
//! and capped in concurrency so a burst of logins cannot exhaust memory.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Hashing parameters; the defaults are OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane).
#[derive(Clone, Copy, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// How many hashes may run at once; the rest wait their turn.
    pub max_concurrent: usize,
}

impl Default for HashParams {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1, max_concurrent: 4 }
    }
}

/// Why hashing failed (never because of the password itself).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("argon2: {0}")]
    Hash(String),
    #[error("hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("hashing pool closed")]
    Closed,
}

/// Hashes and verifies passwords off the async workers.
#[derive(Clone)]
pub struct Hasher {
    argon: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user does not exist so that an
    /// unknown username takes as long as a wrong password.
    dummy: Arc<String>,
}

impl Hasher {
    pub fn new(p: HashParams) -> Result<Self, HashError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon
            .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
            .map_err(|e| HashError::Hash(e.to_string()))?
            .to_string();
        Ok(Self {
            argon: Arc::new(argon),
            permits: Arc::new(Semaphore::new(p.max_concurrent.max(1))),
            dummy: Arc::new(dummy),
        })
    }

    /// A PHC-format argon2id hash of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Hash(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `hash`; `None` checks against the dummy hash and is always false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        let argon = self.argon.clone();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            // A stored hash that does not parse is treated as a mismatch; it is logged by the caller.
            PasswordHash::new(&hash).is_ok_and(|h| argon.verify_password(password.as_bytes(), &h).is_ok())
        })
        .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let h = Hasher::new(HashParams { memory_kib: 1024, iterations: 1, ..HashParams::default() })
            .expect("valid params");
        let a = h.hash("correct horse".into()).await.expect("hash");
        let b = h.hash("correct horse".into()).await.expect("hash");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{a}");
        assert!(h.verify("correct horse".into(), Some(a.clone())).await.expect("verify"));
        assert!(!h.verify("wrong".into(), Some(a)).await.expect("verify"));
        assert!(!h.verify("anything".into(), None).await.expect("verify"));
        assert!(!h.verify("x".into(), Some("not a phc string".into())).await.expect("verify"));
    }

    #[test]
    fn default_params_are_owasp() {
        let p = HashParams::default();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (19456, 2, 1));
    }
}
