//! Tavern's login service: the REST API under `/v1` for accounts, sessions and friends.
//!
//! Layout:
//! - [`auth`]: register, password and device login, refresh, logout, logout-all.
//! - [`account`]: read and update the caller's account, change the password.
//! - [`friends`]: friend requests, removal, blocks, the friend list.
//! - [`store`]: the users, friendships and blocks tables on Postgres or SQLite.
//! - [`password`]: argon2id on the blocking pool.
//! - [`http`]: client address, per-IP rate limits, the bearer-token extractor.
//! - [`validate`]: input rules, each with its error code.
//! - [`openapi`]: the OpenAPI document served at `/v1/openapi.json`.
//! - [`internal`]: `/internal/v1`, the API for trusted services (the GCS reads users' social graphs
//!   there instead of reading login's tables); needs `service_token`, absent from the OpenAPI
//!   document.
//! - [`ratings`]: the client for the matchmaker's internal read API, which `/v1/account` uses to
//!   show the player's ratings and recent matches (`matchmaker_api_url`).
//!
//! Sessions, refresh tokens and revocation belong to the token service; this crate calls its
//! library ([`token_service::Tokens`]) and owns only the tables above.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use migrations::{Db, PoolConfig};
use prometheus::Registry;
use serde::Deserialize;
use service_runtime::admin::{Admin, ReadyCheck};
use service_runtime::api::{self, ServiceToken, require_service_token};
use service_runtime::ratelimit::{Quota, RateLimiter};
use service_runtime::telemetry::LogConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use token_service::{Keyring, TokenConfig, Tokens};
use tower_http::catch_panic::CatchPanicLayer;

pub mod account;
pub mod auth;
pub mod friends;
pub mod http;
pub mod internal;
pub mod metrics;
pub mod openapi;
pub mod password;
pub mod ratings;
pub mod store;
pub mod validate;

use metrics::Metrics;
use password::{HashParams, Hasher};
use store::Store;

/// The login service's configuration (defaults < file < `TAVERN_*` < flags).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Where the REST API listens.
    pub bind: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub admin_bind: SocketAddr,
    /// `postgres://…` or `sqlite:…`.
    pub database_url: String,
    /// With Redis, revocations are cluster-wide; without, in-process.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel this service uses.
    pub redis_prefix: String,
    /// The token signing keys, shared with every process that verifies tokens; created on first
    /// start when missing.
    pub key_file: PathBuf,
    pub tokens: TokenConfig,
    pub limits: Limits,
    pub password_hashing: HashParams,
    /// Take the client address from the last `X-Forwarded-For` hop (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// The bearer token trusted services (the GCS) present on `/internal/v1` (at least 16
    /// characters; the same `service_token` key the token service reads). Unset or empty
    /// disables those routes: they answer `forbidden`.
    pub service_token: Option<String>,
    /// The matchmaker's internal read API (its admin listener, e.g. `http://127.0.0.1:9104`),
    /// asked with `service_token` for the ratings and recent matches `/v1/account` shows. Unset:
    /// the account shows `ratings: null`.
    pub matchmaker_api_url: Option<String>,
    /// How long `/v1/account` waits for the matchmaker before answering without ratings.
    pub matchmaker_api_timeout_ms: u64,
    pub log: LogConfig,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_bind: SocketAddr::from(([127, 0, 0, 1], 9102)),
            database_url: "sqlite:./data/tavern.db".into(),
            redis_url: None,
            redis_prefix: "tavern:".into(),
            key_file: PathBuf::from("./data/token-keys.json"),
            tokens: TokenConfig::default(),
            limits: Limits::default(),
            password_hashing: HashParams::default(),
            trust_forwarded_for: false,
            service_token: None,
            matchmaker_api_url: None,
            matchmaker_api_timeout_ms: 2000,
            log: LogConfig::default(),
        }
    }
}

/// Limits that protect the service and its users.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body.
    pub body_bytes: usize,
    /// Requests per second per address, on every route.
    pub requests_per_ip_per_s: u32,
    /// Authenticated requests per second per user, whatever address they come from.
    pub requests_per_user_per_s: u32,
    /// Requests per minute per address on `/v1/auth/*`.
    pub auth_per_ip_per_min: u32,
    /// Consecutive failed logins that lock an account.
    pub failed_logins_per_account: i32,
    /// How long an account stays locked.
    pub account_lock_s: u64,
    /// Failed logins per address per 15 minutes before the address is locked out.
    pub failed_logins_per_ip: u32,
    /// Friends plus outgoing requests per user.
    pub max_friends: u32,
    /// Addresses tracked by each rate limiter before new ones are refused.
    pub max_tracked_ips: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 16 * 1024,
            requests_per_ip_per_s: 20,
            requests_per_user_per_s: 10,
            auth_per_ip_per_min: 60,
            failed_logins_per_account: 5,
            account_lock_s: 15 * 60,
            failed_logins_per_ip: 30,
            max_friends: 200,
            max_tracked_ips: 100_000,
        }
    }
}

/// Everything a handler needs.
pub struct AppState {
    pub config: LoginConfig,
    pub store: Store,
    pub tokens: Tokens,
    pub hasher: Hasher,
    pub metrics: Metrics,
    pub(crate) ip_limiter: RateLimiter<IpAddr>,
    pub(crate) auth_limiter: RateLimiter<IpAddr>,
    pub(crate) user_limiter: RateLimiter<uuid::Uuid>,
    pub(crate) ip_failures: RateLimiter<IpAddr>,
    /// The configured service token (its digest); disabled when unset, and so is the internal API.
    pub(crate) service_token: ServiceToken,
    /// The matchmaker's read API, `None` when `matchmaker_api_url` is unset.
    pub(crate) ratings: Option<ratings::RatingsClient>,
}

