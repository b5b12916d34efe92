//! Refresh tokens and revocation through `Tokens`, on the real Postgres and on SQLite: rotation,
//! reuse detection, concurrent rotation, expiry, logout and logout-all.

mod common;

use std::sync::Arc;

use migrations::Db;
use token_service::{TokenError, Tokens};
use uuid::Uuid;

use common::T0;

migrations::both_backends!(
    rotation_spends_the_token_and_reuse_revokes_family_and_session,
    concurrent_rotations_of_one_token_have_exactly_one_winner,
    expired_and_unknown_refresh_tokens_are_invalid,
    logout_revokes_the_session_and_its_families_only,
    logout_all_revokes_every_earlier_token_but_not_later_ones,
    expired_rows_are_purged,
);

fn assert_err(result: Result<impl std::fmt::Debug, TokenError>, expected: &str) {
    match result {
        Err(e) => assert_eq!(e.reason(), expected, "{e}"),
        Ok(v) => panic!("expected {expected}, got Ok({v:?})"),
    }
}

async fn rotation_spends_the_token_and_reuse_revokes_family_and_session(db: Db) {
    let tokens = common::tokens(&db);
    let user = common::user(&db).await;
    let (session, other_session) = (Uuid::new_v4(), Uuid::new_v4());
    let access = tokens.mint_session(user, "ada", session, T0).expect("mint").token;
    let other_access = tokens.mint_session(user, "ada", other_session, T0).expect("mint").token;
    let r1 = tokens.issue_refresh(user, session, T0).await.expect("issue");
    let other_refresh = tokens.issue_refresh(user, other_session, T0).await.expect("issue");
    assert_eq!(r1.len(), 43, "256 bits in unpadded base64url");

    let g = tokens.rotate_refresh(&r1, T0 + 1000).await.expect("first rotation");
    assert_eq!((g.user_id, g.session_id), (user, session));
    assert_ne!(g.refresh_token, r1);
    let g2 = tokens.rotate_refresh(&g.refresh_token, T0 + 2000).await.expect("successor rotates");
    assert!(tokens.verify_session(&access, T0 + 2000).is_ok(), "rotation leaves the session alone");

    // r1 again: reuse. The family (including g2's token) and the session die.
    assert_err(tokens.rotate_refresh(&r1, T0 + 3000).await, "refresh_reused");
    assert_eq!(
        tokens.rotate_refresh(&r1, T0 + 3000).await.err().map(|e| e.code()),
        Some(protocol::ErrorCode::RefreshTokenReused),
        "every later presentation is reuse too"
    );
    assert_err(tokens.rotate_refresh(&g2.refresh_token, T0 + 4000).await, "refresh_invalid");
    assert_err(tokens.verify_session(&access, T0 + 4000), "revoked");
    // A session token minted later for the same session is refused too.
    let late = tokens.mint_session(user, "ada", session, T0 + 5000).expect("mint").token;
    assert_err(tokens.verify_session(&late, T0 + 5000), "revoked");

    // The user's other session is untouched.
    assert!(tokens.verify_session(&other_access, T0 + 4000).is_ok());
    assert!(tokens.rotate_refresh(&other_refresh, T0 + 4000).await.is_ok());
}

async fn concurrent_rotations_of_one_token_have_exactly_one_winner(db: Db) {
    let tokens = common::tokens(&db);
    let user = common::user(&db).await;
    for round in 0..8 {
        let token = tokens.issue_refresh(user, Uuid::new_v4(), T0).await.expect("issue");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |tokens: Tokens, token: String, barrier: Arc<tokio::sync::Barrier>| {
            tokio::spawn(async move {
                barrier.wait().await;
                tokens.rotate_refresh(&token, T0 + 1000).await
            })
        };
        let a = race(tokens.clone(), token.clone(), barrier.clone());
        let b = race(tokens.clone(), token.clone(), barrier);
        let outcomes = [a.await.expect("task a"), b.await.expect("task b")];
        let wins: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        let reused = outcomes.iter().filter(|o| matches!(o, Err(TokenError::RefreshReused))).count();
        assert_eq!((wins.len(), reused), (1, 1), "round {round}: {outcomes:?}");
        // The loser's reuse revoked the family, so the winner's successor is dead as well.
        assert_err(tokens.rotate_refresh(&wins[0].refresh_token, T0 + 2000).await, "refresh_invalid");
    }
}

async fn expired_and_unknown_refresh_tokens_are_invalid(db: Db) {
    let tokens = common::tokens(&db);
    let user = common::user(&db).await;
    let ttl_ms = tokens.config().refresh_ttl_s as i64 * 1000;
    assert_eq!(ttl_ms, 30 * 86_400_000, "default refresh lifetime is 30 days");
    let a = tokens.issue_refresh(user, Uuid::new_v4(), T0).await.expect("issue");
    let b = tokens.issue_refresh(user, Uuid::new_v4(), T0).await.expect("issue");
    assert!(tokens.rotate_refresh(&a, T0 + ttl_ms - 1).await.is_ok(), "valid until its last millisecond");
    assert_err(tokens.rotate_refresh(&b, T0 + ttl_ms).await, "refresh_invalid");
    assert_err(tokens.rotate_refresh(&b, T0 + ttl_ms + 1).await, "refresh_invalid");

    let unknown = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 32]);
    for junk in ["", "abc", &"!".repeat(43), &"A".repeat(44), &unknown] {
        assert_err(tokens.rotate_refresh(junk, T0).await, "refresh_invalid");
    }
    assert_eq!(
        tokens.rotate_refresh("abc", T0).await.err().map(|e| e.code()),
        Some(protocol::ErrorCode::RefreshTokenInvalid)
    );
}

