//! The `gcs` scenario's plumbing, exercised without measuring anything: the bench binary starts
//! the real `gcs` binary and its load workers, holds a few authenticated links over each
//! transport, fans a few chat messages out, and prints one JSON object carrying every figure.
//! Asserts behaviour (links held, every message delivered, the fields are there), never speed.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod support;
use support::{run_bench, scratch_dir};

/// The whole run is bounded; it takes about fifteen seconds.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const LINKS: u64 = 20;
const LISTENERS: u64 = 10;

#[test]
fn gcs_scenario_prints_every_figure_as_one_json_line() -> Result<()> {
    let dir = scratch_dir("gcs")?;
    let out = run_bench(&[
        "gcs", "--json", "--links", &LINKS.to_string(), "--hold-seconds", "1", "--listeners", &LISTENERS.to_string(),
        "--senders", "2", "--rate", "5", "--seconds", "2", "--report-dir",
        dir.to_str().context("temp dir path is not UTF-8")?,
    ], RUN_LIMIT);
    let report_files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = out?;

    let last = stdout.lines().last().context("no output")?;
    let json: Value = serde_json::from_str(last).with_context(|| format!("last line is not JSON: {last:?}"))?;
    ensure!(json.is_object(), "last line is not a JSON object: {last}");

    for transport in ["enet_dtls", "ws"] {
        let held = json["links_held"][transport].as_u64();
        ensure!(held == Some(LINKS), "links_held.{transport} is {held:?}, not {LINKS}: {json}");
        let rss = json["rss_per_link_bytes"][transport].as_f64().with_context(|| format!("rss_per_link_bytes.{transport}"))?;
        // Each link costs the GCS something, and not megabytes.
        ensure!(rss >= 0.0 && rss < 4.0 * 1024.0 * 1024.0, "rss_per_link_bytes.{transport} = {rss}: {json}");
        let pongs = json["details"][transport]["hold_pongs"].as_u64().unwrap_or(0);
        ensure!(pongs > 0, "no heartbeat answered while holding {transport} links: {json}");
    }

    // 2 senders × 5/s × 2 s = 20 messages, each to every listener.
    let deliveries = json["details"]["fanout"]["deliveries"].as_u64().context("fanout deliveries")?;
    let expected = json["details"]["fanout"]["expected"].as_u64().context("fanout expected")?;
    ensure!(expected >= 15 * LISTENERS, "too few messages accepted: {json}");
    ensure!(deliveries == expected, "{deliveries} of {expected} deliveries: {json}");
    let per_s = json["fanout_deliveries_per_s"].as_f64().context("fanout_deliveries_per_s is not a number")?;
    ensure!(per_s > 0.0, "no deliveries per second: {json}");
    let (p50, p99) = (
        json["fanout_p50_ms"].as_f64().context("fanout_p50_ms is not a number")?,
        json["fanout_p99_ms"].as_f64().context("fanout_p99_ms is not a number")?,
    );
    ensure!(p50 > 0.0 && p99 >= p50 && p99 < 10_000.0, "fan-out latency p50 {p50} ms, p99 {p99} ms");

    for heading in ["## Authenticated links held", "## Chat fan-out", " enet_dtls |", " ws |"] {
        ensure!(stdout.contains(heading), "the table has no {heading:?}:\n{stdout}");
    }
    ensure!(report_files == 1, "expected one report file, found {report_files}");
    Ok(())
}


