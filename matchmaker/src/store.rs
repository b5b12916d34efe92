//! The matchmaker's tables: `ratings`, `matches` and `match_players`, on Postgres or SQLite.
//!
//! A result is recorded in one transaction that first inserts the `matches` row with
//! `ON CONFLICT (match_id) DO NOTHING`. That insert is the idempotency guard: if it inserts
//! nothing, the match was recorded before and the transaction ends without a change. Of two
//! concurrent reports of one match, the second insert waits on the first one's uncommitted key
//! (Postgres) or on its write lock (SQLite serialises writers), then finds the row: exactly one
//! applies. The players' rating rows are then created if missing and locked in user-id order
//! (`FOR UPDATE` on Postgres, so two different matches of one player cannot lose an update;
//! SQLite's single writer already gives that), updated with Glicko-2 and written to the history.
//!
//! SQL is the same in both dialects except the row lock, whose two texts stand side by side.

use migrations::{Db, on_db};
use uuid::Uuid;

use crate::ratings::{Rating, RatingConfig, Standing, Winner, rate_teams};

/// How many users one [`ResultStore::read_ratings`] call may ask for.
pub const MAX_LOOKUP: usize = 64;
/// The most players one match result may name.
pub const MAX_PLAYERS: usize = 32;
const MAX_NAME: usize = 64;
const MAX_REASON: usize = 200;

/// A finished match as the instance reports it (by match id; reports are retried, so they
/// repeat).
#[derive(Clone, Debug, PartialEq)]
pub struct MatchResult {
    pub match_id: Uuid,
    /// The mode's name ("duel").
    pub mode: String,
    pub region: String,
    /// When the matchmaker made the match (unix ms).
    pub created_at_ms: i64,
    pub ended_at_ms: i64,
    /// The user ids of each team.
    pub teams: [Vec<Uuid>; 2],
    pub winner: Winner,
    /// How it ended ("hero_destroyed", "concede", "forfeit", ...).
    pub reason: String,
}

/// One player's rating change from a recorded match.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatingChange {
    pub user_id: Uuid,
    pub team: u8,
    pub standing: Standing,
    pub before: Rating,
    pub after: Rating,
}

/// What recording a result did.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    /// Stored now, with these rating changes.
    Applied(Vec<RatingChange>),
    /// Stored before; nothing changed. The report is acknowledged all the same.
    Duplicate,
}

/// A stored match and its players, as history shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMatch {
    pub match_id: Uuid,
    pub mode: String,
    pub region: String,
    pub created_at_ms: i64,
    pub ended_at_ms: i64,
    pub winner: Winner,
    pub reason: String,
    pub recorded_at_ms: i64,
    pub players: Vec<PlayerRecord>,
}

/// One player's line in the match history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayerRecord {
    pub user_id: Uuid,
    pub team: u8,
    pub standing: Standing,
    pub rating_before: f64,
    pub deviation_before: f64,
    pub rating_after: f64,
    pub deviation_after: f64,
}

