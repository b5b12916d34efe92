//! The `transport` scenario's plumbing, exercised without measuring anything: the bench binary
//! starts its server and load worker processes, drives every phase with tiny parameters, and
//! prints one JSON object carrying every figure issue 3 asks for. Asserts behaviour (echoes came
//! back, links were held, the fields are there), never speed.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod support;
use support::{run_bench, scratch_dir};

/// The whole run is bounded; it takes a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(240);
const LINKS: u64 = 20;

#[test]
fn transport_scenario_prints_every_figure_as_one_json_line() -> Result<()> {
    let dir = scratch_dir("transport")?;
    let out = run_bench(&[
        "transport", "--json", "--seconds", "0.3", "--warmup", "0.1", "--ping-seconds", "0.2", "--clients", "2",
        "--window", "4", "--handshake-concurrency", "2", "--max-links", &LINKS.to_string(), "--report-dir",
        dir.to_str().context("temp dir path is not UTF-8")?,
    ], RUN_LIMIT);
    let report_files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = out?;

    let last = stdout.lines().last().context("no output")?;
    let json: Value = serde_json::from_str(last).with_context(|| format!("last line is not JSON: {last:?}"))?;
    ensure!(json.is_object(), "last line is not a JSON object: {last}");

    let handshakes = json["dtls_handshakes_per_s"].as_f64().context("dtls_handshakes_per_s is not a number")?;
    ensure!(handshakes > 0.0, "no DTLS handshake completed: {json}");

    for transport in ["enet_dtls", "enet_plain", "ws"] {
        check_echo(&json, transport)?;
    }
    match &json["c_enet_plain"] {
        Value::Null => {
            let why = json["c_enet_plain_unavailable"].as_str().context("c_enet_plain is null without a reason")?;
            ensure!(!libenet_available(), "libenet-dev and a C compiler are here, yet the C reference was skipped: {why}");
            eprintln!("transport_smoke: C reference skipped: {why}");
        }
        _ => {
            check_echo(&json, "c_enet_plain")?;
            ensure!(json["enet_plain"]["msgs_per_s_vs_c"].as_f64().is_some(), "no ratio to C for enet_plain: {json}");
        }
    }

    ensure!(json["links_held"].as_u64() == Some(LINKS), "links_held is not {LINKS}: {json}");
    ensure!(json["links"][LINKS.to_string()]["held"].as_u64() == Some(LINKS), "links.{LINKS}.held is not {LINKS}");
    ensure!(json["rss_per_link_bytes"].as_f64().is_some(), "rss_per_link_bytes is not a number: {json}");

    for heading in ["## Echo", "## DTLS handshakes", "## ENet/DTLS links held", " enet_dtls |", " c_enet_plain |"] {
        ensure!(stdout.contains(heading), "the table has no {heading:?}:\n{stdout}");
    }
    ensure!(report_files == 1, "expected one report file, found {report_files}");
    Ok(())
}

/// Echoes came back over `transport`, and the round trips are ordered.
fn check_echo(json: &Value, transport: &str) -> Result<()> {
    let t = &json[transport];
    ensure!(t.is_object(), "{transport} is not an object: {json}");
    let field = |k: &str| t[k].as_f64().with_context(|| format!("{transport}.{k} is not a number: {t}"));
    ensure!(field("msgs_per_s")? > 0.0, "no echo over {transport}: {t}");
    let (p50, p99) = (field("rtt_p50_us")?, field("rtt_p99_us")?);
    ensure!(p50 > 0.0 && p99 >= p50, "{transport}: round trips p50 {p50} p99 {p99}");
    ensure!(t["errors"].as_u64() == Some(0), "{transport}: echoes came back wrong: {t}");
    Ok(())
}


fn libenet_available() -> bool {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    ok("pkg-config", &["--exists", "libenet"]) && ok("cc", &["--version"])
}

