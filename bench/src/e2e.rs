//! `bench e2e`: the whole system under simulated players. Each player registers once and logs
//! in over REST, links to the GCS (players alternate ENet/DTLS and WebSocket), and then cycles:
//! `QueueJoin` for `duel` → `MatchFound` → joins the instance over the same transport → plays to
//! the end with the instance server's bot (`instance_server::autoplay`) → back at the GCS →
//! queues again. Any failed step is counted with a short reason; the player carries on (with a
//! fresh login and link when the GCS link broke), so one bad step never aborts the run.
//!
//! The system is either launched here (default): the `tavern` binary beside the bench binary,
//! in a temporary data directory with every port chosen by the system, pinned to core 0 with the
//! bench on core 1 (DESIGN.md §11), SIGTERMed at the end and killed on every other path; or an
//! already running one (`--login … --gcs-ws …`, optionally `--gcs-udp … --cert-sha256 …` for
//! ENet/DTLS), on loopback only.
//!
//! Time to match is `QueueJoin` sent → `MatchFound` received. Players stop queueing after
//! `--seconds` or once `--matches` matches were played to the end; games under way finish (and
//! a player whose ticket was matched as it left still plays), bounded by a drain limit.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use instance_server::autoplay::{self, Outcome, PlayError};
use instance_server::catalog::Catalog;
use protocol::tavern::{
    ClientBodyT, HelloT, MatchFoundT, PingT, QueueJoinT, QueueLeaveT, QueueState, ServerBodyT, ServerMessageT,
};
use protocol::{ErrorCode, PROTOCOL_VERSION, build};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use transport::{Client, ClientError, ClientTrust, ServerIdentity};

use crate::proc::{CpuMeter, Pinning, Proc};
use crate::report::{Report, Section, Table, percentile, round, sorted};

/// The longest any single wait on the system may take (a REST call, a link, an answer).
const WAIT: Duration = Duration::from_secs(15);
/// The longest one game may take.
const GAME_LIMIT: Duration = Duration::from_secs(180);
/// How long games under way may take to finish once players stop queueing.
const DRAIN_LIMIT: Duration = Duration::from_secs(200);
/// How long the launched `tavern` may take to print its addresses.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the launched `tavern` may take to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// After a player leaves the queue, how long a `MatchFound` already on its way is awaited.
const LEAVE_GRACE: Duration = Duration::from_secs(3);
/// How long a player retries `QueueJoin` while the GCS still has it in its last match (the
/// result travels instance → matchmaker → GCS after the game ends).
const REQUEUE_LIMIT: Duration = Duration::from_secs(60);
/// Failed sessions (login, link, or a link that broke) after which a player gives up.
const MAX_FAILED_SESSIONS: u32 = 20;
/// Retries of a REST call the login service rate-limited (429), a second apart.
const MAX_RATE_LIMITED: u32 = 60;
/// Distinct error reasons tallied; further ones are counted as `other`.
const MAX_REASONS: usize = 40;
/// The most players: half of them link over ENet/DTLS from one address, and the GCS takes 64
/// ENet/DTLS sessions per address.
const MAX_PLAYERS: usize = 128;
const PASSWORD: &str = "bench e2e password";
const MODE: &str = "duel";
/// The service lines the launcher prints: label, then address.
const LABELS: [&str; 4] = ["login REST API", "gcs enet/dtls", "gcs websocket", "instance websocket"];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated players.
    #[arg(long, default_value_t = 8)]
    players: usize,
    /// Seconds players keep queueing; games under way then finish.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Stop queueing once this many matches were played to the end (still bounded by --seconds).
    #[arg(long)]
    matches: Option<usize>,
    /// The bots' pause between game steps, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// The longest a player waits in the queue for one ticket, in seconds.
    #[arg(long, default_value_t = 30.0)]
    queue_timeout: f64,
    /// Seed of the bots' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start the `tavern` binary (the default unless --login is given).
    #[arg(long, conflicts_with = "login")]
    launch: bool,
    /// The `tavern` binary to launch (default: beside the bench binary).
    #[arg(long, conflicts_with = "login")]
    tavern_bin: Option<PathBuf>,
    /// Drive a running system instead: its login REST base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, requires = "gcs_ws")]
    login: Option<String>,
    /// The running system's GCS WebSocket URL, e.g. ws://127.0.0.1:7351/ws.
    #[arg(long, requires = "login")]
    gcs_ws: Option<String>,
    /// The running system's GCS ENet/DTLS address, e.g. 127.0.0.1:7350; with --cert-sha256
    /// players alternate ENet/DTLS and WebSocket, without it they all use WebSocket.
    #[arg(long, requires_all = ["login", "cert_sha256"])]
    gcs_udp: Option<SocketAddr>,
    /// The SHA-256 of the running system's DTLS certificate in hex, as `tavern` prints it.
    #[arg(long, requires = "gcs_udp")]
    cert_sha256: Option<String>,
    /// The core the launched `tavern` runs on.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// The core the players (this process) run on.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
}

