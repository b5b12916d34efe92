//! The GCS's social client against the real login service (its router on 127.0.0.1:0 over a real
//! Postgres or SQLite database): the graph it sees after friend and block changes made through
//! login's public REST API, lookups, and each kind of failure.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gcs::social::{SocialClient, SocialError};
use login::{AppState, LoginConfig};
use migrations::Db;
use serde_json::{Value, json};
use token_service::{InProcessRevocations, Keyring, Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SERVICE_TOKEN: &str = "gcs-social-test-service-token-0123456789";

/// A login service on a loopback port, stopped on drop.
struct Login {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Login {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_login(db: Db, service_token: Option<&str>) -> Login {
    let mut config = LoginConfig::default();
    config.password_hashing.memory_kib = 1024;
    config.password_hashing.iterations = 1;
    config.limits.requests_per_ip_per_s = 1000;
    config.limits.requests_per_user_per_s = 1000;
    config.limits.auth_per_ip_per_min = 100_000;
    config.service_token = service_token.map(str::to_owned);
    let tokens = Tokens::new(Keyring::generate(), config.tokens.clone(), db.clone(), Arc::new(InProcessRevocations::new()));
    let state = AppState::new(config, db, tokens, &prometheus::Registry::new()).expect("login state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(login::serve(listener, state, shutdown.clone()));
    Login { base, http: reqwest::Client::new(), shutdown }
}

impl Login {
    /// Registers `username`; returns its id and session token.
    async fn register(&self, username: &str) -> (Uuid, String) {
        let body = self.public(reqwest::Method::POST, "/v1/auth/register", None,
            Some(json!({"username": username, "password": "correct horse battery"}))).await;
        let id = body["user_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("user_id");
        (id, body["session_token"].as_str().expect("session_token").to_owned())
    }

    /// A call to login's public API that must succeed.
    async fn public(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("login answers");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn client(&self) -> SocialClient {
        SocialClient::new(&format!("{}/", self.base), SERVICE_TOKEN).expect("client")
    }
}

fn set(ids: &[Uuid]) -> HashSet<Uuid> {
    ids.iter().copied().collect()
}

async fn client_sees_friend_and_block_changes(db: Db) {
    let login = start_login(db, Some(SERVICE_TOKEN)).await;
    let client = login.client();
    let (alice, ta) = login.register("alice").await;
    let (bob, tb) = login.register("bob").await;
    let (carol, tc) = login.register("carol").await;
    let (dave, td) = login.register("dave").await;
    let post = reqwest::Method::POST;

    let g = client.social(alice).await.expect("social");
    assert_eq!((g.user_id, g.username.as_str(), g.friends.len(), g.blocked.len()), (alice, "alice", 0, 0));

    // Requests become friendships only when accepted.
    login.public(post.clone(), "/v1/friends/requests", Some(&ta), Some(json!({"user_id": bob}))).await;
    login.public(post.clone(), "/v1/friends/requests", Some(&tc), Some(json!({"user_id": alice}))).await;
    assert!(client.social(alice).await.expect("social").friends.is_empty());
    login.public(post.clone(), &format!("/v1/friends/requests/{alice}/accept"), Some(&tb), None).await;
    login.public(post.clone(), &format!("/v1/friends/requests/{carol}/accept"), Some(&ta), None).await;
    let g = client.social(alice).await.expect("social");
    assert_eq!(g.friends, vec![(bob, "bob".to_owned()), (carol, "carol".to_owned())]);
    assert!(g.is_friend(bob) && g.is_friend(carol) && !g.is_friend(dave));
    assert_eq!(client.social(bob).await.expect("social").friends, vec![(alice, "alice".to_owned())]);

    // Removal, by the other side.
    login.public(reqwest::Method::DELETE, &format!("/v1/friends/{alice}"), Some(&tc), None).await;
    assert_eq!(client.social(alice).await.expect("social").friends, vec![(bob, "bob".to_owned())]);
    assert!(client.social(carol).await.expect("social").friends.is_empty());

    // A block is seen by both sides, whoever blocked.
    login.public(post.clone(), "/v1/blocks", Some(&td), Some(json!({"user_id": alice}))).await;
    let g = client.social(alice).await.expect("social");
    assert_eq!(g.blocked, set(&[dave]));
    assert!(g.is_blocked(dave) && !g.is_blocked(bob));
    assert_eq!(client.social(dave).await.expect("social").blocked, set(&[alice]));

    // Blocking a friend ends the friendship.
    login.public(post, "/v1/blocks", Some(&ta), Some(json!({"username": "bob"}))).await;
    let g = client.social(alice).await.expect("social");
    assert!(g.friends.is_empty());
    assert_eq!(g.blocked, set(&[bob, dave]));
    let g = client.social(bob).await.expect("social");
    assert!(g.friends.is_empty());
    assert_eq!(g.blocked, set(&[alice]));

    // Unblocking clears it for both.
    login.public(reqwest::Method::DELETE, &format!("/v1/blocks/{alice}"), Some(&td), None).await;
    assert_eq!(client.social(alice).await.expect("social").blocked, set(&[bob]));
    assert!(client.social(dave).await.expect("social").blocked.is_empty());

    // Lookups: known users once each, unknown ids left out, long lists split.
    let mut asked = vec![alice, Uuid::new_v4(), carol, alice];
    asked.extend((0..600).map(|_| Uuid::new_v4()));
    asked.push(dave);
    let mut found = client.lookup(&asked).await.expect("lookup");
    found.sort();
    let mut expected = vec![(alice, "alice".to_owned()), (carol, "carol".to_owned()), (dave, "dave".to_owned())];
    expected.sort();
    assert_eq!(found, expected);
    assert!(client.lookup(&[]).await.expect("empty lookup").is_empty());
}

async fn client_reports_each_failure(db: Db) {
    let login = start_login(db.clone(), Some(SERVICE_TOKEN)).await;
    let (alice, _) = login.register("alice").await;

    let unknown = Uuid::new_v4();
    let err = login.client().social(unknown).await.err();
    assert!(matches!(err, Some(SocialError::NotFound(id)) if id == unknown), "{err:?}");

    let wrong = SocialClient::new(&login.base, "not-the-service-token-at-all").expect("client");
    let err = wrong.social(alice).await.err();
    assert!(matches!(err, Some(SocialError::Unauthorized(_))), "{err:?}");
    let err = wrong.lookup(&[alice]).await.err();
    assert!(matches!(err, Some(SocialError::Unauthorized(_))), "{err:?}");

    // A login with no service token configured trusts nobody.
    let closed = start_login(db, None).await;
    let err = SocialClient::new(&closed.base, SERVICE_TOKEN).expect("client").social(alice).await.err();
    assert!(matches!(err, Some(SocialError::Unauthorized(_))), "{err:?}");

    // A base URL that is not login's answers plain 404s: not a missing user.
    let err = SocialClient::new(&format!("{}/elsewhere", login.base), SERVICE_TOKEN).expect("client").social(alice).await.err();
    assert!(matches!(err, Some(SocialError::BadResponse(_))), "{err:?}");
}

migrations::both_backends!(client_sees_friend_and_block_changes, client_reports_each_failure);

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = SocialClient::new(&format!("http://{addr}"), SERVICE_TOKEN).expect("client");
    let err = client.social(Uuid::new_v4()).await.err();
    assert!(matches!(err, Some(SocialError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn a_login_that_never_answers_times_out_as_unavailable() {
    // Accepts connections and never writes a byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let client = SocialClient::with_timeout(&format!("http://{addr}"), SERVICE_TOKEN, Duration::from_millis(300)).expect("client");
    let started = Instant::now();
    let err = client.social(Uuid::new_v4()).await.err();
    assert!(matches!(err, Some(SocialError::Unavailable(_))), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    hold.abort();
}

#[test]
fn bad_settings_are_refused() {
    for (url, token) in [("not a url", SERVICE_TOKEN), ("ftp://127.0.0.1:1", SERVICE_TOKEN), ("http://127.0.0.1:1", " ")] {
        let err = SocialClient::new(url, token).err();
        assert!(matches!(err, Some(SocialError::Config(_))), "{url:?}: {err:?}");
    }
}
