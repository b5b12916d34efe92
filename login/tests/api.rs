//! The login REST API over a real listener, on real Postgres and on SQLite: the contract's happy
//! paths, every token failure, lockouts, limits and hostile input.

use std::sync::Arc;

use migrations::Db;
use protocol::ErrorCode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_service::{InProcessRevocations, Keyring, SigningKey, Tokens};

mod support;
use support::{check_error, start, start_with, test_config};

fn s(v: &Value) -> &str {
    v.as_str().expect("a string field")
}

async fn contract_flow(db: Db) {
    let srv = start(db, test_config()).await;
    let reg = srv.register("alice", "correct horse battery").await;
    assert!(reg["user_id"].is_string() && reg["session_token"].is_string() && reg["refresh_token"].is_string());

    let (st, login) = srv
        .call(Method::POST, "/v1/auth/login", None, Some(json!({"username": "ALICE", "password": "correct horse battery"})))
        .await;
    assert_eq!(st, StatusCode::OK, "{login}");
    assert_eq!(login["user_id"], reg["user_id"]);

    let (st, acct) = srv.call(Method::GET, "/v1/account", Some(s(&login["session_token"])), None).await;
    assert_eq!(st, StatusCode::OK, "{acct}");
    assert_eq!(acct["username"], "alice");
    assert_eq!(acct["display_name"], "alice");
    assert!(s(&acct["created_at"]).contains('T'));

    let (st, patched) = srv
        .call(Method::PATCH, "/v1/account", Some(s(&login["session_token"])), Some(json!({"display_name": "Alice A."})))
        .await;
    assert_eq!(st, StatusCode::OK, "{patched}");
    assert_eq!(patched["display_name"], "Alice A.");

    // Refresh: a new pair; the old refresh token then fails.
    let old_refresh = s(&login["refresh_token"]).to_owned();
    let (st, pair) = srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": old_refresh}))).await;
    assert_eq!(st, StatusCode::OK, "{pair}");
    assert_ne!(pair["refresh_token"], json!(old_refresh));
    let (st, acct) = srv.call(Method::GET, "/v1/account", Some(s(&pair["session_token"])), None).await;
    assert_eq!(st, StatusCode::OK, "{acct}");

    // Logout: that session's token fails, the registration's session still works.
    let (st, _) = srv.call(Method::POST, "/v1/auth/logout", Some(s(&pair["session_token"])), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    check_error(srv.call(Method::GET, "/v1/account", Some(s(&pair["session_token"])), None).await, ErrorCode::TokenRevoked);
    let (st, _) = srv.call(Method::GET, "/v1/account", Some(s(&reg["session_token"])), None).await;
    assert_eq!(st, StatusCode::OK);
    // The logged-out session's refresh family is gone too.
    check_error(
        srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": pair["refresh_token"]}))).await,
        ErrorCode::RefreshTokenInvalid,
    );

    // Register twice → username_taken, case-insensitively.
    check_error(
        srv.call(Method::POST, "/v1/auth/register", None, Some(json!({"username": "Alice", "password": "whatever123"}))).await,
        ErrorCode::UsernameTaken,
    );
}

async fn reused_refresh_token_revokes_the_session(db: Db) {
    let srv = start(db, test_config()).await;
    let reg = srv.register("bob", "hunter2hunter2").await;
    let first = s(&reg["refresh_token"]).to_owned();
    let (st, second) = srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": first}))).await;
    assert_eq!(st, StatusCode::OK);
    check_error(
        srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": first}))).await,
        ErrorCode::RefreshTokenReused,
    );
    // Reuse revokes the whole family and the session: the successor fails, and so do the tokens.
    let (st, _) = srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": second["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    check_error(srv.call(Method::GET, "/v1/account", Some(s(&second["session_token"])), None).await, ErrorCode::TokenRevoked);
    check_error(
        srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": "not-a-token"}))).await,
        ErrorCode::RefreshTokenInvalid,
    );
}

async fn concurrent_refreshes_have_one_winner(db: Db) {
    let srv = start(db, test_config()).await;
    let reg = srv.register("carol", "hunter2hunter2").await;
    let token = s(&reg["refresh_token"]).to_owned();
    let calls = (0..6).map(|_| srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": token}))));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|(st, _)| *st == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
}

async fn bad_tokens_get_their_codes(db: Db) {
    let config = test_config();
    let key = |kid: &str| SigningKey { kid: kid.into(), secret: vec![7; 32] };
    let tokens = Tokens::new(
        Keyring::new(key("k1"), vec![]).expect("keyring"),
        config.tokens.clone(),
        db.clone(),
        Arc::new(InProcessRevocations::new()),
    );
    let srv = start_with(tokens, db.clone(), config.clone()).await;
    let reg = srv.register("dave", "hunter2hunter2").await;
    let good = s(&reg["session_token"]).to_owned();
    let user_id: uuid::Uuid = s(&reg["user_id"]).parse().expect("uuid");

    check_error(srv.call(Method::GET, "/v1/account", None, None).await, ErrorCode::Unauthenticated);
    check_error(srv.call(Method::GET, "/v1/account", Some("garbage"), None).await, ErrorCode::TokenInvalid);
    // Forged: change one character inside the signature (not the last one, whose low bits are
    // base64 padding and may not change the decoded bytes).
    let mut chars: Vec<char> = good.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let forged: String = chars.into_iter().collect();
    check_error(srv.call(Method::GET, "/v1/account", Some(&forged), None).await, ErrorCode::TokenInvalid);
    // Expired: minted an hour ago.
    let old = srv
        .state
        .tokens
        .mint_session(user_id, "dave", uuid::Uuid::new_v4(), service_runtime::now_ms() - 3_600_000)
        .expect("mint");
    check_error(srv.call(Method::GET, "/v1/account", Some(&old.token), None).await, ErrorCode::TokenExpired);
    // Signed with a key this server never had.
    let other = Tokens::new(
        Keyring::new(key("k-other"), vec![]).expect("keyring"),
        config.tokens.clone(),
        db,
        Arc::new(InProcessRevocations::new()),
    );
    let foreign = other.mint_session(user_id, "dave", uuid::Uuid::new_v4(), service_runtime::now_ms()).expect("mint");
    check_error(srv.call(Method::GET, "/v1/account", Some(&foreign.token), None).await, ErrorCode::UnknownKey);
    // Revoked by logout-all: every session of the user.
    let (st, login) = srv
        .call(Method::POST, "/v1/auth/login", None, Some(json!({"username": "dave", "password": "hunter2hunter2"})))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = srv.call(Method::POST, "/v1/auth/logout-all", Some(&good), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    check_error(srv.call(Method::GET, "/v1/account", Some(&good), None).await, ErrorCode::TokenRevoked);
    check_error(srv.call(Method::GET, "/v1/account", Some(s(&login["session_token"])), None).await, ErrorCode::TokenRevoked);
    check_error(
        srv.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": login["refresh_token"]}))).await,
        ErrorCode::RefreshTokenInvalid,
    );
}

async fn hostile_bodies_get_their_codes(db: Db) {
    let srv = start(db, test_config()).await;
    check_error(srv.raw("/v1/auth/register", Some("application/json"), b"{\"username\": ".to_vec()).await, ErrorCode::Malformed);
    check_error(srv.raw("/v1/auth/register", Some("application/json"), b"[1,2,3]".to_vec()).await, ErrorCode::Malformed);
    check_error(
        srv.call(Method::POST, "/v1/auth/register", None, Some(json!({"username": 12, "password": true}))).await,
        ErrorCode::Malformed,
    );
    check_error(
        srv.call(Method::POST, "/v1/auth/register", None, Some(json!({"username": "eve", "password": "x".repeat(9), "admin": true})))
            .await,
        ErrorCode::Malformed,
    );
    check_error(srv.raw("/v1/auth/register", Some("text/plain"), b"{}".to_vec()).await, ErrorCode::UnsupportedMediaType);
    check_error(srv.raw("/v1/auth/register", None, b"{}".to_vec()).await, ErrorCode::UnsupportedMediaType);
    let huge = format!("{{\"username\":\"eve\",\"password\":\"{}\"}}", "x".repeat(64 * 1024));
    check_error(srv.raw("/v1/auth/register", Some("application/json"), huge.into_bytes()).await, ErrorCode::TooLarge);
    check_error(
        srv.call(Method::POST, "/v1/auth/register", None, Some(json!({"username": "x'; DROP TABLE users; --", "password": "hunter2hunter2"})))
            .await,
        ErrorCode::InvalidUsername,
    );
    check_error(
        srv.call(Method::POST, "/v1/auth/login", None, Some(json!({"username": "' OR '1'='1", "password": "' OR '1'='1"}))).await,
        ErrorCode::InvalidCredentials,
    );
    check_error(
        srv.call(Method::POST, "/v1/auth/register", None, Some(json!({"username": "frank", "password": "short"}))).await,
        ErrorCode::WeakPassword,
    );
    check_error(srv.call(Method::GET, "/v1/nope", None, None).await, ErrorCode::NotFound);
    check_error(srv.call(Method::GET, "/v1/auth/login", None, None).await, ErrorCode::MethodNotAllowed);
    check_error(
        srv.call(Method::POST, "/v1/auth/device", None, Some(json!({"device_id": "../../etc/passwd"}))).await,
        ErrorCode::InvalidField,
    );
    // The server is unharmed: the users table is intact and registration still works.
    srv.register("frank", "hunter2hunter2").await;
}

async fn brute_force_locks_the_account(db: Db) {
    let srv = start(db, test_config()).await;
    srv.register("grace", "the-real-password").await;
    let attempt = |pw: &'static str| {
        srv.call(Method::POST, "/v1/auth/login", None, Some(json!({"username": "grace", "password": pw})))
    };
    for _ in 0..5 {
        check_error(attempt("wrong-password").await, ErrorCode::InvalidCredentials);
    }
    // Locked: even the right password is refused, with a Retry-After.
    check_error(attempt("the-real-password").await, ErrorCode::LockedOut);
    let user = srv.state.store.user_by_username("grace").await.expect("db").expect("user");
    assert!(user.locked_until > service_runtime::now_ms() + 60_000);
    // Unknown users count against the address, not against any account.
    check_error(
        srv.call(Method::POST, "/v1/auth/login", None, Some(json!({"username": "nobody", "password": "whatever1"}))).await,
        ErrorCode::InvalidCredentials,
    );
}

async fn failing_address_is_locked_out(db: Db) {
    let mut config = test_config();
    config.limits.failed_logins_per_ip = 3;
    let srv = start(db, config).await;
    srv.register("heidi", "the-real-password").await;
    for name in ["u1", "u2", "u3"] {
        check_error(
            srv.call(Method::POST, "/v1/auth/login", None, Some(json!({"username": name, "password": "whatever1"}))).await,
            ErrorCode::InvalidCredentials,
        );
    }
    check_error(
        srv.call(Method::POST, "/v1/auth/login", None, Some(json!({"username": "heidi", "password": "the-real-password"}))).await,
        ErrorCode::LockedOut,
    );
}

async fn request_flood_is_rate_limited(db: Db) {
    let mut config = test_config();
    config.limits.requests_per_ip_per_s = 2;
    let srv = start(db, config).await;
    let mut limited = 0;
    for _ in 0..10 {
        let (st, body) = srv.call(Method::GET, "/v1/openapi.json", None, None).await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            check_error((st, body), ErrorCode::RateLimited);
            limited += 1;
        }
    }
    assert!(limited >= 5, "only {limited} of 10 limited");
}

async fn user_flood_is_rate_limited(db: Db) {
    let mut config = test_config();
    config.limits.requests_per_user_per_s = 2;
    let srv = start(db, config).await;
    let reg = srv.register("olivia", "hunter2hunter2").await;
    let other = srv.register("peggy", "hunter2hunter2").await;
    let mut limited = 0;
    for _ in 0..10 {
        let (st, body) = srv.call(Method::GET, "/v1/account", Some(s(&reg["session_token"])), None).await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            check_error((st, body), ErrorCode::RateLimited);
            limited += 1;
        }
    }
    assert!(limited >= 5, "only {limited} of 10 limited");
    // Another user is unaffected.
    let (st, _) = srv.call(Method::GET, "/v1/account", Some(s(&other["session_token"])), None).await;
    assert_eq!(st, StatusCode::OK);
}

