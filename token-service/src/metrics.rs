//! Every metric of the token library and service, declared in one place. Names follow
//! `tavern_token_<noun>_<unit>`; labels are closed sets (kinds, reasons, routes).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The collectors. Cloning shares them, so a [`crate::Tokens`], its verifiers and the HTTP
/// service can count into the same series.
#[derive(Clone)]
pub struct TokenMetrics {
    /// `tavern_token_minted_total{kind=session|refresh|join}`.
    pub minted: IntCounterVec,
    /// `tavern_token_verified_total{kind=session|join}`: tokens accepted.
    pub verified: IntCounterVec,
    /// `tavern_token_verify_failures_total{kind, reason}`: tokens refused, by
    /// [`crate::TokenError::reason`].
    pub verify_failures: IntCounterVec,
    /// `tavern_token_refresh_rotations_total{outcome=ok|reused|invalid|error}`.
    pub refresh_rotations: IntCounterVec,
    /// `tavern_token_revocations_total{scope=session|user}`.
    pub revocations: IntCounterVec,
    /// `tavern_token_join_nonces`: nonces join verifiers remember now.
    pub join_nonces: IntGauge,
    /// `tavern_token_http_requests_total{route, status}`.
    pub http_requests: IntCounterVec,
    /// `tavern_token_http_request_duration_seconds{route}`.
    pub http_duration: HistogramVec,
}

impl Default for TokenMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenMetrics {
    /// Fresh, unregistered collectors.
    pub fn new() -> TokenMetrics {
        // The names and label sets below are static and valid, so construction cannot fail.
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        TokenMetrics {
            minted: counter("tavern_token_minted_total", "Tokens minted, by kind", &["kind"]),
            verified: counter("tavern_token_verified_total", "Tokens accepted, by kind", &["kind"]),
            verify_failures: counter(
                "tavern_token_verify_failures_total",
                "Tokens refused, by kind and reason",
                &["kind", "reason"],
            ),
            refresh_rotations: counter(
                "tavern_token_refresh_rotations_total",
                "Refresh token rotations, by outcome",
                &["outcome"],
            ),
            revocations: counter("tavern_token_revocations_total", "Revocations written, by scope", &["scope"]),
            join_nonces: IntGauge::new("tavern_token_join_nonces", "Join token nonces remembered against replay")
                .expect("static metric definition"),
            http_requests: counter(
                "tavern_token_http_requests_total",
                "Token service HTTP requests, by route and status",
                &["route", "status"],
            ),
            http_duration: HistogramVec::new(
                HistogramOpts::new("tavern_token_http_request_duration_seconds", "Token service HTTP request time")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
                &["route"],
            )
            .expect("static metric definition"),
        }
    }

    /// Registers every collector in `registry`. Idempotent: a collector already registered
    /// there (by an earlier call with these metrics or a clone of them) is skipped, so the
    /// all-in-one launcher can hand one registry to every part.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let collectors: [Box<dyn prometheus::core::Collector>; 8] = [
            Box::new(self.minted.clone()),
            Box::new(self.verified.clone()),
            Box::new(self.verify_failures.clone()),
            Box::new(self.refresh_rotations.clone()),
            Box::new(self.revocations.clone()),
            Box::new(self.join_nonces.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.http_duration.clone()),
        ];
        for c in collectors {
            match registry.register(c) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
