//! Join tokens: accepted once, for one match on one instance, for at most a minute.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use migrations::testing::TestDb;
use token_service::join::MAX_JOIN_TTL_S;
use token_service::{JoinIssuer, JoinVerifier, Keyring, SigningKey, TokenConfig, TokenError};
use uuid::Uuid;

use common::T0;

fn ring(kid: &str, byte: u8) -> Keyring {
    Keyring::new(SigningKey { kid: kid.into(), secret: vec![byte; 32] }, vec![]).expect("valid key")
}

/// Verifies and compares the outcome's variant with `expected`.
fn check(v: &JoinVerifier, name: &str, token: &str, match_id: Uuid, instance: &str, now: i64, expected: Result<(), &str>) {
    let got = v.verify(token, match_id, instance, now);
    match (&got, expected) {
        (Ok(_), Ok(())) => {}
        (Err(e), Err(reason)) => assert_eq!(e.reason(), reason, "{name}: {e}"),
        _ => panic!("{name}: got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn join_tokens_are_single_use_and_bound_to_match_instance_and_time() {
    let keys = ring("k1", 1);
    let issuer = JoinIssuer::new(keys.clone(), 30).expect("ttl");
    let v = JoinVerifier::new(keys.clone(), 1000);
    let (m, u) = (Uuid::new_v4(), Uuid::new_v4());
    let mint = || issuer.mint(m, u, "inst-7", T0).expect("mint");

    let good = mint();
    let claims = v.verify(&good, m, "inst-7", T0 + 1).expect("first use");
    assert_eq!((claims.match_id, claims.user_id, claims.instance_id.as_str()), (m, u, "inst-7"));
    assert_eq!(claims.expires_at_ms, T0 + 30_000);
    check(&v, "replayed", &good, m, "inst-7", T0 + 2, Err("join_replayed"));

    let t = mint();
    check(&v, "wrong match", &t, Uuid::new_v4(), "inst-7", T0, Err("join_wrong_match"));
    check(&v, "wrong instance", &t, m, "inst-8", T0, Err("join_wrong_match"));
    check(&v, "not burnt by the wrong server", &t, m, "inst-7", T0, Ok(()));

    // A separate verifier: a verifier never lets its clock go back (see `JoinVerifier`).
    let t = mint();
    let late = JoinVerifier::new(keys.clone(), 1000);
    check(&late, "expired", &t, m, "inst-7", T0 + 30_000, Err("join_expired"));
    check(&late, "expired, a clock behind", &t, m, "inst-7", T0, Err("join_expired"));
    check(&v, "one ms before expiry", &t, m, "inst-7", T0 + 29_999, Ok(()));

    // Forgeries: payload changed, tag changed, another key under the same id, an unknown id.
    let t = mint();
    let (p, tag) = t.split_once('.').expect("two parts");
    let mut payload = URL_SAFE_NO_PAD.decode(p).expect("b64");
    let last = payload.len() - 17; // a byte of the expiry
    payload[last] ^= 1;
    let tampered = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(&payload));
    let mut tag_bytes = URL_SAFE_NO_PAD.decode(tag).expect("b64");
    tag_bytes[0] ^= 0x80;
    let bad_tag = format!("{p}.{}", URL_SAFE_NO_PAD.encode(&tag_bytes));
    let same_kid_other_secret = JoinIssuer::new(ring("k1", 2), 30).expect("ttl").mint(m, u, "inst-7", T0).expect("mint");
    let unknown_kid = JoinIssuer::new(ring("k9", 1), 30).expect("ttl").mint(m, u, "inst-7", T0).expect("mint");
    check(&v, "tampered payload", &tampered, m, "inst-7", T0, Err("join_invalid"));
    check(&v, "tampered tag", &bad_tag, m, "inst-7", T0, Err("join_invalid"));
    check(&v, "other secret", &same_kid_other_secret, m, "inst-7", T0, Err("join_invalid"));
    check(&v, "unknown kid", &unknown_kid, m, "inst-7", T0, Err("unknown_key"));
    for junk in ["", ".", "abc", "a.b", "a.b.c", &"A".repeat(700), "é.é"] {
        check(&v, "junk", junk, m, "inst-7", T0, Err("join_invalid"));
    }
    check(&v, "the untouched original still works", &t, m, "inst-7", T0, Ok(()));

    let code = |r: Result<_, TokenError>| r.err().map(|e| e.code());
    assert_eq!(code(v.verify(&good, m, "inst-7", T0)), Some(protocol::ErrorCode::JoinTokenReplayed));
    assert_eq!(code(v.verify(&bad_tag, m, "inst-7", T0)), Some(protocol::ErrorCode::JoinTokenInvalid));
    assert_eq!(code(v.verify(&mint(), m, "x", T0)), Some(protocol::ErrorCode::JoinTokenWrongMatch));
}

#[test]
fn join_and_session_tokens_never_pass_for_each_other() {
    let keys = ring("k1", 1);
    let join = JoinIssuer::new(keys.clone(), 30).expect("ttl").mint(Uuid::nil(), Uuid::nil(), "i", T0).expect("mint");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let db = TestDb::sqlite().await;
        let tokens = common::tokens_with_ring(&db.db, keys.clone());
        assert!(tokens.verify_session(&join, T0).is_err());
        let session = tokens.mint_session(Uuid::nil(), "a", Uuid::nil(), T0).expect("mint").token;
        let v = JoinVerifier::new(keys, 8);
        assert!(matches!(v.verify(&session, Uuid::nil(), "i", T0), Err(TokenError::JoinInvalid)));
        db.drop_db().await;
    });
}

