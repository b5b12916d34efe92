//! The dispatcher: allocates an instance for each formed match (bounded concurrency), mints the
//! join tokens, pushes `MatchFoundPush` to each ticket's GCS node until acknowledged, and puts
//! the tickets back in the queue when allocation fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::tavern::{
    InstanceAddressT, MatchEndedT, MatchFoundPushT, MatchPlayerT, QueueState, ServiceBodyT, ServiceMessageT, TicketStatusT, UuidT,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::index::{CANCELLED, MATCHED, MATCHED_CANCEL, TicketEntry, WAITING};
use super::shard::{ShardRequest, push_expired};
use super::{Shared, now_ms};
use crate::allocation::{AllocError, Allocation, MatchSpec};
use crate::core::{ModeId, Ticket};

/// A formed match on its way to an instance.
#[derive(Debug)]
pub struct MatchJob {
    pub match_id: Uuid,
    pub mode: ModeId,
    pub mode_name: String,
    pub region: String,
    pub created_at_ms: i64,
    pub quality: f64,
    pub teams: [Vec<(Ticket, Arc<TicketEntry>)>; 2],
}

/// An allocated match waiting for its result.
#[derive(Clone, Debug)]
pub struct LiveMatch {
    pub mode: String,
    pub region: String,
    pub created_at_ms: i64,
    pub instance_id: String,
    pub teams: [Vec<Uuid>; 2],
    /// The GCS node of each player, told `MatchEnded` once the result is stored.
    pub nodes: Vec<(String, Uuid)>,
    /// Where the match is played, for rejoin tokens.
    pub address: InstanceAddressT,
}

/// How long the players' GCS nodes are told a match ended before the matchmaker gives up.
const MATCH_ENDED_PUSH_FOR_MS: i64 = 60_000;

/// Tells the GCS nodes of a finished match that its players are back (off the result path).
pub(crate) fn push_match_ended(shared: &Shared, match_id: Uuid, live: &LiveMatch) {
    let Some(shared) = shared.this.get().and_then(std::sync::Weak::upgrade) else { return };
    let mut by_node: BTreeMap<&str, Vec<UuidT>> = BTreeMap::new();
    for (node, user) in &live.nodes {
        by_node.entry(node.as_str()).or_default().push(UuidT::from_bytes(user.into_bytes()));
    }
    let deadline = now_ms() + MATCH_ENDED_PUSH_FOR_MS;
    for (node, users) in by_node {
        let ended = protocol::build!(MatchEndedT { match_id: UuidT::from_bytes(match_id.into_bytes()), user_ids: Some(users) });
        let (shared, node) = (Arc::clone(&shared), node.to_owned());
        tokio::spawn(async move {
            push_until_acked(&shared, &node, ServiceBodyT::MatchEnded(Box::new(ended)), deadline).await;
        });
    }
}

/// How long one push waits for its acknowledgement before it is sent again.
const PUSH_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two attempts of a push.
const PUSH_RETRY: Duration = Duration::from_millis(200);
/// Attempts to hand re-queued tickets back to a full intake.
const REQUEUE_ATTEMPTS: usize = 50;

