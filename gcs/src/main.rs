//! The `gcs` binary: parses config and runs the Global Connection Server.

use clap::Parser;
use service_runtime::config::ConfigArgs;

/// Tavern's Global Connection Server.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: gcs::GcsConfig = args.config.load_or_exit();
    service_runtime::telemetry::init(&config.log);
    gcs::run(config, service_runtime::shutdown::on_signals()).await
}
