//! The quality score of a match, 0 (hopeless) to 1 (a coin flip between equals).
//!
//! `quality = balance × closeness`, where
//!
//! - **balance** = `1 − |2E − 1|`, with `E` the Glicko expected score of team A against team B:
//!   `E = 1 / (1 + 10^(−g(φ)·(μA − μB)/400))`, `μ` a team's mean member rating, `φ² = φA² + φB²`
//!   with `φX` the root mean square of the team's members' deviations, and
//!   `g(φ) = 1 / √(1 + 3q²φ²/π²)`, `q = ln 10 / 400`. Even teams give 1; a sure win gives 0. Large
//!   deviations flatten `g`, so a match between players the system knows little about counts as
//!   more even than the same gap between well-known players.
//! - **closeness** = `1 / (1 + (spread/400)²)`, with `spread` the largest minus the smallest
//!   ticket rating in the match (a party counts at its mean). It penalises matches whose team
//!   totals balance but whose players are far apart (2500 + 1000 against 1750 + 1750).
//!
//! Examples (deviation 50 everywhere): equal ratings 1.0; a 1v1 gap of 100 ≈ 0.68; of 300 ≈ 0.20;
//! of 500 ≈ 0.04.

use std::f64::consts::{LN_10, PI};

use super::types::Ticket;

/// The quality of a match between these two teams (see the module doc for the formula).
pub fn quality(teams: &[Vec<Ticket>; 2]) -> f64 {
    let (mu_a, phi_a) = team_stats(&teams[0]);
    let (mu_b, phi_b) = team_stats(&teams[1]);
    let balance = balance(mu_a - mu_b, (phi_a * phi_a + phi_b * phi_b).sqrt());
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for t in teams.iter().flatten() {
        let r = t.rating();
        lo = lo.min(r);
        hi = hi.max(r);
    }
    let spread = if hi >= lo { hi - lo } else { 0.0 };
    let q = balance * closeness(spread);
    if q.is_finite() { q.clamp(0.0, 1.0) } else { 0.0 }
}

/// `1 − |2E − 1|` for a rating difference `diff` under combined deviation `phi`.
pub fn balance(diff: f64, phi: f64) -> f64 {
    let q = LN_10 / 400.0;
    let g = 1.0 / (1.0 + 3.0 * q * q * phi * phi / (PI * PI)).sqrt();
    let e = 1.0 / (1.0 + 10f64.powf(-g * diff / 400.0));
    1.0 - (2.0 * e - 1.0).abs()
}

/// `1 / (1 + (spread/400)²)`.
pub fn closeness(spread: f64) -> f64 {
    let x = spread / 400.0;
    1.0 / (1.0 + x * x)
}

/// A team's mean member rating and root-mean-square deviation.
fn team_stats(team: &[Ticket]) -> (f64, f64) {
    let (mut n, mut sum, mut sq) = (0usize, 0.0, 0.0);
    for m in team.iter().flat_map(|t| &t.members) {
        n += 1;
        sum += m.rating;
        sq += m.deviation * m.deviation;
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    (sum / n as f64, (sq / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples_hold() {
        let phi = (2.0f64 * 50.0 * 50.0).sqrt();
        let q = |gap: f64| balance(gap, phi) * closeness(gap);
        assert!((q(0.0) - 1.0).abs() < 1e-12);
        assert!((q(100.0) - 0.68).abs() < 0.01, "{}", q(100.0));
        assert!((q(300.0) - 0.20).abs() < 0.01, "{}", q(300.0));
        assert!((q(500.0) - 0.04).abs() < 0.01, "{}", q(500.0));
        assert!(balance(200.0, 700.0) > balance(200.0, 70.0), "uncertainty flattens the odds");
    }
}
