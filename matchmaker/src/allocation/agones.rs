//! The Agones allocator (feature `agones`): one `GameServerAllocation` per match, created
//! through the Kubernetes API at
//! `POST {api_url}/apis/allocation.agones.dev/v1/namespaces/{namespace}/gameserverallocations`.
//!
//! The request selects a `Ready` game server of the configured fleet and stamps the match id on
//! it as a label and an annotation (`tavern.dev/match-id`), so the instance reads its match from
//! its own `GameServer` object and operators can find a match's server with a label selector.
//!
//! Answers: `status.state` `Allocated` gives the server's name, address and ports;
//! `UnAllocated` means no ready server ([`AllocError::NoCapacity`]); `Contention` or HTTP 409
//! means another allocator won the race for the candidate, retried a few times with a short
//! pause before it is reported as [`AllocError::Contention`]. Any other status is
//! [`AllocError::Failed`]. Every failure re-queues the match.
//!
//! This speaks the API with a plain HTTP client (reqwest) and a bearer token rather than
//! kube-rs: one POST and one JSON shape do not need a Kubernetes client stack, whose build cost on
//! this workspace's shared machines is large. In a cluster the API is HTTPS; until the
//! workspace's reqwest gets a TLS feature the matchmaker reaches it through a `kubectl proxy`
//! sidecar on loopback (`api_url = "http://127.0.0.1:8001"`, which also supplies credentials).

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{AllocError, Allocation, Allocator, InstanceAddr, MatchSpec};

/// The label and annotation that carry the match id.
pub const MATCH_ID_KEY: &str = "tavern.dev/match-id";

/// How to reach the Kubernetes API and which fleet to allocate from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgonesConfig {
    /// The API server (or a `kubectl proxy`), without a trailing slash.
    pub api_url: String,
    pub namespace: String,
    /// The fleet whose `Ready` game servers are allocated.
    pub fleet: String,
    /// A file holding a bearer token (the pod's service account token); none with a proxy.
    pub token_file: Option<PathBuf>,
    /// The game server port players reach over ENet/DTLS.
    pub udp_port_name: String,
    /// The port of the WebSocket listener, if the game servers expose one.
    pub ws_port_name: Option<String>,
    /// Retries after contention before giving up.
    pub contention_retries: u32,
    pub timeout_ms: u64,
}

impl Default for AgonesConfig {
    fn default() -> Self {
        AgonesConfig {
            api_url: "http://127.0.0.1:8001".into(),
            namespace: "default".into(),
            fleet: "tavern-instances".into(),
            token_file: None,
            udp_port_name: "default".into(),
            ws_port_name: Some("ws".into()),
            contention_retries: 3,
            timeout_ms: 5_000,
        }
    }
}

/// Allocates Agones game servers.
#[derive(Debug)]
pub struct Agones {
    config: AgonesConfig,
    client: reqwest::Client,
    url: String,
}

/// The part of a `GameServerAllocation` answer the matchmaker reads.
#[derive(Debug, Deserialize)]
struct AllocationAnswer {
    #[serde(default)]
    status: Option<AnswerStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerStatus {
    state: String,
    #[serde(default)]
    game_server_name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    ports: Vec<AnswerPort>,
}

#[derive(Debug, Deserialize)]
struct AnswerPort {
    name: String,
    port: u16,
}

impl Agones {
    pub fn new(config: AgonesConfig) -> Result<Agones, AllocError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .build()
            .map_err(|e| AllocError::Failed(format!("http client: {e}")))?;
        let url = format!(
            "{}/apis/allocation.agones.dev/v1/namespaces/{}/gameserverallocations",
            config.api_url.trim_end_matches('/'),
            config.namespace
        );
        Ok(Agones { config, client, url })
    }

    /// The body of the allocation request for `spec`.
    pub fn request_body(&self, spec: &MatchSpec) -> serde_json::Value {
        let match_id = spec.match_id.to_string();
        json!({
            "apiVersion": "allocation.agones.dev/v1",
            "kind": "GameServerAllocation",
            "metadata": { "namespace": self.config.namespace },
            "spec": {
                "selectors": [{ "matchLabels": { "agones.dev/fleet": self.config.fleet } }],
                "metadata": {
                    "labels": { MATCH_ID_KEY: match_id },
                    "annotations": {
                        MATCH_ID_KEY: match_id,
                        "tavern.dev/mode": spec.mode,
                        "tavern.dev/region": spec.region,
                    }
                }
            }
        })
    }

    async fn attempt(&self, body: &serde_json::Value) -> Result<Allocation, AllocError> {
        let mut request = self.client.post(&self.url).json(body);
        if let Some(path) = &self.config.token_file {
            // Re-read each time: service account tokens are rotated on disk.
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| AllocError::Failed(format!("token file {}: {e}", path.display())))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.map_err(|e| AllocError::Failed(format!("kubernetes api: {e}")))?;
        let status = response.status();
        if status.as_u16() == 409 {
            return Err(AllocError::Contention);
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            return Err(AllocError::Failed(format!("kubernetes api answered {status}: {text}")));
        }
        let answer: AllocationAnswer =
            response.json().await.map_err(|e| AllocError::Failed(format!("bad allocation answer: {e}")))?;
        let status = answer.status.ok_or_else(|| AllocError::Failed("allocation answer has no status".into()))?;
        match status.state.as_str() {
            "Allocated" => {
                let port = |name: &str| status.ports.iter().find(|p| p.name == name).map(|p| p.port);
                let udp_port = port(&self.config.udp_port_name)
                    .or_else(|| status.ports.first().map(|p| p.port))
                    .ok_or_else(|| AllocError::Failed("allocated game server has no port".into()))?;
                if status.game_server_name.is_empty() || status.address.is_empty() {
                    return Err(AllocError::Failed("allocated game server has no name or address".into()));
                }
                let ws_url = self
                    .config
                    .ws_port_name
                    .as_deref()
                    .and_then(port)
                    .map(|p| format!("wss://{}:{p}/ws", status.address));
                Ok(Allocation {
                    instance_id: status.game_server_name,
                    address: InstanceAddr { host: status.address, udp_port, ws_url },
                })
            }
            "UnAllocated" => Err(AllocError::NoCapacity),
            "Contention" => Err(AllocError::Contention),
            other => Err(AllocError::Failed(format!("unknown allocation state {other:?}"))),
        }
    }
}

impl Allocator for Agones {
    fn name(&self) -> &'static str {
        "agones"
    }

    fn allocate<'a>(&'a self, spec: &'a MatchSpec) -> BoxFuture<'a, Result<Allocation, AllocError>> {
        Box::pin(async move {
            let body = self.request_body(spec);
            let mut retries = 0;
            loop {
                match self.attempt(&body).await {
                    Err(AllocError::Contention) if retries < self.config.contention_retries => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(20 * u64::from(retries))).await;
                    }
                    other => return other,
                }
            }
        })
    }
}
