//! `/v1/auth/*`: register, password login, device (guest) login, refresh, logout, logout-all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::api::{ApiError, ApiJson, ErrorBody};
use service_runtime::now_ms;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::http::{Auth, ClientIp};
use crate::store::{NewUser, StoreError, User};
use crate::validate;

/// `POST /v1/auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 24 characters: letters, digits, `_` and `-`; unique without regard to case.
    pub username: String,
    /// 8 to 128 characters.
    pub password: String,
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /v1/auth/device` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    /// A stable, secret identifier the game keeps on the device (16 to 128 of `A-Za-z0-9._:-`).
    /// Whoever knows it can log in as the guest account, so treat it like a password.
    pub device_id: String,
}

/// `POST /v1/auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A new session: the short-lived session token and the refresh token that renews it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    pub user_id: Uuid,
    pub username: String,
    /// JWT (HS256) for `Authorization: Bearer` and the GCS `Hello`.
    pub session_token: String,
    /// Unix milliseconds when the session token expires.
    pub session_expires_at: i64,
    /// Single-use: exchange it at `/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// True for device (guest) accounts.
    pub is_guest: bool,
}

#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = AuthResponse), (status = 409, description = "username_taken", body = ErrorBody),
              (status = 422, description = "invalid_username or weak_password", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, ApiJson<AuthResponse>), ApiError> {
    validate::username(&req.username)?;
    validate::password(&req.password)?;
    let hash = state.hasher.hash(req.password).await.map_err(ApiError::internal)?;
    let new = NewUser {
        username: &req.username,
        display_name: &req.username,
        password_hash: Some(&hash),
        device_id: None,
        is_guest: false,
    };
    let user = match state.store.create_user(&new, now_ms()).await {
        Ok(u) => u,
        Err(StoreError::Conflict) => return Err(ApiError::new(ErrorCode::UsernameTaken)),
        Err(e) => return Err(ApiError::internal(e)),
    };
    state.metrics.registrations.with_label_values(&["password"]).inc();
    tracing::info!(user_id = %user.id, "account registered");
    Ok((StatusCode::CREATED, ApiJson(start_session(&state, &user).await?)))
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, description = "invalid_credentials", body = ErrorBody),
              (status = 403, description = "banned", body = ErrorBody),
              (status = 429, description = "locked_out or rate_limited", body = ErrorBody)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<ApiJson<AuthResponse>, ApiError> {
    let outcome = password_login(&state, ip, req).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.code.name(),
    };
    state.metrics.logins.with_label_values(&["password", label]).inc();
    outcome.map(ApiJson)
}

async fn password_login(state: &AppState, ip: std::net::IpAddr, req: LoginRequest) -> Result<AuthResponse, ApiError> {
    let now = now_ms();
    // An address that keeps failing is locked out before any work is spent on it.
    if let Err(wait) = state.ip_failures.peek(&ip, Instant::now()) {
        state.metrics.limited.with_label_values(&["login_ip"]).inc();
        return Err(ApiError::new(ErrorCode::LockedOut).retry_after(wait.as_secs() + 1));
    }
    // Overlong input never reaches the hasher; it cannot match anything stored.
    let plausible = req.username.len() <= validate::USERNAME_MAX && req.password.len() <= validate::PASSWORD_MAX;
    let user = if plausible { state.store.user_by_username(&req.username).await.map_err(ApiError::internal)? } else { None };
    if let Some(u) = &user {
        if u.locked_until > now {
            state.metrics.limited.with_label_values(&["login_account"]).inc();
            let wait = Duration::from_millis(u64::try_from(u.locked_until - now).unwrap_or(0));
            return Err(ApiError::new(ErrorCode::LockedOut).retry_after(wait.as_secs() + 1));
        }
    }
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = if plausible {
        state.hasher.verify(req.password, hash).await.map_err(ApiError::internal)?
    } else {
        false
    };
    let user = match user {
        Some(u) if ok => u,
        known => {
            let _ = state.ip_failures.check(&ip, Instant::now());
            if let Some(u) = known {
                record_failure(state, &u).await?;
            }
            return Err(ApiError::new(ErrorCode::InvalidCredentials));
        }
    };
    if user.banned {
        return Err(ApiError::new(ErrorCode::Banned));
    }
    if user.failed_logins > 0 {
        state.store.clear_failed_logins(user.id, now).await.map_err(ApiError::internal)?;
    }
    state.ip_failures.reset(&ip);
    start_session(state, &user).await
}

