//! The `instance-server` binary: parses config and runs the instance server (spawned or dense
//! mode; see `instance_server::server::run`).

use clap::Parser;
use instance_server::server::InstanceConfig;
use instance_server::server::run::{RunError, run};
use service_runtime::config::{ConfigArgs, EXIT_CONFIG};

/// Tavern's instance server: hosts card game matches for two players each.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// The UDP and TCP port, keeping the configured bind addresses (the matchmaker's process
    /// spawner passes it).
    #[arg(long)]
    port: Option<u16>,
    /// This instance's id (the spawner passes it).
    #[arg(long)]
    instance_id: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config: InstanceConfig = args.config.load_or_exit();
    if let Some(port) = args.port {
        config.udp_bind.set_port(port);
        config.ws_bind.set_port(port);
    }
    if let Some(id) = args.instance_id {
        config.instance_id = id;
    }
    service_runtime::telemetry::init(&config.log);
    match run(config, service_runtime::shutdown::on_signals()).await {
        Err(e @ (RunError::Config(_) | RunError::Spec(_))) => {
            eprintln!("tavern: bad configuration: {e}");
            std::process::exit(EXIT_CONFIG)
        }
        other => Ok(other?),
    }
}
