//! What the bench's smoke tests share: running the bench binary bounded in time, and a scratch
//! directory for its report.
#![allow(dead_code)] // Each smoke test uses a part of this module.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Runs the bench binary with `args`, bounded by `limit`, and returns its stdout. On overrun it
/// is sent SIGTERM first (so it can stop what it launched), then killed.
pub fn run_bench(args: &[&str], limit: Duration) -> Result<String> {
    let scenario = args.first().copied().unwrap_or("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the bench binary")?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            bail!("bench {scenario} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = reader.join().map_err(|_| anyhow::anyhow!("stdout reader panicked"))??;
    ensure!(status.success(), "bench {scenario} failed ({status}):\n{stdout}");
    Ok(stdout)
}

/// A fresh directory for one smoke test's report.
pub fn scratch_dir(scenario: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tavern-bench-{scenario}-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