/// Counts a failed login against the account, locking it once the limit is reached.
async fn record_failure(state: &AppState, u: &User) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    let lock_ms = i64::try_from(limits.account_lock_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let until = state
        .store
        .record_failed_login(u.id, limits.failed_logins_per_account, lock_ms, now_ms())
        .await
        .map_err(ApiError::internal)?;
    if until > 0 {
        tracing::warn!(user_id = %u.id, "account locked after repeated failed logins");
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/auth/device", tag = "auth", request_body = DeviceRequest,
    responses((status = 200, description = "logged in; a guest account is created on first use", body = AuthResponse),
              (status = 422, description = "invalid_field", body = ErrorBody), (status = 403, description = "banned", body = ErrorBody)))]
pub async fn device(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<DeviceRequest>,
) -> Result<ApiJson<AuthResponse>, ApiError> {
    validate::device_id(&req.device_id)?;
    let user = match state.store.user_by_device(&req.device_id).await.map_err(ApiError::internal)? {
        Some(u) => u,
        None => create_guest(&state, &req.device_id).await?,
    };
    if user.banned {
        return Err(ApiError::new(ErrorCode::Banned));
    }
    state.metrics.logins.with_label_values(&["device", "ok"]).inc();
    Ok(ApiJson(start_session(&state, &user).await?))
}

async fn create_guest(state: &AppState, device_id: &str) -> Result<User, ApiError> {
    // A random name can collide with a taken one, and two first logins of one device can race;
    // a few attempts settle both (the race by finding the other request's account).
    for _ in 0..4 {
        let tag = &Uuid::new_v4().simple().to_string()[..10];
        let username = format!("guest_{tag}");
        let display = format!("Guest {}", &tag[..4]);
        let new = NewUser { username: &username, display_name: &display, password_hash: None, device_id: Some(device_id), is_guest: true };
        match state.store.create_user(&new, now_ms()).await {
            Ok(u) => {
                state.metrics.registrations.with_label_values(&["guest"]).inc();
                return Ok(u);
            }
            Err(StoreError::Conflict) => {
                if let Some(u) = state.store.user_by_device(device_id).await.map_err(ApiError::internal)? {
                    return Ok(u);
                }
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::internal("could not allocate a guest username"))
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, description = "a new pair; the presented refresh token is spent", body = AuthResponse),
              (status = 401, description = "refresh_token_invalid, or refresh_token_reused (the session is revoked)", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<ApiJson<AuthResponse>, ApiError> {
    let now = now_ms();
    let grant = state.tokens.rotate_refresh(req.refresh_token.trim(), now).await.map_err(|e| {
        state.metrics.logins.with_label_values(&["refresh", e.code().name()]).inc();
        ApiError::new(e.code())
    })?;
    let user = state
        .store
        .user_by_id(grant.user_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::RefreshTokenInvalid))?;
    if user.banned {
        state.tokens.revoke_user(user.id, now).await.map_err(|e| ApiError::new(e.code()))?;
        return Err(ApiError::new(ErrorCode::Banned));
    }
    let session = state
        .tokens
        .mint_session(user.id, &user.username, grant.session_id, now)
        .map_err(ApiError::internal)?;
    state.metrics.logins.with_label_values(&["refresh", "ok"]).inc();
    Ok(ApiJson(AuthResponse {
        user_id: user.id,
        username: user.username,
        session_token: session.token,
        session_expires_at: session.expires_at_ms,
        refresh_token: grant.refresh_token,
        is_guest: user.is_guest,
    }))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "this session's tokens are revoked"), (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<Arc<AppState>>, Auth(claims): Auth) -> Result<StatusCode, ApiError> {
    state
        .tokens
        .revoke_session(claims.user_id, claims.session_id, now_ms())
        .await
        .map_err(|e| ApiError::new(e.code()))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "every session of the account is revoked"), (status = 401, body = ErrorBody)))]
pub async fn logout_all(State(state): State<Arc<AppState>>, Auth(claims): Auth) -> Result<StatusCode, ApiError> {
    state.tokens.revoke_user(claims.user_id, now_ms()).await.map_err(|e| ApiError::new(e.code()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mints a session token and a new refresh-token family for `user`.
pub(crate) async fn start_session(state: &AppState, user: &User) -> Result<AuthResponse, ApiError> {
    let now = now_ms();
    let session_id = Uuid::new_v4();
    let session = state
        .tokens
        .mint_session(user.id, &user.username, session_id, now)
        .map_err(ApiError::internal)?;
    let refresh_token = state
        .tokens
        .issue_refresh(user.id, session_id, now)
        .await
        .map_err(|e| ApiError::new(e.code()))?;
    tracing::info!(user_id = %user.id, session_id = %session_id, "session started");
    Ok(AuthResponse {
        user_id: user.id,
        username: user.username.clone(),
        session_token: session.token,
        session_expires_at: session.expires_at_ms,
        refresh_token,
        is_guest: user.is_guest,
    })
}
