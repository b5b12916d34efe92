//! The HTTP service: bearer authentication, the mint/introspect/revoke/join round trip, JSON
//! errors with stable codes, admin routes, and `run` on real listeners.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use migrations::testing::TestDb;
use prometheus::Registry;
use serde_json::{Value, json};
use token_service::service::{build_state, http};
use token_service::{JoinVerifier, Tokens};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

const SERVICE_TOKEN: &str = "test-service-token-0123456789";

struct Api {
    router: Router,
    tokens: Tokens,
    db: TestDb,
}

async fn api() -> Api {
    let db = TestDb::sqlite().await;
    let tokens = common::tokens(&db.db);
    let state = build_state(tokens.clone(), SERVICE_TOKEN, &Registry::new()).expect("state");
    Api { router: http::router(state), tokens, db }
}

/// Sends one request; returns the status and the JSON body (`Null` if not JSON).
async fn send(router: &Router, method: &str, path: &str, auth: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

async fn call(router: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    send(router, "POST", path, Some(&format!("Bearer {SERVICE_TOKEN}")), Some(&body.to_string())).await
}

/// Asserts an error response: status and `{code, error, message}`.
fn check_error(name: &str, got: (StatusCode, Value), status: u16, code: u16) {
    assert_eq!(got.0.as_u16(), status, "{name}: {}", got.1);
    assert_eq!(got.1["code"], code, "{name}: {}", got.1);
    assert!(got.1["error"].is_string() && got.1["message"].is_string(), "{name}: {}", got.1);
}

#[tokio::test]
async fn routes_need_the_service_token() {
    let api = api().await;
    let body = json!({"token": "x"}).to_string();
    let r = &api.router;
    check_error("missing", send(r, "POST", "/v1/tokens/introspect", None, Some(&body)).await, 401, 2000);
    check_error("basic", send(r, "POST", "/v1/tokens/introspect", Some("Basic abc"), Some(&body)).await, 401, 2000);
    check_error(
        "wrong",
        send(r, "POST", "/v1/tokens/introspect", Some("Bearer wrong-token-wrong-token"), Some(&body)).await,
        401,
        2001,
    );
    check_error(
        "prefix of the right one",
        send(r, "POST", "/v1/tokens/session", Some(&format!("Bearer {}", &SERVICE_TOKEN[..20])), Some(&body)).await,
        401,
        2001,
    );
    let (status, _) = send(r, "POST", "/v1/tokens/introspect", Some(&format!("Bearer {SERVICE_TOKEN}")), Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(http::HttpState::new(api.tokens.clone(), "short").is_err(), "short service tokens are refused");
    api.db.drop_db().await;
}

#[tokio::test]
async fn mint_introspect_revoke_round_trip() {
    let api = api().await;
    let r = &api.router;
    let user = Uuid::new_v4();
    let (status, minted) = call(r, "/v1/tokens/session", json!({"user_id": user, "username": "ada"})).await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().expect("token").to_owned();
    let session: Uuid = serde_json::from_value(minted["session_id"].clone()).expect("session id");
    assert!(minted["expires_at_ms"].as_i64().expect("expiry") > service_runtime::now_ms());
    assert!(minted.get("refresh_token").is_none());

    let (_, info) = call(r, "/v1/tokens/introspect", json!({"token": token})).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["user_id"], user.to_string());
    assert_eq!(info["username"], "ada");
    assert_eq!(info["session_id"], session.to_string());
    assert_eq!(info["kid"], api.tokens.keyring().active_kid());

    let (_, junk) = call(r, "/v1/tokens/introspect", json!({"token": "junk"})).await;
    assert_eq!(junk, json!({"active": false, "code": 2001, "error": "token_invalid"}));

    let (status, out) = call(r, "/v1/tokens/revoke", json!({"user_id": user, "session_id": session})).await;
    assert_eq!((status, out), (StatusCode::OK, json!({"revoked": "session"})));
    let (_, info) = call(r, "/v1/tokens/introspect", json!({"token": token})).await;
    assert_eq!(info, json!({"active": false, "code": 2003, "error": "token_revoked"}));

    // Logout-all through the API.
    let s2 = Uuid::new_v4();
    let (_, m2) = call(r, "/v1/tokens/session", json!({"user_id": user, "username": "ada", "session_id": s2})).await;
    assert_eq!(m2["session_id"], s2.to_string());
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let (status, out) = call(r, "/v1/tokens/revoke", json!({"user_id": user, "all": true})).await;
    assert_eq!((status, out), (StatusCode::OK, json!({"revoked": "user"})));
    let (_, info) = call(r, "/v1/tokens/introspect", json!({"token": m2["token"]})).await;
    assert_eq!(info["code"], 2003, "{info}");

    check_error("neither", call(r, "/v1/tokens/revoke", json!({"user_id": user})).await, 422, 1006);
    check_error(
        "both",
        call(r, "/v1/tokens/revoke", json!({"user_id": user, "session_id": s2, "all": true})).await,
        422,
        1006,
    );
    check_error("empty username", call(r, "/v1/tokens/session", json!({"user_id": user, "username": ""})).await, 422, 1006);
    api.db.drop_db().await;
}

#[tokio::test]
async fn mint_with_refresh_and_join() {
    let api = api().await;
    let r = &api.router;
    let user = common::user(&api.db.db).await;
    let (status, minted) =
        call(r, "/v1/tokens/session", json!({"user_id": user, "username": "ada", "with_refresh": true})).await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let refresh = minted["refresh_token"].as_str().expect("refresh token");
    let grant = api.tokens.rotate_refresh(refresh, service_runtime::now_ms()).await.expect("rotates");
    assert_eq!(grant.user_id, user);

    check_error(
        "refresh for an unknown user",
        call(r, "/v1/tokens/session", json!({"user_id": Uuid::new_v4(), "username": "x", "with_refresh": true})).await,
        404,
        3000,
    );

    let m = Uuid::new_v4();
    let (status, join) = call(r, "/v1/tokens/join", json!({"match_id": m, "user_id": user, "instance_id": "inst-1"})).await;
    assert_eq!(status, StatusCode::OK, "{join}");
    let verifier = JoinVerifier::new(api.tokens.keyring().clone(), 16);
    let claims = verifier
        .verify(join["token"].as_str().expect("token"), m, "inst-1", service_runtime::now_ms())
        .expect("join token verifies");
    assert_eq!(claims.expires_at_ms, join["expires_at_ms"].as_i64().expect("expiry"));
    check_error(
        "empty instance",
        call(r, "/v1/tokens/join", json!({"match_id": m, "user_id": user, "instance_id": ""})).await,
        422,
        1006,
    );
    api.db.drop_db().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_codes() {
    let api = api().await;
    let r = &api.router;
    let auth = format!("Bearer {SERVICE_TOKEN}");
    let a = Some(auth.as_str());
    check_error("syntax", send(r, "POST", "/v1/tokens/introspect", a, Some("{not json")).await, 400, 1001);
    check_error("types", send(r, "POST", "/v1/tokens/introspect", a, Some(r#"{"token": 5}"#)).await, 400, 1001);
    check_error(
        "unknown field",
        send(r, "POST", "/v1/tokens/introspect", a, Some(r#"{"token": "x", "extra": 1}"#)).await,
        400,
        1001,
    );
    check_error("bad uuid", send(r, "POST", "/v1/tokens/revoke", a, Some(r#"{"user_id": "nope", "all": true}"#)).await, 400, 1001);
    let big = json!({"token": "x".repeat(20_000)}).to_string();
    check_error("too large", send(r, "POST", "/v1/tokens/introspect", a, Some(&big)).await, 413, 1002);
    let no_type = Request::post("/v1/tokens/introspect").header("authorization", &auth).body(Body::from("{}")).expect("req");
    let resp = r.clone().oneshot(no_type).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    check_error("unknown route", send(r, "GET", "/v1/nope", a, None).await, 404, 1005);
    check_error("wrong method", send(r, "GET", "/v1/tokens/session", a, None).await, 405, 1009);
    api.db.drop_db().await;
}

#[tokio::test]
async fn admin_routes_report_health_readiness_and_metrics() {
    let api = api().await;
    let r = &api.router;
    let (status, _) = send(r, "GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(r, "GET", "/readyz", None, None).await;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("ready")));
    let _ = call(r, "/v1/tokens/session", json!({"user_id": Uuid::new_v4(), "username": "ada"})).await;
    let _ = call(r, "/v1/tokens/introspect", json!({"token": "junk"})).await;
    let (status, body) = send(r, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("text");
    for line in [
        "tavern_token_minted_total{kind=\"session\"} 1",
        "tavern_token_verify_failures_total{kind=\"session\",reason=\"malformed\"} 1",
        "tavern_token_http_requests_total{route=\"/v1/tokens/session\",status=\"200\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // The database going away makes the service unready.
    api.db.db.close().await;
    let (status, body) = send(r, "GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["failing"]["database"].is_string(), "{body}");
    api.db.drop_db().await;
}

#[tokio::test]
async fn serves_on_a_real_listener_and_stops_on_shutdown() {
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // The launcher hands one registry to every part; registering twice is harmless.
    let registry = Registry::new();
    api.tokens.register_metrics(&registry).expect("first registration");
    let state = build_state(api.tokens.clone(), SERVICE_TOKEN, &registry).expect("state");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, state, shutdown.clone()));

    let body = json!({"user_id": Uuid::new_v4(), "username": "ada"}).to_string();
    let request = format!(
        "POST /v1/tokens/session HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"token\""), "{response}");

    shutdown.cancel();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "server did not stop cleanly: {stopped:?}");
    api.db.drop_db().await;
}

#[tokio::test]
async fn run_starts_from_config_and_stops_on_shutdown() {
    let dir = std::env::temp_dir().join(format!("tavern_run_{}", Uuid::new_v4().simple()));
    let sources = service_runtime::config::Sources {
        file: None,
        env: vec![],
        sets: vec![
            "bind=\"127.0.0.1:0\"".into(),
            "admin_bind=\"127.0.0.1:0\"".into(),
            format!("database_url=\"sqlite:{}/data/tavern.db\"", dir.display()),
            format!("signing.key_file=\"{}/data/keys.json\"", dir.display()),
            format!("service_token=\"{SERVICE_TOKEN}\""),
        ],
    };
    let config: token_service::ServiceConfig = service_runtime::config::load(&sources).expect("config");
    config.validate().expect("valid");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(token_service::run(config, shutdown.clone()));
    // Started means the key file and the database exist.
    let key_file = dir.join("data/keys.json");
    for _ in 0..100 {
        if key_file.exists() && !task.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(key_file.exists() && dir.join("data/tavern.db").exists());
    shutdown.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    match result {
        Ok(Ok(Ok(()))) => {}
        other => panic!("run did not stop cleanly: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}
