//! `/internal/v1`: the API for trusted services. The GCS needs users' friends and blocks for
//! presence, friend pushes and chat, but `users`, `friendships` and `blocks` belong to login, so
//! it asks here instead of reading the tables.
//!
//! Every route needs `Authorization: Bearer <service token>` (login's `service_token`, compared
//! in constant time as SHA-256 digests by [`service_runtime::api::ServiceToken`], the gate the
//! matchmaker's and the token service's APIs use too). Without a configured token every route
//! answers `forbidden`. These routes are deliberately absent from the OpenAPI document: they are not part
//! of the public contract and may change with the GCS.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /internal/v1/users/{user_id}/social` | | `{user_id, username, friends: [{user_id, username}], blocked: [id], blocked_by: [id]}`, or `user_not_found` |
//! | `POST /internal/v1/users/lookup` | `{user_ids: [id]}` (at most [`MAX_LOOKUP`]) | `{users: [{user_id, username}]}`, unknown ids left out |

use std::sync::Arc;

use axum::extract::{Path, State};
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::api::{ApiError, ApiJson};
use uuid::Uuid;

use crate::AppState;

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
