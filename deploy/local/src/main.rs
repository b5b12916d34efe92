//! `tavern`: the all-in-one launcher. `cargo run --release` at the root starts every Tavern
//! service in this one process on embedded defaults — SQLite under `./data/`, in-process
//! revocation — each on its real loopback port, so it runs the same code paths as production.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use instance_server::server::{HostConfig, InstanceHost, InstanceMetrics, ResultReporter, ServiceLinkReporter};
use matchmaker::allocation::InProcess;
use matchmaker::service::{MatchmakerConfig, ModeConfig, WindowConfig};
use migrations::{Db, PoolConfig};
use prometheus::Registry;
use protocol::tavern::ServiceRole;
use serde::Deserialize;
use service_runtime::admin::Admin;
use service_runtime::config::ConfigArgs;
use service_runtime::telemetry::{LogConfig, LogFormat};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use token_service::{InProcessRevocations, Keyring, RedisRevocations, Revocations, TokenConfig, Tokens};
use transport::ServerIdentity;
use transport::service_link::{ClientConfig, ServiceClient};

mod instances;

/// The matchmaker's node id on the service links.
const MATCHMAKER_NODE: &str = "matchmaker-local";
/// The GCS's node id: where the matchmaker sends its players' pushes.
const GCS_NODE: &str = "gcs-local";
/// The instance host's id, bound into join tokens, and its node id on the service link.
const INSTANCE_ID: &str = "instance-local";
/// The one game mode of the embedded system.
const MODE: &str = "duel";
/// Longest wait for the services to stop after SIGTERM before the launcher exits anyway.
const STOP_LIMIT: Duration = Duration::from_secs(15);

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
    /// The matchmaker's service link (TCP).
    matchmaker_port: u16,
    /// The GCS's ENet/DTLS listener (UDP).
    gcs_udp_port: u16,
    /// The GCS's WebSocket listener (TCP, path `/ws`).
    gcs_ws_port: u16,
    /// The instance host's ENet/DTLS listener (UDP).
    instance_udp_port: u16,
    /// The instance host's WebSocket listener (TCP, path `/ws`).
    instance_ws_port: u16,
    /// Defaults to SQLite at `<data_dir>/tavern.db`; a `postgres://` URL uses Postgres.
    database_url: Option<String>,
    /// With Redis, revocations are shared with other nodes.
    redis_url: Option<String>,
    redis_prefix: String,
    tokens: TokenConfig,
    limits: login::Limits,
    password_hashing: login::password::HashParams,
    matchmaking: Matchmaking,
    instances: Instances,
    gcs: GcsSettings,
    log: LogConfig,
}

/// The matchmaker's tunables; short windows so a demo pairs two players at once.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Matchmaking {
    tick_ms: u64,
    /// How long a ticket waits before it expires.
    ticket_ttl_s: u64,
    /// The rating window: `start` points at once, `end` after `over_s`.
    window: WindowConfig,
    join_token_ttl_s: u64,
    requeue_delay_ms: u64,
}

impl Default for Matchmaking {
    fn default() -> Self {
        Matchmaking {
            tick_ms: 100,
            ticket_ttl_s: 120,
            window: WindowConfig { start: 400.0, end: 2000.0, over_s: 10 },
            join_token_ttl_s: 30,
            requeue_delay_ms: 500,
        }
    }
}

/// The instance host's tunables.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Instances {
    /// Matches hosted at once.
    max_matches: usize,
    turn_ms: i64,
    join_window_ms: u64,
    rejoin_window_ms: u64,
}

impl Default for Instances {
    fn default() -> Self {
        let d = instance_server::server::InstanceConfig::default();
        Instances {
            max_matches: 1000,
            turn_ms: d.turn_ms,
            join_window_ms: d.join_window_ms,
            rejoin_window_ms: d.rejoin_window_ms,
        }
    }
}

/// The GCS's tunables.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GcsSettings {
    session: gcs::SessionConfig,
    hub: gcs::HubConfig,
    /// How long chat history is kept.
    chat_retention_days: u32,
}

