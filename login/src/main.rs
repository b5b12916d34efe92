//! The `login` binary: parses config and runs the login service.

use clap::Parser;
use service_runtime::config::ConfigArgs;

/// Tavern's REST login service.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: login::LoginConfig = args.config.load_or_exit();
    service_runtime::telemetry::init(&config.log);
    login::run(config, service_runtime::shutdown::on_signals()).await
}
