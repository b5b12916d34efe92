//! `/v1/account`: read and update the caller's account, change the password.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::api::{ApiError, ApiJson, ErrorBody};
use service_runtime::now_ms;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::Auth;
use crate::ratings::{ModeRating, RecentMatch};
use crate::store::User;
use crate::{AppState, validate};

/// The caller's account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountResponse {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    /// RFC 3339 time of registration.
    pub created_at: String,
    pub is_guest: bool,
    /// Whether the account has a password (guests have none until they set one).
    pub has_password: bool,
    /// The player's rating in each mode they have played, from the matchmaker; empty before the
    /// first rated match. `null` when the matchmaker did not answer in time (or this deployment
    /// has none): try again later.
    pub ratings: Option<Vec<ModeRating>>,
    /// The player's latest matches, newest first (at most 10); `null` exactly when `ratings` is.
    pub recent_matches: Option<Vec<RecentMatch>>,
}

/// `PATCH /v1/account` body; absent fields are left as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    pub display_name: Option<String>,
}

/// `POST /v1/account/password` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// Required when the account already has a password.
    pub current_password: Option<String>,
    pub new_password: String,
}

#[utoipa::path(get, path = "/v1/account", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = AccountResponse), (status = 401, body = ErrorBody)))]
pub async fn get_account(State(state): State<Arc<AppState>>, Auth(claims): Auth) -> Result<ApiJson<AccountResponse>, ApiError> {
    let user = load(&state, claims.user_id).await?;
    Ok(ApiJson(with_ratings(&state, to_response(&user)).await))
}

#[utoipa::path(patch, path = "/v1/account", tag = "account", security(("bearer" = [])), request_body = UpdateAccount,
    responses((status = 200, body = AccountResponse), (status = 422, body = ErrorBody)))]
pub async fn update_account(
    State(state): State<Arc<AppState>>,
    Auth(claims): Auth,
    ApiJson(req): ApiJson<UpdateAccount>,
) -> Result<ApiJson<AccountResponse>, ApiError> {
    if let Some(name) = &req.display_name {
        validate::display_name(name)?;
        state.store.set_display_name(claims.user_id, name, now_ms()).await.map_err(ApiError::internal)?;
    }
    let user = load(&state, claims.user_id).await?;
    Ok(ApiJson(with_ratings(&state, to_response(&user)).await))
}

#[utoipa::path(post, path = "/v1/account/password", tag = "account", security(("bearer" = [])), request_body = ChangePassword,
    responses((status = 204, description = "changed; every session of the account is revoked"),
              (status = 401, description = "invalid_credentials", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    Auth(claims): Auth,
    ApiJson(req): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    validate::password(&req.new_password)?;
    let user = load(&state, claims.user_id).await?;
    if let Some(current) = user.password_hash.clone() {
        let given = req.current_password.unwrap_or_default();
        if !state.hasher.verify(given, Some(current)).await.map_err(ApiError::internal)? {
            return Err(ApiError::new(ErrorCode::InvalidCredentials));
        }
    }
    let hash = state.hasher.hash(req.new_password).await.map_err(ApiError::internal)?;
    let now = now_ms();
    state.store.set_password_hash(user.id, &hash, now).await.map_err(ApiError::internal)?;
    // A password change ends every session, including this one.
    state.tokens.revoke_user(user.id, now).await.map_err(|e| ApiError::new(e.code()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn load(state: &AppState, id: Uuid) -> Result<User, ApiError> {
    let user = state
        .store
        .user_by_id(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound))?;
    if user.banned {
        return Err(ApiError::new(ErrorCode::Banned));
    }
    Ok(user)
}

fn to_response(u: &User) -> AccountResponse {
    AccountResponse {
        user_id: u.id,
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        created_at: rfc3339(u.created_at),
        is_guest: u.is_guest,
        has_password: u.password_hash.is_some(),
        ratings: None,
        recent_matches: None,
    }
}

/// Adds the player's ratings and recent matches from the matchmaker's read API. Never fails the
/// account: without the API, or when it does not answer within its timeout, both stay `null`.
async fn with_ratings(state: &AppState, mut account: AccountResponse) -> AccountResponse {
    let Some(client) = &state.ratings else { return account };
    match client.player(account.user_id).await {
        Ok(player) => {
            account.ratings = Some(player.ratings);
            account.recent_matches = Some(player.recent_matches);
        }
        Err(e) => tracing::warn!(user_id = %account.user_id, error = %e, "account answered without ratings"),
    }
    account
}

/// Formats unix milliseconds as RFC 3339 (UTC).
pub(crate) fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
