//! `bench transport`: Tavern's links under load, measured the way DESIGN.md §11 asks — the server
//! under test alone on core 0, the load generators on core 1 (separate processes, `taskset`), and
//! a reference measured side by side in the same run: a minimal C ENet echo server on Debian's
//! libenet (`bench/c/enet_echo_server.c`).
//!
//! Phases, each against a fresh server process:
//! 1. DTLS handshakes per second: concurrent connect loops (DTLS handshake + ENet connect, then
//!    leave) for `--seconds`.
//! 2. Echo over ENet/DTLS, plaintext ENet, the C reference (plaintext ENet) and WebSocket: N
//!    clients, each with a window of 100-byte reliable messages in flight, for `--seconds`; the
//!    messages/s and the loaded round trip come from per-message send times, the unloaded round
//!    trip (the `rtt_*` figures) from one client playing ping-pong afterwards.
//! 3. Links held and memory per link: ENet/DTLS links opened from several worker processes and
//!    source addresses 127.0.0.2…254 and kept alive, at 1k, 10k, … up to `--max-links`; the
//!    count is the server's own, memory is the server's VmRSS before and after.
//!
//! The same binary plays every part: `worker-server` and `worker-load` are hidden subcommands it
//! re-executes itself with.

mod c_echo;
pub(crate) mod load;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::proc::{CpuMeter, Pinning, Proc};
use crate::report::{Report, Section, Table, round};

/// How long a server may take to print its address.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopping child gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the server may take to count newly opened links.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Link counts measured on the way to `--max-links`.
const LINK_STEPS: [usize; 2] = [1_000, 10_000];
/// Links a hold worker is asked to open at once; the server's count is checked in between.
const OPEN_CHUNK: usize = 1_000;
/// How long links are held before they are counted and the server's memory is read.
const HOLD_FOR: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    worker: Option<Worker>,
    /// Measured seconds per echo transport and for the handshake phase.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of echo traffic before the measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Echo clients per transport.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Messages in flight per echo client.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 100)]
    bytes: usize,
    /// Concurrent connect loops in the handshake phase.
    #[arg(long, default_value_t = 16)]
    handshake_concurrency: usize,
    /// The most ENet/DTLS links to open and hold (measured at 1k, 10k, … up to this).
    #[arg(long, default_value_t = 10_000)]
    max_links: usize,
    /// Links per load worker process (each link is a UDP socket; a process may hold 20,000 files).
    #[arg(long, default_value_t = 4_000)]
    links_per_worker: usize,
    /// The seconds of the unloaded ping-pong phase per transport.
    #[arg(long, default_value_t = 1.0)]
    ping_seconds: f64,
    /// ENet peers per host of the C reference server (Tavern's servers use 256 per host).
    #[arg(long, default_value_t = 256)]
    c_peers: usize,
    /// The core the server under test runs on.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// The core the load generators run on.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// How often each held client services ENet when nothing arrives, in ms (ENet pings keep
    /// the link alive in between; the server pings every 500 ms).
    #[arg(long, default_value_t = 1_000)]
    hold_service_ms: u64,
    /// The phases to run; the figures of a skipped phase are null.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "handshakes,echo,links")]
    phases: Vec<Phase>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshakes,
    Echo,
    Links,
}

#[derive(clap::Subcommand, Debug)]
enum Worker {
    /// Internal: the server under test.
    #[command(hide = true)]
    WorkerServer(server::ServerArgs),
    /// Internal: a load generator.
    #[command(hide = true)]
    WorkerLoad(load::LoadArgs),
}

/// The transports this bench drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    EnetDtls,
    EnetPlain,
    Ws,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::EnetDtls => "enet-dtls",
            Kind::EnetPlain => "enet-plain",
            Kind::Ws => "ws",
        }
    }
}