async fn device_login_creates_one_guest(db: Db) {
    let srv = start(db, test_config()).await;
    let device = json!({"device_id": "device-0123456789abcdef"});
    let (st, a) = srv.call(Method::POST, "/v1/auth/device", None, Some(device.clone())).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (st, b) = srv.call(Method::POST, "/v1/auth/device", None, Some(device)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(a["user_id"], b["user_id"]);
    assert_eq!(a["is_guest"], json!(true));
    let (_, acct) = srv.call(Method::GET, "/v1/account", Some(s(&b["session_token"])), None).await;
    assert_eq!(acct["has_password"], json!(false));
    // A guest can set a password and then log in with it.
    let (st, _) = srv
        .call(Method::POST, "/v1/account/password", Some(s(&b["session_token"])), Some(json!({"new_password": "guest-password"})))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    check_error(srv.call(Method::GET, "/v1/account", Some(s(&b["session_token"])), None).await, ErrorCode::TokenRevoked);
    let (st, _) = srv
        .call(Method::POST, "/v1/auth/login", None, Some(json!({"username": a["username"], "password": "guest-password"})))
        .await;
    assert_eq!(st, StatusCode::OK);
}

async fn friends_lifecycle(db: Db) {
    let srv = start(db, test_config()).await;
    let a = srv.register("ivan", "hunter2hunter2").await;
    let b = srv.register("judy", "hunter2hunter2").await;
    let c = srv.register("mallory", "hunter2hunter2").await;
    let (ta, tb, tc) = (s(&a["session_token"]), s(&b["session_token"]), s(&c["session_token"]));
    let (ida, idb) = (s(&a["user_id"]), s(&b["user_id"]));

    let (st, r) = srv.call(Method::POST, "/v1/friends/requests", Some(ta), Some(json!({"username": "judy"}))).await;
    assert_eq!((st, r["status"].clone()), (StatusCode::CREATED, json!("pending")));
    check_error(
        srv.call(Method::POST, "/v1/friends/requests", Some(ta), Some(json!({"user_id": idb}))).await,
        ErrorCode::FriendRequestPending,
    );
    check_error(srv.call(Method::POST, "/v1/friends/requests", Some(ta), Some(json!({"username": "ivan"}))).await, ErrorCode::SelfTarget);
    check_error(srv.call(Method::POST, "/v1/friends/requests", Some(ta), Some(json!({"username": "nobody"}))).await, ErrorCode::UserNotFound);
    check_error(srv.call(Method::POST, "/v1/friends/requests", Some(ta), Some(json!({}))).await, ErrorCode::InvalidField);

    let (_, list_b) = srv.call(Method::GET, "/v1/friends", Some(tb), None).await;
    assert_eq!(list_b["incoming"][0]["username"], "ivan", "{list_b}");
    let (st, _) = srv.call(Method::POST, &format!("/v1/friends/requests/{ida}/accept"), Some(tb), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    check_error(srv.call(Method::POST, &format!("/v1/friends/requests/{ida}/accept"), Some(tb), None).await, ErrorCode::NoFriendRequest);
    let (_, list_a) = srv.call(Method::GET, "/v1/friends", Some(ta), None).await;
    assert_eq!(list_a["friends"][0]["username"], "judy", "{list_a}");
    check_error(srv.call(Method::POST, "/v1/friends/requests", Some(tb), Some(json!({"username": "ivan"}))).await, ErrorCode::AlreadyFriends);

    let (st, _) = srv.call(Method::DELETE, &format!("/v1/friends/{idb}"), Some(ta), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    check_error(srv.call(Method::DELETE, &format!("/v1/friends/{idb}"), Some(ta), None).await, ErrorCode::NotFriends);

    // Asking someone who already asked you accepts.
    srv.call(Method::POST, "/v1/friends/requests", Some(tc), Some(json!({"username": "ivan"}))).await;
    let (st, r) = srv.call(Method::POST, "/v1/friends/requests", Some(ta), Some(json!({"username": "mallory"}))).await;
    assert_eq!((st, r["status"].clone()), (StatusCode::OK, json!("accepted")));

    // A block ends the friendship and stops requests both ways.
    let (st, _) = srv.call(Method::POST, "/v1/blocks", Some(ta), Some(json!({"username": "mallory"}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    check_error(srv.call(Method::POST, "/v1/friends/requests", Some(tc), Some(json!({"username": "ivan"}))).await, ErrorCode::Blocked);
    let (_, list_a) = srv.call(Method::GET, "/v1/friends", Some(ta), None).await;
    assert_eq!(list_a["friends"], json!([]), "{list_a}");
    assert_eq!(list_a["blocked"][0]["username"], "mallory");

    // Declining and cancelling.
    srv.call(Method::POST, "/v1/friends/requests", Some(tb), Some(json!({"username": "ivan"}))).await;
    let (st, _) = srv.call(Method::POST, &format!("/v1/friends/requests/{idb}/decline"), Some(ta), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    srv.call(Method::POST, "/v1/friends/requests", Some(tb), Some(json!({"username": "ivan"}))).await;
    let (st, _) = srv.call(Method::DELETE, &format!("/v1/friends/requests/{ida}"), Some(tb), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, list_a) = srv.call(Method::GET, "/v1/friends", Some(ta), None).await;
    assert_eq!(list_a["incoming"], json!([]), "{list_a}");
}

async fn openapi_document_lists_the_routes(db: Db) {
    let srv = start(db, test_config()).await;
    let (st, doc) = srv.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in ["/v1/auth/register", "/v1/auth/login", "/v1/auth/device", "/v1/auth/refresh", "/v1/account", "/v1/friends"] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

migrations::both_backends!(
    contract_flow,
    reused_refresh_token_revokes_the_session,
    concurrent_refreshes_have_one_winner,
    bad_tokens_get_their_codes,
    hostile_bodies_get_their_codes,
    brute_force_locks_the_account,
    failing_address_is_locked_out,
    request_flood_is_rate_limited,
    user_flood_is_rate_limited,
    device_login_creates_one_guest,
    friends_lifecycle,
    openapi_document_lists_the_routes,
);