pub fn run(args: &Args) -> Result<Report> {
    if args.players < 2 {
        bail!("--players must be at least 2 (a duel needs two), not {}", args.players);
    }
    // Every player links from 127.0.0.1, and the GCS and the instance host cap links per source
    // address (64 ENet/DTLS sessions each on the GCS).
    if args.players > MAX_PLAYERS {
        bail!("--players must be at most {MAX_PLAYERS} (per-address link caps on loopback), not {}", args.players);
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be positive, not {}", args.seconds);
    }
    if !(args.queue_timeout > 0.0 && args.queue_timeout.is_finite()) {
        bail!("--queue-timeout must be positive, not {}", args.queue_timeout);
    }
    let (mut pin, mut pin_note) = Pinning::detect(args.server_core, args.load_core);
    // The players are this process: pin it (every thread, before the runtime starts more) to the
    // load core.
    if let Some(core) = pin.load_core
        && let Err(e) = pin_self(core)
    {
        pin = Pinning { server_core: None, load_core: None };
        pin_note = Some(format!("{e:#}: processes are not pinned"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(orchestrate(args, pin, pin_note))
}

/// Which transport a player uses, to the GCS and to its instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Enet,
    Ws,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Enet => "enet_dtls",
            Kind::Ws => "ws",
        }
    }
}

/// Where the system under test listens.
#[derive(Clone, Debug)]
struct Target {
    /// The login base URL, without `/v1`.
    login: String,
    gcs_ws: String,
    /// The GCS's ENet/DTLS address and the certificate hash to pin; `None`: WebSocket only.
    gcs_enet: Option<(SocketAddr, [u8; 32])>,
}

/// The launched `tavern`: killed on drop, whatever path the run leaves by, and its data
/// directory removed.
struct Launched {
    proc: Option<Proc>,
    data_dir: PathBuf,
    bin: PathBuf,
}

