//! Login's client for the matchmaker's internal read API (`GET
//! /internal/v1/players/{user_id}/ratings`): the ratings and recent matches `/v1/account` shows.
//! `ratings`, `matches` and `match_players` belong to the matchmaker, so login asks it over HTTP
//! with the shared service token instead of reading them.
//!
//! The account answers without them when the matchmaker is slow or away: every failure here is
//! an error the handler logs and turns into `ratings: null`.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use service_runtime::internal_client::{self, CallError, InternalClient};
use utoipa::ToSchema;
use uuid::Uuid;

/// How many recent matches the account shows.
pub const RECENT_MATCHES: u32 = 10;

/// The largest answer read from the matchmaker; a real one is a few kilobytes.
const MAX_BODY: usize = 256 * 1024;

/// A player's rating in one mode, with their record there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModeRating {
    /// The game mode ("duel", "duo").
    pub mode: String,
    /// Glicko-2 rating; new players start at 1500.
    pub rating: f64,
    /// Glicko-2 rating deviation: how uncertain the rating is (350 for a new player).
    pub deviation: f64,
    pub volatility: f64,
    /// Rated games played in this mode.
    pub games: i64,
    pub wins: i64,
    pub losses: i64,
    pub draws: i64,
    /// When the rating last changed (unix ms).
    pub updated_at_ms: i64,
}

/// One of the player's recent matches, from their side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecentMatch {
    pub match_id: Uuid,
    pub mode: String,
    pub region: String,
    /// `win`, `loss` or `draw`.
    pub outcome: String,
    /// How it ended ("hero_destroyed", "concede", "forfeit", ...).
    pub reason: String,
    pub rating_before: f64,
    pub rating_after: f64,
    /// When the match ended (unix ms).
    pub ended_at_ms: i64,
}

/// The matchmaker's answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PlayerRatings {
    pub user_id: Uuid,
    pub ratings: Vec<ModeRating>,
    pub recent_matches: Vec<RecentMatch>,
}

/// Why the matchmaker's ratings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RatingsError {
    /// The matchmaker could not be reached, timed out, or failed.
    #[error("the matchmaker is unavailable: {0}")]
    Unavailable(String),
    /// The matchmaker refused the service token.
    #[error("the matchmaker refused the service token: {0}")]
    Unauthorized(String),
    /// An answer this client does not understand (wrong URL, version skew).
    #[error("unexpected answer from the matchmaker: {0}")]
    BadResponse(String),
    /// The client could not be built from the config.
    #[error("invalid matchmaker_api_url config: {0}")]
    Config(String),
}

/// A client for the matchmaker's read API. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct RatingsClient {
    api: InternalClient,
}

impl RatingsClient {
    /// A client for the API at `base_url`, presenting `service_token`, giving up on a request
    /// (connection included) after `timeout`.
    pub fn new(base_url: &str, service_token: &str, timeout: Duration) -> Result<RatingsClient, RatingsError> {
        let api = InternalClient::new(base_url, service_token, timeout, &["http"])
            .map_err(|e| RatingsError::Config(e.to_string()))?;
        Ok(RatingsClient { api })
    }

    /// `user_id`'s ratings in every mode and their [`RECENT_MATCHES`] latest matches.
    pub async fn player(&self, user_id: Uuid) -> Result<PlayerRatings, RatingsError> {
        let req = self.api.get(&format!("/internal/v1/players/{user_id}/ratings?recent={RECENT_MATCHES}"));
        let mut resp = internal_client::send(req).await?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| RatingsError::Unavailable(internal_client::describe(&e)))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(RatingsError::BadResponse(format!("answer longer than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if status != StatusCode::OK {
            let detail = format!("http {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
            return Err(internal_client::status_error(status, detail).into());
        }
        let player: PlayerRatings = serde_json::from_slice(&body).map_err(|e| RatingsError::BadResponse(e.to_string()))?;
        if player.user_id != user_id {
            return Err(RatingsError::BadResponse(format!("asked for user {user_id}, got {}", player.user_id)));
        }
        Ok(player)
    }
}

impl From<CallError> for RatingsError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unavailable(detail) => RatingsError::Unavailable(detail),
            CallError::Unauthorized(detail) => RatingsError::Unauthorized(detail),
            CallError::BadResponse(detail) => RatingsError::BadResponse(detail),
        }
    }
}
