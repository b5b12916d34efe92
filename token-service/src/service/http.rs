//! The HTTP API for trusted services: mint, introspect and revoke session tokens, mint join
//! tokens. Every `/v1` route needs `Authorization: Bearer <service token>`, compared in constant
//! time; every error is a JSON `{code, error, message}`.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/tokens/session` | `{user_id, username, session_id?, with_refresh?}` | `{token, expires_at_ms, session_id, refresh_token?}` |
//! | `POST /v1/tokens/introspect` | `{token}` | `{active: true, user_id, username, session_id, issued_at_s, expires_at_s, kid}` or `{active: false, code, error}` |
//! | `POST /v1/tokens/revoke` | `{user_id, session_id}` or `{user_id, all: true}` | `{revoked: "session" \| "user"}` |
//! | `POST /v1/tokens/join` | `{match_id, user_id, instance_id}` | `{token, expires_at_ms}` |
//! | `GET /healthz`, `/readyz`, `/metrics` | | no bearer needed |

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::admin::Admin;
use service_runtime::api::{
    ApiError, ApiJson, ServiceToken, method_not_allowed, not_found, panic_response, require_service_token,
};
use service_runtime::now_ms;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use super::config::MIN_SERVICE_TOKEN_LEN;
use crate::{TokenError, Tokens};

/// The longest username accepted in a mint request.
const MAX_USERNAME_LEN: usize = 64;

/// What the HTTP handlers share. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: Tokens,
    /// The service token's digest, compared in constant time by the shared service-token gate.
    service_token: ServiceToken,
    admin: Admin,
    body_limit_bytes: usize,
}

impl HttpState {
    /// State for `tokens`, trusting bearers of `service_token` (at least 16 characters). The
    /// admin routes of the result report nothing until [`HttpState::with_admin`].
    pub fn new(tokens: Tokens, service_token: &str) -> Result<HttpState, TokenError> {
        if service_token.len() < MIN_SERVICE_TOKEN_LEN {
            return Err(TokenError::InvalidInput {
                field: "service_token",
                reason: format!("must be at least {MIN_SERVICE_TOKEN_LEN} characters"),
            });
        }
        Ok(HttpState {
            inner: Arc::new(Inner {
                tokens,
                service_token: ServiceToken::digest(service_token),
                admin: Admin::default(),
                body_limit_bytes: 16 * 1024,
            }),
        })
    }

    /// Serves `admin`'s `/metrics`, `/healthz` and `/readyz` beside the API.
    pub fn with_admin(self, admin: Admin) -> HttpState {
        self.map(|i| i.admin = admin)
    }

    /// Sets the largest request body accepted (default 16 KiB).
    pub fn with_body_limit(self, bytes: usize) -> HttpState {
        self.map(|i| i.body_limit_bytes = bytes)
    }

    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The admin endpoints, to serve on their own port too.
    pub fn admin(&self) -> Admin {
        self.inner.admin.clone()
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> HttpState {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            tokens: shared.tokens.clone(),
            service_token: shared.service_token,
            admin: shared.admin.clone(),
            body_limit_bytes: shared.body_limit_bytes,
        });
        f(&mut inner);
        HttpState { inner: Arc::new(inner) }
    }
}

/// The API routes, the admin routes, JSON fallbacks, a body limit, request spans and metrics.
pub fn router(state: HttpState) -> Router {
    let api = Router::new()
        .route("/v1/tokens/session", post(mint_session))
        .route("/v1/tokens/introspect", post(introspect))
        .route("/v1/tokens/revoke", post(revoke))
        .route("/v1/tokens/join", post(mint_join))
        .route_layer(middleware::from_fn_with_state(state.inner.service_token, require_service_token))
        .with_state(state.clone());
    Router::new()
        .merge(api)
        .merge(state.admin().router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.inner.body_limit_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_response))
}

/// Serves [`router`] on `listener` until `shutdown` fires, then drains in-flight requests.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// The answer to a [`TokenError`]: its code with its message, or a logged internal error.
pub fn api_error(e: TokenError) -> ApiError {
    match e.code() {
        ErrorCode::Internal => ApiError::internal(e),
        ErrorCode::UserNotFound => ApiError::new(ErrorCode::UserNotFound),
        ErrorCode::Unavailable => {
            tracing::warn!(error = %e, "dependency unavailable");
            ApiError::new(ErrorCode::Unavailable)
        }
        code => ApiError::msg(code, e.to_string()),
    }
}

