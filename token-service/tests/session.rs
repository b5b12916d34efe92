//! Session token verification: what is accepted and every way a token is refused.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use migrations::testing::TestDb;
use token_service::session::EXPIRY_LEEWAY_S;
use token_service::{Keyring, SigningKey, Tokens};
use uuid::Uuid;

use common::T0;

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.');
    let (h, p, s) = (it.next(), it.next(), it.next());
    (h.unwrap_or_default().into(), p.unwrap_or_default().into(), s.unwrap_or_default().into())
}

/// Verifies `token` at `now` and compares the outcome's variant with `expected`.
fn check(tokens: &Tokens, name: &str, token: &str, now: i64, expected: Result<(), &str>) {
    let got = tokens.verify_session(token, now);
    match (&got, expected) {
        (Ok(_), Ok(())) => {}
        (Err(e), Err(reason)) => assert_eq!(e.reason(), reason, "{name}: {e}"),
        _ => panic!("{name}: got {got:?}, expected {expected:?}"),
    }
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let db = TestDb::sqlite().await;
    let ring = Keyring::new(SigningKey { kid: "k1".into(), secret: vec![1; 32] }, vec![]).expect("key");
    let tokens = common::tokens_with_ring(&db.db, ring);
    let good = tokens.mint_session(Uuid::new_v4(), "ada", Uuid::new_v4(), T0).expect("mint").token;
    let (h, p, s) = parts(&good);

    // A signature byte flipped in the middle (the last character may only carry padding bits).
    let mut sig: Vec<u8> = s.clone().into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged_sig = format!("{h}.{p}.{}", String::from_utf8(sig).expect("ascii"));

    // Claims changed, signature kept.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p).expect("b64")).expect("json");
    claims["usn"] = "admin".into();
    let tampered = format!("{h}.{}.{s}", b64(&claims));

    let none = format!("{}.{p}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k1"})));
    let none_upper = format!("{}.{p}.", b64(&serde_json::json!({"alg": "NONE", "kid": "k1"})));
    let rs256 = format!("{}.{p}.{s}", b64(&serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "k1"})));
    let hs512 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&[1; 32])).expect("encode")
    };
    let no_kid = format!("{}.{p}.{s}", b64(&serde_json::json!({"alg": "HS256", "typ": "JWT"})));
    let wrong_kid = format!("{}.{p}.{s}", b64(&serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k9"})));
    // Same kid, different secret: a token from another deployment or an attacker's guess.
    let other_ring = Keyring::new(SigningKey { kid: "k1".into(), secret: vec![2; 32] }, vec![]).expect("key");
    let other = common::tokens_with_ring(&db.db, other_ring)
        .mint_session(Uuid::new_v4(), "ada", Uuid::new_v4(), T0)
        .expect("mint")
        .token;
    let bad_sub = {
        let mut c = claims.clone();
        c["sub"] = "not-a-uuid".into();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &c, &jsonwebtoken::EncodingKey::from_secret(&[1; 32])).expect("encode")
    };

    check(&tokens, "good", &good, T0, Ok(()));
    check(&tokens, "forged signature", &forged_sig, T0, Err("bad_signature"));
    check(&tokens, "tampered claims", &tampered, T0, Err("bad_signature"));
    check(&tokens, "alg none", &none, T0, Err("bad_algorithm"));
    check(&tokens, "alg NONE", &none_upper, T0, Err("bad_algorithm"));
    check(&tokens, "alg RS256", &rs256, T0, Err("bad_algorithm"));
    check(&tokens, "alg HS512", &hs512, T0, Err("bad_algorithm"));
    check(&tokens, "no kid", &no_kid, T0, Err("malformed"));
    check(&tokens, "unknown kid", &wrong_kid, T0, Err("unknown_key"));
    check(&tokens, "other secret, same kid", &other, T0, Err("bad_signature"));
    check(&tokens, "sub not a uuid", &bad_sub, T0, Err("malformed"));
    check(&tokens, "empty", "", T0, Err("malformed"));
    check(&tokens, "garbage", "abc", T0, Err("malformed"));
    check(&tokens, "two parts", &format!("{h}.{p}"), T0, Err("malformed"));
    check(&tokens, "huge", &"a.".repeat(5000), T0, Err("malformed"));
    check(&tokens, "non-ascii", "é.é.é", T0, Err("malformed"));

    // Every refusal maps to a stable code a client can act on.
    let code = |t: &str| tokens.verify_session(t, T0).err().map(|e| e.code());
    assert_eq!(code(&forged_sig), Some(protocol::ErrorCode::TokenInvalid));
    assert_eq!(code(&none), Some(protocol::ErrorCode::TokenInvalid));
    assert_eq!(code(&wrong_kid), Some(protocol::ErrorCode::UnknownKey));
    db.drop_db().await;
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime_plus_the_leeway() {
    let db = TestDb::sqlite().await;
    let tokens = common::tokens(&db.db);
    let ttl_ms = tokens.config().session_ttl_s as i64 * 1000;
    assert_eq!(ttl_ms, 900_000, "default lifetime is 15 minutes");
    let minted = tokens.mint_session(Uuid::new_v4(), "ada", Uuid::new_v4(), T0).expect("mint");
    assert_eq!(minted.expires_at_ms, T0 + ttl_ms);
    let deadline = minted.expires_at_ms + EXPIRY_LEEWAY_S * 1000;
    check(&tokens, "just minted", &minted.token, T0, Ok(()));
    check(&tokens, "at exp, inside leeway", &minted.token, minted.expires_at_ms, Ok(()));
    check(&tokens, "last leeway ms", &minted.token, deadline - 1, Ok(()));
    check(&tokens, "past leeway", &minted.token, deadline, Err("expired"));
    check(&tokens, "long after", &minted.token, T0 + 86_400_000, Err("expired"));
    assert_eq!(
        tokens.verify_session(&minted.token, deadline).err().map(|e| e.code()),
        Some(protocol::ErrorCode::TokenExpired)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn verified_claims_are_the_minted_ones() {
    let db = TestDb::sqlite().await;
    let tokens = common::tokens(&db.db);
    let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
    let minted = tokens.mint_session(user, "Ådä ✓", session, T0 + 123).expect("mint");
    let c = tokens.verify_session(&minted.token, T0 + 1000).expect("verify");
    assert_eq!((c.user_id, c.session_id, c.username.as_str()), (user, session, "Ådä ✓"));
    assert_eq!((c.issued_at_s, c.issued_at_ms), (T0 / 1000, T0 + 123));
    assert_eq!(c.expires_at_s, T0 / 1000 + 900);
    assert_eq!(c.kid, tokens.keyring().active_kid());
    // The JWT carries the documented claims and header.
    let (h, p, _) = parts(&minted.token);
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json");
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], tokens.keyring().active_kid());
    let body: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("b64")).expect("json");
    for claim in ["sub", "usn", "sid", "iat", "exp"] {
        assert!(body.get(claim).is_some(), "claim {claim} missing from {body}");
    }
    assert!(matches!(tokens.verify_session(&minted.token, T0), Ok(_)));
    db.drop_db().await;
}
