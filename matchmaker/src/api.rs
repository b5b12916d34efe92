//! The matchmaker's internal read API for trusted services: a player's ratings and recent
//! matches. `ratings`, `matches` and `match_players` belong to the matchmaker, so login (which
//! shows them on `/v1/account`) asks here instead of reading the tables.
//!
//! Every route needs `Authorization: Bearer <service token>` (the matchmaker's `service_token`,
//! compared in constant time as SHA-256 digests by [`service_runtime::api::ServiceToken`], the
//! gate login's internal API uses too). With an empty token every route answers `forbidden`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /internal/v1/players/{user_id}/ratings[?recent=N]` | [`PlayerRatings`]: `{user_id, ratings: [{mode, rating, deviation, volatility, games, wins, losses, draws, updated_at_ms}], recent_matches: [{match_id, mode, region, outcome, reason, rating_before, rating_after, ended_at_ms}]}` |
//!
//! A user who never played gets empty lists, not `404`: the matchmaker does not know which users
//! exist. `recent` is the number of matches to list, newest first ([`DEFAULT_RECENT`] when absent,
//! at most [`MAX_RECENT`]).
//!
//! The standalone service serves these routes on its admin listener (`admin_bind`, beside
//! `/metrics`), which is not exposed to players; [`router`] gives the routes to any process that
//! embeds the matchmaker (the all-in-one launcher merges them into its admin router).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use migrations::{Db, on_db};
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use service_runtime::api::{ApiError, ApiJson, ServiceToken, require_service_token};
use uuid::Uuid;

use crate::store::StoreError;

/// How many recent matches are listed when the request does not say.
pub const DEFAULT_RECENT: u32 = 10;
/// The most recent matches one request may ask for.
pub const MAX_RECENT: u32 = 50;

/// `GET /internal/v1/players/{user_id}/ratings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlayerRatings {
    pub user_id: Uuid,
    /// One entry per mode the player has a rating in, ordered by mode.
    pub ratings: Vec<ModeRating>,
    /// The player's latest recorded matches, newest first.
    pub recent_matches: Vec<RecentMatch>,
}

/// A player's Glicko-2 rating in one mode, with their record there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeRating {
    pub mode: String,
    pub rating: f64,
    pub deviation: f64,
    pub volatility: f64,
    /// Rated games played (`wins + losses + draws`).
    pub games: i64,
    pub wins: i64,
    pub losses: i64,
    pub draws: i64,
    /// When the rating last changed (unix ms).
    pub updated_at_ms: i64,
}

/// One recorded match from one player's side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentMatch {
    pub match_id: Uuid,
    pub mode: String,
    pub region: String,
    /// `win`, `loss` or `draw`.
    pub outcome: String,
    /// How it ended, as the instance reported it (`hero_destroyed`, `concede`, `forfeit`, ...).
    pub reason: String,
    pub rating_before: f64,
    pub rating_after: f64,
    pub ended_at_ms: i64,
}

/// The read API's routes over `db`, guarded by `service_token`. Stateless apart from the pool, so
/// it can be merged into any router (it sets no fallback, which a merge would refuse twice).
pub fn router(db: Db, service_token: &str) -> Router {
    Router::new()
        .route("/internal/v1/players/{user_id}/ratings", get(player_ratings))
        .route_layer(axum::middleware::from_fn_with_state(ServiceToken::digest(service_token), require_service_token))
        .with_state(Arc::new(ApiState { db }))
}

/// `user_id`'s ratings in every mode and their `recent` latest matches (at most [`MAX_RECENT`]),
/// read from the matchmaker's tables.
pub async fn read_player(db: &Db, user_id: Uuid, recent: u32) -> Result<PlayerRatings, StoreError> {
    type RatingRow = (String, f64, f64, f64, i64, i64);
    type MatchRow = (Uuid, String, String, String, String, f64, f64, i64);
    let ratings: Vec<RatingRow> =
        on_db!(db, |pool| sqlx::query_as(SELECT_RATINGS).bind(user_id).fetch_all(pool).await)?;
    let counts: Vec<(String, String, i64)> =
        on_db!(db, |pool| sqlx::query_as(SELECT_COUNTS).bind(user_id).fetch_all(pool).await)?;
    let limit = i64::from(recent.min(MAX_RECENT));
    let matches: Vec<MatchRow> =
        on_db!(db, |pool| sqlx::query_as(SELECT_RECENT).bind(user_id).bind(limit).fetch_all(pool).await)?;
    let count = |mode: &str, outcome: &str| {
        counts.iter().find(|(m, o, _)| m == mode && o == outcome).map_or(0, |(_, _, n)| *n)
    };
    Ok(PlayerRatings {
        user_id,
        ratings: ratings
            .into_iter()
            .map(|(mode, rating, deviation, volatility, games, updated_at_ms)| ModeRating {
                wins: count(&mode, "win"),
                losses: count(&mode, "loss"),
                draws: count(&mode, "draw"),
                mode,
                rating,
                deviation,
                volatility,
                games,
                updated_at_ms,
            })
            .collect(),
        recent_matches: matches
            .into_iter()
            .map(|(match_id, mode, region, outcome, reason, rating_before, rating_after, ended_at_ms)| RecentMatch {
                match_id,
                mode,
                region,
                outcome,
                reason,
                rating_before,
                rating_after,
                ended_at_ms,
            })
            .collect(),
    })
}

const SELECT_RATINGS: &str = "SELECT mode, rating, deviation, volatility, games, updated_at \
    FROM ratings WHERE user_id = $1 ORDER BY mode";

const SELECT_COUNTS: &str = "SELECT m.mode, p.outcome, COUNT(*) FROM match_players p \
    JOIN matches m ON m.match_id = p.match_id WHERE p.user_id = $1 GROUP BY m.mode, p.outcome";

const SELECT_RECENT: &str = "SELECT p.match_id, m.mode, m.region, p.outcome, m.reason, \
    p.rating_before, p.rating_after, m.ended_at FROM match_players p \
    JOIN matches m ON m.match_id = p.match_id WHERE p.user_id = $1 \
    ORDER BY m.ended_at DESC, p.match_id LIMIT $2";

struct ApiState {
    db: Db,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatingsQuery {
    recent: Option<u32>,
}

async fn player_ratings(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<RatingsQuery>, QueryRejection>,
) -> Result<ApiJson<PlayerRatings>, ApiError> {
    let Path(user_id) = path.map_err(|e| ApiError::msg(ErrorCode::InvalidField, format!("user_id: {e}")))?;
    let Query(query) = query.map_err(|e| ApiError::msg(ErrorCode::InvalidField, e.body_text()))?;
    let recent = query.recent.unwrap_or(DEFAULT_RECENT);
    if recent > MAX_RECENT {
        return Err(ApiError::msg(ErrorCode::InvalidField, format!("recent {recent} is above {MAX_RECENT}")));
    }
    let player = read_player(&state.db, user_id, recent).await.map_err(ApiError::internal)?;
    Ok(ApiJson(player))
}
