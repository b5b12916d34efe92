//! Fixtures shared by login's integration tests: a cheap test config, a login server on a
//! loopback port over a test database, JSON calls to it, registration and error checks.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::sync::Arc;

use login::{AppState, LoginConfig};
use migrations::Db;
use protocol::ErrorCode;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use token_service::{InProcessRevocations, Keyring, Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The password [`Server::user`] registers with.
pub const PASSWORD: &str = "correct horse battery";

/// A login server on a loopback port, stopped on drop.
pub struct Server {
    pub base: String,
    pub http: Client,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The default config with cheap hashing and generous limits.
pub fn test_config() -> LoginConfig {
    let mut c = LoginConfig::default();
    // Cheap hashing keeps the suite fast; the production parameters are checked in unit tests.
    c.password_hashing.memory_kib = 1024;
    c.password_hashing.iterations = 1;
    // Generous limits, so only the tests about limits meet them.
    c.limits.requests_per_ip_per_s = 1000;
    c.limits.requests_per_user_per_s = 1000;
    c.limits.auth_per_ip_per_min = 100_000;
    c
}

/// Fresh in-process token state over `db`, as a login process would have.
pub fn tokens(db: &Db, config: &LoginConfig) -> Tokens {
    Tokens::new(Keyring::generate(), config.tokens.clone(), db.clone(), Arc::new(InProcessRevocations::new()))
}

/// Login with `config` over `db`, with its own keyring.
pub async fn start(db: Db, config: LoginConfig) -> Server {
    let tokens = tokens(&db, &config);
    start_with(tokens, db, config).await
}

/// Login with `config` over `db` and `tokens`.
pub async fn start_with(tokens: Tokens, db: Db, config: LoginConfig) -> Server {
    let state = AppState::new(config, db, tokens, &prometheus::Registry::new()).expect("state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(login::serve(listener, state.clone(), shutdown.clone()));
    Server { base, http: Client::new(), state, shutdown }
}

impl Server {
    /// Calls `path` with an optional bearer token and JSON body; the status and the JSON answer
    /// (`Null` when not JSON).
    pub async fn call(&self, method: Method, path: &str, bearer: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs raw bytes to `path` with an optional content type; the status and the JSON answer.
    pub async fn raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{}", self.base, path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        (status, serde_json::from_str(&resp.text().await.expect("body")).unwrap_or(Value::Null))
    }

    /// Registers `username` with `password`; the `201` answer.
    pub async fn register(&self, username: &str, password: &str) -> Value {
        let (s, body) = self
            .call(Method::POST, "/v1/auth/register", None, Some(json!({"username": username, "password": password})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        body
    }

    /// Registers `username` with [`PASSWORD`]; (user id, session token).
    pub async fn user(&self, username: &str) -> (Uuid, String) {
        let body = self.register(username, PASSWORD).await;
        let id = body["user_id"].as_str().and_then(|s| s.parse().ok()).expect("user_id");
        (id, body["session_token"].as_str().expect("session_token").to_owned())
    }
}

/// Asserts a response is the JSON error for `code`, with its HTTP status.
pub fn check_error((status, body): (StatusCode, Value), code: ErrorCode) {
    assert_eq!(status.as_u16(), code.http_status(), "{body}");
    assert_eq!(body["code"], json!(code.code()), "{body}");
    assert_eq!(body["error"], json!(code.name()), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}
