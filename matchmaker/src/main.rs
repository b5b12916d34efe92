//! The `matchmaker` binary: parses config and runs the matchmaker service.

use clap::Parser;
use service_runtime::config::{ConfigArgs, exit_config};

/// Tavern's matchmaker: tickets, matching, instance allocation, results.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: matchmaker::MatchmakerConfig = args.config.load_or_exit();
    if let Err(e) = config.validate() {
        exit_config(&e);
    }
    service_runtime::telemetry::init(&config.log);
    matchmaker::run(config, service_runtime::shutdown::on_signals()).await?;
    Ok(())
}