pub fn run(args: &Args) -> Result<Report> {
    if let Some(worker) = &args.worker {
        // A worker prints only its own JSON lines: it must not fall through to the report.
        let result = match worker {
            Worker::WorkerServer(a) => server::run(a),
            Worker::WorkerLoad(a) => load::run(a),
        };
        crate::proc::exit_worker("transport", result);
    }
    check_args(args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(orchestrate(args))
}

fn check_args(a: &Args) -> Result<()> {
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        bail!("--seconds {} is not within (0, 600]", a.seconds);
    }
    if !(0.0..=60.0).contains(&a.warmup) || !(0.0..=60.0).contains(&a.ping_seconds) {
        bail!("--warmup and --ping-seconds must be within [0, 60]");
    }
    if a.clients == 0 || a.clients > 5_000 || a.window == 0 || a.window > 1_000 {
        bail!("--clients must be within 1..=5000 and --window within 1..=1000");
    }
    if a.bytes < 8 || a.bytes > 60_000 {
        bail!("--bytes {} is not within 8..=60000", a.bytes);
    }
    if a.handshake_concurrency == 0 || a.handshake_concurrency > 1_000 {
        bail!("--handshake-concurrency {} is not within 1..=1000", a.handshake_concurrency);
    }
    if a.max_links > 200_000 || a.links_per_worker == 0 || a.links_per_worker > 19_000 {
        bail!("--max-links must be at most 200000 and --links-per-worker within 1..=19000");
    }
    if a.hold_service_ms == 0 || a.hold_service_ms > 5_000 {
        bail!("--hold-service-ms {} is not within 1..=5000", a.hold_service_ms);
    }
    if a.phases.is_empty() {
        bail!("--phases names no phase");
    }
    if a.c_peers == 0 || a.c_peers > 4095 {
        bail!("--c-peers {} is not within 1..=4095", a.c_peers);
    }
    Ok(())
}

/// Where the parts run and what they are.
struct Ctx<'a> {
    args: &'a Args,
    exe: PathBuf,
    pin: Pinning,
}

impl Ctx<'_> {
    fn worker_args(&self, worker: &str, rest: &[String]) -> Vec<String> {
        let mut v = vec!["transport".to_owned(), worker.to_owned()];
        v.extend_from_slice(rest);
        v
    }

    /// Starts Tavern's server of `kind` and reads its address and certificate pin.
    async fn our_server(&self, kind: Kind) -> Result<(Proc, String, String)> {
        let args = self.worker_args("worker-server", &["--kind".into(), kind.arg().into()]);
        let mut p = Proc::spawn(&format!("{} server", kind.arg()), &self.exe, &args, self.pin.server_core)?;
        let ready = p.json(READY_TIMEOUT).await?;
        let addr = ready["addr"].as_str().context("server ready line without addr")?.to_owned();
        let pin = ready["pin"].as_str().unwrap_or_default().to_owned();
        Ok((p, addr, pin))
    }

    /// Starts the C reference server and reads its port.
    async fn c_server(&self, c: &c_echo::CEchoServer) -> Result<(Proc, String)> {
        // It bounds its own life; the bench kills it long before.
        let args = vec!["0".to_owned(), self.args.c_peers.to_string(), "3600".to_owned()];
        let mut p = Proc::spawn("C ENet echo server", c.path(), &args, self.pin.server_core)?;
        let line = p.line(READY_TIMEOUT).await?;
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the C server printed {line:?} instead of READY <port>"))?;
        Ok((p, format!("127.0.0.1:{port}")))
    }

    fn load(&self, name: &str, rest: &[String]) -> Result<Proc> {
        let args = self.worker_args("worker-load", rest);
        Proc::spawn(name, &self.exe, &args, self.pin.load_core)
    }
}

/// One echo run's figures.
struct Echo {
    result: Value,
    /// Share of a core the server process used over the measured window.
    server_cpu: Option<f64>,
    load_cpu: Option<f64>,
    /// CPU seconds the server process used over the measured window.
    server_cpu_s: Option<f64>,
}