/// Takes matches off the channel and allocates them, at most `max_concurrent_allocations` at a
/// time, until the channel closes or shutdown.
pub async fn run(shared: Arc<Shared>, mut jobs: mpsc::Receiver<MatchJob>) {
    let limit = Arc::new(Semaphore::new(shared.config.max_concurrent_allocations));
    let tasks = TaskTracker::new();
    loop {
        let job = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            j = jobs.recv() => j,
        };
        let Some(job) = job else { break };
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { break };
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            allocate(&shared, job).await;
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

async fn allocate(shared: &Arc<Shared>, job: MatchJob) {
    let spec = MatchSpec {
        match_id: job.match_id,
        mode: job.mode_name.clone(),
        region: job.region.clone(),
        teams: [users_of(&job.teams[0]), users_of(&job.teams[1])],
        created_at_ms: job.created_at_ms,
    };
    let name = shared.allocator.name();
    let started = Instant::now();
    let result = shared.allocator.allocate(&spec).await;
    shared.metrics.allocation_seconds.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
    let result = match result {
        Ok(allocation) => deliver(shared, &job, &spec, allocation).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        shared.metrics.allocation_failures.with_label_values(&[name, e.reason()]).inc();
        tracing::info!(match_id = %job.match_id, error = %e, "allocation failed, re-queueing the tickets");
        requeue(shared, job).await;
    }
}

/// Mints the join tokens, remembers the match for its result and pushes it to the GCS nodes.
async fn deliver(shared: &Arc<Shared>, job: &MatchJob, spec: &MatchSpec, allocation: Allocation) -> Result<(), AllocError> {
    let now = now_ms();
    let mut by_node: BTreeMap<&str, Vec<MatchPlayerT>> = BTreeMap::new();
    for (team, tickets) in job.teams.iter().enumerate() {
        for (_, entry) in tickets {
            for player in &entry.players {
                let user = Uuid::from_bytes(player.user_id.to_bytes());
                let token = match shared.joins.mint(job.match_id, user, &allocation.instance_id, now) {
                    Ok(t) => t,
                    Err(e) => {
                        shared.allocator.release(job.match_id, &allocation.instance_id).await;
                        return Err(AllocError::Failed(format!("cannot mint join tokens: {e}")));
                    }
                };
                by_node.entry(entry.node.as_str()).or_default().push(protocol::build!(MatchPlayerT {
                    player: Box::new(player.clone()),
                    ticket_id: UuidT::from_bytes(entry.id.into_bytes()),
                    join_token: token,
                    team: u8::try_from(team).unwrap_or(0),
                }));
            }
        }
    }
    let join_by_ms = now + shared.joins.ttl_ms();
    let address = protocol::build!(InstanceAddressT {
        instance_id: allocation.instance_id.clone(),
        host: allocation.address.host.clone(),
        udp_port: allocation.address.udp_port,
        ws_url: allocation.address.ws_url.clone(),
    });
    shared.live.insert(
        job.match_id,
        LiveMatch {
            mode: job.mode_name.clone(),
            region: job.region.clone(),
            created_at_ms: job.created_at_ms,
            instance_id: allocation.instance_id.clone(),
            teams: spec.teams.clone(),
            nodes: job
                .teams
                .iter()
                .flatten()
                .flat_map(|(_, entry)| entry.players.iter().map(|p| (entry.node.clone(), Uuid::from_bytes(p.user_id.to_bytes()))))
                .collect(),
            address: address.clone(),
        },
    );
    for (_, entry) in job.teams.iter().flatten() {
        shared.forget(entry);
    }
    shared.metrics.delivered.with_label_values(&[job.mode_name.as_str()]).inc();
    tracing::info!(match_id = %job.match_id, instance_id = %allocation.instance_id, quality = job.quality, "match delivered");
    // Every node hears of every player (its own players' opponents may be on other nodes), but
    // only its own players' join tokens.
    let everyone: Vec<MatchPlayerT> = by_node.values().flatten().cloned().collect();
    for (node, mine) in by_node {
        let players: Vec<MatchPlayerT> = everyone
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if !mine.iter().any(|m| m.player.user_id == p.player.user_id) {
                    p.join_token.clear();
                }
                p
            })
            .collect();
        let push = protocol::build!(MatchFoundPushT {
            match_id: UuidT::from_bytes(job.match_id.into_bytes()),
            mode: job.mode_name.clone(),
            instance: Box::new(address.clone()),
            players: Some(players),
            join_by_ms,
        });
        let (shared, node) = (Arc::clone(shared), node.to_owned());
        tokio::spawn(async move {
            push_until_acked(&shared, &node, ServiceBodyT::MatchFoundPush(Box::new(push)), join_by_ms).await;
        });
    }
    // After the pushes are under way, so players never wait on the database; inside the
    // dispatcher's tracked task, so shutdown waits for the row.
    record_match_found(shared, job, spec, &allocation).await;
    Ok(())
}

/// Attempts to record `match_found` before it is given up (and logged as an error).
const RECORD_ATTEMPTS: u32 = 3;

