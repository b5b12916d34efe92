//! Helpers shared by the integration tests: users to hang refresh tokens on, and a `Tokens` over
//! a given database.

#![allow(dead_code)]

use std::sync::Arc;

use migrations::{Db, on_db};
use token_service::{InProcessRevocations, Keyring, TokenConfig, Tokens};
use uuid::Uuid;

/// A fixed clock reading for tests that drive time by hand.
pub const T0: i64 = 1_700_000_000_000;

/// Inserts a user row (refresh tokens reference `users`) and returns its id.
pub async fn user(db: &Db) -> Uuid {
    let id = Uuid::new_v4();
    let name = format!("u{}", &id.simple().to_string()[..12]);
    on_db!(db, |pool| sqlx::query(
        "INSERT INTO users (id, username, username_key, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(id)
    .bind(&name)
    .bind(&name)
    .bind(&name)
    .bind(T0)
    .bind(T0)
    .execute(pool)
    .await
    .map(drop))
    .expect("insert test user");
    id
}

/// `Tokens` with a fresh keyring, default lifetimes and in-process revocations.
pub fn tokens(db: &Db) -> Tokens {
    Tokens::new(Keyring::generate(), TokenConfig::default(), db.clone(), Arc::new(InProcessRevocations::new()))
}

/// `Tokens` over `ring` with default lifetimes and in-process revocations.
pub fn tokens_with_ring(db: &Db, ring: Keyring) -> Tokens {
    Tokens::new(ring, TokenConfig::default(), db.clone(), Arc::new(InProcessRevocations::new()))
}