/// Failures of the results store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid result for match {match_id}: {reason}")]
    InvalidResult { match_id: Uuid, reason: String },
    #[error("{0} users in one rating lookup, at most 64")]
    TooManyUsers(usize),
    #[error("stored match {0} has an unknown outcome {1:?}")]
    Corrupt(Uuid, String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Ratings and results on a migrated [`Db`].
#[derive(Clone, Debug)]
pub struct ResultStore {
    db: Db,
    config: RatingConfig,
}

const SELECT_RATING_PG: &str =
    "SELECT rating, deviation, volatility FROM ratings WHERE user_id = $1 AND mode = $2 FOR UPDATE";
const SELECT_RATING_LITE: &str =
    "SELECT rating, deviation, volatility FROM ratings WHERE user_id = $1 AND mode = $2";

const INSERT_MATCH: &str = "INSERT INTO matches \
    (match_id, mode, region, created_at, ended_at, winning_team, reason, recorded_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (match_id) DO NOTHING";

const ENSURE_RATING: &str = "INSERT INTO ratings \
    (user_id, mode, rating, deviation, volatility, games, updated_at) \
    VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (user_id, mode) DO NOTHING";

const UPDATE_RATING: &str = "UPDATE ratings SET rating = $3, deviation = $4, volatility = $5, \
    games = games + 1, updated_at = $6 WHERE user_id = $1 AND mode = $2";

const INSERT_PLAYER: &str = "INSERT INTO match_players \
    (match_id, user_id, team, outcome, rating_before, deviation_before, rating_after, deviation_after) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const SELECT_MATCH: &str = "SELECT mode, region, created_at, ended_at, winning_team, reason, recorded_at \
    FROM matches WHERE match_id = $1";

const SELECT_PLAYERS: &str = "SELECT user_id, team, outcome, rating_before, deviation_before, \
    rating_after, deviation_after FROM match_players WHERE match_id = $1 ORDER BY team, user_id";

impl ResultStore {
    pub fn new(db: Db) -> ResultStore {
        ResultStore { db, config: RatingConfig::default() }
    }

    pub fn with_config(db: Db, config: RatingConfig) -> ResultStore {
        ResultStore { db, config }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The ratings of `user_ids` in `mode`, in the same order; players without a rating row get
    /// [`Rating::NEW`].
    pub async fn read_ratings(&self, user_ids: &[Uuid], mode: &str) -> Result<Vec<Rating>, StoreError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        if user_ids.len() > MAX_LOOKUP {
            return Err(StoreError::TooManyUsers(user_ids.len()));
        }
        let placeholders: Vec<String> = (0..user_ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT user_id, rating, deviation, volatility FROM ratings WHERE mode = $1 AND user_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(Uuid, f64, f64, f64)> = on_db!(&self.db, |pool| {
            let mut q = sqlx::query_as(&sql).bind(mode);
            for id in user_ids {
                q = q.bind(*id);
            }
            q.fetch_all(pool).await
        })?;
        Ok(user_ids
            .iter()
            .map(|id| {
                rows.iter()
                    .find(|r| r.0 == *id)
                    .map_or(Rating::NEW, |r| Rating { rating: r.1, deviation: r.2, volatility: r.3 })
            })
            .collect())
    }

    /// Stores a result once per match id, in one transaction with the players' Glicko-2 updates
    /// and the match history. A repeated report is [`Recorded::Duplicate`] and changes nothing
    /// (the first report stands, whatever the repeat says).
    pub async fn record_result(&self, result: &MatchResult, now_ms: i64) -> Result<Recorded, StoreError> {
        validate(result)?;
        let winning_team: Option<i32> = match result.winner {
            Winner::Team(t) => Some(i32::from(t)),
            Winner::Draw => None,
        };
        // Lock order: user id, so two transactions never wait on each other in a cycle.
        let mut players: Vec<(Uuid, u8)> = result.teams[0]
            .iter()
            .map(|u| (*u, 0u8))
            .chain(result.teams[1].iter().map(|u| (*u, 1u8)))
            .collect();
        players.sort_unstable();
        let select = match &self.db {
            Db::Postgres(_) => SELECT_RATING_PG,
            Db::Sqlite(_) => SELECT_RATING_LITE,
        };
        let config = self.config;
        let r = result;
        let changes: Option<Vec<RatingChange>> = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(INSERT_MATCH)
                .bind(r.match_id)
                .bind(&r.mode)
                .bind(&r.region)
                .bind(r.created_at_ms)
                .bind(r.ended_at_ms)
                .bind(winning_team)
                .bind(&r.reason)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                Ok::<_, sqlx::Error>(None)
            } else {
                let mut before = Vec::with_capacity(players.len());
                for &(user, _) in &players {
                    let new = Rating::NEW;
                    sqlx::query(ENSURE_RATING)
                        .bind(user)
                        .bind(&r.mode)
                        .bind(new.rating)
                        .bind(new.deviation)
                        .bind(new.volatility)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    let (rating, deviation, volatility): (f64, f64, f64) =
                        sqlx::query_as(select).bind(user).bind(&r.mode).fetch_one(&mut *tx).await?;
                    before.push(Rating { rating, deviation, volatility });
                }
                let changes = compute_changes(&players, &before, r.winner, &config);
                for c in &changes {
                    sqlx::query(UPDATE_RATING)
                        .bind(c.user_id)
                        .bind(&r.mode)
                        .bind(c.after.rating)
                        .bind(c.after.deviation)
                        .bind(c.after.volatility)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(INSERT_PLAYER)
                        .bind(r.match_id)
                        .bind(c.user_id)
                        .bind(i32::from(c.team))
                        .bind(c.standing.as_str())
                        .bind(c.before.rating)
                        .bind(c.before.deviation)
                        .bind(c.after.rating)
                        .bind(c.after.deviation)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Some(changes))
            }
        })?;
        Ok(match changes {
            Some(c) => Recorded::Applied(c),
            None => Recorded::Duplicate,
        })
    }

    /// A recorded match with its players (ordered by team, then user id), or `None`.
    pub async fn stored_match(&self, match_id: Uuid) -> Result<Option<StoredMatch>, StoreError> {
        type MatchRow = (String, String, i64, i64, Option<i32>, String, i64);
        type PlayerRow = (Uuid, i32, String, f64, f64, f64, f64);
        let row: Option<MatchRow> =
            on_db!(&self.db, |pool| sqlx::query_as(SELECT_MATCH).bind(match_id).fetch_optional(pool).await)?;
        let Some((mode, region, created_at_ms, ended_at_ms, winning, reason, recorded_at_ms)) = row else {
            return Ok(None);
        };
        let rows: Vec<PlayerRow> =
            on_db!(&self.db, |pool| sqlx::query_as(SELECT_PLAYERS).bind(match_id).fetch_all(pool).await)?;
        let mut players = Vec::with_capacity(rows.len());
        for (user_id, team, outcome, rb, db, ra, da) in rows {
            let standing = match outcome.as_str() {
                "win" => Standing::Win,
                "loss" => Standing::Loss,
                "draw" => Standing::Draw,
                _ => return Err(StoreError::Corrupt(match_id, outcome)),
            };
            let team = u8::try_from(team).map_err(|_| StoreError::Corrupt(match_id, format!("team {team}")))?;
            players.push(PlayerRecord {
                user_id,
                team,
                standing,
                rating_before: rb,
                deviation_before: db,
                rating_after: ra,
                deviation_after: da,
            });
        }
        let winner = match winning {
            None => Winner::Draw,
            Some(t) => Winner::Team(u8::try_from(t).map_err(|_| StoreError::Corrupt(match_id, format!("winner {t}")))?),
        };
        Ok(Some(StoredMatch {
            match_id,
            mode,
            region,
            created_at_ms,
            ended_at_ms,
            winner,
            reason,
            recorded_at_ms,
            players,
        }))
    }

    /// How many rated games a user has played in `mode`.
    pub async fn games(&self, user_id: Uuid, mode: &str) -> Result<i64, StoreError> {
        let sql = "SELECT games FROM ratings WHERE user_id = $1 AND mode = $2";
        let games: Option<i64> =
            on_db!(&self.db, |pool| sqlx::query_scalar(sql).bind(user_id).bind(mode).fetch_optional(pool).await)?;
        Ok(games.unwrap_or(0))
    }
}