#[test]
fn lifetime_is_capped_at_a_minute() {
    let keys = ring("k1", 1);
    assert!(matches!(JoinIssuer::new(keys.clone(), MAX_JOIN_TTL_S + 1), Err(TokenError::InvalidInput { .. })));
    assert!(matches!(JoinIssuer::new(keys.clone(), 0), Err(TokenError::InvalidInput { .. })));
    let longest = JoinIssuer::new(keys.clone(), MAX_JOIN_TTL_S).expect("60 s is allowed");
    assert_eq!(longest.ttl_ms(), 60_000);
    assert!(TokenConfig { join_ttl_s: 61, ..TokenConfig::default() }.validate().is_err());
    assert!(TokenConfig { join_ttl_s: 60, ..TokenConfig::default() }.validate().is_ok());

    // A configured lifetime above the cap is clamped by Tokens.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let db = TestDb::sqlite().await;
        let cfg = TokenConfig { join_ttl_s: 3600, ..TokenConfig::default() };
        let tokens = token_service::Tokens::new(
            keys.clone(),
            cfg,
            db.db.clone(),
            std::sync::Arc::new(token_service::InProcessRevocations::new()),
        );
        assert_eq!(tokens.join_issuer().ttl_ms(), 60_000);
        let t = tokens.mint_join(Uuid::nil(), Uuid::nil(), "i", T0).expect("mint");
        let claims = JoinVerifier::new(keys.clone(), 8).verify(&t, Uuid::nil(), "i", T0).expect("verify");
        assert_eq!(claims.expires_at_ms, T0 + 60_000);
        db.drop_db().await;
    });

    let issuer = JoinIssuer::new(keys.clone(), 30).expect("ttl");
    assert!(matches!(issuer.mint(Uuid::nil(), Uuid::nil(), "", T0), Err(TokenError::InvalidInput { .. })));
    assert!(matches!(issuer.mint(Uuid::nil(), Uuid::nil(), &"i".repeat(129), T0), Err(TokenError::InvalidInput { .. })));
    assert!(issuer.mint(Uuid::nil(), Uuid::nil(), &"i".repeat(128), T0).is_ok());
}

#[test]
fn a_full_verifier_refuses_rather_than_forgets() {
    let keys = ring("k1", 1);
    let issuer = JoinIssuer::new(keys.clone(), 10).expect("ttl");
    let v = JoinVerifier::new(keys, 2);
    let m = Uuid::new_v4();
    let t: Vec<String> = (0..3).map(|_| issuer.mint(m, Uuid::new_v4(), "i", T0).expect("mint")).collect();
    assert!(v.verify(&t[0], m, "i", T0).is_ok());
    assert!(v.verify(&t[1], m, "i", T0).is_ok());
    assert!(matches!(v.verify(&t[2], m, "i", T0), Err(TokenError::JoinCapacity { max: 2 })));
    assert_eq!(v.verify(&t[2], m, "i", T0).err().map(|e| e.code()), Some(protocol::ErrorCode::Unavailable));
    assert!(matches!(v.verify(&t[0], m, "i", T0), Err(TokenError::JoinReplayed)), "old nonces are kept");
    assert_eq!(v.tracked(), 2);
    // Once the first two expire they are forgotten, making room.
    let later = issuer.mint(m, Uuid::new_v4(), "i", T0 + 10_000).expect("mint");
    assert!(v.verify(&later, m, "i", T0 + 10_000).is_ok());
    assert_eq!(v.tracked(), 1);
}

#[test]
fn a_verifier_with_the_old_key_accepts_tokens_after_rotation() {
    let mut keys = ring("k1", 1);
    let before = JoinIssuer::new(keys.clone(), 30).expect("ttl").mint(Uuid::nil(), Uuid::nil(), "i", T0).expect("mint");
    keys.rotate(SigningKey { kid: "k2".into(), secret: vec![2; 32] }).expect("rotate");
    let after = JoinIssuer::new(keys.clone(), 30).expect("ttl").mint(Uuid::nil(), Uuid::nil(), "i", T0).expect("mint");
    let v = JoinVerifier::new(keys, 8);
    assert!(v.verify(&before, Uuid::nil(), "i", T0).is_ok());
    assert!(v.verify(&after, Uuid::nil(), "i", T0).is_ok());
}
