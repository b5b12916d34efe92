//! `bench gcs`: one GCS process (the real `gcs` binary) under load, measured the way DESIGN.md
//! §11 asks — the GCS alone on core 0, the clients in bench worker processes on core 1
//! (`taskset`), every loop bounded in count and time, loopback only.
//!
//! Phases, each against a fresh GCS process:
//! 1. Links held, per transport (ENet/DTLS, then WebSocket): `--links` clients open links from
//!    worker processes of at most `--links-per-worker` links each, on source addresses
//!    127.0.0.2…254, each saying `Hello` with its own session token and getting `Welcome`, then
//!    pinging every heartbeat interval. After `--hold-seconds` (longer than the GCS's dead-link
//!    timeout, so a link that did not heartbeat would be gone) the GCS's own count of attached
//!    sessions is the figure, and memory per link is its VmRSS after minus before, over that
//!    count. `--links-max` keeps opening past `--links` until the GCS stops taking links.
//! 2. Chat fan-out in the common area: `--listeners` linked listeners, `--senders` senders each
//!    sending `ChatSend{Global}` `--rate` times a second for `--seconds`; every delivery of a
//!    bench message to a listener is counted and timed from the send time written in its text.
//!
//! The GCS runs from its own binary (`--gcs-bin`, default beside the bench binary) with a TOML
//! config in a temporary folder: loopback listeners on free ports, an SQLite database, a key file
//! and a certificate that the bench writes first, so it can mint session tokens and pin the
//! certificate. The bench re-executes itself as `bench gcs worker-load` for the clients.

mod hist;
mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::hist::Histogram;
use crate::proc::{CpuMeter, Pinning, Proc};
use crate::report::{Report, Section, Table, round};

/// How long the GCS may take to answer `/readyz`, and a worker to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping worker gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the GCS may take to count newly opened links.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Links a worker is asked to open at once; the GCS's count is checked in between.
const OPEN_CHUNK: usize = 1_000;
/// How long listeners may keep receiving after the last message was sent.
const FANOUT_DRAIN: Duration = Duration::from_secs(10);
/// The GCS's per-address caps, fixed in `gcs::GcsServer` (transport defaults): ENet/DTLS
/// sessions and WebSocket links from one source address, and WebSocket links in all.
const ENET_PER_IP: usize = 64;
const WS_PER_IP: usize = 256;
const WS_MAX_LINKS: usize = 19_000;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    worker: Option<Worker>,
    /// Authenticated links to open and hold, per transport.
    #[arg(long, default_value_t = 10_000)]
    links: usize,
    /// Keep opening links past `--links` (up to `--links-cap`) until the GCS stops taking them.
    #[arg(long)]
    links_max: bool,
    /// The most links `--links-max` opens per transport.
    #[arg(long, default_value_t = 20_000)]
    links_cap: usize,
    /// Links per worker process (each link is a socket; a process may hold 20,000 files).
    #[arg(long, default_value_t = 4_000)]
    links_per_worker: usize,
    /// How long the links are held, heartbeating, before they are counted.
    #[arg(long, default_value_t = 7.0)]
    hold_seconds: f64,
    /// The transports of the links phase.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "enet-dtls,ws")]
    transports: Vec<Kind>,
    /// Linked listeners in the fan-out phase.
    #[arg(long, default_value_t = 1_000)]
    listeners: usize,
    /// Senders in the fan-out phase.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Chat messages per second per sender.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Seconds the senders send.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The transport of the fan-out listeners and senders.
    #[arg(long, value_enum, default_value = "enet-dtls")]
    fanout_transport: Kind,
    /// The heartbeat interval the GCS asks for (`session.heartbeat_interval_ms`).
    #[arg(long, default_value_t = 2_000)]
    heartbeat_ms: u32,
    /// The `gcs` binary (default: beside the bench binary, built if missing).
    #[arg(long)]
    gcs_bin: Option<PathBuf>,
    /// The core the GCS runs on.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// The core the load workers run on.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// The phases to run; the figures of a skipped phase are null.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "links,fanout")]
    phases: Vec<Phase>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Links,
    Fanout,
}

#[derive(clap::Subcommand, Debug)]
enum Worker {
    /// Internal: a load worker holding client links.
    #[command(hide = true)]
    WorkerLoad(load::LoadArgs),
}

