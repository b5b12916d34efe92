//! `tavern`: the all-in-one launcher. `cargo run --release` at the root starts every Tavern
//! service in this one process on embedded defaults — SQLite under `./data/`, in-process
//! revocation — each on its real loopback port, so it runs the same code paths as production.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use migrations::{Db, PoolConfig};
use prometheus::Registry;
use serde::Deserialize;
use service_runtime::admin::Admin;
use service_runtime::config::ConfigArgs;
use service_runtime::telemetry::{LogConfig, LogFormat};
use tokio::net::TcpListener;
use token_service::{InProcessRevocations, Keyring, RedisRevocations, Revocations, TokenConfig, Tokens};

/// Every Tavern service in one process.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

/// The launcher's configuration; every port may be 0 to let the system choose.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Where the SQLite database, the token keys and the service token live.
    data_dir: PathBuf,
    /// The address every listener binds (loopback by default).
    host: IpAddr,
    login_port: u16,
    token_port: u16,
    admin_port: u16,
    /// Defaults to SQLite at `<data_dir>/tavern.db`; a `postgres://` URL uses Postgres.
    database_url: Option<String>,
    /// With Redis, revocations are shared with other nodes.
    redis_url: Option<String>,
    redis_prefix: String,
    tokens: TokenConfig,
    limits: login::Limits,
    password_hashing: login::password::HashParams,
    log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            login_port: 8080,
            token_port: 8081,
            admin_port: 9100,
            database_url: None,
            redis_url: None,
            redis_prefix: "tavern:".into(),
            tokens: TokenConfig::default(),
            limits: login::Limits::default(),
            password_hashing: login::password::HashParams::default(),
            log: LogConfig { format: LogFormat::Pretty, level: "info".into() },
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config: Config = args.config.load_or_exit();
    service_runtime::telemetry::init(&config.log);
    if let Err(e) = run(config).await {
        eprintln!("tavern: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = service_runtime::shutdown::on_signals();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let database_url = match &config.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", config.data_dir.join("tavern.db").display()),
    };
    let db = Db::open(&database_url, &PoolConfig::default()).await?;
    let key_file = config.data_dir.join("token-keys.json");
    let keyring = Keyring::load_or_create(&key_file)?;
    let revocations: Arc<dyn Revocations> = match &config.redis_url {
        Some(url) => Arc::new(RedisRevocations::connect(url, &config.redis_prefix).await?),
        None => Arc::new(InProcessRevocations::new()),
    };
    let tokens = Tokens::new(keyring, config.tokens.clone(), db.clone(), revocations);
    let service_token = service_token(&config.data_dir.join("service-token"))?;

    let bind = |port: u16, what: &'static str| {
        let addr = SocketAddr::new(config.host, port);
        async move { TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}")) }
    };
    let login_listener = bind(config.login_port, "the login API").await?;
    let token_listener = bind(config.token_port, "the token service").await?;
    let admin_listener = bind(config.admin_port, "metrics and health").await?;

    let registry = Registry::new();
    let admin = Admin::new(registry.clone()).check("database", login::db_ready(db.clone()));
    let login_config = login::LoginConfig {
        bind: login_listener.local_addr()?,
        database_url: database_url.clone(),
        redis_url: config.redis_url.clone(),
        redis_prefix: config.redis_prefix.clone(),
        key_file,
        tokens: config.tokens.clone(),
        limits: config.limits.clone(),
        password_hashing: config.password_hashing,
        log: config.log.clone(),
        ..login::LoginConfig::default()
    };
    let login_state = login::AppState::new(login_config, db.clone(), tokens.clone(), &registry)?;
    let token_state = token_service::service::build_state(tokens, &service_token, &registry)?;

    let login_addr = login_listener.local_addr()?;
    let token_addr = token_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(log_exit("login", login::serve(login_listener, login_state, shutdown.clone())));
    tasks.spawn(log_exit("token service", token_service::service::http::serve(token_listener, token_state, shutdown.clone())));
    tasks.spawn(log_exit("admin", admin.serve(admin_listener, shutdown.clone())));
    tasks.close();

    println!("tavern is running (database: {}, revocation: {})", db.backend(),
        if config.redis_url.is_some() { "redis" } else { "in-process" });
    println!("  login REST API    http://{login_addr}/v1   (OpenAPI: http://{login_addr}/v1/openapi.json)");
    println!("  token service     http://{token_addr}      (service token in {})", config.data_dir.join("service-token").display());
    println!("  metrics, health   http://{admin_addr}/metrics  /healthz  /readyz");
    println!("  try: curl -s -XPOST http://{login_addr}/v1/auth/register -H 'content-type: application/json' -d '{{\"username\":\"alice\",\"password\":\"correct horse\"}}'");
    println!("Ctrl-C or SIGTERM stops it.");

    shutdown.cancelled().await;
    tasks.wait().await;
    db.close().await;
    println!("tavern stopped");
    Ok(())
}

async fn log_exit<E: std::fmt::Display>(what: &'static str, fut: impl std::future::Future<Output = Result<(), E>>) {
    if let Err(e) = fut.await {
        tracing::error!(service = what, error = %e, "service stopped with an error");
    }
}

/// The token trusted services present to the token service: created once, kept in the data
/// directory with owner-only permissions.
fn service_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let t = existing.trim();
        if t.len() >= 32 {
            return Ok(t.to_owned());
        }
    }
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}