impl Launched {
    /// SIGTERM, then its exit within [`STOP_LIMIT`] (`None`: it had to be killed).
    async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut proc = self.proc.take()?;
        if let Some(status) = proc.exited() {
            return Some(status);
        }
        let _ = tokio::process::Command::new("kill").args(["-TERM", &proc.pid().to_string()]).status().await;
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Some(status) = proc.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("e2e: tavern did not stop within {STOP_LIMIT:?} of SIGTERM; killing it");
        proc.kill().await;
        None
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Dropping the `Proc` kills the process.
        drop(self.proc.take());
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// What every player shares.
struct Ctx {
    target: Target,
    catalog: Arc<Catalog>,
    pace: Duration,
    queue_timeout: Duration,
    seed: u64,
    /// Usernames are `e2e<tag>_<n>`, so runs against one system never collide.
    tag: String,
    matches_wanted: Option<usize>,
    /// Cancelled when players must stop queueing.
    stop: CancellationToken,
    stats: Mutex<Stats>,
    queued: AtomicUsize,
    playing: AtomicUsize,
}

#[derive(Default)]
struct Stats {
    time_to_match_ms: Vec<f64>,
    game_s: Vec<f64>,
    /// Game end → the next ticket accepted.
    requeue_ms: Vec<f64>,
    login_ms: Vec<f64>,
    matches: HashSet<[u8; 16]>,
    games: u64,
    games_by_kind: BTreeMap<&'static str, u64>,
    won: u64,
    lost: u64,
    draw: u64,
    errors: u64,
    reasons: BTreeMap<String, u64>,
    rate_limited: u64,
}

impl Ctx {
    fn error(&self, step: &str, reason: impl std::fmt::Display) {
        let mut reason = format!("{step}: {reason}");
        if reason.len() > 80 {
            let mut cut = 80;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let mut s = self.stats();
        s.errors += 1;
        if s.reasons.len() >= MAX_REASONS && !s.reasons.contains_key(&reason) {
            reason = "other".into();
        }
        *s.reasons.entry(reason).or_default() += 1;
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        // A panic while holding the lock would only leave figures half updated; keep going.
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn matches(&self) -> usize {
        self.stats().matches.len()
    }
}

async fn orchestrate(args: &Args, pin: Pinning, pin_note: Option<String>) -> Result<Report> {
    let mut setup = Vec::new();
    let (target, mut launched) = match (&args.login, &args.gcs_ws) {
        (Some(login), Some(gcs_ws)) => {
            let gcs_enet = match (&args.gcs_udp, &args.cert_sha256) {
                (Some(addr), Some(hex)) => Some((*addr, parse_sha256(hex)?)),
                _ => None,
            };
            let target = Target { login: login.trim_end_matches('/').trim_end_matches("/v1").to_owned(), gcs_ws: gcs_ws.clone(), gcs_enet };
            setup.push(format!("system: already running, login {}, GCS {}", target.login, target.gcs_ws));
            (target, None)
        }
        _ => {
            let (target, launched) = launch(args, pin).await?;
            setup.push(format!("system: {} launched in {}", launched.bin.display(), launched.data_dir.display()));
            (target, Some(launched))
        }
    };
    for url in [target.login.as_str(), target.gcs_ws.as_str()] {
        ensure_loopback_url(url).await?;
    }
    if let Some((addr, _)) = target.gcs_enet
        && !addr.ip().is_loopback()
    {
        bail!("the bench sends only to loopback, not to {addr}");
    }
    let result = drive(args, &target, launched.as_ref().and_then(|l| l.proc.as_ref()).map(Proc::pid), pin, pin_note, setup).await;
    let stopped = match &mut launched {
        Some(l) => Some(l.stop().await),
        None => None,
    };
    drop(launched);
    let mut report = result?;
    if let Some(status) = stopped {
        let line = match status {
            Some(s) if s.success() => "tavern stopped cleanly on SIGTERM".to_owned(),
            Some(s) => format!("tavern exited with {s} after SIGTERM"),
            None => format!("tavern did not stop within {STOP_LIMIT:?} of SIGTERM and was killed"),
        };
        report.setup.push(line);
        report.json["tavern_stopped_cleanly"] = json!(status.is_some_and(|s| s.success()));
    }
    Ok(report)
}

/// Starts `tavern` in a fresh data directory, every port chosen by the system, and reads its
/// addresses.
async fn launch(args: &Args, pin: Pinning) -> Result<(Target, Launched)> {
    let bin = match &args.tavern_bin {
        Some(bin) => bin.clone(),
        None => tavern_beside_bench()?,
    };
    if !bin.exists() {
        let release = if bin.parent().is_some_and(|d| d.ends_with("release")) { " --release" } else { "" };
        bail!(
            "no tavern binary at {}: build it with `cargo build{release} -p tavern`, pass --tavern-bin, or drive a \
             running system with --login http://127.0.0.1:8080 --gcs-ws ws://127.0.0.1:7351/ws",
            bin.display()
        );
    }
    let data_dir = std::env::temp_dir().join(format!("tavern-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut set = vec![format!("data_dir={}", toml_string(&data_dir.display().to_string()))];
    for port in [
        "login_port", "token_port", "admin_port", "matchmaker_port", "gcs_udp_port", "gcs_ws_port", "instance_udp_port",
        "instance_ws_port",
    ] {
        set.push(format!("{port}=0"));
    }
    // Every player logs in from 127.0.0.1: the per-address limits meant for the internet would
    // throttle the bench, not measure the system.
    set.push("limits.requests_per_ip_per_s=1000000".into());
    set.push("limits.auth_per_ip_per_min=1000000".into());
    set.push("log.level=\"warn\"".into());
    let argv: Vec<String> = set.into_iter().flat_map(|s| ["--set".to_owned(), s]).collect();
    let proc = Proc::spawn("tavern", &bin, &argv, pin.server_core)?;
    let mut launched = Launched { proc: Some(proc), data_dir, bin };
    let mut found: BTreeMap<&str, String> = BTreeMap::new();
    let deadline = Instant::now() + START_LIMIT;
    let proc = launched.proc.as_mut().context("the launched tavern is there")?;
    while found.len() < LABELS.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = proc.line(left).await.context("tavern did not print its addresses")?;
        let Some(label) = LABELS.iter().find(|l| line.trim_start().starts_with(**l)) else { continue };
        let Some(url) = line.split_whitespace().find(|w| w.contains("://")) else { continue };
        found.insert(label, url.to_owned());
    }
    let login = found["login REST API"].trim_end_matches('/').trim_end_matches("/v1").to_owned();
    let udp: SocketAddr = found["gcs enet/dtls"]
        .trim_start_matches("udp://")
        .parse()
        .with_context(|| format!("tavern printed a GCS UDP address that does not parse: {}", found["gcs enet/dtls"]))?;
    let tls = launched.data_dir.join("tls");
    let pin_sha = ServerIdentity::load_or_create(&tls).with_context(|| format!("the certificate in {}", tls.display()))?.cert_sha256();
    let target = Target { login, gcs_ws: found["gcs websocket"].clone(), gcs_enet: Some((udp, pin_sha)) };
    Ok((target, launched))
}

/// Runs the players and builds the report.
async fn drive(
    args: &Args,
    target: &Target,
    tavern_pid: Option<u32>,
    pin: Pinning,
    pin_note: Option<String>,
    mut setup: Vec<String>,
) -> Result<Report> {
    let tag = format!("{:08x}", (std::process::id() as u64 ^ unix_ms()) as u32);
    let ctx = Arc::new(Ctx {
        target: target.clone(),
        catalog: Arc::new(Catalog::standard()),
        pace: Duration::from_millis(args.pace_ms),
        queue_timeout: Duration::from_secs_f64(args.queue_timeout),
        seed: args.seed,
        tag,
        matches_wanted: args.matches,
        stop: CancellationToken::new(),
        stats: Mutex::new(Stats::default()),
        queued: AtomicUsize::new(0),
        playing: AtomicUsize::new(0),
    });
    let kinds: Vec<Kind> =
        (0..args.players).map(|i| if target.gcs_enet.is_some() && i % 2 == 0 { Kind::Enet } else { Kind::Ws }).collect();
    let enet_players = kinds.iter().filter(|k| **k == Kind::Enet).count();
    let server_cpu = tavern_pid.map(|p| CpuMeter::start(&[p]));
    let bench_cpu = CpuMeter::start(&[std::process::id()]);
    let started = Instant::now();
    let tasks = tokio_util::task::TaskTracker::new();
    let handles: Vec<_> = kinds.iter().enumerate().map(|(i, kind)| tasks.spawn(player(ctx.clone(), i, *kind))).collect();
    tasks.close();

    // Players queue until the time is up or enough matches were played; progress meanwhile.
    // SIGINT or SIGTERM ends the run at once (the launched tavern is then stopped as usual).
    let interrupted = CancellationToken::new();
    tokio::spawn(on_signal(interrupted.clone()));
    let limit = Duration::from_secs_f64(args.seconds);
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !tasks.is_empty() {
        tokio::select! {
            _ = tick.tick() => {}
            () = tasks.wait() => break,
            () = interrupted.cancelled() => break,
        }
        if started.elapsed() >= limit || args.matches.is_some_and(|m| ctx.matches() >= m) {
            ctx.stop.cancel();
        }
        if tty || last_line.elapsed() >= Duration::from_secs(5) {
            progress(&ctx, started, tty);
            last_line = Instant::now();
        }
        if ctx.stop.is_cancelled() {
            break;
        }
    }
    // Games under way finish, bounded.
    ctx.stop.cancel();
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    while !tasks.is_empty() && Instant::now() < drain_deadline && !interrupted.is_cancelled() {
        tokio::select! {
            _ = tick.tick() => {}
            () = tasks.wait() => break,
            () = interrupted.cancelled() => break,
        }
        if tty || last_line.elapsed() >= Duration::from_secs(5) {
            progress(&ctx, started, tty);
            last_line = Instant::now();
        }
    }
    // A task leaves the tracker just before its handle says it finished: a moment's grace.
    let mut aborted = 0;
    for mut h in handles {
        if tokio::time::timeout(Duration::from_millis(500), &mut h).await.is_err() {
            h.abort();
            aborted += 1;
        }
    }
    for _ in 0..aborted {
        if interrupted.is_cancelled() {
            ctx.error("interrupted", "signal");
        } else {
            ctx.error("drain", format!("still playing {} s after the stop; aborted", DRAIN_LIMIT.as_secs()));
        }
    }
    if interrupted.is_cancelled() {
        setup.push("interrupted by a signal: the figures cover the run until then".into());
    }
    progress(&ctx, started, tty);
    if tty {
        eprintln!();
    }
    let duration = started.elapsed().as_secs_f64();
    let server_cpu_share = server_cpu.as_ref().and_then(CpuMeter::share);
    let bench_cpu_share = bench_cpu.share();
    let server_rss = tavern_pid.and_then(rss_bytes);

    let s = std::mem::take(&mut *ctx.stats());
    let ttm = sorted(s.time_to_match_ms.clone());
    let game = sorted(s.game_s.clone());
    let requeue = sorted(s.requeue_ms.clone());
    let login = sorted(s.login_ms.clone());
    let matches = s.matches.len();
    let games_per_min = if duration > 0.0 { matches as f64 / (duration / 60.0) } else { 0.0 };

    setup.push(format!(
        "{} players ({} over ENet/DTLS, {} over WebSocket), each registered once, then queue → match → game, repeated",
        args.players,
        enet_players,
        args.players - enet_players
    ));
    setup.push(format!(
        "queueing for {} s{}; bots pace {} ms, seed {}; a ticket waits at most {} s",
        args.seconds,
        args.matches.map_or(String::new(), |m| format!(" or until {m} matches")),
        args.pace_ms,
        args.seed,
        args.queue_timeout
    ));
    setup.push(match (pin.server_core, pin.load_core, tavern_pid) {
        (Some(s), Some(l), Some(_)) => format!("tavern pinned to core {s}, players to core {l} (taskset)"),
        (_, Some(l), None) => format!("players pinned to core {l} (taskset); the running system is not pinned by the bench"),
        _ => pin_note.clone().unwrap_or_else(|| "not pinned".into()),
    });
    if target.gcs_enet.is_none() {
        setup.push("ENet/DTLS not used: pass --gcs-udp and --cert-sha256 for a running system".into());
    }

    let ms = |v: f64| format!("{v:.0}");
    let mut summary = Table::new(&["players", "matches", "games/min", "errors", "time to match p50 (ms)", "p99 (ms)", "duration (s)"]);
    summary.row(vec![
        args.players.to_string(),
        matches.to_string(),
        format!("{games_per_min:.1}"),
        s.errors.to_string(),
        ms(percentile(&ttm, 50.0)),
        ms(percentile(&ttm, 99.0)),
        format!("{duration:.1}"),
    ]);
    let mut steps = Table::new(&["step", "count", "p50", "p90", "p99", "max"]);
    let mut step = |name: &str, v: &[f64], unit: &str, digits: usize| {
        let f = |x: f64| format!("{x:.digits$} {unit}");
        steps.row(vec![
            name.to_owned(),
            v.len().to_string(),
            f(percentile(v, 50.0)),
            f(percentile(v, 90.0)),
            f(percentile(v, 99.0)),
            f(percentile(v, 100.0)),
        ]);
    };
    step("register + login", &login, "ms", 0);
    step("time to match (QueueJoin → MatchFound)", &ttm, "ms", 0);
    step("game (join → result)", &game, "s", 1);
    step("back in the queue (result → ticket)", &requeue, "ms", 0);
    let mut outcome_notes = vec![format!(
        "{} games played by the players ({} won, {} lost, {} draws); {}.",
        s.games,
        s.won,
        s.lost,
        s.draw,
        s.games_by_kind.iter().map(|(k, n)| format!("{n} over {k}")).collect::<Vec<_>>().join(", ")
    )];
    if s.rate_limited > 0 {
        outcome_notes.push(format!("{} REST calls were rate limited (429) and retried.", s.rate_limited));
    }
    let mut sections = vec![
        Section { heading: "Matches".into(), table: summary, notes: outcome_notes },
        Section { heading: "Steps".into(), table: steps, notes: Vec::new() },
    ];
    let mut errors = Table::new(&["reason", "count"]);
    for (reason, n) in &s.reasons {
        errors.row(vec![reason.clone(), n.to_string()]);
    }
    if !s.reasons.is_empty() {
        sections.push(Section { heading: "Errors".into(), table: errors, notes: Vec::new() });
    }
    let mut cpu = Table::new(&["process", "CPU (cores)", "RSS at the end"]);
    if tavern_pid.is_some() {
        cpu.row(vec![
            "tavern".into(),
            server_cpu_share.map_or("?".into(), |c| format!("{c:.2}")),
            server_rss.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        ]);
    }
    cpu.row(vec!["bench (players)".into(), bench_cpu_share.map_or("?".into(), |c| format!("{c:.2}")), String::new()]);
    sections.push(Section {
        heading: "CPU".into(),
        table: cpu,
        notes: vec!["CPU is cores busy on average over the whole run (1.00 = one core).".into()],
    });

    let reasons: serde_json::Map<String, Value> = s.reasons.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let json = json!({
        "scenario": "e2e",
        "players": args.players,
        "matches_completed": matches,
        "errors": s.errors,
        "time_to_match_p50_ms": round(percentile(&ttm, 50.0), 1),
        "time_to_match_p99_ms": round(percentile(&ttm, 99.0), 1),
        "games_per_min": round(games_per_min, 2),
        "duration_s": round(duration, 2),
        "games_played": s.games,
        "game_p50_s": round(percentile(&game, 50.0), 2),
        "requeue_p50_ms": round(percentile(&requeue, 50.0), 1),
        "login_p50_ms": round(percentile(&login, 50.0), 1),
        "enet_players": enet_players,
        "ws_players": args.players - enet_players,
        "error_reasons": reasons,
        "rate_limited_retries": s.rate_limited,
        "launched": tavern_pid.is_some(),
        "tavern_pinned": tavern_pid.is_some() && pin.server_core.is_some(),
        "load_pinned": pin.load_core.is_some(),
        "tavern_cpu_cores": server_cpu_share.map(|c| round(c, 3)),
        "tavern_rss_bytes": server_rss,
        "bench_cpu_cores": bench_cpu_share.map(|c| round(c, 3)),
    });
    Ok(Report {
        scenario: "e2e",
        title: "End to end: the whole system under simulated players".into(),
        setup,
        sections,
        json,
    })
}

/// Cancels `interrupted` on SIGINT or SIGTERM.
async fn on_signal(interrupted: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("\ne2e: interrupted; stopping");
    interrupted.cancel();
}

fn progress(ctx: &Ctx, started: Instant, tty: bool) {
    let (matches, games, errors, p50) = {
        let s = ctx.stats();
        let ttm = sorted(s.time_to_match_ms.clone());
        (s.matches.len(), s.games, s.errors, percentile(&ttm, 50.0))
    };
    let line = format!(
        "e2e: {:5.1} s  matches {matches}  games {games}  queued {}  playing {}  errors {errors}  time to match p50 {p50:.0} ms{}",
        started.elapsed().as_secs_f64(),
        ctx.queued.load(Ordering::Relaxed),
        ctx.playing.load(Ordering::Relaxed),
        if ctx.stop.is_cancelled() { "  (stopping)" } else { "" },
    );
    let mut err = std::io::stderr().lock();
    let _ = if tty { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
    let _ = err.flush();
}

/// A step that failed: where, and why in a few words.
struct Failed {
    step: &'static str,
    reason: String,
}

fn failed(step: &'static str, reason: impl std::fmt::Display) -> Failed {
    Failed { step, reason: reason.to_string() }
}

/// One simulated player: sessions (login, link) until it stops or gives up.
async fn player(ctx: Arc<Ctx>, index: usize, kind: Kind) {
    let name = format!("e2e{}_{index}", ctx.tag);
    let http = match reqwest::Client::builder().timeout(WAIT).build() {
        Ok(h) => h,
        Err(e) => return ctx.error("http client", e),
    };
    let mut registered = false;
    let mut games = 0u64;
    let mut failures = 0;
    while !ctx.stop.is_cancelled() {
        match session(&ctx, &http, index, &name, kind, &mut registered, &mut games).await {
            Ok(()) => return,
            Err(f) => {
                ctx.error(f.step, f.reason);
                failures += 1;
                if failures >= MAX_FAILED_SESSIONS {
                    ctx.error("player", format!("gave up after {MAX_FAILED_SESSIONS} failed sessions"));
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = ctx.stop.cancelled() => return,
                }
            }
        }
    }
}

/// Logs in, links to the GCS and cycles queue → game until told to stop. `Err` when the login or
/// the GCS link failed (the caller starts a new session); failures inside a cycle that leave the
/// link usable are counted here and the cycle goes on.
async fn session(
    ctx: &Ctx,
    http: &reqwest::Client,
    index: usize,
    name: &str,
    kind: Kind,
    registered: &mut bool,
    games: &mut u64,
) -> Result<(), Failed> {
    let t0 = Instant::now();
    let token = auth(ctx, http, name, registered).await?;
    ctx.stats().login_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    let mut gcs = Gcs::connect(&ctx.target, kind, &token).await?;
    let mut game_ended: Option<Instant> = None;
    let result = loop {
        if ctx.stop.is_cancelled() {
            break Ok(());
        }
        let (sent, early) = match queue_join(ctx, &mut gcs).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break Ok(()),
            Err(f) => break Err(f),
        };
        if let Some(end) = game_ended.take() {
            ctx.stats().requeue_ms.push(end.elapsed().as_secs_f64() * 1000.0);
        }
        ctx.queued.fetch_add(1, Ordering::Relaxed);
        let found = match early {
            Some(found) => Ok(Some(found)),
            None => wait_found(ctx, &mut gcs).await,
        };
        ctx.queued.fetch_sub(1, Ordering::Relaxed);
        let found = match found {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(f) => break Err(f),
        };
        ctx.stats().time_to_match_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        let seed = ctx.seed ^ ((index as u64) << 32) ^ *games;
        *games += 1;
        ctx.playing.fetch_add(1, Ordering::Relaxed);
        let played = game(ctx, &mut gcs, &found, kind, seed).await;
        ctx.playing.fetch_sub(1, Ordering::Relaxed);
        match played {
            Ok(()) => {}
            // The GCS link broke during the game: a new session.
            Err(Step::Gcs(f)) => break Err(f),
            Err(Step::Game(f)) => ctx.error(f.step, f.reason),
        }
        game_ended = Some(Instant::now());
        if ctx.matches_wanted.is_some_and(|m| ctx.matches() >= m) {
            ctx.stop.cancel();
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), gcs.link.close(0)).await;
    result
}

/// Registers (the first time) and logs in; the session token.
async fn auth(ctx: &Ctx, http: &reqwest::Client, name: &str, registered: &mut bool) -> Result<String, Failed> {
    let creds = json!({"username": name, "password": PASSWORD});
    if !*registered {
        let (status, body) = rest(ctx, http, "/v1/auth/register", &creds).await.map_err(|e| failed("register", e))?;
        // 409: an earlier attempt registered the name but its answer was lost.
        if status != 201 && status != 409 {
            return Err(failed("register", format!("http {status} {}", body["error"].as_str().unwrap_or(""))));
        }
        *registered = true;
    }
    let (status, body) = rest(ctx, http, "/v1/auth/login", &creds).await.map_err(|e| failed("login", e))?;
    if status != 200 {
        return Err(failed("login", format!("http {status} {}", body["error"].as_str().unwrap_or(""))));
    }
    body["session_token"].as_str().map(str::to_owned).ok_or_else(|| failed("login", "no session_token in the answer"))
}

/// A REST POST; 429 is retried a second later (counted apart, bounded).
async fn rest(ctx: &Ctx, http: &reqwest::Client, path: &str, body: &Value) -> Result<(u16, Value), String> {
    for _ in 0..MAX_RATE_LIMITED {
        let resp = http.post(format!("{}{path}", ctx.target.login)).json(body).send().await.map_err(|e| short_http(&e))?;
        let status = resp.status().as_u16();
        if status == 429 {
            ctx.stats().rate_limited += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        return Ok((status, resp.json().await.unwrap_or(Value::Null)));
    }
    Err(format!("rate limited {MAX_RATE_LIMITED} times in a row"))
}

fn short_http(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

/// The player's GCS link, pinging every heartbeat interval whenever it waits.
struct Gcs {
    link: Client,
    cid: u32,
    heartbeat: Duration,
    next_ping: Instant,
}

impl Gcs {
    async fn connect(target: &Target, kind: Kind, token: &str) -> Result<Gcs, Failed> {
        let link = match (kind, target.gcs_enet) {
            (Kind::Enet, Some((addr, pin))) => Client::enet(addr, ClientTrust::PinSha256(pin), WAIT).await,
            _ => Client::ws(&target.gcs_ws, WAIT).await,
        }
        .map_err(|e| failed("gcs link", short(&e)))?;
        let mut gcs = Gcs { link, cid: 0, heartbeat: Duration::from_secs(2), next_ping: Instant::now() };
        let hello = build!(HelloT { protocol_version: PROTOCOL_VERSION, token: Some(token.to_owned()) });
        let (answer, _) = gcs.request(ClientBodyT::Hello(Box::new(hello))).await.map_err(|e| failed("hello", short(&e)))?;
        match answer.body {
            ServerBodyT::Welcome(w) => {
                if w.heartbeat_interval_ms > 0 {
                    gcs.heartbeat = Duration::from_millis(u64::from(w.heartbeat_interval_ms));
                }
                gcs.next_ping = Instant::now() + gcs.heartbeat;
                Ok(gcs)
            }
            other => Err(failed("hello", refused(&other))),
        }
    }

    /// Sends a request and waits for its answer; the pushes that came meanwhile too.
    async fn request(&mut self, body: ClientBodyT) -> Result<(ServerMessageT, Vec<ServerMessageT>), ClientError> {
        self.cid = self.cid.wrapping_add(1).max(1);
        let mut pushes = Vec::new();
        let answer = self.link.request(self.cid, body, WAIT, |m| pushes.push(m)).await?;
        self.next_ping = Instant::now() + self.heartbeat;
        Ok((answer, pushes))
    }

    /// The next message within `wait` (`None` if none came), pinging when one is due.
    async fn recv(&mut self, wait: Duration) -> Result<Option<ServerMessageT>, ClientError> {
        let now = Instant::now();
        if now >= self.next_ping {
            self.cid = self.cid.wrapping_add(1).max(1);
            let ping = build!(PingT { client_time_ms: unix_ms() as i64 });
            self.link.send_request(self.cid, ClientBodyT::Ping(Box::new(ping)))?;
            self.next_ping = now + self.heartbeat;
        }
        let wait = wait.min(self.next_ping.saturating_duration_since(now)).max(Duration::from_millis(1));
        match self.link.recv(wait).await {
            Ok(m) => Ok(Some(m)),
            Err(ClientError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Keeps the link alive while the player is busy elsewhere; returns only when it broke.
    async fn keepalive(&mut self) -> ClientError {
        loop {
            if let Err(e) = self.recv(Duration::from_secs(1)).await {
                return e;
            }
        }
    }
}

/// `QueueJoin` until a ticket is accepted (retrying while the GCS still has the player in its
/// last match): when it was sent, and a `MatchFound` that came with the answer. `None`: told to
/// stop meanwhile.
async fn queue_join(ctx: &Ctx, gcs: &mut Gcs) -> Result<Option<(Instant, Option<MatchFoundT>)>, Failed> {
    let deadline = Instant::now() + REQUEUE_LIMIT;
    loop {
        if ctx.stop.is_cancelled() {
            return Ok(None);
        }
        let join = build!(QueueJoinT { mode: MODE.into() });
        let sent = Instant::now();
        let (answer, pushes) =
            gcs.request(ClientBodyT::QueueJoin(Box::new(join))).await.map_err(|e| failed("queue join", short(&e)))?;
        let early = pushes.into_iter().find_map(|m| match m.body {
            ServerBodyT::MatchFound(f) if m.cid == 0 => Some(*f),
            _ => None,
        });
        match &answer.body {
            ServerBodyT::QueueStatus(_) => return Ok(Some((sent, early))),
            ServerBodyT::Error(e) if e.error_code() == Some(ErrorCode::InMatch) && Instant::now() < deadline => {
                // The last match's result is still on its way to the GCS.
                let pause = tokio::time::sleep(Duration::from_millis(50));
                tokio::select! {
                    () = pause => {}
                    () = ctx.stop.cancelled() => return Ok(None),
                }
            }
            ServerBodyT::Error(e) if e.error_code() == Some(ErrorCode::AlreadyQueued) => {
                // A ticket left from before (e.g. a leave that raced a match): leave it and queue
                // anew.
                ctx.error("queue join", "already queued");
                let leave = ClientBodyT::QueueLeave(Box::new(build!(QueueLeaveT {})));
                gcs.request(leave).await.map_err(|e| failed("queue leave", short(&e)))?;
                if Instant::now() >= deadline {
                    return Err(failed("queue join", "still queued from before"));
                }
            }
            other => {
                let what = refused(other);
                ctx.error("queue join", &what);
                if Instant::now() >= deadline {
                    return Err(failed("queue join", format!("refused until the limit: {what}")));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Waits in the queue for `MatchFound`, pinging. `None`: the ticket was given up (told to stop,
/// timed out, or expired); leaving, a `MatchFound` already on its way is still taken.
async fn wait_found(ctx: &Ctx, gcs: &mut Gcs) -> Result<Option<MatchFoundT>, Failed> {
    let deadline = Instant::now() + ctx.queue_timeout;
    let mut left: Option<Instant> = None;
    loop {
        if left.is_none() && (ctx.stop.is_cancelled() || Instant::now() >= deadline) {
            if !ctx.stop.is_cancelled() {
                ctx.error("match wait", format!("no match within {} s", ctx.queue_timeout.as_secs_f64()));
            }
            gcs.cid = gcs.cid.wrapping_add(1).max(1);
            let leave = ClientBodyT::QueueLeave(Box::new(build!(QueueLeaveT {})));
            gcs.link.send_request(gcs.cid, leave).map_err(|e| failed("queue leave", short(&e)))?;
            left = Some(Instant::now());
        }
        if left.is_some_and(|t| t.elapsed() >= LEAVE_GRACE) {
            return Ok(None);
        }
        let message = gcs.recv(Duration::from_millis(250)).await.map_err(|e| failed("match wait", short(&e)))?;
        let Some(message) = message else { continue };
        match message.body {
            ServerBodyT::MatchFound(found) if message.cid == 0 => return Ok(Some(*found)),
            ServerBodyT::QueueStatus(s) if message.cid == 0 && s.state == QueueState::Expired => {
                ctx.error("match wait", "ticket expired");
                return Ok(None);
            }
            _ => {}
        }
    }
}

/// How a game failed: the GCS link broke (a new session), or only the game went wrong.
enum Step {
    Gcs(Failed),
    Game(Failed),
}

/// Joins the instance over the player's transport and plays to the end, keeping the GCS link
/// alive meanwhile.
async fn game(ctx: &Ctx, gcs: &mut Gcs, found: &MatchFoundT, kind: Kind, seed: u64) -> Result<(), Step> {
    let started = Instant::now();
    let mut link = match connect_instance(ctx, found, kind).await {
        Ok(link) => link,
        Err(f) => return Err(Step::Game(f)),
    };
    let mut gcs_broke = None;
    let played = {
        let play = tokio::time::timeout(
            GAME_LIMIT,
            autoplay::play(&mut link, &found.join_token, ctx.catalog.clone(), seed, ctx.pace, WAIT),
        );
        let keep = gcs.keepalive();
        tokio::pin!(play, keep);
        loop {
            tokio::select! {
                r = &mut play => break r,
                e = &mut keep, if gcs_broke.is_none() => gcs_broke = Some(e),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), link.close(0)).await;
    let result = match played {
        Err(_) => Err(failed("game", format!("did not end within {} s", GAME_LIMIT.as_secs()))),
        Ok(Err(e)) => Err(failed("game", short_play(&e))),
        Ok(Ok(outcome)) => {
            let mut s = ctx.stats();
            s.matches.insert(found.match_id.bytes);
            s.games += 1;
            *s.games_by_kind.entry(kind.key()).or_default() += 1;
            s.game_s.push(started.elapsed().as_secs_f64());
            match outcome {
                Outcome::Won => s.won += 1,
                Outcome::Lost => s.lost += 1,
                Outcome::Draw => s.draw += 1,
            }
            Ok(())
        }
    };
    match (gcs_broke, result) {
        (Some(e), Ok(())) => Err(Step::Gcs(failed("gcs link during the game", short(&e)))),
        (Some(e), Err(f)) => {
            ctx.error(f.step, f.reason);
            Err(Step::Gcs(failed("gcs link during the game", short(&e))))
        }
        (None, r) => r.map_err(Step::Game),
    }
}

async fn connect_instance(ctx: &Ctx, found: &MatchFoundT, kind: Kind) -> Result<Client, Failed> {
    let instance = &found.instance;
    let link = match (kind, ctx.target.gcs_enet) {
        (Kind::Enet, Some((_, pin))) => {
            let addr = tokio::net::lookup_host((instance.host.as_str(), instance.udp_port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| failed("instance link", format!("cannot resolve {}", instance.host)))?;
            if !addr.ip().is_loopback() {
                return Err(failed("instance link", format!("not loopback: {addr}")));
            }
            Client::enet(addr, ClientTrust::PinSha256(pin), WAIT).await
        }
        _ => {
            let url = instance.ws_url.as_deref().ok_or_else(|| failed("instance link", "no websocket url"))?;
            ensure_loopback_url(url).await.map_err(|e| failed("instance link", e))?;
            Client::ws(url, WAIT).await
        }
    };
    link.map_err(|e| failed("instance link", short(&e)))
}

/// A client error in a few words (the tally groups by it).
fn short(e: &ClientError) -> String {
    match e {
        ClientError::Connect(e) => format!("connect: {e}"),
        ClientError::Send(_) => "send failed".into(),
        ClientError::Encode(_) => "encode failed".into(),
        ClientError::Decode(_) => "undecodable message".into(),
        ClientError::Closed(reason) => format!("closed ({reason:?})"),
        ClientError::Timeout(t) => format!("no answer within {} s", t.as_secs()),
        ClientError::NoAnswer(_) => "no answer among the pushes".into(),
    }
}

fn short_play(e: &PlayError) -> String {
    match e {
        PlayError::Link(e) => short(e),
        PlayError::Snapshot(_) => "bad snapshot".into(),
        PlayError::Refused(what) => format!("refused: {what}"),
        PlayError::TooLong(_) => "too many steps".into(),
    }
}

/// A server answer that was not the one expected, in a few words.
fn refused(body: &ServerBodyT) -> String {
    match body {
        ServerBodyT::Error(e) => match e.error_code() {
            Some(code) => format!("error {}", code.name()),
            None => format!("error {}", e.code),
        },
        other => format!("unexpected {other:?}").chars().take(40).collect(),
    }
}

/// The `tavern` binary beside this one (`target/<profile>/tavern`; test binaries live one level
/// down, in `deps`).
fn tavern_beside_bench() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("the bench binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("the bench binary has no profile directory")?;
    }
    Ok(dir.join(format!("tavern{}", std::env::consts::EXE_SUFFIX)))
}

/// Pins this whole process (every thread) to `core`.
fn pin_self(core: usize) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset could not pin the bench to core {core} ({status})");
    }
    Ok(())
}

/// Fails unless `url`'s host resolves to loopback addresses only.
async fn ensure_loopback_url(url: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") { authority.to_owned() } else { format!("{authority}:80") }
    } else if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(with_port.as_str()).await.with_context(|| format!("cannot resolve the host of {url}"))?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("the bench sends only to loopback, and {url} is not");
    }
    Ok(())
}

fn parse_sha256(hex: &str) -> Result<[u8; 32]> {
    let hex: String = hex.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        bail!("--cert-sha256 must be 64 hex digits, not {hex:?}");
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).with_context(|| format!("--cert-sha256 is not hex: {hex:?}"))?;
    }
    Ok(out)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_hashes_parse_with_or_without_colons() {
        let hex = "00".repeat(31) + "ff";
        let mut want = [0u8; 32];
        want[31] = 0xff;
        assert_eq!(parse_sha256(&hex).ok(), Some(want));
        let colons: Vec<String> = want.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_sha256(&colons.join(":")).ok(), Some(want));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }
}