impl Default for GcsSettings {
    fn default() -> Self {
        let d = gcs::GcsConfig::default();
        GcsSettings { session: d.session, hub: d.hub, chat_retention_days: d.chat_retention_days }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            login_port: 8080,
            token_port: 8081,
            admin_port: 9100,
            matchmaker_port: 7400,
            gcs_udp_port: 7350,
            gcs_ws_port: 7351,
            instance_udp_port: 7500,
            instance_ws_port: 7501,
            database_url: None,
            redis_url: None,
            redis_prefix: "tavern:".into(),
            tokens: TokenConfig::default(),
            limits: login::Limits::default(),
            password_hashing: login::password::HashParams::default(),
            matchmaking: Matchmaking::default(),
            instances: Instances::default(),
            gcs: GcsSettings::default(),
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
    // The matchmaker and the instance host's result link stop last, after the instance host has
    // aborted its matches and reported their results.
    let late_shutdown = CancellationToken::new();
    // The outbox relays stop after everything that records events.
    let relay_shutdown = CancellationToken::new();
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
    let tokens = Tokens::new(keyring.clone(), config.tokens.clone(), db.clone(), revocations);
    let service_token = service_token(&config.data_dir.join("service-token"))?;
    let tls_dir = config.data_dir.join("tls");
    let identity = ServerIdentity::load_or_create(&tls_dir)
        .with_context(|| format!("cannot load or create the DTLS certificate in {}", tls_dir.display()))?;
    let catalog = instance_server::catalog::store::load(&db).await.context("cannot load the game data")?;
    let events = outbox::EventsConfig {
        redis_url: config.redis_url.clone(),
        prefix: config.redis_prefix.clone(),
        ..outbox::EventsConfig::default()
    };

    let bind = |port: u16, what: &'static str| {
        let addr = SocketAddr::new(config.host, port);
        async move { TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}")) }
    };
    let login_listener = bind(config.login_port, "the login API").await?;
    let token_listener = bind(config.token_port, "the token service").await?;
    let admin_listener = bind(config.admin_port, "metrics and health").await?;
    let matchmaker_listener = bind(config.matchmaker_port, "the matchmaker's service link").await?;

    let admin_addr = admin_listener.local_addr()?;
    let registry = Registry::new();
    let revocations = tokens.revocations().clone();
    let revocations_ready: service_runtime::admin::ReadyCheck = Arc::new(move || {
        let revocations = revocations.clone();
        Box::pin(async move { revocations.ready() })
    });
    let admin = Admin::new(registry.clone())
        .check("database", login::db_ready(db.clone()))
        .check("revocations", revocations_ready);
    let login_config = login::LoginConfig {
        bind: login_listener.local_addr()?,
        database_url: database_url.clone(),
        redis_url: config.redis_url.clone(),
        redis_prefix: config.redis_prefix.clone(),
        key_file: key_file.clone(),
        tokens: config.tokens.clone(),
        limits: config.limits.clone(),
        password_hashing: config.password_hashing,
        service_token: Some(service_token.clone()),
        // The matchmaker's read API is served beside `/metrics` (below).
        matchmaker_api_url: Some(format!("http://{admin_addr}")),
        log: config.log.clone(),
        ..login::LoginConfig::default()
    };
    let verifier = tokens.session_verifier();
    let login_state = login::AppState::new(login_config, db.clone(), tokens.clone(), &registry)?;
    let token_state = token_service::service::build_state(tokens, &service_token, &registry)?;

    let login_addr = login_listener.local_addr()?;
    let token_addr = token_listener.local_addr()?;
    let matchmaker_addr = matchmaker_listener.local_addr()?;
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(log_exit("login", login::serve(login_listener, login_state, shutdown.clone())));
    tasks.spawn(log_exit("token service", token_service::service::http::serve(token_listener, token_state, shutdown.clone())));

    // The matchmaker, allocating through the instance host below.
    let (allocator, host_requests) = InProcess::new(256, Duration::from_secs(5));
    let matchmaker_config = MatchmakerConfig {
        bind: matchmaker_addr,
        node_id: MATCHMAKER_NODE.into(),
        service_token: service_token.clone(),
        database_url: database_url.clone(),
        join_token_ttl_s: config.matchmaking.join_token_ttl_s,
        tick_ms: config.matchmaking.tick_ms,
        modes: vec![ModeConfig { name: MODE.into(), team_size: 1 }],
        regions: vec!["local".into()],
        ticket_ttl_s: config.matchmaking.ticket_ttl_s,
        window: config.matchmaking.window.clone(),
        allocation: matchmaker::service::AllocationConfig::InProcess,
        requeue_delay_ms: config.matchmaking.requeue_delay_ms,
        log: config.log.clone(),
        ..MatchmakerConfig::default()
    };
    let mut relays = Vec::new();
    for source in [matchmaker::service::EVENT_SOURCE, instance_server::server::run::EVENT_SOURCE, GCS_EVENT_SOURCE] {
        relays.push(spawn_relay(&db, source, &events, &registry, &relay_shutdown)?);
    }
    let parts = matchmaker::service::Parts {
        db: db.clone(),
        keyring: keyring.clone(),
        allocator: Arc::new(allocator),
        registry: registry.clone(),
    };
    let matchmaker = matchmaker::service::start(matchmaker_config, parts, matchmaker_listener, late_shutdown.clone())
        .await
        .context("cannot start the matchmaker")?;

