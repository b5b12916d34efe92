//! `bench instance`: the instance server, measured the way DESIGN.md §11 asks — whatever is
//! measured runs alone on the server core (0), the bots on the load core (1), each in its own
//! process pinned with `taskset`, and every figure comes with a reference measured in the same
//! run, because absolute figures drift from run to run on a shared machine.
//!
//! 1. Rules engine: recorded bot games replayed through the engine alone
//!    (`instance_server::rules::bench_support`) → `rules_commands_per_s`; interleaved with it on
//!    the same core, in the same process, a fixed CPU workload (SHA-256 of 1 KiB messages,
//!    [`reference`]) → `rules_vs_reference`, rules commands per reference op.
//! 2. Memory of an idle spawned `instance-server` (waiting for its assignment, VmRSS a moment
//!    after its ready line) beside the memory reference: the VmRSS of a process idling in a
//!    tokio runtime (`worker-base`).
//! 3. A high-density host (`worker-host`, an `InstanceHost` alone in its process): memory per
//!    hosted match (VmRSS with N matches created and nobody joined, minus before, ÷ N, from
//!    `/proc/<pid>/status`) beside the idle spawned process; then matches held at once with the
//!    bots (`worker-load`, on the other core) playing every one of them over WebSocket on
//!    loopback.
//!
//! The same binary plays every part: `worker-rules`, `worker-base`, `worker-host` and
//! `worker-load` are hidden subcommands it re-executes itself with. Every loop is bounded in
//! count and time.

mod host;
mod load;
mod reference;
mod rules;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use instance_server::server::run::READY_PREFIX;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::proc::{CpuMeter, Pinning, Proc};
use crate::report::{Report, Section, Table, round};

/// How long a server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping child gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long an idle process is left before its VmRSS is read (start-up allocations settle).
const SETTLE: Duration = Duration::from_millis(500);

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    worker: Option<Worker>,
    /// Bot games recorded for the rules-engine replay.
    #[arg(long, default_value_t = 200)]
    games: u64,
    /// Seconds of replaying for the commands/s figure (split over --rounds).
    #[arg(long, default_value_t = 3.0)]
    replay_seconds: f64,
    /// Seconds of the CPU reference (SHA-256 of 1 KiB messages), split over --rounds and
    /// interleaved with the replay on the same core.
    #[arg(long, default_value_t = 1.5)]
    reference_seconds: f64,
    /// Rounds of replay and reference.
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// Matches created (nobody joined) to measure memory per hosted match.
    #[arg(long, default_value_t = 5_000)]
    idle_matches: usize,
    /// Matches played at once by bots over WebSocket in the dense host.
    #[arg(long, default_value_t = 300)]
    live_matches: usize,
    /// The instance-server binary; by default next to this bench binary (built if missing).
    #[arg(long)]
    instance_bin: Option<PathBuf>,
    /// Wall-clock limit of each part, in seconds.
    #[arg(long, default_value_t = 120)]
    time_limit: u64,
    /// The core the measured servers (and the rules replay) run on.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// The core the bots run on.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
}

#[derive(clap::Subcommand, Debug)]
enum Worker {
    /// Internal: the rules-engine replay and the CPU reference.
    #[command(hide = true)]
    WorkerRules(rules::RulesArgs),
    /// Internal: an idle tokio process, the memory reference.
    #[command(hide = true)]
    WorkerBase,
    /// Internal: the high-density host under test.
    #[command(hide = true)]
    WorkerHost(host::HostArgs),
    /// Internal: the bots.
    #[command(hide = true)]
    WorkerLoad(load::LoadArgs),
}

