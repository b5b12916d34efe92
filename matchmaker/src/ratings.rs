//! Glicko-2 ratings (the `skillratings` crate), for 1v1 and for teams.
//!
//! **Teams: per-player updates against a composite opponent.** Each player is rated as if they
//! had played one game, in a rating period of its own, against one opponent standing for the
//! other team: that team's mean rating, with the root mean square of its deviations (and mean
//! volatility). Every player keeps their own rating, deviation and volatility, so a newcomer
//! (large deviation) moves much more than a veteran on the same team, and a player's rating stays
//! theirs when they change teammates. For 1v1 the composite opponent is the opponent and the
//! update is exactly Glicko-2's (a test checks it against `skillratings::glicko2::glicko2`).
//!
//! New players start at 1500 with deviation 350 and volatility 0.06 (Glickman's defaults).
//! Deviation does not grow with inactivity here: a player is rated when a match ends, not per
//! calendar period.

use skillratings::Outcomes;
use skillratings::glicko2::{Glicko2Config, Glicko2Rating, glicko2_rating_period};

/// One player's Glicko-2 rating in one mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rating {
    pub rating: f64,
    pub deviation: f64,
    pub volatility: f64,
}

impl Rating {
    /// Where a player without games starts: 1500 / 350 / 0.06.
    pub const NEW: Rating = Rating { rating: 1500.0, deviation: 350.0, volatility: 0.06 };
}

impl Default for Rating {
    fn default() -> Self {
        Rating::NEW
    }
}

/// Which team won, by index (0 or 1), or a draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winner {
    Team(u8),
    Draw,
}

/// One player's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Win,
    Loss,
    Draw,
}

impl Standing {
    /// The standing of a player of `team` under `winner`.
    pub fn of(team: u8, winner: Winner) -> Standing {
        match winner {
            Winner::Draw => Standing::Draw,
            Winner::Team(w) if w == team => Standing::Win,
            Winner::Team(_) => Standing::Loss,
        }
    }

    /// As stored in `match_players.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Win => "win",
            Standing::Loss => "loss",
            Standing::Draw => "draw",
        }
    }

    fn outcome(self) -> Outcomes {
        match self {
            Standing::Win => Outcomes::WIN,
            Standing::Loss => Outcomes::LOSS,
            Standing::Draw => Outcomes::DRAW,
        }
    }
}

/// Glicko-2's system constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatingConfig {
    /// How much volatility may change per game; Glickman suggests 0.3 to 1.2.
    pub tau: f64,
}

impl Default for RatingConfig {
    fn default() -> Self {
        RatingConfig { tau: 0.5 }
    }
}

/// The ratings of both teams after a match (same shape as `teams`). A `Winner::Team` index other
/// than 0 or 1 is treated as a draw; the store rejects it before it gets here.
pub fn rate_teams(teams: [&[Rating]; 2], winner: Winner, config: &RatingConfig) -> [Vec<Rating>; 2] {
    let cfg = Glicko2Config { tau: config.tau, ..Glicko2Config::new() };
    let winner = match winner {
        Winner::Team(t) if t > 1 => Winner::Draw,
        w => w,
    };
    let composite = [composite(teams[0]), composite(teams[1])];
    let mut out: [Vec<Rating>; 2] = [Vec::new(), Vec::new()];
    for (t, team) in teams.iter().enumerate() {
        // t is 0 or 1.
        let standing = Standing::of(t as u8, winner);
        let opponent = composite[1 - t];
        out[t] = team
            .iter()
            .map(|p| {
                let me = to_glicko(*p);
                let new = glicko2_rating_period(&me, &[(opponent, standing.outcome())], &cfg);
                Rating { rating: new.rating, deviation: new.deviation, volatility: new.volatility }
            })
            .collect();
    }
    out
}

fn to_glicko(r: Rating) -> Glicko2Rating {
    Glicko2Rating { rating: r.rating, deviation: r.deviation, volatility: r.volatility }
}

/// One opponent standing for a team: mean rating, RMS deviation, mean volatility.
fn composite(team: &[Rating]) -> Glicko2Rating {
    if team.is_empty() {
        return Glicko2Rating::new();
    }
    let n = team.len() as f64;
    Glicko2Rating {
        rating: team.iter().map(|r| r.rating).sum::<f64>() / n,
        deviation: (team.iter().map(|r| r.deviation * r.deviation).sum::<f64>() / n).sqrt(),
        volatility: team.iter().map(|r| r.volatility).sum::<f64>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skillratings::glicko2::glicko2;

    #[test]
    fn one_v_one_is_plain_glicko2() {
        let a = Rating { rating: 1620.0, deviation: 80.0, volatility: 0.059 };
        let b = Rating { rating: 1480.0, deviation: 200.0, volatility: 0.061 };
        for (winner, outcome) in [(Winner::Team(0), Outcomes::WIN), (Winner::Team(1), Outcomes::LOSS), (Winner::Draw, Outcomes::DRAW)] {
            let [ra, rb] = rate_teams([&[a], &[b]], winner, &RatingConfig::default());
            let (ea, eb) = glicko2(&to_glicko(a), &to_glicko(b), &outcome, &Glicko2Config::new());
            for (got, want) in [(ra[0], ea), (rb[0], eb)] {
                assert!((got.rating - want.rating).abs() < 1e-9, "{winner:?}: {got:?} vs {want:?}");
                assert!((got.deviation - want.deviation).abs() < 1e-9);
                assert!((got.volatility - want.volatility).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn new_players_start_at_1500_350_and_move_more_than_veterans() {
        assert_eq!(Rating::default(), Rating { rating: 1500.0, deviation: 350.0, volatility: 0.06 });
        let vet = Rating { rating: 1500.0, deviation: 60.0, volatility: 0.06 };
        let foe = Rating { rating: 1500.0, deviation: 60.0, volatility: 0.06 };
        let [winners, losers] = rate_teams([&[Rating::NEW, vet], &[foe, foe]], Winner::Team(0), &RatingConfig::default());
        assert!(winners[0].rating - 1500.0 > winners[1].rating - 1500.0);
        assert!(winners[1].rating > 1500.0 && losers.iter().all(|r| r.rating < 1500.0));
        assert!(winners[0].deviation < 350.0, "a game shrinks uncertainty");
    }
}
