//! Refresh tokens: 256 random bits handed to the client once, stored only as their SHA-256 in
//! `refresh_tokens`, rotated on every use. All tokens descending from one login form a family;
//! presenting a spent token again revokes the family.
//!
//! The SQL is the same text on Postgres and SQLite (both take `$n` placeholders, `RETURNING` and
//! UUIDs bound directly), so every statement is written once and run through `on_db!`. Rotation is
//! one conditional `UPDATE … RETURNING` inside a transaction with the successor's `INSERT`: of two
//! concurrent rotations of one token exactly one matches the row (Postgres re-checks the `WHERE`
//! after the row lock; SQLite serialises writers), and the loser sees a spent token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use migrations::{Db, on_db};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::TokenError;

/// Bytes of randomness in a refresh token.
const TOKEN_BYTES: usize = 32;

/// The row that one refresh token was, as rotation or a lookup finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub expires_at: i64,
    pub spent_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What a rotation attempt found.
pub(crate) enum Rotation {
    /// The token was live and is now spent; `new_token` is its successor.
    Rotated { user_id: Uuid, session_id: Uuid, new_token: String },
    /// The token was spent before: reuse. The caller revokes the family and the session.
    Reused { family_id: Uuid, user_id: Uuid, session_id: Uuid },
    /// Unknown, expired or revoked.
    Invalid,
}

/// A new random token and the hash stored for it.
pub(crate) fn generate() -> (String, [u8; 32]) {
    let mut raw = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut raw);
    (URL_SAFE_NO_PAD.encode(raw), hash(&raw))
}

/// The stored hash of a presented token, or `None` if it cannot be one of ours.
pub(crate) fn hash_presented(token: &str) -> Option<[u8; 32]> {
    // 32 bytes encode to exactly 43 characters; checking first bounds the work on junk.
    if token.len() != 43 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    (raw.len() == TOKEN_BYTES).then(|| hash(&raw))
}

fn hash(raw: &[u8]) -> [u8; 32] {
    Sha256::digest(raw).into()
}

const INSERT: &str = "INSERT INTO refresh_tokens \
    (token_hash, family_id, user_id, session_id, issued_at, expires_at, spent_at, revoked_at) \
    VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)";

const SPEND: &str = "UPDATE refresh_tokens SET spent_at = $1 \
    WHERE token_hash = $2 AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
    RETURNING family_id, user_id, session_id";

const LOOKUP: &str = "SELECT family_id, user_id, session_id, expires_at, spent_at, revoked_at \
    FROM refresh_tokens WHERE token_hash = $1";

const REVOKE_FAMILY: &str =
    "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL";

const REVOKE_SESSION: &str =
    "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND session_id = $3 AND revoked_at IS NULL";

const REVOKE_USER: &str = "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL";

const PURGE: &str = "DELETE FROM refresh_tokens WHERE expires_at <= $1";

/// Stores the first token of a new family.
pub(crate) async fn insert_family(
    db: &Db,
    hash: &[u8; 32],
    user_id: Uuid,
    session_id: Uuid,
    now_ms: i64,
    expires_at: i64,
) -> Result<Uuid, TokenError> {
    let family_id = Uuid::new_v4();
    on_db!(db, |pool| {
        sqlx::query(INSERT)
            .bind(&hash[..])
            .bind(family_id)
            .bind(user_id)
            .bind(session_id)
            .bind(now_ms)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(drop)
    })?;
    Ok(family_id)
}

/// Spends the token with hash `hash` and stores its successor, atomically; or says why not.
pub(crate) async fn rotate(db: &Db, hash: &[u8; 32], now_ms: i64, ttl_ms: i64) -> Result<Rotation, TokenError> {
    let (new_token, new_hash) = generate();
    let expires_at = now_ms.saturating_add(ttl_ms);
    let spent: Option<(Uuid, Uuid, Uuid)> = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let row: Option<(Uuid, Uuid, Uuid)> =
            sqlx::query_as(SPEND).bind(now_ms).bind(&hash[..]).fetch_optional(&mut *tx).await?;
        if let Some((family_id, user_id, session_id)) = row {
            sqlx::query(INSERT)
                .bind(&new_hash[..])
                .bind(family_id)
                .bind(user_id)
                .bind(session_id)
                .bind(now_ms)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok::<_, sqlx::Error>(row)
    })?;
    if let Some((_, user_id, session_id)) = spent {
        return Ok(Rotation::Rotated { user_id, session_id, new_token });
    }
    Ok(match lookup(db, hash).await? {
        // Spent is reuse whatever else is true of it: the family may have been revoked already
        // (revoking again is harmless) or expired, but someone holds a copy of a spent token.
        Some(row) if row.spent_at.is_some() => {
            Rotation::Reused { family_id: row.family_id, user_id: row.user_id, session_id: row.session_id }
        }
        _ => Rotation::Invalid,
    })
}

pub(crate) async fn lookup(db: &Db, hash: &[u8; 32]) -> Result<Option<Row>, TokenError> {
    type Tuple = (Uuid, Uuid, Uuid, i64, Option<i64>, Option<i64>);
    let row: Option<Tuple> =
        on_db!(db, |pool| sqlx::query_as(LOOKUP).bind(&hash[..]).fetch_optional(pool).await)?;
    Ok(row.map(|(family_id, user_id, session_id, expires_at, spent_at, revoked_at)| Row {
        family_id,
        user_id,
        session_id,
        expires_at,
        spent_at,
        revoked_at,
    }))
}

/// Revokes every token of a family; returns how many rows changed.
pub(crate) async fn revoke_family(db: &Db, family_id: Uuid, now_ms: i64) -> Result<u64, TokenError> {
    let r = on_db!(db, |pool| sqlx::query(REVOKE_FAMILY).bind(now_ms).bind(family_id).execute(pool).await
        .map(|r| r.rows_affected()))?;
    Ok(r)
}

/// Revokes every family of one session.
pub(crate) async fn revoke_session(db: &Db, user_id: Uuid, session_id: Uuid, now_ms: i64) -> Result<u64, TokenError> {
    let r = on_db!(db, |pool| sqlx::query(REVOKE_SESSION)
        .bind(now_ms)
        .bind(user_id)
        .bind(session_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(r)
}

/// Revokes every family of one user.
pub(crate) async fn revoke_user(db: &Db, user_id: Uuid, now_ms: i64) -> Result<u64, TokenError> {
    let r = on_db!(db, |pool| sqlx::query(REVOKE_USER).bind(now_ms).bind(user_id).execute(pool).await
        .map(|r| r.rows_affected()))?;
    Ok(r)
}

/// Deletes rows that expired before `before_ms`; they can neither rotate nor prove reuse any more
/// (a spent token presented after its own expiry is treated as invalid only once it is purged).
pub(crate) async fn purge_expired(db: &Db, before_ms: i64) -> Result<u64, TokenError> {
    let r = on_db!(db, |pool| sqlx::query(PURGE).bind(before_ms).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(r)
}
