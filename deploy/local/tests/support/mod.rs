//! The launcher as tests run it: the `tavern` binary in a fresh data directory with every port
//! chosen by the system, its printed addresses, SIGTERM, and small REST helpers.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any single wait on the launcher may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// Every service line the launcher prints: its label, then its address.
pub const SERVICES: [&str; 8] = [
    "login REST API",
    "token service",
    "metrics, health",
    "matchmaker link",
    "gcs enet/dtls",
    "gcs websocket",
    "instance enet/dtls",
    "instance websocket",
];

pub struct Launcher {
    pub child: Child,
    pub login: String,
    pub admin: String,
    /// Each service's printed address (the first word with a `scheme://`), by label.
    pub addresses: HashMap<&'static str, String>,
    pub data_dir: std::path::PathBuf,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn launch(name: &str) -> Launcher {
    let data_dir = std::env::temp_dir().join(format!("tavern-launcher-{}-{name}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tavern"));
    // The launcher reads every TAVERN_* variable as config; only this test's settings apply here.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TAVERN_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .args(["--set", &format!("data_dir=\"{}\"", data_dir.display())])
        .args(["--set", "login_port=0", "--set", "token_port=0", "--set", "admin_port=0"])
        .args(["--set", "matchmaker_port=0", "--set", "gcs_udp_port=0", "--set", "gcs_ws_port=0"])
        .args(["--set", "instance_udp_port=0", "--set", "instance_ws_port=0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("launcher starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = BufReader::new(stdout).lines();
    // Read on a thread so a launcher that hangs without printing cannot hang the test.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            // Keep draining stdout after the test stops listening, so the launcher never blocks.
            let _ = tx.send(line);
        }
    });
    let mut addresses = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while addresses.len() < SERVICES.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("launcher printed every address within 60 s");
        let Some(label) = SERVICES.iter().find(|l| line.trim_start().starts_with(**l)) else { continue };
        let url = line.split_whitespace().find(|w| w.contains("://")).expect("an address on the line");
        addresses.insert(*label, url.to_owned());
    }
    let login = addresses["login REST API"].clone();
    let admin = addresses["metrics, health"].trim_end_matches("/metrics").to_owned();
    Launcher { child, login, admin, addresses, data_dir }
}

impl Launcher {
    /// SIGTERM, then the exit status, which must come within 20 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "launcher did not stop within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub async fn post(http: &reqwest::Client, url: String, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = http.post(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request reaches the launcher");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn get(http: &reqwest::Client, url: String, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request reaches the launcher");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

