//! `/internal/v1`: the API for trusted services. The GCS needs users' friends and blocks for
//! presence, friend pushes and chat, but `users`, `friendships` and `blocks` belong to login, so
//! it asks here instead of reading the tables.
//!
//! Every route needs `Authorization: Bearer <service token>` (login's `service_token`, compared
//! in constant time as SHA-256 digests). Without a configured token every route answers
//! `forbidden`. These routes are deliberately absent from the OpenAPI document: they are not part
//! of the public contract and may change with the GCS.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /internal/v1/users/{user_id}/social` | | `{user_id, username, friends: [{user_id, username}], blocked: [id], blocked_by: [id]}`, or `user_not_found` |
//! | `POST /internal/v1/users/lookup` | `{user_ids: [id]}` (at most [`MAX_LOOKUP`]) | `{users: [{user_id, username}]}`, unknown ids left out |

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::api::{ApiError, ApiJson};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::AppState;

/// The shortest service token accepted, as for the token service.
pub const MIN_SERVICE_TOKEN_LEN: usize = 16;

/// The most ids one lookup may name.
pub const MAX_LOOKUP: usize = 256;

/// A user named by id, with the username to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserName {
    pub user_id: Uuid,
    pub username: String,
}

/// `GET /internal/v1/users/{user_id}/social`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocialResponse {
    pub user_id: Uuid,
    pub username: String,
    /// Accepted friends, ordered by name; pending requests are not listed.
    pub friends: Vec<UserName>,
    /// Users this user blocked.
    pub blocked: Vec<Uuid>,
    /// Users who blocked this user.
    pub blocked_by: Vec<Uuid>,
}

/// `POST /internal/v1/users/lookup`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub user_ids: Vec<Uuid>,
}

/// The answer to [`LookupRequest`]: every known id once, in no particular order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LookupResponse {
    pub users: Vec<UserName>,
}

/// How a request stands towards the service token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceAuth {
    /// No service token is configured: the internal API is off.
    Disabled,
    /// No bearer token was presented.
    Missing,
    /// A bearer token was presented and it is not the service token.
    Wrong,
    Trusted,
}

/// Digests the configured service token; `None` (internal API off) when unset or empty, an error
/// when set but shorter than [`MIN_SERVICE_TOKEN_LEN`].
pub fn service_token_hash(token: Option<&str>) -> anyhow::Result<Option<[u8; 32]>> {
    match token.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) if t.len() < MIN_SERVICE_TOKEN_LEN => {
            anyhow::bail!("service_token must be at least {MIN_SERVICE_TOKEN_LEN} characters")
        }
        Some(t) => Ok(Some(Sha256::digest(t.as_bytes()).into())),
    }
}

/// Checks the request's `Authorization: Bearer …` against the service token in constant time
/// (fixed-size digests, so neither the bytes nor the length leak).
pub fn check_service_token(state: &AppState, headers: &HeaderMap) -> ServiceAuth {
    let Some(expected) = &state.service_token_hash else { return ServiceAuth::Disabled };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match presented {
        None => ServiceAuth::Missing,
        Some(token) => {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if bool::from(digest.ct_eq(expected)) { ServiceAuth::Trusted } else { ServiceAuth::Wrong }
        }
    }
}

/// Lets a request through to an internal route only with the service token.
pub async fn require_service_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match check_service_token(&state, req.headers()) {
        ServiceAuth::Trusted => next.run(req).await,
        ServiceAuth::Disabled => {
            ApiError::msg(ErrorCode::Forbidden, "the internal API is disabled: login has no service_token").into_response()
        }
        ServiceAuth::Missing => {
            ApiError::msg(ErrorCode::Unauthenticated, "a service bearer token is required").into_response()
        }
        ServiceAuth::Wrong => {
            tracing::warn!("internal request with a wrong service token");
            ApiError::msg(ErrorCode::TokenInvalid, "invalid service token").into_response()
        }
    }
}

/// `GET /internal/v1/users/{user_id}/social`.
pub async fn social(State(state): State<Arc<AppState>>, Path(user_id): Path<Uuid>) -> Result<ApiJson<SocialResponse>, ApiError> {
    let graph = state
        .store
        .social_graph(user_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound))?;
    Ok(ApiJson(SocialResponse {
        user_id: graph.id,
        username: graph.username,
        friends: graph.friends.into_iter().map(|(user_id, username)| UserName { user_id, username }).collect(),
        blocked: graph.blocked,
        blocked_by: graph.blocked_by,
    }))
}

/// `POST /internal/v1/users/lookup`.
pub async fn lookup(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<LookupRequest>,
) -> Result<ApiJson<LookupResponse>, ApiError> {
    if req.user_ids.len() > MAX_LOOKUP {
        return Err(ApiError::msg(
            ErrorCode::InvalidField,
            format!("user_ids names {} users; at most {MAX_LOOKUP} per lookup", req.user_ids.len()),
        ));
    }
    let mut ids = req.user_ids;
    ids.sort_unstable();
    ids.dedup();
    let found = state.store.usernames(&ids).await.map_err(ApiError::internal)?;
    Ok(ApiJson(LookupResponse {
        users: found.into_iter().map(|(user_id, username)| UserName { user_id, username }).collect(),
    }))
}
