//! The `instance` scenario's plumbing, exercised without measuring anything: the bench binary
//! starts its rules worker (replay + SHA-256 reference), the memory reference, a spawned
//! `instance-server`, the dense host and the bots, each pinned when `taskset` works, with tiny
//! parameters, and prints one JSON object carrying every figure and its reference. Asserts
//! behaviour (games played, memory read, the fields and ratios are there), never speed.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod support;
use support::{run_bench, scratch_dir};

/// The whole run is bounded; it takes a few seconds (more if `instance-server` must be built).
const RUN_LIMIT: Duration = Duration::from_secs(240);
const LIVE: u64 = 2;

#[test]
fn instance_scenario_prints_every_figure_and_its_reference_as_one_json_line() -> Result<()> {
    let dir = scratch_dir("instance")?;
    let out = run_bench(&[
        "instance", "--json", "--games", "4", "--replay-seconds", "0.2", "--reference-seconds", "0.1", "--rounds", "2",
        "--idle-matches", "20", "--live-matches", &LIVE.to_string(), "--time-limit", "60", "--report-dir",
        dir.to_str().context("temp dir path is not UTF-8")?,
    ], RUN_LIMIT);
    let report_files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = out?;

    let last = stdout.lines().last().context("no output")?;
    let json: Value = serde_json::from_str(last).with_context(|| format!("last line is not JSON: {last:?}"))?;
    ensure!(json.is_object(), "last line is not a JSON object: {last}");
    let number = |path: &[&str]| -> Result<f64> {
        let v = path.iter().fold(&json, |v, k| &v[*k]);
        v.as_f64().with_context(|| format!("{} is not a number: {json}", path.join(".")))
    };

    // The required figures, under their names.
    ensure!(number(&["rules_commands_per_s"])? > 0.0, "no rules command replayed: {json}");
    ensure!(number(&["spawned_idle_rss_bytes"])? > 0.0, "no VmRSS for the spawned instance: {json}");
    ensure!(number(&["dense_rss_per_match_bytes"])? >= 0.0, "dense_rss_per_match_bytes: {json}");
    let held = json["dense_matches_held"].as_u64().context("dense_matches_held is not a count")?;
    ensure!((1..=LIVE).contains(&held), "dense_matches_held is {held}, not within 1..={LIVE}: {json}");
    ensure!(json["dense_matches_finished"].as_u64() == Some(LIVE), "not every bot match finished: {json}");
    ensure!(json["dense_matches_failed"].as_u64() == Some(0), "bot matches failed: {json}");

    // The references measured in the same run, and the ratios to them.
    ensure!(number(&["reference", "sha256_1kib_per_s"])? > 0.0, "no SHA-256 reference: {json}");
    ensure!(number(&["reference", "tokio_idle_rss_bytes"])? > 0.0, "no memory reference: {json}");
    ensure!(number(&["rules_vs_reference"])? > 0.0, "no rules_vs_reference: {json}");
    for ratio in [
        "rules_vs_reference",
        "rules_vs_reference_median_round",
        "spawned_idle_rss_vs_tokio_idle",
        "dense_host_ready_rss_vs_tokio_idle",
        "dense_rss_per_match_vs_spawned_idle",
    ] {
        number(&["ratios", ratio])?;
    }
    ensure!(json["rules"]["rounds"].as_array().map(Vec::len) == Some(2), "not two rounds: {json}");

    // Pinned whenever this machine can pin; otherwise the report says why.
    let pinned = json["setup"]["pinned"].as_bool().context("setup.pinned is not a bool")?;
    if can_pin() {
        ensure!(pinned, "taskset works and there are two cores, yet nothing was pinned: {json}");
    } else {
        ensure!(json["setup"]["pin_note"].is_string(), "unpinned without a reason: {json}");
    }

    for heading in ["## Rules engine", "## Memory", "## Dense host with bots", "idle tokio process (reference)"] {
        ensure!(stdout.contains(heading), "the report has no {heading:?}:\n{stdout}");
    }
    ensure!(report_files == 1, "expected one report file, found {report_files}");
    Ok(())
}

fn can_pin() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores >= 2
        && Command::new("taskset")
            .args(["-c", "0", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}