async fn track(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.inner.tokens.metrics();
    m.http_requests.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
    m.http_duration.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintSessionRequest {
    user_id: Uuid,
    username: String,
    /// A new session id is generated when absent.
    session_id: Option<Uuid>,
    /// Also start a refresh family (the user must exist in `users`).
    #[serde(default)]
    with_refresh: bool,
}

#[derive(Serialize)]
struct MintSessionResponse {
    token: String,
    expires_at_ms: i64,
    session_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

async fn mint_session(
    State(state): State<HttpState>,
    ApiJson(req): ApiJson<MintSessionRequest>,
) -> Result<ApiJson<MintSessionResponse>, ApiError> {
    if req.username.is_empty() || req.username.chars().count() > MAX_USERNAME_LEN {
        return Err(ApiError::msg(
            ErrorCode::InvalidField,
            format!("username must be 1 to {MAX_USERNAME_LEN} characters"),
        ));
    }
    let now = now_ms();
    let session_id = req.session_id.unwrap_or_else(Uuid::new_v4);
    let tokens = state.tokens();
    let minted = tokens.mint_session(req.user_id, &req.username, session_id, now).map_err(api_error)?;
    let refresh_token = if req.with_refresh {
        Some(tokens.issue_refresh(req.user_id, session_id, now).await.map_err(api_error)?)
    } else {
        None
    };
    Ok(ApiJson(MintSessionResponse { token: minted.token, expires_at_ms: minted.expires_at_ms, session_id, refresh_token }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntrospectRequest {
    token: String,
}

#[derive(Serialize, Default)]
struct IntrospectResponse {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    /// Why the token is not active: the stable code and its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

async fn introspect(
    State(state): State<HttpState>,
    ApiJson(req): ApiJson<IntrospectRequest>,
) -> ApiJson<IntrospectResponse> {
    ApiJson(match state.tokens().verify_session(&req.token, now_ms()) {
        Ok(c) => IntrospectResponse {
            active: true,
            user_id: Some(c.user_id),
            username: Some(c.username),
            session_id: Some(c.session_id),
            issued_at_s: Some(c.issued_at_s),
            expires_at_s: Some(c.expires_at_s),
            kid: Some(c.kid),
            ..IntrospectResponse::default()
        },
        Err(e) => {
            let code = e.code();
            IntrospectResponse { active: false, code: Some(code.code()), error: Some(code.name()), ..Default::default() }
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    user_id: Uuid,
    session_id: Option<Uuid>,
    #[serde(default)]
    all: bool,
}

#[derive(Serialize)]
struct RevokeResponse {
    revoked: &'static str,
}

async fn revoke(
    State(state): State<HttpState>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<ApiJson<RevokeResponse>, ApiError> {
    let now = now_ms();
    let tokens = state.tokens();
    match (req.session_id, req.all) {
        (Some(session_id), false) => {
            tokens.revoke_session(req.user_id, session_id, now).await.map_err(api_error)?;
            Ok(ApiJson(RevokeResponse { revoked: "session" }))
        }
        (None, true) => {
            tokens.revoke_user(req.user_id, now).await.map_err(api_error)?;
            Ok(ApiJson(RevokeResponse { revoked: "user" }))
        }
        (Some(_), true) => Err(ApiError::msg(ErrorCode::InvalidField, "give session_id or all=true, not both")),
        (None, false) => Err(ApiError::msg(ErrorCode::InvalidField, "give session_id, or all=true to revoke every session")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    match_id: Uuid,
    user_id: Uuid,
    instance_id: String,
}

#[derive(Serialize)]
struct JoinResponse {
    token: String,
    expires_at_ms: i64,
}

async fn mint_join(
    State(state): State<HttpState>,
    ApiJson(req): ApiJson<JoinRequest>,
) -> Result<ApiJson<JoinResponse>, ApiError> {
    let now = now_ms();
    let tokens = state.tokens();
    let token = tokens.mint_join(req.match_id, req.user_id, &req.instance_id, now).map_err(api_error)?;
    Ok(ApiJson(JoinResponse { token, expires_at_ms: now.saturating_add(tokens.join_issuer().ttl_ms()) }))
}
