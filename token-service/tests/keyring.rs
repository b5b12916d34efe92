//! Keyring behaviour: rotation (old keys verify, the new key signs, retired keys are unknown),
//! key validation, and the key file of the embedded default.

mod common;

use migrations::testing::TestDb;
use token_service::{JoinIssuer, JoinVerifier, Keyring, SigningKey, TokenError, Tokens};
use uuid::Uuid;

use common::T0;

fn key(kid: &str, byte: u8) -> SigningKey {
    SigningKey { kid: kid.to_owned(), secret: vec![byte; 32] }
}

fn tokens_with(db: &TestDb, ring: Keyring) -> Tokens {
    Tokens::new(
        ring,
        token_service::TokenConfig::default(),
        db.db.clone(),
        std::sync::Arc::new(token_service::InProcessRevocations::new()),
    )
}

#[tokio::test]
async fn rotation_signs_with_the_new_key_and_still_verifies_the_old_one() {
    let db = TestDb::sqlite().await;
    let ring1 = Keyring::new(key("k1", 1), vec![]).expect("valid key");
    let old = tokens_with(&db, ring1.clone()).mint_session(Uuid::new_v4(), "ada", Uuid::new_v4(), T0).expect("mint");

    let mut ring2 = ring1.clone();
    ring2.rotate(key("k2", 2)).expect("rotate");
    assert_eq!(ring2.active_kid(), "k2");
    assert_eq!(ring2.kids(), vec!["k2", "k1"]);
    assert_eq!(ring1.active_kid(), "k1", "rotating a clone leaves the original alone");
    let t2 = tokens_with(&db, ring2.clone());
    assert_eq!(t2.verify_session(&old.token, T0).expect("old key still verifies").kid, "k1");
    let new = t2.mint_session(Uuid::new_v4(), "bob", Uuid::new_v4(), T0).expect("mint");
    assert_eq!(t2.verify_session(&new.token, T0).expect("new key verifies").kid, "k2");

    let mut ring3 = ring2.clone();
    assert!(!ring3.retire("k2"), "the active key cannot be retired");
    assert!(ring3.retire("k1"));
    assert!(!ring3.contains("k1"));
    let t3 = tokens_with(&db, ring3);
    match t3.verify_session(&old.token, T0) {
        Err(TokenError::UnknownKey { kid }) => assert_eq!(kid, "k1"),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    assert!(t3.verify_session(&new.token, T0).is_ok());
    // A keyring built from scratch without the old key says the same.
    let t4 = tokens_with(&db, Keyring::new(key("k2", 2), vec![]).expect("valid"));
    assert!(matches!(t4.verify_session(&old.token, T0), Err(TokenError::UnknownKey { .. })));
    db.drop_db().await;
}

#[test]
fn bad_keys_are_refused() {
    fn check(result: Result<Keyring, TokenError>, expected: &str) {
        match result {
            Err(e) => assert!(e.to_string().contains(expected), "{e} lacks {expected:?}"),
            Ok(r) => panic!("expected an error containing {expected:?}, got {r:?}"),
        }
    }
    check(Keyring::new(SigningKey { kid: "k".into(), secret: vec![0; 31] }, vec![]), "31 bytes");
    check(Keyring::new(key("k1", 1), vec![SigningKey { kid: "k0".into(), secret: vec![] }]), "0 bytes");
    check(Keyring::new(key("k1", 1), vec![key("k1", 2)]), "appears twice");
    check(Keyring::new(key("", 1), vec![]), "key id");
    check(Keyring::new(key("a b", 1), vec![]), "key id");
    check(Keyring::new(key(&"x".repeat(65), 1), vec![]), "key id");
    assert!(matches!(
        Keyring::new(SigningKey { kid: "k".into(), secret: vec![0; 16] }, vec![]),
        Err(TokenError::KeyTooShort { len: 16, .. })
    ));
    assert!(matches!(SigningKey::from_base64("k", "!!!"), Err(TokenError::InvalidKey(_))));
    let b64 = key("k", 9).secret_base64();
    assert_eq!(SigningKey::from_base64("k", &b64).expect("valid base64").secret, vec![9; 32]);

    let mut ring = Keyring::new(key("k1", 1), vec![key("k0", 0)]).expect("valid");
    assert!(matches!(ring.rotate(key("k0", 5)), Err(TokenError::InvalidKey(_))), "ids are never reused");
    assert!(matches!(ring.rotate(SigningKey { kid: "k2".into(), secret: vec![1; 8] }), Err(TokenError::KeyTooShort { .. })));
    assert_eq!(ring.active_kid(), "k1", "a refused rotation changes nothing");
}

#[test]
fn generated_keys_are_random_and_secrets_stay_out_of_debug_output() {
    let (a, b) = (SigningKey::generate(), SigningKey::generate());
    assert_ne!(a.kid, b.kid);
    assert_ne!(a.secret, b.secret);
    assert_eq!(a.secret.len(), 32);
    let shown = format!("{a:?}");
    assert!(!shown.contains(&a.secret_base64()) && shown.contains("redacted"), "{shown}");
    assert_ne!(Keyring::generate().active_kid(), Keyring::generate().active_kid());
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tavern_keys_{}", Uuid::new_v4().simple())).join("nested").join(name)
}

#[test]
fn key_file_is_created_private_and_reused_on_restart() {
    let path = temp_path("keys.json");
    let first = Keyring::load_or_create(&path).expect("create");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode is {mode:o}");
    }
    let second = Keyring::load_or_create(&path).expect("reload");
    assert_eq!(first.active_kid(), second.active_kid());
    // The reloaded keyring holds the same secret: what one minted, the other verifies.
    let token = JoinIssuer::new(first, 30).expect("ttl").mint(Uuid::nil(), Uuid::nil(), "i", T0).expect("mint");
    assert!(JoinVerifier::new(second.clone(), 8).verify(&token, Uuid::nil(), "i", T0).is_ok());

    // Saving a rotated keyring keeps every key; the next start picks it up.
    let mut rotated = second;
    rotated.rotate(SigningKey::generate()).expect("rotate");
    rotated.save(&path).expect("save");
    let reloaded = Keyring::load_or_create(&path).expect("reload rotated");
    assert_eq!(reloaded.kids(), rotated.kids());
    let dir = path.parent().and_then(|p| p.parent()).expect("temp dir");
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir")).expect("list").collect();
    assert_eq!(leftovers.len(), 1, "temporary files are cleaned up: {leftovers:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_corrupt_key_file_is_an_error_not_a_new_key() {
    let path = temp_path("keys.json");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(&path, "{not json").expect("write");
    assert!(matches!(Keyring::load_or_create(&path), Err(TokenError::KeyFile { .. })));
    std::fs::write(&path, r#"{"active":"k1","keys":[{"kid":"k1","secret":"c2hvcnQ="}]}"#).expect("write");
    match Keyring::load_or_create(&path) {
        Err(TokenError::KeyFile { reason, .. }) => assert!(reason.contains("at least 32"), "{reason}"),
        other => panic!("expected a key file error, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).expect("read"), r#"{"active":"k1","keys":[{"kid":"k1","secret":"c2hvcnQ="}]}"#);
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("temp dir"));
}