fn validate(r: &MatchResult) -> Result<(), StoreError> {
    let bad = |reason: &str| Err(StoreError::InvalidResult { match_id: r.match_id, reason: reason.to_owned() });
    if r.teams.iter().any(Vec::is_empty) {
        return bad("a team has no player");
    }
    if r.teams[0].len() + r.teams[1].len() > MAX_PLAYERS {
        return bad("more than 32 players");
    }
    let all: Vec<&Uuid> = r.teams.iter().flatten().collect();
    if all.iter().enumerate().any(|(i, u)| all[..i].contains(u)) {
        return bad("a player appears twice");
    }
    if matches!(r.winner, Winner::Team(t) if t > 1) {
        return bad("winning team is not 0 or 1");
    }
    if r.mode.is_empty() || r.mode.len() > MAX_NAME || r.region.is_empty() || r.region.len() > MAX_NAME {
        return bad("mode and region must be 1 to 64 bytes");
    }
    if r.reason.len() > MAX_REASON {
        return bad("reason longer than 200 bytes");
    }
    if r.ended_at_ms < r.created_at_ms {
        return bad("ended before it was created");
    }
    Ok(())
}

/// The rating changes of `players` (sorted (user, team) pairs with their ratings `before`).
fn compute_changes(players: &[(Uuid, u8)], before: &[Rating], winner: Winner, config: &RatingConfig) -> Vec<RatingChange> {
    let team_of = |t: u8| -> Vec<Rating> {
        players.iter().zip(before).filter(|(p, _)| p.1 == t).map(|(_, r)| *r).collect()
    };
    let (a, b) = (team_of(0), team_of(1));
    let [after_a, after_b] = rate_teams([&a, &b], winner, config);
    let (mut ia, mut ib) = (after_a.into_iter(), after_b.into_iter());
    players
        .iter()
        .zip(before)
        .map(|(&(user_id, team), &before)| {
            // rate_teams keeps each team's order, which is the order of `players` filtered by team.
            let after = if team == 0 { ia.next() } else { ib.next() }.unwrap_or(before);
            RatingChange { user_id, team, standing: Standing::of(team, winner), before, after }
        })
        .collect()
}
