//! The `e2e` scenario's plumbing, exercised without measuring anything: the bench binary
//! launches the `tavern` binary, two simulated players register, link (one over ENet/DTLS, one
//! over WebSocket), queue, are matched and play one whole match with bots, and the bench prints
//! one JSON object with the figures. Asserts behaviour (a match was played, no step failed, the
//! fields are there, tavern stopped on SIGTERM), never speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod support;
use support::{run_bench, scratch_dir};

/// The whole run is bounded; one match with bots takes a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn e2e_scenario_plays_a_match_and_prints_the_figures_as_one_json_line() -> Result<()> {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_bench"));
    let tavern = tavern_binary(&bench)?;
    let dir = scratch_dir("e2e")?;
    let out = run_bench(
        &[
            "e2e", "--players", "2", "--matches", "1", "--seconds", "60", "--json", "--tavern-bin",
            tavern.to_str().context("tavern path is not UTF-8")?, "--report-dir",
            dir.to_str().context("temp dir path is not UTF-8")?,
        ],
        RUN_LIMIT,
    );
    let report_files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = out?;

    let last = stdout.lines().last().context("no output")?;
    let json: Value = serde_json::from_str(last).with_context(|| format!("last line is not JSON: {last:?}"))?;
    ensure!(json.is_object(), "the last line is not a JSON object: {last}");
    ensure!(json["players"].as_u64() == Some(2), "players is not 2: {json}");
    let matches = json["matches_completed"].as_u64().context("matches_completed is not a number")?;
    ensure!(matches >= 1, "no match was played to the end: {json}");
    ensure!(json["errors"].as_u64() == Some(0), "steps failed: {json}");
    let (p50, p99) = (
        json["time_to_match_p50_ms"].as_f64().context("time_to_match_p50_ms is not a number")?,
        json["time_to_match_p99_ms"].as_f64().context("time_to_match_p99_ms is not a number")?,
    );
    ensure!(p50 > 0.0 && p99 >= p50, "time to match p50 {p50} p99 {p99}: {json}");
    ensure!(json["games_played"].as_u64().is_some_and(|g| g >= 2), "both players played: {json}");
    ensure!(json["enet_players"].as_u64() == Some(1) && json["ws_players"].as_u64() == Some(1), "one player per transport: {json}");
    ensure!(json["tavern_stopped_cleanly"] == Value::Bool(true), "tavern did not stop cleanly on SIGTERM: {json}");
    for heading in ["## Matches", "## Steps", "time to match (QueueJoin → MatchFound)"] {
        ensure!(stdout.contains(heading), "the table has no {heading:?}:\n{stdout}");
    }
    ensure!(report_files == 1, "expected one report file, found {report_files}");
    Ok(())
}

/// The `tavern` binary of this profile (`target/<profile>/tavern`), built with cargo if missing:
/// `cargo test -p bench` builds only the bench's own binary.
fn tavern_binary(bench: &Path) -> Result<PathBuf> {
    let dir = bench.parent().context("the bench binary has no directory")?;
    let tavern = dir.join(format!("tavern{}", std::env::consts::EXE_SUFFIX));
    if !tavern.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "tavern", "--bin", "tavern"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo to build tavern")?;
        ensure!(status.success() && tavern.exists(), "could not build {}", tavern.display());
    }
    Ok(tavern)
}

