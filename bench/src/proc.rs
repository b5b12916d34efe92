//! Child processes of the bench's scenarios: the server under test and the load workers, each
//! pinned to its core with `taskset`, talking to the orchestrator in stdout lines (one JSON
//! object per line) and listening for commands on stdin. A child is killed when its handle is
//! dropped, whatever path the orchestrator leaves by.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Where the server and the load run (DESIGN.md §11): the server alone on one core, the load
/// generators on the other.
#[derive(Clone, Copy, Debug)]
pub struct Pinning {
    pub server_core: Option<usize>,
    pub load_core: Option<usize>,
}

impl Pinning {
    /// Pins to `server_core` and `load_core` when `taskset` works and the machine has both
    /// cores; otherwise runs unpinned and says why.
    pub fn detect(server_core: usize, load_core: usize) -> (Pinning, Option<String>) {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let unpinned = Pinning { server_core: None, load_core: None };
        if cores <= server_core.max(load_core) {
            return (unpinned, Some(format!("only {cores} core(s) available to the bench: processes are not pinned")));
        }
        let works = std::process::Command::new("taskset")
            .args(["-c", &server_core.to_string(), "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !works {
            return (unpinned, Some("taskset is not available: processes are not pinned".into()));
        }
        (Pinning { server_core: Some(server_core), load_core: Some(load_core) }, None)
    }
}

/// A running child with line-oriented stdout and a command stdin.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

impl Proc {
    /// Starts `program args…`, pinned to `core` with `taskset -c` (which execs the program, so the
    /// pid is the program's own and `/proc/<pid>` describes it).
    pub fn spawn(name: &str, program: &Path, args: &[String], core: Option<usize>) -> Result<Proc> {
        let mut cmd = match core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name} ({})", program.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        Ok(Proc { name: name.to_owned(), child, stdin, lines: BufReader::new(stdout).lines(), pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next stdout line, within `timeout`.
    pub async fn line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
                bail!("{} ended without answering (exit: {status:?})", self.name)
            }
            Ok(Err(e)) => Err(e).with_context(|| format!("reading from {}", self.name)),
            Err(_) => bail!("{} did not answer within {timeout:?}", self.name),
        }
    }

    /// The next stdout line as a JSON object; `{"error": …}` from a worker becomes an error.
    pub async fn json(&mut self, timeout: Duration) -> Result<serde_json::Value> {
        let line = self.line(timeout).await?;
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{} printed a line that is not JSON: {line:?}", self.name))?;
        if let Some(e) = value.get("error").and_then(serde_json::Value::as_str) {
            bail!("{}: {e}", self.name);
        }
        Ok(value)
    }

    /// Sends one command line.
    pub async fn send(&mut self, command: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("{}: stdin already closed", self.name))?;
        stdin.write_all(format!("{command}\n").as_bytes()).await.with_context(|| format!("writing to {}", self.name))?;
        stdin.flush().await?;
        Ok(())
    }

    /// Resident memory, from `/proc/<pid>/status` (VmRSS).
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("reading /proc/{}/status of {}", self.pid, self.name))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// Closes stdin (the child's signal to finish), waits up to `grace`, then kills it.
    pub async fn finish(mut self, grace: Duration) {
        self.stdin = None;
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Kills the child at once (a server that does not read stdin) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Whether the child has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // kill_on_drop also does this; being explicit costs nothing.
        let _ = self.child.start_kill();
    }
}

/// The workspace binary `name` beside the bench's own executable (`target/<profile>/name`),
/// built with cargo in the same profile when it is missing.
pub fn sibling_bin(name: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    // Test binaries live one level down, in `target/<profile>/deps`.
    let mut dir = exe.parent().ok_or_else(|| anyhow!("bench binary has no directory"))?;
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or_else(|| anyhow!("bench binary has no profile directory"))?;
    }
    let bin = dir.join(name);
    if !bin.exists() {
        eprintln!("bench: building the {name} binary");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", name, "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status()?;
        if !status.success() || !bin.exists() {
            bail!("could not build {}", bin.display());
        }
    }
    Ok(bin)
}

/// CPU time of a process in seconds. Linux reports it in clock ticks, 100 per second on every
/// architecture this runs on (USER_HZ).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Measures the CPU share of a set of processes over an interval.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: Vec<Option<f64>>,
    at: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> CpuMeter {
        CpuMeter { pids: pids.to_vec(), start: pids.iter().map(|p| cpu_seconds(*p)).collect(), at: std::time::Instant::now() }
    }

    /// CPU seconds used per wall second since `start`, summed over the processes (1.0 = one
    /// core busy), or `None` if a process could not be read.
    pub fn share(&self) -> Option<f64> {
        let wall = self.at.elapsed().as_secs_f64();
        let mut used = 0.0;
        for (pid, start) in self.pids.iter().zip(&self.start) {
            used += cpu_seconds(*pid)? - (*start)?;
        }
        (wall > 0.0).then(|| used / wall)
    }

    /// CPU seconds used since `start`, summed.
    pub fn used(&self) -> Option<f64> {
        let mut used = 0.0;
        for (pid, start) in self.pids.iter().zip(&self.start) {
            used += cpu_seconds(*pid)? - (*start)?;
        }
        Some(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let spent = cpu_seconds(std::process::id()).expect("/proc/self/stat parses");
        assert!(spent >= 0.0);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}

/// Ends a worker process of `scenario`: its error on stderr, exit status 0 or 1. A worker prints
/// only its own lines, so it must never fall through to the scenario's report.
pub fn exit_worker(scenario: &str, result: anyhow::Result<()>) -> ! {
    if let Err(e) = &result {
        eprintln!("bench {scenario} worker: {e:#}");
    }
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

