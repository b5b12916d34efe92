//! `/v1/friends` and `/v1/blocks`: friend requests (send, accept, decline, cancel), removal,
//! blocking and the friend list.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::api::{ApiError, ApiJson, ErrorBody};
use service_runtime::now_ms;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::account::rfc3339;
use crate::http::Auth;
use crate::store::{Relation, StoreError, User, UserRef};

/// Names another user by id or by username (exactly one).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserTarget {
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
}

/// A user in one of the friend lists.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FriendEntry {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    /// RFC 3339 time the friendship, request or block began.
    pub since: String,
}

/// `GET /v1/friends`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FriendListResponse {
    pub friends: Vec<FriendEntry>,
    /// Requests others sent to the caller.
    pub incoming: Vec<FriendEntry>,
    /// Requests the caller sent.
    pub outgoing: Vec<FriendEntry>,
    pub blocked: Vec<FriendEntry>,
}

/// The outcome of a friend request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FriendRequestResponse {
    pub user_id: Uuid,
    /// `pending`, or `accepted` when the other user had already asked the caller.
    pub status: String,
}

#[utoipa::path(get, path = "/v1/friends", tag = "friends", security(("bearer" = [])),
    responses((status = 200, body = FriendListResponse), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<Arc<AppState>>, Auth(me): Auth) -> Result<ApiJson<FriendListResponse>, ApiError> {
    let l = state.store.friend_list(me.user_id).await.map_err(ApiError::internal)?;
    let conv = |v: Vec<UserRef>| {
        v.into_iter()
            .map(|r| FriendEntry { user_id: r.id, username: r.username, display_name: r.display_name, since: rfc3339(r.since) })
            .collect()
    };
    Ok(ApiJson(FriendListResponse {
        friends: conv(l.friends),
        incoming: conv(l.incoming),
        outgoing: conv(l.outgoing),
        blocked: conv(l.blocked),
    }))
}

#[utoipa::path(post, path = "/v1/friends/requests", tag = "friends", security(("bearer" = [])), request_body = UserTarget,
    responses((status = 201, body = FriendRequestResponse),
              (status = 404, description = "user_not_found", body = ErrorBody),
              (status = 409, description = "already_friends, friend_request_pending or friend_limit", body = ErrorBody),
              (status = 403, description = "blocked", body = ErrorBody), (status = 422, description = "self_target", body = ErrorBody)))]
pub async fn send_request(
    State(state): State<Arc<AppState>>,
    Auth(me): Auth,
    ApiJson(target): ApiJson<UserTarget>,
) -> Result<(StatusCode, ApiJson<FriendRequestResponse>), ApiError> {
    let other = resolve(&state, &target).await?;
    if other.id == me.user_id {
        return Err(ApiError::new(ErrorCode::SelfTarget));
    }
    let now = now_ms();
    let store = &state.store;
    match store.relation(me.user_id, other.id).await.map_err(ApiError::internal)? {
        Relation::Blocked => Err(ApiError::new(ErrorCode::Blocked)),
        Relation::Friends => Err(ApiError::new(ErrorCode::AlreadyFriends)),
        Relation::RequestSent => Err(ApiError::new(ErrorCode::FriendRequestPending)),
        Relation::RequestReceived => {
            // Both want it: asking back accepts.
            check_slots(&state, me.user_id).await?;
            store.accept_request(other.id, me.user_id, now).await.map_err(ApiError::internal)?;
            Ok((StatusCode::OK, ApiJson(FriendRequestResponse { user_id: other.id, status: "accepted".into() })))
        }
        Relation::None => {
            check_slots(&state, me.user_id).await?;
            match store.insert_request(me.user_id, other.id, now).await {
                Ok(()) => {}
                // A concurrent request between the two won the race.
                Err(StoreError::Conflict) => return Err(ApiError::new(ErrorCode::FriendRequestPending)),
                Err(e) => return Err(ApiError::internal(e)),
            }
            Ok((StatusCode::CREATED, ApiJson(FriendRequestResponse { user_id: other.id, status: "pending".into() })))
        }
    }
}

