//! The local process spawner: one instance process per match, started from a configured binary,
//! with a small warm pool so a match rarely waits for a process to start.
//!
//! Contract with the instance binary (the `instance-server` binary will follow it):
//! - Its arguments are the configured `args` with `{port}` and `{instance_id}` replaced by the
//!   port the spawner picked (from `first_port`, one per live process) and the instance id.
//! - When it is ready to host a match it prints one line `TAVERN_READY` on stdout, optionally
//!   followed by a JSON object `{"udp_port": …, "ws_url": "…"}` that overrides the picked port
//!   and sets the WebSocket URL. Anything else it prints is logged at debug level.
//! - Its match arrives as one JSON line on stdin ([`super::MatchSpec`]); it exits when the
//!   match is over. A process that has not exited a grace period after its result was stored is
//!   killed.
//!
//! A process that exits or prints nothing ready within `ready_timeout_ms` is a failed spawn
//! ([`AllocError::Failed`]), which makes the service re-queue the match.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use uuid::Uuid;

use super::{AllocError, Allocation, Allocator, InstanceAddr, MatchSpec};

/// The line prefix an instance prints when it is ready.
pub const READY_PREFIX: &str = "TAVERN_READY";

/// How the spawner starts instances.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpawnerConfig {
    /// The instance binary.
    pub program: PathBuf,
    /// Its arguments; `{port}` and `{instance_id}` are replaced.
    pub args: Vec<String>,
    /// The host players connect to.
    pub host: String,
    /// The first port handed out; one per live process from there.
    pub first_port: u16,
    /// How many processes may live at once (warm and busy).
    pub max_processes: usize,
    /// Ready processes kept waiting for a match.
    pub warm: usize,
    pub ready_timeout_ms: u64,
    /// How long a process may linger after its result before it is killed.
    pub exit_grace_ms: u64,
}

impl Default for SpawnerConfig {
    fn default() -> Self {
        SpawnerConfig {
            program: PathBuf::from("instance-server"),
            args: vec!["--port".into(), "{port}".into(), "--instance-id".into(), "{instance_id}".into()],
            host: "127.0.0.1".into(),
            first_port: 7500,
            max_processes: 16,
            warm: 2,
            ready_timeout_ms: 10_000,
            exit_grace_ms: 5_000,
        }
    }
}

/// Starts instance processes and hands them to matches. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProcessSpawner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SpawnerConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    idle: Vec<Ready>,
    /// Processes hosting a match, with their ports.
    busy: HashMap<String, (Child, u16)>,
    /// Processes being started (counted against `max_processes`).
    starting: usize,
    ports: HashSet<u16>,
    next_id: u64,
}

#[derive(Debug)]
struct Ready {
    allocation: Allocation,
    port: u16,
    child: Child,
    stdin: ChildStdin,
}

impl ProcessSpawner {
    /// A spawner that starts filling its warm pool at once (in the background).
    pub fn start(config: SpawnerConfig) -> ProcessSpawner {
        let spawner = ProcessSpawner { inner: Arc::new(Inner { config, state: Mutex::new(State::default()) }) };
        spawner.refill();
        spawner
    }

    /// Ready processes waiting for a match.
    pub fn idle(&self) -> usize {
        self.inner.lock().idle.len()
    }

    /// Processes hosting a match.
    pub fn busy(&self) -> usize {
        self.inner.lock().busy.len()
    }

