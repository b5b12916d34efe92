//! The launcher's instance host: serves the matchmaker's in-process allocator
//! ([`matchmaker::allocation::InProcess`]) from one high-density
//! [`InstanceHost`](instance_server::server::InstanceHost).
//!
//! Each `HostRequest::Allocate` carries the matchmaker's `MatchSpec` (match id, mode, two teams
//! of user ids). It becomes the instance's `MatchSpec` the way the instance binary turns the
//! process spawner's assignment into one ([`Assignment::to_spec`]: seat A and seat B are the two
//! teams' single users, starter decks from the catalog chosen by the match id, usernames derived
//! from the user ids), with a random seed; the match is created on the host and the host's
//! address answers the request. Only 1v1: any other team size is an allocation failure, which
//! makes the matchmaker re-queue the tickets. `HostRequest::Release` needs nothing: a match
//! leaves the host by itself once it has ended and reported its result.

use instance_server::catalog::Catalog;
use instance_server::server::{Assignment, HostError, InstanceHost, MatchSpec};
use matchmaker::allocation::{AllocError, Allocation, HostRequest, InstanceAddr};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Answers the allocator's requests until `shutdown` fires (or the matchmaker drops the
/// allocator), then waits for the host's matches to abort, report and close their links.
pub async fn serve(
    host: InstanceHost,
    mut requests: mpsc::Receiver<HostRequest>,
    turn_ms: i64,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            request = requests.recv() => request,
            () = shutdown.cancelled() => None,
        };
        let Some(request) = request else { break };
        match request {
            HostRequest::Allocate { spec, reply } => {
                let answer = allocate(&host, &spec, turn_ms, rand::random());
                match &answer {
                    Ok(a) => tracing::info!(match_id = %spec.match_id, instance = %a.instance_id, "match hosted"),
                    Err(e) => tracing::warn!(match_id = %spec.match_id, error = %e, "match not hosted"),
                }
                // The allocator may have timed out and gone; the match then ends unjoined.
                let _ = reply.send(answer);
            }
            HostRequest::Release { match_id, instance_id } => {
                tracing::debug!(%match_id, %instance_id, "match released");
            }
        }
    }
    // Refuse what is still queued rather than letting the allocator wait for its timeout.
    requests.close();
    while let Ok(request) = requests.try_recv() {
        if let HostRequest::Allocate { reply, .. } = request {
            let _ = reply.send(Err(AllocError::NoCapacity));
        }
    }
    host.stopped().await;
}

/// Hosts the matchmaker's match on `host`.
pub fn allocate(
    host: &InstanceHost,
    spec: &matchmaker::allocation::MatchSpec,
    turn_ms: i64,
    seed: u64,
) -> Result<Allocation, AllocError> {
    let instance_spec = instance_spec(spec, host.catalog(), turn_ms, seed)?;
    let address = match host.create_match(instance_spec) {
        Ok(address) => address,
        // An allocation repeated for the same match (after a lost answer) gets the same place.
        Err(HostError::DuplicateMatch(_)) => host.address().clone(),
        Err(HostError::Full { .. } | HostError::ShuttingDown) => return Err(AllocError::NoCapacity),
        Err(e) => return Err(AllocError::Failed(e.to_string())),
    };
    Ok(Allocation {
        instance_id: address.instance_id,
        address: InstanceAddr { host: address.host, udp_port: address.udp_port, ws_url: Some(address.ws_url) },
    })
}

/// The instance's spec for the matchmaker's: 1v1 only, decks and usernames as
/// [`Assignment::to_spec`] gives them, and `seed`.
pub fn instance_spec(
    spec: &matchmaker::allocation::MatchSpec,
    catalog: &Catalog,
    turn_ms: i64,
    seed: u64,
) -> Result<MatchSpec, AllocError> {
    let [a, b] = &spec.teams;
    if a.len() != 1 || b.len() != 1 {
        return Err(AllocError::Failed(format!(
            "the launcher's instance host plays 1v1 only; mode {:?} has teams of {} and {}",
            spec.mode,
            a.len(),
            b.len()
        )));
    }
    let assignment = Assignment {
        match_id: spec.match_id,
        mode: spec.mode.clone(),
        region: spec.region.clone(),
        teams: spec.teams.clone(),
        created_at_ms: spec.created_at_ms,
    };
    let mut instance = assignment.to_spec(catalog, turn_ms).map_err(|e| AllocError::Failed(e.to_string()))?;
    instance.seed = seed;
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn spec(teams: [Vec<Uuid>; 2]) -> matchmaker::allocation::MatchSpec {
        matchmaker::allocation::MatchSpec {
            match_id: Uuid::new_v4(),
            mode: "duel".into(),
            region: "local".into(),
            teams,
            created_at_ms: 1,
        }
    }

    #[test]
    fn a_duel_becomes_two_seats_with_starter_decks_and_the_given_seed() {
        let catalog = Catalog::standard();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let s = spec([vec![a], vec![b]]);
        let got = instance_spec(&s, &catalog, 30_000, 42).map_err(|e| e.to_string());
        let got = match got {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((got.match_id, got.mode.as_str(), got.seed, got.turn_ms), (s.match_id, "duel", 42, 30_000));
        assert_eq!((got.seats[0].user_id, got.seats[1].user_id), (a, b));
        assert!(got.seats[0].username.starts_with("player-"));
        let decks: Vec<_> = catalog.starter_decks().iter().map(|d| d.deck().clone()).collect();
        assert!(got.seats.iter().all(|seat| decks.contains(&seat.deck)));
    }

    #[test]
    fn other_team_sizes_are_refused() {
        let catalog = Catalog::standard();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for teams in [[vec![a, b], vec![c]], [vec![a], vec![]], [vec![a, b], vec![c, Uuid::new_v4()]]] {
            let got = instance_spec(&spec(teams), &catalog, 30_000, 1);
            assert!(matches!(got, Err(AllocError::Failed(ref m)) if m.contains("1v1")), "{got:?}");
        }
    }
}
