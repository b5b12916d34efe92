//! The binary's two modes. Spawned: print the ready lines on stdout once both transports listen,
//! host the one match from config (or, without one, from the [`Assignment`] line the
//! matchmaker's spawner writes on stdin), exit after the result is acknowledged. Dense: host
//! matches created through [`InstanceHost::create_match`] until shutdown (the launcher and the
//! in-process allocator hold the host).
//!
//! One ready line is printed, the matchmaker's process spawner's contract:
//! `TAVERN_READY {"udp_port":…,"ws_port":…,"ws_url":"…"}` ([`READY_PREFIX`]); readers ignore
//! fields they do not know.
//!
//! Both modes open the database for the events outbox and run its relay. The relay stops only
//! after the host has stopped, and gets a bounded final flush, so a spawned process does not
//! exit before it has tried to publish its match's `game_ended` (the row stays in the database
//! for another relay if that fails).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use migrations::{Db, PoolConfig};
use outbox::{Outbox, OutboxMetrics, Relay};
use protocol::tavern::MatchResultT;
use token_service::{Keyring, TokenError};
use tokio_util::sync::CancellationToken;
use transport::{ServerIdentity, TransportError};

use crate::catalog::Catalog;

use super::config::{Assignment, InstanceConfig, Mode};
use super::service_reporter::ServiceLinkReporter;
use super::host::{HostConfig, HostError, InstanceHost, SpecError};
use super::metrics::InstanceMetrics;
use super::report::{ReportError, ResultReporter};

/// What the spawner waits for on stdout, followed by a JSON object of where the instance listens.
pub const READY_PREFIX: &str = "TAVERN_READY";

