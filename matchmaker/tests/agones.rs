//! The Agones allocator against a local HTTP server that answers as the Kubernetes API does:
//! allocated, unallocated (no capacity), contention (HTTP 409, retried), and errors. Built only
//! with `--features agones`.
#![cfg(feature = "agones")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use matchmaker::allocation::agones::{Agones, AgonesConfig, MATCH_ID_KEY};
use matchmaker::allocation::{AllocError, Allocator, MatchSpec};
use serde_json::{Value, json};
use uuid::Uuid;

/// One scripted answer: an HTTP status and a body.
type Reply = (u16, Value);

#[derive(Default)]
struct Fake {
    replies: Mutex<VecDeque<Reply>>,
    /// Every request seen: namespace, authorization header, body.
    seen: Mutex<Vec<(String, Option<String>, Value)>>,
}

async fn allocate(
    State(fake): State<Arc<Fake>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    fake.seen.lock().expect("test lock").push((ns, auth, body));
    let (status, body) = fake.replies.lock().expect("test lock").pop_front().unwrap_or((500, json!({})));
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body))
}

async fn fake_api(replies: Vec<Reply>) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake { replies: Mutex::new(replies.into()), ..Fake::default() });
    let app = axum::Router::new()
        .route("/apis/allocation.agones.dev/v1/namespaces/{ns}/gameserverallocations", post(allocate))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, url)
}

fn allocated(name: &str) -> Reply {
    (
        201,
        json!({
            "apiVersion": "allocation.agones.dev/v1",
            "kind": "GameServerAllocation",
            "status": {
                "state": "Allocated",
                "gameServerName": name,
                "address": "10.0.0.7",
                "nodeName": "node-1",
                "ports": [{ "name": "default", "port": 7654 }, { "name": "ws", "port": 7655 }]
            }
        }),
    )
}

fn state(s: &str) -> Reply {
    (201, json!({ "status": { "state": s } }))
}

fn conflict() -> Reply {
    (409, json!({ "kind": "Status", "status": "Failure", "reason": "Conflict", "code": 409 }))
}

fn spec() -> MatchSpec {
    MatchSpec {
        match_id: Uuid::new_v4(),
        mode: "duel".into(),
        region: "eu".into(),
        teams: [vec![Uuid::new_v4()], vec![Uuid::new_v4()]],
        created_at_ms: 0,
    }
}

fn agones(url: String, token_file: Option<std::path::PathBuf>) -> Agones {
    Agones::new(AgonesConfig { api_url: url, namespace: "games".into(), token_file, ..AgonesConfig::default() })
        .expect("client")
}

#[tokio::test]
async fn an_allocated_server_is_returned_with_the_match_id_stamped() {
    let token = std::env::temp_dir().join(format!("tavern-agones-token-{}", Uuid::new_v4()));
    std::fs::write(&token, "sa-token\n").expect("write token file");
    let (fake, url) = fake_api(vec![allocated("tavern-instances-abc12")]).await;
    let s = spec();
    let a = agones(url, Some(token.clone())).allocate(&s).await.expect("allocated");
    assert_eq!(a.instance_id, "tavern-instances-abc12");
    assert_eq!((a.address.host.as_str(), a.address.udp_port), ("10.0.0.7", 7654));
    assert_eq!(a.address.ws_url.as_deref(), Some("wss://10.0.0.7:7655/ws"));
    let seen = fake.seen.lock().expect("test lock");
    let (ns, auth, body) = &seen[0];
    assert_eq!(ns, "games");
    assert_eq!(auth.as_deref(), Some("Bearer sa-token"));
    assert_eq!(body["kind"], "GameServerAllocation");
    assert_eq!(body["spec"]["selectors"][0]["matchLabels"]["agones.dev/fleet"], "tavern-instances");
    assert_eq!(body["spec"]["metadata"]["labels"][MATCH_ID_KEY], s.match_id.to_string());
    assert_eq!(body["spec"]["metadata"]["annotations"][MATCH_ID_KEY], s.match_id.to_string());
    let _ = std::fs::remove_file(token);
}

#[tokio::test]
async fn unallocated_is_no_capacity() {
    let (_fake, url) = fake_api(vec![state("UnAllocated")]).await;
    assert_eq!(agones(url, None).allocate(&spec()).await, Err(AllocError::NoCapacity));
}

#[tokio::test]
async fn contention_is_retried_then_reported() {
    // Two conflicts, then a server: the allocator retries through them.
    let (fake, url) = fake_api(vec![conflict(), state("Contention"), allocated("gs-2")]).await;
    let a = agones(url, None).allocate(&spec()).await.expect("allocated after retries");
    assert_eq!(a.instance_id, "gs-2");
    assert_eq!(fake.seen.lock().expect("test lock").len(), 3);

    // Contention on every try: reported after the configured retries (3), four requests in all.
    let (fake, url) = fake_api(vec![conflict(), conflict(), conflict(), conflict(), allocated("never")]).await;
    assert_eq!(agones(url, None).allocate(&spec()).await, Err(AllocError::Contention));
    assert_eq!(fake.seen.lock().expect("test lock").len(), 4);
}

#[tokio::test]
async fn api_errors_and_bad_answers_are_failures() {
    for reply in [(403, json!({ "kind": "Status", "code": 403 })), state("Bogus"), (201, json!({}))] {
        let (_fake, url) = fake_api(vec![reply.clone()]).await;
        assert!(
            matches!(agones(url, None).allocate(&spec()).await, Err(AllocError::Failed(_))),
            "{reply:?} should fail"
        );
    }
    // Nothing listening at all.
    let a = agones("http://127.0.0.1:9".into(), None);
    assert!(matches!(a.allocate(&spec()).await, Err(AllocError::Failed(_))));
}