    // The instance host: high-density, results to the matchmaker over the service link.
    let reporter: Arc<dyn ResultReporter> = Arc::new(ServiceLinkReporter::start(
        &matchmaker_addr.to_string(),
        INSTANCE_ID,
        &service_token,
        Duration::from_secs(5),
        late_shutdown.clone(),
    ));
    let public_host = if config.host.is_unspecified() { "127.0.0.1".to_owned() } else { config.host.to_string() };
    let instance_defaults = instance_server::server::InstanceConfig {
        join_window_ms: config.instances.join_window_ms,
        rejoin_window_ms: config.instances.rejoin_window_ms,
        turn_ms: config.instances.turn_ms,
        ..instance_server::server::InstanceConfig::default()
    };
    let host = InstanceHost::start_with_outbox(
        HostConfig {
            instance_id: INSTANCE_ID.into(),
            udp_bind: SocketAddr::new(config.host, config.instance_udp_port),
            ws_bind: SocketAddr::new(config.host, config.instance_ws_port),
            public_host,
            identity: identity.clone(),
            settings: instance_defaults.settings(),
            max_matches: config.instances.max_matches,
            max_tracked_join_tokens: instance_defaults.max_tracked_join_tokens,
            max_links_per_ip: instance_defaults.max_links_per_ip,
        },
        keyring,
        Arc::new(catalog),
        reporter,
        InstanceMetrics::new(&registry),
        outbox::Outbox::new(db.clone(), instance_server::server::run::EVENT_SOURCE),
        shutdown.clone(),
    )
    .await
    .context("cannot start the instance host")?;
    let instance_udp = host.udp_addr();
    let instance_ws = host.address().ws_url.clone();
    let host_task = tokio::spawn(instances::serve(host, host_requests, config.instances.turn_ms, shutdown.clone()));

    // The GCS.
    let gcs = start_gcs(&config, &db, identity.clone(), verifier, &service_token, login_addr, matchmaker_addr, &registry, &shutdown)
        .await?;
    let cluster = gcs.cluster.clone();
    let bus_ready: service_runtime::admin::ReadyCheck = Arc::new(move || {
        let cluster = cluster.clone();
        Box::pin(async move { if cluster.ready() { Ok(()) } else { Err("bus not connected".to_owned()) } })
    });
    // The admin routes and, as the standalone matchmaker serves them on its admin listener, the
    // matchmaker's internal read API (login's `/v1/account` reads ratings there).
    let admin_routes = admin.check("bus", bus_ready).router().merge(matchmaker::api::router(db.clone(), &service_token));
    let admin_stop = shutdown.clone();
    tasks.spawn(log_exit("admin", async move {
        axum::serve(admin_listener, admin_routes).with_graceful_shutdown(admin_stop.cancelled_owned()).await
    }));
    tasks.close();

    println!("tavern is running (database: {}, revocation: {})", db.backend(),
        if config.redis_url.is_some() { "redis" } else { "in-process" });
    let line = |what: &str, addr: String| println!("  {what:<20}{addr}");
    line("login REST API", format!("http://{login_addr}/v1   (OpenAPI: http://{login_addr}/v1/openapi.json)"));
    line("token service", format!("http://{token_addr}      (service token in {})", config.data_dir.join("service-token").display()));
    line("metrics, health", format!("http://{admin_addr}/metrics  /healthz  /readyz"));
    line("matchmaker link", format!("tcp://{matchmaker_addr}   (mode {MODE:?}, service token as above)"));
    line("gcs enet/dtls", format!("udp://{}", gcs.server.enet_addr()));
    line("gcs websocket", format!("ws://{}/ws", gcs.server.ws_addr()));
    line("instance enet/dtls", format!("udp://{instance_udp}"));
    line("instance websocket", instance_ws);
    line("dtls certificate", format!("{}   (sha-256 {})", tls_dir.join("cert.pem").display(), hex(&identity.cert_sha256())));
    println!("  try: curl -s -XPOST http://{login_addr}/v1/auth/register -H 'content-type: application/json' -d '{{\"username\":\"alice\",\"password\":\"correct horse\"}}'");
    println!("  then connect to the GCS with the session token in Hello, and queue for {MODE:?}.");
    println!("Ctrl-C or SIGTERM stops it.");

