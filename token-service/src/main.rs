//! The `token-service` binary: parses configuration and runs the service.

use clap::Parser;
use service_runtime::config::{ConfigArgs, exit_config};
use token_service::ServiceConfig;

/// Tavern token service: mints, verifies and revokes session, refresh and join tokens.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: ServiceConfig = args.config.load_or_exit();
    if let Err(e) = config.validate() {
        exit_config(&e);
    }
    token_service::run(config, service_runtime::shutdown::on_signals()).await
}