#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/accept", tag = "friends", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "who sent the request")),
    responses((status = 204), (status = 404, description = "no_friend_request", body = ErrorBody),
              (status = 409, description = "friend_limit", body = ErrorBody)))]
pub async fn accept(State(state): State<Arc<AppState>>, Auth(me): Auth, Path(from): Path<Uuid>) -> Result<StatusCode, ApiError> {
    check_slots(&state, me.user_id).await?;
    if state.store.accept_request(from, me.user_id, now_ms()).await.map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NoFriendRequest))
    }
}

#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/decline", tag = "friends", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "who sent the request")),
    responses((status = 204), (status = 404, description = "no_friend_request", body = ErrorBody)))]
pub async fn decline(State(state): State<Arc<AppState>>, Auth(me): Auth, Path(from): Path<Uuid>) -> Result<StatusCode, ApiError> {
    gone_or(state.store.delete_request(from, me.user_id).await, ErrorCode::NoFriendRequest)
}

#[utoipa::path(delete, path = "/v1/friends/requests/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "to whom the caller sent the request")),
    responses((status = 204, description = "the caller's request is withdrawn"), (status = 404, description = "no_friend_request", body = ErrorBody)))]
pub async fn cancel(State(state): State<Arc<AppState>>, Auth(me): Auth, Path(to): Path<Uuid>) -> Result<StatusCode, ApiError> {
    gone_or(state.store.delete_request(me.user_id, to).await, ErrorCode::NoFriendRequest)
}

#[utoipa::path(delete, path = "/v1/friends/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "not_friends", body = ErrorBody)))]
pub async fn remove(State(state): State<Arc<AppState>>, Auth(me): Auth, Path(other): Path<Uuid>) -> Result<StatusCode, ApiError> {
    gone_or(state.store.delete_friendship(me.user_id, other).await, ErrorCode::NotFriends)
}

#[utoipa::path(post, path = "/v1/blocks", tag = "friends", security(("bearer" = [])), request_body = UserTarget,
    responses((status = 204, description = "blocked; any friendship or request between the two is removed"),
              (status = 404, description = "user_not_found", body = ErrorBody), (status = 422, description = "self_target", body = ErrorBody)))]
pub async fn block(State(state): State<Arc<AppState>>, Auth(me): Auth, ApiJson(target): ApiJson<UserTarget>) -> Result<StatusCode, ApiError> {
    let other = resolve(&state, &target).await?;
    if other.id == me.user_id {
        return Err(ApiError::new(ErrorCode::SelfTarget));
    }
    state.store.block(me.user_id, other.id, now_ms()).await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/blocks/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "not_found", body = ErrorBody)))]
pub async fn unblock(State(state): State<Arc<AppState>>, Auth(me): Auth, Path(other): Path<Uuid>) -> Result<StatusCode, ApiError> {
    gone_or(state.store.unblock(me.user_id, other).await, ErrorCode::NotFound)
}

async fn resolve(state: &AppState, target: &UserTarget) -> Result<User, ApiError> {
    let found = match (&target.user_id, &target.username) {
        (Some(id), None) => state.store.user_by_id(*id).await,
        (None, Some(name)) if name.len() <= crate::validate::USERNAME_MAX => state.store.user_by_username(name).await,
        (None, Some(_)) => Ok(None),
        _ => return Err(ApiError::msg(ErrorCode::InvalidField, "give exactly one of user_id or username")),
    };
    found
        .map_err(ApiError::internal)?
        .filter(|u| !u.banned)
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound))
}

async fn check_slots(state: &AppState, me: Uuid) -> Result<(), ApiError> {
    let used = state.store.friend_slots_used(me).await.map_err(ApiError::internal)?;
    if used >= i64::from(state.config.limits.max_friends) {
        return Err(ApiError::new(ErrorCode::FriendLimit));
    }
    Ok(())
}

fn gone_or(result: Result<bool, StoreError>, missing: ErrorCode) -> Result<StatusCode, ApiError> {
    match result {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::new(missing)),
        Err(e) => Err(ApiError::internal(e)),
    }
}