async fn orchestrate(args: &Args) -> Result<Report> {
    let exe = std::env::current_exe().context("cannot find the bench binary to re-execute")?;
    let (pin, pin_note) = Pinning::detect(args.server_core, args.load_core);
    if let Some(n) = &pin_note {
        eprintln!("transport: {n}");
    }
    let ctx = Ctx { args, exe, pin };
    let c = c_echo::build();
    if let Err(why) = &c {
        eprintln!("transport: the C reference is skipped: {why}");
    }

    let phase = |p: Phase| args.phases.contains(&p);

    let mut hs = None;
    if phase(Phase::Handshakes) {
        eprintln!("transport: DTLS handshakes for {} s …", args.seconds);
        hs = Some(handshakes(&ctx).await.context("handshake phase")?);
    }

    let mut echoes: Vec<(&str, Option<Echo>)> = Vec::new();
    if phase(Phase::Echo) {
        for (name, kind) in [("enet_dtls", Kind::EnetDtls), ("enet_plain", Kind::EnetPlain)] {
            eprintln!("transport: echo over {name} for {} s …", args.seconds);
            let (server, addr, pin) = ctx.our_server(kind).await?;
            let e = echo(&ctx, server, kind, &addr, &pin).await.with_context(|| format!("echo over {name}"))?;
            echoes.push((name, Some(e)));
        }
        // Right after our plaintext server, so the two plaintext figures share the machine's mood.
        match &c {
            Ok(c) => {
                eprintln!("transport: echo over the C reference ({}) for {} s …", c.version, args.seconds);
                let (server, addr) = ctx.c_server(c).await?;
                let e = echo(&ctx, server, Kind::EnetPlain, &addr, "").await.context("echo over the C reference")?;
                echoes.push(("c_enet_plain", Some(e)));
            }
            Err(_) => echoes.push(("c_enet_plain", None)),
        }
        eprintln!("transport: echo over ws for {} s …", args.seconds);
        let (server, addr, pin) = ctx.our_server(Kind::Ws).await?;
        echoes.push(("ws", Some(echo(&ctx, server, Kind::Ws, &addr, &pin).await.context("echo over ws")?)));
    }

    let links = if phase(Phase::Links) { hold_links(&ctx).await.context("links phase")? } else { Vec::new() };

    Ok(build_report(args, &ctx.pin, pin_note, &c, hs.as_ref(), &echoes, &links))
}

/// The handshake phase's figures.
struct Handshakes {
    result: Value,
    server_cpu_s: Option<f64>,
    server_cpu: Option<f64>,
    load_cpu: Option<f64>,
}

async fn handshakes(ctx: &Ctx<'_>) -> Result<Handshakes> {
    let (server, addr, pin) = ctx.our_server(Kind::EnetDtls).await?;
    let a = ctx.args;
    let rest = strings(&[
        "--mode", "handshakes", "--kind", "enet-dtls", "--addr", &addr, "--pin", &pin,
        "--clients", &a.handshake_concurrency.to_string(), "--seconds", &a.seconds.to_string(),
    ]);
    let mut load = ctx.load("handshake load", &rest)?;
    let server_meter = CpuMeter::start(&[server.pid()]);
    let load_meter = CpuMeter::start(&[load.pid()]);
    let result = load.json(Duration::from_secs_f64(a.seconds) + Duration::from_secs(30)).await?;
    let (server_cpu, server_cpu_s, load_cpu) = (server_meter.share(), server_meter.used(), load_meter.share());
    load.finish(STOP_GRACE).await;
    server.finish(STOP_GRACE).await;
    Ok(Handshakes { result, server_cpu_s, server_cpu, load_cpu })
}

