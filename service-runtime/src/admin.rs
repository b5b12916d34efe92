//! The admin endpoints of a service: `/metrics` (Prometheus text), `/healthz` (the process is
//! alive) and `/readyz` (every dependency answers).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One readiness check: resolves to `Err(reason)` when a dependency is not usable.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What the admin endpoints report on.
#[derive(Clone, Default)]
pub struct Admin {
    registry: Registry,
    checks: Vec<(String, ReadyCheck)>,
}

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Admin {
    pub fn new(registry: Registry) -> Self {
        Self { registry, checks: Vec::new() }
    }

    /// The registry services register their metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds a named readiness check.
    pub fn check(mut self, name: &str, check: ReadyCheck) -> Self {
        self.checks.push((name.to_owned(), check));
        self
    }

    /// The admin routes, to serve on their own port or merge into another router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(Arc::new(self))
    }

    /// Serves the admin routes on `listener` until `shutdown` fires.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&admin.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    let mut failures = serde_json::Map::new();
    for (name, check) in &admin.checks {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_owned()),
        };
        if let Err(reason) = outcome {
            failures.insert(name.clone(), reason.into());
        }
    }
    if failures.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        let body = serde_json::json!({ "status": "not_ready", "failing": failures });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_status(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).expect("static request"))
            .await
            .expect("infallible service");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_reports_failing_checks() {
        let ok: ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
        let bad: ReadyCheck = Arc::new(|| Box::pin(async { Err("db down".to_owned()) }));
        let admin = Admin::new(Registry::new()).check("ok", ok.clone());
        assert_eq!(get_status(admin.router(), "/readyz").await.0, StatusCode::OK);
        let admin = Admin::new(Registry::new()).check("ok", ok).check("db", bad);
        let (status, body) = get_status(admin.router(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("db down"), "{body}");
    }

    #[tokio::test]
    async fn metrics_exposes_registered_counters() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("tavern_test_things_total", "things").expect("valid metric");
        registry.register(Box::new(c.clone())).expect("first registration");
        c.inc();
        let (status, body) = get_status(Admin::new(registry).router(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("tavern_test_things_total 1"), "{body}");
        assert_eq!(get_status(Admin::default().router(), "/healthz").await.0, StatusCode::OK);
    }
}