pub fn run(args: &Args) -> Result<Report> {
    if let Some(worker) = &args.worker {
        // A worker prints only its own JSON lines: it must not fall through to the report.
        let result = match worker {
            Worker::WorkerRules(a) => rules::run(a),
            Worker::WorkerBase => host::base(),
            Worker::WorkerHost(a) => host::run(a),
            Worker::WorkerLoad(a) => load::run(a),
        };
        if let Err(e) = &result {
            eprintln!("bench instance worker: {e:#}");
            println!("{}", json!({ "error": format!("{e:#}") }));
        }
        std::process::exit(if result.is_ok() { 0 } else { 1 });
    }
    check_args(args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(orchestrate(args))
}

fn check_args(a: &Args) -> Result<()> {
    if a.games == 0 || a.games > 100_000 {
        bail!("--games {} is not within 1..=100000", a.games);
    }
    if !(a.replay_seconds > 0.0 && a.replay_seconds <= 600.0) || !(a.reference_seconds > 0.0 && a.reference_seconds <= 600.0) {
        bail!("--replay-seconds and --reference-seconds must be within (0, 600]");
    }
    if a.rounds == 0 || a.rounds > 100 {
        bail!("--rounds {} is not within 1..=100", a.rounds);
    }
    if a.idle_matches == 0 || a.idle_matches > 1_000_000 || a.live_matches == 0 || a.live_matches > 4_000 {
        bail!("--idle-matches must be within 1..=1000000 and --live-matches within 1..=4000 (two WebSocket links each)");
    }
    if a.time_limit == 0 || a.time_limit > 3_600 {
        bail!("--time-limit {} is not within 1..=3600", a.time_limit);
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
    fn worker(&self, name: &str, worker: &str, rest: &[String], core: Option<usize>) -> Result<Proc> {
        let mut v = vec!["instance".to_owned(), worker.to_owned()];
        v.extend_from_slice(rest);
        Proc::spawn(name, &self.exe, &v, core)
    }

    fn limit(&self) -> Duration {
        Duration::from_secs(self.args.time_limit)
    }
}

async fn orchestrate(args: &Args) -> Result<Report> {
    let exe = std::env::current_exe().context("cannot find the bench binary to re-execute")?;
    let (pin, pin_note) = Pinning::detect(args.server_core, args.load_core);
    if let Some(n) = &pin_note {
        eprintln!("instance: {n}");
    }
    let ctx = Ctx { args, exe, pin };

    eprintln!(
        "instance: recording {} bot games, then {} s of replay and {} s of SHA-256 reference in {} rounds",
        args.games, args.replay_seconds, args.reference_seconds, args.rounds
    );
    let rules = rules_part(&ctx).await.context("rules engine")?;
    eprintln!(
        "instance: {:.0} rules commands/s, {:.0} SHA-256 1 KiB/s, {:.3} commands per reference op",
        num(&rules, "rules_commands_per_s"),
        num(&rules, "reference_ops_per_s"),
        num(&rules, "rules_commands_per_s") / num(&rules, "reference_ops_per_s").max(1e-9)
    );

    let base_rss = base_rss(&ctx).await.context("memory reference (idle tokio process)")?;
    eprintln!("instance: idle tokio process VmRSS {} KiB", base_rss / 1024);
    let spawned_rss = spawned_idle_rss(&ctx).await.context("spawned instance")?;
    eprintln!("instance: idle spawned instance-server VmRSS {} KiB", spawned_rss / 1024);

    let dense = dense(&ctx).await.context("dense host")?;
    Ok(build_report(args, &pin, pin_note, &rules, base_rss, spawned_rss, &dense))
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The rules worker's figures.
async fn rules_part(ctx: &Ctx<'_>) -> Result<Value> {
    let a = ctx.args;
    let rest = [
        "--games".to_owned(),
        a.games.to_string(),
        "--replay-seconds".into(),
        a.replay_seconds.to_string(),
        "--reference-seconds".into(),
        a.reference_seconds.to_string(),
        "--rounds".into(),
        a.rounds.to_string(),
    ];
    let mut p = ctx.worker("rules worker", "worker-rules", &rest, ctx.pin.server_core)?;
    let wait = ctx.limit() + Duration::from_secs_f64(a.replay_seconds + a.reference_seconds);
    let r = p.json(wait).await;
    p.finish(STOP_GRACE).await;
    r
}

/// VmRSS of a process idling in a tokio runtime, on the server core.
async fn base_rss(ctx: &Ctx<'_>) -> Result<u64> {
    let mut p = ctx.worker("tokio base", "worker-base", &[], ctx.pin.server_core)?;
    p.json(READY_TIMEOUT).await?;
    tokio::time::sleep(SETTLE).await;
    let rss = p.rss_bytes();
    p.finish(STOP_GRACE).await;
    rss
}

/// Starts `instance-server` in spawned mode on the server core, waiting for its assignment;
/// reads VmRSS a moment after its ready line, then closes its stdin (no assignment: it exits).
async fn spawned_idle_rss(ctx: &Ctx<'_>) -> Result<u64> {
    let bin = match &ctx.args.instance_bin {
        Some(p) => p.clone(),
        None => crate::proc::sibling_bin("instance-server")?,
    };
    let dir = std::env::temp_dir().join(format!("tavern-bench-instance-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let set = |k: &str, v: String| ["--set".to_owned(), format!("{k}={v}")];
    let mut args = vec!["--port".to_owned(), "0".into(), "--instance-id".into(), "bench-idle".into()];
    args.extend(set("identity_dir", dir.join("tls").display().to_string()));
    args.extend(set("key_file", dir.join("keys.json").display().to_string()));
    args.extend(set("database_url", format!("sqlite://{}", dir.join("instance.db").display())));
    args.extend(set("log.level", "error".into()));
    let result = async {
        let mut p = Proc::spawn("instance-server", &bin, &args, ctx.pin.server_core)?;
        let ready = p.line(READY_TIMEOUT).await?;
        if !ready.starts_with(READY_PREFIX) {
            bail!("unexpected first line {ready:?}");
        }
        tokio::time::sleep(SETTLE).await;
        let rss = p.rss_bytes();
        p.finish(STOP_GRACE).await;
        rss
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The dense part's figures.
struct Dense {
    ready_rss: u64,
    before_idle_rss: u64,
    after_idle_rss: u64,
    rss_per_match: f64,
    held_peak: u64,
    load: Value,
    host_cpu: Option<f64>,
    load_cpu: Option<f64>,
}

async fn dense(ctx: &Ctx<'_>) -> Result<Dense> {
    let a = ctx.args;
    let rest = [
        "--max-matches".to_owned(),
        (a.idle_matches + a.live_matches + 16).to_string(),
        "--max-links".into(),
        (4 * (a.live_matches + 16)).to_string(),
    ];
    let mut host = ctx.worker("dense host", "worker-host", &rest, ctx.pin.server_core)?;
    let ready = host.json(READY_TIMEOUT).await?;
    let ws_url = ready["ws_url"].as_str().context("host ready line without ws_url")?.to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready_rss = host.rss_bytes()?;

    // Memory per hosted match, before any link exists.
    tokio::time::sleep(SETTLE).await;
    let before_idle_rss = host.rss_bytes()?;
    host.send(&format!("idle {}", a.idle_matches)).await?;
    host.json(ctx.limit()).await?;
    tokio::time::sleep(SETTLE).await;
    let after_idle_rss = host.rss_bytes()?;
    let rss_per_match = after_idle_rss.saturating_sub(before_idle_rss) as f64 / a.idle_matches as f64;
    eprintln!("instance: {} idle matches in the dense host, {rss_per_match:.0} bytes each", a.idle_matches);

    // Bots, on the other core, play every live match at once.
    host.send(&format!("live {}", a.live_matches)).await?;
    let order = host.json(ctx.limit()).await?;
    let mut load = ctx.worker("bots", "worker-load", &["--time-limit".into(), a.time_limit.to_string()], ctx.pin.load_core)?;
    eprintln!("instance: bots play {} matches at once over WebSocket", a.live_matches);
    let (host_meter, load_meter) = (CpuMeter::start(&[host.pid()]), CpuMeter::start(&[load.pid()]));
    load.send(&json!({ "ws_url": ws_url, "matches": order["matches"] }).to_string()).await?;
    let result = load.json(ctx.limit() + Duration::from_secs(30)).await?;
    let (host_cpu, load_cpu) = (host_meter.share(), load_meter.share());
    host.send("stats").await?;
    let stats = host.json(Duration::from_secs(10)).await?;
    load.finish(STOP_GRACE).await;
    host.finish(STOP_GRACE).await;
    if let Some(f) = result["failures"].as_object() {
        for (reason, n) in f {
            eprintln!("instance: {n} bot players failed: {reason}");
        }
    }
    Ok(Dense {
        ready_rss,
        before_idle_rss,
        after_idle_rss,
        rss_per_match,
        held_peak: stats["peak"].as_u64().unwrap_or(0),
        load: result,
        host_cpu,
        load_cpu,
    })
}

fn pct(share: Option<f64>) -> String {
    share.map_or("?".to_owned(), |s| format!("{:.0} %", s * 100.0))
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn fmt_ratio(r: Option<f64>, digits: usize) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.digits$}"))
}

fn build_report(
    args: &Args,
    pin: &Pinning,
    pin_note: Option<String>,
    rules: &Value,
    base_rss: u64,
    spawned_rss: u64,
    dense: &Dense,
) -> Report {
    let rules_per_s = num(rules, "rules_commands_per_s");
    let ref_per_s = num(rules, "reference_ops_per_s");
    let rules_vs_ref = ratio(rules_per_s, ref_per_s);
    // Per-round ratios: a round far below the others was disturbed (the replay is memory-bound and
    // feels a busy neighbour core; the hash does not), so the median is the steadier figure.
    let round_ratios = crate::report::sorted(
        rules["rounds"].as_array().into_iter().flatten().map(|r| num(r, "rules_vs_reference")).collect(),
    );
    let round_median = (!round_ratios.is_empty()).then(|| crate::report::percentile(&round_ratios, 50.0));
    let spawned_vs_base = ratio(spawned_rss as f64, base_rss as f64);
    let ready_vs_base = ratio(dense.ready_rss as f64, base_rss as f64);
    let match_vs_spawned = ratio(dense.rss_per_match, spawned_rss as f64);
    let matches_per_spawned = ratio(spawned_rss as f64, dense.rss_per_match);

    let mut engine = Table::new(&["round", "commands/s", "SHA-256 1 KiB/s (reference)", "commands per reference op"]);
    for (i, r) in rules["rounds"].as_array().into_iter().flatten().enumerate() {
        engine.row(vec![
            (i + 1).to_string(),
            format!("{:.0}", num(r, "rules_commands_per_s")),
            format!("{:.0}", num(r, "reference_ops_per_s")),
            format!("{:.3}", num(r, "rules_vs_reference")),
        ]);
    }
    engine.row(vec!["all".into(), format!("{rules_per_s:.0}"), format!("{ref_per_s:.0}"), fmt_ratio(rules_vs_ref, 3)]);
    engine.row(vec!["median round".into(), "".into(), "".into(), fmt_ratio(round_median, 3)]);

    let mut memory = Table::new(&["what", "VmRSS bytes", "÷ idle tokio process", "÷ idle spawned instance"]);
    memory.row(vec!["idle tokio process (reference)".into(), base_rss.to_string(), "1.00".into(), "–".into()]);
    memory.row(vec!["idle spawned instance-server".into(), spawned_rss.to_string(), fmt_ratio(spawned_vs_base, 2), "1.00".into()]);
    memory.row(vec![
        "dense host, no match yet".into(),
        dense.ready_rss.to_string(),
        fmt_ratio(ready_vs_base, 2),
        fmt_ratio(ratio(dense.ready_rss as f64, spawned_rss as f64), 2),
    ]);
    memory.row(vec![
        format!("per hosted match (dense, {} idle matches)", args.idle_matches),
        format!("{:.0}", dense.rss_per_match),
        fmt_ratio(ratio(dense.rss_per_match, base_rss as f64), 4),
        fmt_ratio(match_vs_spawned, 4),
    ]);

    let l = &dense.load;
    let seconds = num(l, "seconds");
    let commands = l["commands"].as_u64().unwrap_or(0);
    let mut live = Table::new(&[
        "matches played at once", "held at peak", "finished", "failed", "commands", "commands/s", "seconds", "host CPU",
        "bots CPU",
    ]);
    live.row(vec![
        args.live_matches.to_string(),
        dense.held_peak.to_string(),
        l["finished"].to_string(),
        l["failed"].to_string(),
        commands.to_string(),
        format!("{:.0}", commands as f64 / seconds.max(1e-9)),
        format!("{seconds:.1}"),
        pct(dense.host_cpu),
        pct(dense.load_cpu),
    ]);

    let pinned = match (pin.server_core, pin.load_core) {
        (Some(s), Some(l)) => format!(
            "rules replay, reference and servers pinned to core {s}, bots to core {l} (taskset), each in its own process"
        ),
        _ => "processes not pinned (see below): the ratios still hold, the absolute figures less so".into(),
    };
    let mut setup = vec![
        pinned,
        if cfg!(debug_assertions) { "debug build: figures mean nothing" } else { "release build" }.into(),
        "absolute figures drift from run to run on a shared machine: compare the ratios to the references".into(),
        format!(
            "{} recorded bot games replayed for {} s, SHA-256 reference for {} s, interleaved in {} rounds",
            rules["games"], args.replay_seconds, args.reference_seconds, args.rounds
        ),
        format!(
            "{} idle matches for memory, {} matches played by bots over WebSocket",
            args.idle_matches, args.live_matches
        ),
        format!(
            "replay: `cargo run --release -p bench -- instance --games {} --replay-seconds {} --reference-seconds {} \
             --rounds {} --idle-matches {} --live-matches {}`",
            args.games, args.replay_seconds, args.reference_seconds, args.rounds, args.idle_matches, args.live_matches
        ),
    ];
    if let Some(n) = &pin_note {
        setup.push(n.clone());
    }

    let json = json!({
        "rules_commands_per_s": round(rules_per_s, 0),
        "spawned_idle_rss_bytes": spawned_rss,
        "dense_rss_per_match_bytes": round(dense.rss_per_match, 0),
        "dense_matches_held": dense.held_peak,
        "dense_matches_finished": l["finished"],
        "dense_matches_failed": l["failed"],
        "rules_vs_reference": rules_vs_ref.map(|r| round(r, 4)),
        "reference": {
            "cpu_workload": "SHA-256 of one 1 KiB message per op, pure Rust, same process and core as the replay",
            "sha256_1kib_per_s": round(ref_per_s, 0),
            "tokio_idle_rss_bytes": base_rss,
        },
        "ratios": {
            "rules_vs_reference": rules_vs_ref.map(|r| round(r, 4)),
            "rules_vs_reference_median_round": round_median.map(|r| round(r, 4)),
            "spawned_idle_rss_vs_tokio_idle": spawned_vs_base.map(|r| round(r, 3)),
            "dense_host_ready_rss_vs_tokio_idle": ready_vs_base.map(|r| round(r, 3)),
            "dense_rss_per_match_vs_spawned_idle": match_vs_spawned.map(|r| round(r, 5)),
            "dense_matches_per_spawned_idle_rss": matches_per_spawned.map(|r| round(r, 1)),
        },
        "rules": {
            "games": rules["games"],
            "commands_per_pass": rules["commands_per_pass"],
            "passes": rules["passes"],
            "commands": rules["commands"],
            "reference_ops": rules["reference_ops"],
            "rounds": rules["rounds"],
        },
        "dense": {
            "host_ready_rss_bytes": dense.ready_rss,
            "rss_before_idle_matches_bytes": dense.before_idle_rss,
            "rss_after_idle_matches_bytes": dense.after_idle_rss,
            "commands": commands,
            "seconds": round(seconds, 2),
            "host_cpu": dense.host_cpu.map(|c| round(c, 3)),
            "bots_cpu": dense.load_cpu.map(|c| round(c, 3)),
            "failures": l["failures"],
        },
        "setup": {
            "server_core": pin.server_core,
            "load_core": pin.load_core,
            "pinned": pin.server_core.is_some(),
            "pin_note": pin_note,
            "games": args.games,
            "replay_seconds": args.replay_seconds,
            "reference_seconds": args.reference_seconds,
            "rounds": args.rounds,
            "idle_matches": args.idle_matches,
            "live_matches": args.live_matches,
        },
    });

    Report {
        scenario: "instance",
        title: "Instance server".into(),
        setup,
        sections: vec![
            Section {
                heading: "Rules engine".into(),
                table: engine,
                notes: vec![
                    "Replays of recorded bot games: engine work only, no bot decisions, no I/O.".into(),
                    "Reference: SHA-256 of 1 KiB messages (each starting with the previous digest), plain Rust \
                     (bench/src/instance/reference.rs), in the same process on the same core, alternating with the \
                     replay round by round. Commands per reference op = commands/s ÷ SHA-256 1 KiB/s: the figure \
                     to compare between runs and machines. Rounds far apart mean something else ran meanwhile \
                     (the replay is memory-bound and slows when the other core is busy, the hash does not): \
                     prefer the median round then."
                        .into(),
                ],
            },
            Section {
                heading: "Memory".into(),
                table: memory,
                notes: vec![
                    "VmRSS from /proc/<pid>/status, each process alone on the server core, read 0.5 s after it is \
                     ready. Idle tokio process: the bench binary idling in a multi-thread tokio runtime (the floor \
                     of any server process here). Idle spawned instance-server: spawned mode, waiting for its \
                     assignment (both transports listening, outbox database open)."
                        .into(),
                    "Per match = (dense host VmRSS after creating N matches − before) ÷ N, no links; ÷ idle spawned \
                     instance = the share of one spawned process a dense match costs."
                        .into(),
                ],
            },
            Section {
                heading: "Dense host with bots".into(),
                table: live,
                notes: vec![
                    "The host (InstanceHost, as the launcher runs it) alone in its process on the server core; the \
                     bots in another process on the load core. Every match has two WebSocket bot clients that \
                     refresh their view by snapshot after every event push. Held at peak: the host's own count, \
                     sampled every 20 ms in its process. Host/bots CPU: CPU seconds per wall second of each process \
                     while the bots played (100 % = the whole core)."
                        .into(),
                ],
            },
        ],
        json,
    }
}