/// The GCS's client transports.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    EnetDtls,
    Ws,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::EnetDtls => "enet-dtls",
            Kind::Ws => "ws",
        }
    }

    /// The JSON key.
    fn key(self) -> &'static str {
        match self {
            Kind::EnetDtls => "enet_dtls",
            Kind::Ws => "ws",
        }
    }

    /// The most links the GCS takes from 253 loopback source addresses.
    fn ceiling(self) -> usize {
        match self {
            Kind::EnetDtls => ENET_PER_IP * crate::transport::load::SOURCE_ADDRESSES,
            Kind::Ws => WS_MAX_LINKS.min(WS_PER_IP * crate::transport::load::SOURCE_ADDRESSES),
        }
    }
}

pub fn run(args: &Args) -> Result<Report> {
    if let Some(Worker::WorkerLoad(a)) = &args.worker {
        crate::proc::exit_worker("gcs", load::run(a));
    }
    check_args(args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(orchestrate(args))
}

fn check_args(a: &Args) -> Result<()> {
    if a.links == 0 || a.links > 200_000 || a.links_cap > 200_000 {
        bail!("--links must be within 1..=200000 and --links-cap at most 200000");
    }
    if a.links_per_worker == 0 || a.links_per_worker > 19_000 {
        bail!("--links-per-worker {} is not within 1..=19000", a.links_per_worker);
    }
    if !(a.hold_seconds > 0.0 && a.hold_seconds <= 600.0) || !(a.seconds > 0.0 && a.seconds <= 600.0) {
        bail!("--hold-seconds and --seconds must be within (0, 600]");
    }
    if a.listeners == 0 || a.listeners > 100_000 || a.senders == 0 || a.senders > 100 {
        bail!("--listeners must be within 1..=100000 and --senders within 1..=100");
    }
    if !(a.rate > 0.0 && a.rate <= 1_000.0) {
        bail!("--rate {} is not within (0, 1000]", a.rate);
    }
    if !(100..=60_000).contains(&a.heartbeat_ms) {
        bail!("--heartbeat-ms {} is not within 100..=60000", a.heartbeat_ms);
    }
    if a.phases.is_empty() {
        bail!("--phases names no phase");
    }
    Ok(())
}

/// Where things run, and what the GCS and its clients share.
struct Ctx<'a> {
    args: &'a Args,
    exe: PathBuf,
    gcs_bin: PathBuf,
    pin: Pinning,
    dir: PathBuf,
    tokens: PathBuf,
    cert_pin: String,
}

/// A running GCS and its addresses.
struct Gcs {
    proc: Proc,
    enet: SocketAddr,
    ws: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
}

impl Gcs {
    fn addr(&self, kind: Kind) -> SocketAddr {
        match kind {
            Kind::EnetDtls => self.enet,
            Kind::Ws => self.ws,
        }
    }

    /// The GCS's own figures from `/metrics`: links (authenticated or not) and attached sessions.
    async fn counts(&self) -> Result<Counts> {
        let body = http_get(self.admin, "/metrics").await?;
        let metric = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as usize
        };
        let sessions = metric("tavern_gcs_sessions");
        let detached = metric("tavern_gcs_detached_sessions");
        Ok(Counts { links: metric("tavern_gcs_links"), attached: sessions.saturating_sub(detached) })
    }
}

#[derive(Clone, Copy, Debug)]
struct Counts {
    links: usize,
    /// Sessions with a live link: links that completed Hello → Welcome and are still there.
    attached: usize,
}