    shutdown.cancelled().await;
    let stop = async {
        tasks.wait().await;
        gcs.server.stopped().await;
        if let Err(e) = host_task.await {
            tracing::error!(error = %e, "instance host task failed");
        }
        // Every result is reported now: the matchmaker may go.
        late_shutdown.cancel();
        matchmaker.wait().await;
        relay_shutdown.cancel();
        for relay in relays {
            if let Err(e) = relay.await {
                tracing::error!(error = %e, "outbox relay failed");
            }
        }
    };
    if tokio::time::timeout(STOP_LIMIT, stop).await.is_err() {
        tracing::warn!(limit_s = STOP_LIMIT.as_secs(), "services did not stop in time; exiting anyway");
    }
    late_shutdown.cancel();
    relay_shutdown.cancel();
    db.close().await;
    println!("tavern stopped");
    Ok(())
}

/// A started GCS.
struct Gcs {
    server: gcs::GcsServer,
    cluster: gcs::Cluster,
}

/// The `source` of the GCS's events in the outbox (as `gcs::run` records them).
const GCS_EVENT_SOURCE: &str = "gcs";

/// Spawns the outbox relay of one service's events; it runs until `shutdown` and its final flush.
fn spawn_relay(
    db: &Db,
    source: &str,
    events: &outbox::EventsConfig,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let sink = events.sink().with_context(|| format!("the events sink of {source}"))?;
    Ok(outbox::Relay::spawn_with(
        outbox::Outbox::new(db.clone(), source),
        sink,
        events.relay_config(),
        outbox::OutboxMetrics::new(registry, source),
        shutdown.clone(),
    ))
}

/// Starts the GCS on the launcher's database, identity and tokens, with friends from login's
/// internal API and queueing through the matchmaker's service link.
#[allow(clippy::too_many_arguments)]
async fn start_gcs(
    config: &Config,
    db: &Db,
    identity: ServerIdentity,
    verifier: token_service::SessionVerifier,
    service_token: &str,
    login_addr: SocketAddr,
    matchmaker_addr: SocketAddr,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<Gcs> {
    let gcs_config = gcs::GcsConfig {
        enet_bind: SocketAddr::new(config.host, config.gcs_udp_port),
        ws_bind: SocketAddr::new(config.host, config.gcs_ws_port),
        ws_path: "/ws".into(),
        identity_dir: config.data_dir.join("tls"),
        key_file: config.data_dir.join("token-keys.json"),
        redis_url: config.redis_url.clone(),
        redis_prefix: config.redis_prefix.clone(),
        session: config.gcs.session.clone(),
        hub: config.gcs.hub.clone(),
        node_id: GCS_NODE.into(),
        login_url: format!("http://{login_addr}"),
        matchmaker_addr: matchmaker_addr.to_string(),
        service_token: service_token.to_owned(),
        chat_retention_days: config.gcs.chat_retention_days,
        log: config.log.clone(),
        ..gcs::GcsConfig::default()
    };
    let cluster = match &config.redis_url {
        Some(url) => gcs::Cluster::redis(url, &config.redis_prefix, GCS_NODE, Duration::from_millis(gcs_config.directory_ttl_ms))
            .await
            .context("cannot connect the GCS to redis")?,
        None => gcs::Cluster::in_process(bus::Bus::in_process(), &bus::InProcessStore::default(), GCS_NODE)
            .context("the GCS's in-process cluster")?,
    };
    let social = gcs::social::SocialClient::new(&gcs_config.login_url, service_token).context("login's internal API client")?;
    let client_config = ClientConfig::new(gcs_config.matchmaker_addr.clone(), GCS_NODE, ServiceRole::Gcs, service_token);
    let (matchmaker, pushes) = ServiceClient::start(client_config, shutdown.clone());
    let outbox = outbox::Outbox::new(db.clone(), GCS_EVENT_SOURCE);
    let chat = gcs::chat_store::ChatStore::new(db.clone());
    tokio::spawn(gcs::server::expire_chat(chat.clone(), gcs_config.chat_retention_days, shutdown.clone()));
    let backends = gcs::Backends {
        node_id: GCS_NODE.into(),
        cluster: cluster.clone(),
        chat,
        social: Some(social),
        matchmaker: Some(matchmaker),
        outbox: Some(outbox),
    };
    let server = gcs::GcsServer::start(&gcs_config, identity, verifier, backends, Some(pushes), registry, shutdown.clone())
        .await
        .context("cannot start the GCS")?;
    Ok(Gcs { server, cluster })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
