//! Service configuration: defaults, layering, and the checks that refuse a bad config at start.

use service_runtime::config::{Sources, load};
use token_service::ServiceConfig;

const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 bytes of 0x01
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 bytes of 0x02

/// Loads a config from a TOML text and flags, validates it, and compares the outcome.
fn check(file: &str, sets: &[&str], expected: Result<(), &str>) -> Option<ServiceConfig> {
    let sources = Sources {
        file: Some(("test.toml".into(), file.into())),
        env: vec![],
        sets: sets.iter().map(|s| (*s).to_owned()).collect(),
    };
    let outcome = load::<ServiceConfig>(&sources).map_err(|e| e.to_string()).and_then(|c| c.validate().map(|()| c));
    match (outcome, expected) {
        (Ok(c), Ok(())) => Some(c),
        (Err(e), Err(fragment)) => {
            assert!(e.contains(fragment), "{e:?} lacks {fragment:?}");
            None
        }
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn defaults_need_only_a_service_token() {
    let c = check("", &["service_token=\"0123456789abcdef\""], Ok(())).expect("config");
    assert_eq!(c.bind.to_string(), "127.0.0.1:8081");
    assert_eq!(c.database_url, "sqlite:./data/tavern.db");
    assert_eq!(c.redis_url, None);
    assert_eq!((c.tokens.session_ttl_s, c.tokens.refresh_ttl_s, c.tokens.join_ttl_s), (900, 2_592_000, 30));
    check("", &[], Err("service_token"));
    check("service_token = \"short\"", &[], Err("service_token"));
}

#[test]
fn explicit_keys_need_an_active_kid_among_them() {
    let keys = format!(
        "service_token = \"0123456789abcdef\"\n[signing]\nactive_kid = \"b\"\nkeys = [{{ kid = \"a\", secret = \"{KEY_A}\" }}, {{ kid = \"b\", secret = \"{KEY_B}\" }}]\n"
    );
    let c = check(&keys, &[], Ok(())).expect("config");
    let ring = c.signing.keyring().expect("keyring");
    assert_eq!(ring.kids(), vec!["b", "a"]);
    check(&keys, &["signing.active_kid=\"c\""], Err("active key \"c\""));
    let no_active = keys.replace("active_kid = \"b\"\n", "");
    check(&no_active, &[], Err("active_kid is required"));
    let short = keys.replace(KEY_B, "c2hvcnQ=");
    check(&short, &[], Err("at least 32"));
    check("service_token = \"0123456789abcdef\"\n[signing]\nactive_kid = \"a\"\n", &[], Err("keys is empty"));
    assert!(!format!("{c:?}").contains(KEY_A), "secrets stay out of debug output");
}

#[test]
fn bad_values_are_one_clear_line() {
    let ok = "service_token = \"0123456789abcdef\"\n";
    check(ok, &["tokens.join_ttl_s=61"], Err("join_ttl_s"));
    check(ok, &["tokens.session_ttl_s=0"], Err("session_ttl_s"));
    check(ok, &["tokens.typo=1"], Err("typo"));
    check(ok, &["bind=\"nowhere\""], Err("bind"));
    check(ok, &["body_limit_bytes=10"], Err("body_limit_bytes"));
}
