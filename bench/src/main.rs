//! Tavern's bench: `cargo run --release -p bench -- <scenario>`. Each scenario prints a readable
//! table, writes a Markdown report under `bench/reports/` (or `--report-dir`), and with `--json`
//! prints its figures as one JSON object on the last line of stdout. Progress goes to stderr.
//!
//! Adding a scenario: a module with `Args` (clap) and `run(&Args) -> anyhow::Result<Report>`,
//! and one variant in [`Scenario`].

mod e2e;
mod gcs;
mod instance;
mod matchmaker;
mod proc;
mod report;
mod transport;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::report::Report;

#[derive(Parser)]
#[command(name = "bench", about = "Tavern's benchmarks, one scenario per subcommand")]
struct Cli {
    /// Print the figures as one JSON object on the last line of stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Where to write the report (default: bench/reports/).
    #[arg(long, global = true)]
    report_dir: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// The whole system (`tavern`, launched or already running) under simulated players who
    /// register, log in, link, queue, play whole matches with a bot and queue again: matches,
    /// errors, time to match.
    E2e(e2e::Args),
    /// One GCS process: authenticated links held per transport and memory per link, chat
    /// fan-out deliveries/s and latency in the common area.
    Gcs(gcs::Args),
    /// The instance server: rules-engine commands/s, RSS of an idle spawned instance, RSS per
    /// match and matches held in a high-density host with bots playing.
    Instance(instance::Args),
    /// The matching core: tick time at 10k/100k/1M queued tickets, intake throughput from many
    /// producers, and a population simulation (waits, rating gaps, quality).
    Matchmaker(matchmaker::Args),
    /// Links under load: DTLS handshakes/s; echo msgs/s and RTT over ENet/DTLS, plain ENet,
    /// WebSocket and a C ENet reference; ENet/DTLS links held and memory per link.
    Transport(transport::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report: Report = match &cli.scenario {
        Scenario::E2e(args) => e2e::run(args)?,
        Scenario::Gcs(args) => gcs::run(args)?,
        Scenario::Instance(args) => instance::run(args)?,
        Scenario::Matchmaker(args) => matchmaker::run(args)?,
        Scenario::Transport(args) => transport::run(args)?,
    };
    print!("{}", report.render());
    let dir = cli.report_dir.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reports"));
    match report.write(&dir) {
        Ok(path) => println!("\nreport: {}", path.display()),
        Err(e) => eprintln!("cannot write the report under {}: {e}", dir.display()),
    }
    if cli.json {
        println!("{}", report.json);
    }
    Ok(())
}
