//! `bench instance worker-rules`: the rules engine alone (recorded bot games replayed through
//! `instance_server::rules::bench_support`, engine work only) and the CPU reference (SHA-256 of
//! 1 KiB messages, [`super::reference`]), in one process pinned to the server core, interleaved
//! in rounds so both see the same core at the same moments. Prints one JSON line and exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use instance_server::catalog::Catalog;
use instance_server::rules::bench_support::{bot_setup, play_bot_game, replay};
use serde_json::json;

use super::reference;

#[derive(clap::Args, Debug)]
pub struct RulesArgs {
    #[arg(long)]
    games: u64,
    #[arg(long)]
    replay_seconds: f64,
    #[arg(long)]
    reference_seconds: f64,
    #[arg(long)]
    rounds: u32,
}

pub fn run(a: &RulesArgs) -> Result<()> {
    reference::self_check().map_err(|e| anyhow!("the SHA-256 reference is wrong: {e}"))?;
    let catalog = Arc::new(Catalog::standard());
    let recording = Instant::now();
    let games: Vec<_> = (0..a.games)
        .filter_map(|seed| bot_setup(&catalog, seed).map(|s| play_bot_game(&catalog, s, seed)))
        .collect();
    let record_seconds = recording.elapsed().as_secs_f64();
    let per_pass: u64 = games.iter().map(|g| g.commands.len() as u64).sum();
    if per_pass == 0 {
        return Err(anyhow!("no bot game was recorded"));
    }

    // Warm caches and the branch predictor for both workloads before anything is counted.
    for g in &games {
        replay(&catalog, g);
    }
    reference::run(Duration::from_millis(50));

    let rounds = a.rounds.max(1);
    let rules_window = Duration::from_secs_f64(a.replay_seconds / f64::from(rounds));
    let ref_window = Duration::from_secs_f64(a.reference_seconds / f64::from(rounds));
    let (mut commands, mut passes, mut rules_s) = (0u64, 0u64, 0.0f64);
    let (mut ref_ops, mut ref_s) = (0u64, 0.0f64);
    let mut per_round = Vec::new();
    for round in 0..rounds {
        // ABBA order: drift within a round weighs on both workloads alike.
        let rules = || {
            let started = Instant::now();
            let (mut c, mut p) = (0u64, 0u64);
            while started.elapsed() < rules_window {
                for g in &games {
                    c += replay(&catalog, g).commands;
                }
                p += 1;
            }
            (c, p, started.elapsed().as_secs_f64())
        };
        let ((c, p, rs), (o, os)) = if round % 2 == 0 {
            let r = rules();
            (r, reference::run(ref_window))
        } else {
            let o = reference::run(ref_window);
            (rules(), o)
        };
        commands += c;
        passes += p;
        rules_s += rs;
        ref_ops += o;
        ref_s += os;
        let (cps, ops) = (c as f64 / rs.max(1e-9), o as f64 / os.max(1e-9));
        per_round.push(json!({
            "rules_commands_per_s": cps.round(),
            "reference_ops_per_s": ops.round(),
            "rules_vs_reference": (cps / ops.max(1e-9) * 1000.0).round() / 1000.0,
        }));
    }
    let line = json!({
        "games": games.len(),
        "commands_per_pass": per_pass,
        "record_seconds": record_seconds,
        "passes": passes,
        "commands": commands,
        "rules_seconds": rules_s,
        "rules_commands_per_s": commands as f64 / rules_s.max(1e-9),
        "reference_ops": ref_ops,
        "reference_seconds": ref_s,
        "reference_ops_per_s": ref_ops as f64 / ref_s.max(1e-9),
        "rounds": per_round,
    });
    println!("{line}");
    Ok(())
}