impl Ctx<'_> {
    /// Starts a fresh GCS on free loopback ports and waits for `/readyz`.
    async fn start_gcs(&self, name: &str) -> Result<Gcs> {
        let enet = free_udp()?;
        let ws = free_tcp()?;
        let admin = free_tcp()?;
        let config = self.dir.join(format!("{name}.toml"));
        let a = self.args;
        let limit = 1_000_000;
        let text = format!(
            "enet_bind = \"{enet}\"\nws_bind = \"{ws}\"\nadmin_bind = \"{admin}\"\n\
             identity_dir = \"{tls}\"\nkey_file = \"{keys}\"\ndatabase_url = \"sqlite://{db}\"\nnode_id = \"bench-{name}\"\n\
             \n[session]\nheartbeat_interval_ms = {hb}\ndead_link_timeout_ms = {dead}\nrate_burst = {limit}\nrate_per_second = {limit}\n\
             \n[hub]\nchat_burst = {limit}\nchat_per_second = {limit}\n\
             \n[log]\nlevel = \"warn\"\n",
            tls = self.dir.join("tls").display(),
            keys = self.dir.join("keys.json").display(),
            db = self.dir.join("gcs.db").display(),
            hb = a.heartbeat_ms,
            dead = dead_link_ms(a.heartbeat_ms),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let args = vec!["--config".to_owned(), config.display().to_string()];
        let proc = Proc::spawn(&format!("gcs ({name})"), &self.gcs_bin, &args, self.pin.server_core)?;
        let mut gcs = Gcs { proc, enet, ws, admin, config };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = gcs.proc.exited() {
                bail!("the gcs exited before it was ready ({status}); config {}", gcs.config.display());
            }
            if http_get(gcs.admin, "/readyz").await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the gcs was not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(gcs)
    }

    /// Starts a load worker for `clients` links of `kind`, using tokens from `token_offset` and
    /// source addresses from `source_offset`.
    async fn worker(&self, name: &str, gcs: &Gcs, kind: Kind, clients: usize, token_offset: usize, source_offset: usize) -> Result<Proc> {
        let rest = strings(&[
            "gcs", "worker-load", "--kind", kind.arg(), "--addr", &gcs.addr(kind).to_string(), "--pin", &self.cert_pin,
            "--tokens", &self.tokens.display().to_string(), "--token-offset", &token_offset.to_string(),
            "--clients", &clients.to_string(), "--source-offset", &source_offset.to_string(),
        ]);
        let mut p = Proc::spawn(name, &self.exe, &rest, self.pin.load_core)?;
        p.json(READY_TIMEOUT).await?;
        Ok(p)
    }
}

