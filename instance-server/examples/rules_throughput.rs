//! A quick measurement of the rules engine: bot games recorded once, then replayed through fresh
//! engines (engine work alone) and played again with bots deciding (engine + bot).
//!
//! `cargo run --release -p instance-server --example rules_throughput [games]`. The bench's
//! `instance` scenario reports the same figure as `rules_commands_per_s`.

use std::sync::Arc;
use std::time::Instant;

use instance_server::catalog::Catalog;
use instance_server::rules::bench_support::{bot_setup, play_bot_game, replay};

fn main() -> anyhow::Result<()> {
    let games: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2_000,
    };
    let catalog = Arc::new(Catalog::standard());
    let setups = (0..games)
        .map(|seed| bot_setup(&catalog, seed).ok_or_else(|| anyhow::anyhow!("no starter decks")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let started = Instant::now();
    let recorded: Vec<_> = setups
        .into_iter()
        .zip(0..)
        .map(|(s, seed)| play_bot_game(&catalog, s, seed))
        .collect();
    let with_bots = started.elapsed();
    let commands: u64 = recorded.iter().map(|g| g.commands.len() as u64).sum();
    let turns: u64 = recorded.iter().map(|g| u64::from(g.turns)).sum();

    let started = Instant::now();
    let mut replayed = 0;
    let mut events = 0;
    for g in &recorded {
        let stats = replay(&catalog, g);
        anyhow::ensure!(stats.rejected == 0, "replay diverged");
        replayed += stats.commands;
        events += stats.events;
    }
    let engine = started.elapsed();

    println!(
        "{games} bot games: {commands} commands, {events} events, {:.1} turns/game",
        turns as f64 / games as f64
    );
    println!(
        "engine alone (replay):   {:>12.0} commands/s  ({:.2} µs/command, setup included)",
        replayed as f64 / engine.as_secs_f64(),
        engine.as_secs_f64() * 1e6 / replayed as f64
    );
    println!(
        "engine + bot decisions:  {:>12.0} commands/s  ({:.0} games/s)",
        commands as f64 / with_bots.as_secs_f64(),
        games as f64 / with_bots.as_secs_f64()
    );
    Ok(())
}