/// Why the instance server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("config: {0}")]
    Config(String),
    #[error("dtls identity: {0}")]
    Identity(#[from] TransportError),
    #[error("token keys: {0}")]
    Keys(#[from] TokenError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("match spec: {0}")]
    Spec(#[from] SpecError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] migrations::DbError),
    #[error("events: {0}")]
    Events(#[from] outbox::OutboxError),
}

/// The `source` of this service's events in the outbox.
pub const EVENT_SOURCE: &str = "instance-server";

/// Connections one instance process holds: spawned mode runs many processes, each recording two
/// events per match, so a small pool keeps them from exhausting Postgres.
const DB_CONNECTIONS: u32 = 4;

/// How long, beyond the relay's own final flush, stopping waits for the relay task.
const RELAY_STOP_GRACE: Duration = Duration::from_secs(1);

/// A reporter that logs each result and acknowledges it: the stand-in until the service link to
/// the matchmaker is configured. The log line carries every field of the result.
pub struct LogReporter;

impl ResultReporter for LogReporter {
    fn report<'a>(&'a self, result: &'a MatchResultT) -> BoxFuture<'a, Result<(), ReportError>> {
        Box::pin(async move {
            tracing::info!(
                match_id = %result.match_id,
                winner = ?result.winner.as_ref().map(ToString::to_string),
                draw = result.draw,
                reason = ?result.reason,
                duration_ms = result.duration_ms,
                turns = result.turns,
                "match result (no matchmaker link configured)"
            );
            Ok(())
        })
    }
}

/// The ready line for a host: [`READY_PREFIX`] and where it listens, as JSON.
pub fn ready_line(host: &InstanceHost) -> String {
    let address = serde_json::json!({
        "udp_port": host.address().udp_port,
        "ws_port": host.ws_addr().port(),
        "ws_url": host.address().ws_url,
    });
    format!("{READY_PREFIX} {address}")
}

/// Runs the instance server as configured until the spawned match is reported or `shutdown`
/// fires. Results go to the matchmaker over the service link when `matchmaker_addr` is set,
/// otherwise to the log.
pub async fn run(config: InstanceConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let reporter: Arc<dyn ResultReporter> = match &config.matchmaker_addr {
        Some(addr) => Arc::new(ServiceLinkReporter::start(
            addr,
            config.node_id.as_deref().unwrap_or(&config.instance_id),
            &config.service_token,
            Duration::from_millis(config.report_timeout_ms.max(1)),
            shutdown.clone(),
        )),
        None => {
            tracing::warn!("no matchmaker_addr: match results are only logged");
            Arc::new(LogReporter)
        }
    };
    run_with(config, reporter, shutdown).await
}

/// [`run`] with results going to `reporter`.
pub async fn run_with(
    config: InstanceConfig,
    reporter: Arc<dyn ResultReporter>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let catalog = Arc::new(Catalog::standard());
    let spec = match (config.mode, &config.match_spec) {
        (Mode::Spawned, Some(m)) => Some(m.to_spec(&catalog, config.turn_ms)?),
        (Mode::Spawned, None) | (Mode::Dense, _) => None,
    };
    let identity = ServerIdentity::load_or_create(&config.identity_dir)?;
    let keyring = Keyring::load_or_create(&config.key_file)?;
    let registry = prometheus::Registry::new();
    let metrics = InstanceMetrics::new(&registry);
    create_sqlite_dir(&config.database_url)?;
    let pool = PoolConfig { max_connections: DB_CONNECTIONS, ..PoolConfig::default() };
    let db = Db::open(&config.database_url, &pool).await?;
    let events = Outbox::new(db.clone(), EVENT_SOURCE);
    // Its own token, not a child of `shutdown`: the matches record `game_ended` while they
    // abort on shutdown, and the relay must still be there to publish it.
    let relay_shutdown = CancellationToken::new();
    let relay = EventRelay {
        handle: Relay::spawn_with(
            events.clone(),
            config.events.sink()?,
            config.events.relay_config(),
            OutboxMetrics::new(&registry, EVENT_SOURCE),
            relay_shutdown.clone(),
        ),
        shutdown: relay_shutdown,
        flush: config.events.relay_config().final_flush,
        db,
    };
    if let Some(bind) = config.admin_bind {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let admin = service_runtime::admin::Admin::new(registry.clone());
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = admin.serve(listener, token).await {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        });
    }
    let host_shutdown = shutdown.child_token();
    let host = InstanceHost::start_with_outbox(
        HostConfig {
            instance_id: config.instance_id.clone(),
            udp_bind: config.udp_bind,
            ws_bind: config.ws_bind,
            public_host: config.public_host.clone(),
            identity,
            settings: config.settings(),
            max_matches: config.max_matches,
            max_tracked_join_tokens: config.max_tracked_join_tokens,
            max_links_per_ip: config.max_links_per_ip,
        },
        keyring,
        catalog,
        reporter,
        metrics,
        events,
        host_shutdown.clone(),
    )
    .await;
    let host = match host {
        Ok(h) => h,
        Err(e) => {
            relay.stop().await;
            return Err(e.into());
        }
    };
    print_ready(&ready_line(&host));
    match (config.mode, spec) {
        (Mode::Spawned, Some(spec)) => {
            host.create_match(spec)?;
        }
        (Mode::Spawned, None) => {
            let Some(line) = read_assignment(&shutdown).await? else {
                tracing::info!("no assignment before stdin closed or shutdown; exiting");
                host_shutdown.cancel();
                host.stopped().await;
                relay.stop().await;
                return Ok(());
            };
            let spec = Assignment::from_json(&line)?.to_spec(host.catalog(), config.turn_ms)?;
            tracing::info!(match_id = %spec.match_id, "assignment received");
            host.create_match(spec)?;
        }
        (Mode::Dense, _) => {}
    }
    match config.mode {
        Mode::Spawned => {
            tokio::select! {
                () = host.wait_matches() => tracing::info!("match reported; exiting"),
                () = shutdown.cancelled() => tracing::info!("shutdown requested"),
            }
        }
        Mode::Dense => shutdown.cancelled().await,
    }
    host_shutdown.cancel();
    host.stopped().await;
    relay.stop().await;
    Ok(())
}

/// The outbox relay of the process and what stopping it needs.
struct EventRelay {
    handle: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    flush: Duration,
    db: Db,
}

impl EventRelay {
    /// Stops the relay after its final flush (bounded) and closes the database.
    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(self.flush + RELAY_STOP_GRACE, self.handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "outbox relay failed"),
            Err(_) => tracing::warn!("outbox relay did not stop in time; unpublished events stay in the database"),
        }
        self.db.close().await;
    }
}

/// `Db::open` creates a SQLite file but not its folder; the default lives in `./data/`.
fn create_sqlite_dir(url: &str) -> Result<(), RunError> {
    match service_runtime::sqlite_dir(url) {
        Some(dir) => Ok(std::fs::create_dir_all(dir)?),
        None => Ok(()),
    }
}

/// One line from stdin, or `None` when stdin closes or shutdown comes first.
async fn read_assignment(shutdown: &CancellationToken) -> Result<Option<String>, RunError> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    tokio::select! {
        line = lines.next_line() => Ok(line?.filter(|l| !l.trim().is_empty())),
        () = shutdown.cancelled() => Ok(None),
    }
}

fn print_ready(line: &str) {
    let mut out = std::io::stdout().lock();
    // The spawner reads this line; if stdout is gone there is nobody to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
