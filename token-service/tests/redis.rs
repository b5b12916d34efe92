//! Redis revocations on the real Redis: a revocation made on one node reaches the others by
//! pub/sub within a second, a node started later loads it, and keys live as long as the tokens.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use migrations::testing::{TestDb, redis_url};
use service_runtime::now_ms;
use token_service::{Keyring, RedisRevocations, Revocation, Revocations, SessionClaims, TokenConfig, TokenError, Tokens};
use uuid::Uuid;

fn prefix() -> String {
    format!("tavern_test:{}:", Uuid::new_v4().simple())
}

fn claims(user_id: Uuid, session_id: Uuid, issued_at_ms: i64) -> SessionClaims {
    SessionClaims {
        user_id,
        username: "ada".into(),
        session_id,
        issued_at_s: issued_at_ms / 1000,
        issued_at_ms,
        expires_at_s: issued_at_ms / 1000 + 900,
        kid: "k".into(),
    }
}

async fn connect(prefix: &str) -> RedisRevocations {
    let url = redis_url();
    RedisRevocations::connect(&url, prefix)
        .await
        .unwrap_or_else(|e| panic!("test redis at {url} is not reachable: {e}"))
}

/// Polls `cond` every 10 ms for up to `within`; returns how long it took.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond().then(|| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_running_nodes_by_pubsub_and_late_nodes_by_loading() {
    let prefix = prefix();
    let a = connect(&prefix).await;
    let b = connect(&prefix).await;
    let mut b_events = b.subscribe();
    assert!(a.ready().is_ok() && b.ready().is_ok());

    let now = now_ms();
    let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
    let before = claims(user, session, now - 1000);
    let other_session = claims(user, Uuid::new_v4(), now - 1000);
    assert!(!b.is_revoked(&before, now));

    a.revoke_session(session, now + 60_000, now).await.expect("revoke session");
    assert!(a.is_revoked(&before, now), "the writing node knows at once");
    let took = eventually(Duration::from_secs(1), || b.is_revoked(&before, now_ms())).await;
    assert!(took.is_some(), "node b did not learn of the session revocation within 1 s");
    assert!(!b.is_revoked(&other_session, now_ms()), "only that session is revoked");
    let event = tokio::time::timeout(Duration::from_secs(1), b_events.recv()).await.expect("event in time").expect("event");
    assert_eq!(event, Revocation::Session { session_id: session, until_ms: now + 60_000 });

    let cutoff = now_ms();
    a.revoke_user_before(user, cutoff, cutoff + 60_000, cutoff).await.expect("revoke user");
    let took = eventually(Duration::from_secs(1), || b.is_revoked(&other_session, now_ms())).await;
    assert!(took.is_some(), "node b did not learn of the user revocation within 1 s");
    assert!(!b.is_revoked(&claims(user, Uuid::new_v4(), cutoff), now_ms()), "tokens from the cutoff on are valid");

    // A node started afterwards knows both from the initial load, before connect returns.
    let c = connect(&prefix).await;
    assert!(c.is_revoked(&before, now_ms()));
    assert!(c.is_revoked(&other_session, now_ms()));
    assert!(!c.is_revoked(&claims(user, Uuid::new_v4(), cutoff + 1), now_ms()));
    // Nodes under another prefix share nothing.
    let stranger = connect(&self::prefix()).await;
    assert!(!stranger.is_revoked(&before, now_ms()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_as_long_as_the_tokens_they_revoke() {
    let prefix = prefix();
    let a = connect(&prefix).await;
    let now = now_ms();
    let session = Uuid::new_v4();
    a.revoke_session(session, now + 30_000, now).await.expect("revoke");
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}revoked:s:{session}"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!((25_000..=30_000).contains(&ttl), "ttl {ttl} ms");

    // A revocation whose tokens have all expired writes nothing.
    let gone = Uuid::new_v4();
    a.revoke_session(gone, now - 1, now).await.expect("revoke expired");
    let exists: i64 =
        redis::cmd("EXISTS").arg(format!("{prefix}revoked:s:{gone}")).query_async(&mut conn).await.expect("exists");
    assert_eq!(exists, 0);

    // Malformed keys and messages are ignored, not fatal.
    let _: () = redis::cmd("SET").arg(format!("{prefix}revoked:s:junk")).arg("x").arg("PX").arg(60_000)
        .query_async(&mut conn).await.expect("set junk");
    let _: i64 = redis::cmd("PUBLISH").arg(format!("{prefix}revocations")).arg("garbage").query_async(&mut conn).await.expect("publish");
    let late = connect(&prefix).await;
    assert!(late.is_revoked(&claims(Uuid::new_v4(), session, now), now_ms()));
    assert!(late.ready().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_node_refuses_the_token_on_another() {
    let db = TestDb::sqlite().await;
    let prefix = prefix();
    let ring = Keyring::generate();
    let node = |r: RedisRevocations| Tokens::new(ring.clone(), TokenConfig::default(), db.db.clone(), Arc::new(r));
    let login = node(connect(&prefix).await);
    let gcs = node(connect(&prefix).await).session_verifier();
    let mut gcs_events = gcs.revocations().subscribe();

    let user = common::user(&db.db).await;
    let session = Uuid::new_v4();
    let token = login.mint_session(user, "ada", session, now_ms()).expect("mint").token;
    assert!(gcs.verify(&token, now_ms()).is_ok());
    login.revoke_session(user, session, now_ms()).await.expect("logout");
    let event = tokio::time::timeout(Duration::from_secs(1), gcs_events.recv()).await.expect("within 1 s").expect("event");
    assert!(matches!(event, Revocation::Session { session_id, .. } if session_id == session));
    assert!(matches!(gcs.verify(&token, now_ms()), Err(TokenError::Revoked)));
    db.drop_db().await;
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_at_connect() {
    let started = Instant::now();
    let result = RedisRevocations::connect("redis://127.0.0.1:1", "x:").await;
    assert!(matches!(result, Err(TokenError::Bus(_))), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(matches!(RedisRevocations::connect("not a url", "x:").await, Err(TokenError::Bus(_))));
}

/// The test Redis URL with the database number `db`. Pub/sub is global across databases, but
/// `CLIENT LIST` shows each client's database, so this test can find and kill its own
/// subscriber connections without touching anyone else's.
fn redis_url_db(db: u32) -> String {
    let url = redis_url();
    let base = match url.rsplit_once('/') {
        Some((b, last)) if !b.ends_with('/') && last.parse::<u32>().is_ok() => b.to_owned(),
        _ => url.trim_end_matches('/').to_owned(),
    };
    format!("{base}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_subscription_catches_up_on_reconnect() {
    const DB: u32 = 13;
    let url = redis_url_db(DB);
    let prefix = prefix();
    let connect_db = || async {
        RedisRevocations::connect(&url, &prefix).await.unwrap_or_else(|e| panic!("test redis at {url}: {e}"))
    };
    let a = connect_db().await;
    let b = connect_db().await;
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut admin = client.get_multiplexed_async_connection().await.expect("connect");

    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(&mut admin).await.expect("list");
    let ours: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == format!("db={DB}")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_owned))
        .collect();
    assert!(ours.len() >= 2, "expected our two subscribers in {list}");
    for id in &ours {
        let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut admin).await.expect("kill");
    }
    let down = eventually(Duration::from_secs(2), || b.ready().is_err()).await;
    assert!(down.is_some(), "node b did not notice its subscription was killed");

    // Revoked while b is not subscribed: b can only learn it from the reload on reconnect.
    let now = now_ms();
    let session = Uuid::new_v4();
    a.revoke_session(session, now + 60_000, now).await.expect("revoke while b is down");
    let caught_up = eventually(Duration::from_secs(3), || {
        b.ready().is_ok() && b.is_revoked(&claims(Uuid::new_v4(), session, now), now_ms())
    })
    .await;
    assert!(caught_up.is_some(), "node b did not catch up after reconnecting");

    // And the restored subscription carries new revocations again.
    let later = Uuid::new_v4();
    a.revoke_session(later, now_ms() + 60_000, now_ms()).await.expect("revoke");
    let live = eventually(Duration::from_secs(1), || b.is_revoked(&claims(Uuid::new_v4(), later, now), now_ms())).await;
    assert!(live.is_some(), "node b's restored subscription does not deliver");
}
