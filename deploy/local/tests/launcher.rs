//! The launcher binary as a user runs it: it starts on embedded defaults in a fresh data
//! directory, serves the REST contract end to end, stops cleanly on SIGTERM, and refuses bad
//! config with one line and exit code 64.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Launcher {
    child: Child,
    login: String,
    admin: String,
    data_dir: std::path::PathBuf,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn launch() -> Launcher {
    let data_dir = std::env::temp_dir().join(format!("tavern-launcher-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tavern"));
    // The launcher reads every TAVERN_* variable as config; only this test's settings apply here.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TAVERN_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .args(["--set", &format!("data_dir=\"{}\"", data_dir.display())])
        .args(["--set", "login_port=0", "--set", "token_port=0", "--set", "admin_port=0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("launcher starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut login, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while login.is_none() || admin.is_none() {
        assert!(Instant::now() < deadline, "launcher did not print its addresses in time");
        let line = lines.next().expect("launcher printed its addresses before exiting").expect("utf-8 line");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned);
        if line.contains("login REST API") {
            login = url;
        } else if line.contains("metrics, health") {
            admin = url.map(|u| u.trim_end_matches("/metrics").to_owned());
        }
    }
    // Keep draining stdout so the launcher never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Launcher { child, login: login.expect("login url"), admin: admin.expect("admin url"), data_dir }
}

async fn post(http: &reqwest::Client, url: String, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
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

async fn get(http: &reqwest::Client, url: String, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request reaches the launcher");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn serves_the_rest_contract_and_stops_on_sigterm() {
    let mut l = launch();
    let http = reqwest::Client::new();
    let v1 = l.login.clone();
    let creds = json!({"username": "alice", "password": "correct horse"});

    let (st, reg) = post(&http, format!("{v1}/auth/register"), None, Some(creds.clone())).await;
    assert_eq!(st, 201, "{reg}");
    let (st, login) = post(&http, format!("{v1}/auth/login"), None, Some(creds)).await;
    assert_eq!(st, 200, "{login}");
    let session = login["session_token"].as_str().expect("session token").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh token").to_owned();
    let (st, acct) = get(&http, format!("{v1}/account"), Some(&session)).await;
    assert_eq!((st, acct["username"].as_str()), (200, Some("alice")), "{acct}");

    let (st, pair) = post(&http, format!("{v1}/auth/refresh"), None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(st, 200, "{pair}");
    let (st, err) = post(&http, format!("{v1}/auth/refresh"), None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!((st, err["error"].as_str()), (401, Some("refresh_token_reused")), "{err}");

    // Reuse revoked that session; a fresh login then logs out, and its token fails after.
    let (st, err) = get(&http, format!("{v1}/account"), Some(&session)).await;
    assert_eq!((st, err["error"].as_str()), (401, Some("token_revoked")), "{err}");
    let (_, login2) = post(&http, format!("{v1}/auth/login"), None, Some(json!({"username": "alice", "password": "correct horse"}))).await;
    let session2 = login2["session_token"].as_str().expect("session token").to_owned();
    let (st, _) = post(&http, format!("{v1}/auth/logout"), Some(&session2), None).await;
    assert_eq!(st, 204);
    let (st, err) = get(&http, format!("{v1}/account"), Some(&session2)).await;
    assert_eq!((st, err["code"].as_u64()), (401, Some(2003)), "{err}");

    let (st, ready) = get(&http, format!("{}/readyz", l.admin), None).await;
    assert_eq!(st, 200, "{ready}");
    let metrics = http.get(format!("{}/metrics", l.admin)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("tavern_login_logins_total"), "{metrics}");
    assert!(l.data_dir.join("tavern.db").exists() && l.data_dir.join("token-keys.json").exists());

    let pid = l.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = l.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "launcher did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_config_exits_64_with_one_line() {
    for args in [vec!["--set", "login_port=99999"], vec!["--set", "no_such_key=1"], vec!["--config", "/nonexistent/tavern.toml"]] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tavern"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TAVERN_")) {
            cmd.env_remove(k);
        }
        let out = cmd.args(&args).output().expect("launcher runs");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.starts_with("tavern: bad configuration:"), "{err}");
    }
}