async fn logout_revokes_the_session_and_its_families_only(db: Db) {
    let tokens = common::tokens(&db);
    let user = common::user(&db).await;
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    let a1 = tokens.mint_session(user, "ada", s1, T0).expect("mint").token;
    let a2 = tokens.mint_session(user, "ada", s2, T0).expect("mint").token;
    let r1 = tokens.issue_refresh(user, s1, T0).await.expect("issue");
    let r2 = tokens.issue_refresh(user, s2, T0).await.expect("issue");

    tokens.revoke_session(user, s1, T0 + 1000).await.expect("logout");
    assert_err(tokens.verify_session(&a1, T0 + 1000), "revoked");
    assert_eq!(
        tokens.verify_session(&a1, T0 + 1000).err().map(|e| e.code()),
        Some(protocol::ErrorCode::TokenRevoked)
    );
    assert_err(tokens.rotate_refresh(&r1, T0 + 1000).await, "refresh_invalid");
    assert!(tokens.verify_session(&a2, T0 + 1000).is_ok());
    assert!(tokens.rotate_refresh(&r2, T0 + 1000).await.is_ok());
    // Logging out twice is harmless.
    tokens.revoke_session(user, s1, T0 + 2000).await.expect("second logout");
}

async fn logout_all_revokes_every_earlier_token_but_not_later_ones(db: Db) {
    let tokens = common::tokens(&db);
    let user = common::user(&db).await;
    let bystander = common::user(&db).await;
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    let a1 = tokens.mint_session(user, "ada", s1, T0).expect("mint").token;
    let a2 = tokens.mint_session(user, "ada", s2, T0 + 500).expect("mint").token;
    let r1 = tokens.issue_refresh(user, s1, T0).await.expect("issue");
    let r2 = tokens.issue_refresh(user, s2, T0).await.expect("issue");
    let b = tokens.mint_session(bystander, "bob", Uuid::new_v4(), T0).expect("mint").token;
    let rb = tokens.issue_refresh(bystander, Uuid::new_v4(), T0).await.expect("issue");

    let cutoff = T0 + 1000;
    let just_before = tokens.mint_session(user, "ada", Uuid::new_v4(), cutoff - 1).expect("mint").token;
    tokens.revoke_user(user, cutoff).await.expect("logout all");
    for (name, t) in [("a1", &a1), ("a2", &a2), ("minted 1 ms before", &just_before)] {
        assert!(matches!(tokens.verify_session(t, cutoff), Err(TokenError::Revoked)), "{name}");
    }
    assert_err(tokens.rotate_refresh(&r1, cutoff).await, "refresh_invalid");
    assert_err(tokens.rotate_refresh(&r2, cutoff).await, "refresh_invalid");

    // A token minted in the very millisecond of the logout-all is revoked too (a login answered
    // then must not survive it); one minted after works, in the same second as the cutoff too.
    let same_ms = tokens.mint_session(user, "ada", Uuid::new_v4(), cutoff).expect("mint").token;
    let after = tokens.mint_session(user, "ada", Uuid::new_v4(), cutoff + 1).expect("mint").token;
    assert!(matches!(tokens.verify_session(&same_ms, cutoff + 1), Err(TokenError::Revoked)));
    assert!(tokens.verify_session(&after, cutoff + 1).is_ok());
    let fresh = tokens.issue_refresh(user, Uuid::new_v4(), cutoff + 1).await.expect("issue");
    assert!(tokens.rotate_refresh(&fresh, cutoff + 2).await.is_ok());

    // Other users are untouched.
    assert!(tokens.verify_session(&b, cutoff).is_ok());
    assert!(tokens.rotate_refresh(&rb, cutoff).await.is_ok());

    // The revocation outlives every token it concerns, then it is no longer needed.
    let expiry = T0 + tokens.config().session_ttl_s as i64 * 1000;
    assert!(matches!(tokens.verify_session(&a1, expiry), Err(TokenError::Revoked)));
    assert!(matches!(tokens.verify_session(&a1, expiry + 10_000), Err(TokenError::Expired)));
}

async fn expired_rows_are_purged(db: Db) {
    let tokens = common::tokens(&db);
    let user = common::user(&db).await;
    let ttl_ms = tokens.config().refresh_ttl_s as i64 * 1000;
    let old = tokens.issue_refresh(user, Uuid::new_v4(), T0).await.expect("issue");
    let young = tokens.issue_refresh(user, Uuid::new_v4(), T0 + 10_000).await.expect("issue");
    assert_eq!(tokens.purge_expired_refresh(T0 + ttl_ms).await.expect("purge"), 1);
    assert_err(tokens.rotate_refresh(&old, T0 + 1).await, "refresh_invalid");
    assert!(tokens.rotate_refresh(&young, T0 + 20_000).await.is_ok());
}
