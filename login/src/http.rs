//! Request plumbing shared by the handlers: the client address, per-IP rate limiting, and the
//! bearer-token extractor.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;
use service_runtime::api::{ApiError, ServiceAuth};
use token_service::SessionClaims;

use crate::AppState;

/// The address a request came from: the socket peer, or the last `X-Forwarded-For` hop when the
/// service is configured to sit behind a trusted proxy.
pub fn client_ip(parts_ext: &axum::http::Extensions, headers: &HeaderMap, trust_forwarded: bool) -> IpAddr {
    if trust_forwarded {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The client address as an extractor.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        Ok(ClientIp(client_ip(&parts.extensions, &parts.headers, state.config.trust_forwarded_for)))
    }
}

/// Refuses a request once its address has spent its request budget.
///
/// A request to `/internal/` that presents the service token is exempt: a trusted service calls
/// from one address far more often than a player. Anything else there (no token, a wrong one)
/// spends the address's budget like any request, so guessing is throttled.
pub async fn rate_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/internal/")
        && state.service_token.auth(req.headers()) == ServiceAuth::Trusted
    {
        return next.run(req).await;
    }
    let ip = client_ip(req.extensions(), req.headers(), state.config.trust_forwarded_for);
    let now = Instant::now();
    let auth_route = req.uri().path().starts_with("/v1/auth/");
    let mut verdict = state.ip_limiter.check(&ip, now);
    if verdict.is_ok() && auth_route {
        verdict = state.auth_limiter.check(&ip, now);
    }
    match verdict {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            state.metrics.limited.with_label_values(&[if auth_route { "auth_ip" } else { "ip" }]).inc();
            ApiError::new(ErrorCode::RateLimited).retry_after(wait.as_secs() + 1).into_response()
        }
    }
}

/// The verified claims of the request's `Authorization: Bearer <session token>`, counted against
/// the user's request budget.
pub struct Auth(pub SessionClaims);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::msg(ErrorCode::Unauthenticated, "expected 'Authorization: Bearer <token>'"))?;
        let claims = state
            .tokens
            .verify_session(token, service_runtime::now_ms())
            .map_err(|e| ApiError::new(e.code()))?;
        if let Err(wait) = state.user_limiter.check(&claims.user_id, Instant::now()) {
            state.metrics.limited.with_label_values(&["user"]).inc();
            return Err(ApiError::new(ErrorCode::RateLimited).retry_after(wait.as_secs() + 1));
        }
        Ok(Auth(claims))
    }
}
