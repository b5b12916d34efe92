//! The GCS's client for login's internal social API (`/internal/v1`): a user's username, friends
//! and blocks, and username lookups. The GCS may not read login's tables, so it asks login over
//! HTTP with the shared service token.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use service_runtime::internal_client::{self, CallError, ClientConfigError, InternalClient};
use uuid::Uuid;

/// How long one request may take, connection included, before login counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most ids one lookup request names; [`SocialClient::lookup`] splits longer lists.
pub const MAX_LOOKUP: usize = 256;

/// The protocol code login answers for an unknown user (`user_not_found`).
const USER_NOT_FOUND: u16 = 3000;

/// A user's social graph as the GCS uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocialGraph {
    pub user_id: Uuid,
    pub username: String,
    /// Accepted friends (id, username), ordered by username.
    pub friends: Vec<(Uuid, String)>,
    /// Users with a block between them and this user, whichever side blocked: neither may
    /// message or see the other.
    pub blocked: HashSet<Uuid>,
}

impl SocialGraph {
    /// Whether `other` is an accepted friend.
    pub fn is_friend(&self, other: Uuid) -> bool {
        self.friends.iter().any(|(id, _)| *id == other)
    }

    /// Whether a block stands between this user and `other`, in either direction.
    pub fn is_blocked(&self, other: Uuid) -> bool {
        self.blocked.contains(&other)
    }
}

/// Why login's social API could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SocialError {
    /// Login knows no such user.
    #[error("user {0} not found")]
    NotFound(Uuid),
    /// Login refused the service token, or has none configured.
    #[error("login refused the service token: {0}")]
    Unauthorized(String),
    /// Login could not be reached, timed out, or failed (5xx, 429); worth retrying later.
    #[error("login is unavailable: {0}")]
    Unavailable(String),
    /// Login answered something this client does not understand (wrong base URL, version skew).
    #[error("unexpected answer from login: {0}")]
    BadResponse(String),
    /// The client could not be built from its settings.
    #[error("invalid social client config: {0}")]
    Config(String),
}

/// A client for login's internal social API. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct SocialClient {
    /// Login's base URL and the service token.
    login: InternalClient,
}

impl SocialClient {
    /// A client for the login service at `base_url` (e.g. `http://127.0.0.1:8080`), presenting
    /// `service_token`, with [`DEFAULT_TIMEOUT`].
    pub fn new(base_url: &str, service_token: &str) -> Result<SocialClient, SocialError> {
        SocialClient::with_timeout(base_url, service_token, DEFAULT_TIMEOUT)
    }

    /// As [`SocialClient::new`], with `timeout` for each request.
    pub fn with_timeout(base_url: &str, service_token: &str, timeout: Duration) -> Result<SocialClient, SocialError> {
        let login = InternalClient::new(base_url, service_token, timeout, &["http", "https"]).map_err(|e| match e {
            ClientConfigError::Url { .. } => SocialError::Config(format!("login url {e}")),
            e => SocialError::Config(e.to_string()),
        })?;
        Ok(SocialClient { login })
    }

    /// `user_id`'s username, friends and blocks (both directions merged into `blocked`).
    pub async fn social(&self, user_id: Uuid) -> Result<SocialGraph, SocialError> {
        let req = self.login.get(&format!("/internal/v1/users/{user_id}/social"));
        let wire: WireSocial = self.send(req, Some(user_id)).await?;
        if wire.user_id != user_id {
            return Err(SocialError::BadResponse(format!("asked for user {user_id}, got {}", wire.user_id)));
        }
        Ok(SocialGraph {
            user_id: wire.user_id,
            username: wire.username,
            friends: wire.friends.into_iter().map(|f| (f.user_id, f.username)).collect(),
            blocked: wire.blocked.into_iter().chain(wire.blocked_by).collect(),
        })
    }

    /// The usernames of the known users among `user_ids` (unknown ids are left out, each known
    /// one appears once), in [`MAX_LOOKUP`]-sized requests.
    pub async fn lookup(&self, user_ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, SocialError> {
        let mut ids = user_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_LOOKUP) {
            let req = self.login.post("/internal/v1/users/lookup").json(&WireLookupRequest { user_ids: chunk });
            let wire: WireLookup = self.send(req, None).await?;
            out.extend(wire.users.into_iter().map(|u| (u.user_id, u.username)));
        }
        Ok(out)
    }

    /// Sends `req` and decodes a 200 as `T`; every other answer becomes a [`SocialError`].
    /// `user_id` names the user a `user_not_found` is about.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder, user_id: Option<Uuid>) -> Result<T, SocialError> {
        let resp = internal_client::send(req).await?;
        let status = resp.status();
        if status == StatusCode::OK {
            return resp.json::<T>().await.map_err(|e| {
                let detail = internal_client::describe(&e);
                if e.is_timeout() { SocialError::Unavailable(detail) } else { SocialError::BadResponse(detail) }
            });
        }
        // An error body is `{code, error, message}`; a missing or odd one still maps by status.
        let body = resp.json::<WireError>().await.ok();
        let detail = body
            .as_ref()
            .map_or_else(|| format!("http {status}"), |b| format!("http {status}: {} ({})", b.message, b.error));
        if status == StatusCode::NOT_FOUND && body.as_ref().is_some_and(|b| b.code == USER_NOT_FOUND) {
            return Err(match user_id {
                Some(id) => SocialError::NotFound(id),
                None => SocialError::BadResponse(detail),
            });
        }
        Err(internal_client::status_error(status, detail).into())
    }
}

impl From<CallError> for SocialError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unavailable(detail) => SocialError::Unavailable(detail),
            CallError::Unauthorized(detail) => SocialError::Unauthorized(detail),
            CallError::BadResponse(detail) => SocialError::BadResponse(detail),
        }
    }
}

#[derive(Deserialize)]
struct WireUser {
    user_id: Uuid,
    username: String,
}

#[derive(Deserialize)]
struct WireSocial {
    user_id: Uuid,
    username: String,
    friends: Vec<WireUser>,
    blocked: Vec<Uuid>,
    blocked_by: Vec<Uuid>,
}

#[derive(serde::Serialize)]
struct WireLookupRequest<'a> {
    user_ids: &'a [Uuid],
}

#[derive(Deserialize)]
struct WireLookup {
    users: Vec<WireUser>,
}

#[derive(Deserialize)]
struct WireError {
    code: u16,
    error: String,
    message: String,
}