async fn echo(ctx: &Ctx<'_>, server: Proc, kind: Kind, addr: &str, pin: &str) -> Result<Echo> {
    let a = ctx.args;
    let mut rest = strings(&[
        "--mode", "echo", "--kind", kind.arg(), "--addr", addr,
        "--clients", &a.clients.to_string(), "--window", &a.window.to_string(), "--bytes", &a.bytes.to_string(),
        "--seconds", &a.seconds.to_string(), "--warmup", &a.warmup.to_string(),
        "--ping-seconds", &a.ping_seconds.to_string(),
    ]);
    if !pin.is_empty() {
        rest.extend(["--pin".to_owned(), pin.to_owned()]);
    }
    let mut load = ctx.load(&format!("{} echo load", kind.arg()), &rest)?;
    // The worker announces its measured window, so CPU is read over that window alone.
    let started = load.json(Duration::from_secs(60)).await?;
    if started.get("window_start").is_none() {
        bail!("the echo load printed {started} before its window");
    }
    let server_meter = CpuMeter::start(&[server.pid()]);
    let load_meter = CpuMeter::start(&[load.pid()]);
    let ended = load.json(Duration::from_secs_f64(a.seconds) + Duration::from_secs(10)).await?;
    if ended.get("window_end").is_none() {
        bail!("the echo load printed {ended} instead of the end of its window");
    }
    let (server_cpu, server_cpu_s, load_cpu) = (server_meter.share(), server_meter.used(), load_meter.share());
    let result = load.json(Duration::from_secs_f64(a.ping_seconds) + Duration::from_secs(30)).await?;
    load.finish(STOP_GRACE).await;
    server.finish(STOP_GRACE).await;
    Ok(Echo { result, server_cpu, load_cpu, server_cpu_s })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// One measured link count.
struct LinkStep {
    target: usize,
    /// Links the server counts.
    held: usize,
    /// Links the load workers count as open.
    alive: usize,
    /// Connects of this step that failed twice.
    failed: usize,
    /// Connects of this step that failed once and were tried again.
    retried: usize,
    rss_before: u64,
    rss_after: u64,
    open_s: f64,
    /// Share of a core the server used while holding the links idle.
    idle_server_cpu: Option<f64>,
    first_error: Option<String>,
    /// Why the bench did not go higher, when it stopped early.
    stopped: Option<String>,
    /// Held links that ended so far, by the reason their client saw.
    closed: std::collections::BTreeMap<String, u64>,
}

impl LinkStep {
    fn rss_per_link(&self) -> f64 {
        if self.held == 0 { 0.0 } else { self.rss_after.saturating_sub(self.rss_before) as f64 / self.held as f64 }
    }

    /// Server CPU µs per held link per second, idle (ENet pings and timers only).
    fn idle_cpu_us_per_link(&self) -> Option<f64> {
        self.idle_server_cpu.filter(|_| self.held > 0).map(|share| share * 1e6 / self.held as f64)
    }
}

/// A hold worker and how many links it was asked for.
struct HoldWorker {
    proc: Proc,
    asked: usize,
}

async fn hold_links(ctx: &Ctx<'_>) -> Result<Vec<LinkStep>> {
    let a = ctx.args;
    let mut steps: Vec<usize> = LINK_STEPS.iter().copied().filter(|&n| n < a.max_links).collect();
    if a.max_links > 0 {
        steps.push(a.max_links);
    }
    let mut out = Vec::new();
    if steps.is_empty() {
        return Ok(out);
    }
    let (mut server, addr, pin) = ctx.our_server(Kind::EnetDtls).await?;
    // The idle server's memory, once it has settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_bytes()?;
    let mut workers: Vec<HoldWorker> = Vec::new();
    let mut asked_total = 0usize;
    let mut failed = 0usize;
    let mut retried = 0usize;
    for target in steps {
        eprintln!("transport: opening and holding {target} ENet/DTLS links …");
        let began = Instant::now();
        let mut first_error = None;
        let mut stopped = None;
        let (failed_before, retried_before) = (failed, retried);
        // One worker opens at a time, a chunk at a time: they share the load core, and a
        // handshake that waits behind too many others outlives the server's unbound-session
        // timeout. Between chunks the server's count says whether the links already open
        // survive; when they do not, the machine is past what it can hold and the bench stops.
        while asked_total < target {
            let w = match workers.iter().position(|w| w.asked < a.links_per_worker) {
                Some(w) => w,
                None => {
                    let w = workers.len();
                    let rest = strings(&[
                        "--mode", "hold", "--kind", "enet-dtls", "--addr", &addr, "--pin", &pin,
                        "--clients", &a.links_per_worker.to_string(),
                        "--source-offset", &(w * a.links_per_worker).to_string(),
                        "--service-ms", &a.hold_service_ms.to_string(),
                    ]);
                    let mut proc = ctx.load(&format!("hold worker {w}"), &rest)?;
                    proc.json(READY_TIMEOUT).await?;
                    workers.push(HoldWorker { proc, asked: 0 });
                    w
                }
            };
            let worker = &mut workers[w];
            let k = (target - asked_total).min(a.links_per_worker - worker.asked).min(OPEN_CHUNK);
            worker.proc.send(&format!("open {k}")).await?;
            worker.asked += k;
            asked_total += k;
            let r = worker.proc.json(Duration::from_secs(30) + Duration::from_millis(20 * k as u64)).await?;
            failed += r["failed"].as_u64().unwrap_or(0) as usize;
            retried += r["retried"].as_u64().unwrap_or(0) as usize;
            if first_error.is_none() {
                first_error = r["first_error"].as_str().map(str::to_owned);
            }
            let expected = asked_total.saturating_sub(failed);
            let held = server_links(&mut server).await?;
            if (held as f64) < 0.95 * expected as f64 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let held = server_links(&mut server).await?;
                if (held as f64) < 0.95 * expected as f64 {
                    let why = format!("links were dropping: the server held {held} of {expected} opened");
                    eprintln!("transport: {why}; not going higher");
                    stopped = Some(why);
                    break;
                }
            }
        }
        let open_s = began.elapsed().as_secs_f64();
        // The count that matters is the server's; give it a moment to agree with the workers.
        let want = asked_total.saturating_sub(failed);
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while stopped.is_none() && server_links(&mut server).await? < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Held idle for several ENet ping rounds, then counted, with the server's memory and CPU.
        let meter = CpuMeter::start(&[server.pid()]);
        tokio::time::sleep(HOLD_FOR).await;
        let idle_server_cpu = meter.share();
        let held = server_links(&mut server).await?;
        let rss_after = server.rss_bytes()?;
        let mut alive = 0;
        let mut closed = std::collections::BTreeMap::<String, u64>::new();
        for w in &mut workers {
            w.proc.send("count").await?;
            let r = w.proc.json(Duration::from_secs(10)).await?;
            alive += r["alive"].as_u64().unwrap_or(0) as usize;
            for (why, n) in r["closed"].as_object().into_iter().flatten() {
                *closed.entry(why.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        eprintln!(
            "transport: {held} of {target} links held (workers count {alive}), server VmRSS {} MiB",
            rss_after / (1 << 20)
        );
        let stop = stopped.is_some() || held < target / 2;
        out.push(LinkStep {
            target,
            held,
            alive,
            failed: failed - failed_before,
            retried: retried - retried_before,
            rss_before,
            rss_after,
            open_s,
            idle_server_cpu,
            first_error,
            stopped,
            closed,
        });
        if stop {
            break;
        }
    }
    for w in workers {
        w.proc.finish(STOP_GRACE).await;
    }
    server.finish(STOP_GRACE).await;
    Ok(out)
}

/// The server's own link count.
async fn server_links(server: &mut Proc) -> Result<usize> {
    server.send("stats").await?;
    let stats = server.json(Duration::from_secs(5)).await?;
    Ok(stats["links"].as_u64().unwrap_or(0) as usize)
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn pct(share: Option<f64>) -> String {
    share.map_or("?".to_owned(), |s| format!("{:.0} %", s * 100.0))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.2}"))
}

/// Echoes per CPU-second of the server: less sensitive than msgs/s to what else the machine runs.
fn per_server_cpu_s(e: &Echo) -> Option<f64> {
    e.server_cpu_s.filter(|s| *s > 0.0).map(|s| num(&e.result, "msgs_per_s") * num(&e.result, "seconds") / s)
}

fn build_report(
    args: &Args,
    pin: &Pinning,
    pin_note: Option<String>,
    c: &Result<c_echo::CEchoServer, String>,
    hs: Option<&Handshakes>,
    echoes: &[(&str, Option<Echo>)],
    links: &[LinkStep],
) -> Report {
    let c_echo = echoes.iter().find(|(n, _)| *n == "c_enet_plain").and_then(|(_, e)| e.as_ref());
    let ratio = |ours: f64, theirs: Option<f64>| theirs.filter(|t| *t > 0.0).map(|t| ours / t);
    let c_msgs = c_echo.map(|e| num(&e.result, "msgs_per_s"));
    let c_p50 = c_echo.map(|e| num(&e.result, "rtt_p50_us"));
    let c_per_cpu = c_echo.and_then(per_server_cpu_s);

    let mut json = serde_json::Map::new();
    json.insert(
        "dtls_handshakes_per_s".into(),
        hs.map_or(Value::Null, |h| json!(round(num(&h.result, "handshakes_per_s"), 1))),
    );

    // Echo.
    let mut table = Table::new(&[
        "transport", "msgs/s", "RTT p50 µs", "RTT p99 µs", "loaded p50 µs", "loaded p99 µs", "server CPU", "load CPU",
        "msgs/server CPU-s", "msgs/s ÷ C", "p50 ÷ C", "msgs/CPU-s ÷ C",
    ]);
    for name in ["enet_dtls", "enet_plain", "c_enet_plain", "ws"] {
        let Some(e) = echoes.iter().find(|(n, _)| *n == name).and_then(|(_, e)| e.as_ref()) else {
            json.insert(name.into(), Value::Null);
            if !echoes.is_empty() {
                table.row(vec![name.into(), "skipped".into()]);
            }
            continue;
        };
        let r = &e.result;
        let (msgs, p50, p99) = (num(r, "msgs_per_s"), num(r, "rtt_p50_us"), num(r, "rtt_p99_us"));
        let per_cpu = per_server_cpu_s(e);
        let (vs_msgs, vs_p50) = (ratio(msgs, c_msgs), ratio(p50, c_p50));
        let vs_per_cpu = per_cpu.and_then(|p| ratio(p, c_per_cpu));
        json.insert(
            name.into(),
            json!({
                "msgs_per_s": round(msgs, 1),
                "rtt_p50_us": round(p50, 1),
                "rtt_p99_us": round(p99, 1),
                "loaded_rtt_p50_us": round(num(r, "loaded_rtt_p50_us"), 1),
                "loaded_rtt_p99_us": round(num(r, "loaded_rtt_p99_us"), 1),
                "echoes": r.get("echoes"),
                "ping_samples": r.get("ping_samples"),
                "lost": r.get("lost"),
                "errors": r.get("errors"),
                "links_closed": r.get("links_closed"),
                "server_cpu": e.server_cpu.map(|s| round(s, 3)),
                "load_cpu": e.load_cpu.map(|s| round(s, 3)),
                "msgs_per_server_cpu_s": per_cpu.map(|v| round(v, 0)),
                "msgs_per_s_vs_c": vs_msgs.map(|v| round(v, 3)),
                "rtt_p50_vs_c": vs_p50.map(|v| round(v, 3)),
                "msgs_per_server_cpu_s_vs_c": vs_per_cpu.map(|v| round(v, 3)),
            }),
        );
        table.row(vec![
            name.into(),
            format!("{msgs:.0}"),
            format!("{p50:.0}"),
            format!("{p99:.0}"),
            format!("{:.0}", num(r, "loaded_rtt_p50_us")),
            format!("{:.0}", num(r, "loaded_rtt_p99_us")),
            pct(e.server_cpu),
            pct(e.load_cpu),
            per_cpu.map_or("?".into(), |v| format!("{v:.0}")),
            fmt_ratio(vs_msgs),
            fmt_ratio(vs_p50),
            fmt_ratio(vs_per_cpu),
        ]);
    }
    json.insert("c_enet_plain_unavailable".into(), c.as_ref().err().map_or(Value::Null, |e| json!(e)));
    let ours_vs_c = |name: &str, key: &str| json.get(name).and_then(|v| v.get(key)).cloned().unwrap_or(Value::Null);
    let ratios = json!({
        "enet_plain_msgs_per_s_vs_c": ours_vs_c("enet_plain", "msgs_per_s_vs_c"),
        "enet_plain_rtt_p50_vs_c": ours_vs_c("enet_plain", "rtt_p50_vs_c"),
        "enet_plain_msgs_per_server_cpu_s_vs_c": ours_vs_c("enet_plain", "msgs_per_server_cpu_s_vs_c"),
        "enet_dtls_msgs_per_s_vs_c": ours_vs_c("enet_dtls", "msgs_per_s_vs_c"),
        "enet_dtls_rtt_p50_vs_c": ours_vs_c("enet_dtls", "rtt_p50_vs_c"),
        "ws_msgs_per_s_vs_c": ours_vs_c("ws", "msgs_per_s_vs_c"),
    });
    json.insert("ratios".into(), ratios);

    // Links.
    let best = links.iter().filter(|s| s.held > 0).max_by_key(|s| s.held);
    json.insert("links_held".into(), best.map_or(Value::Null, |s| json!(s.held)));
    json.insert("rss_per_link_bytes".into(), best.map_or(Value::Null, |s| json!(round(s.rss_per_link(), 0))));
    let mut link_json = serde_json::Map::new();
    let mut link_table = Table::new(&[
        "links asked", "held (server)", "open (workers)", "retried", "failed", "RSS before MiB", "RSS after MiB", "RSS/link B",
        "open s", "idle server CPU", "µs CPU/link/s",
    ]);
    let mib = |b: u64| format!("{:.1}", b as f64 / f64::from(1u32 << 20));
    for s in links {
        link_json.insert(
            s.target.to_string(),
            json!({
                "held": s.held, "workers_alive": s.alive, "failed": s.failed, "retried": s.retried,
                "rss_before_bytes": s.rss_before, "rss_after_bytes": s.rss_after,
                "rss_per_link_bytes": round(s.rss_per_link(), 0), "open_seconds": round(s.open_s, 2),
                "idle_server_cpu": s.idle_server_cpu.map(|v| round(v, 3)),
                "idle_server_cpu_us_per_link_s": s.idle_cpu_us_per_link().map(|v| round(v, 2)),
                "first_error": s.first_error, "stopped": s.stopped, "closed_by_reason": s.closed,
            }),
        );
        link_table.row(vec![
            s.target.to_string(),
            s.held.to_string(),
            s.alive.to_string(),
            s.retried.to_string(),
            s.failed.to_string(),
            mib(s.rss_before),
            mib(s.rss_after),
            format!("{:.0}", s.rss_per_link()),
            format!("{:.1}", s.open_s),
            pct(s.idle_server_cpu),
            s.idle_cpu_us_per_link().map_or("?".into(), |v| format!("{v:.1}")),
        ]);
    }
    json.insert("links".into(), Value::Object(link_json));

    // Handshakes.
    let mut hs_table =
        Table::new(&["handshakes/s", "completed", "failed", "concurrency", "server CPU", "load CPU", "per server CPU-s"]);
    let mut hs_notes = Vec::new();
    if let Some(hs) = hs {
        let hs_per_cpu = hs.server_cpu_s.filter(|s| *s > 0.0).map(|s| num(&hs.result, "handshakes") / s);
        json.insert(
            "handshakes".into(),
            json!({
                "completed": hs.result.get("handshakes"),
                "failed": hs.result.get("failed"),
                "first_error": hs.result.get("first_error"),
                "concurrency": args.handshake_concurrency,
                "server_cpu": hs.server_cpu.map(|s| round(s, 3)),
                "load_cpu": hs.load_cpu.map(|s| round(s, 3)),
                "per_server_cpu_s": hs_per_cpu.map(|v| round(v, 1)),
            }),
        );
        hs_table.row(vec![
            format!("{:.0}", num(&hs.result, "handshakes_per_s")),
            num(&hs.result, "handshakes").to_string(),
            num(&hs.result, "failed").to_string(),
            args.handshake_concurrency.to_string(),
            pct(hs.server_cpu),
            pct(hs.load_cpu),
            hs_per_cpu.map_or("?".into(), |v| format!("{v:.0}")),
        ]);
        if let Some(e) = hs.result.get("first_error").and_then(Value::as_str) {
            hs_notes.push(format!("First failure: {e}"));
        }
    } else {
        json.insert("handshakes".into(), Value::Null);
    }
    hs_notes.push(
        "Each completion is a full DTLS 1.2 handshake (ECDSA P-256 certificate, cookie exchange, pinned by the \
         client) and an ENet connect from a fresh UDP socket, then an ENet disconnect and close_notify. The clients \
         run on the load core and do as much public-key work as the server: when the load CPU is the higher of the \
         two, the clients were the limit, and `per server CPU-s` (completions ÷ server CPU seconds) is the server's \
         own capacity."
            .into(),
    );

    json.insert(
        "setup".into(),
        json!({
            "seconds": args.seconds, "warmup": args.warmup, "clients": args.clients, "window": args.window,
            "bytes": args.bytes, "ping_seconds": args.ping_seconds, "max_links": args.max_links,
            "links_per_worker": args.links_per_worker, "hold_service_ms": args.hold_service_ms,
            "handshake_concurrency": args.handshake_concurrency,
            "server_core": pin.server_core, "load_core": pin.load_core, "c_peers": args.c_peers,
            "c_libenet": c.as_ref().ok().map(|c| c.version.clone()),
        }),
    );

    let mut echo_notes = vec![
        format!(
            "{} clients per transport, {} reliable messages of {} B in flight per client, {} s measured after {} s of \
             warm-up; msgs/s = echoes received in the measured window ÷ its length. The echo app on our servers sends \
             each message back to its link with the same delivery.",
            args.clients, args.window, args.bytes, args.seconds, args.warmup
        ),
        "RTT p50/p99: one client alone with one message in flight (ping-pong) for up to --ping-seconds after the \
         loaded window, the other clients connected and idle. Loaded p50/p99: every echo of the loaded window, timed \
         by the send time it carries (mostly queueing behind the window)."
            .into(),
        "Server CPU / load CPU: CPU seconds per wall second of the server process and of the load process over the \
         measured window (100 % = the whole core). Well below 100 % on both means other work on the machine took the \
         cores; msgs/server CPU-s (echoes ÷ server CPU seconds) is then the steadier figure to compare."
            .into(),
    ];
    match c {
        Ok(c) => echo_notes.push(format!(
            "c_enet_plain: bench/c/enet_echo_server.c on {} (one host of {} peers, 2 channels), driven by the same \
             load generator (Tavern's EnetClient, plaintext) as enet_plain, right after it. ÷ C columns: our figure \
             over the C server's in this run; above 1 is more messages (or a longer round trip) than C.",
            c.version, args.c_peers
        )),
        Err(why) => echo_notes.push(format!("c_enet_plain skipped: {why}")),
    }

    let mut link_notes = vec![format!(
        "ENet/DTLS links opened from load worker processes of at most {} links each (one at a time), on source \
         addresses 127.0.0.2…254, each link with its own UDP socket, kept alive by ENet pings (the clients service \
         ENet every {} ms when idle). Held = the server's own link count 2 s after the last open; open (workers) = \
         links the workers still see. Links are opened 1,000 at a time, and the bench stops going \
         higher when the server holds fewer than 95 % of the links opened. A connect that fails (its handshake outlived the server's 8 s unbound-session timeout, usually \
         after datagrams were lost) is tried once more; failed = failed twice. RSS/link = (server VmRSS with N links − VmRSS before any) ÷ N, from \
         /proc/<pid>/status.",
        args.links_per_worker, args.hold_service_ms
    )];
    link_notes.push(
        "Idle server CPU: the server's share of its core over the 2 s hold (ENet pings every 500 ms each way, \
         acknowledgements, timers; every datagram through DTLS); µs CPU/link/s is that per held link."
            .into(),
    );
    for s in links {
        if let Some(e) = &s.first_error {
            link_notes.push(format!("At {}: first connect failure: {e}", s.target));
        }
        if let Some(why) = &s.stopped {
            link_notes.push(format!("At {}: stopped: {why}", s.target));
        }
        if !s.closed.is_empty() {
            let reasons: Vec<String> = s.closed.iter().map(|(why, n)| format!("{n} × {why}")).collect();
            link_notes.push(format!("At {}: held links that ended, as their clients saw it: {}", s.target, reasons.join(", ")));
        }
    }

    let mut setup = vec![
        match (pin.server_core, pin.load_core) {
            (Some(s), Some(l)) => format!("server pinned to core {s}, load generators to core {l} (taskset)"),
            _ => "processes not pinned".into(),
        },
        if cfg!(debug_assertions) { "debug build: figures mean nothing" } else { "release build" }.into(),
        "absolute figures drift from run to run on a shared machine: compare the ratios to the C reference".into(),
        format!(
            "replay: `cargo run --release -p bench -- transport --seconds {} --clients {} --window {} --max-links {}`",
            args.seconds, args.clients, args.window, args.max_links
        ),
    ];
    if let Some(n) = pin_note {
        setup.push(n);
    }
    let mut sections = Vec::new();
    if !echoes.is_empty() {
        sections.push(Section { heading: "Echo: messages/s and round trip".into(), table, notes: echo_notes });
    }
    if hs.is_some() {
        sections.push(Section { heading: "DTLS handshakes".into(), table: hs_table, notes: hs_notes });
    }
    if !links.is_empty() {
        sections.push(Section { heading: "ENet/DTLS links held".into(), table: link_table, notes: link_notes });
    }

    Report {
        scenario: "transport",
        title: "Transport: ENet/DTLS, plaintext ENet, WebSocket, and the C ENet reference".into(),
        setup,
        sections,
        json: Value::Object(json),
    }
}
