//! The token service process: configuration, the pieces it is assembled from (reusable by the
//! all-in-one launcher, which already has a database and a listener), and [`run`].

pub mod config;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use migrations::{Db, PoolConfig};
use prometheus::Registry;
use service_runtime::admin::{Admin, ReadyCheck};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::revocation::redis::RedisRevocations;
use crate::revocation::{InProcessRevocations, Revocations};
use crate::{TokenError, Tokens};
use config::ServiceConfig;
use http::HttpState;

/// How often expired refresh rows are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Expired refresh rows are kept this long, so reuse of a spent token is still recognised (and
/// its session revoked) for a while after the family's expiry.
const PURGE_GRACE_MS: i64 = 24 * 3600 * 1000;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Db(#[from] migrations::DbError),
    #[error("{0}")]
    Tokens(#[from] TokenError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot create {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
}

/// Serves the token service until `shutdown` fires: opens the database, loads the keys, connects
/// the revocation bus, then serves the API on `bind` and the admin endpoints on `admin_bind`.
pub async fn run(config: ServiceConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    service_runtime::telemetry::init(&config.log);
    config.validate().map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    let tokens = open_tokens(&config).await?;
    let registry = Registry::new();
    let state = build_state(tokens.clone(), &config.service_token, &registry)?.with_body_limit(config.body_limit_bytes);

    let listener = TcpListener::bind(config.bind).await.with_context(|| format!("cannot listen on {}", config.bind))?;
    let admin_listener =
        TcpListener::bind(config.admin_bind).await.with_context(|| format!("cannot listen on {}", config.admin_bind))?;
    tracing::info!(
        api = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        database = tokens.db().backend(),
        revocations = if config.redis_url.is_some() { "redis" } else { "in-process" },
        kid = tokens.keyring().active_kid(),
        "token service listening"
    );

    let tracker = TaskTracker::new();
    tracker.spawn(state.admin().serve(admin_listener, shutdown.clone()));
    tracker.spawn(purge_loop(tokens.clone(), shutdown.clone()));
    tracker.close();
    let served = http::serve(listener, state, shutdown.clone()).await;
    // If serving failed on its own, stop the other tasks too.
    shutdown.cancel();
    tracker.wait().await;
    tokens.db().close().await;
    served.context("http server failed")?;
    tracing::info!("token service stopped");
    Ok(())
}

/// Opens the database (creating the folder of a SQLite file), loads the keyring, connects the
/// revocations, and returns the [`Tokens`] they make up.
pub async fn open_tokens(config: &ServiceConfig) -> Result<Tokens, StartError> {
    create_sqlite_dir(&config.database_url)?;
    let db = Db::open(&config.database_url, &PoolConfig::default()).await?;
    let keyring = config.signing.keyring()?;
    let revocations = connect_revocations(config.redis_url.as_deref(), &config.redis_key_prefix).await?;
    Ok(Tokens::new(keyring, config.tokens.clone(), db, revocations))
}

/// Redis revocations when a URL is given, in-process ones otherwise.
pub async fn connect_revocations(redis_url: Option<&str>, key_prefix: &str) -> Result<Arc<dyn Revocations>, TokenError> {
    Ok(match redis_url {
        Some(url) if !url.is_empty() => Arc::new(RedisRevocations::connect(url, key_prefix).await?),
        _ => Arc::new(InProcessRevocations::new()),
    })
}

/// The HTTP state for `tokens`: registers the token metrics in `registry` and adds readiness
/// checks for the database and the revocation bus. The launcher calls this with its shared
/// registry, then [`http::serve`] (or [`http::router`]) on its own listener.
pub fn build_state(tokens: Tokens, service_token: &str, registry: &Registry) -> Result<HttpState, StartError> {
    tokens.register_metrics(registry)?;
    let admin = Admin::new(registry.clone()).check("database", db_check(tokens.db().clone())).check(
        "revocations",
        revocations_check(tokens.revocations().clone()),
    );
    Ok(HttpState::new(tokens, service_token)?.with_admin(admin))
}

fn db_check(db: Db) -> ReadyCheck {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
    })
}

fn revocations_check(r: Arc<dyn Revocations>) -> ReadyCheck {
    Arc::new(move || {
        let outcome = r.ready();
        Box::pin(async move { outcome })
    })
}

async fn purge_loop(tokens: Tokens, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokens.purge_expired_refresh(service_runtime::now_ms() - PURGE_GRACE_MS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged expired refresh tokens"),
            Err(e) => tracing::warn!(error = %e, "cannot purge expired refresh tokens"),
        }
    }
}

/// `Db::open` creates a SQLite file but not its folder; the default lives in `./data/`.
fn create_sqlite_dir(url: &str) -> Result<(), StartError> {
    match service_runtime::sqlite_dir(url) {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|source| StartError::DataDir { path: dir.display().to_string(), source }),
        None => Ok(()),
    }
}