impl AppState {
    /// Builds the state over an open database and token service.
    pub fn new(config: LoginConfig, db: Db, tokens: Tokens, registry: &Registry) -> anyhow::Result<Arc<AppState>> {
        let l = &config.limits;
        let per_s = l.requests_per_ip_per_s.max(1);
        let service_token = ServiceToken::hash(config.service_token.as_deref())?;
        let ratings = ratings_client(&config)?;
        let state = AppState {
            store: Store::new(db),
            tokens,
            hasher: Hasher::new(config.password_hashing)?,
            metrics: Metrics::new(registry),
            ip_limiter: RateLimiter::new(Quota { burst: per_s * 2, per_second: f64::from(per_s) }, l.max_tracked_ips),
            auth_limiter: RateLimiter::new(Quota::per(l.auth_per_ip_per_min, Duration::from_secs(60)), l.max_tracked_ips),
            user_limiter: {
                let per_s = l.requests_per_user_per_s.max(1);
                RateLimiter::new(Quota { burst: per_s * 2, per_second: f64::from(per_s) }, l.max_tracked_ips)
            },
            ip_failures: RateLimiter::new(Quota::per(l.failed_logins_per_ip, Duration::from_secs(15 * 60)), l.max_tracked_ips),
            service_token,
            ratings,
            config,
        };
        Ok(Arc::new(state))
    }

    /// Forgets rate-limit buckets that have refilled; called periodically.
    pub fn sweep_limits(&self) {
        let now = Instant::now();
        self.ip_limiter.sweep(now);
        self.auth_limiter.sweep(now);
        self.user_limiter.sweep(now);
        self.ip_failures.sweep(now);
    }
}

/// The matchmaker read API client the config asks for: `None` without `matchmaker_api_url`, an
/// error when the URL is set without a `service_token` to present or is not `http://`.
fn ratings_client(config: &LoginConfig) -> anyhow::Result<Option<ratings::RatingsClient>> {
    let Some(url) = config.matchmaker_api_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        tracing::info!("no matchmaker_api_url: accounts show no ratings");
        return Ok(None);
    };
    let Some(token) = config.service_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
        anyhow::bail!("matchmaker_api_url needs service_token (the matchmaker's service token)");
    };
    if config.matchmaker_api_timeout_ms == 0 {
        anyhow::bail!("matchmaker_api_timeout_ms must be positive");
    }
    let timeout = Duration::from_millis(config.matchmaker_api_timeout_ms);
    Ok(Some(ratings::RatingsClient::new(url, token, timeout)?))
}

/// The REST routes.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/device", post(auth::device))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/logout-all", post(auth::logout_all))
        .route("/account", get(account::get_account).patch(account::update_account))
        .route("/account/password", post(account::change_password))
        .route("/friends", get(friends::list))
        .route("/friends/requests", post(friends::send_request))
        .route("/friends/requests/{user_id}", delete(friends::cancel))
        .route("/friends/requests/{user_id}/accept", post(friends::accept))
        .route("/friends/requests/{user_id}/decline", post(friends::decline))
        .route("/friends/{user_id}", delete(friends::remove))
        .route("/blocks", post(friends::block))
        .route("/blocks/{user_id}", delete(friends::unblock))
        .route("/openapi.json", get(openapi::serve));
    let internal_api = Router::new()
        .route("/users/{user_id}/social", get(internal::social))
        .route("/users/lookup", post(internal::lookup))
        .route_layer(axum::middleware::from_fn_with_state(state.service_token, require_service_token));
    let body_limit = state.config.limits.body_bytes;
    Router::new()
        .nest("/v1", v1)
        .nest("/internal/v1", internal_api)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), http::rate_limit))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(api::panic_response))
        .with_state(state)
}

/// Serves the REST API on `listener` until `shutdown` fires, sweeping rate limiters meanwhile.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) -> std::io::Result<()> {
    let sweeper = {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => state.sweep_limits(),
                }
            }
        })
    };
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    sweeper.abort();
    result
}

/// Opens the token service library the way the config says (key file, Redis or in-process
/// revocations) over `db`.
pub async fn open_tokens(config: &LoginConfig, db: Db) -> anyhow::Result<Tokens> {
    let keyring = Keyring::load_or_create(&config.key_file)?;
    let revocations: Arc<dyn token_service::Revocations> = match &config.redis_url {
        Some(url) => Arc::new(token_service::RedisRevocations::connect(url, &config.redis_prefix).await?),
        None => Arc::new(token_service::InProcessRevocations::new()),
    };
    Ok(Tokens::new(keyring, config.tokens.clone(), db, revocations))
}

/// A readiness check that pings the database.
pub fn db_ready(db: Db) -> ReadyCheck {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
    })
}

/// Runs the login service as its own process: database, tokens, REST and admin listeners.
pub async fn run(config: LoginConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = Db::open(&config.database_url, &PoolConfig::default()).await?;
    let tokens = open_tokens(&config, db.clone()).await?;
    let registry = Registry::new();
    let admin = Admin::new(registry.clone()).check("database", db_ready(db.clone()));
    let listener = TcpListener::bind(config.bind).await?;
    let admin_listener = TcpListener::bind(config.admin_bind).await?;
    tracing::info!(addr = %config.bind, admin = %config.admin_bind, db = db.backend(), "login service listening");
    let state = AppState::new(config, db.clone(), tokens, &registry)?;
    let admin_task = tokio::spawn(admin.serve(admin_listener, shutdown.clone()));
    serve(listener, state, shutdown).await?;
    admin_task.await??;
    db.close().await;
    Ok(())
}