/// Records the delivered match in the events outbox; the match goes on if the database fails.
async fn record_match_found(shared: &Shared, job: &MatchJob, spec: &MatchSpec, allocation: &Allocation) {
    let players: Vec<serde_json::Value> = spec
        .teams
        .iter()
        .enumerate()
        .flat_map(|(team, users)| users.iter().map(move |u| serde_json::json!({ "user_id": u, "team": team })))
        .collect();
    let payload = serde_json::json!({
        "match_id": job.match_id,
        "mode": job.mode_name,
        "region": job.region,
        "players": players,
        "instance": {
            "instance_id": allocation.instance_id,
            "host": allocation.address.host,
            "udp_port": allocation.address.udp_port,
            "ws_url": allocation.address.ws_url,
        },
        "quality": job.quality,
        "created_at_ms": job.created_at_ms,
    });
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=RECORD_ATTEMPTS {
        match shared.events.record("match_found", payload.clone()).await {
            Ok(_) => return,
            Err(e) if attempt < RECORD_ATTEMPTS => {
                tracing::warn!(match_id = %job.match_id, attempt, error = %e, "cannot record match_found; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => tracing::error!(match_id = %job.match_id, error = %e, "event lost: cannot record match_found"),
        }
    }
}

/// Sends `body` to `node` as a request until it is acknowledged or `deadline_ms` passes (join
/// tokens are worthless after it). The GCS may see it twice and dedupes by match id.
async fn push_until_acked(shared: &Shared, node: &str, body: ServiceBodyT, deadline_ms: i64) {
    while now_ms() < deadline_ms && !shared.shutdown.is_cancelled() {
        let link = shared.nodes.get(node).map(|l| l.clone());
        if let Some(link) = link {
            match link.request(body.clone(), PUSH_ANSWER_TIMEOUT).await {
                Ok(answer) if matches!(answer.body, ServiceBodyT::Ack(_)) => return,
                Ok(answer) => {
                    tracing::warn!(node, answer = ?answer.body, "match push answered with something other than ack");
                    return;
                }
                Err(e) => tracing::debug!(node, error = %e, "match push not acknowledged, retrying"),
            }
        }
        tokio::time::sleep(PUSH_RETRY).await;
    }
    shared.metrics.push_failures.with_label_values(&["match_found"]).inc();
    tracing::warn!(node, "match push never acknowledged");
}

/// Puts a match's tickets back in their shard, keeping their enqueue time, after telling their
/// nodes they are searching again. A ticket cancelled meanwhile is dropped instead.
async fn requeue(shared: &Arc<Shared>, job: MatchJob) {
    let now = now_ms();
    for (ticket, entry) in job.teams.iter().flatten() {
        if entry.state() == MATCHED {
            push_searching(shared, entry, ticket, now);
        }
    }
    tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = tokio::time::sleep(Duration::from_millis(shared.config.requeue_delay_ms)) => {}
    }
    let Some(shard) = shared.shards.get(job.mode.index()) else { return };
    for (ticket, entry) in job.teams.into_iter().flatten() {
        if !entry.cas(MATCHED, WAITING) {
            entry.cas(MATCHED_CANCEL, CANCELLED);
            shared.forget(&entry);
            continue;
        }
        shared.metrics.requeued.inc();
        let mut request = ShardRequest::Enqueue(ticket, Arc::clone(&entry));
        let mut attempts = 0;
        loop {
            match shard.intake.push(request) {
                Ok(()) => break,
                Err(back) if attempts < REQUEUE_ATTEMPTS && !shared.shutdown.is_cancelled() => {
                    request = back;
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    // The shard is flooded: the ticket cannot go back, so it ends as expired.
                    entry.cas(WAITING, CANCELLED);
                    shared.forget(&entry);
                    push_expired(shared, &entry);
                    break;
                }
            }
        }
    }
}

/// An unsolicited `TicketStatus { Searching }`: the match fell through, the ticket is queued
/// again (`ErrorCode::NoCapacity` is what the GCS tells the players).
fn push_searching(shared: &Shared, entry: &TicketEntry, ticket: &Ticket, now: i64) {
    let status = protocol::build!(TicketStatusT {
        ticket_id: UuidT::from_bytes(entry.id.into_bytes()),
        state: QueueState::Searching,
        position: 1,
        estimated_wait_ms: u32::try_from(shared.config.requeue_delay_ms).unwrap_or(u32::MAX),
        waited_ms: u32::try_from((now - ticket.enqueued_at_ms).max(0)).unwrap_or(u32::MAX),
    });
    if let Some(link) = shared.nodes.get(&entry.node) {
        let _ = link.send(&ServiceMessageT::new(0, ServiceBodyT::TicketStatus(Box::new(status))));
    }
}

/// Forgets allocated matches whose result never came, so a crashed instance cannot make the
/// map grow forever.
pub async fn sweep_live(shared: Arc<Shared>) {
    let max_age_ms = i64::try_from(shared.config.match_max_age_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut timer = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = timer.tick() => {}
        }
        let cutoff = now_ms().saturating_sub(max_age_ms);
        let stale: Vec<(Uuid, String)> = shared
            .live
            .iter()
            .filter(|m| m.created_at_ms < cutoff)
            .map(|m| (*m.key(), m.instance_id.clone()))
            .collect();
        for (match_id, instance_id) in stale {
            shared.live.remove(&match_id);
            tracing::warn!(%match_id, %instance_id, "no result for this match in time, forgetting it");
            shared.allocator.release(match_id, &instance_id).await;
        }
    }
}

fn users_of(team: &[(Ticket, Arc<TicketEntry>)]) -> Vec<Uuid> {
    team.iter().flat_map(|(t, _)| t.members.iter().map(|m| m.user_id)).collect()
}