    /// Starts processes in the background until the warm pool is full (or the cap is reached).
    fn refill(&self) {
        let missing = {
            let s = self.inner.lock();
            let live = s.idle.len() + s.busy.len() + s.starting;
            let want = self.inner.config.warm.saturating_sub(s.idle.len() + s.starting);
            want.min(self.inner.config.max_processes.saturating_sub(live))
        };
        for _ in 0..missing {
            let Some(slot) = self.inner.reserve() else { return };
            let inner = Arc::clone(&self.inner);
            tokio::spawn(async move {
                match inner.launch(slot).await {
                    Ok(ready) => inner.lock().idle.push(ready),
                    Err(e) => tracing::warn!(error = %e, "warm instance failed to start"),
                }
            });
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Critical sections are short moves in and out of the collections; a poisoned lock
        // leaves them consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims a process slot, a port and an id, or `None` when at the cap or out of ports.
    fn reserve(&self) -> Option<(String, u16)> {
        let mut s = self.lock();
        if s.idle.len() + s.busy.len() + s.starting >= self.config.max_processes {
            return None;
        }
        let port = (0..self.config.max_processes as u32)
            .filter_map(|i| u16::try_from(u32::from(self.config.first_port) + i).ok())
            .find(|p| !s.ports.contains(p))?;
        s.ports.insert(port);
        s.starting += 1;
        s.next_id += 1;
        Some((format!("local-{}-{}", std::process::id(), s.next_id), port))
    }

    /// Starts one process on a reserved slot and waits for its ready line.
    async fn launch(&self, (instance_id, port): (String, u16)) -> Result<Ready, AllocError> {
        let result = self.launch_inner(&instance_id, port).await;
        let mut s = self.lock();
        s.starting = s.starting.saturating_sub(1);
        if result.is_err() {
            s.ports.remove(&port);
        }
        result
    }

    async fn launch_inner(&self, instance_id: &str, port: u16) -> Result<Ready, AllocError> {
        let args = self
            .config
            .args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()).replace("{instance_id}", instance_id));
        let mut child = Command::new(&self.config.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AllocError::Failed(format!("cannot start {}: {e}", self.config.program.display())))?;
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(AllocError::Failed("instance process has no stdio pipes".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let timeout = Duration::from_millis(self.config.ready_timeout_ms);
        let ready = tokio::time::timeout(timeout, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(rest) = line.trim().strip_prefix(READY_PREFIX)
                            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
                        {
                            return Ok(rest.trim().to_owned());
                        }
                        tracing::debug!(instance_id, %line, "instance output");
                    }
                    Ok(None) => return Err(AllocError::Failed("instance exited before it was ready".into())),
                    Err(e) => return Err(AllocError::Failed(format!("reading instance output: {e}"))),
                }
            }
        })
        .await
        .map_err(|_| AllocError::Failed(format!("instance not ready within {timeout:?}")))??;
        let mut address = InstanceAddr { host: self.config.host.clone(), udp_port: port, ws_url: None };
        if !ready.is_empty() {
            #[derive(Deserialize)]
            struct ReadyLine {
                udp_port: Option<u16>,
                ws_url: Option<String>,
            }
            let parsed: ReadyLine = serde_json::from_str(&ready)
                .map_err(|e| AllocError::Failed(format!("bad ready line {ready:?}: {e}")))?;
            address.udp_port = parsed.udp_port.unwrap_or(port);
            address.ws_url = parsed.ws_url;
        }
        // Keep draining its output so the process never blocks on a full pipe.
        let id = instance_id.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(instance_id = %id, %line, "instance output");
            }
        });
        tracing::info!(instance_id, port = address.udp_port, "instance process ready");
        Ok(Ready { allocation: Allocation { instance_id: instance_id.to_owned(), address }, port, child, stdin })
    }
}

impl Allocator for ProcessSpawner {
    fn name(&self) -> &'static str {
        "process"
    }

    fn allocate<'a>(&'a self, spec: &'a MatchSpec) -> BoxFuture<'a, Result<Allocation, AllocError>> {
        Box::pin(async move {
            let warm = loop {
                let next = self.inner.lock().idle.pop();
                match next {
                    Some(mut r) => {
                        if matches!(r.child.try_wait(), Ok(None)) {
                            break Some(r);
                        }
                        // It died while waiting: forget it and its port.
                        self.inner.lock().ports.remove(&r.port);
                    }
                    None => break None,
                }
            };
            let mut ready = match warm {
                Some(r) => r,
                None => {
                    let slot = self.inner.reserve().ok_or(AllocError::NoCapacity)?;
                    self.inner.launch(slot).await?
                }
            };
            let mut line = serde_json::to_vec(spec).map_err(|e| AllocError::Failed(e.to_string()))?;
            line.push(b'\n');
            if let Err(e) = ready.stdin.write_all(&line).await {
                self.inner.lock().ports.remove(&ready.port);
                self.refill();
                return Err(AllocError::Failed(format!("cannot hand the match to the instance: {e}")));
            }
            let allocation = ready.allocation.clone();
            // Closing stdin would tell a one-match process nothing more is coming; it keeps it.
            self.inner.lock().busy.insert(allocation.instance_id.clone(), (ready.child, ready.port));
            self.refill();
            Ok(allocation)
        })
    }

    fn release<'a>(&'a self, _match_id: Uuid, instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some((mut child, port)) = self.inner.lock().busy.remove(instance_id) else { return };
            let grace = Duration::from_millis(self.inner.config.exit_grace_ms);
            let inner = Arc::clone(&self.inner);
            let spawner = self.clone();
            let id = instance_id.to_owned();
            tokio::spawn(async move {
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    tracing::warn!(instance_id = %id, "instance did not exit after its match, killing it");
                    let _ = child.kill().await;
                }
                // Its port is free again only once the process is gone.
                inner.lock().ports.remove(&port);
                spawner.refill();
            });
        })
    }
}