async fn orchestrate(args: &Args) -> Result<Report> {
    let exe = std::env::current_exe().context("cannot find the bench binary to re-execute")?;
    let gcs_bin = match &args.gcs_bin {
        Some(p) => p.clone(),
        None => crate::proc::sibling_bin("gcs")?,
    };
    let (pin, pin_note) = Pinning::detect(args.server_core, args.load_core);
    if let Some(n) = &pin_note {
        eprintln!("gcs: {n}");
    }
    let dir = std::env::temp_dir().join(format!("tavern-bench-gcs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let link_target = if args.links_max { args.links.max(args.links_cap) } else { args.links };
        let wanted = [
            if args.phases.contains(&Phase::Links) { link_target } else { 0 },
            if args.phases.contains(&Phase::Fanout) { args.listeners + args.senders } else { 0 },
        ];
        eprintln!("gcs: minting {} session tokens …", wanted[0].max(wanted[1]));
        let (tokens, cert_pin) = prepare(&dir, wanted[0].max(wanted[1])).await?;
        let ctx = Ctx { args, exe, gcs_bin, pin, dir: dir.clone(), tokens, cert_pin };
        let mut holds = Vec::new();
        if args.phases.contains(&Phase::Links) {
            for &kind in &args.transports {
                let target = if args.links_max { link_target.min(kind.ceiling()) } else { args.links };
                holds.push(hold(&ctx, kind, target).await.with_context(|| format!("holding {} links", kind.key()))?);
            }
        }
        let fanout =
            if args.phases.contains(&Phase::Fanout) { Some(fanout(&ctx).await.context("fan-out phase")?) } else { None };
        Ok::<_, anyhow::Error>((holds, fanout))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (holds, fanout) = result?;
    Ok(build_report(args, &pin, pin_note, &holds, fanout.as_ref()))
}

/// Writes the key file and the certificate the GCS will load, and mints `n` session tokens (one
/// user each) into a file; returns its path and the certificate's SHA-256 (hex).
async fn prepare(dir: &Path, n: usize) -> Result<(PathBuf, String)> {
    let keyring = token_service::Keyring::load_or_create(&dir.join("keys.json"))?;
    let identity = ::transport::ServerIdentity::load_or_create(&dir.join("tls"))?;
    let cert_pin = ::transport::cert::hex(&identity.cert_sha256());
    let url = format!("sqlite://{}", dir.join("gcs.db").display());
    let db = migrations::Db::open(&url, &migrations::PoolConfig::default()).await?;
    // Long enough for any bounded run; the GCS checks it at Hello only.
    let config = token_service::TokenConfig { session_ttl_s: 6 * 3600, ..token_service::TokenConfig::default() };
    let tokens =
        token_service::Tokens::new(keyring, config, db.clone(), Arc::new(token_service::InProcessRevocations::new()));
    let now = now_ms();
    let mut text = String::with_capacity(n * 420);
    for i in 0..n {
        let minted = tokens.mint_session(uuid::Uuid::new_v4(), &format!("bench{i}"), uuid::Uuid::new_v4(), now)?;
        text.push_str(&minted.token);
        text.push('\n');
    }
    db.close().await;
    let path = dir.join("tokens.txt");
    std::fs::write(&path, text)?;
    Ok((path, cert_pin))
}

/// What the links phase measured for one transport.
struct Hold {
    kind: Kind,
    target: usize,
    /// Attached sessions the GCS counts after the hold.
    held: usize,
    /// Links of any state the GCS counts.
    server_links: usize,
    /// Links the workers still see.
    alive: usize,
    failed: usize,
    retried: usize,
    rss_before: u64,
    rss_after: u64,
    open_s: f64,
    /// Pings sent and pongs received during the hold.
    pings: u64,
    pongs: u64,
    ping_late_ms: u64,
    idle_server_cpu: Option<f64>,
    first_error: Option<String>,
    stopped: Option<String>,
    closed: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Hold {
    fn rss_per_link(&self) -> f64 {
        if self.held == 0 { 0.0 } else { self.rss_after.saturating_sub(self.rss_before) as f64 / self.held as f64 }
    }
}

/// A load worker and how many links it was asked for.
struct LoadWorker {
    proc: Proc,
    asked: usize,
}

/// How opening a batch of links went.
struct Opened {
    asked: usize,
    failed: usize,
    retried: usize,
    first_error: Option<String>,
    stopped: Option<String>,
}

/// Opens `target` links of `kind` in chunks from as many workers as needed (tokens and source
/// addresses from `token_offset`), stopping early when the GCS stops taking them.
async fn open_links(
    ctx: &Ctx<'_>,
    gcs: &Gcs,
    kind: Kind,
    target: usize,
    token_offset: usize,
    workers: &mut Vec<LoadWorker>,
    label: &str,
) -> Result<Opened> {
    let per = ctx.args.links_per_worker;
    let mut o = Opened { asked: 0, failed: 0, retried: 0, first_error: None, stopped: None };
    let mut last_report = Instant::now();
    while o.asked < target {
        let w = match workers.iter().position(|w| w.asked < per) {
            Some(w) => w,
            None => {
                let w = workers.len();
                let base = token_offset + o.asked;
                let proc = ctx.worker(&format!("{label} worker {w}"), gcs, kind, per.min(target - o.asked), base, base).await?;
                workers.push(LoadWorker { proc, asked: 0 });
                w
            }
        };
        let worker = &mut workers[w];
        let k = (target - o.asked).min(per - worker.asked).min(OPEN_CHUNK);
        worker.proc.send(&format!("open {k}")).await?;
        let r = worker.proc.json(Duration::from_secs(60) + Duration::from_millis(20 * k as u64)).await?;
        worker.asked += k;
        o.asked += k;
        let failed = r["failed"].as_u64().unwrap_or(0) as usize;
        o.failed += failed;
        o.retried += r["retried"].as_u64().unwrap_or(0) as usize;
        if o.first_error.is_none() {
            o.first_error = r["first_error"].as_str().map(str::to_owned);
        }
        if last_report.elapsed() > Duration::from_secs(2) || o.asked == target {
            eprintln!("gcs: {label}: {} of {target} links opened ({} failed)", o.asked - o.failed, o.failed);
            last_report = Instant::now();
        }
        // A chunk that mostly failed, or links that do not stay: the GCS is past what it takes.
        if failed * 20 > k {
            o.stopped = Some(format!("{failed} of {k} connects failed in the last chunk"));
            break;
        }
        let expected = o.asked - o.failed;
        let mut held = gcs.counts().await?.attached;
        if (held as f64) < 0.95 * expected as f64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            held = gcs.counts().await?.attached;
            if (held as f64) < 0.95 * expected as f64 {
                o.stopped = Some(format!("links were dropping: the gcs held {held} of {expected} opened"));
                break;
            }
        }
    }
    if let Some(why) = &o.stopped {
        eprintln!("gcs: {label}: {why}; not going higher");
    }
    Ok(o)
}

/// Waits (bounded) until the GCS counts `want` attached sessions.
async fn settle(gcs: &Gcs, want: usize) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while gcs.counts().await?.attached < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// What the load workers counted, summed.
#[derive(Default)]
struct Tallies {
    alive: usize,
    pings: u64,
    pongs: u64,
    /// How late the latest heartbeat left a worker: when large, the load core fell behind.
    ping_late_ms: u64,
    /// Why links ended, as their clients saw it.
    closed: BTreeMap<String, u64>,
    /// `Error` answers by code.
    errors: BTreeMap<String, u64>,
}

async fn count(workers: &mut [LoadWorker]) -> Result<Tallies> {
    let mut t = Tallies::default();
    for w in workers {
        w.proc.send("count").await?;
        let r = w.proc.json(Duration::from_secs(10)).await?;
        t.alive += r["alive"].as_u64().unwrap_or(0) as usize;
        t.pings += r["pings"].as_u64().unwrap_or(0);
        t.pongs += r["pongs"].as_u64().unwrap_or(0);
        t.ping_late_ms = t.ping_late_ms.max(r["ping_late_ms"].as_u64().unwrap_or(0));
        for (why, n) in r["closed"].as_object().into_iter().flatten() {
            *t.closed.entry(why.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
        for (code, n) in r["errors"].as_object().into_iter().flatten() {
            *t.errors.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    Ok(t)
}

async fn hold(ctx: &Ctx<'_>, kind: Kind, target: usize) -> Result<Hold> {
    eprintln!("gcs: holding {target} authenticated {} links …", kind.key());
    let gcs = ctx.start_gcs(kind.key()).await?;
    // The idle GCS's memory, once it has settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = gcs.proc.rss_bytes()?;
    let mut workers = Vec::new();
    let began = Instant::now();
    let opened = open_links(ctx, &gcs, kind, target, 0, &mut workers, kind.key()).await?;
    let open_s = began.elapsed().as_secs_f64();
    if opened.stopped.is_none() {
        settle(&gcs, opened.asked - opened.failed).await?;
    }
    // Held for longer than the dead-link timeout: only links that keep heartbeating survive.
    let before = count(&mut workers).await?;
    eprintln!("gcs: {}: holding for {} s …", kind.key(), ctx.args.hold_seconds);
    let meter = CpuMeter::start(&[gcs.proc.pid()]);
    tokio::time::sleep(Duration::from_secs_f64(ctx.args.hold_seconds)).await;
    let idle_server_cpu = meter.share();
    let counts = gcs.counts().await?;
    let rss_after = gcs.proc.rss_bytes()?;
    let after = count(&mut workers).await?;
    eprintln!(
        "gcs: {}: the gcs holds {} authenticated links (workers see {}), VmRSS {} → {} MiB",
        kind.key(),
        counts.attached,
        after.alive,
        rss_before >> 20,
        rss_after >> 20
    );
    for w in workers {
        w.proc.finish(STOP_GRACE).await;
    }
    gcs.proc.kill().await;
    Ok(Hold {
        kind,
        target,
        held: counts.attached,
        server_links: counts.links,
        alive: after.alive,
        failed: opened.failed,
        retried: opened.retried,
        rss_before,
        rss_after,
        open_s,
        pings: after.pings - before.pings,
        pongs: after.pongs - before.pongs,
        ping_late_ms: after.ping_late_ms,
        idle_server_cpu,
        first_error: opened.first_error,
        stopped: opened.stopped,
        closed: after.closed,
        errors: after.errors,
    })
}

/// What the fan-out phase measured.
struct Fanout {
    listeners: usize,
    senders: usize,
    sent: u64,
    acked: u64,
    delivered: u64,
    /// Messages accepted × listeners.
    expected: u64,
    deliveries_per_s: f64,
    latency_ms: Histogram,
    span_s: f64,
    server_cpu: Option<f64>,
    load_cpu: Option<f64>,
    send_errors: Value,
    closed: BTreeMap<String, u64>,
    ping_late_ms: u64,
}

async fn fanout(ctx: &Ctx<'_>) -> Result<Fanout> {
    let a = ctx.args;
    let kind = a.fanout_transport;
    eprintln!("gcs: fan-out: {} listeners and {} senders over {} …", a.listeners, a.senders, kind.key());
    let gcs = ctx.start_gcs("fanout").await?;
    let mut listeners = Vec::new();
    let opened = open_links(ctx, &gcs, kind, a.listeners, 0, &mut listeners, "listeners").await?;
    if opened.failed > 0 || opened.stopped.is_some() {
        bail!(
            "{} of {} listeners did not link: {}",
            opened.failed,
            a.listeners,
            opened.first_error.or(opened.stopped).unwrap_or_default()
        );
    }
    // The senders are a worker of their own: what they hear of their own messages is not counted.
    let mut senders = ctx.worker("senders", &gcs, kind, a.senders, a.listeners, a.listeners).await?;
    senders.send(&format!("open {}", a.senders)).await?;
    let r = senders.json(Duration::from_secs(60)).await?;
    if r["failed"].as_u64() != Some(0) {
        bail!("senders did not link: {r}");
    }
    settle(&gcs, a.listeners + a.senders).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("gcs: fan-out: {} senders × {}/s for {} s …", a.senders, a.rate, a.seconds);
    let pids: Vec<u32> = listeners.iter().map(|w| w.proc.pid()).chain([senders.pid()]).collect();
    let server_meter = CpuMeter::start(&[gcs.proc.pid()]);
    let load_meter = CpuMeter::start(&pids);
    senders.send(&format!("send {} {}", a.seconds, a.rate)).await?;
    let sent = senders.json(Duration::from_secs_f64(a.seconds) + Duration::from_secs(30)).await?;
    let (server_cpu, load_cpu) = (server_meter.share(), load_meter.share());
    let acked = sent["acked"].as_u64().unwrap_or(0);
    let expected = acked * a.listeners as u64;

    // Listeners keep receiving until every accepted message reached every one, bounded.
    let deadline = Instant::now() + FANOUT_DRAIN;
    let mut last = (0u64, Instant::now());
    let reports = loop {
        let mut reports = Vec::new();
        for w in &mut listeners {
            w.proc.send("report").await?;
            reports.push(w.proc.json(Duration::from_secs(10)).await?);
        }
        let delivered: u64 = reports.iter().map(|r| r["deliveries"].as_u64().unwrap_or(0)).sum();
        if delivered != last.0 {
            last = (delivered, Instant::now());
        }
        if delivered >= expected || Instant::now() > deadline || last.1.elapsed() > Duration::from_secs(2) {
            break reports;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut latency = Histogram::default();
    let (mut delivered, mut first, mut last_ms) = (0u64, u64::MAX, 0u64);
    for r in &reports {
        delivered += r["deliveries"].as_u64().unwrap_or(0);
        latency.merge(&Histogram::from_json(&r["latency_us"]));
        first = first.min(r["first_ms"].as_u64().unwrap_or(u64::MAX));
        last_ms = last_ms.max(r["last_ms"].as_u64().unwrap_or(0));
    }
    let span_s = if last_ms >= first { (last_ms - first) as f64 / 1e3 } else { 0.0 };
    // A GCS that keeps up delivers within the sending window; one that lags keeps delivering
    // after it, and the rate is over the time it took.
    let deliveries_per_s = delivered as f64 / span_s.max(a.seconds);
    let tallies = count(&mut listeners).await?;
    eprintln!(
        "gcs: fan-out: {delivered} of {expected} deliveries, {deliveries_per_s:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
        latency.percentile(50.0) / 1e3,
        latency.percentile(99.0) / 1e3
    );
    senders.finish(STOP_GRACE).await;
    for w in listeners {
        w.proc.finish(STOP_GRACE).await;
    }
    gcs.proc.kill().await;
    Ok(Fanout {
        listeners: a.listeners,
        senders: a.senders,
        sent: sent["sent"].as_u64().unwrap_or(0),
        acked,
        delivered,
        expected,
        deliveries_per_s,
        latency_ms: latency,
        span_s,
        server_cpu,
        load_cpu,
        send_errors: sent["errors"].clone(),
        closed: tallies.closed,
        ping_late_ms: tallies.ping_late_ms,
    })
}

fn build_report(args: &Args, pin: &Pinning, pin_note: Option<String>, holds: &[Hold], fanout: Option<&Fanout>) -> Report {
    let mib = |b: u64| format!("{:.1}", b as f64 / f64::from(1u32 << 20));
    let pct = |s: Option<f64>| s.map_or("?".to_owned(), |s| format!("{:.0} %", s * 100.0));
    let mut links_held = serde_json::Map::new();
    let mut rss = serde_json::Map::new();
    let mut details = serde_json::Map::new();
    let mut table = Table::new(&[
        "transport", "links asked", "held (gcs)", "open (workers)", "failed", "RSS before MiB", "RSS after MiB", "RSS/link B",
        "open s", "pongs in hold", "idle gcs CPU",
    ]);
    let mut notes = vec![format!(
        "Each link: a connect from its own socket on source addresses 127.0.0.2…254 (worker processes of at most {} \
         links), Hello with its own session token, Welcome, then a Ping every {} ms. Held = the GCS's attached sessions \
         (`tavern_gcs_sessions − tavern_gcs_detached_sessions` on /metrics) after holding {} s ({} the GCS's \
         dead-link timeout of {} ms, so links that stopped heartbeating {}). RSS/link = (GCS VmRSS with the links − VmRSS before any) ÷ held, from /proc/<pid>/status. \
         The GCS takes at most {ENET_PER_IP} ENet/DTLS sessions and {WS_PER_IP} WebSocket links per source address \
         and {WS_MAX_LINKS} WebSocket links in all (transport defaults it does not configure), so from loopback it \
         holds at most {} ENet/DTLS and {} WebSocket links.",
        args.links_per_worker,
        args.heartbeat_ms,
        args.hold_seconds,
        if args.hold_seconds * 1e3 > dead_link_ms(args.heartbeat_ms) as f64 { "longer than" } else { "within" },
        dead_link_ms(args.heartbeat_ms),
        if args.hold_seconds * 1e3 > dead_link_ms(args.heartbeat_ms) as f64 { "are not counted" } else { "may still count" },
        Kind::EnetDtls.ceiling(),
        Kind::Ws.ceiling(),
    )];
    for kind in [Kind::EnetDtls, Kind::Ws] {
        let Some(h) = holds.iter().find(|h| h.kind == kind) else {
            links_held.insert(kind.key().into(), Value::Null);
            rss.insert(kind.key().into(), Value::Null);
            continue;
        };
        links_held.insert(kind.key().into(), json!(h.held));
        rss.insert(kind.key().into(), json!(round(h.rss_per_link(), 0)));
        details.insert(
            kind.key().into(),
            json!({
                "asked": h.target, "held": h.held, "gcs_links": h.server_links, "workers_alive": h.alive,
                "failed": h.failed, "retried": h.retried, "rss_before_bytes": h.rss_before, "rss_after_bytes": h.rss_after,
                "open_seconds": round(h.open_s, 2), "hold_pings": h.pings, "hold_pongs": h.pongs,
                "idle_gcs_cpu": h.idle_server_cpu.map(|v| round(v, 3)), "first_error": h.first_error,
                "stopped": h.stopped, "closed_by_reason": h.closed, "errors_by_code": h.errors,
                "max_ping_late_ms": h.ping_late_ms,
            }),
        );
        table.row(vec![
            kind.key().into(),
            h.target.to_string(),
            h.held.to_string(),
            h.alive.to_string(),
            h.failed.to_string(),
            mib(h.rss_before),
            mib(h.rss_after),
            format!("{:.0}", h.rss_per_link()),
            format!("{:.1}", h.open_s),
            format!("{} of {}", h.pongs, h.pings),
            pct(h.idle_server_cpu),
        ]);
        if let Some(e) = &h.first_error {
            notes.push(format!("{}: first connect failure: {e}", kind.key()));
        }
        if let Some(why) = &h.stopped {
            notes.push(format!("{}: stopped: {why}", kind.key()));
        }
        if !h.closed.is_empty() {
            let reasons: Vec<String> = h.closed.iter().map(|(why, n)| format!("{n} × {why}")).collect();
            notes.push(format!("{}: held links that ended, as their clients saw it: {}", kind.key(), reasons.join(", ")));
        }
    }

    let mut fan_table = Table::new(&[
        "listeners", "senders", "msgs sent", "accepted", "deliveries", "expected", "deliveries/s", "p50 ms", "p99 ms",
        "gcs CPU", "load CPU",
    ]);
    let mut fan_notes = vec![format!(
        "{} listeners and {} senders over {}, all linked to one GCS; each sender sends ChatSend{{Global}} {}/s for {} s, \
         its text carrying the send time (unix ns); the GCS stores each message and pushes it to every member of the \
         common area. Deliveries = bench messages received by the listeners (the senders' own copies not counted); \
         deliveries/s = deliveries ÷ the longer of the sending time and first-to-last delivery; latency = receive time \
         − send time, over every delivery (1 % buckets). Expected = accepted messages × listeners.",
        args.listeners,
        args.senders,
        args.fanout_transport.key(),
        args.rate,
        args.seconds,
    )];
    let (fan_per_s, fan_p50, fan_p99) = match fanout {
        Some(f) => {
            let (p50, p99) = (f.latency_ms.percentile(50.0) / 1e3, f.latency_ms.percentile(99.0) / 1e3);
            details.insert(
                "fanout".into(),
                json!({
                    "listeners": f.listeners, "senders": f.senders, "sent": f.sent, "accepted": f.acked,
                    "deliveries": f.delivered, "expected": f.expected, "latency_samples": f.latency_ms.count(), "delivery_span_seconds": round(f.span_s, 2),
                    "gcs_cpu": f.server_cpu.map(|v| round(v, 3)), "load_cpu": f.load_cpu.map(|v| round(v, 3)),
                    "sender_errors_by_code": f.send_errors, "listener_links_closed": f.closed,
                    "max_ping_late_ms": f.ping_late_ms,
                }),
            );
            fan_table.row(vec![
                f.listeners.to_string(),
                f.senders.to_string(),
                f.sent.to_string(),
                f.acked.to_string(),
                f.delivered.to_string(),
                f.expected.to_string(),
                format!("{:.0}", f.deliveries_per_s),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                pct(f.server_cpu),
                pct(f.load_cpu),
            ]);
            if f.delivered < f.expected {
                fan_notes.push(format!("{} deliveries missing: listeners received fewer than expected.", f.expected - f.delivered));
            }
            if f.acked < f.sent {
                fan_notes.push(format!("{} messages were not accepted (errors by code: {}).", f.sent - f.acked, f.send_errors));
            }
            (json!(round(f.deliveries_per_s, 1)), json!(round(p50, 3)), json!(round(p99, 3)))
        }
        None => (Value::Null, Value::Null, Value::Null),
    };

    let json = json!({
        "links_held": Value::Object(links_held),
        "rss_per_link_bytes": Value::Object(rss),
        "fanout_deliveries_per_s": fan_per_s,
        "fanout_p50_ms": fan_p50,
        "fanout_p99_ms": fan_p99,
        "details": Value::Object(details),
        "setup": {
            "links": args.links, "links_max": args.links_max, "links_cap": args.links_cap,
            "links_per_worker": args.links_per_worker, "hold_seconds": args.hold_seconds,
            "heartbeat_ms": args.heartbeat_ms, "listeners": args.listeners, "senders": args.senders,
            "rate": args.rate, "seconds": args.seconds, "fanout_transport": args.fanout_transport.key(),
            "server_core": pin.server_core, "load_core": pin.load_core,
        },
    });

    let mut setup = vec![
        match (pin.server_core, pin.load_core) {
            (Some(s), Some(l)) => format!("gcs pinned to core {s}, load workers to core {l} (taskset)"),
            _ => "processes not pinned".into(),
        },
        if cfg!(debug_assertions) { "debug build: figures mean nothing" } else { "release build" }.into(),
        "the real `gcs` binary, one fresh process per phase, SQLite chat store, no login or matchmaker; generous \
         session and chat rate limits so the senders are never limited"
            .into(),
        format!(
            "replay: `cargo run --release -p bench -- gcs --links {} --listeners {} --senders {} --rate {} --seconds {}`",
            args.links, args.listeners, args.senders, args.rate, args.seconds
        ),
    ];
    if let Some(n) = pin_note {
        setup.push(n);
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        // Other work on the two cores takes CPU from the pinned processes: say how much there was.
        setup.push(format!("load average at the end (1, 5, 15 min): {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")));
    }
    let mut sections = Vec::new();
    if !holds.is_empty() {
        sections.push(Section { heading: "Authenticated links held".into(), table, notes });
    }
    if fanout.is_some() {
        sections.push(Section { heading: "Chat fan-out in the common area".into(), table: fan_table, notes: fan_notes });
    }
    Report {
        scenario: "gcs",
        title: "GCS: authenticated links held, memory per link, chat fan-out".into(),
        setup,
        sections,
        json,
    }
}

/// The dead-link timeout the bench gives the GCS: three heartbeat intervals (its default ratio).
fn dead_link_ms(heartbeat_ms: u32) -> u64 {
    3 * u64::from(heartbeat_ms)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A loopback TCP port nobody holds right now.
fn free_tcp() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A loopback UDP port nobody holds right now.
fn free_udp() -> Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// A bounded HTTP/1.0 GET on loopback (so the body is never chunked); the body of a 2xx answer.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        tcp.take(16 << 20).read_to_end(&mut buf).await?;
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fetch).await.context("http get timed out")??;
    let status = text.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with('2') {
        bail!("GET {path}: status {status:?}");
    }
    Ok(text.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_owned()))
}
