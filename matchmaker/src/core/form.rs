//! Forming a team match around a seed: choosing tickets that all accept one another and fill two
//! teams exactly (parties stay whole), then splitting them into the two teams with the closest
//! rating totals.

/// What formation needs to know of one ticket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pick {
    pub players: u8,
    /// The ticket's rating (party mean), which windows compare.
    pub rating: f64,
    /// The sum of the members' ratings, which team balance compares.
    pub sum: f64,
    /// The ticket's window now.
    pub window: f64,
}

impl Pick {
    /// Mutual acceptance: the gap fits both windows.
    pub fn accepts(&self, other: &Pick) -> bool {
        (self.rating - other.rating).abs() <= self.window.min(other.window)
    }
}

/// The outcome of [`select`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Formation {
    /// Indices into the candidates (the seed not included) that complete a match.
    Found(Vec<usize>),
    /// No subset of the candidates completes a match.
    Infeasible,
    /// The search budget ran out before an answer: look again later.
    Exhausted,
}

/// Chooses candidates that, with `seed`, fill two teams of `team_size` exactly, accept one
/// another pairwise, and can be split into two teams without breaking a party. `cands` are
/// already known to accept the seed and come nearest first, so the depth-first search finds the
/// nearest such set first; `budget` bounds the nodes it visits.
pub(crate) fn select(seed: &Pick, cands: &[Pick], team_size: u8, budget: usize) -> Formation {
    let need = 2 * usize::from(team_size) - usize::from(seed.players);
    let mut chosen = Vec::with_capacity(need);
    let mut left = budget;
    let mut sizes = Vec::with_capacity(need + 1);
    match dfs(seed, cands, team_size, need, 0, 0, &mut chosen, &mut left, &mut sizes) {
        Some(true) => Formation::Found(chosen),
        Some(false) => Formation::Infeasible,
        None => Formation::Exhausted,
    }
}

/// `Some(true)` with `chosen` filled when found, `Some(false)` when the subtree has no answer,
/// `None` when the budget ran out.
#[allow(clippy::too_many_arguments)]
fn dfs(
    seed: &Pick,
    cands: &[Pick],
    team_size: u8,
    need: usize,
    have: usize,
    from: usize,
    chosen: &mut Vec<usize>,
    budget: &mut usize,
    sizes: &mut Vec<u8>,
) -> Option<bool> {
    if have == need {
        sizes.clear();
        sizes.push(seed.players);
        sizes.extend(chosen.iter().map(|&i| cands[i].players));
        return Some(splittable(sizes, team_size));
    }
    for i in from..cands.len() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        let c = &cands[i];
        if have + usize::from(c.players) > need || !chosen.iter().all(|&j| cands[j].accepts(c)) {
            continue;
        }
        chosen.push(i);
        if dfs(seed, cands, team_size, need, have + usize::from(c.players), i + 1, chosen, budget, sizes)? {
            return Some(true);
        }
        chosen.pop();
    }
    Some(false)
}

/// Whether parties of these sizes (summing to `2 × team_size`) split into two full teams.
fn splittable(sizes: &[u8], team_size: u8) -> bool {
    // Reachable subset sums as bits; team sizes are at most 6, so sums stay below 64.
    let mut reach: u64 = 1;
    for &s in sizes {
        reach |= reach << s;
    }
    reach & (1u64 << team_size) != 0
}

/// Splits tickets (players, rating sum) into two teams of `team_size` players with the smallest
/// difference of rating totals. Ticket 0 goes to the first team. Returns a mask of the tickets
/// on the first team, or `None` if no split fills both teams.
pub(crate) fn balance(tickets: &[(u8, f64)], team_size: u8) -> Option<u32> {
    let n = tickets.len();
    if n == 0 || n > 2 * usize::from(super::types::MAX_TEAM_SIZE) {
        return None;
    }
    let total: f64 = tickets.iter().map(|t| t.1).sum();
    let mut best: Option<(f64, u32)> = None;
    for rest in 0u32..(1u32 << (n - 1)) {
        let mask = (rest << 1) | 1;
        let (mut players, mut sum) = (0usize, 0.0);
        for (i, t) in tickets.iter().enumerate() {
            if mask & (1 << i) != 0 {
                players += usize::from(t.0);
                sum += t.1;
            }
        }
        if players != usize::from(team_size) {
            continue;
        }
        let diff = (2.0 * sum - total).abs();
        if best.is_none_or(|(d, _)| diff < d) {
            best = Some((diff, mask));
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(players: u8, rating: f64) -> Pick {
        Pick { players, rating, sum: rating * f64::from(players), window: 1000.0 }
    }

    #[test]
    fn select_skips_parties_that_cannot_split() {
        // 3v3 around a party of two: two more parties of two make six players, but {2, 2, 2}
        // cannot make a team of three, so the search moves on to the solos.
        let seed = pick(2, 1500.0);
        let cands = [pick(2, 1500.0), pick(2, 1500.0), pick(1, 1500.0), pick(1, 1500.0)];
        assert_eq!(select(&seed, &cands, 3, 1000), Formation::Found(vec![0, 2, 3]));
    }

    #[test]
    fn select_requires_pairwise_acceptance() {
        let seed = Pick { window: 300.0, ..pick(1, 1500.0) };
        let a = Pick { window: 100.0, ..pick(1, 1300.0) };
        let b = Pick { window: 100.0, ..pick(1, 1700.0) };
        let c = Pick { window: 500.0, ..pick(1, 1550.0) };
        // a and b are young (window 100) and 400 apart, and neither accepts c (250 and 150 away):
        // a 2v2 needs three more players who accept one another, and there are none.
        assert_eq!(select(&seed, &[a, b, c], 2, 1000), Formation::Infeasible);
        let d = Pick { window: 500.0, ..pick(1, 1450.0) };
        let e = Pick { window: 500.0, ..pick(1, 1500.0) };
        assert_eq!(select(&seed, &[a, b, c, d, e], 2, 1000), Formation::Found(vec![2, 3, 4]));
    }

    #[test]
    fn balance_minimises_the_difference_of_totals() {
        // 2000 + 1000 against 1600 + 1400: both 3000.
        let tickets = [(1, 2000.0), (1, 1600.0), (1, 1400.0), (1, 1000.0)];
        assert_eq!(balance(&tickets, 2), Some(0b1001));
        // A party of two (sum 3000) must face the two solos.
        let tickets = [(1, 1500.0), (2, 3000.0), (1, 1600.0)];
        assert_eq!(balance(&tickets, 2), Some(0b101));
    }
}
